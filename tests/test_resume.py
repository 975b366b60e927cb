"""A scoring run killed outright (driver and the local Ray it started, SIGKILL) is resumed
with ``--resume``: the published report holds every input exactly once, with the scores of
an undisturbed run, and the resumed run scores only what the killed one had not finished.

The job is the real ``jobs/score_archive.py`` in a subprocess of its own process group
(its local Ray's processes are in that group too); it is killed once its temporary folder
holds a few finished report parts. Every process it started is found before the kill and
checked gone after it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from spoofray.testing.processes import descendants
from spoofray.testing.waiting import WaitTimeout, process_exited, wait_for


REPO = Path(__file__).resolve().parents[1]
N_FILES = 2000
#: Files per featurize task and per scoring batch: one task's worth of files.
PER_TASK = 50
#: Kill once this many report parts are finished.
PARTS_BEFORE_KILL = 4
#: Deadlines on a loaded 2-core machine: the job starting its own Ray and finishing
#: PARTS_BEFORE_KILL parts (15 s in the run of docs/reliability.md); a whole run (19 s
#: there); SIGKILLed processes going (a large heap takes a moment to free).
PARTS_S = 300
JOB_S = 900
GONE_S = 60


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    """``N_FILES`` distinct 0.3-0.6 s clips at 8 kHz, plus one broken file."""
    from spoofray.testing.archives import write_many_clips

    return write_many_clips(tmp_path_factory.mktemp("resume-archive"), N_FILES, seed=7,
                            duration_range_s=(0.3, 0.6), files_per_folder=250, n_harmonics=6)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    from spoofray.testing.bundles import make_audit_bundle

    return make_audit_bundle(tmp_path_factory.mktemp("resume-bundle"), "1")


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("RAY_ADDRESS", None)  # the job starts its own local Ray
    return env


def _job(args: list[str], log: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(REPO / "jobs" / "score_archive.py"), *args],
                            cwd=REPO, env=_env(), stdout=open(log, "w"),
                            stderr=subprocess.STDOUT, start_new_session=True)


def _finish(proc: subprocess.Popen, log: Path, timeout: float = JOB_S) -> None:
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        raise AssertionError(f"the job did not finish within {timeout:.0f} s; its log ends:\n"
                             f"{log.read_text()[-4000:]}") from None
    assert proc.returncode == 0, log.read_text()[-4000:]


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _parts(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.parquet")) if folder.is_dir() else []


@pytest.mark.slow
def test_killed_scoring_run_resumes_with_every_file_once(archive, bundle, tmp_path, record):
    from spoofray import reports, sources

    listed = {it.uri for it in sources.list_audio(archive)}
    out = tmp_path / "reports"
    common = ["--input", archive, "--output", str(out), "--bundle", bundle, "--num-cpus", "2",
              "--files-per-task", str(PER_TASK), "--batch-size", str(PER_TASK),
              "--featurize-memory-mb", "64", "--part-every-s", "0", "--no-plots"]

    started = time.monotonic()
    _finish(_job([*common, "--run-id", "clean"], tmp_path / "clean.log"), tmp_path / "clean.log")
    clean_wall_s = round(time.monotonic() - started, 1)

    # The run to kill: wait for a few finished parts, then SIGKILL the whole process group.
    killed_log = tmp_path / "killed.log"
    started = time.monotonic()
    proc = _job([*common, "--run-id", "r"], killed_log)
    part_dir = out / "_tmp_run_id=r" / "report"
    wait_for(lambda: [p.name for p in _parts(part_dir)], timeout_s=PARTS_S, poll_s=0.05,
             what=f"{PARTS_BEFORE_KILL} finished report parts in {part_dir} (to kill the run)",
             until=lambda parts: len(parts) >= PARTS_BEFORE_KILL,
             abort_if=process_exited(proc, killed_log))
    family = descendants(proc.pid)
    os.killpg(proc.pid, signal.SIGKILL)
    killed_after_s = round(time.monotonic() - started, 1)
    proc.wait()
    try:
        survivors = wait_for(lambda: [p for p in family if _alive(p)], timeout_s=GONE_S,
                             poll_s=0.2, until=lambda alive: not alive,
                             what="end of every process the killed job started")
    except WaitTimeout as exc:
        survivors = exc.last
    for pid in survivors:  # started by this test: never leave them running
        os.kill(pid, signal.SIGKILL)
    assert not survivors, f"processes outside the job's process group survived: {survivors}"
    assert proc.returncode == -signal.SIGKILL
    assert not (out / "run_id=r").exists()
    n_parts = len(_parts(part_dir))
    done = pd.concat([pd.read_parquet(p, columns=["uri"]) for p in _parts(part_dir)])
    assert done["uri"].is_unique and 0 < len(done) < len(listed)
    remainder = len(listed) - len(done)

    # A plain rerun with the same id refuses to throw the finished parts away.
    rerun = subprocess.run([sys.executable, str(REPO / "jobs" / "score_archive.py"), *common,
                            "--run-id", "r"], cwd=REPO, env=_env(), capture_output=True,
                           text=True, timeout=300)
    assert rerun.returncode == 2 and "--resume" in rerun.stderr, rerun.stderr[-2000:]

    resumed_log = tmp_path / "resumed.log"
    resume_started = pd.Timestamp.now(tz="UTC")
    started = time.monotonic()
    _finish(_job([*common, "--run-id", "r", "--resume"], resumed_log), resumed_log)
    resumed_wall_s = round(time.monotonic() - started, 1)

    run = out / "run_id=r"
    assert (run / "_SUCCESS").exists()
    summary = json.loads((run / "summary.json").read_text())
    report = reports.read_report(str(run)).sort_values("uri").reset_index(drop=True)
    clean = reports.read_report(str(out / "run_id=clean")).sort_values("uri").reset_index(
        drop=True)
    rows = report["uri"].tolist()
    counts = {"inputs": len(listed), "rows": len(rows), "duplicates": len(rows) - len(set(rows)),
              "missing": len(listed - set(rows)), "unexpected": len(set(rows) - listed)}
    assert counts["duplicates"] == counts["missing"] == counts["unexpected"] == 0, counts
    assert rows == clean["uri"].tolist()
    assert report["status"].tolist() == clean["status"].tolist()
    np.testing.assert_array_equal(report["spoof_score"].to_numpy(),
                                  clean["spoof_score"].to_numpy())
    assert report["predicted_label"].tolist() == clean["predicted_label"].tolist()
    # Scored again: exactly the files outside the killed run's finished parts (and so at
    # most the unfinished remainder plus one task's worth), by the summary and by the
    # rows' own scoring times.
    scored_now = int((report["scored_at"] >= resume_started).sum())
    assert summary["resumed"] == {"files_in_earlier_parts": len(done),
                                  "files_scored_now": remainder}
    assert scored_now == remainder <= len(listed) - len(done) + PER_TASK
    assert set(report.loc[report["scored_at"] < resume_started, "uri"]) == set(done["uri"])
    assert sorted(os.listdir(out)) == ["run_id=clean", "run_id=r"]
    ok = int((report["status"] == "ok").sum())
    assert ok == N_FILES
    record("driver_killed_scoring_resumed", {
        "fault": f"score_archive's driver and the local Ray it started SIGKILLed (process "
                 f"group) {killed_after_s} s into scoring {len(listed)} files, with "
                 f"{len(done)} files in {n_parts} finished report parts; "
                 "then the same --run-id with --resume",
        "outcome": f"a plain rerun was refused (pass --resume); the resumed run scored "
                   f"{scored_now} files (exactly the {remainder} outside finished parts) and "
                   f"published in {resumed_wall_s} s (undisturbed: {clean_wall_s} s) with "
                   "_SUCCESS; statuses, labels and spoof scores identical to the "
                   "undisturbed run",
        "counts": {**counts, "ok": ok, "errors": len(report) - ok}})

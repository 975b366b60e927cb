"""Storage faults: the S3 endpoint (moto's real HTTP server) stops mid-run.

A short outage must be ridden out by retrying with backoff, giving the same output as an
undisturbed run; an outage longer than the retry budget must fail the run with a clear
message and leave nothing that looks complete (no ``_manifest.json`` for extraction, no
``run_id=...`` folder / ``_SUCCESS`` for scoring).

This module runs its own ThreadedMotoServer on a fixed port that it stops and restarts
(moto keeps its state in-process, so buckets survive a restart); the pipelines run in a
driver subprocess with its own local Ray, whose workers get this endpoint. The test
process watches moto's request log to stop the server once a run is really reading.

The same driver runs with distinctive fake credentials, DEBUG logging and a presigned URL
as one input: afterwards every log, report, summary and object it wrote is searched for
them (issue #7, "no credentials or presigned URLs in logs, reports or summaries").
"""

from __future__ import annotations

import contextlib
import glob
import json
import logging
import os
import queue
import re
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from spoofray import testing
from spoofray.testing.waiting import WaitTimeout, wait_for

REPO = Path(__file__).resolve().parents[1]
N_FILES = 120
#: Retry budget the driver's workers get (SPOOFRAY_STORAGE_RETRY_S), and the outages. A
#: short outage ends while the budget has 16 s to spare, so that a loaded machine (a
#: server restart, a worker's next retry running late) does not turn it into a long one;
#: a long one lasts until the run gives up, at most BUDGET_S + RUN_GIVES_UP_S.
BUDGET_S = 20.0
SHORT_OUTAGE_S = 4.0
RUN_GIVES_UP_S = 300
#: Deadlines for the driver: one run (start to RESULT) of N_FILES on its 2-CPU local Ray
#: (8-12 s in the run of docs/reliability.md), and the GETs that show a run is reading.
RUN_S = 600
READING_S = 300
#: GETs of input audio seen before the server is stopped: the run is really under way.
GETS_BEFORE_STOP = 25

DRIVER = r"""
import json, sys, time
sys.path.insert(0, "jobs")
import _bootstrap  # the jobs' logging set-up
from spoofray.config import AudioConfig, FeatureConfig
from spoofray.pipeline.extract import ExtractConfig, extract_features
from spoofray.pipeline.score import ScoreConfig, score_archive
a = json.loads(sys.argv[1])
# address="local": a new Ray even when a `ray start` cluster runs on this machine
# (ray.init() would join that one instead).
import ray
ray.init(address="local", num_cpus=2, include_dashboard=False)
feats = FeatureConfig.from_dict(a["features"])
for run in a["runs"]:
    print("READY", run["name"], flush=True)
    sys.stdin.readline()
    print("START", run["name"], flush=True)
    started = time.perf_counter()
    try:
        if run["kind"] == "extract":
            out = extract_features(ExtractConfig(input=a["input"], output=run["output"],
                                                 features=feats, files_per_task=8))
            result = {"ok": True, "counts": out["counts"]}
        else:
            out = score_archive(ScoreConfig(input=a["input"], output=run["output"],
                                            bundle=a["bundle"], run_id=run["name"],
                                            files_per_task=8, batch_size=16, plots=False))
            result = {"ok": True, "counts": out["counts"], "run_uri": out["run_uri"]}
    except Exception as exc:
        result = {"ok": False, "error_type": type(exc).__name__, "message": str(exc)[-2000:]}
    result["wall_s"] = round(time.perf_counter() - started, 1)
    print("RESULT", run["name"], json.dumps(result, default=str), flush=True)
# A presigned URL as input: refused, and its signature must not be echoed anywhere.
from spoofray.errors import SourceError
try:
    extract_features(ExtractConfig(input=a["presigned"], output=a["never"]))
except SourceError as exc:
    print(f"error: {exc}", file=sys.stderr)
print("SESSION_DIR=" + ray._private.worker.global_worker.node.get_session_dir_path(), flush=True)
"""

FEATURES = {"audio": {"window_s": 1.0, "hop_s": 1.0}, "kinds": ["logmel", "stats"],
            "n_mels": 16, "n_mfcc": 13}
#: Distinctive fake credentials the driver (and so every Ray worker) runs with: none of
#: them, nor the presigned URL's signature, may appear in any log, report or summary.
FAKE_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "AKIASPOOFRAYLEAK0001",
    "AWS_SECRET_ACCESS_KEY": "spoofray/LEAK+secret+key/0123456789abcdefABCDEF",
    "AWS_SESSION_TOKEN": "spoofrayLEAKsessionTOKEN0123456789",
}
SIGNATURE = "spoofrayLEAKsignature0123456789abcdef"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RestartableMoto:
    """moto's S3 server on one fixed port, stoppable and restartable; counts GETs per prefix."""

    def __init__(self) -> None:
        self.port = _free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.server = None
        self.gets: dict[str, int] = {}
        self.lock = threading.Lock()
        self.handler = _RequestCounter(self)
        logging.getLogger("werkzeug").addHandler(self.handler)
        logging.getLogger("werkzeug").setLevel(logging.INFO)

    def start(self) -> None:
        from spoofray.testing.s3_server import start_moto_server

        self.server = start_moto_server(self.port, verbose=False)

    def stop(self) -> None:
        self.server.stop()  # werkzeug closes the listening socket: connections are refused
        self.server = None

    def count(self, prefix: str) -> int:
        with self.lock:
            return self.gets.get(prefix, 0)

    def close(self) -> None:
        if self.server is not None:
            self.stop()
        logging.getLogger("werkzeug").removeHandler(self.handler)


class _RequestCounter(logging.Handler):
    PATTERN = re.compile(r'GET (/[^ ?]+)[^ ]* HTTP/')  # the line may carry ANSI colours

    def __init__(self, moto: RestartableMoto) -> None:
        super().__init__()
        self.moto = moto

    def emit(self, record: logging.LogRecord) -> None:
        match = self.PATTERN.search(record.getMessage())
        if match:
            prefix = "/".join(match.group(1).split("/")[:3])  # /bucket/top-folder
            with self.moto.lock:
                self.moto.gets[prefix] = self.moto.gets.get(prefix, 0) + 1



#: How long an outage waits for spoofray to meet it before the server comes back anyway (the
#: test then fails on the missing retry warning, not on a hang).
MET_S = 120.0


class _RetryWarnings(logging.Handler):
    """Sets ``met`` at spoofray.storage's first retry warning: the outage has been met."""

    def __init__(self) -> None:
        super().__init__()
        self.met = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if "transient storage fault" in record.getMessage():
            self.met.set()


def _during_outage(moto: RestartableMoto, call):
    """``call()`` with the server stopped until spoofray has met the outage (its first retry
    warning), then started again: not a fixed time, so a loaded machine whose first request
    comes late still meets it. The caller captures spoofray.storage at WARNING."""
    warnings = _RetryWarnings()
    logger = logging.getLogger("spoofray.storage")
    logger.addHandler(warnings)
    moto.stop()

    def restart() -> None:
        warnings.met.wait(timeout=MET_S)
        moto.start()

    restarting = threading.Thread(target=restart, daemon=True)
    restarting.start()
    try:
        return call()
    finally:
        warnings.met.set()  # a call that failed without a retry: back at once
        restarting.join()
        logger.removeHandler(warnings)


def _small_bundle(tmp: Path, output: str) -> str:
    from spoofray.config import FeatureConfig
    from spoofray.models.assemble import AssembleConfig, assemble_bundle
    from spoofray.testing.datasets import synthetic_features
    from spoofray.testing.members import save_ml_member, train_ml

    cfg = FeatureConfig.from_dict(FEATURES)
    feats, y = synthetic_features(cfg, 20)
    member = save_ml_member(train_ml(feats, y), tmp / "tune", cfg)
    return assemble_bundle(AssembleConfig(members=(member,), output=output))["uri"]


@pytest.fixture(scope="module")
def outage_runs(tmp_path_factory):
    """Run all scenarios in one driver (one Ray start) against a restartable moto server.

    Yields ``(results, fs, s3, driver_stderr_path, driver_stdout)``: ``results[name]`` is
    the driver's RESULT dict plus ``outage_s`` (how long the server was really down) and
    ``gets_before_stop``; ``fs`` an s3fs client of the server, ``s3`` the bucket URI.
    """
    import s3fs

    tmp = tmp_path_factory.mktemp("faults")
    moto = RestartableMoto()
    moto.start()
    bucket = f"faults-{uuid.uuid4().hex[:8]}"
    fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": moto.endpoint}, key="k", secret="s")
    fs.mkdir(bucket)
    rng = np.random.default_rng(0)
    for i in range(N_FILES):
        x = testing.voiced(float(rng.uniform(90, 250)), float(rng.uniform(0.5, 1.0)), 8000)
        fs.pipe(f"{bucket}/audio/f{i:04d}.wav", _wav(x + testing.white_noise(
            len(x) / 8000, 8000, amp=0.02, seed=i)[: len(x)]))
    fs.pipe(f"{bucket}/audio/broken.wav", b"RIFF, then nothing useful")
    s3 = f"s3://{bucket}"
    # Scoring: undisturbed, a short outage (ridden out), a long one (fails, publishes
    # nothing). Extraction: only the long outage, for its own failure message (its retries
    # are the same storage.with_retries calls).
    runs = [{"name": n, "kind": k, "output": f"{s3}/{k}-{n}"}
            for n, k in (("score_clean", "score"), ("score_short", "score"),
                         ("score_long", "score"), ("extract_long", "extract"))]
    outages = {"score_short": SHORT_OUTAGE_S, "score_long": BUDGET_S + RUN_GIVES_UP_S,
               "extract_long": BUDGET_S + RUN_GIVES_UP_S}
    env = {**os.environ, **FAKE_CREDENTIALS, "AWS_ENDPOINT_URL": moto.endpoint,
           "AWS_DEFAULT_REGION": "us-east-1",
           # One attempt per botocore call: the retrying under test is spoofray's own.
           "AWS_MAX_ATTEMPTS": "1", "AWS_RETRY_MODE": "standard",
           "SPOOFRAY_STORAGE_RETRY_S": str(BUDGET_S), "SPOOFRAY_HOME": str(tmp / "home"),
           # Everything the driver logs, at the most talkative level, is searched for secrets.
           "SPOOFRAY_LOG_LEVEL": "DEBUG"}
    env.pop("RAY_ADDRESS", None)
    with _reading_from(moto.endpoint):  # the bundle lives on S3 too
        bundle = _small_bundle(tmp, f"{s3}/bundles/small/1")
    args = {"input": f"{s3}/audio", "bundle": bundle, "features": FEATURES, "runs": runs,
            "never": str(tmp / "never"),
            "presigned": f"https://{bucket}.s3.amazonaws.com/audio/f0000.wav?X-Amz-Credential="
                         f"{FAKE_CREDENTIALS['AWS_ACCESS_KEY_ID']}%2F20240101"
                         f"&X-Amz-Signature={SIGNATURE}"}
    err_log = open(tmp / "driver.err", "w")
    proc = subprocess.Popen([sys.executable, "-c", DRIVER, json.dumps(args)], env=env,
                            cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=err_log, text=True)
    lines: queue.Queue = queue.Queue()
    stdout: list[str] = []

    def pump() -> None:
        for line in proc.stdout:
            stdout.append(line)
            lines.put(line)

    pumping = threading.Thread(target=pump, daemon=True)
    pumping.start()

    def driver_gone() -> str | None:
        if pumping.is_alive() or not lines.empty():
            return None
        err_log.flush()
        return (f"the driver closed its output (exit code {proc.poll()}); its stderr:\n"
                + _log_excerpt((tmp / "driver.err").read_text()))

    def next_line(timeout_s: float, what: str) -> str:
        return wait_for(lambda: _get(lines), timeout_s=timeout_s, poll_s=0.1, what=what,
                        until=lambda line: line is not None, abort_if=driver_gone).strip()

    results: dict[str, dict] = {}
    done: set[str] = set()
    try:
        while len(done) < len(runs):
            line = next_line(RUN_S, f"next line from the driver (done: {sorted(done)})")
            word, name, *rest = line.split(" ", 2) + [""]
            if word == "READY":
                proc.stdin.write("go\n")
                proc.stdin.flush()
            elif word == "START" and name in outages:
                prefix = f"/{bucket}/audio"
                start_count = moto.count(prefix)
                gets = wait_for(lambda: moto.count(prefix) - start_count, poll_s=0.05,
                                timeout_s=READING_S, abort_if=driver_gone,
                                what=f"{GETS_BEFORE_STOP} GETs of {prefix} by run {name}",
                                until=lambda n: n >= GETS_BEFORE_STOP)
                moto.stop()
                stopped = time.monotonic()
                # Back after the planned outage, or as soon as the run gives up.
                try:
                    early = next_line(outages[name], f"end of run {name}")
                except WaitTimeout:
                    early = None
                down = time.monotonic() - stopped
                moto.start()
                results.setdefault(name, {}).update(outage_s=round(down, 1),
                                                    gets_before_stop=gets)
                if early:
                    lines.put(early)  # handled by the loop (a RESULT line)
            elif word == "RESULT":
                results.setdefault(name, {}).update(json.loads(rest[0]))
                done.add(name)
        proc.stdin.close()
        proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        err_log.close()
        if moto.server is None:
            moto.start()
    assert proc.returncode == 0, _log_excerpt((tmp / "driver.err").read_text())
    with _reading_from(moto.endpoint):
        yield results, fs, s3, tmp / "driver.err", "".join(stdout)
    moto.close()


#: Lines of a driver's stderr that say why it died; a Ray fatal error is followed by a
#: stack trace longer than any tail shown.
_WHY_DIED = re.compile(r"Check failed|FATAL|\*\*\* SIG|Traceback|Error:")


def _log_excerpt(text: str, tail_chars: int = 1500) -> str:
    """The lines of ``text`` that say why the process died (at most 20), then its tail."""
    why = [line for line in text.splitlines() if _WHY_DIED.search(line)][:20]
    return "why (first matching lines):\n" + "\n".join(why) + "\n...\n" + text[-tail_chars:]


def _get(lines: queue.Queue) -> str | None:
    try:
        return lines.get_nowait()
    except queue.Empty:
        return None


def _wav(x: np.ndarray) -> bytes:
    import io

    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, x, 8000, format="WAV", subtype="PCM_16")
    return buf.getvalue()


@contextlib.contextmanager
def _reading_from(endpoint: str):
    """This process's spoofray storage pointed at ``endpoint`` (restored afterwards)."""
    wanted = {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "k",
              "AWS_SECRET_ACCESS_KEY": "s", "AWS_DEFAULT_REGION": "us-east-1"}
    saved = {k: os.environ.get(k) for k in wanted}
    os.environ.update(wanted)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _keys(fs, prefix: str) -> list[str]:
    fs.invalidate_cache()
    return sorted(fs.find(prefix)) if fs.exists(prefix) else []




def test_long_outage_fails_extraction_clearly_without_a_manifest(outage_runs, record):
    results, fs, s3, err, _ = outage_runs
    long = results["extract_long"]
    assert not long["ok"], long
    assert long["error_type"] == "StorageUnavailableError", long
    # The outage hits whatever the tasks were doing: reading inputs or writing parts.
    assert re.search(r"extraction stopped: (reading|writing) s3://\S+: storage unreachable",
                     long["message"]), long["message"]
    assert "no _manifest.json" in long["message"]
    # Tasks write under a _tmp_ sibling, published only whole: nothing at the output, and
    # what the tasks wrote (left: storage was still down to remove it) has no manifest.
    assert _keys(fs, f"{s3[5:]}/extract-extract_long") == []
    keys = [k for k in _keys(fs, s3[5:]) if "/_tmp_extract-extract_long-" in k]
    assert not any(k.endswith("_manifest.json") for k in keys), keys
    record("storage_long_outage_extraction", {
        "fault": f"S3 endpoint stopped mid-extraction for longer than the {BUDGET_S:.0f} s "
                 f"retry budget (until the run gave up, at most "
                 f"{BUDGET_S + RUN_GIVES_UP_S:.0f} s; restarted after {long['outage_s']} s)",
        "outcome": f"run failed after {long['wall_s']} s: {long['error_type']} "
                   "('extraction stopped: ...: storage unreachable ...'); "
                   f"nothing published ({len(keys)} part files left under a _tmp_ sibling, "
                   "which no reader takes for a dataset)",
        "counts": {"inputs": N_FILES + 1, "rows": 0, "ok": 0, "errors": 0, "duplicates": 0,
                   "missing": N_FILES + 1}})


def _report(s3: str, name: str) -> pd.DataFrame:
    from spoofray import reports

    return reports.read_report(f"{s3}/score-{name}/run_id={name}").sort_values("uri")


def test_short_outage_during_scoring_is_ridden_out(outage_runs, record):
    results, fs, s3, err, _ = outage_runs
    short, clean = results["score_short"], results["score_clean"]
    assert clean["ok"], clean
    assert short["ok"], (short, err.read_text()[-3000:])
    report, clean_report = _report(s3, "score_short"), _report(s3, "score_clean")
    assert report["uri"].is_unique and len(report) == N_FILES + 1
    assert report["uri"].tolist() == clean_report["uri"].tolist()
    assert report["status"].tolist() == clean_report["status"].tolist()
    np.testing.assert_array_equal(report["spoof_score"].to_numpy(),
                                  clean_report["spoof_score"].to_numpy())
    assert (report["status"] == "ok").sum() == N_FILES
    keys = _keys(fs, f"{s3[5:]}/score-score_short")
    assert f"{s3[5:]}/score-score_short/run_id=score_short/_SUCCESS" in keys
    assert not any("_tmp_run_id" in k for k in keys), keys
    record("storage_short_outage_scoring", {
        "fault": f"S3 endpoint stopped {short['outage_s']} s mid-scoring (after "
                 f"{short['gets_before_stop']} input reads); retry budget {BUDGET_S:.0f} s",
        "outcome": f"completed in {short['wall_s']} s (undisturbed: {clean['wall_s']} s) "
                   "with _SUCCESS; statuses and scores identical to the undisturbed run",
        "counts": {"inputs": N_FILES + 1, "rows": len(report),
                   "ok": int((report["status"] == "ok").sum()),
                   "errors": int((report["status"] == "error").sum()),
                   "duplicates": int(report["uri"].duplicated().sum()), "missing": 0}})


def test_long_outage_fails_scoring_clearly_and_publishes_nothing(outage_runs, record):
    results, fs, s3, err, _ = outage_runs
    long = results["score_long"]
    prefix = f"{s3[5:]}/score-score_long"
    keys = _keys(fs, prefix)
    rows = (long.get("counts") or {}).get("files", 0)
    record("storage_long_outage_scoring", {
        "fault": f"S3 endpoint stopped mid-scoring for longer than the {BUDGET_S:.0f} s "
                 f"retry budget (until the run gave up, at most "
                 f"{BUDGET_S + RUN_GIVES_UP_S:.0f} s; restarted after {long['outage_s']} s)",
        "outcome": (f"run failed after {long['wall_s']} s: {long.get('error_type')} "
                    "('scoring stopped: reading ...: "
                    "storage unreachable ... Nothing was published'); no run_id= folder, no "
                    f"_SUCCESS ({len(keys)} object(s) left under the output)"
                    if not long["ok"] else "BUG: the run published a report"),
        "counts": {"inputs": N_FILES + 1, "rows": rows,
                   "ok": (long.get("counts") or {}).get("ok", 0),
                   "errors": (long.get("counts") or {}).get("error", 0),
                   "duplicates": 0, "missing": N_FILES + 1 - rows}})
    # Before the fix, workers turned the outage into per-file error rows and a complete
    # looking report was published: the run must fail instead.
    assert not long["ok"], long
    assert long["error_type"] == "StorageUnavailableError", long
    assert re.search(r"scoring stopped: reading s3://\S+: storage unreachable", long["message"])
    assert "Nothing was published" in long["message"]
    assert not any(k.endswith("/_SUCCESS") for k in keys), keys
    assert not any(k.startswith(f"{prefix}/run_id=") for k in keys), keys


def test_retry_helper_retries_only_transient_faults_and_gives_up_after_its_budget(caplog):
    from spoofray.storage import StorageUnavailableError, redact, with_retries

    calls = []

    def flaky():
        calls.append(time.monotonic())
        if len(calls) < 3:
            raise ConnectionRefusedError(111, "Connection refused")
        return "done"

    with caplog.at_level(logging.WARNING, "spoofray.storage"):
        assert with_retries(flaky, what="reading s3://b/k", budget_s=30) == "done"
    # The backoff it chose grows (0.5 s, then 1 s, +-25 % jitter) and is slept in full;
    # the chosen delays, not the gaps, are compared: a loaded machine stretches a gap.
    delays = [float(m.group(1)) for r in caplog.records
              if (m := re.search(r"retry \d+ in ([\d.]+) s", r.getMessage()))]
    assert len(calls) == 3 and len(delays) == 2 and 0.3 < delays[0] < delays[1], delays
    assert all(gap >= delay - 0.05 for gap, delay in zip(np.diff(calls), delays))

    def missing():
        calls.append(0)
        raise FileNotFoundError("s3://b/gone")

    calls.clear()
    with pytest.raises(FileNotFoundError):
        with_retries(missing, what="reading s3://b/gone", budget_s=30)
    assert len(calls) == 1  # a per-file problem is not retried

    def down():
        raise TimeoutError("connect timed out")

    started = time.monotonic()
    with pytest.raises(StorageUnavailableError, match=r"writing s3://b/k: storage unreachable"):
        with_retries(down, what="writing s3://b/k", budget_s=1.0)
    # The 1 s budget ends it (sleeps never run past it), not the 60 s default; the rest
    # is headroom for a loaded machine.
    assert time.monotonic() - started < 10
    assert redact("https://AKIA:pw@b.s3.amazonaws.com/k.wav?X-Amz-Signature=s3cr3t") == \
        "https://<credentials removed>@b.s3.amazonaws.com/k.wav?<query removed>"


def test_listing_an_s3_prefix_rides_out_a_short_outage(monkeypatch, caplog):
    """The driver lists the input before any work: a store that is down for a couple of
    seconds then must be retried, not fail the run with botocore's connection error."""
    import s3fs

    from spoofray import sources

    moto = RestartableMoto()
    moto.start()
    try:
        fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": moto.endpoint}, key="k",
                               secret="s")
        bucket = f"listing-{uuid.uuid4().hex[:8]}"
        fs.mkdir(bucket)
        for name in ("a.wav", "sub/b.flac", "notes.txt"):
            fs.pipe(f"{bucket}/in/{name}", b"x")
        monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")  # the retrying under test is spoofray's
        monkeypatch.setenv("SPOOFRAY_STORAGE_RETRY_S", "30")
        with _reading_from(moto.endpoint), caplog.at_level(logging.WARNING, "spoofray.storage"):
            items = _during_outage(moto, lambda: sources.resolve_inputs(f"s3://{bucket}/in"))
    finally:
        moto.close()
    assert [it.uri for it in items] == [f"s3://{bucket}/in/a.wav", f"s3://{bucket}/in/sub/b.flac"]
    assert any("transient storage fault" in r.getMessage() for r in caplog.records)


def test_output_checks_and_orphan_clean_up_ride_out_short_outages(monkeypatch, caplog):
    """The driver's own S3 calls around an extraction (is the output empty? remove it for
    --overwrite; remove orphan parts before the manifest) wait out a store that is down
    for a couple of seconds instead of failing the run."""
    import s3fs

    from spoofray import storage
    from spoofray.pipeline.extract import _remove_orphan_parts

    moto = RestartableMoto()
    moto.start()
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")  # the retrying under test is spoofray's
    monkeypatch.setenv("SPOOFRAY_STORAGE_RETRY_S", "30")
    bucket = f"driver-{uuid.uuid4().hex[:8]}"
    out = f"s3://{bucket}/ds"

    def during_outage(call):
        return _during_outage(moto, call)

    try:
        fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": moto.endpoint}, key="k",
                               secret="s")
        fs.mkdir(bucket)
        for name in ("part-kept.parquet", "part-orphan.parquet"):
            fs.pipe(f"{bucket}/ds/features/{name}", b"x")
        summary = pd.DataFrame({"features_part": ["kept"], "errors_part": [None]})
        with _reading_from(moto.endpoint), caplog.at_level(logging.WARNING, "spoofray.storage"):
            assert during_outage(lambda: storage.exists_nonempty(out)) is True
            assert during_outage(lambda: _remove_orphan_parts(out, summary)) == 1
            assert _keys(fs, f"{bucket}/ds") == [f"{bucket}/ds/features/part-kept.parquet"]
            during_outage(lambda: storage.remove(out))
            assert storage.exists_nonempty(out) is False
    finally:
        moto.close()
    faults = [r.getMessage() for r in caplog.records if "transient storage fault" in r.getMessage()]
    for what in (f"checking {out}", f"removing unlisted files under {out}/features",
                 f"removing {out}"):
        assert any(m.startswith(what + ":") for m in faults), what


def test_resume_checks_ride_out_short_outages(monkeypatch, caplog, record):
    """The driver's own S3 calls before a resumed run starts (is there an unfinished run?
    its settings record, the listing of its parts, their ``uri`` read back) wait out a
    store that is down for a couple of seconds, for scoring and for extraction."""
    import s3fs

    from spoofray import dataset, reports, storage
    from spoofray.pipeline import resume
    from spoofray.pipeline.extract import _earlier_summary
    from spoofray.pipeline.score import _earlier_rows
    from spoofray.sources import AudioItem

    moto = RestartableMoto()
    moto.start()
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")  # the retrying under test is spoofray's
    monkeypatch.setenv("SPOOFRAY_STORAGE_RETRY_S", "30")
    bucket = f"resume-{uuid.uuid4().hex[:8]}"
    tmp, etmp = f"s3://{bucket}/out/_tmp_run_id=r", f"s3://{bucket}/_tmp_ds-unfinished"
    items = [AudioItem(uri=f"s3://{bucket}/in/{i}.wav") for i in range(6)]
    settings = {"bundle_checksum": "abc", "threshold": 0.5}
    outages = []

    def during_outage(call):
        began = time.monotonic()
        try:
            return _during_outage(moto, call)
        finally:
            outages.append(round(time.monotonic() - began, 1))

    try:
        fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": moto.endpoint}, key="k",
                               secret="s")
        fs.mkdir(bucket)
        with _reading_from(moto.endpoint), caplog.at_level(logging.WARNING, "spoofray.storage"):
            resume.write_record(tmp, settings)
            done = pd.DataFrame({c: [None] * 4 for c in reports.SUMMARY_COLUMNS})
            done["uri"] = [it.uri for it in items[:4]]
            storage.write_bytes_atomic(f"{tmp}/report/part-a.parquet", done.to_parquet())
            resume.write_record(etmp, {"feature_config_hash": "f"})
            storage.write_bytes_atomic(
                f"{etmp}/{dataset.ERRORS_DIR}/part-k.parquet", dataset.errors_table(
                    [{"uri": it.uri, "error_type": "AudioDecodeError", "error_message": "x"}
                     for it in items[:3]]).to_pandas().to_parquet())
            assert during_outage(lambda: resume.open_tmp(
                tmp, settings, resume=True, what="r", restart_hint="-")) is True
            rows = during_outage(lambda: _earlier_rows(tmp, items))
            assert sorted(rows["uri"]) == [it.uri for it in items[:4]]
            assert during_outage(lambda: resume.open_tmp(
                etmp, {"feature_config_hash": "f"}, resume=True, what="e",
                restart_hint="-")) is True
            summary = during_outage(lambda: _earlier_summary(etmp, items))
            assert sorted(summary["uri"]) == [it.uri for it in items[:3]]
            assert (summary["errors_part"] == "k").all()
            # The first call in each outage above met it; the parts' read-back on its own:
            part = during_outage(lambda: dataset.read_part(
                f"{etmp}/{dataset.ERRORS_DIR}/part-k.parquet", ["uri"]))
            assert part.num_rows == 3
    finally:
        moto.close()
    faults = [r.getMessage() for r in caplog.records if "transient storage fault" in r.getMessage()]
    for what in (f"checking {tmp}", f"listing {tmp}/report", f"checking {etmp}",
                 f"listing {etmp}/{dataset.FEATURES_DIR}",
                 f"reading {etmp}/{dataset.ERRORS_DIR}/part-k"):
        assert any(m.startswith(what) for m in faults), (what, faults)
    record("storage_outage_resume_checks", {
        "fault": f"S3 endpoint stopped, until spoofray's first retry, during each of the "
                 f"driver's resume checks (unfinished run? settings record, part listing, uri "
                 f"read-back), scoring and extraction, {len(outages)} outages",
        "outcome": f"every call waited the outage out (calls took {outages} s) and found the "
                   f"finished parts' files: {len(rows)} of {len(items)} (scoring), "
                   f"{len(summary)} of {len(items)} (extraction); {len(faults)} retries logged",
        "counts": {"inputs": 2 * len(items), "rows": len(rows) + len(summary),
                   "ok": len(rows) + len(summary), "errors": 0, "duplicates": 0,
                   "missing": 0}})


def test_publish_on_s3_writes_success_last_and_partial_runs_never_read_as_finished(s3_bucket):
    """S3 has no rename: publishing copies object by object. Until _SUCCESS (written last)
    exists, the readers that decide what a finished run is must refuse the folder."""
    import s3fs

    from spoofray import reports, storage
    from spoofray.audit import ledger
    from spoofray.pipeline.score import publish_run

    table = pd.DataFrame({"uri": ["s3://x/a.wav"], "status": ["ok"], "spoof_score": [0.5]})
    tmp, final = f"{s3_bucket}/out/_tmp_run_id=r", f"{s3_bucket}/out/run_id=r"
    storage.write_bytes_atomic(f"{tmp}/report/part-00000.parquet", table.to_parquet())
    storage.write_bytes_atomic(f"{tmp}/summary.json", b"{}")
    # What an outage in the middle of the copies leaves: some objects, no _SUCCESS.
    storage.write_bytes_atomic(f"{final}/report/part-00000.parquet", table.to_parquet())
    with pytest.raises(FileNotFoundError, match="has no _SUCCESS: the run did not finish"):
        reports.read_report(final)
    assert not ledger.is_committed(final)

    publish_run(tmp, final)
    fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": os.environ["AWS_ENDPOINT_URL"]})
    fs.invalidate_cache()
    bucket = s3_bucket[len("s3://"):]
    assert sorted(fs.find(f"{bucket}/out")) == [
        f"{bucket}/out/run_id=r/_SUCCESS", f"{bucket}/out/run_id=r/report/part-00000.parquet",
        f"{bucket}/out/run_id=r/summary.json"]
    assert ledger.is_committed(final)
    # (read_report adds the columns later reports have, as nulls, to an old-style part)
    pd.testing.assert_frame_equal(reports.read_report(final)[list(table.columns)], table)


def test_no_credentials_or_presigned_urls_in_logs_reports_or_summaries(outage_runs,
                                                                       record):
    """The fault runs above used distinctive fake credentials, DEBUG logging, failing and
    retried S3 calls and a presigned URL as input: search everything a user or an operator
    could read afterwards for the secrets."""
    results, fs, s3, err, stdout = outage_runs
    stderr = err.read_text()
    assert "unsupported input" in stderr and "<query removed>" in stderr
    assert "transient storage fault" in stderr  # the retries were logged, and searched
    session = stdout.rsplit("SESSION_DIR=", 1)[1].strip()
    texts: dict[str, bytes] = {"driver stdout": stdout.encode(),
                               "driver stderr": stderr.encode()}
    fs.invalidate_cache()
    for key in fs.find(s3[len("s3://"):]):
        if not key.endswith(".wav"):  # the inputs are the test's own
            texts[f"s3://{key}"] = fs.cat(key)
    ray_logs = [p for p in glob.glob(f"{session}/logs/**/*", recursive=True)
                if os.path.isfile(p)]
    for path in ray_logs:
        with open(path, "rb") as fh:
            texts[path] = fh.read()
    assert any(k.endswith("summary.json") for k in texts)
    assert any(re.search(r"/(_tmp_)?extract-extract_long[^/]*/features/", k) for k in texts)
    assert any("worker" in os.path.basename(p) for p in ray_logs), ray_logs
    secrets = [*FAKE_CREDENTIALS.values(), SIGNATURE]
    leaks = [(where, secret) for where, blob in texts.items() for secret in secrets
             if secret.encode() in blob]
    record("no_credentials_in_outputs", {
        "fault": "distinctive fake AWS key id, secret and session token in the driver's "
                 "environment (so every Ray worker's); the storage-fault runs (retries, "
                 "failures) against moto S3 with logging at DEBUG; a presigned URL as input",
        "outcome": f"searched {len(texts)} outputs ({len(ray_logs)} Ray log files, every S3 "
                   "object written (reports, summaries, feature parts, bundle), "
                   "driver stdout/stderr): "
                   + ("no secret, token, key id or signature; the presigned input refused"
                      if not leaks else f"LEAKS: {leaks}"),
        "counts": {"inputs": len(texts), "rows": len(texts), "ok": len(texts) - len(leaks),
                   "errors": len(leaks), "duplicates": 0, "missing": 0}})
    assert not leaks, leaks

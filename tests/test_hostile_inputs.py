"""Hostile and broken inputs through the real pipelines: every file comes back exactly once
(windows or an error row naming it), nothing hangs, memory stays bounded, and manifests
that point outside their folder are refused before any work.

The corpus is :func:`spoofray.testing.hostile.make_hostile_corpus`. Measured counts are
written with :func:`spoofray.testing.reliability.write_record` for docs/reliability.md (directory:
``$SPOOFRAY_RELIABILITY_DIR``, else ``<pytest basetemp>/reliability``).
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess
import sys
import time

import pandas as pd
import pytest

from spoofray import dataset, reports, sources
from spoofray.errors import SourceError
from spoofray.pipeline.extract import ExtractConfig, extract_features
from spoofray.testing import hostile
from spoofray.testing.datasets import SMALL

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

#: Ceilings for one worker process over the whole corpus (it needs ~400 MiB here: the
#: hours-long FLAC costs ~110 MiB; anything that reads a stream without end would not stop).
MAX_RSS_MIB = 1024
MAX_SECONDS_PER_FILE = 30.0
PROBE_TIMEOUT_S = 300






@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile") / "corpus"
    cases = hostile.make_hostile_corpus(root)
    yield str(root), cases
    for case in cases:  # chmod 000 would stop pytest from cleaning the tmp dir up
        if case.path and os.path.lexists(case.path) and not os.path.islink(case.path):
            os.chmod(case.path, stat.S_IRUSR | stat.S_IWUSR)


def _present(cases):
    return [c for c in cases if c.path is not None]


def _accounting(listed: list[str], rows: list[str]) -> dict:
    seen = pd.Series(rows, dtype=object)
    return {"inputs": len(listed), "rows": len(rows),
            "duplicates": int(seen.duplicated().sum()),
            "missing": len(set(listed) - set(rows)), "unexpected": len(set(rows) - set(listed))}


def test_corpus_has_30_distinct_hostile_cases(corpus):
    root, cases = corpus
    present = _present(cases)
    names = [c.name for c in cases]
    assert len(set(names)) == len(names)
    bad = [c for c in present if c.expect != "ok"]
    assert len(bad) >= 30, len(bad)
    digests = {}
    for c in present:
        st = os.lstat(c.path) if os.path.lexists(c.path) else None
        if st is not None and stat.S_ISREG(st.st_mode) and st.st_size < 2**26:
            with open(c.path, "rb") as fh:
                digests.setdefault(hashlib.sha256(fh.read()).hexdigest(), []).append(c.name)
    # The only byte-identical files are the controls and the misnamed/odd-named copies.
    dupes = [sorted(v) for v in digests.values() if len(v) > 1]
    assert all(set(group) <= {"good_a.wav", "wav_named.mp3", "latin1_\\xe9t\\xe9.wav",
                              *[c.name for c in present if c.name.startswith("odd name")]}
               for group in dupes), dupes
    for c in cases:
        assert c.path is not None or (c.skip_reason and os.geteuid() == 0)
    # Listing: every case once (the loop/up -> .. directory link is entered once only).
    listed = [it.uri for it in sources.list_audio(root)]
    assert sorted(listed) == sorted(c.path for c in present)


def test_each_file_alone_bounded_time_and_memory(corpus, record):
    """One child process featurizes every file in turn, under an address-space limit and a
    timeout; per file it reports the outcome, the time and the peak RSS so far."""
    _, cases = corpus
    present = _present(cases)
    request = {"uris": [c.path for c in present], "features": SMALL.to_dict(),
               "max_as_bytes": 8 * 2**30}  # a guard against runaway allocation, not a target
    started = time.perf_counter()
    run = subprocess.run([sys.executable, "-c",
                          "from spoofray.testing.hostile import _probe_main; _probe_main()"],
                         input=json.dumps(request), capture_output=True, text=True,
                         timeout=PROBE_TIMEOUT_S, cwd=REPO)
    wall = time.perf_counter() - started
    assert run.returncode == 0, run.stderr[-3000:]
    baseline, *probed = json.loads(run.stdout)["results"]
    results = {r["uri"]: r for r in probed}
    mismatched = {c.name: (c.expect, results[c.path]["error_type"] or "ok",
                           results[c.path]["error_message"])
                  for c in present if (results[c.path]["error_type"] or "ok") != c.expect}
    assert not mismatched, mismatched
    for c in present:
        r = results[c.path]
        if r["status"] == "error":
            assert c.path in r["error_message"], (c.name, r["error_message"])
        assert r["seconds"] < MAX_SECONDS_PER_FILE, (c.name, r["seconds"])
    peak = max(r["maxrss_mib"] for r in results.values())
    assert peak < MAX_RSS_MIB, peak
    growth, previous = {}, baseline["maxrss_mib"]
    for r in probed:
        growth[os.path.basename(r["uri"])] = round(r["maxrss_mib"] - previous, 1)
        previous = r["maxrss_mib"]
    slowest = max(results.values(), key=lambda r: r["seconds"])
    record("hostile_files_one_process", {
        "fault": f"{len(present)} hostile/broken files featurized one by one in one child "
                 f"process (RLIMIT_AS 8 GiB, timeout {PROBE_TIMEOUT_S} s)",
        "outcome": f"every file its expected outcome; peak RSS {peak:.0f} MiB; slowest file "
                   f"{os.path.basename(slowest['uri'])} {slowest['seconds']:.1f} s; "
                   f"wall {wall:.0f} s",
        "counts": {**_accounting([c.path for c in present], list(results)),
                   "ok": sum(r["status"] == "ok" for r in results.values()),
                   "errors": sum(r["status"] == "error" for r in results.values())},
        "peak_rss_mib": peak, "baseline_rss_mib": baseline["maxrss_mib"],
        "rss_growth_mib_by_file": growth,
        "cases": [{"name": c.name, "what": c.what, "expect": c.expect,
                   "got": results[c.path]["error_type"] or "ok",
                   "seconds": round(results[c.path]["seconds"], 3)} for c in present],
        "skipped": [{"name": c.name, "reason": c.skip_reason} for c in cases if not c.path],
    })


def test_corpus_through_the_extraction_pipeline(ray_session, corpus, tmp_path, record):
    root, cases = corpus
    present = _present(cases)
    out = str(tmp_path / "ds")
    started = time.perf_counter()
    manifest = extract_features(ExtractConfig(input=root, output=out, features=SMALL,
                                              files_per_task=6))
    wall = time.perf_counter() - started

    windows = dataset.read_table(out, columns=["uri", "window_index"]).to_pandas()
    errors = dataset.read_errors(out).to_pandas()
    ok_uris = windows.groupby("uri")["window_index"].apply(sorted)
    rows = list(ok_uris.index) + errors["uri"].tolist()
    counts = _accounting([c.path for c in present], rows)
    assert counts["duplicates"] == counts["missing"] == counts["unexpected"] == 0, counts
    for idx in ok_uris:
        assert idx == list(range(len(idx)))
    got = {**{u: "ok" for u in ok_uris.index}, **dict(zip(errors["uri"], errors["error_type"]))}
    assert {c.name: got[c.path] for c in present} == {c.name: c.expect for c in present}
    for uri, message in zip(errors["uri"], errors["error_message"]):
        assert uri in message
    assert manifest["counts"]["files_listed"] == len(present)
    assert manifest["counts"]["files_error"] == len(errors)
    record("hostile_files_extraction", {
        "fault": f"hostile corpus ({len(present)} files) through extract_features on Ray",
        "outcome": f"completed in {wall:.0f} s, every file once, each with its expected "
                   f"outcome; errors by type {manifest['counts']['errors_by_type']}",
        "counts": {**counts, "ok": len(ok_uris), "errors": len(errors)},
    })


@pytest.fixture(scope="module")
def small_bundle(tmp_path_factory):
    from spoofray.models.assemble import AssembleConfig, assemble_bundle
    from spoofray.testing.datasets import synthetic_features
    from spoofray.testing.members import save_ml_member, train_ml

    tmp = tmp_path_factory.mktemp("bundle")
    feats, y = synthetic_features(SMALL, 20)
    member = save_ml_member(train_ml(feats, y), tmp / "tune", SMALL)
    return assemble_bundle(AssembleConfig(members=(member,), output=str(tmp / "b")))["uri"]


def test_corpus_through_the_scorer(ray_session, corpus, small_bundle, tmp_path, record):
    from spoofray.pipeline.score import ScoreConfig, score_archive

    root, cases = corpus
    present = _present(cases)
    started = time.perf_counter()
    summary = score_archive(ScoreConfig(input=root, output=str(tmp_path / "out"),
                                        bundle=small_bundle, files_per_task=6, batch_size=8,
                                        run_id="hostile", plots=False))
    wall = time.perf_counter() - started
    report = reports.read_report(summary["run_uri"])
    counts = _accounting([c.path for c in present], report["uri"].tolist())
    assert counts["duplicates"] == counts["missing"] == counts["unexpected"] == 0, counts
    got = dict(zip(report["uri"], report["error_type"].fillna("ok")))
    assert {c.name: got[c.path] for c in present} == {c.name: c.expect for c in present}
    bad = report[report["status"] == "error"]
    assert all(u in m for u, m in zip(bad["uri"], bad["error_message"]))
    ok = report[report["status"] == "ok"]
    assert ok["spoof_score"].between(0, 1).all()
    assert sorted(os.listdir(tmp_path / "out")) == ["run_id=hostile"]
    record("hostile_files_scoring", {
        "fault": f"hostile corpus ({len(present)} files) through score_archive on Ray",
        "outcome": f"completed in {wall:.0f} s with _SUCCESS, every file one report row, "
                   "each with its expected status/error_type",
        "counts": {**counts, "ok": len(ok), "errors": len(bad)},
    })


def test_bad_manifest_rows_inside_the_folder_become_error_rows(ray_session, tmp_path,
                                                              record):
    from spoofray import testing

    root = tmp_path / "m"
    (root / "a_folder.wav").mkdir(parents=True)
    os.mkfifo(root / "pipe.wav")
    testing.write_wav(root / "good.wav", testing.voiced(150.0, 1.0, 16000), 16000)
    rows = {"good.wav": "ok", "missing.wav": "FileReadError", "a_folder.wav": "FileReadError",
            "pipe.wav": "FileReadError", "sub/../good2.wav": "FileReadError"}
    (root / "manifest.csv").write_text("path\n" + "\n".join(rows) + "\n")
    out = str(tmp_path / "ds")
    manifest = extract_features(ExtractConfig(input=str(root / "manifest.csv"), output=out,
                                              features=SMALL))
    errors = dataset.read_errors(out).to_pandas()
    windows = dataset.read_table(out, columns=["uri"]).to_pandas()
    got = {**{u: "ok" for u in windows["uri"]}, **dict(zip(errors["uri"], errors["error_type"]))}
    want = {os.path.normpath(str(root / p)): e for p, e in rows.items()}
    assert got == want
    assert manifest["counts"]["files_listed"] == len(rows)
    record("manifest_rows_bad_but_inside", {
        "fault": "manifest rows naming a missing file, a folder, a FIFO and a normalised "
                 "sub/../ path (all inside the manifest's folder)",
        "outcome": "one error row each (FileReadError), the good row has windows",
        "counts": {**_accounting(list(want), list(windows["uri"].unique())
                                 + errors["uri"].tolist()),
                   "ok": 1, "errors": len(errors)},
    })


def test_bad_manifests_are_refused_before_any_work(ray_session, tmp_path, small_bundle,
                                                   record):
    from spoofray.pipeline.score import ScoreConfig, score_archive

    cases = hostile.make_bad_manifests(tmp_path / "manifests")
    assert len(cases) >= 10
    refused = []
    for case in cases:
        out = tmp_path / "out" / case.name
        with pytest.raises(SourceError, match=case.match) as info:
            extract_features(ExtractConfig(input=case.path, output=str(out), features=SMALL))
        with pytest.raises(SourceError, match=case.match):
            score_archive(ScoreConfig(input=case.path, output=str(out), bundle=small_bundle))
        assert not out.exists(), f"{case.name}: output created before the refusal"
        if case.secret:
            assert case.secret not in str(info.value), str(info.value)
        refused.append({"name": case.name, "what": case.what,
                        "message": str(info.value).replace(str(tmp_path / "manifests"), "<dir>")})
    record("manifests_refused", {
        "fault": f"{len(cases)} bad manifests/protocols (../, absolute and file:// paths "
                 "outside the folder, a presigned https URL, duplicates, not UTF-8, empty, "
                 "no path column, unknown label, protocol ../ and malformed lines)",
        "outcome": "each refused with SourceError by extraction and by scoring; no output "
                   "folder created; no signature echoed",
        "counts": {"inputs": len(cases), "rows": 0, "ok": 0, "errors": len(refused),
                   "duplicates": 0, "missing": 0},
        "cases": refused,
    })

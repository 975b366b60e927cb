"""Nightly audits on real components: moto's S3 server, a real local Ray, real bundles,
real WAV files, `ray job submit` to a real head, and a real SIGKILL between the report
commit and the ledger update.

Drift numbers are checked against values computed by hand; which files a night scores is
checked against what the test changed in the archive.
"""

from __future__ import annotations

import base64
import importlib.util
import io
import json
import math
import os
import re

import numpy as np
import pandas as pd
import pytest

from spoofray import reports, storage
from spoofray.audit import (AuditConfig, drift_table, evaluate_rules, fingerprints,
                            ks_statistic, load_rules, parse_rules,
                            population_stability_index, read_audit_reports, read_ledger,
                            run_audit, select_work)
from spoofray.audit import ledger as audit_ledger
from spoofray.audit.drift import OVERALL
from spoofray.audit.page import (audit_plots, render_page, speak, summary_text,
                                 suspicious_table)
from spoofray.config import ScoreSettings
from spoofray.errors import ConfigError
from spoofray.sources import AudioItem, resolve_inputs
from spoofray.testing.archives import ARCHIVE, BROKEN, make_archive, put, wav_bytes
from spoofray.testing.bundles import make_audit_bundle

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# --- drift: hand-computed values --------------------------------------------------------------


def test_psi_and_ks_match_hand_computed_values():
    ref = np.r_[np.full(50, 0.05), np.full(50, 0.95)]
    cur = np.r_[np.full(80, 0.05), np.full(20, 0.95)]
    # Two bins: shares (0.5, 0.5) before and (0.8, 0.2) now.
    expected = 0.3 * math.log(0.8 / 0.5) + (-0.3) * math.log(0.2 / 0.5)
    assert population_stability_index(ref, cur, bins=2) == pytest.approx(expected)
    assert population_stability_index(ref, ref, bins=10) == 0.0
    ks, p = ks_statistic(ref, cur)
    assert ks == pytest.approx(0.3) and 0 < p < 0.001  # CDF gap at 0.05: 0.8 - 0.5
    assert ks_statistic(ref, ref)[0] == 0.0
    # An empty bin is floored, not infinite: all mass moving to one new bin.
    assert math.isfinite(population_stability_index(np.zeros(10), np.ones(10), bins=4))


def _rows(uris, scores, status="ok"):
    return pd.DataFrame({"uri": uris, "status": status, "spoof_score": scores,
                         "predicted_label": ["spoof" if s >= 0.5 else "bonafide"
                                             for s in scores]})


def test_drift_table_per_folder_rates_and_too_few_files():
    root = "s3://b/archive"
    cur = pd.concat([_rows([f"{root}/calls/{i}.wav" for i in range(4)], [0.9, 0.8, 0.1, 0.2]),
                     _rows([f"{root}/vm/x.wav"], [0.7]),
                     _rows([f"{root}/vm/bad.wav"], [np.nan], status="error"),
                     _rows([f"{root}/top.wav"], [0.1])], ignore_index=True)
    ref = _rows([f"{root}/calls/{i}.wav" for i in range(4)], [0.1, 0.1, 0.2, 0.9])
    table = drift_table(cur, ref, root=root, bins=2, min_files=2).set_index("group")
    assert list(table.index) == [OVERALL, ".", "calls", "vm"]
    calls = table.loc["calls"]
    assert calls.n_current == 4 and calls.spoof_rate == 0.5 and calls.spoof_rate_reference == 0.25
    # Shares of the two bins: (.75, .25) before, (.5, .5) now.
    assert calls.psi == pytest.approx(-0.25 * math.log(0.5 / 0.75) + 0.25 * math.log(0.5 / 0.25))
    assert calls.ks == pytest.approx(0.25)
    vm = table.loc["vm"]
    assert vm.n_error == 1 and vm.error_rate == 0.5 and math.isnan(vm.psi)
    assert "too few scored files" in vm.note
    overall = table.loc[OVERALL]
    assert overall.n_current == 7 and overall.error_rate == pytest.approx(1 / 7)
    assert overall.spoof_rate == pytest.approx(3 / 6)


def test_old_reports_and_ledgers_with_label_are_read_as_predicted_label(tmp_path):
    # Written before the report's prediction column was renamed from ``label``.
    old = _rows(["/a/x.wav", "/a/y.wav", "/a/z.wav"], [0.9, 0.2, 0.8]).rename(
        columns={"predicted_label": "label"})
    new = _rows(["/a/x.wav", "/a/y.wav", "/a/z.wav"], [0.9, 0.2, 0.8])
    pd.testing.assert_frame_equal(drift_table(old, old, root="/a"),
                                  drift_table(new, new, root="/a"))
    assert suspicious_table(old, n=2)["predicted_label"].tolist() == ["spoof", "spoof"]

    output = str(tmp_path / "audit")
    ledger = pd.DataFrame({"uri": ["/a/x.wav"], "size_bytes": [1], "fingerprint": ["f"],
                           "bundle_name": ["b"], "bundle_version": ["1"], "run_id": ["r"],
                           "date": ["2025-01-01"], "status": ["ok"], "error_type": [None],
                           "spoof_score": [0.9], "label": ["spoof"],
                           "scored_at": [pd.Timestamp("2025-01-01", tz="UTC")]})
    storage.write_bytes_atomic(audit_ledger.ledger_uri(output),
                               ledger.to_parquet(index=False))
    read = read_ledger(output)
    assert "label" not in read and read["predicted_label"].tolist() == ["spoof"]
    audit_ledger.write_ledger(output, read)  # written back under today's name
    assert read_ledger(output)["predicted_label"].tolist() == ["spoof"]


# --- alert rules ------------------------------------------------------------------------------


@pytest.mark.parametrize("data,error", [
    ({"rules": [{"metric": "spoof_rate"}]}, "exactly one of 'above' or 'below'"),
    ({"rules": [{"metric": "spoof_rate", "above": 0.1, "below": 0.0}]}, "exactly one"),
    ({"rules": [{"metric": "spoofrate", "above": 0.1}]}, "metric 'spoofrate' unknown"),
    ({"rules": [{"metric": "psi", "above": "high"}]}, "must be a finite number"),
    ({"rules": [{"metric": "psi", "above": 1, "treshold": 2}]}, r"unknown key\(s\) \['treshold'\]"),
    ({"rules": [{"metric": "psi", "above": 1, "severity": "fatal"}]}, "severity 'fatal'"),
    ({"rules": [{"name": "a", "metric": "psi", "above": 1},
                {"name": "a", "metric": "ks", "above": 1}]}, "duplicate name"),
    ({"rule": []}, "one key 'rules'"),
    ([1, 2], "expected a mapping"),
    ({"rules": {"metric": "psi"}}, "'rules' must be a list"),
])
def test_bad_rules_are_refused_with_the_reason(data, error):
    with pytest.raises(ConfigError, match=error):
        parse_rules(data, source="r.yaml")


def test_rules_file_loading_and_evaluation(tmp_path):
    assert len(load_rules(os.path.join(REPO, "audit_rules", "default.yaml"))) >= 4
    (tmp_path / "bad.yaml").write_text("rules: [\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_rules(str(tmp_path / "bad.yaml"))
    with pytest.raises(ConfigError, match="not found"):
        load_rules(str(tmp_path / "missing.yaml"))
    (tmp_path / "ok.yaml").write_text(
        "rules:\n"
        "  - {name: hi, metric: spoof_rate, above: 0.4, severity: critical}\n"
        "  - {name: drift, metric: psi, above: 0.1, scope: folders}\n"
        "  - {name: quiet, metric: n_current, below: 1}\n"
        "  - {name: other, metric: error_rate, above: 0, scope: nosuchfolder}\n")
    rules = load_rules(str(tmp_path / "ok.yaml"))
    drift = pd.DataFrame([
        {"group": OVERALL, "spoof_rate": 0.5, "psi": 0.05, "n_current": 10, "error_rate": 0.0,
         "note": ""},
        {"group": "calls", "spoof_rate": 0.9, "psi": 0.3, "n_current": 6, "error_rate": 0.0,
         "note": ""},
        {"group": "vm", "spoof_rate": 0.0, "psi": np.nan, "n_current": 4, "error_rate": 0.0,
         "note": "too few scored files"}])
    result = evaluate_rules(rules, drift)
    fired = {(a["rule"], a["group"]) for a in result["fired"]}
    assert fired == {("hi", OVERALL), ("drift", "calls")}
    assert {(s["rule"], s["group"]) for s in result["skipped"]} == {("drift", "vm"),
                                                                   ("other", "nosuchfolder")}
    assert "0.5" in result["fired"][0]["message"] and result["fired"][0]["above"] == 0.4


# --- fingerprints and work selection ----------------------------------------------------------


def test_fingerprints_follow_content_on_s3_and_mtime_locally(s3_bucket, tmp_path):
    a = put(s3_bucket, "arch/a.wav", b"RIFF-one")
    b = put(s3_bucket, "arch/sub/b.wav", b"RIFF-two")
    items = resolve_inputs(f"{s3_bucket}/arch")
    first = fingerprints(items, root=f"{s3_bucket}/arch")
    assert set(first) == {a, b} and all(v.startswith("etag:") for v in first.values())
    put(s3_bucket, "arch/a.wav", b"RIFF-one")  # same bytes again: same ETag
    put(s3_bucket, "arch/sub/b.wav", b"RIFF-2")  # new bytes
    again = fingerprints(items, root=f"{s3_bucket}/arch")
    assert again[a] == first[a] and again[b] != first[b]
    assert fingerprints(items)[b] == again[b]  # one info() per object gives the same

    local = put(str(tmp_path), "x.wav", b"data")
    os.utime(local, ns=(1_000_000_000, 2_000_000_000))
    item = [AudioItem(uri=local, size_bytes=4)]
    assert fingerprints(item) == {local: "mtime_ns:2000000000"}
    os.utime(local, ns=(1_000_000_000, 3_000_000_000))
    assert fingerprints(item) == {local: "mtime_ns:3000000000"}
    assert fingerprints([AudioItem(uri=str(tmp_path / "gone.wav"))]) == {
        str(tmp_path / "gone.wav"): None}


def test_selection_reasons_and_bundle_policies():
    items = [AudioItem(uri=u, size_bytes=s) for u, s in
             [("/a/new.wav", 1), ("/a/same.wav", 2), ("/a/resized.wav", 9), ("/a/touched.wav", 4),
              ("/a/failed.wav", 5)]]
    prints = {"/a/new.wav": "m:1", "/a/same.wav": "m:2", "/a/resized.wav": "m:3",
              "/a/touched.wav": "m:44", "/a/failed.wav": "m:5"}
    ledger = pd.DataFrame({
        "uri": ["/a/same.wav", "/a/resized.wav", "/a/touched.wav", "/a/failed.wav", "/a/gone.wav"],
        "size_bytes": [2, 3, 4, 5, 6], "fingerprint": ["m:2", "m:3", "m:4", "m:5", "m:6"],
        "bundle_name": "b", "bundle_version": "1", "run_id": "r0",
        "status": ["ok", "ok", "ok", "error", "ok"]})

    def reasons(**kw):
        sel = select_work(items, prints, ledger, bundle_name="b", **kw)
        return dict(zip(sel.todo["uri"], sel.todo["reason"])), sel.counts

    got, counts = reasons(bundle_version="1")
    assert got == {"/a/new.wav": "new", "/a/resized.wav": "changed",
                   "/a/touched.wav": "changed", "/a/failed.wav": "error_retry"}
    assert counts["unchanged"] == 1 and counts["gone"] == 1 and counts["listed"] == 5
    got, _ = reasons(bundle_version="1", retry_errors=False)
    assert "/a/failed.wav" not in got
    got, _ = reasons(bundle_version="1", rescore=True)
    assert got["/a/same.wav"] == "rescore" and len(got) == 5
    got, _ = reasons(bundle_version="2", on_new_bundle="rescore-all")
    assert got["/a/same.wav"] == "new_bundle" and len(got) == 5
    got, _ = reasons(bundle_version="2", on_new_bundle="new-only")
    assert "/a/same.wav" not in got and len(got) == 4
    with pytest.raises(ConfigError, match="on_new_bundle"):
        reasons(bundle_version="2", on_new_bundle="sometimes")


@pytest.mark.parametrize("kw,error", [
    ({"input": ""}, "needs both input and output"),
    ({"date": "2025-02-30"}, "YYYY-MM-DD"),
    ({"on_new_bundle": "always"}, "on_new_bundle must be one of"),
    ({"reference_runs": 0}, r"reference_runs must be an int >= 1, got 0"),
    ({"drift_min_files": 0}, r"drift_min_files must be an int >= 1, got 0"),
])
def test_audit_config_refusals_and_round_trip(kw, error):
    base = {"input": "s3://b/arch", "output": "s3://b/audit"}
    with pytest.raises(ConfigError, match=error):
        AuditConfig(**{**base, **kw})
    cfg = AuditConfig(**base, on_new_bundle="new-only", date="2025-01-31",
                      scoring=ScoreSettings(batch_size=8, featurize_memory_mb=512, plots=False))
    assert AuditConfig.from_dict(cfg.to_dict()) == cfg
    assert cfg.to_dict()["scoring"]["batch_size"] == 8


# --- page and spoken summary ------------------------------------------------------------------


def _audit_record(fired):
    return {"run_id": "r2", "date": "2025-01-02", "input": "s3://b/arch", "run_uri": "s3://x",
            "bundle": {"name": "audit", "version": "1"}, "n_scored": 3, "recovered": False,
            "counts": {"listed": 9, "new": 1, "changed": 1, "error_retry": 1, "unchanged": 6,
                       "gone": 0}, "reference_runs": ["r1"],
            "alerts": {"n_rules": 1, "fired": fired, "skipped": []}}


def test_page_is_self_contained_and_the_summary_is_spoken(tmp_path):
    cur = _rows(["s3://b/arch/calls/a.wav", "s3://b/arch/vm/<b>.wav"], [0.9, 0.2])
    ref = _rows(["s3://b/arch/calls/c.wav", "s3://b/arch/vm/d.wav"], [0.1, 0.2])
    drift = drift_table(cur, ref, root="s3://b/arch", min_files=1)
    trend = pd.DataFrame({"run_id": ["r1", "r2"], "n": [2, 2], "spoof_rate": [0.0, 0.5],
                          "error_rate": [0.0, 0.0]})
    plots = audit_plots(cur, ref, drift, trend, threshold=0.5)
    fired = [{"rule": "hi", "severity": "critical", "message": "spoof_rate of (overall) is 0.5"}]
    page = render_page(_audit_record(fired), drift, plots, suspicious=suspicious_table(cur))
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//)""", page), "external resource"
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert len(images) == len(plots) == 4
    assert all(base64.b64decode(i)[:8] == b"\x89PNG\r\n\x1a\n" for i in images)
    assert "&lt;b&gt;.wav" in page and "<b>.wav" not in page  # table cells are escaped
    assert "role='alert'" in page and "spoof_rate of (overall) is 0.5" in page

    text = summary_text(_audit_record(fired), drift)
    assert "9 files listed. 3 scored: 1 new, 1 changed, 1 retried after errors." in text
    assert "Spoof rate 50 percent, earlier runs 0 percent" in text and "1 alert fired" in text
    wav, note = speak(text, binary="no-such-espeak-binary")
    assert wav is None and "not installed" in note and "apt-get install espeak-ng" in note
    wav, note = speak(text)
    if wav is None:
        pytest.skip(note)
    import soundfile as sf

    data, sr = sf.read(io.BytesIO(wav))
    assert note is None and sr > 0 and len(data) / sr > 3.0  # several sentences of speech
    assert np.abs(data).max() > 0.01


# --- nights on real Ray and S3 ----------------------------------------------------------------


def _load_job(monkeypatch):
    monkeypatch.syspath_prepend(os.path.join(REPO, "jobs"))
    spec = importlib.util.spec_from_file_location("job_nightly_audit",
                                                  os.path.join(REPO, "jobs", "nightly_audit.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_two_nights_on_s3_score_only_what_changed(ray_session, s3_bucket, tmp_path):
    archive, output = f"{s3_bucket}/archive", f"{s3_bucket}/audit"
    uris = make_archive(archive)
    bundle = make_audit_bundle(str(tmp_path), "1")
    cfg = dict(input=archive, output=output, bundle=bundle, drift_min_files=2,
               spoken_summary=False,
               scoring=ScoreSettings(files_per_task=4, batch_size=8, plots=False))

    night1 = run_audit(AuditConfig(date="2025-01-01", **cfg))["runs"]
    assert len(night1) == 1 and night1[0]["n_scored"] == len(uris)
    assert night1[0]["counts"]["new"] == len(uris) and night1[0]["reference_runs"] == []

    added = put(archive, "calls/new.wav", wav_bytes("voiced", 130.0))
    changed = put(archive, "voicemail/e.wav", wav_bytes("voiced", 230.0, 1.5))
    put(archive, "calls/b.wav", wav_bytes(*ARCHIVE["calls/b.wav"]))  # same bytes: same ETag

    night2 = run_audit(AuditConfig(date="2025-01-02", **cfg))["runs"][0]
    counts = night2["counts"]
    assert (counts["new"], counts["changed"], counts["error_retry"]) == (1, 1, 1)
    assert counts["unchanged"] == len(uris) - 2 and counts["listed"] == len(uris) + 1

    report2 = reports.read_report(night2["run_uri"], columns=["uri", "status", "run_id"])
    assert list(report2.columns) == ["uri", "status", "run_id"]
    assert sorted(report2["uri"]) == sorted([added, changed, uris[BROKEN]])
    assert night2["run_uri"].startswith(f"{output}/date=2025-01-02/run_id=")
    ledger = read_ledger(output).set_index("uri")
    assert len(ledger) == len(uris) + 1 and ledger.index.is_unique
    assert ledger.loc[added, "run_id"] == night2["run_id"]
    assert ledger.loc[uris["calls/b.wav"], "run_id"] == night1[0]["run_id"]
    assert ledger.loc[uris[BROKEN], "status"] == "error"
    assert ledger.loc[changed, "size_bytes"] == len(wav_bytes("voiced", 230.0, 1.5))
    assert night2["reference_runs"] == [night1[0]["run_id"]]
    assert audit_ledger.open_plans(output) == []

    everything = read_audit_reports(output)
    assert sorted(everything["date"].unique()) == ["2025-01-01", "2025-01-02"]
    assert len(everything) == len(uris) + 3
    page = storage.read_bytes(night2["page"]).decode()
    assert "data:image/png;base64," in page and night2["run_id"] in page
    alerts = json.loads(storage.read_bytes(storage.join(
        audit_ledger.audit_run_uri(output, "2025-01-02", night2["run_id"]), "alerts.json")))
    assert alerts["fired"] == [] and alerts["n_rules"] == 0


def test_bundle_upgrade_policies_and_alert_exit_codes(ray_session, tmp_path, monkeypatch, capsys):
    archive, output = str(tmp_path / "archive"), str(tmp_path / "audit")
    uris = make_archive(archive)
    v1, v2 = make_audit_bundle(str(tmp_path), "1"), make_audit_bundle(str(tmp_path), "2", seed=1)
    rules = tmp_path / "rules.yaml"
    rules.write_text("rules:\n  - {name: errors, metric: error_rate, above: 0.05}\n"
                     "  - {name: nothing-new, metric: n_current, below: 1}\n")
    job = _load_job(monkeypatch)
    common = ["--input", archive, "--output", output, "--drift-min-files", "2",
              "--no-spoken-summary", "--no-plots"]

    def night(*args):
        code = job.main([*common, *args])
        out, err = capsys.readouterr()
        return code, out, err

    # Night 1 (v1): one of 8 files is not audio -> error rate 1/8 > 0.05 -> exit 3.
    code, out, err = night("--bundle", v1, "--date", "2025-01-01", "--rules", str(rules))
    assert code == 3, err
    assert "error_rate of (overall) is 0.125" in out
    # Night 2 (v2, new-only): only the errored file again; the 7 good ones keep v1.
    code, out, err = night("--bundle", v2, "--date", "2025-01-02", "--on-new-bundle", "new-only",
                           "--no-retry-errors")
    assert code == 0, err
    assert json.loads(out.split("\nexit code")[0])["scored"] == 0
    ledger = read_ledger(output)
    assert set(ledger["bundle_version"]) == {"1"}
    # Night 3 (v2, rescore-all): every file last scored by v1 is scored again.
    code, out, err = night("--bundle", v2, "--date", "2025-01-03", "--no-retry-errors")
    assert code == 0, err
    summary = json.loads(out.split("\nexit code")[0])
    assert summary["counts"]["new_bundle"] == len(uris) and summary["scored"] == len(uris)
    ledger = read_ledger(output)
    assert set(ledger["bundle_version"]) == {"2"} and len(ledger) == len(uris)
    # Night 4: nothing changed -> nothing scored; the "nothing-new" rule fires -> exit 3.
    code, out, err = night("--bundle", v2, "--date", "2025-01-04", "--no-retry-errors",
                           "--rules", str(rules))
    assert code == 3 and "n_current of (overall) is 0" in out, err
    assert [r["date"] for r in audit_ledger.committed_runs(output)] == [
        "2025-01-01", "2025-01-03"]  # nights without scoring add no report partition
    # Usage errors exit 2 before any work.
    (tmp_path / "broken.yaml").write_text("rules: [{metric: nope, above: 1}]\n")
    code, _, err = night("--bundle", v2, "--rules", str(tmp_path / "broken.yaml"))
    assert code == 2 and "metric 'nope' unknown" in err
    code, _, err = night("--bundle", v2, "--date", "2025-13-01")
    assert code == 2 and "YYYY-MM-DD" in err


# --- ray job submit, and a kill between commit and ledger update ------------------------------


def _submit(submit_job, args, fault=None):
    prefix = ["env", f"SPOOFRAY_AUDIT_FAULT={fault}"] if fault else []
    run = submit_job([*prefix, "python", "jobs/nightly_audit.py", *args], timeout=300)
    return run, run.stdout + run.stderr


def test_nightly_audit_via_ray_job_submit_survives_a_kill_before_the_ledger_update(
        submit_job, tmp_path):
    archive, output = str(tmp_path / "archive"), str(tmp_path / "audit")
    uris = make_archive(archive)
    bundle = make_audit_bundle(str(tmp_path), "1")
    args = ["--input", archive, "--output", output, "--bundle", bundle, "--no-plots",
            "--drift-min-files", "2"]

    run, log = _submit(submit_job, [*args, "--date", "2025-01-01"])
    assert run.returncode == 0, log[-3000:]
    assert re.search(r"Job 'raysubmit_\w+' succeeded", log), log[-2000:]
    night1 = read_ledger(output)
    assert len(night1) == len(uris)

    added = put(archive, "calls/late.wav", wav_bytes("sine", 300.0))
    changed = put(archive, "calls/a.wav", wav_bytes("voiced", 125.0, 2.0))
    # Killed before scoring: only the plan is left.
    run, log = _submit(submit_job, [*args, "--date", "2025-01-02"], fault="after-plan")
    assert run.returncode != 0 and re.search(r"Job 'raysubmit_\w+' failed", log), log[-2000:]
    assert len(audit_ledger.open_plans(output)) == 1
    assert [r["date"] for r in audit_ledger.committed_runs(output)] == ["2025-01-01"]
    # Repeated, and killed again after its report was committed.
    run, log = _submit(submit_job, [*args, "--date", "2025-01-02"], fault="after-commit")
    assert run.returncode != 0 and re.search(r"Job 'raysubmit_\w+' failed", log), log[-2000:]
    assert "interrupted before its report was committed" in log
    # Killed after the commit: the report is there, the ledger is night 1's, the plan waits.
    killed = [r for r in audit_ledger.committed_runs(output) if r["date"] == "2025-01-02"]
    assert len(killed) == 1
    assert read_ledger(output).equals(night1)
    assert len(audit_ledger.open_plans(output)) == 1

    run, log = _submit(submit_job, [*args, "--date", "2025-01-02"])
    assert run.returncode == 0, log[-3000:]
    assert "applying its report now" in log and '"recovered": true' in log
    reports = read_audit_reports(output)
    night2 = reports[reports["date"] == "2025-01-02"]
    # No duplicates: each file once per night; no gaps: every listed file has a result.
    assert sorted(night2["uri"]) == sorted([added, changed, uris[BROKEN]])
    assert night2["run_id"].nunique() == 1 and night2["run_id"].iloc[0] == killed[0]["run_id"]
    ledger = read_ledger(output).set_index("uri")
    listed = {it.uri for it in resolve_inputs(archive)}
    assert set(ledger.index) == listed and ledger.index.is_unique
    assert ledger.loc[added, "run_id"] == killed[0]["run_id"]
    assert audit_ledger.open_plans(output) == []
    assert not any("_tmp_run_id" in p for _, dirs, _ in os.walk(output) for p in dirs)
    page = audit_ledger.audit_run_uri(output, "2025-01-02", killed[0]["run_id"])
    assert os.path.exists(os.path.join(page, "index.html"))
    audit = json.loads(open(os.path.join(page, "audit.json")).read())
    assert audit["recovered"] and audit["counts"]["new"] == 1 and audit["counts"]["changed"] == 1
    assert audit["spoken_summary"] or "espeak-ng" in audit["spoken_summary_note"]


def test_page_names_failing_files_fits_its_tables_and_shows_the_model():
    from spoofray.audit.page import MAX_CELL, failures_table, model_headline

    root = "s3://b/arch"
    cur = pd.concat([
        _rows([f"{root}/calls/{i}.wav" for i in range(3)], [0.95, 0.2, 0.7]),
        _rows([f"{root}/vm/bad{i:02d}.wav" for i in range(25)], [np.nan] * 25, status="error"),
    ], ignore_index=True)
    cur["error_type"] = [None] * 3 + ["AudioDecodeError"] * 25
    cur["error_message"] = [None] * 3 + [f"bad{i:02d}.wav: not audio " + "x" * 400
                                         for i in range(25)]
    cur["top_window_start_s"] = [62.0, 0.0, 4.0] + [np.nan] * 25
    cur["top_window_end_s"] = [66.0, 4.0, 8.0] + [np.nan] * 25
    drift = drift_table(cur, cur, root=root, min_files=1)
    fired = [{"rule": "errors", "severity": "critical",
              "message": "error_rate of (overall) is 0.89"}]
    evaluation = {"protocol": "leave-one-source-out", "pooled_eer": 0.2261, "pooled_auc": 0.8488,
                  "recall_at_threshold": 0.406, "false_alarm_rate_at_threshold": 0.0139,
                  "threshold": 0.947}
    page = render_page(_audit_record(fired), drift, {}, suspicious=suspicious_table(cur),
                       failures=failures_table(cur), n_failed=25, model=evaluation)
    # The failing files are named, with their error type, right after the alerts.
    assert "the first 20 of 25, by URI" in page
    assert page.index("bad00.wav") < page.index("<h2>This run</h2>")
    assert "AudioDecodeError" in page and "bad19.wav" in page and "bad20.wav" not in page
    assert "x" * (MAX_CELL + 1) not in page  # long messages are cut
    # Tables wrap: headers with spaces, inside a box that scrolls rather than overflows.
    assert "spoof rate reference" in page and "spoof_rate_reference" not in page
    assert page.count("<div class='fit'>") >= 3 and "overflow-x:auto" in page
    # The suspicious files carry their top window's span; the model its headline numbers.
    assert "1:02.0–1:06.0" in page and "4.0 s–8.0 s" in page
    assert model_headline(evaluation)["EER (pooled)"] == "22.6 %" and "22.6 %" in page
    assert "spoofs caught at the threshold" in page and "40.6 %" in page
    no_model = render_page(_audit_record([]), drift, {}, model=None)
    assert "records no evaluation" in no_model

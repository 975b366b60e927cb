"""Evaluation of a scored archive: the metric table and plots, against labels.

The archive is scored for real (local Ray); the expected numbers come from
:mod:`spoofray.metrics` applied to the report joined with the manifest by hand.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pandas as pd
import pytest

from spoofray import metrics
from spoofray.errors import MetricError
from spoofray.pipeline.score import ScoreConfig, score_archive
from spoofray.reports import EvaluateConfig, evaluate_report, metric_table
from spoofray.testing.bundles import make_audio_bundle
from spoofray.testing.synth import make_demo_archive

PNG = b"\x89PNG\r\n\x1a\n"


def test_evaluate_scored_archive_gives_the_metric_table(ray_session, tmp_path):
    archive = make_demo_archive(tmp_path / "archive", seed=5, n_bonafide=6, n_spoof=8,
                                duration_range_s=(1.0, 3.0))
    bundle = make_audio_bundle(tmp_path)
    summary = score_archive(ScoreConfig(input=archive.manifest_path, output=str(tmp_path / "r"),
                                        bundle=bundle, run_id="ev", files_per_task=4,
                                        batch_size=8, plots=False))
    run = summary["run_uri"]

    result = evaluate_report(EvaluateConfig(report=run, output=str(tmp_path / "eval")))
    with_manifest = evaluate_report(EvaluateConfig(report=run, output=str(tmp_path / "eval2"),
                                                   labels=archive.manifest_path))

    # Independent computation: the report joined with the manifest by hand.
    report = pd.read_parquet(os.path.join(run, "report"))
    report = report[report["channel"].isna()]  # file rows (2-channel files add channel rows)
    truth = {os.path.join(archive.root, it.path): it for it in archive.items}
    # The manifest's labels pass through as true_label/true_attack, apart from the prediction.
    assert report["true_label"].tolist() == [truth[u].label for u in report["uri"]]
    spoofs = report[report["true_label"] == "spoof"]
    assert spoofs["true_attack"].tolist() == [truth[u].attack for u in spoofs["uri"]]
    assert set(report["predicted_label"].dropna()) <= {"bonafide", "spoof"}
    ok = report[report["status"] == "ok"]
    labels = np.array([truth[u].label == "spoof" for u in ok["uri"]])
    scores = ok["spoof_score"].to_numpy()
    threshold = float(report["threshold"].iloc[0])
    expected = metrics.evaluate(labels, scores, threshold=threshold)

    table = pd.read_parquet(tmp_path / "eval" / "metrics.parquet")
    overall = table[table["scope"] == "overall"].iloc[0]
    for key in ("eer", "auc", "accuracy", "precision", "recall", "f1", "eer_threshold"):
        assert overall[key] == pytest.approx(expected[key]), key
    assert {k: int(overall[k]) for k in ("tn", "fp", "fn", "tp")} == expected["confusion"]
    assert (overall["n_bonafide"], overall["n_spoof"]) == (6, 8)

    attacks = table[table["scope"] == "attack"].set_index("attack")
    assert set(attacks.index) == {it.attack for it in archive.good_items if it.label == "spoof"}
    for attack, row in attacks.iterrows():
        keep = ~labels | np.array([truth[u].attack == attack for u in ok["uri"]])
        eer, _ = metrics.compute_eer(labels[keep], scores[keep])
        assert row["eer"] == pytest.approx(eer) and row["n_bonafide"] == 6

    assert result["counts"] == {"files": len(archive.items), "labelled": len(archive.items),
                                "unlabelled": 0, "error_rows_left_out": len(archive.broken)}
    assert with_manifest["metrics"] == result["metrics"]
    with open(tmp_path / "eval" / "metrics.json") as fh:
        assert json.load(fh)["metrics"][0]["eer"] == pytest.approx(expected["eer"])
    for name in ("roc.png", "det.png"):
        with open(tmp_path / "eval" / name, "rb") as fh:
            assert fh.read(8) == PNG


def test_old_report_with_label_reads_as_predicted_label(tmp_path):
    from spoofray.reports import read_report, summarize_report

    # A report written before the rename: the prediction was called ``label``.
    old = pd.DataFrame({"uri": ["a.wav", "b.wav", "c.wav"], "status": ["ok", "ok", "error"],
                        "spoof_score": [0.9, 0.1, np.nan], "label": ["spoof", "bonafide", None],
                        "threshold": 0.5, "true_label": ["spoof", "bonafide", "spoof"],
                        "true_attack": ["A01", None, "A02"], "duration_s": [1.0, 2.0, None],
                        "size_bytes": [10, 20, 30], "top_window_start_s": [0.0, 0.0, None],
                        "error_type": [None, None, "AudioDecodeError"], "run_id": "old"})
    run = tmp_path / "run_id=old"
    os.makedirs(run / "report")
    old.to_parquet(run / "report" / "part-00000.parquet")
    (run / "_SUCCESS").write_bytes(b"")

    for rep in (read_report(str(run)), read_report(str(run / "report" / "part-00000.parquet"))):
        assert "label" not in rep
        assert rep["predicted_label"].tolist()[:2] == ["spoof", "bonafide"]
        assert rep["true_label"].tolist() == ["spoof", "bonafide", "spoof"]
    summary = summarize_report(read_report(str(run)), wall_s=1.0, input_uri="x", run_id="old",
                               started_at="", bundle={})
    assert summary["counts"]["spoof"] == 1 and summary["spoof_rate"] == 0.5
    # Reading only some columns asks the old part for ``label`` (the audit's reads).
    wanted = ["uri", "status", "spoof_score", "predicted_label", "run_id"]
    cols = read_report(str(run), columns=wanted)
    assert list(cols.columns) == wanted
    assert cols["predicted_label"].tolist()[:2] == ["spoof", "bonafide"]
    result = evaluate_report(EvaluateConfig(report=str(run), output=str(tmp_path / "eval")))
    assert result["counts"]["labelled"] == 3 and result["threshold"] == 0.5


def test_one_class_gives_only_its_rate_at_the_threshold():
    # A folder of known-real recordings: the false-alarm rate is what there is to know.
    real = pd.DataFrame({"uri": list("abcd"), "status": ["ok"] * 3 + ["error"],
                         "spoof_score": [0.2, 0.6, 0.9, np.nan],
                         "true_label": ["bonafide"] * 4, "true_attack": [None] * 4})
    row = metric_table(real, 0.5).iloc[0]
    assert row["false_alarm_rate"] == pytest.approx(2 / 3) and row["n_bonafide"] == 3
    assert pd.isna(row["eer"]) and (row["fp"], row["tn"]) == (2, 1)
    fakes = real.assign(true_label="spoof", true_attack="x")
    assert metric_table(fakes, 0.7).iloc[0]["recall"] == pytest.approx(1 / 3)
    with pytest.raises(MetricError, match="none of the report"):
        metric_table(real.assign(true_label=None), 0.5)


def _hand_written_run(tmp_path, uris, status):
    n = len(uris)
    report = pd.DataFrame({"uri": uris, "status": status,
                           "spoof_score": [0.9 if s == "ok" else np.nan for s in status],
                           "predicted_label": ["spoof" if s == "ok" else None for s in status],
                           "threshold": 0.5, "true_label": [None] * n,
                           "true_attack": [None] * n})
    run = tmp_path / "reports" / "run_id=hand"
    os.makedirs(run / "report")
    report.to_parquet(run / "report" / "part-00000.parquet")
    (run / "_SUCCESS").write_bytes(b"")
    return str(run)


def test_labels_that_match_no_report_uri_are_refused_with_examples(tmp_path):
    from spoofray.errors import ConfigError

    labels = tmp_path / "labels.csv"
    labels.write_text("path,label\nelsewhere/a.wav,bonafide\nelsewhere/b.wav,spoof\n")
    run = _hand_written_run(tmp_path, ["/data/2024/a.wav", "/data/2024/b.wav"], ["ok", "ok"])
    with pytest.raises(ConfigError) as caught:
        evaluate_report(EvaluateConfig(report=run, output=str(tmp_path / "eval"),
                                       labels=str(labels)))
    message = str(caught.value)
    assert "no report URI matched the labels" in message
    assert "/data/2024/a.wav" in message  # an example from the report ...
    assert str(tmp_path / "elsewhere" / "a.wav") in message  # ... and from the labels
    assert "2 files" in message


def test_counts_say_how_many_matched_and_every_error_row_left_out(tmp_path):
    labels = tmp_path / "labels.csv"
    labels.write_text("path,label\na.wav,bonafide\nb.wav,spoof\nc.wav,spoof\n")
    ok = [str(tmp_path / n) for n in ("a.wav", "b.wav")]
    # Two error rows: one the labels know, one they do not: both are left out.
    run = _hand_written_run(tmp_path, [*ok, str(tmp_path / "c.wav"), "/other/d.wav"],
                            ["ok", "ok", "error", "error"])
    result = evaluate_report(EvaluateConfig(report=run, output=str(tmp_path / "eval"),
                                            labels=str(labels)))
    counts = result["counts"]
    assert counts["matched_labels"] == 3 and counts["labels_listed"] == 3
    assert counts["error_rows_left_out"] == 2
    assert (counts["labelled"], counts["unlabelled"]) == (3, 1)

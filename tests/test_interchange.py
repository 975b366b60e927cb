"""Formats of the field on real files: lhotse manifests as input, ASVspoof score files and
lhotse supervisions as output, min t-DCF with ASV scores, the ``spoofray`` command running
the README's lines on a real local Ray."""

from __future__ import annotations

import gzip
import json
import math
import os
import re
import shlex
import shutil
import tomllib

import pandas as pd
import pytest

from spoofray import cli, interchange, reports
from spoofray.errors import SourceError
from spoofray.sources import resolve_inputs

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _clips(devcorpus, n: int = 3) -> tuple[list[str], list[str]]:
    m = pd.read_csv(devcorpus / "manifest.csv")
    real = m[(m["corpus"] == "librispeech") & (m["label"] == "bonafide")]["path"].head(n)
    fake = m[(m["corpus"] == "ljspeech") & (m["label"] == "spoof")]["path"].head(n)
    return [str(devcorpus / p) for p in real], [str(devcorpus / p) for p in fake]


def test_lhotse_recordings_with_their_supervisions_are_an_input(devcorpus, tmp_path):
    real, fake = _clips(devcorpus, 2)
    (tmp_path / "audio").mkdir()
    recs, sups = [], []
    for i, (src, label) in enumerate([(p, "bonafide") for p in real] + [(p, "spoof") for p in fake]):
        shutil.copy(src, tmp_path / "audio" / f"r{i}.flac")
        recs.append({"id": f"rec{i}", "sources": [{"type": "file", "channels": [0],
                                                  "source": f"audio/r{i}.flac"}],
                     "sampling_rate": 16000, "num_samples": 1, "duration": 1.0})
        sups.append({"id": f"sup{i}", "recording_id": f"rec{i}", "start": 0.0, "duration": 1.0,
                     "channel": 0, "speaker": f"spk{i % 2}",
                     "custom": {"label": label, "attack": "tts" if label == "spoof" else None}})
    rec_uri = str(tmp_path / "corpus_recordings_test.jsonl.gz")
    interchange.write_jsonl(rec_uri, recs)
    interchange.write_jsonl(str(tmp_path / "corpus_supervisions_test.jsonl.gz"), sups)
    with gzip.open(rec_uri, "rt") as fh:  # what lhotse itself reads: gzipped JSON lines
        assert [json.loads(line)["id"] for line in fh] == ["rec0", "rec1", "rec2", "rec3"]

    items = resolve_inputs(rec_uri)
    assert [(os.path.basename(i.uri), i.label, i.group, i.speaker) for i in items] == [
        ("r0.flac", "bonafide", "rec0", "spk0"), ("r1.flac", "bonafide", "rec1", "spk1"),
        ("r2.flac", "spoof", "rec2", "spk0"), ("r3.flac", "spoof", "rec3", "spk1")]
    assert all(i.size_bytes for i in items) and items[2].attack == "tts"
    # The supervisions manifest names the same input (its recordings lie beside it) ...
    assert resolve_inputs(str(tmp_path / "corpus_supervisions_test.jsonl.gz")) == items
    # ... and recordings alone are an unlabelled input.
    alone = str(tmp_path / "alone.jsonl")
    interchange.write_jsonl(alone, recs)
    assert [i.label for i in resolve_inputs(alone)] == [None] * 4
    interchange.write_jsonl(str(tmp_path / "x_supervisions_y.jsonl"), sups)
    with pytest.raises(SourceError, match="its RecordingSet"):
        resolve_inputs(str(tmp_path / "x_supervisions_y.jsonl"))
    recs[0]["sources"][0]["source"] = "../outside.flac"
    interchange.write_jsonl(alone, recs)
    with pytest.raises(SourceError, match="points outside"):
        resolve_inputs(alone)


def test_score_lines_ids_and_asv_scores(tmp_path):
    ids = interchange.utterance_ids(["/a/x/one.wav", "/a/y/two.flac"])
    assert ids == ["one", "two"]
    assert interchange.utterance_ids(["/a/x/one.wav", "/a/y/one.wav"]) == ["x/one", "y/one"]
    assert interchange.utterance_ids(["/a/one.wav"], {"/a/one.wav": "rec-7"}) == ["rec-7"]
    assert interchange.cm_score_lines(["u1", "u2"], [0.25, 0.9], ["bonafide", "spoof"],
                                      [None, "A07"]) == ["u1 - bonafide 0.75", "u2 A07 spoof 0.1"]
    assert interchange.cm_score_lines(["u1"], [0.25], [None]) == ["u1 0.75"]
    asv = tmp_path / "asv.txt"
    asv.write_text("LA_0039 LA_E_1 target 4.5\nLA_0039 LA_E_2 nontarget -2\n\nspoof 0.5\n")
    assert interchange.read_asv_scores(str(asv)) == {
        "target": [4.5], "nontarget": [-2.0], "spoof": [0.5]}
    asv.write_text("LA_0039 LA_E_1 bonafide 4.5\n")
    with pytest.raises(SourceError, match="line 1"):
        interchange.read_asv_scores(str(asv))


def test_the_spoofray_command_is_declared_and_maps_to_the_jobs(capsys):
    with open(os.path.join(REPO, "pyproject.toml"), "rb") as fh:
        scripts = tomllib.load(fh)["project"]["scripts"]
    assert scripts == {"spoofray": "spoofray.cli:main"}
    for command in ("score", "extract", "tune", "train", "bundle", "audit", "evaluate"):
        assert os.path.isfile(os.path.join(REPO, "jobs", cli.COMMANDS[command] + ".py"))
    assert cli.main(["nonsense"]) == 2
    with pytest.raises(SystemExit) as done:
        cli.main(["export", "--help"])
    assert done.value.code == 0
    assert "usage: spoofray export" in capsys.readouterr().out


def _readme_block(tag: str, language: str = "bash") -> str:
    with open(os.path.join(REPO, "README.md")) as fh:
        text = fh.read()
    block = re.search(rf"<!-- README-test: {tag} .*?-->\n```{language}\n(.*?)```", text, re.S)
    assert block, f"README block {tag!r} not found"
    return block.group(1)


def _readme_lines(tag: str) -> list[str]:
    return [line for line in _readme_block(tag).splitlines() if line.strip()]


def test_readme_interchange_lines_run(ray_session, devcorpus, tmp_path, monkeypatch):
    real, fake = _clips(devcorpus)
    for folder, paths in (("real", real), ("fake", fake)):
        (tmp_path / "calls" / folder).mkdir(parents=True)
        for p in paths:
            shutil.copy(p, tmp_path / "calls" / folder / os.path.basename(p))
    # An ASV system's scores: targets high, zero-effort impostors low, spoofs in between.
    (tmp_path / "asv_scores.txt").write_text(
        "".join(f"spk u{i} {key} {score}\n" for i, (key, score) in enumerate(
            [("target", 3.1), ("target", 2.4), ("target", 1.2), ("nontarget", -2.0),
             ("nontarget", -0.5), ("nontarget", 1.5), ("spoof", 1.0), ("spoof", 2.8)])))
    monkeypatch.chdir(tmp_path)
    lines = _readme_lines("interchange")
    for line in lines:
        args = shlex.split(line)
        assert args[0] == "spoofray"
        assert cli.main(args[1:]) == 0, line

    report = reports.file_rows(reports.read_report("reports/run_id=first")).set_index("uri")
    scores = [line.split() for line in (tmp_path / "scores.txt").read_text().splitlines()]
    assert len(scores) == len(report) == 6
    for utt, attack, key, score in scores:
        row = report.loc[next(u for u in report.index if os.path.basename(u).startswith(utt))]
        assert key == row["true_label"] and float(score) == pytest.approx(
            1 - row["spoof_score"], abs=1e-8)
        assert (attack == "-") == (key == "bonafide")
    sups = interchange.read_jsonl(str(tmp_path / "segments.jsonl"))
    assert len(sups) == len(reports.read_segments("reports/run_id=first"))
    assert all(s["duration"] > 0 and s["custom"]["label"] == "spoof" for s in sups)
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert math.isfinite(metrics["metrics"][0]["min_tdcf"])

    # The README's way to read a run, on this run: plain pandas and read_report agree.
    code = _readme_block("read-report", "python")
    assert 'run = "out/reports/run_id=<id>"' in code
    scope: dict = {}
    exec(code.replace("out/reports/run_id=<id>", "reports/run_id=first"), scope)
    plain = pd.read_parquet("reports/run_id=first/report")
    assert len(scope["report"]) == len(plain) >= 6
    assert sorted(scope["report"]["uri"]) == sorted(plain["uri"])

"""The Ray Data extraction pipeline end to end, on a real local Ray, real files and real S3."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from spoofray import dataset, storage, testing
from spoofray.config import AudioConfig, FeatureConfig
from spoofray.errors import ConfigError, OutputExistsError
from spoofray.pipeline.extract import ExtractConfig, extract_features


SMALL = FeatureConfig(audio=AudioConfig(window_s=1.0, hop_s=0.5), kinds=("logmel", "stats"),
                      n_mels=32)


def _windows_expected(duration_s: float, cfg: AudioConfig) -> int:
    """Hand formula of DESIGN.md: 1 window up to window_s, then one more per started hop."""
    n, w, h = round(duration_s * cfg.sample_rate), cfg.window_samples, cfg.hop_samples
    return 1 if n <= w else 1 + -(-(n - w) // h)


def test_bad_files_become_error_rows_and_good_files_all_windows(ray_session, tmp_path):
    archive = tmp_path / "in"
    archive.mkdir()
    durations = {"a.wav": 0.7, "b.wav": 2.3, "c.flac": 3.0}
    for name, dur in durations.items():
        testing.write_wav(archive / name, testing.chirp(200, 3000, dur, 16_000), 16_000)
    broken = testing.make_broken_files(archive / "broken")

    out = str(tmp_path / "ds")
    manifest = extract_features(ExtractConfig(input=str(archive), output=out, features=SMALL,
                                              files_per_task=2))

    counts = manifest["counts"]
    assert counts["files_listed"] == len(durations) + len(broken)
    assert counts["files_ok"] == len(durations)
    assert counts["files_error"] == len(broken)

    windows = dataset.read_table(out).to_pandas()
    per_file = windows.groupby("uri")["window_index"].apply(sorted)
    assert {p.rsplit("/", 1)[-1] for p in per_file.index} == set(durations)
    for uri, idx in per_file.items():
        expected = _windows_expected(durations[uri.rsplit("/", 1)[-1]], SMALL.audio)
        assert idx == list(range(expected)), uri

    errors = dataset.read_errors(out).to_pandas()
    assert sorted(errors["uri"].str.rsplit("/", n=1).str[-1]) == sorted(broken)
    by_name = dict(zip(errors["uri"].str.rsplit("/", n=1).str[-1], errors["error_type"]))
    assert by_name == broken
    assert all(name in msg for name, msg in zip(errors["uri"], errors["error_message"]))

    table = dataset.read_table(out)
    assert dataset.tensor_column(table, "logmel").shape[1:] == SMALL.feature_shapes()["logmel"]
    assert set(table.column("feature_config_hash").to_pylist()) == {SMALL.config_hash()}

    # Parquet layout: tensor floats split into byte streams without min/max statistics,
    # text dictionary-encoded (see dataset.write_part).
    part = next((Path(out) / dataset.FEATURES_DIR).glob("*.parquet"))
    row_group = pq.ParquetFile(part).metadata.row_group(0)
    columns = {row_group.column(i).path_in_schema: row_group.column(i)
               for i in range(row_group.num_columns)}
    for kind in SMALL.kinds:
        leaf = columns[f"{kind}.list.element"]
        assert "BYTE_STREAM_SPLIT" in leaf.encodings and leaf.statistics is None, kind
    assert "RLE_DICTIONARY" in columns["uri"].encodings
    assert columns["start_s"].statistics is not None


@pytest.mark.parametrize("files_per_task, workers, max_windows, want_parts", [
    # One task, a 5-window budget: parts close after 3.0 s (5 windows), after 2.3 s + 1.5 s
    # (4 + 2), and the last holds 0.7 s (1).
    (4, 1, 5, [["longer.wav", "mid.wav"], ["longest.wav"], ["short.wav"]]),
    # Two files per task, budget never reached: one part per task, the two largest together.
    (2, 1, 512, [["longer.wav", "longest.wav"], ["mid.wav", "short.wav"]]),
    # One task of four files would leave a worker idle: two tasks for each of two workers.
    (4, 2, 512, [["longer.wav"], ["longest.wav"], ["mid.wav"], ["short.wav"]]),
])
def test_tasks_take_largest_files_first_and_write_bounded_parts(
        ray_session, tmp_path, files_per_task, workers, max_windows, want_parts):
    # WAV sizes grow with duration, so largest first is longest first.
    archive = tmp_path / "in"
    archive.mkdir()
    durations = {"short.wav": 0.7, "mid.wav": 1.5, "longer.wav": 2.3, "longest.wav": 3.0}
    for name, dur in durations.items():
        testing.write_wav(archive / name, testing.sine(330, dur, 16_000), 16_000)

    out = tmp_path / "ds"
    manifest = extract_features(ExtractConfig(input=str(archive), output=str(out),
                                              features=SMALL, files_per_task=files_per_task,
                                              concurrency=workers,
                                              max_windows_per_part=max_windows))

    parts = sorted((out / dataset.FEATURES_DIR).glob("*.parquet"))
    files_per_part = sorted(
        sorted(u.rsplit("/", 1)[-1] for u in set(pq.read_table(p, columns=["uri"])["uri"]
                                                 .to_pylist()))
        for p in parts)
    assert files_per_part == want_parts
    windows = dataset.read_table(str(out), columns=["uri", "window_index"]).to_pandas()
    per_file = windows.groupby(windows["uri"].str.rsplit("/", n=1).str[-1]).size()
    assert per_file.to_dict() == {name: _windows_expected(d, SMALL.audio)
                                  for name, d in durations.items()}
    assert manifest["counts"]["orphan_parts_removed"] == 0


def test_refuses_to_overwrite_unless_asked(ray_session, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    testing.write_wav(src / "x.wav", testing.sine(440, 1.5, 16_000), 16_000)
    cfg = ExtractConfig(input=str(src), output=str(tmp_path / "ds"), features=SMALL)
    extract_features(cfg)
    with pytest.raises(OutputExistsError, match="--overwrite"):
        extract_features(cfg)
    again = extract_features(dataclasses.replace(cfg, overwrite=True))
    assert again["counts"]["files_ok"] == 1
    assert len(dataset.read_table(str(tmp_path / "ds"))) == _windows_expected(1.5, SMALL.audio)


def test_s3_in_and_out_through_moto_server(ray_session, s3_bucket, tmp_path):
    fs, _ = storage.filesystem(s3_bucket)
    local = tmp_path / "local"
    (local / "real").mkdir(parents=True)
    (local / "fake" / "vocoder").mkdir(parents=True)
    testing.write_wav(local / "real" / "r.wav", testing.sine(300, 2.0, 16_000), 16_000)
    testing.write_wav(local / "fake" / "vocoder" / "f.wav", testing.chirp(100, 900, 1.2, 22_050),
                      22_050)
    (local / "fake" / "vocoder" / "bad.wav").write_bytes(b"RIFF not really")
    fs.put(str(local) + "/", f"{s3_bucket[5:]}/audio/", recursive=True)

    out = f"{s3_bucket}/features"
    manifest = extract_features(ExtractConfig(input=f"{s3_bucket}/audio", output=out,
                                              features=SMALL))
    assert manifest["counts"] == {**manifest["counts"], "files_listed": 3, "files_ok": 2,
                                  "files_error": 1}
    windows = dataset.read_table(out).to_pandas()
    assert set(windows["uri"].str.startswith(f"{s3_bucket}/audio/")) == {True}
    labels = windows.groupby("uri")["label"].first()
    assert sorted(labels) == ["bonafide", "spoof"]
    assert dataset.read_manifest(out)["feature_config_hash"] == SMALL.config_hash()
    assert len(dataset.read_errors(out)) == 1


@pytest.mark.parametrize("form", ["manifest", "protocol"])
def test_devcorpus_every_file_accounted_for(ray_session, devcorpus, tmp_path, form):
    source = devcorpus / ("manifest.csv" if form == "manifest" else "protocol.txt")
    cfg = FeatureConfig(kinds=("stats",))
    out = str(tmp_path / form)
    manifest = extract_features(ExtractConfig(input=str(source), output=out, features=cfg,
                                              files_per_task=32))
    truth = pd.read_csv(devcorpus / "manifest.csv")
    assert manifest["counts"]["files_listed"] == len(truth) == 998
    assert manifest["counts"]["files_ok"] + manifest["counts"]["files_error"] == len(truth)

    windows = dataset.read_table(out, columns=["uri", "window_index", "label", "duration_s"])
    df = windows.to_pandas()
    errors = dataset.read_errors(out).to_pandas()
    seen = set(df["uri"]) | set(errors["uri"])
    assert seen == {str(devcorpus / p) for p in truth["path"]}
    assert not set(df["uri"]) & set(errors["uri"])
    # Labels carried from the listing match the manifest's.
    got = df.groupby("uri")["label"].first()
    want = truth.set_index(truth["path"].map(lambda p: str(devcorpus / p)))["label"]
    assert (got == want.loc[got.index]).all()
    # Window counts follow from each file's decoded duration.
    per_file = df.groupby("uri").agg(n=("window_index", "size"), dur=("duration_s", "first"))
    expected = per_file["dur"].map(lambda d: _windows_expected(d, cfg.audio))
    assert (per_file["n"] == expected).all()
    assert np.isfinite(dataset.tensor_column(dataset.read_table(out), "stats")).all()


def test_job_help_and_smoke_test():
    job = str(Path(__file__).resolve().parents[1] / "jobs" / "extract_features.py")
    help_text = subprocess.run([sys.executable, job, "--help"], capture_output=True, text=True,
                               check=True).stdout
    for flag in ("--input", "--output", "--overwrite", "--smoke-test", "--audio-root"):
        assert flag in help_text
    run = subprocess.run([sys.executable, job, "--smoke-test", "--num-cpus", "2"],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    summary = json.loads(run.stdout[run.stdout.index("{"):])
    assert summary["files_ok"] > 0 and summary["files_error"] > 0
    assert summary["files_ok"] + summary["files_error"] == summary["files_listed"]
    # The driver's own progress line ends at every listed file; Ray Data's bars stay quiet.
    n = summary["files_listed"]
    assert f"extracted {n}/{n} files (100%)" in run.stderr
    assert "Total Progress" not in run.stderr


def test_resume_keeps_finished_parts_and_extracts_only_the_rest(ray_session, tmp_path):
    import shutil

    src = tmp_path / "in"
    src.mkdir()
    for i in range(12):
        testing.write_wav(src / f"f{i:02d}.wav", testing.voiced(100 + 10 * i, 1.0 + i / 4,
                                                                16_000), 16_000)
    (src / "broken.wav").write_bytes(b"not audio")
    base = ExtractConfig(input=str(src), output=str(tmp_path / "whole"), features=SMALL,
                         files_per_task=2)
    whole = extract_features(base)
    # What a killed attempt at "ds" leaves: its temporary folder, some parts, no manifest.
    tmp = storage.temporary_sibling(str(tmp_path / "ds"), tag="unfinished")
    extract_features(dataclasses.replace(base, output=str(tmp_path / "first")))
    shutil.move(str(tmp_path / "first"), tmp)
    os.remove(os.path.join(tmp, dataset.MANIFEST_NAME))
    parts = sorted(os.listdir(os.path.join(tmp, dataset.FEATURES_DIR)))
    for name in parts[3:]:
        os.remove(os.path.join(tmp, dataset.FEATURES_DIR, name))
    kept = {p: pq.read_table(os.path.join(tmp, dataset.FEATURES_DIR, p)) for p in parts[:3]}
    done = {u for t in kept.values() for u in t["uri"].to_pylist()} | {
        u for p in os.listdir(os.path.join(tmp, dataset.ERRORS_DIR))
        for u in pq.read_table(os.path.join(tmp, dataset.ERRORS_DIR, p))["uri"].to_pylist()}
    cfg = dataclasses.replace(base, output=str(tmp_path / "ds"))

    with pytest.raises(OutputExistsError, match="--resume"):
        extract_features(cfg)
    with pytest.raises(ConfigError, match="feature_config_hash: "):
        extract_features(dataclasses.replace(cfg, resume=True, features=dataclasses.replace(
            SMALL, n_mels=SMALL.n_mels + 1)))
    with pytest.raises(ConfigError, match="pass one of them"):
        dataclasses.replace(cfg, resume=True, overwrite=True)

    manifest = extract_features(dataclasses.replace(cfg, resume=True))

    assert manifest["counts"] == whole["counts"]
    assert not os.path.exists(tmp)
    for name, table in kept.items():  # the finished parts, published as they were
        assert pq.read_table(tmp_path / "ds" / dataset.FEATURES_DIR / name).equals(table)
    order = [("uri", "ascending"), ("window_index", "ascending")]
    got = dataset.read_table(str(tmp_path / "ds")).sort_by(order)
    assert got.equals(dataset.read_table(str(tmp_path / "whole")).sort_by(order))
    assert len(dataset.read_errors(str(tmp_path / "ds"))) == 1
    assert 0 < len(done) < 13
    assert manifest["resumed"] == {"files_in_earlier_parts": len(done),
                                   "files_extracted_now": 13 - len(done)}

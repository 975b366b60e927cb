"""The archive scorer on a real local Ray and moto's real S3 server.

Every check compares the report with what the same components compute in-process, or
with what the generated archive is known to hold (formats, rates, channels, failures).
"""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest

from spoofray import audio, reports, sources, testing
from spoofray.errors import ConfigError, OutputExistsError
from spoofray.featurize import featurize_file
from spoofray.models.assemble import AssembleConfig, assemble_bundle
from spoofray.models.bundle import Bundle
from spoofray.pipeline.score import ScoreConfig, score_archive
from spoofray.testing.bundles import AUDIO_CFG, make_audio_bundle
from spoofray.testing.datasets import SMALL, synthetic_features
from spoofray.testing.members import make_keras_model, save_keras_member, save_ml_member, train_ml
from spoofray.testing.synth import make_demo_archive


def expected_file_scores(bundle: Bundle, uri: str) -> dict:
    """The report values of one file, computed in-process with the same components."""
    r = featurize_file({"uri": uri}, bundle.feature_config, kinds=bundle.needed_kinds)
    window = bundle.score_windows(r.features)
    top = int(np.argmax(window["spoof_score"]))
    return {"spoof_score": float(window["spoof_score"].mean()),
            "max_window_score": float(window["spoof_score"][top]),
            "top_window_start_s": float(r.start_s[top]), "n_windows": r.n_windows,
            **{k: float(v.mean()) for k, v in window.items() if k.startswith("score_")}}


def test_mixed_archive_every_file_exactly_once(ray_session, tmp_path):
    archive = make_demo_archive(tmp_path / "archive", seed=0, n_bonafide=6, n_spoof=6,
                                duration_range_s=(1.0, 3.0))
    sr_long = 8000
    call = testing.voiced(130.0, 1800.0, sr_long) + testing.white_noise(1800.0, sr_long, amp=0.01)
    os.makedirs(os.path.join(archive.root, "calls"))
    long_uri = testing.write_wav(os.path.join(archive.root, "calls", "long_call.wav"), call,
                                 sr_long)
    bundle_uri = make_audio_bundle(tmp_path)
    out = str(tmp_path / "out")

    summary = score_archive(ScoreConfig(input=archive.root, output=out, bundle=bundle_uri,
                                        files_per_task=2, batch_size=4, run_id="r1"))

    listed = sources.resolve_inputs(archive.root)
    run = os.path.join(out, "run_id=r1")
    assert sorted(os.listdir(out)) == ["run_id=r1"]  # nothing temporary left behind
    assert sorted(os.listdir(run)) == ["_SUCCESS", "_resume.json", "plots", "report",
                                     "summary.json"]
    for png in os.listdir(os.path.join(run, "plots")):
        with open(os.path.join(run, "plots", png), "rb") as fh:
            assert fh.read(8) == b"\x89PNG\r\n\x1a\n"
    assert len(os.listdir(os.path.join(run, "plots"))) == 3

    report = pd.read_parquet(os.path.join(run, "report"))  # plain pandas, no spoofray
    assert len(report) == len(listed) == len(archive.items) + 1
    assert report["uri"].is_unique and set(report["uri"]) == {it.uri for it in listed}
    assert summary["counts"] == {**summary["counts"], "files": len(listed),
                                 "error": len(archive.broken), "ok": len(listed) - 9}
    rows = report.set_index("uri")

    for rel, error in archive.broken.items():
        row = rows.loc[os.path.join(archive.root, rel)]
        assert (row.status, row.error_type) == ("error", error)
        assert rel.split("/")[-1] in row.error_message
        assert pd.isna(row.spoof_score) and pd.isna(row.predicted_label)

    ok = report[report["status"] == "ok"]
    assert "label" not in report  # the prediction is named, apart from the true label
    assert ((ok["spoof_score"] >= ok["threshold"]) == (ok["predicted_label"] == "spoof")).all()
    assert ok["spoof_score"].between(0, 1).all()
    assert (ok["max_window_score"] >= ok["spoof_score"] - 1e-9).all()
    assert (ok["model_name"] == "audio").all() and (report["run_id"] == "r1").all()

    long = rows.loc[long_uri]
    assert long.duration_s == pytest.approx(1800.0)
    assert (long.sample_rate, long.channels) == (sr_long, 1)
    assert long.n_windows == audio.window_count(1800 * 16000, AUDIO_CFG.audio) == 900
    for it in archive.good_items:
        row = rows.loc[os.path.join(archive.root, it.path)]
        assert (row.sample_rate, row.channels) == (it.sample_rate, it.channels)
        assert row.true_label == it.label
        if it.label == "spoof":
            assert row.true_attack == it.attack
        else:
            assert pd.isna(row.true_attack)

    bundle = Bundle.load(bundle_uri)
    for uri in (long_uri, os.path.join(archive.root, archive.good_items[-1].path)):
        expected = expected_file_scores(bundle, uri)
        for key, value in expected.items():
            assert rows.loc[uri, key] == pytest.approx(value, rel=1e-5, abs=1e-6), key
    assert summary["audio_hours"] == pytest.approx(ok["duration_s"].sum() / 3600)
    assert summary["spoof_rate"] == pytest.approx((ok["predicted_label"] == "spoof").mean())


def test_s3_input_bundle_and_output_with_threshold_override(ray_session, s3_bucket, tmp_path,
                                                            monkeypatch):
    import s3fs

    monkeypatch.setenv("SPOOFRAY_HOME", str(tmp_path / "home"))  # the S3 bundle cache

    archive = make_demo_archive(tmp_path / "a", seed=3, n_bonafide=2, n_spoof=2, broken=False,
                                duration_range_s=(1.0, 2.0))
    fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": os.environ["AWS_ENDPOINT_URL"]})
    bucket = s3_bucket[len("s3://"):]
    for it in archive.items:
        fs.put(os.path.join(archive.root, it.path), f"{bucket}/audio/{it.path}")
    fs.pipe(f"{bucket}/audio/broken/not_audio.wav", b"plain text, not audio\n" * 10)
    bundle_uri = make_audio_bundle(tmp_path, output=f"{s3_bucket}/bundles/audio/1")

    summary = score_archive(ScoreConfig(input=f"{s3_bucket}/audio", output=f"{s3_bucket}/reports",
                                        bundle=bundle_uri, threshold=0.0, run_id="s3run"))

    fs.invalidate_cache()
    keys = fs.find(f"{bucket}/reports")
    assert all(k.startswith(f"{bucket}/reports/run_id=s3run/") for k in keys), keys
    assert f"{bucket}/reports/run_id=s3run/_SUCCESS" in keys
    report = reports.read_report(f"{s3_bucket}/reports/run_id=s3run")
    assert len(report) == 5 and report["uri"].is_unique
    assert report["uri"].str.startswith(f"{s3_bucket}/audio/").all()
    ok = report[report["status"] == "ok"]
    assert len(ok) == 4 and (ok["predicted_label"] == "spoof").all()
    assert (report["threshold"] == 0.0).all()
    bad = report[report["status"] == "error"].iloc[0]
    assert bad.uri.endswith("not_audio.wav") and bad.error_type == "AudioDecodeError"
    assert summary["bundle"]["threshold_method"] == "user"
    assert summary["run_uri"] == f"{s3_bucket}/reports/run_id=s3run"
    assert os.listdir(tmp_path / "home" / "cache" / "bundles")  # downloaded once, verified


def test_keras_only_bundle_from_the_registry(ray_session, tmp_path, monkeypatch):
    pytest.importorskip("keras")
    monkeypatch.setenv("SPOOFRAY_HOME", str(tmp_path / "home"))
    sidecar = save_keras_member(make_keras_model(AUDIO_CFG, gain=0.05, bias=2.0),
                                tmp_path / "train", AUDIO_CFG)
    made = assemble_bundle(AssembleConfig(members=(sidecar,), name="dl", version="7"))
    folder = tmp_path / "in"
    folder.mkdir()
    uris = [testing.write_wav(folder / "a.wav", testing.voiced(150.0, 3.0, 16000), 16000),
            testing.write_wav(folder / "b.wav", testing.white_noise(5.0, 22050, amp=0.2), 22050)]

    summary = score_archive(ScoreConfig(input=str(folder), output=str(tmp_path / "out"),
                                        bundle="latest"))

    assert summary["bundle"]["source"] == "registry" and summary["bundle"]["uri"] == made["uri"]
    report = reports.read_report(summary["run_uri"]).set_index("uri")
    bundle = Bundle.load(made["uri"])
    for uri in uris:
        for key, value in expected_file_scores(bundle, uri).items():
            assert report.loc[uri, key] == pytest.approx(value, rel=1e-4), key


def test_refusals_before_any_work(tmp_path, monkeypatch, trained_small_bundle):
    monkeypatch.setenv("SPOOFRAY_HOME", str(tmp_path / "empty-home"))
    folder = tmp_path / "in"
    folder.mkdir()
    testing.write_wav(folder / "a.wav", testing.voiced(150.0, 1.0, 16000), 16000)
    with pytest.raises(ConfigError, match="registry, but .* is empty.*jobs/bundle.py assemble"):
        score_archive(ScoreConfig(input=str(folder), output=str(tmp_path / "out"),
                                  bundle="latest"))
    os.makedirs(tmp_path / "out" / "run_id=taken" / "report")
    open(tmp_path / "out" / "run_id=taken" / "report" / "x.parquet", "w").close()
    # A folder without _SUCCESS is what an interrupted publish on S3 leaves: say so.
    with pytest.raises(OutputExistsError, match="run_id=taken already exists without _SUCCESS"):
        score_archive(ScoreConfig(input=str(folder), output=str(tmp_path / "out"),
                                  bundle=trained_small_bundle, run_id="taken"))
    open(tmp_path / "out" / "run_id=taken" / "_SUCCESS", "w").close()
    with pytest.raises(OutputExistsError, match="run_id=taken already exists; choose another"):
        score_archive(ScoreConfig(input=str(folder), output=str(tmp_path / "out"),
                                  bundle=trained_small_bundle, run_id="taken"))


@pytest.fixture
def trained_small_bundle(tmp_path):
    feats, y = synthetic_features(SMALL, 20)
    member = save_ml_member(train_ml(feats, y), tmp_path / "tune", SMALL)
    return assemble_bundle(AssembleConfig(members=(member,), output=str(tmp_path / "b")))["uri"]


def _stopped_run(out: str, run: str, like: str, keep: int) -> list[str]:
    """Turn the finished run ``like`` into what a run ``run`` killed after ``keep`` report
    parts leaves behind: its temporary folder with those parts and the settings record."""
    import shutil

    tmp = os.path.join(out, f"_tmp_run_id={run}")
    shutil.move(os.path.join(out, f"run_id={like}"), tmp)
    for name in ("_SUCCESS", "summary.json", "plots"):
        shutil.rmtree(os.path.join(tmp, name), ignore_errors=True)
        if os.path.isfile(os.path.join(tmp, name)):
            os.remove(os.path.join(tmp, name))
    parts = sorted(os.listdir(os.path.join(tmp, "report")))
    for name in parts[keep:]:
        os.remove(os.path.join(tmp, "report", name))
    return parts[:keep]


def test_resume_scores_only_files_outside_finished_parts(ray_session, tmp_path):
    archive = make_demo_archive(tmp_path / "archive", seed=4, n_bonafide=6, n_spoof=6,
                                duration_range_s=(1.0, 2.0))
    bundle_uri = make_audio_bundle(tmp_path)
    out = str(tmp_path / "out")
    common = dict(input=archive.root, output=out, bundle=bundle_uri, files_per_task=2,
                  batch_size=2, part_every_s=0.0, plots=False)
    clean = score_archive(ScoreConfig(**common, run_id="clean"))
    score_archive(ScoreConfig(**common, run_id="first"))
    kept = _stopped_run(out, "stopped", "first", keep=3)
    done = pd.concat([pd.read_parquet(os.path.join(out, "_tmp_run_id=stopped", "report", p))
                      for p in kept])
    assert 0 < len(done) < clean["counts"]["files"]

    # Without --resume the unfinished run is not silently thrown away.
    with pytest.raises(OutputExistsError, match="--resume"):
        score_archive(ScoreConfig(**common, run_id="stopped"))
    # With other settings it is refused, naming what differs.
    with pytest.raises(ConfigError, match=r"threshold: 0\.5 then, 0\.9 now"):
        score_archive(ScoreConfig(**common, run_id="stopped", resume=True, threshold=0.9))
    other = make_audio_bundle(tmp_path / "other")  # same model, assembled again: other files
    with pytest.raises(ConfigError, match="bundle_checksum: "):
        score_archive(ScoreConfig(**{**common, "bundle": other}, run_id="stopped",
                                  resume=True))
    with pytest.raises(ConfigError, match="needs the --run-id"):
        ScoreConfig(**common, resume=True)

    summary = score_archive(ScoreConfig(**common, run_id="stopped", resume=True))

    assert summary["resumed"] == {"files_in_earlier_parts": len(done),
                                  "files_scored_now": clean["counts"]["files"] - len(done)}
    assert summary["counts"] == clean["counts"]
    run = os.path.join(out, "run_id=stopped")
    assert set(kept) <= set(os.listdir(os.path.join(run, "report")))  # kept as they were
    report = reports.read_report(run).sort_values("uri").reset_index(drop=True)
    ref = reports.read_report(clean["run_uri"]).sort_values("uri").reset_index(drop=True)
    assert report["uri"].is_unique and report["uri"].tolist() == ref["uri"].tolist()
    pd.testing.assert_series_equal(report["spoof_score"], ref["spoof_score"])
    assert report["status"].tolist() == ref["status"].tolist()
    assert sorted(os.listdir(out)) == ["run_id=clean", "run_id=stopped"]

"""The archive scorer on a real local Ray and moto's real S3 server.

Every check compares the report with what the same components compute in-process, or
with what the generated archive is known to hold (formats, rates, channels, failures).
"""

from __future__ import annotations

import os
import threading

import numpy as np
import pandas as pd
import pytest

from spoofray import audio, reports, sources, testing
from spoofray.errors import ConfigError, OutputExistsError
from spoofray.featurize import featurize_file
from spoofray.models.assemble import AssembleConfig, assemble_bundle
from spoofray.models.bundle import Bundle
from spoofray.pipeline.score import ScoreConfig, actor_cpus, score_archive
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
    assert sorted(os.listdir(run)) == ["_SUCCESS", "_resume.json", "index.html", "plots",
                                       "report", "segments", "summary.json", "windows"]
    for png in os.listdir(os.path.join(run, "plots")):
        with open(os.path.join(run, "plots", png), "rb") as fh:
            assert fh.read(8) == b"\x89PNG\r\n\x1a\n"
    assert len(os.listdir(os.path.join(run, "plots"))) == 3

    everything = pd.read_parquet(os.path.join(run, "report"))  # plain pandas, no spoofray
    report = everything[everything["channel"].isna()]  # file rows; 2-channel files add 2 more
    per_channel = everything[everything["channel"].notna()]
    two = {os.path.join(archive.root, it.path) for it in archive.good_items if it.channels == 2}
    assert two and set(per_channel["uri"]) == two  # auto: each channel of 2-channel files
    assert len(per_channel) == 2 * len(two)
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
    assert ((ok["predicted_label"] == "spoof") == ok["decision_rule"].notna()).all()
    assert (ok["decision_rule"].fillna("").str.contains("file_mean")
            == (ok["spoof_score"] >= ok["threshold"])).all()
    assert ok["spoof_score"].between(0, 1).all()
    assert (ok["max_window_score"] >= ok["spoof_score"] - 1e-9).all()
    assert (ok["model_name"] == "audio").all() and (report["run_id"] == "r1").all()

    long = rows.loc[long_uri]
    assert long.duration_s == pytest.approx(1800.0)
    assert (long.source_sample_rate, long.channels) == (sr_long, 1)
    assert long.n_windows == audio.window_count(1800 * 16000, AUDIO_CFG.audio) == 900
    for uri in two:  # the file row rolls its channels up: the higher score decides
        chans = per_channel[per_channel["uri"] == uri]
        assert rows.loc[uri, "spoof_score"] == pytest.approx(chans["spoof_score"].max())
        assert rows.loc[uri, "n_windows"] == chans["n_windows"].sum()
    for it in archive.good_items:
        row = rows.loc[os.path.join(archive.root, it.path)]
        assert (row.source_sample_rate, row.channels) == (it.sample_rate, it.channels)
        assert row.true_label == it.label
        if it.label == "spoof":
            assert row.true_attack == it.attack
        else:
            assert pd.isna(row.true_attack)

    bundle = Bundle.load(bundle_uri)
    mono = next(it for it in archive.good_items[::-1] if it.channels == 1)
    for uri in (long_uri, os.path.join(archive.root, mono.path)):
        expected = expected_file_scores(bundle, uri)
        for key, value in expected.items():
            assert rows.loc[uri, key] == pytest.approx(value, rel=1e-5, abs=1e-6), key
    segs = reports.read_segments(run)  # every row's spans, in the segments table
    assert len(segs) == ok["n_segments"].sum() == summary["counts"]["segments"]
    assert (segs["start_s"] < segs["end_s"]).all()
    assert (segs["score"] >= ok["segment_threshold"].iloc[0]).all()
    assert set(segs["uri"]) <= set(ok["uri"])
    assert summary["audio_hours"] == pytest.approx(ok["duration_s"].sum() / 3600)
    assert summary["spoof_rate"] == pytest.approx((ok["predicted_label"] == "spoof").mean())


def test_one_stage_and_two_stage_scoring_write_the_same_report(ray_session, tmp_path):
    """A scikit-learn bundle scores in the featurizing tasks by default (--stages auto);
    handing the windows to scoring actors instead must not change a row."""
    archive = make_demo_archive(tmp_path / "archive", seed=1, n_bonafide=4, n_spoof=4,
                                duration_range_s=(1.0, 3.0))
    bundle_uri = make_audio_bundle(tmp_path)
    got = {}
    for stages in ("auto", "two"):
        score_archive(ScoreConfig(input=archive.root, output=str(tmp_path / stages),
                                  bundle=bundle_uri, stages=stages, batch_size=3,
                                  run_id="r", plots=False))
        got[stages] = (reports.read_report(str(tmp_path / stages / "run_id=r"))
                       .sort_values(["uri", "channel"], na_position="first")
                       .reset_index(drop=True))
    one, two = got["auto"], got["two"]
    assert len(one) == len(two) > len(archive.items)  # every file, plus 2-channel sides
    assert (one["status"] == "error").sum() == len(archive.broken)
    for col in ("uri", "channel", "status", "error_type", "predicted_label", "n_windows",
                "decision_rule"):
        pd.testing.assert_series_equal(one[col], two[col])
    for col in ("spoof_score", "max_window_score"):
        np.testing.assert_allclose(one[col], two[col], rtol=1e-6)


def test_actor_cpus_leave_one_featurize_task_a_cpu():
    two = ScoreConfig(input="x", output="y", concurrency=2, num_cpus_per_actor=1.0)
    assert actor_cpus(two, 4.0) == 1.0  # 2 actors + 1 task fit
    assert actor_cpus(two, 3.0) == 1.0
    assert actor_cpus(two, 2.0) == 0.5  # the 1 CPU left after a task, shared
    assert actor_cpus(ScoreConfig(input="x", output="y"), 1.0) == 0.0  # 1-CPU Ray
    assert actor_cpus(two, 0.0) == 1.0  # no CPU yet: an autoscaler's to add


def test_two_stages_with_actors_on_every_cpu_still_finish(ray_session, tmp_path):
    """Two scoring actors of 1 CPU on the session's 2-CPU Ray held both CPUs: no
    featurize task could start and the run waited forever."""
    archive = make_demo_archive(tmp_path / "archive", seed=5, n_bonafide=2, n_spoof=2,
                                duration_range_s=(1.0, 2.0), broken=False)
    cfg = ScoreConfig(input=archive.root, output=str(tmp_path / "out"),
                      bundle=make_audio_bundle(tmp_path), stages="two", concurrency=2,
                      num_cpus_per_actor=1.0, run_id="r", plots=False)
    done: dict = {}

    def score() -> None:
        try:
            done["summary"] = score_archive(cfg)
        except BaseException as exc:  # noqa: BLE001 - handed to the test's thread
            done["raised"] = exc

    run = threading.Thread(target=score, daemon=True)
    run.start()
    run.join(timeout=300)
    assert not run.is_alive(), "two-stage scoring made no progress in 300 s"
    if "raised" in done:
        raise done["raised"]
    counts = done["summary"]["counts"]
    assert counts["files"] == len(archive.items) and counts["error"] == 0


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


def test_a_short_generated_insert_in_a_long_real_recording_is_flagged_with_its_span(
        ray_session, devcorpus, tmp_path):
    """Real devcorpus audio, the shipped default bundle: ten LibriSpeech clips of one
    speaker (~90 s) scored as they are, and again with one generated LJSpeech clip
    (Tacotron 2 + Griffin-Lim, ~7 s) inserted in the middle."""
    import soundfile as sf

    from spoofray import scoring
    from spoofray.models import default

    m = pd.read_csv(devcorpus / "manifest.csv")
    clips = [sf.read(devcorpus / p, dtype="float32")[0]
             for p in sorted(m.loc[m["speaker"] == "LS2609", "path"])]
    insert = sf.read(devcorpus / "ljspeech/spoof/espnet_tacotron2.v1_GL/"
                     "LJ049-0041_1db6a29fa1.flac", dtype="float32")[0]
    before = np.concatenate(clips[:5])
    (tmp_path / "in").mkdir()
    real_uri = testing.write_wav(tmp_path / "in" / "call.wav", np.concatenate(clips), 16000)
    spliced_uri = testing.write_wav(tmp_path / "in" / "call_spliced.wav",
                                    np.concatenate([before, insert, *clips[5:]]), 16000)
    ins_start, ins_end = len(before) / 16000, (len(before) + len(insert)) / 16000
    assert ins_end - ins_start < 10 and len(np.concatenate(clips)) / 16000 > 80

    summary = score_archive(ScoreConfig(input=str(tmp_path / "in"), output=str(tmp_path / "out"),
                                        run_id="r", plots=False))
    rule = scoring.segment_rule_of(Bundle.load(default.default_bundle()).manifest, 0.5)
    assert rule.method == "bundle"  # the shipped bundle records its calibrated rule
    assert summary["bundle"]["segment_rule"] == rule.to_dict()
    report = reports.read_report(summary["run_uri"]).set_index("uri")
    segs = reports.read_segments(summary["run_uri"])

    real = report.loc[real_uri]
    assert (real.predicted_label, real.n_segments) == ("bonafide", 0) and pd.isna(real.decision_rule)
    assert real_uri not in set(segs["uri"])

    spliced = report.loc[spliced_uri]
    assert spliced.spoof_score < spliced.threshold  # the mean alone misses it ...
    assert spliced.predicted_label == "spoof"  # ... the segment rule does not
    assert spliced.decision_rule == "segment_rule"
    (span,) = segs[segs["uri"] == spliced_uri].itertuples()
    # The span lies on the insert to the windows' resolution (4 s windows, 2 s hop): it
    # starts and ends within one hop of it, and covers at least one window's worth of it.
    # It may cover less than all of it: a window that is partly real speech (or the
    # insert's own quieter end) may stay under the segment threshold.
    hop, window = 2.0, 4.0
    assert ins_start - hop <= span.start_s and span.end_s <= ins_end + hop
    overlap = min(span.end_s, ins_end) - max(span.start_s, ins_start)
    assert overlap >= window - 0.01
    assert span.score >= rule.threshold


def test_channels_each_keeps_a_calls_two_sides_apart_and_mix_mixes_them(tmp_path):
    sr = 16000
    voice = testing.voiced(140.0, 9.0, sr)
    two = np.stack([voice, np.zeros_like(voice)])  # the second side is silent
    uri = testing.write_wav(tmp_path / "call.wav", two, sr)
    cfg = AUDIO_CFG
    mixed = featurize_file({"uri": uri}, cfg, channels="mix")
    each = featurize_file({"uri": uri}, cfg, channels="each")
    auto = featurize_file({"uri": uri}, cfg, channels="auto")
    assert mixed.window_channel is None and mixed.channels == 2
    # The silent side has no windows; the other side's are those of its audio alone.
    assert each.window_channel.tolist() == [0] * each.n_windows
    alone = featurize_file({"uri": testing.write_wav(tmp_path / "side.wav", voice, sr)}, cfg)
    for kind, values in alone.features.items():
        np.testing.assert_allclose(each.features[kind], values, rtol=1e-5, atol=1e-5)
    assert auto.window_channel.tolist() == each.window_channel.tolist()  # 2 channels: each
    three = testing.write_wav(tmp_path / "three.wav", np.stack([voice] * 3), sr)
    assert featurize_file({"uri": three}, cfg, channels="auto").window_channel is None
    assert featurize_file({"uri": three}, cfg, channels="each").window_channel.tolist() == (
        [0] * alone.n_windows + [1] * alone.n_windows + [2] * alone.n_windows)


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
    done = reports.file_rows(pd.concat(
        [pd.read_parquet(os.path.join(out, "_tmp_run_id=stopped", "report", p)) for p in kept]))
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
    # Each report part has its spans' part under the same name, and no other is left.
    assert os.listdir(os.path.join(run, "segments")) and sorted(
        os.listdir(os.path.join(run, "segments"))) == sorted(os.listdir(os.path.join(run, "report")))
    # File rows once each; a 2-channel file's channel rows come with it, as in the clean run.
    report = reports.read_report(run).sort_values(["uri", "channel"]).reset_index(drop=True)
    ref = reports.read_report(clean["run_uri"]).sort_values(["uri", "channel"]).reset_index(
        drop=True)
    assert reports.file_rows(report)["uri"].is_unique and report["uri"].tolist() == ref["uri"].tolist()
    pd.testing.assert_series_equal(report["spoof_score"], ref["spoof_score"])
    assert report["status"].tolist() == ref["status"].tolist()
    assert sorted(os.listdir(out)) == ["run_id=clean", "run_id=stopped"]

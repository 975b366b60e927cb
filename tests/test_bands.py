"""The band of a file (wide / narrow), the narrowband feature kind, telephone files, and
bundles that route each band to its own members."""

from __future__ import annotations

import dataclasses
import io
import json
import math
import shutil
import subprocess

import numpy as np
import pytest
import soundfile as sf

from spoofray import audio, features, telephone, testing
from spoofray.config import AudioConfig, FeatureConfig
from spoofray.errors import BundleIntegrityError, ConfigError
from spoofray.featurize import featurize_file

SR = 16_000


# --- measuring the band -----------------------------------------------------------------


def test_white_noise_has_half_its_energy_above_4_khz():
    # Flat spectrum: the share above 4.1 kHz of 0-8 kHz is 3.9/8 = 0.4875, i.e. -3.12 dB.
    db = audio.upper_band_db(testing.white_noise(4.0, SR, seed=1), SR)
    assert db == pytest.approx(10 * math.log10(3.9 / 8.0), abs=0.2)
    assert audio.measure_band(testing.white_noise(4.0, SR), SR)[0] == "wide"


def test_a_tone_below_4_khz_is_narrow_and_one_above_is_wide():
    band, db = audio.measure_band(testing.sine(1000.0, 2.0, SR), SR)
    assert band == "narrow" and db < audio.NARROW_BELOW_DB
    band, db = audio.measure_band(testing.sine(1000.0, 2.0, SR) + testing.sine(5000.0, 2.0, SR,
                                                                               amp=0.05), SR)
    # The 5 kHz tone has (0.05 / 0.5)^2 = 1 % of the power: -20 dB.
    assert band == "wide" and db == pytest.approx(-20.0, abs=0.5)


def test_silence_and_clips_shorter_than_a_frame_are_measured():
    assert audio.upper_band_db(np.zeros(100, np.float32), SR) == -150.0
    assert audio.measure_band(testing.white_noise(0.01, SR), SR)[0] == "wide"


def test_8_khz_files_are_narrow_whatever_rate_they_are_stored_at(tmp_path):
    noise8 = testing.white_noise(3.0, 8000, amp=0.2)
    wav8 = open(testing.write_wav(tmp_path / "call.wav", noise8, 8000), "rb").read()
    decoded = audio.load(wav8, "call.wav", AudioConfig())
    assert (decoded.sample_rate_in, decoded.band) == (8000, "narrow")
    assert decoded.upper_band_db < -80
    # The same call upsampled and stored as 16 kHz FLAC: still nothing above 4 kHz.
    buf = io.BytesIO()
    sf.write(buf, audio.resample(noise8, 8000, SR), SR, format="FLAC")
    assert audio.load(buf.getvalue(), "call.flac", AudioConfig()).band == "narrow"
    wide = open(testing.write_wav(tmp_path / "w.wav", testing.white_noise(3.0, SR), SR), "rb")
    assert audio.load(wide.read(), "w.wav", AudioConfig()).band == "wide"


def test_each_channel_of_a_call_gets_its_own_band(tmp_path):
    wide = testing.white_noise(5.0, SR, amp=0.2, seed=2)
    narrow = audio.resample(audio.resample(testing.white_noise(5.0, SR, amp=0.2, seed=3), SR,
                                           8000), 8000, SR)[: len(wide)]
    path = tmp_path / "call.wav"
    sf.write(path, np.stack([wide, narrow], axis=1), SR, subtype="PCM_16")
    r = featurize_file({"uri": str(path)}, FeatureConfig(kinds=("lfcc",)), channels="each")
    assert r.status == "ok"
    assert {c: b for c, (b, _) in r.channel_bands.items()} == {0: "wide", 1: "narrow"}


# --- the narrowband feature kind ----------------------------------------------------------


def test_lfcc_narrow_is_the_lfcc_of_the_telephone_band():
    windows = np.random.default_rng(0).standard_normal((2, 64000)).astype(np.float32)
    cfg = FeatureConfig(kinds=("lfcc", "lfcc_narrow"), fmin=4000.0)
    got = features.extract(windows, cfg)
    same = features.extract(windows, dataclasses.replace(cfg, kinds=("lfcc",), fmin=300.0,
                                                         fmax=3400.0))["lfcc"]
    np.testing.assert_allclose(got["lfcc_narrow"], same, rtol=0, atol=1e-5)
    assert got["lfcc_narrow"].shape == (2, *cfg.feature_shapes()["lfcc_narrow"])
    assert not np.allclose(got["lfcc"], got["lfcc_narrow"])


def test_lfcc_narrow_does_not_see_what_lies_above_the_telephone_band():
    from spoofray.augment import band_limit

    t = np.arange(64000) / SR
    # Energy in every filter of the band (below 3.8 kHz), then a loud 6 kHz tone on top.
    speech_band = band_limit(testing.white_noise(4.0, SR, amp=0.3), SR, high_hz=3800.0,
                             low_hz=None)
    with_high = speech_band + (0.3 * np.sin(2 * np.pi * 6000 * t)).astype(np.float32)
    cfg = FeatureConfig(kinds=("lfcc_narrow",))
    a = features.extract(speech_band[None], cfg)["lfcc_narrow"]
    b = features.extract(with_high[None], cfg)["lfcc_narrow"]
    # (The first and last frames read the window's reflect padding, whose seam spreads the
    # tone over every frequency; deltas reach 4 frames further.)
    np.testing.assert_allclose(a[..., 6:-6], b[..., 6:-6], atol=1e-2)


def test_narrow_band_settings_at_their_defaults_keep_old_config_hashes():
    assert "narrow_fmin" not in FeatureConfig().to_dict()
    assert FeatureConfig().kinds == ("logmel", "mfcc", "lfcc", "stats")
    with pytest.raises(ConfigError, match="narrow_fmax must be"):
        FeatureConfig(narrow_fmax=5000.0)
    with pytest.raises(ConfigError, match="narrow_fmin < narrow_fmax"):
        FeatureConfig(narrow_fmin=3000.0, narrow_fmax=2000.0)


# --- telephone files ------------------------------------------------------------------------


@pytest.mark.parametrize("codec", sorted(telephone.TELEPHONE_FILE_CODECS))
def test_telephone_files_are_real_8_khz_files_that_load_as_narrow(codec):
    if codec.endswith("ffmpeg") and shutil.which("ffmpeg") is None:
        pytest.skip("ffmpeg is not installed")
    speech = testing.voiced(150.0, 3.0, SR)
    data, ext = telephone.telephone_file(speech, SR, codec)
    decoded = audio.load(data, f"call{ext}", AudioConfig())
    assert decoded.sample_rate_in == 8000 and decoded.band == "narrow"
    assert decoded.duration_s == pytest.approx(3.0, abs=0.05)
    # Band-passed to 300-3400 Hz: the 150 Hz fundamental is gone, its harmonics stay.
    spectrum = np.abs(np.fft.rfft(decoded.samples[: 2 * SR]))
    freqs = np.fft.rfftfreq(2 * SR, 1 / SR)
    at = lambda f: spectrum[np.abs(freqs - f) < 20].max()  # noqa: E731
    assert at(150.0) < 0.1 * at(600.0)  # GSM adds coding noise there (-26 dB)


def test_unknown_telephone_codec_is_refused():
    with pytest.raises(ConfigError, match="unknown telephone file codec 'amr'"):
        telephone.telephone_file(np.zeros(SR, np.float32), SR, "amr")


# --- bundles with bands ---------------------------------------------------------------------


def _banded_bundle(tmp_path, bands):
    """A real two-member bundle: ``ml`` on full-band LFCC, ``ml_narrow`` on lfcc_narrow."""
    from spoofray.models.assemble import AssembleConfig, assemble_bundle
    from spoofray.testing.members import save_ml_member, train_ml

    cfg = FeatureConfig(kinds=("lfcc", "lfcc_narrow"))
    rng = np.random.default_rng(0)
    windows = rng.standard_normal((24, cfg.audio.window_samples)).astype(np.float32)
    windows[12:] *= np.linspace(0.2, 1.0, windows.shape[1], dtype=np.float32)
    feats = features.extract(windows, cfg)
    y = np.repeat([0, 1], 12)
    wide = save_ml_member(train_ml(feats, y, ("lfcc_dynamics",)), tmp_path / "wide",
                          dataclasses.replace(cfg, kinds=("lfcc",)), inputs=("lfcc_dynamics",),
                          threshold=0.5)
    narrow = save_ml_member(train_ml(feats, y, ("lfcc_narrow_dynamics",)), tmp_path / "narrow",
                            dataclasses.replace(cfg, kinds=("lfcc_narrow",)), name="ml_narrow",
                            inputs=("lfcc_narrow_dynamics",), threshold=0.5)
    out = assemble_bundle(AssembleConfig(members=(wide, narrow), name="banded", version="1",
                                         output=str(tmp_path / "bundle"), bands=bands))
    return out["uri"], feats


def test_a_banded_bundle_scores_each_band_with_its_own_members(tmp_path):
    from spoofray.models.bundle import Bundle

    uri, feats = _banded_bundle(tmp_path, {"wide": ("ml",), "narrow": ("ml_narrow",)})
    bundle = Bundle.load(uri)
    assert bundle.kinds_by_band() == {"wide": ("lfcc",), "narrow": ("lfcc_narrow",)}
    wide = bundle.score_windows({"lfcc": feats["lfcc"]}, "wide")
    narrow = bundle.score_windows({"lfcc_narrow": feats["lfcc_narrow"]}, "narrow")
    assert set(wide) == {"spoof_score", "score_ml"}
    assert set(narrow) == {"spoof_score", "score_ml_narrow"}
    np.testing.assert_array_equal(narrow["spoof_score"], narrow["score_ml_narrow"])
    lowered = bundle.with_threshold(0.25)
    assert {b: s.threshold for b, s in lowered.bands.items()} == {"wide": 0.25, "narrow": 0.25}


def test_a_bundle_without_bands_judges_every_band_with_all_members(tmp_path):
    from spoofray.models.bundle import Bundle

    uri, _ = _banded_bundle(tmp_path, {})
    bundle = Bundle.load(uri)
    assert set(bundle.bands) == {"wide", "narrow"}
    assert all(s.members == ("ml", "ml_narrow") for s in bundle.bands.values())


def test_bands_that_name_unknown_members_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="band 'narrow' names members"):
        _banded_bundle(tmp_path, {"narrow": ("nope",)})
    uri, _ = _banded_bundle(tmp_path, {"wide": ("ml",)})
    path = tmp_path / "bundle" / "bundle.json"
    manifest = json.loads(path.read_text())
    manifest["bands"]["narrow"] = {"members": ["ghost"], "threshold": 0.5}
    path.write_text(json.dumps(manifest))
    from spoofray.models.bundle import BundleSpec

    with pytest.raises(BundleIntegrityError, match="bands invalid.*ghost"):
        BundleSpec.verify(uri)


def test_scoring_routes_files_by_band_and_refuses_a_band_it_has_no_model_for(
        ray_session, tmp_path):
    from spoofray import reports
    from spoofray.pipeline.score import ScoreConfig, score_archive

    both, _ = _banded_bundle(tmp_path / "both", {"wide": ("ml",), "narrow": ("ml_narrow",)})
    wide_only, _ = _banded_bundle(tmp_path / "wide", {"wide": ("ml",)})
    folder = tmp_path / "in"
    folder.mkdir()
    testing.write_wav(folder / "wide.wav", testing.white_noise(5.0, SR, amp=0.2), SR)
    testing.write_wav(folder / "call.wav", testing.white_noise(5.0, 8000, amp=0.2), 8000,
                      subtype="ULAW")
    stereo = np.stack([testing.white_noise(5.0, SR, amp=0.2, seed=4),
                       audio.resample(testing.white_noise(5.0, 8000, amp=0.2, seed=5), 8000,
                                      SR)[: 5 * SR]], axis=1)
    sf.write(folder / "stereo.wav", stereo, SR, subtype="PCM_16")
    runs = {}
    for name, uri in (("both", both), ("wide_only", wide_only)):
        summary = score_archive(ScoreConfig(input=str(folder), output=str(tmp_path / name),
                                            bundle=uri, plots=False))
        runs[name] = reports.read_report(summary["run_uri"])

    def row(run, name):
        rep = runs[run]
        return rep[(rep["uri"] == str(folder / name)) & rep["channel"].isna()].iloc[0]

    wide, call = row("both", "wide.wav"), row("both", "call.wav")
    assert (wide["band"], wide["source_sample_rate"], wide["status"]) == ("wide", 16000, "ok")
    assert (call["band"], call["source_sample_rate"], call["status"]) == ("narrow", 8000, "ok")
    assert pd_isnan(wide["score_ml_narrow"]) and not pd_isnan(wide["score_ml"])
    assert pd_isnan(call["score_ml"]) and not pd_isnan(call["score_ml_narrow"])
    rep = runs["both"]
    per_channel = rep[(rep["uri"] == str(folder / "stereo.wav")) & rep["channel"].notna()]
    assert per_channel.sort_values("channel")["band"].tolist() == ["wide", "narrow"]
    # A bundle with no narrowband member says so in the row, and scores the rest.
    for name in ("call.wav", "stereo.wav"):
        refused = row("wide_only", name)
        assert (refused["status"], refused["error_type"]) == ("error", "UnsupportedBandError")
        assert name in refused["error_message"] and "narrowband" in refused["error_message"]
    assert row("wide_only", "wide.wav")["status"] == "ok"


def pd_isnan(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


@pytest.mark.skipif(shutil.which("sox") is None, reason="sox is not installed")
def test_sox_and_ffmpeg_8_khz_files_load_as_narrow(tmp_path):
    src = testing.write_wav(tmp_path / "src.wav", testing.voiced(140.0, 2.0, SR), SR)
    made = []
    for args in (["-r", "8000"], ["-r", "8000", "-e", "mu-law", "-b", "8"]):
        out = tmp_path / f"sox{len(made)}.wav"
        subprocess.run(["sox", src, *args, str(out)], check=True)
        made.append(out)
    if shutil.which("ffmpeg"):
        out = tmp_path / "ff.wav"
        subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-i", src, "-ar", "8000",
                        "-c:a", "pcm_mulaw", str(out)], check=True)
        made.append(out)
    for path in made:
        decoded = audio.load(path.read_bytes(), str(path), AudioConfig())
        assert (decoded.sample_rate_in, decoded.band) == (8000, "narrow"), path

"""Augmentation kernels with hand-checked properties, and the copy-synthesis corpus driver."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import soundfile as sf

from spoofray import augment as A
from spoofray.errors import ConfigError, OutputExistsError

SR = 16_000


def voiced(seconds: float = 1.0, f0: float = 140.0, seed: int = 0) -> np.ndarray:
    """A harmonic tone with a slow vibrato and a little noise: speech-like enough for
    WORLD's F0 tracker and for spectral checks."""
    t = np.arange(int(seconds * SR)) / SR
    phase = 2 * np.pi * np.cumsum(f0 * (1 + 0.03 * np.sin(2 * np.pi * 3 * t))) / SR
    y = sum(np.sin(k * phase) / k for k in range(1, 25))
    y += 0.01 * np.random.default_rng(seed).standard_normal(len(t))
    return (0.3 * y / np.max(np.abs(y))).astype(np.float32)


def band_energy(y: np.ndarray, lo: float, hi: float) -> float:
    spec = np.abs(np.fft.rfft(y * np.hanning(len(y)))) ** 2  # Hann: no leakage from the edges
    f = np.fft.rfftfreq(len(y), 1 / SR)
    return float(spec[(f >= lo) & (f < hi)].sum())


@pytest.mark.parametrize("snr_db", [0.0, 10.0, 25.0])
def test_add_noise_hits_the_requested_snr(snr_db):
    y = voiced()
    noisy = A.add_noise(y, snr_db, np.random.default_rng(1))
    noise = noisy - y
    measured = 10 * np.log10(np.mean(y.astype(np.float64) ** 2) / np.mean(noise.astype(np.float64) ** 2))
    assert measured == pytest.approx(snr_db, abs=0.01)
    assert noisy.dtype == np.float32 and noisy.shape == y.shape


def test_add_noise_with_a_given_short_noise_clip_tiles_it():
    y = voiced()
    clip = np.random.default_rng(2).standard_normal(1000).astype(np.float32)
    noisy = A.add_noise(y, 5.0, np.random.default_rng(0), noise=clip)
    residual = noisy - y
    assert np.allclose(residual[:1000] / clip, residual[0] / clip[0], rtol=1e-3)
    assert np.allclose(residual[1000:2000], residual[:1000], atol=1e-6)


def test_band_limit_removes_energy_outside_the_band():
    y = A.add_noise(voiced(), 0.0, np.random.default_rng(3))  # broadband content
    out = A.band_limit(y, SR, high_hz=3400.0, low_hz=300.0)
    assert out.shape == y.shape
    # > 60 dB down well outside the band, essentially untouched inside it.
    assert band_energy(out, 4500, 8000) < 1e-6 * band_energy(y, 4500, 8000)
    assert band_energy(out, 0, 150) < 1e-4 * band_energy(y, 0, 150)
    assert band_energy(out, 800, 3000) == pytest.approx(band_energy(y, 800, 3000), rel=0.05)
    low = A.band_limit(y, SR, high_hz=2000.0, low_hz=None)
    assert band_energy(low, 3000, 8000) < 1e-6 * band_energy(y, 3000, 8000)


def test_reverberation_keeps_length_and_rms_and_spreads_an_impulse():
    rng = np.random.default_rng(0)
    h = A.synthetic_rir(SR, 0.4, rng)
    assert len(h) == int(0.4 * SR) and np.sum(h**2) == pytest.approx(1.0, rel=1e-5)
    # Tail energy of the last 100 ms is ~60 dB below the first 100 ms of tail.
    first, last = np.sum(h[1:1600] ** 2), np.sum(h[-1600:] ** 2)
    assert 10 * np.log10(first / last) > 40
    impulse = np.zeros(SR, np.float32)
    impulse[100] = 1.0
    wet = A.reverberate(impulse, SR, 0.3, np.random.default_rng(0))
    assert wet.shape == impulse.shape
    assert np.sqrt(np.mean(wet**2)) == pytest.approx(np.sqrt(np.mean(impulse**2)), rel=1e-4)
    assert np.count_nonzero(np.abs(wet) > 1e-6) > 1000  # the impulse got a tail


def test_time_stretch_and_pitch_shift_lengths():
    y = voiced()
    assert len(A.time_stretch(y, 2.0)) == pytest.approx(len(y) / 2, abs=512)
    shifted = A.pitch_shift(y, SR, 2.0)
    assert shifted.shape == y.shape and np.isfinite(shifted).all()


@pytest.mark.parametrize("vocoder,kwargs", [(v, {}) for v in A.VOCODERS]
                         + [("griffin_lim", {"mel_inversion": "pinv"})])
def test_copy_synthesis_same_length_finite_and_changed(vocoder, kwargs):
    y = voiced(0.8)
    out = A.copy_synthesize(y, SR, vocoder, **kwargs)
    assert out.shape == y.shape and out.dtype == np.float32
    assert np.isfinite(out).all()
    assert np.max(np.abs(out)) == pytest.approx(np.max(np.abs(y)), rel=1e-5)
    assert not np.allclose(out, y, atol=1e-3)  # resynthesised, not copied
    # Still the same sound: most energy in the same low band as the source.
    assert band_energy(out, 0, 4000) > 0.5 * band_energy(out, 0, 8000)


def test_codec_roundtrip_keeps_length_or_says_ffmpeg_is_missing(monkeypatch):
    y = voiced()
    if shutil.which("ffmpeg") is None:
        with pytest.raises(A.CodecUnavailableError, match="ffmpeg"):
            A.codec_roundtrip(y, SR, "mp3")
        return
    # gsm and g726 run at 8 kHz only: the round-trip resamples for them (CODEC_RATES).
    for codec in ("mp3", "mulaw", "gsm", "g726"):
        out = A.codec_roundtrip(y, SR, codec, "32k")
        assert out.shape == y.shape and np.isfinite(out).all()
        assert np.corrcoef(out[2000:-2000], y[2000:-2000])[0, 1] > 0.5 or codec == "mp3"
    # A missing binary gives the clear error, not a crash.
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(A.CodecUnavailableError, match="ffmpeg"):
        A.codec_roundtrip(y, SR, "mp3")


def test_apply_channel_specs_keep_length():
    y = voiced(0.5)
    rng = np.random.default_rng(0)
    for spec in ("none", "noise:20", "band:300-3400", "lowpass:4000", "reverb:0.2"):
        out = A.apply_channel(y, SR, spec, rng)
        assert out.shape == y.shape and np.isfinite(out).all()


@pytest.mark.parametrize("spec,error", [
    ("bitcrush:4", "unknown channel spec"),
    ("none:3", "unknown channel spec"),
    ("", "unknown channel spec"),
    ("band:3400-300", "low_hz must be in"),
    ("noise:loud", "could not convert"),
    ("telephone:opus", "unknown telephone codec"),
    ("rawboost", "algorithm 1, 2 or 3"),
    ("rawboost:4", "algorithm 1, 2 or 3"),
    ("gain", "could not convert"),
    ("gain:loud", "could not convert"),
    ("gain:inf", "finite"),
    ("trim:5", "unknown channel spec"),
    ("pad_silence", "could not convert"),
    ("pad_silence:-1", "0 to 10 seconds"),
    ("pad_silence:nan", "0 to 10 seconds"),
    ("pad_silence:60", "0 to 10 seconds"),
    ("codec:wav", "unknown codec"),
    ("noise:20+bitcrush", r"unknown channel spec 'noise:20\+bitcrush' \(part 'bitcrush'\)"),
    ("+trim", "unknown channel spec"),
    ("trim+", "unknown channel spec"),
    ("noise:20+pad_silence:60", r"\(part 'pad_silence:60'\): pad_silence takes 0 to 10"),
])
def test_apply_channel_refuses_bad_specs(spec, error):
    with pytest.raises(ConfigError, match=error) as info:
        A.apply_channel(voiced(0.1), SR, spec, np.random.default_rng(0))
    if "unknown channel spec" in error:  # the message lists every spec
        assert all(s in str(info.value) for s in A.CHANNEL_SPECS)


def ffmpeg_encoders() -> str:
    import subprocess

    return subprocess.run(["ffmpeg", "-hide_banner", "-encoders"], capture_output=True,
                          text=True, check=True).stdout


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs the ffmpeg binary")
@pytest.mark.parametrize("codec", list(A.CODECS))
def test_codec_roundtrip_of_a_short_clip(codec):
    """0.1 s (raw GSM has no header: ffmpeg must be told what it is, or a short clip is
    not recognised); a codec this ffmpeg lacks is a CodecUnavailableError."""
    y = voiced(0.1)
    try:
        out = A.codec_roundtrip(y, SR, codec)
    except A.CodecUnavailableError:
        assert f" {A.CODECS[codec][0]} " not in ffmpeg_encoders()
        return
    assert out.shape == y.shape and np.isfinite(out).all()


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs the ffmpeg binary")
@pytest.mark.parametrize("codec", list(A.TELEPHONE_CODECS))
def test_telephone_leaves_nothing_above_4khz_and_keeps_length(codec):
    y = A.add_noise(voiced(), 0.0, np.random.default_rng(3))  # energy up to 8 kHz
    spec = f"telephone:{codec}"
    if f" {A.CODECS[codec][0]} " not in ffmpeg_encoders():  # e.g. amr: opencore-amr builds only
        with pytest.raises(A.CodecUnavailableError, match=codec):
            A.apply_channel(y, SR, spec, np.random.default_rng(0))
        return
    out = A.apply_channel(y, SR, spec, np.random.default_rng(0))
    assert out.shape == y.shape and out.dtype == np.float32 and np.isfinite(out).all()
    assert band_energy(y, 4000, 8000) > 0.3 * band_energy(y, 300, 3400)  # there was some
    above = 10 * np.log10(band_energy(out, 4000, 8000) / band_energy(out, 300, 3400))
    assert above < -30
    if codec in ("mulaw", "alaw"):  # G.711 is a sample-wise quantiser: same waveform
        telephone_band = A.band_limit(y, SR, high_hz=3400.0, low_hz=300.0)
        assert np.corrcoef(out, telephone_band)[0, 1] > 0.95


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs the ffmpeg binary")
def test_telephone_at_8khz_and_without_ffmpeg(monkeypatch):
    y = voiced(0.5)[::2].copy()  # 8 kHz
    assert A.telephone(y, 8000).shape == y.shape
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(A.CodecUnavailableError, match="ffmpeg"):
        A.apply_channel(voiced(0.5), SR, "telephone:gsm", np.random.default_rng(0))
    # G.711 needs no ffmpeg.
    assert A.apply_channel(voiced(0.5), SR, "telephone", np.random.default_rng(0)).shape == (
        voiced(0.5).shape)


@pytest.mark.parametrize("law", ["mulaw", "alaw"])
def test_g711_quantises_to_256_levels_and_keeps_the_signal(law):
    x = np.linspace(-1, 1, 20001).astype(np.float32)
    out = A.g711_roundtrip(x, law)
    assert len(np.unique(out)) <= 256 and np.all(np.abs(out) <= 1.0)
    audible = np.abs(x) > 5e-4  # below half the smallest A-law step a sample rounds to 0
    np.testing.assert_array_equal(np.sign(out[audible]), np.sign(x[audible]))
    # Companding: small samples keep fine steps, loud ones coarse; error stays a few %.
    loud = np.abs(x) > 0.1
    assert np.max(np.abs(out - x)[loud] / np.abs(x)[loud]) < 0.05
    assert np.max(np.abs(out - x)[np.abs(x) < 0.01]) < 0.001
    speech = voiced(0.5)
    assert np.corrcoef(A.g711_roundtrip(speech, law), speech)[0, 1] > 0.999


@pytest.mark.parametrize("algo", [1, 2, 3])
def test_rawboost_changes_the_signal_keeps_length_and_follows_the_seed(algo):
    y = voiced(0.5)
    out = A.apply_channel(y, SR, f"rawboost:{algo}", np.random.default_rng(7))
    assert out.shape == y.shape and out.dtype == np.float32
    assert np.isfinite(out).all() and np.max(np.abs(out)) <= 1.0
    assert not np.allclose(out, y, atol=1e-4)
    again = A.apply_channel(y, SR, f"rawboost:{algo}", np.random.default_rng(7))
    other = A.apply_channel(y, SR, f"rawboost:{algo}", np.random.default_rng(8))
    assert np.array_equal(out, again) and not np.allclose(out, other, atol=1e-4)
    loud = A.apply_channel(3 * y, SR, f"rawboost:{algo}", np.random.default_rng(7))  # peak 0.9
    assert np.max(np.abs(loud)) <= 1.0


def test_rawboost_convolutive_is_a_filter_plus_harmonics():
    """Order 1 is a linear filter: twice the input, twice the output (same filter). The
    default order 5 adds filtered y**2, y**3, ...: a 440 Hz tone gets energy at 880 Hz."""
    y = voiced(0.5)
    one = A.rawboost_convolutive(y, SR, np.random.default_rng(0), order=1)
    two = A.rawboost_convolutive(2 * y, SR, np.random.default_rng(0), order=1)
    assert np.allclose(two, 2 * one, atol=1e-6)
    assert np.sum(one.astype(np.float64) ** 2) <= 1.05 * np.sum(y.astype(np.float64) ** 2)
    tone = (0.5 * np.sin(2 * np.pi * 440.0 * np.arange(SR) / SR)).astype(np.float32)
    assert band_energy(tone, 840, 920) < 1e-12 * band_energy(tone, 400, 480)
    for seed in range(3):
        out = A.rawboost_convolutive(tone, SR, np.random.default_rng(seed))
        assert band_energy(out, 840, 920) > 1e-4 * band_energy(out, 400, 480)  # > -40 dB


def test_rawboost_impulsive_hits_at_most_ten_percent_by_at_most_twice_the_sample():
    y = voiced(0.5)  # peak 0.3: 0.3 * (1 + 2) < 1, so no rescaling
    for seed in range(5):
        out = A.rawboost_impulsive(y, np.random.default_rng(seed))
        changed = out != y
        assert 0 < changed.sum() <= 0.10 * len(y)
        assert np.all(np.abs(out - y) <= 2.0 * np.abs(y) + 1e-7)


def test_rawboost_stationary_adds_noise_at_10_to_40_db_snr():
    y = voiced(0.5)
    snrs = []
    for seed in range(5):
        noise = A.rawboost_stationary(y, SR, np.random.default_rng(seed)).astype(np.float64) - y
        snrs.append(10 * np.log10(np.sum(y.astype(np.float64) ** 2) / np.sum(noise**2)))
    assert all(10 - 1e-3 <= snr <= 40 + 1e-3 for snr in snrs) and np.ptp(snrs) > 3


def tone(seconds: float, hz: float = 440.0, amplitude: float = 0.3) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    return (amplitude * np.sin(2 * np.pi * hz * t)).astype(np.float32)


def test_gain_scales_and_clips():
    y = tone(0.2)
    # 10 ** (6 / 20) = 1.995: +6 dB doubles the amplitude, within 0.3 %.
    assert np.allclose(A.apply_channel(y, SR, "gain:6", None), 2 * y, rtol=0.003, atol=1e-6)
    assert np.allclose(A.apply_channel(y, SR, "gain:-20", None), 0.1 * y, atol=1e-6)
    loud = A.apply_channel(y, SR, "gain:20", None)  # 0.3 * 10 = 3: clipped
    assert np.max(np.abs(loud)) == 1.0 and loud.shape == y.shape
    ratios = [np.max(np.abs(A.apply_channel(y, SR, "gain:random", np.random.default_rng(s)))) / 0.3
              for s in range(20)]
    db = 20 * np.log10(ratios)
    assert np.all((db >= -12 - 1e-3) & (db <= 6 + 1e-3)) and np.ptp(db) > 6


def test_trim_removes_leading_and_trailing_silence():
    """[0.5 s silence, 1 s tone, 0.5 s silence]: librosa's frames (2048 long, hop 512,
    centred) that overlap the tone at all are within 40 dB of the peak, so the cut
    starts at the first frame centre c with c + 1024 > 8000 (7168) and ends at the first
    with c - 1024 >= 24000 (25088): 17 920 samples, 1.12 s."""
    for silence in (np.zeros(SR // 2, np.float32),  # digital, or a -75 dB noise floor
                    (1e-4 * np.random.default_rng(0).standard_normal(SR // 2)).astype(np.float32)):
        y = np.concatenate([silence, tone(1.0), silence])
        out = A.apply_channel(y, SR, "trim", None)
        assert len(out) == 17_920
        assert np.array_equal(out, y[7168:25_088])
    quiet = np.zeros(SR, np.float32)  # nothing but silence: kept whole, never empty
    assert len(A.apply_channel(quiet, SR, "trim", None)) == SR


def test_pad_silence_adds_a_noise_floor_of_zero_to_twice_max_s():
    y = tone(0.5)
    added = []
    for seed in range(10):
        out = A.apply_channel(y, SR, "pad_silence:0.5", np.random.default_rng(seed))
        extra = len(out) - len(y)
        assert 0 <= extra <= 2 * 0.5 * SR
        lead = next(k for k in range(extra + 1) if np.array_equal(out[k:k + len(y)], y))
        pads = np.concatenate([out[:lead], out[lead + len(y):]])
        if len(pads) > 100:  # -70 dBFS white noise, not digital zeros
            rms_db = 20 * np.log10(np.sqrt(np.mean(pads.astype(np.float64) ** 2)))
            assert rms_db == pytest.approx(-70, abs=1.5)
            assert np.count_nonzero(pads) == len(pads)
        added.append(extra)
    assert len(set(added)) > 5  # random, not a fixed pause
    assert len(A.apply_channel(y, SR, "pad_silence:0", np.random.default_rng(0))) == len(y)


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs the ffmpeg binary")
def test_chains_apply_in_order():
    y = tone(0.5)
    # Clipping makes the order visible: 0.3 -> 3 clipped to 1 -> 0.1, or 0.3 -> 0.03 -> 0.3.
    assert np.max(np.abs(A.apply_channel(y, SR, "gain:20+gain:-20", None))) == pytest.approx(0.1)
    assert np.allclose(A.apply_channel(y, SR, "gain:-20+gain:20", None), y, atol=1e-6)
    assert np.array_equal(A.apply_channel(y, SR, "gain:+3", None), A.gain(y, 3.0))  # one spec
    # Noise after the call reaches above 4 kHz; noise before it is cut off with the rest.
    after = A.apply_channel(y, SR, "telephone:gsm+noise:20", np.random.default_rng(0))
    before = A.apply_channel(y, SR, "noise:20+telephone:gsm", np.random.default_rng(0))
    assert after.shape == before.shape == y.shape
    assert band_energy(after, 4000, 8000) > 1e-3 * band_energy(after, 300, 3400)
    assert band_energy(before, 4000, 8000) < 1e-3 * band_energy(before, 300, 3400)
    # Each effect draws from the one rng, in order: the same as applying them one by one.
    rng = np.random.default_rng(5)
    by_hand = A.apply_channel(A.apply_channel(y, SR, "rawboost:2", rng), SR, "gain:random", rng)
    chain = A.apply_channel(y, SR, "rawboost:2+gain:random", np.random.default_rng(5))
    assert np.array_equal(chain, by_hand)
    # New pauses for old: the trimmed tone, with 0 to 2 x 0.5 s around it.
    padded = np.concatenate([np.zeros(SR, np.float32), y, np.zeros(SR, np.float32)])
    out = A.apply_channel(padded, SR, "trim+pad_silence:0.5", np.random.default_rng(0))
    trimmed = len(A.trim_silence(padded))
    assert trimmed <= len(out) <= trimmed + SR and len(out) < len(padded)


# --- feature batches ---------------------------------------------------------------------


def test_spec_augment_masks_whole_rows_and_frames_with_the_example_mean():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4, 16, 50)).astype(np.float32) + 3.0
    out = A.spec_augment(x, rng, freq_masks=1, freq_width=0.5, time_masks=1, time_width=0.5)
    assert out.shape == x.shape and not np.shares_memory(out, x)
    for i in range(4):
        changed = out[i] != x[i]
        fill = x[i].mean()
        assert np.allclose(out[i][changed], fill)
        rows_full = changed.all(axis=1).sum()
        cols_full = changed.all(axis=0).sum()
        # Every changed cell lies in a fully masked row or a fully masked frame.
        assert (changed == (changed.all(axis=1, keepdims=True) | changed.all(axis=0, keepdims=True))).all()
        assert rows_full <= 8 and cols_full <= 25


def test_mixup_mixes_features_and_labels_with_one_ratio():
    n = 6
    eye = np.eye(n, dtype=np.float32)
    batch = {"stats": eye, "logmel": np.repeat(eye[:, :, None], 3, axis=2)}  # (n, n, 3)
    y = np.array([0, 1, 0, 1, 1, 0], np.float32)
    out, y2 = A.mixup(batch, y, np.random.default_rng(0), alpha=0.4)
    for i in range(n):
        row = out["stats"][i]  # lam * e_i + (1 - lam) * e_j
        others = np.delete(np.arange(n), i)
        j = int(others[np.argmax(row[others])]) if row[others].max() > 0 else i
        lam = float(row[i]) if j != i else 1.0
        assert 0.5 <= lam <= 1.0
        assert row.sum() == pytest.approx(1.0, abs=1e-5)
        assert np.allclose(out["logmel"][i], row[:, None])  # same pair and ratio for every kind
        assert y2[i] == pytest.approx(lam * y[i] + (1 - lam) * y[j], abs=1e-5)


def test_cutmix_replaces_a_frame_span_and_mixes_labels_by_its_length():
    rng = np.random.default_rng(1)
    n, frames = 6, 40
    x = np.stack([np.full((3, frames), i, np.float32) for i in range(n)])
    y = np.array([0, 1] * 3, np.float32)
    out, y2 = A.cutmix({"mfcc": x}, y, rng, alpha=1.0)
    for i in range(n):
        foreign = out["mfcc"][i, 0] != i
        cut = int(foreign.sum())
        assert cut <= frames // 2
        if cut:
            idx = np.flatnonzero(foreign)
            assert idx[-1] - idx[0] + 1 == cut  # one contiguous span
            j = int(out["mfcc"][i, 0, idx[0]])
            assert np.isclose(y2[i], (1 - cut / frames) * y[i] + cut / frames * y[j])
        else:  # no span, or a span from itself: label unchanged
            assert y2[i] == pytest.approx(y[i])


def test_augment_batch_off_is_identity_and_config_checks():
    rng = np.random.default_rng(0)
    batch = {"logmel": np.random.default_rng(1).normal(size=(3, 4, 5)).astype(np.float32)}
    y = np.array([0, 1, 1], np.float32)
    out, y2 = A.augment_batch(batch, y, rng, A.FeatureAugmentConfig.off())
    assert np.array_equal(out["logmel"], batch["logmel"]) and np.array_equal(y2, y)
    out, y2 = A.augment_batch(batch, y, rng, A.FeatureAugmentConfig(spec_prob=1.0, mixup_prob=1.0))
    assert out["logmel"].shape == (3, 4, 5) and ((0 <= y2) & (y2 <= 1)).all()
    with pytest.raises(ConfigError, match="mixup_prob"):
        A.FeatureAugmentConfig(mixup_prob=1.5)
    assert A.FeatureAugmentConfig.from_dict(A.FeatureAugmentConfig().to_dict()) == A.FeatureAugmentConfig()


# --- corpus driver -----------------------------------------------------------------------


def test_make_copysyn_corpus_writes_labelled_flac_and_a_readable_manifest(tmp_path):
    from spoofray.sources import read_manifest

    src = tmp_path / "src"
    src.mkdir()
    items = []
    for i in range(2):
        path = src / f"utt{i}.wav"
        sf.write(path, voiced(0.6, f0=120 + 30 * i, seed=i), SR)
        items.append({"uri": str(path), "label": "bonafide", "speaker": f"spk{i}", "group": f"rec{i}"})
    items.append({"uri": str(src / "fake.wav"), "label": "spoof"})  # skipped: not bona fide
    out = tmp_path / "corpus"
    manifest = A.make_copysyn_corpus(items, str(out), vocoders=("griffin_lim", "world"),
                                     channels=("none", "noise:20"))
    listed = read_manifest(manifest)
    assert len(listed) == 2 * 3 * 2  # sources x (bona fide + 2 vocoders) x channels
    by_label = {lab: [it for it in listed if it.label == lab] for lab in ("bonafide", "spoof")}
    assert len(by_label["bonafide"]) == 4 and len(by_label["spoof"]) == 8
    assert {it.attack for it in by_label["spoof"]} == {"copysyn:griffin_lim", "copysyn:world"}
    for it in listed:
        data, sr = sf.read(it.uri, dtype="float32")
        assert sr == SR and len(data) == int(0.6 * SR) and np.isfinite(data).all()
        assert it.uri.endswith(".flac")
        # Each copy keeps the group (and speaker) of its source recording.
        source = 0 if it.speaker == "spk0" else 1
        assert it.group == f"rec{source}"
    with pytest.raises(OutputExistsError):
        A.make_copysyn_corpus(items, str(out), vocoders=("world",))
    with pytest.raises(ConfigError, match="vocoder"):
        A.make_copysyn_corpus(items, str(tmp_path / "x"), vocoders=("wavenet",))


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs the ffmpeg binary")
def test_copysyn_corpus_through_chains_and_length_changing_channels(tmp_path):
    """Every version of a source goes through every channel, whatever length comes back:
    a 0.5 s pause + 0.6 s voice + 0.5 s pause source, trimmed and re-paused, and a call."""
    from spoofray.sources import read_manifest

    pause = np.zeros(SR // 2, np.float32)
    sf.write(tmp_path / "utt.wav", np.concatenate([pause, voiced(0.6), pause]), SR)
    items = [{"uri": str(tmp_path / "utt.wav"), "label": "bonafide"}]
    manifest = A.make_copysyn_corpus(items, str(tmp_path / "c"), vocoders=("world",),
                                     channels=("trim+pad_silence:0.3", "telephone:gsm+noise:30"))
    rows = read_manifest(manifest)
    names = sorted(it.uri.rsplit("/", 1)[1] for it in rows)
    assert [n.split("__", 1)[1] for n in names] == [
        "bonafide__telephone-gsm_noise-30.flac", "bonafide__trim_pad_silence-0.3.flac",
        "copysyn-world__telephone-gsm_noise-30.flac", "copysyn-world__trim_pad_silence-0.3.flac"]
    for it in rows:
        n = len(sf.read(it.uri, dtype="float32")[0])
        if "telephone" in it.uri:
            assert n == int(1.6 * SR)
        else:  # 0.6 s of voice and a frame or so either side, then 0 to 2 x 0.3 s of pauses
            assert 0.6 * SR <= n <= (0.6 + 0.3 + 2 * 0.3) * SR


def dominant_hz(y: np.ndarray) -> float:
    spec = np.abs(np.fft.rfft(y * np.hanning(len(y))))
    return float(np.fft.rfftfreq(len(y), 1 / SR)[np.argmax(spec)])


def test_copysyn_corpus_perturbations_by_hand(tmp_path):
    """1 s of a 500 Hz tone: stretched at rate 0.8 it lasts 1 / 0.8 = 1.25 s (20 000
    samples); shifted by -12 semitones its frequency is 500 * 2**(-12/12) = 250 Hz, and
    by +7 semitones 500 * 2**(7/12) = 749.2 Hz."""
    from spoofray.sources import read_manifest

    tone = 0.3 * np.sin(2 * np.pi * 500.0 * np.arange(SR) / SR)
    sf.write(tmp_path / "tone.wav", tone, SR)
    items = [{"uri": str(tmp_path / "tone.wav"), "label": "bonafide", "speaker": "s", "group": "g"}]
    manifest = A.make_copysyn_corpus(items, str(tmp_path / "c"), vocoders=("griffin_lim",),
                                     perturbations=("stretch:0.8", "pitch:-12", "pitch:+7"))
    listed = {it.attack or it.label: it for it in read_manifest(manifest)}
    # source + its copy, and per perturbation the perturbed clip (spoof: phase-vocoder
    # artefacts) + its copy-synthesis (attack copysyn:griffin_lim: same system).
    assert sorted(listed) == ["bonafide", "copysyn:griffin_lim", "perturb:pitch:+7",
                              "perturb:pitch:-12", "perturb:stretch:0.8"]
    rows = list(read_manifest(manifest))
    assert len(rows) == 8 and sum(r.label == "spoof" for r in rows) == 7
    assert all(r.group == "g" and r.speaker == "s" for r in rows)
    audio = {k: sf.read(it.uri, dtype="float32")[0] for k, it in listed.items()}
    assert len(audio["perturb:stretch:0.8"]) == pytest.approx(20_000, abs=256)
    assert dominant_hz(audio["perturb:stretch:0.8"]) == pytest.approx(500.0, abs=3)
    assert len(audio["perturb:pitch:-12"]) == SR
    assert dominant_hz(audio["perturb:pitch:-12"]) == pytest.approx(250.0, abs=3)
    assert dominant_hz(audio["perturb:pitch:+7"]) == pytest.approx(749.2, abs=3)
    copies = [sf.read(r.uri, dtype="float32")[0] for r in rows if r.attack == "copysyn:griffin_lim"]
    assert sorted(round(len(c) / SR, 2) for c in copies) == [1.0, 1.0, 1.0, 1.25]
    # The label of the perturbed clip is a choice; "skip" writes only the copies.
    skip = A.make_copysyn_corpus(items, str(tmp_path / "s"), vocoders=("griffin_lim",),
                                 include_bonafide=False, perturbations=("pitch:2",),
                                 perturbed_label="skip")
    assert [r.attack for r in read_manifest(skip)] == ["copysyn:griffin_lim"] * 2
    with pytest.raises(ConfigError, match="stretch:<rate>"):
        A.make_copysyn_corpus(items, str(tmp_path / "x"), perturbations=("stretch:0",))
    with pytest.raises(ConfigError, match="perturbed_label"):
        A.make_copysyn_corpus(items, str(tmp_path / "x"), perturbed_label="maybe")

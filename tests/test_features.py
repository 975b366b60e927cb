"""Feature kernels against librosa, hand-checked toy inputs, and shape invariants.

Tolerances (float32 kernels vs librosa, which runs its FFTs in float64):

* log-mel: 0.01 dB wherever librosa's value is within 80 dB of the window's peak. Below
  that, values sit on the float32 FFT round-off floor (~-140 dB re peak) and differ freely.
* MFCC/LFCC (+ deltas): 0.02 absolute, on signals that carry a faint noise floor (-60 dB),
  so that no band sits on the round-off floor (the DCT would spread its noise everywhere).
* DEEP-VOICE stats: 1e-4 relative (1e-4 absolute for the MFCC means near 0); the rolloff
  moves in whole FFT bins, so it gets 2 bins absolute.
"""

from __future__ import annotations

import dataclasses
import warnings

import librosa
import numpy as np
import pytest
import scipy.fft
import scipy.signal
from hypothesis import given, settings
from hypothesis import strategies as st

from spoofray import features
from spoofray.config import STATS_NAMES, AudioConfig, FeatureConfig
from spoofray.errors import ConfigError

SR = 16_000


def config_for(n_samples: int, **kwargs) -> FeatureConfig:
    """A FeatureConfig whose windows are exactly ``n_samples`` long."""
    seconds = n_samples / SR
    return FeatureConfig(audio=AudioConfig(window_s=seconds, hop_s=seconds), **kwargs)


def make_signals(n_samples: int, seed: int = 0, noise_floor: float = 1e-3) -> np.ndarray:
    """Sine, chirp, white noise, two-tone + noise, square wave: ``(5, n_samples)`` float32."""
    rng = np.random.default_rng(seed)
    t = np.arange(n_samples) / SR
    signals = np.stack(
        [
            0.5 * np.sin(2 * np.pi * 1000 * t),
            0.3 * scipy.signal.chirp(t, f0=100, t1=t[-1] + 1 / SR, f1=7000),
            0.1 * rng.standard_normal(n_samples),
            0.3 * np.sin(2 * np.pi * 220 * t) + 0.2 * np.sin(2 * np.pi * 3150 * t + 1.0),
            0.2 * scipy.signal.square(2 * np.pi * 300 * t),
        ]
    )
    signals += noise_floor * rng.standard_normal(signals.shape)
    return signals.astype(np.float32)


# --- independent references built from librosa/numpy/scipy pieces ------------------------


def ref_log_mel(y: np.ndarray, cfg: FeatureConfig) -> np.ndarray:
    mel = librosa.feature.melspectrogram(
        y=y, sr=SR, n_fft=cfg.n_fft, hop_length=cfg.hop_length, win_length=cfg.win_length,
        window="hann", center=True, pad_mode="reflect", power=2.0, n_mels=cfg.n_mels,
        fmin=cfg.fmin, fmax=cfg.fmax, htk=False, norm="slaney",
    )
    return librosa.power_to_db(mel, ref=1.0, amin=1e-10, top_db=None)


def with_librosa_deltas(coeffs: np.ndarray) -> np.ndarray:
    return np.concatenate(
        [coeffs, librosa.feature.delta(coeffs), librosa.feature.delta(coeffs, order=2)]
    )


def ref_mfcc(y: np.ndarray, cfg: FeatureConfig) -> np.ndarray:
    coeffs = librosa.feature.mfcc(S=ref_log_mel(y, cfg), n_mfcc=cfg.n_mfcc)
    return with_librosa_deltas(coeffs) if cfg.deltas else coeffs


def ref_lfcc(y: np.ndarray, cfg: FeatureConfig) -> np.ndarray:
    """ASVspoof-style LFCC: power STFT, linear triangles by np.interp, dB, DCT-II ortho."""
    power = np.abs(
        librosa.stft(y, n_fft=cfg.n_fft, hop_length=cfg.hop_length, win_length=cfg.win_length,
                     pad_mode="reflect")
    ) ** 2
    fmax = cfg.fmax or SR / 2
    edges = np.linspace(cfg.fmin, fmax, cfg.n_linear_filters + 2)
    freqs = np.fft.rfftfreq(cfg.n_fft, 1 / SR)
    bank = np.stack(
        [np.interp(freqs, edges[i : i + 3], [0.0, 1.0, 0.0], left=0.0, right=0.0)
         for i in range(cfg.n_linear_filters)]
    )
    log_energy = librosa.power_to_db(bank @ power, ref=1.0, amin=1e-10, top_db=None)
    coeffs = scipy.fft.dct(log_energy, type=2, norm="ortho", axis=0)[: cfg.n_lfcc]
    return with_librosa_deltas(coeffs) if cfg.deltas else coeffs


def ref_stats(y: np.ndarray) -> np.ndarray:
    """DEEP-VOICE: the mean of each librosa feature with librosa defaults."""
    f = librosa.feature
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # empty-tuning warnings on silent input
        return np.array(
            [
                np.mean(f.chroma_stft(y=y, sr=SR)),
                np.mean(f.rms(y=y)),
                np.mean(f.spectral_centroid(y=y, sr=SR)),
                np.mean(f.spectral_bandwidth(y=y, sr=SR)),
                np.mean(f.spectral_rolloff(y=y, sr=SR)),
                np.mean(f.zero_crossing_rate(y)),
                *np.mean(f.mfcc(y=y, sr=SR), axis=1),
            ]
        )


SPECTRAL_CONFIGS = {
    "default": {},
    "wide": dict(n_fft=1024, win_length=1024, hop_length=256, n_mels=40, fmin=50.0,
                 fmax=7000.0, n_mfcc=13, n_lfcc=30, n_linear_filters=40),
    "narrow": dict(n_fft=256, win_length=200, hop_length=80, n_mels=32, n_mfcc=16,
                   n_lfcc=12, n_linear_filters=24, deltas=False),
}


@pytest.fixture(scope="module", params=sorted(SPECTRAL_CONFIGS))
def spectral_case(request):
    n_samples = 8_000 + 123  # not a multiple of any hop
    cfg = config_for(n_samples, **SPECTRAL_CONFIGS[request.param])
    return make_signals(n_samples), cfg


# --- against librosa ---------------------------------------------------------------------


def test_log_mel_matches_librosa(spectral_case):
    windows, cfg = spectral_case
    ours = features.log_mel(windows, cfg)
    for got, y in zip(ours, windows):
        want = ref_log_mel(y, cfg)
        above_floor = want >= want.max() - 80.0
        np.testing.assert_allclose(got[above_floor], want[above_floor], atol=0.01, rtol=0)


def test_mfcc_matches_librosa(spectral_case):
    windows, cfg = spectral_case
    ours = features.mfcc(windows, cfg)
    for got, y in zip(ours, windows):
        np.testing.assert_allclose(got, ref_mfcc(y, cfg), atol=0.02, rtol=0)


def test_lfcc_matches_independent_reference(spectral_case):
    windows, cfg = spectral_case
    ours = features.lfcc(windows, cfg)
    for got, y in zip(ours, windows):
        np.testing.assert_allclose(got, ref_lfcc(y, cfg), atol=0.02, rtol=0)


STATS_RTOL = np.full(len(STATS_NAMES), 1e-4)
STATS_ATOL = np.zeros(len(STATS_NAMES))
STATS_ATOL[STATS_NAMES.index("rolloff")] = 2 * SR / 2048  # two FFT bins
STATS_ATOL[6:] = 1e-4


def assert_stats_close(got: np.ndarray, want: np.ndarray) -> None:
    bad = np.abs(got - want) > STATS_ATOL + STATS_RTOL * np.abs(want)
    assert not bad.any(), {
        STATS_NAMES[i]: (float(got[i]), float(want[i])) for i in np.flatnonzero(bad)
    }


def test_summary_stats_match_librosa_on_generated_signals():
    windows = make_signals(2 * SR + 77, seed=3)
    ours = features.summary_stats(windows, config_for(windows.shape[1]))
    for got, y in zip(ours, windows):
        assert_stats_close(got, ref_stats(y))


def test_summary_stats_match_librosa_on_real_speech(devcorpus):
    soundfile = pytest.importorskip("soundfile")
    paths = sorted((devcorpus / "librispeech").rglob("*.flac"))[:2]
    paths += sorted((devcorpus / "ljspeech").rglob("*.flac"))[:2]
    windows = []
    for path in paths:
        y, sr = soundfile.read(path, dtype="float32")
        assert sr == SR
        window = np.zeros(3 * SR, np.float32)  # short clips end in zero padding, as in use
        window[: min(y.size, window.size)] = y[: window.size]
        windows.append(window)
    ours = features.summary_stats(np.stack(windows), config_for(3 * SR))
    for got, y in zip(ours, windows):
        assert_stats_close(got, ref_stats(y))


def test_delta_matches_librosa_and_extends_to_short_inputs():
    rng = np.random.default_rng(1)
    coeffs = rng.standard_normal((2, 30, 5)).astype(np.float32)  # (B, frames, C)
    for order in (1, 2):
        want = librosa.feature.delta(coeffs, order=order, axis=1)
        np.testing.assert_allclose(features._delta(coeffs, order), want, atol=1e-5)
    # Fewer frames than librosa's width: one fit over all frames. A line in time has
    # delta == its slope everywhere and delta-delta == 0; one frame has no slope.
    for n_frames in (2, 3, 5, 8):
        ramp = (3.0 * np.arange(n_frames) - 1.0).astype(np.float32)[None, :, None]
        np.testing.assert_allclose(features._delta(ramp, 1), 3.0, atol=1e-4)
        np.testing.assert_allclose(features._delta(ramp, 2), 0.0, atol=1e-4)
    assert not features._delta(np.ones((1, 1, 2), np.float32), 1).any()


# --- hand-checked cases -------------------------------------------------------------------


def real_pair_fraction(n_samples: int, frame: int = 2048, hop: int = 512) -> float:
    """Mean over zcr frames of (adjacent pairs of real samples in the frame) / frame.

    librosa pads ``frame // 2`` copies of the end samples (no crossings there) and counts
    the ``frame - 1`` pairs of each frame over ``frame`` slots.
    """
    n_frames = 1 + n_samples // hop
    first = np.arange(n_frames) * hop  # first pair (s, s+1) of each frame, padded coords
    lo = np.maximum(first, frame // 2)
    hi = np.minimum(first + frame - 2, frame // 2 + n_samples - 2)  # last pair index
    return float(np.mean(np.maximum(hi - lo + 1, 0)) / frame)



def test_pure_tone_stats_are_where_the_tone_is():
    n = 4 * SR
    t = np.arange(n) / SR
    tone = (0.5 * np.sin(2 * np.pi * 1000 * t + 0.3)).astype(np.float32)
    stats = dict(zip(STATS_NAMES, features.summary_stats(tone[None], config_for(n))[0]))
    assert stats["spectral_centroid"] == pytest.approx(1000, rel=0.01)
    assert stats["rolloff"] == pytest.approx(1000, abs=3 * SR / 2048)
    # Hann main lobe is +-2 bins (+-16 Hz); the bandwidth's float32 round-off tail is small.
    assert 5 < stats["spectral_bandwidth"] < 60
    # rms of a sine is A/sqrt(2); the first and last frames are partly zero padding.
    assert stats["rms"] == pytest.approx(0.5 / np.sqrt(2), rel=0.03)
    # a tone lights one chroma bin (1 after max-normalisation) and leaks a little elsewhere
    assert 1 / 12 < stats["chroma_stft"] < 0.2
    # two zero crossings per period, counted only where frames hold real sample pairs
    expected = 2 * 1000 / SR * real_pair_fraction(n)
    assert stats["zero_crossing_rate"] == pytest.approx(expected, rel=0.005)


def test_square_wave_zero_crossing_rate():
    n, half_period = 2 * SR, 40  # a 200 Hz square wave: one crossing every 40 samples
    square = np.where((np.arange(n) // half_period) % 2 == 0, 0.3, -0.3).astype(np.float32)
    zcr = features.summary_stats(square[None], config_for(n))[0, 5]
    assert zcr == pytest.approx(real_pair_fraction(n) / half_period, rel=0.005)
    assert zcr == pytest.approx(ref_stats(square)[5], rel=1e-6)


def test_silence_has_exact_floor_values():
    n = SR
    silence = np.zeros((2, n), np.float32)
    cfg = config_for(n)
    out = features.extract(silence, cfg)
    np.testing.assert_allclose(out["logmel"], -100.0, rtol=1e-6)  # 10*log10(1e-10)
    stats = out["stats"][0]
    assert (stats[:6] == 0).all()  # chroma, rms, centroid, bandwidth, rolloff, zcr
    # flat -100 dB log-mel: only the DCT's constant term survives, -100 * sqrt(n_mels)
    assert stats[6] == pytest.approx(-100 * np.sqrt(128), rel=1e-6)
    np.testing.assert_allclose(stats[7:], 0.0, atol=1e-3)
    # nothing changes: zero deltas, exactly, whatever BLAS kernel ran the DCT
    assert not out["mfcc"][:, cfg.n_mfcc :].any()
    assert not out["lfcc"][:, cfg.n_lfcc :].any()


def test_tone_lands_in_the_nearest_mel_band():
    n = SR
    cfg = config_for(n)
    t = np.arange(n) / SR
    for freq in (300.0, 1000.0, 4000.0):
        tone = np.sin(2 * np.pi * freq * t).astype(np.float32)[None]
        loudest = features.log_mel(tone, cfg)[0].mean(axis=1).argmax()
        centres = librosa.mel_frequencies(n_mels=cfg.n_mels + 2, fmax=SR / 2)[1:-1]
        assert abs(loudest - np.abs(centres - freq).argmin()) <= 1


def test_mfcc_delta_tracks_a_steady_loudness_ramp():
    n, db_per_second = 2 * SR, 20.0
    rng = np.random.default_rng(7)
    gain = 10 ** (db_per_second * np.arange(n) / SR / 20)
    ramp = (0.01 * gain * rng.standard_normal(n)).astype(np.float32)[None]
    cfg = config_for(n)
    out = features.mfcc(ramp, cfg)[0]
    # every mel band rises by db_per_second; c0 = sum(bands) / sqrt(n_mels)
    per_frame = db_per_second * cfg.hop_length / SR * np.sqrt(cfg.n_mels)
    inner = slice(10, -10)  # away from the reflect-padded edges
    delta_c0 = out[cfg.n_mfcc, inner].mean()
    assert delta_c0 == pytest.approx(per_frame, rel=0.05)
    assert abs(out[2 * cfg.n_mfcc, inner].mean()) < 0.05 * per_frame  # no acceleration


# --- batch behaviour, selection, dtypes ----------------------------------------------------


def test_extract_returns_only_selected_kinds_in_float32():
    windows = make_signals(SR // 2)
    for kinds in [("stats",), ("lfcc", "logmel"), ("mfcc",), ("logmel", "mfcc", "lfcc", "stats")]:
        cfg = config_for(windows.shape[1], kinds=kinds)
        out = features.extract(windows, cfg)
        assert tuple(out) == kinds
        for kind, shape in cfg.feature_shapes().items():
            assert out[kind].shape == (len(windows), *shape)
            assert out[kind].dtype == np.float32
            assert np.isfinite(out[kind]).all()


def test_extract_shares_one_stft_and_equals_the_single_kernels():
    windows = make_signals(SR // 2)
    cfg = config_for(windows.shape[1])
    out = features.extract(windows, cfg)
    np.testing.assert_array_equal(out["logmel"], features.log_mel(windows, cfg))
    np.testing.assert_array_equal(out["mfcc"], features.mfcc(windows, cfg))
    np.testing.assert_array_equal(out["lfcc"], features.lfcc(windows, cfg))
    np.testing.assert_array_equal(out["stats"], features.summary_stats(windows, cfg))


def assert_same_features(got: dict, want: dict, cfg: FeatureConfig) -> None:
    """The spectral kinds of the same windows, computed in differently shaped products.

    Shared frames, chunks and batch sizes change the shapes of the float32 matrix products,
    and BLAS picks its kernel, hence its summation order, by shape and CPU (see
    ``OPENBLAS_CORETYPE``): the results agree to rounding, not bit for bit. A float32 sum
    of n terms rounds by about n * eps times its largest term, so:

    * a band sums n_fft // 2 + 1 non-negative powers: relative error n * eps, i.e.
      10 / ln 10 * n * eps dB, plus the rounding of the dB value itself;
    * a cepstral coefficient is a DCT of n_bands dB values, each within +-100 dB (the
      floor; audio in [-1, 1] stays far below +100): n_bands * eps * 100 more. Deltas weigh
      coefficient differences by sum |w| < 1, so the same bound holds for them.
    """
    eps = float(np.finfo(np.float32).eps)
    db = -10 * np.log10(features.AMIN)
    band = 10 / np.log(10) * (cfg.n_fft // 2 + 1) * eps + db * eps
    atol = {"logmel": band, "mfcc": band + cfg.n_mels * eps * db,
            "lfcc": band + cfg.n_linear_filters * eps * db}
    for kind in [k for k in atol if k in want]:
        np.testing.assert_allclose(got[kind], want[kind], rtol=0, atol=atol[kind], err_msg=kind)


def test_each_window_is_independent_of_its_batch():
    windows = np.concatenate([make_signals(SR // 2, seed=s) for s in range(4)])  # 20 > CHUNK
    cfg = config_for(windows.shape[1])
    together = features.extract(windows, cfg)
    for i in (0, 7, 19):
        alone = features.extract(windows[i : i + 1], cfg)
        assert_same_features({k: v[0] for k, v in alone.items()},
                             {k: v[i] for k, v in together.items()}, cfg)
        # Stats: only the banded 128-mel product takes all windows' frames as its rows; its
        # rounding moves the MFCC means by float32 ulps (~1e-6), far inside these bounds.
        np.testing.assert_allclose(alone["stats"][0], together["stats"][i], rtol=1e-5, atol=1e-4)


def cut(signal: np.ndarray, window: int, hop: int) -> np.ndarray:
    """Windows of ``signal`` as ``spoofray.audio.frame_windows`` cuts a file."""
    cfg = AudioConfig(window_s=window / SR, hop_s=hop / SR)
    from spoofray.audio import frame_windows

    return frame_windows(signal.astype(np.float32), cfg)[0]


def test_overlapping_windows_share_frames_and_give_the_same_features():
    # 10.3 s of chirp + noise in 1 s windows every 0.5 s: more windows than one chunk
    # (CHUNK), and a last window that is partly zero padding.
    signal = make_signals(int(10.3 * SR))[[1, 2]].sum(axis=0)
    windows = cut(signal, SR, SR // 2)
    assert len(windows) > features.CHUNK and windows[-1, -1] == 0.0
    cfg = config_for(SR)
    independent = features.extract(windows, cfg)
    shared = features.extract(windows, cfg, window_hop=SR // 2)
    assert_same_features(shared, independent, cfg)
    np.testing.assert_array_equal(shared["stats"], independent["stats"])  # not shared


@settings(max_examples=30, deadline=None)
@given(n_fft=st.sampled_from([64, 128, 256]), win_frac=st.floats(0.25, 1.0),
       hop_length=st.integers(8, 96), window_hops=st.integers(1, 12),
       hop_frames=st.integers(1, 12), extra=st.sampled_from([0, 0, 1, 17]),
       length=st.integers(1, 5000))
def test_frame_sharing_matches_independent_windows_for_any_framing(
        n_fft, win_frac, hop_length, window_hops, hop_frames, extra, length):
    # Window hops that are, and (via extra) are not, whole STFT hops; short and long signals.
    window_hop = hop_frames * hop_length + extra
    window = window_hop * window_hops
    win_length = max(16, int(win_frac * n_fft))
    cfg = FeatureConfig(audio=AudioConfig(window_s=window / SR, hop_s=window_hop / SR),
                        kinds=("logmel", "mfcc", "lfcc"), n_fft=n_fft, win_length=win_length,
                        hop_length=hop_length, n_mels=24, n_mfcc=10, n_lfcc=8,
                        n_linear_filters=20)
    signal = np.random.default_rng(length).uniform(-1, 1, length)
    windows = cut(signal, cfg.audio.window_samples, cfg.audio.hop_samples)
    independent = features.extract(windows, cfg)
    shared = features.extract(windows, cfg, window_hop=cfg.audio.hop_samples)
    assert_same_features(shared, independent, cfg)


def test_a_window_hop_that_does_not_match_the_windows_is_refused():
    windows = cut(make_signals(3 * SR)[0], SR, SR // 2)
    with pytest.raises(ConfigError, match="window_hop=4000 says .* do not overlap that way"):
        features.extract(windows, config_for(SR), window_hop=SR // 4)
    with pytest.raises(ConfigError, match=r"window_hop must be in \[1, 16000\]"):
        features.extract(windows, config_for(SR), window_hop=2 * SR)


def test_integer_and_float64_input_is_accepted():
    windows = make_signals(4000)
    cfg = config_for(4000)
    np.testing.assert_allclose(
        features.log_mel(windows.astype(np.float64), cfg), features.log_mel(windows, cfg)
    )
    pcm = (windows * 2**15).astype(np.int16)
    assert features.mfcc(pcm, cfg).dtype == np.float32


@pytest.mark.parametrize(
    ("windows", "cfg_changes", "message"),
    [
        (np.zeros(1000, np.float32), {}, r"shape \(n_windows, n_samples\).*windows\[None, :\]"),
        (np.zeros((1, 2, 1000), np.float32), {}, "shape"),
        (np.zeros((1, 1000), np.complex64), {}, "real numbers"),
        (np.zeros((2, 0), np.float32), {}, "0 samples"),
        (np.full((1, 1000), np.nan, np.float32), {}, "NaN or Inf"),
        (np.zeros((1, 999), np.float32), {}, "999 samples but cfg.audio gives 1000"),
        (np.zeros((1, 1000), np.float32), {"n_fft": 511, "win_length": 400}, "n_fft must be even"),
        (np.zeros((1, 1000), np.float32), {"n_mfcc": 80}, "n_mfcc <= n_mels"),
        (np.zeros((1, 1000), np.float32), {"n_lfcc": 90}, "n_lfcc <= n_linear_filters"),
        (np.zeros((1, 1000), np.float32), {"fmax": 9000.0}, "fmax <= sr/2"),
        (np.zeros((1, 1000), np.float32), {"hop_length": 0}, "hop_length"),
    ],
)
def test_bad_input_is_refused_with_a_helpful_message(windows, cfg_changes, message):
    with pytest.raises(ConfigError, match=message):  # from FeatureConfig or from the kernel
        features.extract(windows, dataclasses.replace(config_for(1000), **cfg_changes))


# --- shape invariants ----------------------------------------------------------------------


@st.composite
def framing(draw):
    n_fft = draw(st.sampled_from([64, 128, 256, 512]))
    win_length = draw(st.integers(16, n_fft))
    hop_length = draw(st.integers(1, 2 * n_fft) if draw(st.booleans()) else st.just(n_fft // 4))
    n_samples = draw(st.integers(1, 3 * n_fft))  # often shorter than n_fft
    n_batch = draw(st.integers(0, 3))
    deltas = draw(st.booleans())
    return n_fft, win_length, hop_length, n_samples, n_batch, deltas


@settings(max_examples=40, deadline=None)
@given(framing())
def test_frame_counts_and_shapes_follow_the_config(params):
    n_fft, win_length, hop_length, n_samples, n_batch, deltas = params
    cfg = config_for(
        n_samples, n_fft=n_fft, win_length=win_length, hop_length=hop_length, n_mels=24,
        n_mfcc=10, n_lfcc=8, n_linear_filters=20, deltas=deltas,
    )
    windows = np.random.default_rng(n_samples).uniform(-1, 1, (n_batch, n_samples))
    out = features.extract(windows.astype(np.float32), cfg)
    n_frames = 1 + n_samples // hop_length
    rows = 3 if deltas else 1
    assert cfg.n_frames == n_frames
    assert out["logmel"].shape == (n_batch, 24, n_frames)
    assert out["mfcc"].shape == (n_batch, rows * 10, n_frames)
    assert out["lfcc"].shape == (n_batch, rows * 8, n_frames)
    assert out["stats"].shape == (n_batch, len(STATS_NAMES))
    for kind, shape in cfg.feature_shapes().items():
        assert out[kind].shape == (n_batch, *shape)
        assert out[kind].dtype == np.float32
        assert np.isfinite(out[kind]).all()

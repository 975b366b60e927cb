"""Batched feature kernels: a batch of windows in, fixed-shape float32 tensors out.

Every kernel takes ``windows`` of shape ``(B, T)`` (float32 mono at
``cfg.audio.sample_rate``) and is vectorised over the batch: one strided framing and one
real FFT for all windows, no Python loop over windows. librosa is used only to build
filterbanks once per setting (cached); the hot path is numpy and ``scipy.fft``. Windows cut
from one file overlap; told the hop between them (``window_hop``), :func:`extract` computes
the spectral frames they share once.

Framing follows librosa's ``center=True``: a window of ``T`` samples gives
``1 + T // hop_length`` frames. The spectral kinds (``logmel``, ``mfcc``, ``lfcc``) pad
with ``reflect`` (librosa's historic default, and what :class:`~spoofray.config.FeatureConfig`
documents); ``stats`` reproduces the DEEP-VOICE recipe, i.e. librosa 0.11 defaults
(zero padding for the STFT and RMS, edge padding for the zero-crossing rate).

Kinds
-----
logmel
    ``10*log10(max(mel @ |STFT|^2, 1e-10))``; hann window of ``win_length`` centred in
    ``n_fft``; Slaney mel filterbank (``htk=False, norm='slaney'``) from ``fmin`` to ``fmax``.
    Equals ``librosa.power_to_db(librosa.feature.melspectrogram(...), ref=1.0,
    amin=1e-10, top_db=None)``.
mfcc
    DCT-II (orthonormal) of ``logmel``, first ``n_mfcc`` rows, as ``librosa.feature.mfcc``
    on that log-mel; with ``cfg.deltas`` followed by delta and delta-delta rows.
lfcc
    The ASVspoof LFCC baseline: ``n_linear_filters`` unit-height triangular filters evenly
    spaced in Hz over ``[fmin, fmax]`` on the same power spectrum, the same dB log as
    ``logmel``, DCT-II (orthonormal), first ``n_lfcc`` rows, deltas as for ``mfcc``.
lfcc_narrow
    ``lfcc`` with its filters over ``[narrow_fmin, narrow_fmax]`` (the telephone band,
    300-3400 Hz) instead of ``[fmin, fmax]``: the features of a narrowband member, present
    in an 8 kHz call and in wideband speech alike.
stats
    The 26 DEEP-VOICE features (:data:`~spoofray.config.STATS_NAMES`), each a mean over the
    frames of one window, as ``np.mean(librosa.feature.<name>(y=window, sr=sr))`` with
    librosa defaults (``n_fft=2048``, ``hop_length=512``; ``chroma_stft`` estimates its
    tuning per window; ``mfcc`` has 128 mels and ``top_db=80``).

Deltas are ``librosa.feature.delta(x, width=9, order=k, mode='interp')`` (a Savitzky-Golay
derivative). With fewer than 9 frames, where librosa refuses, the polynomial is fitted to
all frames instead (the same rule ``interp`` uses at the edges), so short windows work.
Digital silence (every band at the floor) has deltas of exactly 0, whatever BLAS kernel
computes the DCT (see :func:`_cepstrum`).
"""

from __future__ import annotations

import dataclasses
import functools
import math

import numpy as np
import scipy.fft

from spoofray.config import FEATURE_KINDS, STATS_NAMES, FeatureConfig
from spoofray.errors import ConfigError

__all__ = ["extract", "lfcc", "log_mel", "mfcc", "summary_stats"]

#: Floor of the power spectrum before the log (librosa's ``amin``), in power units.
AMIN = 1e-10
#: Frames in the delta regression window (librosa's default ``width``).
DELTA_WIDTH = 9
#: Windows per internal chunk: bounds memory (a chunk's frames stay in cache-sized arrays).
CHUNK = 16

# DEEP-VOICE used librosa.feature.* defaults; these are those defaults.
STATS_N_FFT = 2048
STATS_HOP = 512
STATS_N_MELS = 128
STATS_N_MFCC = 20
STATS_TOP_DB = 80.0
STATS_ROLL_PERCENT = 0.85
STATS_ZC_THRESHOLD = 1e-10
HOP_BLOCKS = STATS_N_FFT // STATS_HOP  # frames are whole hops long (see _stats_chunk)
# librosa.piptrack defaults, used by chroma_stft's tuning estimate.
PIP_FMIN, PIP_FMAX, PIP_THRESHOLD = 150.0, 4000.0, 0.1
TUNING_EDGES = np.linspace(-0.5, 0.5, 101)  # pitch_tuning(resolution=0.01) histogram


# --------------------------------------------------------------------------------------
# input checks
# --------------------------------------------------------------------------------------


def _as_windows(windows: np.ndarray) -> np.ndarray:
    """Validate and return ``windows`` as a C-contiguous float32 array ``(B, T)``."""
    arr = np.asarray(windows)
    if arr.ndim != 2:
        hint = " (one window? use windows[None, :])" if arr.ndim == 1 else ""
        raise ConfigError(
            f"windows must have shape (n_windows, n_samples), got shape {arr.shape}{hint}"
        )
    if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise ConfigError(f"windows must be real numbers, got dtype {arr.dtype}")
    if arr.shape[1] < 1:
        raise ConfigError("windows have 0 samples; each window needs at least one sample")
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    if not np.isfinite(arr).all():
        raise ConfigError(
            "windows contain NaN or Inf samples; the audio stage should have rejected "
            "this file (InvalidAudioError) before feature extraction"
        )
    return arr


@functools.lru_cache(maxsize=64)
def _check_config(cfg: FeatureConfig) -> float:
    """Check the spectral settings FeatureConfig leaves open; return ``fmax`` in Hz."""
    sr = cfg.audio.sample_rate
    fmax = sr / 2 if cfg.fmax is None else float(cfg.fmax)
    problems = []
    if cfg.n_fft < 2 or cfg.n_fft % 2:
        problems.append(
            f"n_fft must be even (frames = 1 + T // hop_length needs it), got {cfg.n_fft}"
        )
    if cfg.hop_length < 1 or cfg.win_length < 1:
        problems.append(
            f"hop_length and win_length must be >= 1, got {cfg.hop_length}, {cfg.win_length}"
        )
    if not 0 <= cfg.fmin < fmax <= sr / 2:
        problems.append(f"need 0 <= fmin < fmax <= sr/2 ({sr / 2}), got {cfg.fmin}, {fmax}")
    # (n_mfcc <= n_mels and n_lfcc <= n_linear_filters are FeatureConfig's own checks.)
    if problems:
        raise ConfigError("invalid FeatureConfig: " + "; ".join(problems))
    return fmax


def _chunks(n: int):
    for start in range(0, n, CHUNK):
        yield slice(start, min(start + CHUNK, n))


# --------------------------------------------------------------------------------------
# cached constants (built at first use, once per setting)
# --------------------------------------------------------------------------------------


def _frozen(values: np.ndarray, dtype=np.float32) -> np.ndarray:
    """A read-only contiguous copy: cached constants are shared by every call."""
    out = np.array(values, dtype=dtype, order="C")
    out.flags.writeable = False
    return out


@functools.lru_cache(maxsize=16)
def _hann(win_length: int) -> np.ndarray:
    """Periodic hann window (librosa/scipy ``get_window('hann', n, fftbins=True)``)."""
    return _frozen(0.5 - 0.5 * np.cos(2 * np.pi * np.arange(win_length) / win_length))


@functools.lru_cache(maxsize=16)
def _mel_filterbank_t(sr: int, n_fft: int, n_mels: int, fmin: float, fmax: float) -> np.ndarray:
    """Slaney mel filterbank, transposed: ``(n_fft // 2 + 1, n_mels)`` float32."""
    import librosa  # build-time only

    fb = librosa.filters.mel(
        sr=sr, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax, htk=False, norm="slaney"
    )
    return _frozen(fb.T)


@functools.lru_cache(maxsize=16)
def _linear_filterbank_t(
    sr: int, n_fft: int, n_filters: int, fmin: float, fmax: float
) -> np.ndarray:
    """Unit-height triangles evenly spaced in Hz, transposed: ``(n_fft // 2 + 1, n_filters)``.

    Filter ``i`` rises from edge ``i`` to a peak at edge ``i + 1`` and falls to edge
    ``i + 2``, the edges being ``n_filters + 2`` points evenly spaced over ``[fmin, fmax]``.
    """
    edges = np.linspace(fmin, fmax, n_filters + 2)
    freqs = np.linspace(0, sr / 2, n_fft // 2 + 1)
    rising = (freqs[None, :] - edges[:-2, None]) / np.diff(edges)[:-1, None]
    falling = (edges[2:, None] - freqs[None, :]) / np.diff(edges)[1:, None]
    return _frozen(np.maximum(0.0, np.minimum(rising, falling)).T)


@functools.lru_cache(maxsize=16)
def _dct_t(n_in: int, n_out: int) -> np.ndarray:
    """Orthonormal DCT-II matrix, transposed and truncated: ``(n_in, n_out)`` float32."""
    basis = scipy.fft.dct(np.eye(n_in), type=2, norm="ortho", axis=0)[:n_out]
    return _frozen(basis.T)


@functools.lru_cache(maxsize=64)
def _delta_weights(n_frames: int, order: int) -> np.ndarray:
    """Savitzky-Golay weights of the ``order``-th derivative (polynomial degree ``order``).

    Returns ``(width,)`` weights for the dot product with the ``width`` frames around a
    frame; ``width`` is :data:`DELTA_WIDTH`, or ``n_frames`` when there are fewer frames
    (then one fit covers all frames and every frame gets the same value).
    """
    width = min(DELTA_WIDTH, n_frames)
    degree = min(order, width - 1)
    if degree < order:  # too few frames to see this derivative at all
        return _frozen(np.zeros(width))
    positions = np.arange(width) - (width - 1) / 2
    vander = positions[:, None] ** np.arange(degree + 1)[None, :]
    # A polynomial of degree == order has a constant order-th derivative: order! * c[order].
    return _frozen(math.factorial(order) * np.linalg.pinv(vander)[order])


@functools.lru_cache(maxsize=8)
def _block_indicator(n_bins: int, block: int) -> np.ndarray:
    """``(n_bins, ceil(n_bins / block))`` 0/1 matrix: a product with it sums runs of bins."""
    out = np.zeros((n_bins, -(-n_bins // block)), np.float32)
    out[np.arange(n_bins), np.arange(n_bins) // block] = 1.0
    return _frozen(out)


@dataclasses.dataclass(frozen=True)
class _BandedFilterbank:
    """A filterbank whose filters each cover a short run of bins, applied band by band.

    The 128 Slaney mels of a 2048-point FFT fill 2 % of their dense ``(1025, 128)``
    matrix. Multiplying groups of ``band_filters`` (16) consecutive filters with only the bins
    they cover does ~8x fewer multiply-adds (0.50 -> 0.18 ms per 4 s window). Small
    filterbanks (257 bins) gain nothing and stay dense.
    """

    n_filters: int
    bands: tuple[tuple[slice, slice, np.ndarray], ...]  # (bins, filters, weights)

    @classmethod
    def of(cls, matrix: np.ndarray, band_filters: int = 16) -> "_BandedFilterbank":
        bands = []
        for start in range(0, matrix.shape[1], band_filters):
            cols = slice(start, min(start + band_filters, matrix.shape[1]))
            used = np.flatnonzero(np.any(matrix[:, cols] != 0, axis=1))
            rows = slice(int(used[0]), int(used[-1]) + 1) if used.size else slice(0, 0)
            bands.append((rows, cols, _frozen(matrix[rows, cols])))
        return cls(matrix.shape[1], tuple(bands))

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """``x @ matrix`` for ``x`` of shape ``(..., n_bins)``; float32."""
        flat = x.reshape(-1, x.shape[-1])
        out = np.zeros((flat.shape[0], self.n_filters), np.float32)
        for rows, cols, weights in self.bands:
            out[:, cols] = flat[:, rows] @ weights
        return out.reshape(*x.shape[:-1], self.n_filters)


@functools.lru_cache(maxsize=8)
def _stats_mel(sr: int) -> _BandedFilterbank:
    return _BandedFilterbank.of(_mel_filterbank_t(sr, STATS_N_FFT, STATS_N_MELS, 0.0, sr / 2))


@functools.lru_cache(maxsize=256)
def _chroma_filterbank_t(sr: int, n_fft: int, tuning: float) -> np.ndarray:
    """librosa's 12-bin chroma filterbank for one tuning, transposed: ``(n_bins, 12)``."""
    import librosa  # build-time only

    return _frozen(librosa.filters.chroma(sr=sr, n_fft=n_fft, tuning=tuning, n_chroma=12).T)


@functools.lru_cache(maxsize=8)
def _fft_freqs(sr: int, n_fft: int) -> np.ndarray:
    return _frozen(np.fft.rfftfreq(n_fft, d=1.0 / sr), np.float64)


# --------------------------------------------------------------------------------------
# shared pieces
# --------------------------------------------------------------------------------------


def _frames(padded: np.ndarray, frame_length: int, hop: int, n_frames: int) -> np.ndarray:
    """Strided read-only view ``(B, n_frames, frame_length)`` of ``padded`` ``(B, N)``."""
    row, item = padded.strides
    return np.lib.stride_tricks.as_strided(
        padded,
        shape=(padded.shape[0], n_frames, frame_length),
        strides=(row, hop * item, item),
        writeable=False,
    )


def _centred_frames(
    windows: np.ndarray, n_fft: int, win_length: int, hop: int, pad_mode: str
) -> np.ndarray:
    """librosa's ``center=True`` frames: ``(B, T)`` -> view ``(B, 1 + T // hop, win_length)``.

    librosa centres a ``win_length`` window in ``n_fft`` zeros; only the ``win_length``
    non-zero samples are framed here, zero-padded at the end by the FFT instead. That is a
    circular shift of librosa's frame, which leaves the magnitude unchanged.
    """
    n_frames = 1 + windows.shape[1] // hop
    padded = np.pad(windows, ((0, 0), (n_fft // 2, n_fft // 2)), mode=pad_mode)
    offset = (n_fft - win_length) // 2  # librosa's pad_center
    return _frames(padded[:, offset:], win_length, hop, n_frames)


def _magnitude_spectrogram(
    windows: np.ndarray, n_fft: int, win_length: int, hop: int, pad_mode: str
) -> np.ndarray:
    """``|STFT|`` with centred frames: ``(B, T)`` -> ``(B, 1 + T // hop, n_fft // 2 + 1)``."""
    return _frames_magnitude(_centred_frames(windows, n_fft, win_length, hop, pad_mode), n_fft)


def _frames_magnitude(framed: np.ndarray, n_fft: int, bins: slice = slice(None)) -> np.ndarray:
    """``|rfft|[..., bins]`` of hann-windowed frames ``(..., win_length)`` zero-padded to
    ``n_fft``."""
    win_length = framed.shape[-1]
    # Window straight into the zero-padded FFT buffer: one copy of the frames, not two.
    make = np.zeros if win_length < n_fft else np.empty
    buffer = make((*framed.shape[:-1], n_fft), np.float32)
    np.multiply(framed, _hann(win_length), out=buffer[..., :win_length])
    return np.abs(scipy.fft.rfft(buffer, axis=-1, overwrite_x=True)[..., bins])


def _to_db(power: np.ndarray) -> np.ndarray:
    out = np.maximum(power, np.float32(AMIN))
    np.log10(out, out=out)
    out *= np.float32(10.0)
    return out


def _cepstrum(bands: np.ndarray, n_out: int) -> np.ndarray:
    """First ``n_out`` DCT-II (orthonormal) coefficients of log band energies ``(..., N)``.

    A flat row (every band equal; digital silence puts every band at the floor) gets its
    exact transform, ``(sqrt(N) * value, 0, ..., 0)``, rather than the product's: a BLAS
    kernel may round equal rows differently by where they sit in the product (OpenBLAS's
    Haswell sgemm does, by an ulp), and silent frames must agree exactly for their deltas
    to be 0 (:func:`_delta`), not rounding noise (~1e-4 beside c0 = -800).
    """
    n_bands = bands.shape[-1]
    out = bands @ _dct_t(n_bands, n_out)
    flat = (bands == bands[..., :1]).all(axis=-1)
    if flat.any():
        out[flat] = 0.0
        out[flat, 0] = bands[flat][:, 0] * np.float32(math.sqrt(n_bands))
    return out


def _with_deltas(coeffs: np.ndarray) -> np.ndarray:
    """``(B, F, C)`` -> ``(B, F, 3C)``: the coefficients, their delta and delta-delta."""
    return np.concatenate([coeffs, _delta(coeffs, 1), _delta(coeffs, 2)], axis=-1)


def _delta(x: np.ndarray, order: int) -> np.ndarray:
    """librosa ``delta(width=9, order=order, mode='interp')`` along axis 1 of ``(B, F, C)``."""
    n_frames = x.shape[1]
    weights = _delta_weights(n_frames, order)
    width = weights.size
    n_inner = n_frames - width + 1
    half = (width - 1) // 2
    # The weights sum to 0, so differences from the centre frame give the same value, and
    # exactly 0 on constant input (float32 weights alone would leave ~1e-8 * value).
    centre = x[:, half : half + n_inner]
    inner = np.zeros((x.shape[0], n_inner, x.shape[2]), dtype=np.float32)
    for k, w in enumerate(weights):  # width taps, not windows
        if k != half:
            inner += w * (x[:, k : k + n_inner] - centre)
    # 'interp' edges evaluate the fit of the first/last full window; with degree == order
    # that derivative is constant, so the edge frames repeat the first/last inner value.
    head = np.repeat(inner[:, :1], half, axis=1)
    tail = np.repeat(inner[:, -1:], n_frames - n_inner - half, axis=1)
    return np.concatenate([head, inner, tail], axis=1)


def _filterbanks_t(cfg: FeatureConfig, kinds) -> dict[str, np.ndarray]:
    """The transposed filterbank of each of ``logmel``/``lfcc`` that ``kinds`` need
    (``mfcc`` reads the mel bands)."""
    sr, fmax = cfg.audio.sample_rate, _check_config(cfg)
    out = {}
    if "logmel" in kinds or "mfcc" in kinds:
        out["mel"] = _mel_filterbank_t(sr, cfg.n_fft, cfg.n_mels, cfg.fmin, fmax)
    if "lfcc" in kinds:
        out["linear"] = _linear_filterbank_t(sr, cfg.n_fft, cfg.n_linear_filters, cfg.fmin,
                                             fmax)
    if "lfcc_narrow" in kinds:
        out["linear_narrow"] = _linear_filterbank_t(sr, cfg.n_fft, cfg.n_linear_filters,
                                                    cfg.narrow_fmin, cfg.narrow_fmax)
    return out


@functools.lru_cache(maxsize=64)
def _bins_read(cfg: FeatureConfig, kinds: tuple[str, ...]) -> slice:
    """The FFT bins the filterbanks of ``kinds`` weigh (a sub-band front end such as the
    shipped 4-8 kHz LFCC reads half of them: the rest need no magnitude or product)."""
    used = np.flatnonzero(np.any([fb.any(axis=1) for fb in _filterbanks_t(cfg, kinds).values()],
                                 axis=0))
    return slice(int(used[0]), int(used[-1]) + 1) if used.size else slice(None)


def _frame_features(power: np.ndarray, cfg: FeatureConfig, kinds,
                    bins: slice = slice(None)) -> dict[str, np.ndarray]:
    """Per-frame ``logmel`` and the ``mfcc``/``lfcc`` coefficients (no deltas yet).

    ``power`` is ``(..., n_frames, n_bins)``: the ``bins`` of the ``n_fft // 2 + 1``;
    outputs are ``(..., n_frames, rows)``. Nothing here looks across frames, so frames
    shared by overlapping windows can go through it once.
    """
    banks = _filterbanks_t(cfg, kinds)
    out: dict[str, np.ndarray] = {}
    if "mel" in banks:
        mel = _to_db(power @ banks["mel"][bins])
        if "logmel" in kinds:
            out["logmel"] = mel
        if "mfcc" in kinds:
            out["mfcc"] = _cepstrum(mel, cfg.n_mfcc)
    if "linear" in banks:
        out["lfcc"] = _cepstrum(_to_db(power @ banks["linear"][bins]), cfg.n_lfcc)
    if "linear_narrow" in banks:
        out["lfcc_narrow"] = _cepstrum(_to_db(power @ banks["linear_narrow"][bins]), cfg.n_lfcc)
    return out


def _framed_features(framed: np.ndarray, cfg: FeatureConfig, kinds) -> dict[str, np.ndarray]:
    """:func:`_frame_features` of frames ``(..., win_length)`` of samples."""
    bins = _bins_read(cfg, tuple(k for k in FEATURE_KINDS if k in kinds))
    power = _frames_magnitude(framed, cfg.n_fft, bins)
    np.square(power, out=power)
    return _frame_features(power, cfg, kinds, bins)


def _window_frame_features(windows: np.ndarray, cfg: FeatureConfig, kinds) -> dict[str, np.ndarray]:
    """:func:`_frame_features` of every frame of every window ``(b, T)`` on its own."""
    framed = _centred_frames(windows, cfg.n_fft, cfg.win_length, cfg.hop_length, "reflect")
    return _framed_features(framed, cfg, kinds)


@dataclasses.dataclass(frozen=True)
class _OverlapPlan:
    """Which STFT frames of windows cut every ``window_hop`` samples from one signal are
    the same frames of that signal.

    Frame ``f`` of window ``k`` reads window samples ``[f*hop - lead, f*hop - lead + win)``.
    When those all lie inside the window (``first <= f <= last``) it is frame
    ``k*step + f`` of the signal, ``step = window_hop // hop``; the frames nearer the edges
    read the window's own reflect padding and stay per window. With 4 s windows at a 2 s
    hop every sample lies in two windows; this computes one frame per 10 ms hop of audio
    instead of two.
    """

    window_hop: int
    step: int
    lead: int
    first: int
    last: int
    n_frames: int

    @classmethod
    def make(cls, cfg: FeatureConfig, n_samples: int, window_hop: int) -> "_OverlapPlan | None":
        hop, win = cfg.hop_length, cfg.win_length
        lead = cfg.n_fft // 2 - (cfg.n_fft - win) // 2
        first = -(-lead // hop)
        last = (n_samples + lead - win) // hop
        step = window_hop // hop
        # Worth it only where consecutive windows share interior frames.
        if window_hop % hop or not 0 < window_hop < n_samples or last - first + 1 <= step:
            return None
        return cls(window_hop, step, lead, first, last, 1 + n_samples // hop)

    def shared_frame_features(self, windows: np.ndarray, cfg: FeatureConfig, kinds
                              ) -> dict[str, np.ndarray]:
        """Same as :func:`_window_frame_features`, each shared frame computed once."""
        n_windows, n_samples = windows.shape
        hop = cfg.hop_length
        tail = windows[1:, n_samples - self.window_hop :]
        signal = np.concatenate([windows[0], tail.reshape(-1)])
        n_interior = self.last - self.first + 1
        n_shared = (n_windows - 1) * self.step + n_interior
        start = self.first * hop - self.lead
        shared = _framed_features(
            _frames(signal[None, start:], cfg.win_length, hop, n_shared)[0], cfg, kinds)

        edges = np.r_[0 : self.first, self.last + 1 : self.n_frames]
        own = _framed_features(self._edge_frames(windows, cfg), cfg, kinds)

        interior = np.arange(n_windows)[:, None] * self.step + np.arange(n_interior)[None, :]
        out = {}
        for kind, values in shared.items():
            joined = np.empty((n_windows, self.n_frames, values.shape[-1]), np.float32)
            joined[:, self.first : self.last + 1] = values[interior]
            joined[:, edges] = own[kind]
            out[kind] = joined
        return out

    def _edge_frames(self, windows: np.ndarray, cfg: FeatureConfig) -> np.ndarray:
        """The frames of :func:`_centred_frames` (reflect) before ``first`` and after
        ``last``, ``(B, n_edge, win_length)``: only the two ends get padded, not whole
        windows (padding every window was ~10 % of featurizing)."""
        half, hop, win = cfg.n_fft // 2, cfg.hop_length, cfg.win_length
        offset = (cfg.n_fft - win) // 2
        n_samples = windows.shape[1]
        # Head: padded[:, :stop] is the reflect pad then windows[:, :stop - half].
        stop = offset + (self.first - 1) * hop + win
        head = np.pad(windows[:, : max(stop - half, half + 1)], ((0, 0), (half, 0)),
                      mode="reflect")
        # Tail: padded from frame last + 1 on; ``start`` in window samples.
        begin = offset + (self.last + 1) * hop - half
        start = min(begin, n_samples - half - 1)
        tail = np.pad(windows[:, start:], ((0, 0), (0, half)), mode="reflect")
        return np.concatenate([
            _frames(head[:, offset:], win, hop, self.first),
            _frames(tail[:, begin - start :], win, hop,
                    self.n_frames - self.last - 1)], axis=1)


def _check_overlap(windows: np.ndarray, window_hop: int) -> None:
    """Refuse windows that are not consecutive cuts of one signal every ``window_hop``."""
    n_samples = windows.shape[1]
    if not 0 < window_hop <= n_samples:
        raise ConfigError(
            f"window_hop must be in [1, {n_samples}] (the window length), got {window_hop}")
    overlap = n_samples - window_hop
    if not np.array_equal(windows[1:, :overlap], windows[:-1, window_hop:]):
        raise ConfigError(
            f"window_hop={window_hop} says each window starts {window_hop} samples after the "
            "previous one in the same signal, but consecutive windows do not overlap that "
            "way; pass window_hop=None for independent windows")


def _spectral_batch(windows: np.ndarray, cfg: FeatureConfig, kinds,
                    window_hop: int | None = None) -> dict[str, np.ndarray]:
    """The spectral kinds chunk by chunk; return ``(B, rows, frames)`` arrays."""
    _check_config(cfg)
    shapes = {  # frames follow the actual T, not cfg.audio (kernels accept any length)
        "logmel": cfg.n_mels,
        "mfcc": cfg.n_mfcc * (3 if cfg.deltas else 1),
        "lfcc": cfg.n_lfcc * (3 if cfg.deltas else 1),
        "lfcc_narrow": cfg.n_lfcc * (3 if cfg.deltas else 1),
    }
    n_frames = 1 + windows.shape[1] // cfg.hop_length
    out = {k: np.empty((windows.shape[0], shapes[k], n_frames), np.float32) for k in kinds}
    plan = None
    if window_hop is not None:
        _check_overlap(windows, window_hop)
        plan = _OverlapPlan.make(cfg, windows.shape[1], window_hop)
    for part in _chunks(windows.shape[0]):
        chunk = windows[part]
        if plan is not None and chunk.shape[0] > 1:
            per_frame = plan.shared_frame_features(chunk, cfg, kinds)
        else:
            per_frame = _window_frame_features(chunk, cfg, kinds)
        for kind, value in per_frame.items():
            if kind != "logmel" and cfg.deltas:  # deltas look across frames: per window
                value = _with_deltas(value)
            out[kind][part] = value.transpose(0, 2, 1)
    return out


# --------------------------------------------------------------------------------------
# DEEP-VOICE summary statistics
# --------------------------------------------------------------------------------------


def _estimate_tuning(power: np.ndarray, sr: int) -> np.ndarray:
    """``librosa.estimate_tuning(S=power, sr=sr, bins_per_octave=12)`` per window.

    ``power`` is ``(B, F, K)``; returns ``(B,)`` tunings (fractions of a semitone, on the
    0.01 grid of :data:`TUNING_EDGES`). Mirrors ``piptrack`` (parabolic peak picking of
    spectral maxima above 10 % of the frame's peak, 150 Hz to 4 kHz) and ``pitch_tuning``
    (histogram of the deviations of the strongest half of the peaks from equal temperament).
    """
    n_batch, n_frames, n_bins = power.shape
    freqs = _fft_freqs(sr, STATS_N_FFT)
    in_band = np.flatnonzero((freqs >= PIP_FMIN) & (freqs < min(PIP_FMAX, sr / 2)))
    if in_band.size == 0:
        return np.zeros(n_batch)
    lo, hi = max(int(in_band[0]), 1), min(int(in_band[-1]) + 1, n_bins - 1)  # bins [lo, hi)
    ref = np.float32(PIP_THRESHOLD) * power.max(axis=-1, keepdims=True)
    band = power[..., lo - 1 : hi + 1]  # one neighbour each side
    # localmax(S * (S > ref)) of librosa; for S >= 0 the gate only needs testing at the
    # centre (a gated neighbour is 0 < centre, and then also below it ungated).
    centre = band[..., 1:-1]
    is_peak = centre > ref
    is_peak &= centre > band[..., :-2]
    is_peak &= centre >= band[..., 2:]

    # Work on the peaks only: flat indices into power, (window, frame, bin) row-major.
    width = hi - lo
    flat = np.flatnonzero(is_peak)
    row = flat // width
    at = flat + row * (n_bins - width) + lo
    values = power.reshape(-1)
    s_lo, s_mid, s_hi = values[at - 1], values[at], values[at + 1]
    # Same precision steps as librosa's numba stencil (float32 sums, float64 quotients).
    curvature = (s_hi + s_lo).astype(np.float64) - 2 * s_mid.astype(np.float64)
    slope = (s_hi - s_lo).astype(np.float64) / 2
    shift = np.zeros_like(curvature)
    np.divide(-slope, curvature, out=shift, where=np.abs(slope) < np.abs(curvature))
    shift = shift.astype(np.float32)
    gradient = (s_hi - s_lo) / np.float32(2)  # np.gradient, central difference
    mags = s_mid + np.float32(0.5) * gradient * shift
    pitches = ((flat - row * width + lo + shift) * float(sr) / STATS_N_FFT).astype(np.float32)
    keep = pitches > 0
    window = row[keep] // n_frames  # non-decreasing: flatnonzero walks windows in order
    mags, pitches = mags[keep], pitches[keep]

    # librosa keeps peaks at least as strong as the median peak of the (whole) window:
    # sort each window's peak magnitudes in a +inf-padded row and take the middle.
    counts = np.bincount(window, minlength=n_batch)
    rows = np.full((n_batch, max(int(counts.max(initial=0)), 1)), np.inf, np.float32)
    starts = np.cumsum(counts) - counts
    rows[window, np.arange(window.size) - starts[window]] = mags
    rows.sort(axis=1)
    batch = np.arange(n_batch)
    lower = rows[batch, np.maximum(counts - 1, 0) // 2]
    upper = rows[batch, np.minimum(counts // 2, rows.shape[1] - 1)]
    median = (lower + upper) / np.float32(2)
    strong = mags >= median[window]
    window, freq = window[strong], pitches[strong]

    # pitch_tuning: deviation from the nearest semitone, histogrammed as np.histogram does.
    residual = np.mod(np.float32(12) * np.log2(freq / np.float32(440.0 / 16)), np.float32(1.0))
    residual[residual >= 0.5] -= np.float32(1.0)
    n_hist = TUNING_EDGES.size - 1
    values = residual.astype(np.float64)
    index = np.minimum(((values + 0.5) * n_hist).astype(np.intp), n_hist - 1)
    # exact edges as np.histogram: [edge_i, edge_i+1), the last bin closed on the right
    index[values < TUNING_EDGES[index]] -= 1
    index[(values >= TUNING_EDGES[index + 1]) & (index < n_hist - 1)] += 1
    hist = np.bincount(window * n_hist + index, minlength=n_batch * n_hist)
    best = hist.reshape(n_batch, n_hist).argmax(axis=1)
    found = np.bincount(window, minlength=n_batch) > 0
    return np.where(found, TUNING_EDGES[best], 0.0)


def _chroma_mean(power: np.ndarray, sr: int) -> np.ndarray:
    """Mean of ``librosa.feature.chroma_stft`` (max-normalised per frame): ``(B,)``."""
    tunings = _estimate_tuning(power, sr)
    unique, inverse = np.unique(tunings, return_inverse=True)
    banks = np.stack([_chroma_filterbank_t(sr, STATS_N_FFT, float(t)) for t in unique])
    raw = np.matmul(power, banks[inverse])  # (B, F, 12), each window with its own tuning
    peak = raw.max(axis=-1, keepdims=True).astype(np.float64)
    peak[peak < np.finfo(np.float32).tiny] = 1.0  # silent frames stay zero
    return (raw / peak).mean(axis=(1, 2))


def _rolloff_bins(magnitude: np.ndarray, fraction: float, block: int = 32) -> np.ndarray:
    """Index of the first bin whose cumulative sum reaches ``fraction`` of the total.

    ``magnitude`` ``(..., K)`` -> ``(...)`` int. Two levels (sums of ``block`` bins, then
    one block's bins), because a full ``cumsum`` over every bin is the slow way.
    """
    n_bins = magnitude.shape[-1]
    running = np.cumsum(magnitude @ _block_indicator(n_bins, block), axis=-1, dtype=np.float64)
    threshold = fraction * running[..., -1:]
    first_block = np.argmax(running >= threshold, axis=-1)[..., None]
    before = np.where(
        first_block > 0, np.take_along_axis(running, np.maximum(first_block - 1, 0), -1), 0.0
    )
    inside = np.minimum(first_block * block + np.arange(block), n_bins - 1)
    within = before + np.cumsum(np.take_along_axis(magnitude, inside, -1), axis=-1)
    # Slots past the last bin count as reached, and so does the block's last bin: the block
    # sum and the in-block sum may round apart, and the block is known to reach the target.
    within[..., -1] = np.inf
    within[inside != first_block * block + np.arange(block)] = np.inf
    offset = np.argmax(within >= threshold, axis=-1)
    return np.minimum(first_block[..., 0] * block + offset, n_bins - 1)


def _centroid_bandwidth(magnitude: np.ndarray, freqs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-window means of librosa's spectral centroid and bandwidth (p=2): ``(B,)`` each.

    ``magnitude`` is ``(B, F, K)``. The moments are float32 matrix products (a float64 copy
    of the spectrogram cost 7x more). The second moment is taken about each window's own
    mean frequency, not about 0 Hz: ``E[f^2] - c^2`` in float32 would cancel away a narrow
    band's small spread; centred, it stays within ~1e-5 of float64.
    """
    tiny = np.finfo(np.float32).tiny
    sums = magnitude @ np.stack([np.ones_like(freqs), freqs], 1).astype(np.float32)
    total, first = sums[..., 0].astype(np.float64), sums[..., 1].astype(np.float64)
    ref = first.sum(axis=1) / np.maximum(total.sum(axis=1), tiny)  # (B,) Hz
    offsets = np.square(freqs[None, :] - ref[:, None]).astype(np.float32)  # (B, K)
    second = np.matmul(magnitude, offsets[:, :, None])[..., 0].astype(np.float64)
    total_safe = np.where(total < tiny, 1.0, total)  # silent frames: 0, as librosa
    centroid = first / total_safe
    # sum S (f - c)^2 = sum S (f - ref)^2 - (c - ref)^2 sum S
    spread = (second - np.square(centroid - ref[:, None]) * total) / total_safe
    return centroid.mean(axis=1), np.sqrt(np.maximum(spread, 0.0)).mean(axis=1)


def _stats_chunk(windows: np.ndarray, sr: int) -> np.ndarray:
    """The 26 DEEP-VOICE features of one chunk ``(b, T)`` -> ``(b, 26)`` float64."""
    n_batch, n_samples = windows.shape
    n_frames = 1 + n_samples // STATS_HOP
    half = STATS_N_FFT // 2
    out = np.empty((n_batch, len(STATS_NAMES)))

    magnitude = _magnitude_spectrogram(windows, STATS_N_FFT, STATS_N_FFT, STATS_HOP, "constant")
    power = np.square(magnitude)
    out[:, 0] = _chroma_mean(power, sr)

    # rms and zcr frames are HOP_BLOCKS whole hops long, so per-frame sums are sums of
    # per-hop block sums: padded samples [j*hop, j*hop + n_fft) are blocks j .. j+3.
    n_blocks = n_frames + HOP_BLOCKS - 1

    def frame_sums(per_sample: np.ndarray) -> np.ndarray:
        blocks = per_sample[:, : n_blocks * STATS_HOP].reshape(n_batch, n_blocks, STATS_HOP)
        blocks = blocks.sum(axis=-1)
        return sum(blocks[:, k : k + n_frames] for k in range(HOP_BLOCKS))

    # rms: zero-padded frames of the raw samples, no window.
    padded = np.pad(windows, ((0, 0), (half, half)))
    energy = frame_sums(np.square(padded))
    out[:, 1] = np.sqrt(energy / np.float32(STATS_N_FFT)).mean(axis=1)

    # zero-crossing rate: edge-padded frames; |x| <= 1e-10 counts as 0 (non-negative).
    # Frame j holds the sample pairs (s, s+1) for s in [j*hop, j*hop + n_fft - 1).
    # (One extra pad sample so the block sums never run short; the pair it adds lies
    # only in the last frame's last slot, which is subtracted below.)
    padded = np.pad(windows, ((0, 0), (half, half + 1)), mode="edge")
    negative = padded < -STATS_ZC_THRESHOLD
    crossing = (negative[:, 1:] != negative[:, :-1]).astype(np.int32)
    pairs = frame_sums(crossing)
    last = np.arange(n_frames) * STATS_HOP + STATS_N_FFT - 1  # pair outside frame j
    out[:, 5] = ((pairs - crossing[:, last]) / STATS_N_FFT).mean(axis=1)

    # centroid and bandwidth from the first moments of the normalised magnitude spectrum.
    freqs = _fft_freqs(sr, STATS_N_FFT)
    out[:, 2], out[:, 3] = _centroid_bandwidth(magnitude, freqs)

    # rolloff: first bin whose cumulative magnitude reaches 85 % of the frame's total.
    out[:, 4] = freqs[_rolloff_bins(magnitude, STATS_ROLL_PERCENT)].mean(axis=1)

    # mfcc: 128 Slaney mels, power_to_db with top_db=80 per window; the DCT is linear, so
    # the mean over frames of the MFCCs is the DCT of the mean over frames of the log-mel.
    mel = _to_db(_stats_mel(sr)(power))
    floor = mel.max(axis=(1, 2), keepdims=True) - np.float32(STATS_TOP_DB)
    mel = np.maximum(mel, floor)
    out[:, 6:] = mel.mean(axis=1, dtype=np.float64) @ _dct_t(STATS_N_MELS, STATS_N_MFCC)
    return out


# --------------------------------------------------------------------------------------
# public API
# --------------------------------------------------------------------------------------


def log_mel(windows: np.ndarray, cfg: FeatureConfig) -> np.ndarray:
    """Log-mel power spectrogram in dB.

    Parameters
    ----------
    windows : ndarray, shape (B, T)
        Mono audio windows at ``cfg.audio.sample_rate``.
    cfg : FeatureConfig
        Uses ``n_fft``, ``win_length``, ``hop_length``, ``n_mels``, ``fmin``, ``fmax``.

    Returns
    -------
    ndarray, shape (B, n_mels, 1 + T // hop_length), float32
    """
    return _spectral_batch(_as_windows(windows), cfg, ("logmel",))["logmel"]


def log_spectrogram(samples: np.ndarray, cfg: FeatureConfig) -> np.ndarray:
    """Log power spectrogram in dB on a linear frequency axis (what an analyst reads: a
    vocoder's missing or smeared high band, a splice): the STFT of :func:`log_mel` without
    the mel filterbank.

    Parameters
    ----------
    samples : ndarray, shape (T,)
        Mono audio at ``cfg.audio.sample_rate`` (at least ``cfg.n_fft // 2 + 1`` samples).
    cfg : FeatureConfig
        Uses ``n_fft``, ``win_length``, ``hop_length``.

    Returns
    -------
    ndarray, shape (n_fft // 2 + 1, 1 + T // hop_length), float32
        Row ``i`` is ``i * sample_rate / n_fft`` Hz.
    """
    x = np.asarray(samples, dtype=np.float32)
    if x.ndim != 1 or x.size <= cfg.n_fft // 2:
        raise ConfigError(f"log_spectrogram needs mono samples, more than n_fft // 2 = "
                          f"{cfg.n_fft // 2} of them; got shape {x.shape}")
    magnitude = _magnitude_spectrogram(x[None, :], cfg.n_fft, cfg.win_length,
                                       cfg.hop_length, "reflect")[0]
    return _to_db(np.square(magnitude)).T


def mfcc(windows: np.ndarray, cfg: FeatureConfig) -> np.ndarray:
    """MFCCs (DCT-II of :func:`log_mel`), with delta and delta-delta rows if ``cfg.deltas``.

    Parameters
    ----------
    windows : ndarray, shape (B, T)
    cfg : FeatureConfig

    Returns
    -------
    ndarray, shape (B, 3 * n_mfcc or n_mfcc, 1 + T // hop_length), float32
        Rows ``[:n_mfcc]`` are the coefficients, then their deltas, then delta-deltas.
    """
    return _spectral_batch(_as_windows(windows), cfg, ("mfcc",))["mfcc"]


def lfcc(windows: np.ndarray, cfg: FeatureConfig) -> np.ndarray:
    """LFCCs (linear triangular filterbank, dB, DCT-II), deltas as :func:`mfcc`.

    Parameters
    ----------
    windows : ndarray, shape (B, T)
    cfg : FeatureConfig
        Uses ``n_linear_filters`` filters over ``[fmin, fmax]`` and keeps ``n_lfcc`` rows.

    Returns
    -------
    ndarray, shape (B, 3 * n_lfcc or n_lfcc, 1 + T // hop_length), float32
    """
    return _spectral_batch(_as_windows(windows), cfg, ("lfcc",))["lfcc"]


#: Whisper's front-end (``whisper/audio.py`` of the reference code): 16 kHz, a 400-sample
#: periodic Hann window and FFT, hop 160, 80 Slaney mel bands, the last STFT frame dropped.
WHISPER_SAMPLE_RATE = 16_000
WHISPER_N_FFT = 400
WHISPER_HOP = 160
WHISPER_N_MELS = 80
#: log10 mel power is floored this far below its maximum, then mapped by (x + 4) / 4.
WHISPER_DYNAMIC_RANGE = 8.0


def whisper_log_mel(windows: np.ndarray) -> np.ndarray:
    """Whisper's normalised log-mel spectrogram, one per window.

    As the reference ``log_mel_spectrogram``: centred reflect-padded STFT frames, power
    ``|X|²`` of all but the last frame, Slaney mel filterbank (librosa's, as Whisper's
    ``mel_filters.npz``), ``log10(max(mel, 1e-10))`` floored at its maximum minus 8 (the
    maximum of each window here; the reference takes it over the clip it is given),
    then ``(x + 4) / 4``.

    Parameters
    ----------
    windows : ndarray, shape (B, T)
        Mono audio at 16 kHz, ``T >= 201``.

    Returns
    -------
    ndarray, shape (B, 80, T // 160), float32
    """
    windows = _as_windows(windows)
    framed = _centred_frames(windows, WHISPER_N_FFT, WHISPER_N_FFT, WHISPER_HOP, "reflect")
    power = _frames_magnitude(framed[:, :-1], WHISPER_N_FFT) ** 2
    mel = power @ _mel_filterbank_t(WHISPER_SAMPLE_RATE, WHISPER_N_FFT, WHISPER_N_MELS, 0.0,
                                    WHISPER_SAMPLE_RATE / 2)
    log_spec = np.log10(np.maximum(mel, np.float32(AMIN)))
    floor = log_spec.max(axis=(1, 2), keepdims=True) - np.float32(WHISPER_DYNAMIC_RANGE)
    log_spec = (np.maximum(log_spec, floor) + np.float32(4.0)) / np.float32(4.0)
    return np.ascontiguousarray(log_spec.transpose(0, 2, 1), dtype=np.float32)


def whisper_states(windows: np.ndarray, cfg: FeatureConfig) -> np.ndarray:
    """Whisper tiny.en's encoder states pooled per window: for each state (the first block's
    input, then each block's output, :meth:`spoofray.whisper.WhisperEncoder.hidden_states`),
    the mean and the standard deviation over the window's frames.

    Parameters
    ----------
    windows : ndarray, shape (B, T)
        Mono audio at 16 kHz (``cfg.audio.sample_rate`` must be 16000).
    cfg : FeatureConfig

    Returns
    -------
    ndarray, shape (B, 5, 768), float32
        ``[..., :384]`` the mean, ``[..., 384:]`` the standard deviation of each state.
    """
    from spoofray.whisper import load_encoder

    if cfg.audio.sample_rate != WHISPER_SAMPLE_RATE:
        raise ConfigError(f"the 'whisper' feature kind needs 16 kHz windows; cfg.audio "
                          f"gives {cfg.audio.sample_rate} Hz")
    windows = _as_windows(windows)
    encoder = load_encoder()
    out = np.empty((windows.shape[0], *WHISPER_STATES_SHAPE), np.float32)
    for start in range(0, windows.shape[0], WHISPER_BATCH):
        part = slice(start, start + WHISPER_BATCH)
        states = encoder.hidden_states(whisper_log_mel(windows[part]))  # (b, S, T, d)
        out[part] = np.concatenate([states.mean(axis=2), states.std(axis=2)], axis=-1)
    return out


#: (states, 2 * width) of Whisper tiny.en: the block input and 4 blocks, 384 wide.
WHISPER_STATES_SHAPE = (5, 768)
#: Windows per encoder call: bounds the attention matrices (8 x 6 x 200² floats at 4 s).
WHISPER_BATCH = 8


def summary_stats(windows: np.ndarray, cfg: FeatureConfig) -> np.ndarray:
    """The 26 DEEP-VOICE summary features of each window, in ``STATS_NAMES`` order.

    Parameters
    ----------
    windows : ndarray, shape (B, T)
    cfg : FeatureConfig
        Only ``cfg.audio.sample_rate`` is used; the rest are DEEP-VOICE's fixed settings.

    Returns
    -------
    ndarray, shape (B, 26), float32
        chroma_stft, rms, spectral_centroid (Hz), spectral_bandwidth (Hz), rolloff (Hz),
        zero_crossing_rate, mfcc1..mfcc20: each the mean over the window's frames.
    """
    windows = _as_windows(windows)
    out = np.empty((windows.shape[0], len(STATS_NAMES)), np.float32)
    for part in _chunks(windows.shape[0]):
        out[part] = _stats_chunk(windows[part], cfg.audio.sample_rate)
    return out


def extract(windows: np.ndarray, cfg: FeatureConfig,
            window_hop: int | None = None) -> dict[str, np.ndarray]:
    """Every kind in ``cfg.kinds`` for a batch of windows, sharing one STFT.

    Parameters
    ----------
    windows : ndarray, shape (B, T)
        ``T`` must equal ``cfg.audio.window_samples`` so that the outputs have the shapes the
        feature dataset declares.
    cfg : FeatureConfig
    window_hop : int, optional
        Set it when window ``k + 1`` starts ``window_hop`` samples after window ``k`` in one
        signal (as :func:`spoofray.audio.frame_windows` cuts a file, ``cfg.audio.hop_samples``).
        The spectral kinds then compute each STFT frame of the overlap once instead of once
        per window (about half the work at 50 % overlap); the results are the same.
        The overlap is checked.

    Returns
    -------
    dict of str to ndarray
        Exactly the keys of ``cfg.kinds``; ``out[kind]`` has shape
        ``(B, *cfg.feature_shapes()[kind])`` and dtype float32.

    Raises
    ------
    ConfigError
        If ``windows`` is not 2-D, has the wrong length or holds NaN/Inf, if the
        spectral settings are inconsistent (odd ``n_fft``, ``n_mfcc > n_mels``, ...), or
        if ``window_hop`` does not describe how the windows overlap.
    """
    windows = _as_windows(windows)
    if windows.shape[1] != cfg.audio.window_samples:
        raise ConfigError(
            f"windows have {windows.shape[1]} samples but cfg.audio gives "
            f"{cfg.audio.window_samples}-sample windows; cut windows with the same AudioConfig"
        )
    out: dict[str, np.ndarray] = {}
    spectral = tuple(k for k in ("logmel", "mfcc", "lfcc", "lfcc_narrow") if k in cfg.kinds)
    if spectral:
        out.update(_spectral_batch(windows, cfg, spectral, window_hop))
    if "stats" in cfg.kinds:
        out["stats"] = summary_stats(windows, cfg)
    if "whisper" in cfg.kinds:
        out["whisper"] = whisper_states(windows, cfg)
    return {kind: out[kind] for kind in cfg.kinds}

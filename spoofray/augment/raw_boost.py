"""RawBoost (Tak et al., ICASSP 2022) in numpy/scipy: the random notch filters
(:class:`NotchFilters`) and its three algorithms, the ``rawboost:<n>`` channel effects."""

from __future__ import annotations

import dataclasses

import numpy as np

from spoofray.augment._common import _as_float
from spoofray.errors import ConfigError


# RawBoost (Tak, Kamble, Patino, Todisco, Evans: "RawBoost: a raw data boosting and
# augmentation method applied to automatic speaker verification anti-spoofing", ICASSP
# 2022), with the parameter ranges published with it (github.com/TakHemlata/RawBoost-
# antispoofing), written here in numpy/scipy and drawing from a given Generator.


@dataclasses.dataclass(frozen=True)
class NotchFilters:
    """RawBoost's random filter: ``n_bands`` FIR band-stop (notch) filters in cascade.

    Each band has a centre uniform in ``[min_hz, max_hz]`` (``max_hz`` capped at ``sr / 2``),
    a width uniform in ``[min_bw_hz, max_bw_hz]`` and ``[min_taps, max_taps)`` taps
    (made odd: linear phase, a whole-sample delay); Hamming-window design.
    """

    n_bands: int = 5
    min_hz: float = 20.0
    max_hz: float = 8000.0
    min_bw_hz: float = 100.0
    max_bw_hz: float = 1000.0
    min_taps: int = 10
    max_taps: int = 100

    def draw(self, sr: int, rng: np.random.Generator, gain_db: tuple[float, float] = (0.0, 0.0)
             ) -> np.ndarray:
        """The taps of one random filter whose peak gain is uniform in ``gain_db`` (dB)."""
        from scipy import signal

        nyq = sr / 2.0
        b = np.ones(1)
        for _ in range(self.n_bands):
            centre = rng.uniform(self.min_hz, min(self.max_hz, nyq))
            width = rng.uniform(self.min_bw_hz, self.max_bw_hz)
            taps = int(rng.uniform(self.min_taps, self.max_taps)) | 1
            low = max(centre - width / 2, 1e-3)
            high = min(centre + width / 2, nyq - 1e-3)
            b = np.convolve(b, signal.firwin(taps, [low, high], window="hamming", fs=sr))
        gain = rng.uniform(min(gain_db), max(gain_db))
        _, h = signal.freqz(b, 1, fs=sr)
        return b * (10.0 ** (gain / 20.0) / np.max(np.abs(h)))


def _fir(x: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Linear-phase FIR filtering (odd ``len(b)``), delay removed: same length, aligned."""
    from scipy import signal

    return signal.fftconvolve(x, b, mode="same")


def _peak_at_most_one(x: np.ndarray) -> np.ndarray:
    peak = float(np.max(np.abs(x))) if len(x) else 0.0
    return (x / peak if peak > 1.0 else x).astype(np.float32)


def rawboost_convolutive(y: np.ndarray, sr: int, rng: np.random.Generator, *,
                         filters: NotchFilters = NotchFilters(), order: int = 5,
                         gain_db: tuple[float, float] = (0.0, 0.0),
                         nonlinear_drop_db: tuple[float, float] = (5.0, 20.0)) -> np.ndarray:
    """RawBoost 1: linear and non-linear convolutive noise. (n,) → (n,).

    ``sum_{k=1..order} f_k(y**k)``, each ``f_k`` a random :class:`NotchFilters` filter: the
    linear term at a peak gain in ``gain_db``, the harmonic terms (k >= 2) that much lower
    by a drop uniform in ``nonlinear_drop_db`` (a stand-in for a microphone, amplifier or
    transmission channel's colouring and distortion). The mean is removed and the result
    scaled down to peak 1 if it exceeds it.
    """
    x = _as_float(y).astype(np.float64)
    out = np.zeros_like(x)
    low_drop, high_drop = nonlinear_drop_db
    for k in range(1, order + 1):
        gain = gain_db if k == 1 else (gain_db[0] - low_drop, gain_db[1] - high_drop)
        out += _fir(x**k, filters.draw(sr, rng, gain))
    return _peak_at_most_one(out - out.mean())


def rawboost_impulsive(y: np.ndarray, rng: np.random.Generator, *, max_percent: float = 10.0,
                       gain: float = 2.0) -> np.ndarray:
    """RawBoost 2: impulsive signal-dependent additive noise. (n,) → (n,).

    A fraction uniform in ``[0, max_percent]`` % of the samples, at random places, each get
    ``gain * y[i] * u * v`` added (u, v uniform in [-1, 1]): clicks and overload that scale
    with the signal. Scaled down to peak 1 if it exceeds it.
    """
    x = _as_float(y).astype(np.float64)
    n_hit = int(len(x) * rng.uniform(0.0, max_percent) / 100.0)
    hit = rng.permutation(len(x))[:n_hit]
    out = x.copy()
    out[hit] += gain * x[hit] * rng.uniform(-1.0, 1.0, n_hit) * rng.uniform(-1.0, 1.0, n_hit)
    return _peak_at_most_one(out)


def rawboost_stationary(y: np.ndarray, sr: int, rng: np.random.Generator, *,
                        filters: NotchFilters = NotchFilters(),
                        snr_db: tuple[float, float] = (10.0, 40.0)) -> np.ndarray:
    """RawBoost 3: stationary signal-independent additive noise. (n,) → (n,).

    White Gaussian noise coloured by a random :class:`NotchFilters` filter, added at an SNR
    uniform in ``snr_db`` (over the whole clip). Scaled down to peak 1 if it exceeds it
    (as RawBoost 1 and 2 are; the published code leaves this one unscaled).
    """
    x = _as_float(y).astype(np.float64)
    noise = _fir(rng.standard_normal(len(x)), filters.draw(sr, rng))
    snr = rng.uniform(*snr_db)
    norm_noise = float(np.linalg.norm(noise))
    if norm_noise > 0:
        noise *= np.linalg.norm(x) / (norm_noise * 10.0 ** (snr / 20.0))
    return _peak_at_most_one(x + noise)


#: RawBoost algorithm number -> what ``rawboost:<n>`` runs.
RAWBOOST = {1: "linear and non-linear convolutive noise (rawboost_convolutive)",
            2: "impulsive signal-dependent additive noise (rawboost_impulsive)",
            3: "stationary signal-independent coloured additive noise (rawboost_stationary)"}


def rawboost(y: np.ndarray, sr: int, algo: int, rng: np.random.Generator) -> np.ndarray:
    """RawBoost algorithm ``algo`` (:data:`RAWBOOST`) with its published defaults. (n,) → (n,).

    Series combinations of the paper (1+2, 1+2+3, ...) are channel chains:
    ``rawboost:1+rawboost:2``.
    """
    if algo == 1:
        return rawboost_convolutive(y, sr, rng)
    if algo == 2:
        return rawboost_impulsive(y, rng)
    if algo == 3:
        return rawboost_stationary(y, sr, rng)
    raise ConfigError(f"RawBoost algorithm must be one of {list(RAWBOOST)}, got {algo!r}")

"""One input file to its windows' features, or to an error record. No Ray here.

This is the unit of work both the extraction and the scoring pipelines map over files:
read bytes (:mod:`spoofray.reader`) → decode/validate/mix-down/resample → fixed windows →
feature kernels. Per-file problems never raise out of :func:`featurize_file`; they come
back as an error result, so one bad file cannot fail a batch.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping
from typing import Any

import numpy as np

from spoofray import audio, features
from spoofray.config import AudioConfig, FeatureConfig
from spoofray.errors import InputFileError, InvalidAudioError
from spoofray.reader import read_item_bytes


@dataclasses.dataclass
class FileFeatures:
    """What one file became.

    Attributes
    ----------
    item : dict
        The listing record (``uri``, ``label``, ``attack``, ``speaker``, ``group``, ``size_bytes``).
    start_s, end_s : ndarray, shape (n_windows,)
    features : dict of kind -> ndarray, shape (n_windows, *shape)
        Empty for an error result.
    """

    item: dict[str, Any]
    status: str  # "ok" | "error"
    duration_s: float | None = None
    sample_rate: int | None = None
    channels: int | None = None
    start_s: np.ndarray | None = None
    end_s: np.ndarray | None = None
    features: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    error_type: str | None = None
    error_message: str | None = None
    seconds: float = 0.0  # wall time spent on this file

    @property
    def n_windows(self) -> int:
        return 0 if self.start_s is None else len(self.start_s)


def _check_finite(uri: str, feats: Mapping[str, np.ndarray], samples: np.ndarray) -> None:
    """Refuse features with NaN/Inf: finite float samples far above full scale (a float WAV
    may hold 1e37) overflow the float32 power spectrum, and Inf features would poison
    every model and statistic downstream."""
    for kind, values in feats.items():
        if not np.isfinite(values).all():
            peak = float(np.max(np.abs(samples))) if samples.size else 0.0
            raise InvalidAudioError(
                f"{uri}: {kind} features are not finite (NaN/Inf): the samples reach "
                f"{peak:.3g}, far beyond full scale (1.0), and overflow the spectrum. "
                "The file is corrupt or was written unscaled: re-export it as normal audio.")


def _shared_hop(cfg: AudioConfig) -> int | None:
    """The hop at which windows share STFT frames, or None when they cannot.

    Repeat padding fills a partial window with its own audio again, which a window before
    it (also partial, only when the hop is under half a window) does not hold.
    """
    if cfg.pad == "repeat" and 2 * cfg.hop_samples < cfg.window_samples:
        return None
    return cfg.hop_samples


def featurize_file(item: Mapping[str, Any], cfg: FeatureConfig,
                   kinds: tuple[str, ...] | None = None) -> FileFeatures:
    """Turn one listed file into windowed features, or an error result.

    Parameters
    ----------
    item : mapping
        A listing record; only ``uri`` is required.
    kinds : tuple of str, optional
        Feature kinds to compute (default: ``cfg.kinds``); scoring asks only for what the
        bundle's members read.
    """
    started = time.perf_counter()
    record = dict(item)
    try:
        data = read_item_bytes(record, cfg)
        decoded = audio.load(data, record["uri"], cfg.audio)
        kept, first = audio.trim_silence(decoded.samples, cfg.audio)
        windows, start_s, end_s = audio.frame_windows(kept, cfg.audio)
        start_s, end_s = start_s + first / cfg.audio.sample_rate, end_s + first / cfg.audio.sample_rate
        wanted = cfg if kinds is None else dataclasses.replace(cfg, kinds=tuple(kinds))
        with np.errstate(over="ignore", invalid="ignore"):  # checked just below
            feats = features.extract(windows, wanted, window_hop=_shared_hop(cfg.audio))
        _check_finite(record["uri"], feats, decoded.samples)
    except InputFileError as exc:
        return FileFeatures(item=record, status="error", error_type=exc.error_type,
                            error_message=str(exc), seconds=time.perf_counter() - started)
    except MemoryError:
        return FileFeatures(item=record, status="error", error_type="MemoryError",
                            error_message=f"{record['uri']}: ran out of memory decoding this file; "
                            "lower AudioConfig.max_duration_s or give workers more memory",
                            seconds=time.perf_counter() - started)
    return FileFeatures(
        item=record, status="ok", duration_s=decoded.duration_s,
        sample_rate=decoded.sample_rate_in, channels=decoded.channels,
        start_s=start_s, end_s=end_s, features=feats, seconds=time.perf_counter() - started,
    )

"""One input file to its windows' features, or to an error record. No Ray here.

This is the unit of work both the extraction and the scoring pipelines map over files:
read bytes (:mod:`spoofray.reader`) → decode/validate/mix-down/resample → fixed windows →
feature kernels. Per-file problems never raise out of :func:`featurize_file`; they come
back as an error result, so one bad file cannot fail a batch.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from spoofray import audio, features
from spoofray.config import CHANNEL_MODES, AudioConfig, FeatureConfig, ordered_kinds
from spoofray.errors import InputFileError, InvalidAudioError, UnsupportedBandError
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
    window_channel : ndarray of int, shape (n_windows,), or None
        Which channel each window comes from when the channels were featurized apart
        (``channels="each"``; a digitally silent channel has no windows); None when the
        file was mixed down to mono.
    band, upper_band_db : str, float
        The band of the audio that was featurized (:func:`spoofray.audio.measure_band`):
        of the mix, or of the first channel featurized apart.
    channel_bands : dict of int -> (band, upper_band_db), or None
        Each channel's band when the channels were featurized apart.
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
    window_channel: np.ndarray | None = None
    band: str | None = None
    upper_band_db: float | None = None
    channel_bands: dict[int, tuple[str, float]] | None = None

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


def splits_channels(mode: str, channels: int) -> bool:
    """Whether a file with ``channels`` channels is featurized per channel under ``mode``."""
    if mode not in CHANNEL_MODES:
        raise ValueError(f"channel mode {mode!r}, expected one of {CHANNEL_MODES}")
    return channels > 1 and (mode == "each" or (mode == "auto" and channels == 2))


def window_features(samples: np.ndarray, cfg: FeatureConfig, kinds: tuple[str, ...] | None = None
                    ) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """Mono samples at ``cfg.audio.sample_rate`` → (features per kind, start_s, end_s):
    silence trimmed (when the config trims), cut into windows, the feature kernels run.
    Features may hold NaN/Inf for unscaled input (:func:`featurize_file` checks)."""
    kept, first = audio.trim_silence(samples, cfg.audio)
    windows, start_s, end_s = audio.frame_windows(kept, cfg.audio)
    shift = first / cfg.audio.sample_rate
    wanted = cfg if kinds is None else dataclasses.replace(cfg, kinds=tuple(kinds))
    with np.errstate(over="ignore", invalid="ignore"):
        feats = features.extract(windows, wanted, window_hop=_shared_hop(cfg.audio))
    return feats, start_s + shift, end_s + shift


def kinds_for_bands(uri: str, bands: Sequence[str],
                    kinds_by_band: Mapping[str, Sequence[str]]) -> tuple[str, ...]:
    """The feature kinds audio of these bands needs (their union, in FEATURE_KINDS order).

    Raises
    ------
    UnsupportedBandError
        A band that ``kinds_by_band`` (the bundle) has no model for.
    """
    missing = sorted(set(bands) - set(kinds_by_band))
    if missing:
        why = (f" (nothing above {audio.NARROW_EDGE_HZ / 1000:.1f} kHz, as in an 8 kHz call)"
               if missing == ["narrow"] else "")
        raise UnsupportedBandError(
            f"{uri}: the audio is {'/'.join(missing)}band{why}, but the bundle judges only "
            f"{'/'.join(sorted(kinds_by_band))}band audio: it has no model that sees this "
            "file's band, so it gives no score. Use a bundle with a member for this band "
            "(spoofray-base 1.2.0 or later has one for telephone audio)")
    return ordered_kinds(k for b in bands for k in kinds_by_band[b])


def featurize_file(item: Mapping[str, Any], cfg: FeatureConfig,
                   kinds: tuple[str, ...] | None = None, *, channels: str = "mix",
                   kinds_by_band: Mapping[str, Sequence[str]] | None = None) -> FileFeatures:
    """Turn one listed file into windowed features, or an error result.

    Parameters
    ----------
    item : mapping
        A listing record; only ``uri`` is required.
    kinds : tuple of str, optional
        Feature kinds to compute (default: ``cfg.kinds``), whatever the file's band.
    channels : {'mix', 'each', 'auto'}
        See :data:`spoofray.config.CHANNEL_MODES`. Per-channel windows follow each other, channel by
        channel, and ``window_channel`` says whose each is.
    kinds_by_band : mapping of band -> kinds, optional
        Scoring: the kinds the bundle's members for each band read. The file gets the kinds
        of its band (of every band among its channels, when they are featurized apart), and
        a band not in the mapping makes it an :class:`UnsupportedBandError` row.
    """
    started = time.perf_counter()
    record = dict(item)
    window_channel = channel_bands = None
    try:
        data = read_item_bytes(record, cfg)
        decoded = audio.load(data, record["uri"], cfg.audio,
                             keep_channels=channels != "mix")
        if decoded.samples.ndim == 2 and splits_channels(channels, decoded.channels):
            heard = [(c, x) for c, x in enumerate(decoded.samples)
                     if float(np.max(np.abs(x))) >= cfg.audio.silence_peak]
            channel_bands = {c: audio.measure_band(x, cfg.audio.sample_rate) for c, x in heard}
            if kinds_by_band is not None:
                kinds = kinds_for_bands(record["uri"], [b for b, _ in channel_bands.values()],
                                        kinds_by_band)
            parts = [(c, window_features(x, cfg, kinds)) for c, x in heard]
            feats = {k: np.concatenate([p[0][k] for _, p in parts]) for k in parts[0][1][0]}
            start_s = np.concatenate([p[1] for _, p in parts])
            end_s = np.concatenate([p[2] for _, p in parts])
            window_channel = np.concatenate([np.full(len(p[1]), c, np.int64) for c, p in parts])
            band, band_db = channel_bands[heard[0][0]]
        else:
            band, band_db = decoded.band, decoded.upper_band_db
            if kinds_by_band is not None:
                kinds = kinds_for_bands(record["uri"], [band], kinds_by_band)
            mono = audio.to_mono(decoded.samples)
            feats, start_s, end_s = window_features(mono, cfg, kinds)
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
        window_channel=window_channel, band=band, upper_band_db=band_db,
        channel_bands=channel_bands,
    )

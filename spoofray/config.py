"""Typed configuration dataclasses shared by every stage.

A config is frozen, serialises to a plain dict (and so to YAML/JSON), and is rebuilt with
``from_dict``, which rejects unknown keys by name. :meth:`FeatureConfig.config_hash` is the
identity that ties a feature dataset to the model bundles trained on it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any, ClassVar, TypeVar

from spoofray.errors import ConfigError

T = TypeVar("T", bound="Config")

#: Every config class by name, so a serialised config can say what it is.
CONFIG_REGISTRY: dict[str, type["Config"]] = {}

FEATURE_KINDS = ("logmel", "mfcc", "lfcc", "stats")
PAD_MODES = ("zeros", "repeat")

#: The DEEP-VOICE summary feature names, in the column order of its public CSV.
STATS_NAMES = (
    "chroma_stft",
    "rms",
    "spectral_centroid",
    "spectral_bandwidth",
    "rolloff",
    "zero_crossing_rate",
    *(f"mfcc{i}" for i in range(1, 21)),
)


def register(cls: type[T]) -> type[T]:
    CONFIG_REGISTRY[cls.__name__] = cls
    return cls


@dataclasses.dataclass(frozen=True)
class Config:
    """Base: dict round-trip with unknown-key checking and nested configs."""

    _nested: ClassVar[dict[str, type["Config"]]] = {}

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            # Settings added after datasets and bundles were made are left out while they
            # keep their default, so the configs (and hashes) of those stay the same.
            if f.metadata.get("omit_default") and value == f.default:
                continue
            if isinstance(value, Config):
                value = value.to_dict()
            elif isinstance(value, tuple):
                value = list(value)
            out[f.name] = value
        return out

    @classmethod
    def from_dict(cls: type[T], data: dict[str, Any] | None) -> T:
        data = dict(data or {})
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ConfigError(
                f"{cls.__name__}: unknown key(s) {unknown}; valid keys are {sorted(names)}"
            )
        kwargs: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            if f.name not in data:
                continue
            value = data[f.name]
            nested = cls._nested.get(f.name)
            if nested is not None and isinstance(value, dict):
                value = nested.from_dict(value)
            elif isinstance(value, list):
                value = tuple(value)
            kwargs[f.name] = value
        return cls(**kwargs)


@register
@dataclasses.dataclass(frozen=True)
class AudioConfig(Config):
    """How a file becomes fixed-length mono windows.

    Windows are ``window_s`` long every ``hop_s``; the last partial window is zero-padded,
    never dropped, so every file with audio gives at least one window.
    """

    sample_rate: int = 16_000
    window_s: float = 4.0
    hop_s: float = 2.0
    #: Files shorter than this (after decoding) are errors: too little speech to judge.
    min_duration_s: float = 0.1
    #: Longer files are errors unless the limit is raised (protects memory on hostile input).
    max_duration_s: float = 4 * 3600.0
    #: Files larger than this are refused before reading.
    max_file_bytes: int = 2 * 1024**3
    #: Peak absolute amplitude below this counts as digital silence (an error).
    silence_peak: float = 1e-6
    #: How the last, partial window is filled: ``zeros`` (digital silence) or ``repeat``
    #: (the window's audio again). With zeros, a clip shorter than a window is mostly
    #: padding, and how much is a shortcut a model can learn (short clip = one class).
    pad: str = dataclasses.field(default="zeros", metadata={"omit_default": True})
    #: Leading and trailing audio more than this many dB below the loudest 20 ms frame is
    #: cut before windowing (None: keep). How much silence a corpus leaves around its
    #: clips says which corpus it is, not whether the speech is real.
    trim_db: float | None = dataclasses.field(default=None, metadata={"omit_default": True})

    def __post_init__(self) -> None:
        if self.sample_rate <= 0:
            raise ConfigError(f"sample_rate must be positive, got {self.sample_rate}")
        if self.window_s <= 0 or self.hop_s <= 0:
            raise ConfigError(
                f"window_s and hop_s must be positive, got {self.window_s}, {self.hop_s}"
            )
        if self.hop_s > self.window_s:
            raise ConfigError(
                f"hop_s ({self.hop_s}) larger than window_s ({self.window_s}) would skip audio"
            )
        if self.pad not in PAD_MODES:
            raise ConfigError(f"pad must be one of {list(PAD_MODES)}, got {self.pad!r}")
        if self.trim_db is not None and not self.trim_db > 0:
            raise ConfigError(f"trim_db must be positive (dB below the peak) or None, got "
                              f"{self.trim_db}")

    @property
    def window_samples(self) -> int:
        return int(round(self.window_s * self.sample_rate))

    @property
    def hop_samples(self) -> int:
        return int(round(self.hop_s * self.sample_rate))


@register
@dataclasses.dataclass(frozen=True)
class FeatureConfig(Config):
    """Which features to compute on each window, and with which settings.

    STFT framing follows librosa (``center=True``, reflect padding), so a window of
    ``N`` samples has ``1 + N // hop_length`` frames.
    """

    _nested: ClassVar[dict[str, type[Config]]] = {"audio": AudioConfig}

    audio: AudioConfig = dataclasses.field(default_factory=AudioConfig)
    kinds: tuple[str, ...] = FEATURE_KINDS
    n_fft: int = 512
    win_length: int = 400  # 25 ms at 16 kHz
    hop_length: int = 160  # 10 ms at 16 kHz
    n_mels: int = 64
    fmin: float = 0.0
    fmax: float | None = None  # None: Nyquist
    n_mfcc: int = 20
    n_lfcc: int = 20
    n_linear_filters: int = 70
    #: Append delta and delta-delta rows to MFCC and LFCC (3x the coefficient rows).
    deltas: bool = True
    #: Store tensors as float16 to halve the dataset size; kernels always compute in float32.
    store_float16: bool = False

    def __post_init__(self) -> None:
        unknown = [k for k in self.kinds if k not in FEATURE_KINDS]
        if unknown or not self.kinds:
            raise ConfigError(
                f"feature kinds {list(self.kinds)} invalid; choose from {list(FEATURE_KINDS)}"
            )
        if self.win_length > self.n_fft:
            raise ConfigError(f"win_length ({self.win_length}) must be <= n_fft ({self.n_fft})")
        # Checked here, in the driver, so a bad config fails before any task starts.
        if not 1 <= self.n_mfcc <= self.n_mels:
            raise ConfigError(f"need 1 <= n_mfcc <= n_mels, got n_mfcc={self.n_mfcc}, "
                              f"n_mels={self.n_mels}")
        if not 1 <= self.n_lfcc <= self.n_linear_filters:
            raise ConfigError(f"need 1 <= n_lfcc <= n_linear_filters, got n_lfcc={self.n_lfcc}, "
                              f"n_linear_filters={self.n_linear_filters}")

    @property
    def n_frames(self) -> int:
        """Frames per window (librosa ``center=True`` framing)."""
        return 1 + self.audio.window_samples // self.hop_length

    def feature_shapes(self) -> dict[str, tuple[int, ...]]:
        """Shape of one window's tensor for each selected kind."""
        rows = 3 if self.deltas else 1
        all_shapes = {
            "logmel": (self.n_mels, self.n_frames),
            "mfcc": (rows * self.n_mfcc, self.n_frames),
            "lfcc": (rows * self.n_lfcc, self.n_frames),
            "stats": (len(STATS_NAMES),),
        }
        return {k: all_shapes[k] for k in self.kinds}

    def config_hash(self) -> str:
        """Stable short hash of every setting that changes feature values."""
        blob = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

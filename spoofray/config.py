"""Typed configuration dataclasses shared by every stage.

A config is frozen, serialises to a plain dict (and so to YAML/JSON), and is rebuilt with
``from_dict``, which rejects unknown keys by name. :meth:`FeatureConfig.config_hash` is the
identity that ties a feature dataset to the model bundles trained on it.

Each setting is declared once, on its dataclass field: its default, its help text
(``metadata={"help": ...}``, which the jobs' ``--help`` shows; see :mod:`spoofray.cli`) and
its allowed values (the class's ``_constraints`` table, in the spirit of scikit-learn's
``_parameter_constraints``: field -> list of :class:`Interval`, :class:`Options`,
:class:`Check`, a type, or ``None``; a value is valid when one entry accepts it).
:meth:`Config.__post_init__` checks the table, then the class's cross-field ``_check``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import numbers
from collections.abc import Callable
from typing import Any, ClassVar, TypeVar

from spoofray.errors import ConfigError

T = TypeVar("T", bound="Config")

#: Feature kinds. ``lfcc_narrow`` is the LFCC of the telephone band only
#: (:data:`TELEPHONE_BAND_HZ`): what a narrowband member reads. ``whisper`` is Whisper
#: tiny.en's encoder states pooled per window (:func:`spoofray.features.whisper_states`).
FEATURE_KINDS = ("logmel", "mfcc", "lfcc", "lfcc_narrow", "stats", "whisper")


def ordered_kinds(kinds) -> tuple[str, ...]:
    """Feature kinds without repeats, in :data:`FEATURE_KINDS` order."""
    wanted = set(kinds)
    return tuple(k for k in FEATURE_KINDS if k in wanted)


#: What extraction computes when not told otherwise.
DEFAULT_FEATURE_KINDS = ("logmel", "mfcc", "lfcc", "stats")
#: The bands a file is routed by (:func:`spoofray.audio.measure_band`): ``wide`` has speech
#: energy above 4 kHz, ``narrow`` (telephone: 8 kHz files, or copies of them at a higher
#: rate) has none, so no model may read evidence from there.
BANDS = ("wide", "narrow")
#: The band a telephone channel passes (ITU-T G.712), where narrowband features live.
TELEPHONE_BAND_HZ = (300.0, 3400.0)
PAD_MODES = ("zeros", "repeat")
#: How scoring treats multi-channel audio: ``mix`` down to mono, score ``each`` channel
#: apart, or ``auto``: each for 2-channel files (a call's two sides), mix otherwise.
CHANNEL_MODES = ("auto", "mix", "each")
SCORING_STAGES = ("auto", "one", "two")

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


# --- constraints ---------------------------------------------------------------------------


class Interval:
    """Numbers of one kind (``int`` or ``float``; ``bool`` is never a number here) between
    optional bounds. ``closed`` says which bounds belong: both, left, right or neither."""

    def __init__(self, kind: type, left: float | None = None, right: float | None = None, *,
                 closed: str = "both") -> None:
        if kind not in (int, float) or closed not in ("both", "left", "right", "neither"):
            raise ValueError(f"Interval({kind!r}, closed={closed!r}) is not a valid constraint")
        self.kind, self.left, self.right, self.closed = kind, left, right, closed

    def accepts(self, value: Any) -> bool:
        wanted = numbers.Integral if self.kind is int else numbers.Real
        if isinstance(value, bool) or not isinstance(value, wanted):
            return False
        if self.left is not None:
            if value < self.left or (value == self.left and self.closed in ("right", "neither")):
                return False
        if self.right is not None:
            if value > self.right or (value == self.right and self.closed in ("left", "neither")):
                return False
        return True

    def __str__(self) -> str:
        noun = "an int" if self.kind is int else "a number"
        left_in, right_in = self.closed in ("both", "left"), self.closed in ("both", "right")
        if self.left is not None and self.right is not None:
            return (f"{noun} in {'[' if left_in else '('}{self.left}, {self.right}"
                    f"{']' if right_in else ')'}")
        if self.left is not None:
            return f"{noun} {'>=' if left_in else '>'} {self.left}"
        if self.right is not None:
            return f"{noun} {'<=' if right_in else '<'} {self.right}"
        return noun


class Options:
    """One of a fixed set of values (argparse ``choices`` of the generated flag)."""

    def __init__(self, values: Any) -> None:
        self.values = tuple(values)

    def accepts(self, value: Any) -> bool:
        try:
            return value in self.values
        except TypeError:  # unhashable or incomparable
            return False

    def __str__(self) -> str:
        return f"one of {list(self.values)}"


class Check:
    """A named predicate, for rules no interval or option list says (formats, patterns)."""

    def __init__(self, accepts: Callable[[Any], bool], description: str) -> None:
        self._accepts, self.description = accepts, description

    def accepts(self, value: Any) -> bool:
        try:
            return bool(self._accepts(value))
        except (TypeError, ValueError, AttributeError):
            return False

    def __str__(self) -> str:
        return self.description


def _accepts(constraint: Any, value: Any) -> bool:
    if constraint is None:
        return value is None
    if isinstance(constraint, type):
        return isinstance(value, constraint) and not (constraint is not bool
                                                      and isinstance(value, bool))
    return constraint.accepts(value)


def _describe(constraint: Any) -> str:
    if constraint is None:
        return "None"
    if isinstance(constraint, type):
        return f"a {constraint.__name__}"
    return str(constraint)


def describe_constraints(allowed: list[Any]) -> str:
    """``[None, Interval(int, 1)]`` -> ``"None or an int >= 1"``."""
    return " or ".join(_describe(c) for c in allowed)


def flag_name(field: dataclasses.Field) -> str:
    """The command-line flag of a config field (``--files-per-task``; see spoofray.cli)."""
    return "--" + field.metadata.get("flag", field.name).replace("_", "-")


# --- base ----------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Config:
    """Base: dict round-trip with unknown-key checking and nested configs; constraint table.

    Subclasses declare ``_constraints`` (field -> allowed values, checked here for every
    instance) and put rules that tie several fields together in ``_check``.
    """

    _nested: ClassVar[dict[str, type["Config"]]] = {}
    _constraints: ClassVar[dict[str, list[Any]]] = {}

    def __post_init__(self) -> None:
        self.check_constraints()
        self._check()

    def _check(self) -> None:
        """Cross-field rules of a subclass (run after the constraint table)."""

    def check_constraints(self) -> None:
        """Refuse the first field whose value no entry of its ``_constraints`` accepts, with
        a message naming the field, the value that came and the values allowed."""
        fields = {f.name: f for f in dataclasses.fields(self)}
        for name, allowed in self._constraints.items():
            value = getattr(self, name)
            if any(_accepts(c, value) for c in allowed):
                continue
            raise ConfigError(
                f"{type(self).__name__}.{name} must be {describe_constraints(allowed)}, got "
                f"{value!r}. Set {name!r} in the config (YAML key) or {flag_name(fields[name])} "
                "on the command line to an allowed value.")

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
            moved = {k: n for k in unknown for n, sub in cls._nested.items()
                     if k in {f.name for f in dataclasses.fields(sub)}}
            hint = "".join(f"; {k!r} belongs under {n!r} ({n}: {{{k}: ...}})"
                           for k, n in moved.items())
            raise ConfigError(
                f"{cls.__name__}: unknown key(s) {unknown}; valid keys are {sorted(names)}{hint}"
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


def setting(default: Any = dataclasses.MISSING, help: str = "", *,  # noqa: A002
            default_factory: Any = dataclasses.MISSING, **metadata: Any) -> Any:
    """A config field with its help text (and other metadata: ``flag``, ``path``, ``cli``,
    ``default_help``, ``omit_default``; see :mod:`spoofray.cli`)."""
    return dataclasses.field(default=default, default_factory=default_factory,
                             metadata={"help": help, **metadata})


@dataclasses.dataclass(frozen=True)
class AudioConfig(Config):
    """How a file becomes fixed-length mono windows.

    Windows are ``window_s`` long every ``hop_s``; the last partial window is zero-padded,
    never dropped, so every file with audio gives at least one window.
    """

    _constraints = {
        "sample_rate": [Interval(int, 1)],
        "window_s": [Interval(float, 0, closed="neither")],
        "hop_s": [Interval(float, 0, closed="neither")],
        "min_duration_s": [Interval(float, 0)],
        "max_duration_s": [Interval(float, 0, closed="neither")],
        "max_file_bytes": [Interval(int, 1)],
        "silence_peak": [Interval(float, 0)],
        "pad": [Options(PAD_MODES)],
        "trim_db": [None, Interval(float, 0, closed="neither")],
    }

    sample_rate: int = setting(16_000, "sample rate audio is resampled to (Hz)")
    window_s: float = setting(4.0, "window length in seconds")
    hop_s: float = setting(2.0, "hop between windows in seconds")
    min_duration_s: float = setting(
        0.1, "shorter files (after decoding) are error rows: too little speech to judge")
    max_duration_s: float = setting(
        4 * 3600.0, "longer files are error rows (protects memory on hostile input)")
    max_file_bytes: int = setting(2 * 1024**3, "larger files are refused before reading")
    silence_peak: float = setting(
        1e-6, "peak absolute amplitude below this counts as digital silence (an error)")
    #: With zeros, a clip shorter than a window is mostly padding, and how much is a
    #: shortcut a model can learn (short clip = one class).
    pad: str = setting("zeros", "fill of the last partial window: zeros (digital silence) or "
                       "repeat (the window's audio again)", omit_default=True)
    #: How much silence a corpus leaves around its clips says which corpus it is, not
    #: whether the speech is real.
    trim_db: float | None = setting(
        None, "cut leading/trailing audio this many dB below the loudest 20 ms frame",
        default_help="keep", omit_default=True)

    def _check(self) -> None:
        if self.hop_s > self.window_s:
            raise ConfigError(
                f"hop_s ({self.hop_s}) larger than window_s ({self.window_s}) would skip audio"
            )

    @property
    def window_samples(self) -> int:
        return int(round(self.window_s * self.sample_rate))

    @property
    def hop_samples(self) -> int:
        return int(round(self.hop_s * self.sample_rate))


@dataclasses.dataclass(frozen=True)
class FeatureConfig(Config):
    """Which features to compute on each window, and with which settings.

    STFT framing follows librosa (``center=True``, reflect padding), so a window of
    ``N`` samples has ``1 + N // hop_length`` frames.
    """

    _nested: ClassVar[dict[str, type[Config]]] = {"audio": AudioConfig}
    _constraints = {
        "n_fft": [Interval(int, 1)],
        "win_length": [Interval(int, 1)],
        "hop_length": [Interval(int, 1)],
        "n_mels": [Interval(int, 1)],
        "fmin": [Interval(float, 0)],
        "fmax": [None, Interval(float, 0, closed="neither")],
        "n_mfcc": [Interval(int, 1)],
        "n_lfcc": [Interval(int, 1)],
        "n_linear_filters": [Interval(int, 1)],
        "deltas": [bool],
        "store_float16": [bool],
        "narrow_fmin": [Interval(float, 0)],
        "narrow_fmax": [Interval(float, 0, 4000.0, closed="right")],
    }

    audio: AudioConfig = dataclasses.field(default_factory=AudioConfig)
    kinds: tuple[str, ...] = setting(DEFAULT_FEATURE_KINDS, "feature kinds",
                                     flag="features")
    n_fft: int = setting(512, "STFT size")
    win_length: int = setting(400, "STFT window in samples (25 ms at 16 kHz)")
    hop_length: int = setting(160, "STFT hop in samples (10 ms at 16 kHz)")
    n_mels: int = setting(64, "mel bands of the log-mel spectrogram")
    fmin: float = setting(0.0, "lowest frequency of the mel filterbank (Hz)")
    fmax: float | None = setting(None, "highest frequency of the mel filterbank (Hz)",
                                 default_help="Nyquist")
    n_mfcc: int = setting(20, "MFCC coefficients")
    n_lfcc: int = setting(20, "LFCC coefficients")
    n_linear_filters: int = setting(70, "linear filters of the LFCC filterbank")
    deltas: bool = setting(True, "append delta and delta-delta rows to MFCC and LFCC (3x the "
                           "coefficient rows)")
    #: Kernels always compute in float32.
    store_float16: bool = setting(False, "store tensors as float16 (half size)",
                                  flag="float16")
    narrow_fmin: float = setting(TELEPHONE_BAND_HZ[0], "lowest frequency of the lfcc_narrow "
                                 "filterbank (Hz)", omit_default=True)
    narrow_fmax: float = setting(TELEPHONE_BAND_HZ[1], "highest frequency of the lfcc_narrow "
                                 "filterbank (Hz; at most 4 kHz, the top of an 8 kHz file)",
                                 omit_default=True)

    def _check(self) -> None:
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
        if not self.narrow_fmin < self.narrow_fmax:
            raise ConfigError(f"need narrow_fmin < narrow_fmax, got {self.narrow_fmin}, "
                              f"{self.narrow_fmax}")

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
            "lfcc_narrow": (rows * self.n_lfcc, self.n_frames),
            "stats": (len(STATS_NAMES),),
            "whisper": (5, 768),  # features.WHISPER_STATES_SHAPE (Whisper tiny.en)
        }
        return {k: all_shapes[k] for k in self.kinds}

    def config_hash(self) -> str:
        """Stable short hash of every setting that changes feature values."""
        blob = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


@dataclasses.dataclass(frozen=True)
class ScoreSettings(Config):
    """How a scoring run uses the cluster and decides: the part of
    :class:`spoofray.pipeline.score.ScoreConfig` that a nightly audit
    (:class:`spoofray.audit.run.AuditConfig`, field ``scoring``) hands on unchanged."""

    _constraints = {
        "threshold": [None, Interval(float, 0, 1)],
        "files_per_task": [None, Interval(int, 1)],
        "stages": [Options(SCORING_STAGES)],
        "featurize_concurrency": [None, Interval(int, 1)],
        "featurize_memory_mb": [Interval(int, 1)],
        "batch_size": [Interval(int, 1)],
        "concurrency": [Interval(int, 1)],
        "num_gpus": [Interval(float, 0)],
        "num_cpus_per_actor": [Interval(float, 0)],
        "plots": [bool],
        "channels": [Options(CHANNEL_MODES)],
        "segment_threshold": [None, Interval(float, 0, 1)],
        "segment_k": [None, Interval(int, 1)],
        "part_every_s": [Interval(float, 0)],
    }

    threshold: float | None = setting(None, "decision threshold overriding the bundle's",
                                      default_help="the bundle's")
    files_per_task: int | None = setting(
        None, "files per featurize task", default_help="512 when scoring in one stage, 4 in "
        "two (its windows then travel to the scoring actors, and a long recording has many)")
    stages: str = setting("auto", "one (featurize and score in the same task), two "
                          "(featurize tasks hand windows to scoring actors) or auto (one "
                          "when every member is a scikit-learn model and no GPU is asked "
                          "for)")
    featurize_concurrency: int | None = setting(None, "most featurize tasks at once",
                                                default_help="as many as CPUs allow")
    #: A long recording is decoded whole.
    featurize_memory_mb: int = setting(1024, "memory reserved per featurize task (MiB)")
    #: Their windows are scored together, in one model call.
    batch_size: int = setting(16, "files scored in one model call (one stage: "
                                      "also at most 1024 windows)")
    concurrency: int = setting(1, "scoring actors (two stages; a fixed pool size)")
    num_gpus: float = setting(0.0, "GPUs per scoring actor (more than 0: two stages)")
    num_cpus_per_actor: float = setting(1.0, "CPUs per scoring actor (two stages; less "
                                        "when the actors would hold every CPU of the "
                                        "cluster, leaving none to featurize)")
    plots: bool = setting(True, "write the report's PNG plots")
    channels: str = setting("auto", "multi-channel files: mix (down to mono, one row), each "
                            "(one row per channel plus the file's roll-up row) or auto (each "
                            "for 2-channel files, mix otherwise)")
    segment_threshold: float | None = setting(
        None, "window score at which a window is suspicious (segments table, segment rule)",
        default_help="the bundle's segment_rule, else the file threshold")
    segment_k: int | None = setting(
        None, "consecutive suspicious windows that flag a file (the segment rule)",
        default_help="the bundle's segment_rule, else 3")
    #: Each part is one atomic write; a run resumed with --resume keeps every finished part.
    part_every_s: float = setting(
        30.0, "write the report rows gathered so far as a part at least this often "
        "(seconds; 0: after every scored block): a killed run resumed with --resume scores "
        "again at most what came back since its last part")

    def _check(self) -> None:
        if self.stages == "one" and self.num_gpus:
            raise ConfigError(
                f"--stages one scores in the CPU tasks that featurize, so --num-gpus "
                f"{self.num_gpus} would go unused; use --stages two (or auto) for GPUs")

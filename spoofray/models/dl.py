"""Deep ensemble members: configs, builders, saving with a sidecar, safe loading.

Importing this module does not import TensorFlow or Keras; the functions that need them
import them (and :mod:`spoofray.models.dl_layers`, which registers the custom layers).

Member contract (what the scorer and the bundle rely on)
--------------------------------------------------------
* One ``<name>.keras`` file per member. Its model takes raw feature tensors of shape
  ``(batch, *feature_cfg.feature_shapes()[input_kind])`` float32 and returns
  ``(batch, 1)`` P(spoof). All normalisation is inside the model; no Lambda layers, so
  :func:`load_member` loads it with ``safe_mode=True``.
* A sidecar ``<name>.json`` next to it::

    {"name", "kind": "keras", "file": "<name>.keras", "input": "<kind>",
     "architecture", "member_config", "feature_config", "feature_config_hash",
     "dev_metrics", "training_data_fingerprint"}
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, ClassVar

import numpy as np

from spoofray.config import Config, FeatureConfig, Interval, Options
from spoofray.errors import ConfigError

NORMALIZATIONS = ("global", "instance", "none")


@dataclasses.dataclass(frozen=True)
class MemberConfig(Config):
    """Common fields of every member. ``input_kind`` is a feature kind of the dataset."""

    architecture: ClassVar[str] = ""
    _constraints = {"normalization": [Options(NORMALIZATIONS)],
                    "dropout": [Interval(float, 0.0, 1.0, closed="left")]}

    input_kind: str = "logmel"
    #: "global": per-row mean/variance of the training set (a Normalization layer);
    #: "instance": per-example per-row standardisation over time; "none".
    normalization: str = "global"
    dropout: float = 0.3
    #: This member's AdamW learning rate; None: the trainer's ``learning_rate``.
    learning_rate: float | None = None

    def input_shape(self, feature_cfg: FeatureConfig) -> tuple[int, ...]:
        """Shape of one input window, read from the feature config."""
        shapes = feature_cfg.feature_shapes()
        if self.input_kind not in shapes:
            raise ConfigError(
                f"member {self.architecture!r} reads feature kind {self.input_kind!r}, but the "
                f"dataset has only {sorted(shapes)}; extract it or set input_kind"
            )
        shape = shapes[self.input_kind]
        if len(shape) != 2 and self.architecture != "mlp":
            raise ConfigError(
                f"member {self.architecture!r} needs a (rows, frames) feature, not "
                f"{self.input_kind!r} of shape {shape}"
            )
        return shape


@dataclasses.dataclass(frozen=True)
class CNNConfig(MemberConfig):
    """2D CNN on log-mel: conv-BN-ReLU-pool blocks, global average pooling, dense head."""

    architecture: ClassVar[str] = "cnn"
    input_kind: str = "logmel"
    filters: tuple[int, ...] = (16, 32, 64, 64)
    kernel_size: int = 3
    dense: int = 64


@dataclasses.dataclass(frozen=True)
class LCNNConfig(MemberConfig):
    """LCNN with max-feature-map on LFCC (the ASVspoof baseline family).

    ``width`` scales every channel count (1.0 = the baseline's 32/48/64 MFM outputs).
    """

    architecture: ClassVar[str] = "lcnn"
    input_kind: str = "lfcc"
    width: float = 1.0
    dropout: float = 0.5


@dataclasses.dataclass(frozen=True)
class TDNNConfig(MemberConfig):
    """TDNN: dilated Conv1D over MFCC frames, statistics pooling."""

    architecture: ClassVar[str] = "tdnn"
    input_kind: str = "mfcc"
    channels: tuple[int, ...] = (128, 128, 128, 256)
    kernel_sizes: tuple[int, ...] = (5, 3, 3, 1)
    dilations: tuple[int, ...] = (1, 2, 3, 1)
    dense: int = 64

    def __post_init__(self) -> None:
        super().__post_init__()
        if not len(self.channels) == len(self.kernel_sizes) == len(self.dilations):
            raise ConfigError("TDNNConfig: channels, kernel_sizes and dilations need equal lengths")


@dataclasses.dataclass(frozen=True)
class RNNConfig(MemberConfig):
    """(Bidirectional) GRU or LSTM over MFCC frames."""

    architecture: ClassVar[str] = "rnn"
    input_kind: str = "mfcc"
    cell: str = "gru"
    units: int = 64
    layers: int = 1
    bidirectional: bool = True
    #: "last": the final state(s); "mean": average of the outputs over frames.
    pooling: str = "mean"
    dense: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.cell not in ("gru", "lstm") or self.pooling not in ("last", "mean"):
            raise ConfigError(
                f"RNNConfig: cell must be 'gru'/'lstm' and pooling 'last'/'mean', got "
                f"{self.cell!r}, {self.pooling!r}"
            )


@dataclasses.dataclass(frozen=True)
class MLPConfig(MemberConfig):
    """MLP on MFCC pooled over time (mean and standard deviation per coefficient)."""

    architecture: ClassVar[str] = "mlp"
    input_kind: str = "mfcc"
    hidden: tuple[int, ...] = (128, 64)


@dataclasses.dataclass(frozen=True)
class ConformerConfig(MemberConfig):
    """A small Conformer encoder on log-mel (conv subsampling, sinusoidal positions)."""

    architecture: ClassVar[str] = "conformer"
    input_kind: str = "logmel"
    dim: int = 64
    heads: int = 4
    ff_mult: int = 4
    conv_kernel: int = 15
    blocks: int = 2
    subsample_steps: int = 2
    dropout: float = 0.1


@dataclasses.dataclass(frozen=True)
class ImageBackboneConfig(MemberConfig):
    """A keras.applications backbone on log-mel, built with ``weights=None``.

    ``weights_path`` is a local weights file to fine-tune from (the transfer-learning
    path; nothing is downloaded); compatible layers load, the rest are skipped.
    """

    input_kind: str = "logmel"
    weights_path: str | None = None
    freeze_backbone: bool = False
    #: Feature maps smaller than this on either axis are resized up (the backbones
    #: downsample 32x).
    min_image_size: int = 32
    dense: int = 0


@dataclasses.dataclass(frozen=True)
class EfficientNetB0Config(ImageBackboneConfig):
    architecture: ClassVar[str] = "efficientnet_b0"


@dataclasses.dataclass(frozen=True)
class VGG16Config(ImageBackboneConfig):
    architecture: ClassVar[str] = "vgg16"


#: Member configs by architecture name (the names ``--members`` accepts).
MEMBER_CONFIGS: dict[str, type[MemberConfig]] = {
    c.architecture: c
    for c in (CNNConfig, LCNNConfig, TDNNConfig, RNNConfig, MLPConfig, ConformerConfig,
              EfficientNetB0Config, VGG16Config)
}


def member_config(architecture: str, params: Mapping[str, Any] | None = None) -> MemberConfig:
    """The config of ``architecture`` with ``params`` overriding its defaults."""
    if architecture not in MEMBER_CONFIGS:
        raise ConfigError(
            f"unknown member architecture {architecture!r}; choose from {sorted(MEMBER_CONFIGS)}"
        )
    return MEMBER_CONFIGS[architecture].from_dict(dict(params or {}))


def feature_norm_stats(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-row mean and variance of a batch of feature windows.

    Parameters
    ----------
    x : ndarray, shape (n, rows, frames) or (n, dims)

    Returns
    -------
    mean, var : ndarray, shape (rows,) each
    """
    x = np.asarray(x, np.float64)
    axes = (0, 2) if x.ndim == 3 else (0,)
    return x.mean(axis=axes).astype(np.float32), x.var(axis=axes).astype(np.float32)


def build_member(cfg: MemberConfig, feature_cfg: FeatureConfig,
                 norm_stats: tuple[np.ndarray, np.ndarray] | None = None):
    """Build the Keras model of one member.

    Parameters
    ----------
    cfg : MemberConfig
    feature_cfg : FeatureConfig
        Gives the input shape ``feature_cfg.feature_shapes()[cfg.input_kind]``.
    norm_stats : (mean, var), each shape (rows,), optional
        Required when ``cfg.normalization == "global"``.

    Returns
    -------
    keras.Model
        (batch, *input_shape) float32 → (batch, 1) P(spoof).
    """
    from spoofray.models import dl_arch

    shape = cfg.input_shape(feature_cfg)
    try:
        return dl_arch.BUILDERS[cfg.architecture](cfg, shape, norm_stats)
    except ValueError as exc:
        raise ConfigError(f"cannot build member {cfg.architecture!r} on input {shape}: {exc}") from exc


def load_member(path: str):
    """Load a saved member with ``safe_mode=True`` (custom layers registered first)."""
    import keras

    from spoofray.models import dl_layers  # noqa: F401  (registers the custom layers)

    if not os.path.isfile(path):
        raise FileNotFoundError(f"member file {path!r} not found")
    return keras.saving.load_model(path, safe_mode=True, compile=False)


#: Windows per model call: a long file is scored in chunks to bound memory.
PREDICT_CHUNK = 256


@dataclasses.dataclass(frozen=True)
class KerasMember:
    """A saved Keras model as a bundle member (:class:`spoofray.models.bundle.WindowMember`):
    window tensors of one feature kind in, P(spoof) per window out.

    Attributes
    ----------
    model : keras.Model
        Takes ``(batch, *feature_shape)`` float32, returns ``(batch, 1)`` P(spoof).
    kind : str
        The feature kind it reads.
    """

    model: Any = dataclasses.field(repr=False, compare=False)
    kind: str

    @classmethod
    def load(cls, path: str, inputs: Sequence[str]) -> KerasMember:
        (kind,) = inputs
        return cls(model=load_member(path), kind=kind)

    def predict_proba(self, windows: Mapping[str, np.ndarray]) -> np.ndarray:
        """P(spoof) per window, float64 of shape (n,) (computed in float32)."""
        x = np.asarray(windows[self.kind], dtype=np.float32)
        out = []
        for i in range(0, len(x), PREDICT_CHUNK):
            y = self.model(x[i:i + PREDICT_CHUNK], training=False)
            out.append(np.asarray(y.numpy() if hasattr(y, "numpy") else y).reshape(-1))
        return np.concatenate(out).astype(np.float64) if out else np.zeros(0, np.float64)

    def input_problem(self, shapes: Mapping[str, tuple[int, ...]]) -> str | None:
        """Why windows of these shapes (kind -> one window's shape) do not fit, or None."""
        want = tuple(getattr(self.model, "input_shape", (None,))[1:])
        got = tuple(shapes[self.kind])
        if len(want) != len(got) or any(w not in (None, g) for w, g in zip(want, got)):
            return (f"the Keras model takes input {want}, but windows of feature "
                    f"{self.kind!r} have shape {got}")
        return None


def training_data_fingerprint(uris: Iterable[str], labels: Iterable[str]) -> str:
    """sha256 of the sorted distinct ``(uri, label)`` pairs the member was trained on."""
    pairs = sorted(set(zip(map(str, uris), map(str, labels))))
    blob = "".join(f"{u}\t{lab}\n" for u, lab in pairs)
    return hashlib.sha256(blob.encode()).hexdigest()


def sidecar_dict(name: str, cfg: MemberConfig, feature_cfg: FeatureConfig, *,
                 dev_metrics: Mapping[str, Any] | None = None,
                 training_data_fingerprint: str | None = None) -> dict[str, Any]:
    """The ``<name>.json`` sidecar content of a member."""
    return {
        "name": name,
        "kind": "keras",
        "file": f"{name}.keras",
        "input": cfg.input_kind,
        "input_shape": list(cfg.input_shape(feature_cfg)),
        "architecture": cfg.architecture,
        "member_config": cfg.to_dict(),
        "feature_config": feature_cfg.to_dict(),
        "feature_config_hash": feature_cfg.config_hash(),
        "dev_metrics": dict(dev_metrics or {}),
        "training_data_fingerprint": training_data_fingerprint,
    }


def save_member(model, directory: str, sidecar: Mapping[str, Any]) -> tuple[str, str]:
    """Write ``<directory>/<name>.keras`` and its sidecar ``<name>.json`` (local directory).

    Returns
    -------
    keras_path, json_path : str
    """
    os.makedirs(directory, exist_ok=True)
    name = sidecar["name"]
    keras_path = os.path.join(directory, f"{name}.keras")
    json_path = os.path.join(directory, f"{name}.json")
    model.save(keras_path)
    write_sidecar(json_path, sidecar)
    return keras_path, json_path


def write_sidecar(path: str, sidecar: Mapping[str, Any]) -> None:
    with open(path, "w") as fh:
        json.dump(dict(sidecar), fh, indent=2, sort_keys=True, default=_json_default)


def read_sidecar(keras_path: str) -> dict[str, Any]:
    """The sidecar of ``<name>.keras`` (the ``<name>.json`` next to it)."""
    json_path = os.path.splitext(keras_path)[0] + ".json"
    with open(json_path) as fh:
        return json.load(fh)


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")

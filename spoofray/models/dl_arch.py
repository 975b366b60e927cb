"""Keras 3 builders of the deep ensemble members. Imports Keras: use through
:func:`spoofray.models.dl.build_member`, which imports this module lazily.

Every builder takes its member config, the feature shape of one window (rows, frames)
read from the :class:`~spoofray.config.FeatureConfig`, and optional per-row
normalisation statistics, and returns a model from raw features (batch, rows, frames)
float32 to P(spoof) (batch, 1). All normalisation happens inside the model.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np

from spoofray.models import dl_layers

L = keras.layers


def _normalized_input(shape: tuple[int, ...], norm: str, stats: tuple[np.ndarray, np.ndarray] | None):
    """Input layer plus the member's normalisation. Returns (input, tensor (batch, *shape))."""
    inp = keras.Input(shape=shape, dtype="float32", name="features")
    x = inp
    if norm == "global":
        if stats is None:
            raise ValueError(
                "normalization='global' needs per-row (mean, variance) of the training features; "
                "pass norm_stats (see spoofray.models.dl.feature_norm_stats)"
            )
        mean, var = (np.asarray(s, np.float32).reshape(shape[0]) for s in stats)
        # Stats are per feature row (mel band / coefficient), broadcast over frames.
        x = L.Normalization(axis=1, mean=mean, variance=np.maximum(var, 1e-8), name="global_norm")(x)
    elif norm == "instance":
        x = dl_layers.InstanceStandardize(name="instance_norm")(x)
    elif norm != "none":
        raise ValueError(f"normalization must be 'global', 'instance' or 'none', got {norm!r}")
    return inp, x


def _head(x, dropout: float, dense: int = 0):
    if dense:
        x = L.Dense(dense, activation="relu", name="head_dense")(x)
    if dropout:
        x = L.Dropout(dropout, name="head_dropout")(x)
    return L.Dense(1, activation="sigmoid", dtype="float32", name="p_spoof")(x)


def cnn(cfg: Any, shape, stats) -> keras.Model:
    inp, x = _normalized_input(shape, cfg.normalization, stats)
    x = L.Reshape((*shape, 1))(x)
    for i, filters in enumerate(cfg.filters):
        x = L.Conv2D(filters, cfg.kernel_size, padding="same", use_bias=False, name=f"conv{i}")(x)
        x = L.BatchNormalization(name=f"bn{i}")(x)
        x = L.Activation("relu")(x)
        x = L.MaxPooling2D(2, padding="same")(x)
    x = L.GlobalAveragePooling2D()(x)
    return keras.Model(inp, _head(x, cfg.dropout, cfg.dense), name="cnn")


def lcnn(cfg: Any, shape, stats) -> keras.Model:
    """LCNN of the ASVspoof 2019/2021 baselines (Lavrentyeva et al. 2019), width-scaled."""
    inp, x = _normalized_input(shape, cfg.normalization, stats)
    x = L.Reshape((*shape, 1))(x)

    def c(n):
        return max(2, int(round(n * cfg.width)))

    def mfm_conv(h, filters, k, name, bn=True):
        h = L.Conv2D(2 * filters, k, padding="same", name=name)(h)
        h = dl_layers.MaxFeatureMap(name=f"{name}_mfm")(h)
        return L.BatchNormalization(name=f"{name}_bn")(h) if bn else h

    x = mfm_conv(x, c(32), 5, "conv1", bn=False)
    x = L.MaxPooling2D(2, padding="same")(x)
    x = mfm_conv(x, c(32), 1, "conv2a")
    x = mfm_conv(x, c(48), 3, "conv2b", bn=False)
    x = L.MaxPooling2D(2, padding="same")(x)
    x = L.BatchNormalization(name="pool2_bn")(x)
    x = mfm_conv(x, c(48), 1, "conv3a")
    x = mfm_conv(x, c(64), 3, "conv3b", bn=False)
    x = L.MaxPooling2D(2, padding="same")(x)
    x = mfm_conv(x, c(64), 1, "conv4a")
    x = mfm_conv(x, c(32), 3, "conv4b")
    x = mfm_conv(x, c(32), 1, "conv5a")
    x = mfm_conv(x, c(32), 3, "conv5b", bn=False)
    x = L.MaxPooling2D(2, padding="same")(x)
    # Global pooling instead of the baseline's flatten keeps the head independent of the
    # window length, which the FeatureConfig chooses.
    x = L.GlobalMaxPooling2D()(x)
    x = L.Dropout(cfg.dropout)(x)
    x = L.Dense(2 * c(80), name="fc1")(x)
    x = dl_layers.MaxFeatureMap(name="fc1_mfm")(x)
    x = L.BatchNormalization(name="fc1_bn")(x)
    return keras.Model(inp, _head(x, 0.0), name="lcnn")


def tdnn(cfg: Any, shape, stats) -> keras.Model:
    """x-vector style TDNN: dilated Conv1D over frames, statistics pooling, dense head."""
    inp, x = _normalized_input(shape, cfg.normalization, stats)
    x = L.Permute((2, 1))(x)  # (frames, coefficients)
    for i, (ch, k, d) in enumerate(zip(cfg.channels, cfg.kernel_sizes, cfg.dilations)):
        x = L.Conv1D(ch, k, dilation_rate=d, padding="same", name=f"tdnn{i}")(x)
        x = L.Activation("relu")(x)
        x = L.BatchNormalization(name=f"tdnn{i}_bn")(x)
    x = dl_layers.StatsPooling(name="stats_pool")(x)
    return keras.Model(inp, _head(x, cfg.dropout, cfg.dense), name="tdnn")


def rnn(cfg: Any, shape, stats) -> keras.Model:
    inp, x = _normalized_input(shape, cfg.normalization, stats)
    x = L.Permute((2, 1))(x)  # (frames, coefficients)
    cell = {"gru": L.GRU, "lstm": L.LSTM}[cfg.cell]
    for i in range(cfg.layers):
        last = i == cfg.layers - 1
        layer = cell(cfg.units, return_sequences=not last or cfg.pooling == "mean", name=f"{cfg.cell}{i}")
        x = L.Bidirectional(layer, name=f"bi{i}")(x) if cfg.bidirectional else layer(x)
    if cfg.pooling == "mean":
        x = L.GlobalAveragePooling1D()(x)
    return keras.Model(inp, _head(x, cfg.dropout, cfg.dense), name="rnn")


def mlp(cfg: Any, shape, stats) -> keras.Model:
    inp, x = _normalized_input(shape, cfg.normalization, stats)
    if len(shape) == 2:
        x = L.Permute((2, 1))(x)
        x = dl_layers.StatsPooling(name="stats_pool")(x)  # (2 * rows,)
    for i, units in enumerate(cfg.hidden):
        x = L.Dense(units, activation="relu", name=f"dense{i}")(x)
        x = L.Dropout(cfg.dropout)(x)
    return keras.Model(inp, _head(x, 0.0), name="mlp")


def conformer(cfg: Any, shape, stats) -> keras.Model:
    inp, x = _normalized_input(shape, cfg.normalization, stats)
    x = L.Permute((2, 1))(x)  # (frames, mels)
    # Conv subsampling in time (stride 2 per step) as in the Conformer front end.
    for i in range(cfg.subsample_steps):
        x = L.Conv1D(cfg.dim, 3, strides=2, padding="same", activation="swish", name=f"subsample{i}")(x)
    x = L.Dense(cfg.dim, name="in_proj")(x)
    x = dl_layers.SinusoidalPositionEncoding(name="pos_enc")(x)
    x = L.Dropout(cfg.dropout)(x)
    for i in range(cfg.blocks):
        x = dl_layers.conformer_block(x, dim=cfg.dim, heads=cfg.heads, ff_mult=cfg.ff_mult,
                                      kernel_size=cfg.conv_kernel, dropout=cfg.dropout,
                                      name=f"block{i}")
    x = L.GlobalAveragePooling1D()(x)
    return keras.Model(inp, _head(x, cfg.dropout), name="conformer")


def _image_backbone(cfg: Any, shape, stats, app_name: str) -> keras.Model:
    """A keras.applications backbone on log-mel as a 3-channel image (the transfer path)."""
    inp, x = _normalized_input(shape, cfg.normalization, stats)
    rows, frames = shape
    factors = (-(-cfg.min_image_size // rows), -(-cfg.min_image_size // frames))
    size = (rows * factors[0], frames * factors[1])
    x = L.Reshape((rows, frames, 1))(x)
    if factors != (1, 1):
        # These backbones downsample 32x; tiny feature maps need upsizing first. Not
        # keras.layers.Resizing: its call defaults to training=True, which leaks into the
        # call context and puts the backbone's BatchNormalization into training mode.
        x = L.UpSampling2D(factors, interpolation="bilinear", name="upsample")(x)
    x = L.Concatenate(axis=-1, name="to_rgb")([x, x, x])
    app = {"efficientnet_b0": keras.applications.EfficientNetB0,
           "vgg16": keras.applications.VGG16}[app_name]
    backbone = app(include_top=False, weights=None, input_shape=(*size, 3), pooling="avg")
    if cfg.weights_path:
        load_backbone_weights(backbone, cfg.weights_path)
    backbone.trainable = not cfg.freeze_backbone
    x = backbone(x)
    return keras.Model(inp, _head(x, cfg.dropout, cfg.dense), name=app_name)


def load_backbone_weights(backbone: keras.Model, path: str) -> None:
    """Load a local weights file into ``backbone``, skipping layers whose shapes differ.

    Legacy ``.h5`` files (e.g. the ImageNet ``*_notop.h5`` files of keras.applications)
    are matched layer by layer by name; Keras 3 ``.weights.h5`` files by structure. Either
    way mismatched tensors are skipped, so a different input size or channel count still
    transfers every compatible layer.
    """
    import os

    if not os.path.isfile(path):
        raise FileNotFoundError(f"backbone weights file {path!r} not found (expected a local .h5 file)")
    if path.endswith(".weights.h5"):
        backbone.load_weights(path, skip_mismatch=True)
    elif path.endswith((".h5", ".hdf5")):
        backbone.load_weights(path, skip_mismatch=True, by_name=True)
    else:
        raise ValueError(f"backbone weights {path!r}: expected a .h5 or .weights.h5 file")


def efficientnet_b0(cfg: Any, shape, stats) -> keras.Model:
    return _image_backbone(cfg, shape, stats, "efficientnet_b0")


def vgg16(cfg: Any, shape, stats) -> keras.Model:
    return _image_backbone(cfg, shape, stats, "vgg16")


BUILDERS = {
    "cnn": cnn,
    "lcnn": lcnn,
    "tdnn": tdnn,
    "rnn": rnn,
    "mlp": mlp,
    "conformer": conformer,
    "efficientnet_b0": efficientnet_b0,
    "vgg16": vgg16,
}

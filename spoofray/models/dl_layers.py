"""Custom Keras layers of the deep ensemble members, registered for ``safe_mode`` loading.

Importing this module imports Keras (and so TensorFlow): only :mod:`spoofray.models.dl`
imports it, inside functions. Every layer is registered under the ``spoofray`` package so
``keras.saving.load_model(path, safe_mode=True)`` rebuilds it without any Lambda layer.
"""

from __future__ import annotations

import math

import keras
from keras import ops

PACKAGE = "spoofray"


@keras.saving.register_keras_serializable(package=PACKAGE)
class InstanceStandardize(keras.layers.Layer):
    """Per-example mean/variance normalisation of each row over the time axis (CMVN).

    Input (batch, rows, frames) → same shape, every row zero-mean unit-variance per example.
    """

    def __init__(self, epsilon: float = 1e-5, **kwargs):
        super().__init__(**kwargs)
        self.epsilon = float(epsilon)

    def call(self, x):
        mean = ops.mean(x, axis=-1, keepdims=True)
        var = ops.var(x, axis=-1, keepdims=True)
        return (x - mean) / ops.sqrt(var + self.epsilon)

    def get_config(self):
        return {**super().get_config(), "epsilon": self.epsilon}


@keras.saving.register_keras_serializable(package=PACKAGE)
class MaxFeatureMap(keras.layers.Layer):
    """Max-feature-map activation of LCNN (Wu et al. 2018): the element-wise max of the two
    halves of the channel (last) axis. (..., 2c) → (..., c)."""

    def call(self, x):
        a, b = ops.split(x, 2, axis=-1)
        return ops.maximum(a, b)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], input_shape[-1] // 2)


@keras.saving.register_keras_serializable(package=PACKAGE)
class StatsPooling(keras.layers.Layer):
    """Mean and standard deviation over the time axis (x-vector statistics pooling).

    Input (batch, frames, channels) → (batch, 2 * channels).
    """

    def __init__(self, epsilon: float = 1e-5, **kwargs):
        super().__init__(**kwargs)
        self.epsilon = float(epsilon)

    def call(self, x):
        mean = ops.mean(x, axis=1)
        std = ops.sqrt(ops.var(x, axis=1) + self.epsilon)
        return ops.concatenate([mean, std], axis=-1)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], 2 * input_shape[-1])

    def get_config(self):
        return {**super().get_config(), "epsilon": self.epsilon}


@keras.saving.register_keras_serializable(package=PACKAGE)
class GatedLinearUnit(keras.layers.Layer):
    """GLU over the last axis: first half times sigmoid(second half). (..., 2c) → (..., c)."""

    def call(self, x):
        a, b = ops.split(x, 2, axis=-1)
        return a * ops.sigmoid(b)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], input_shape[-1] // 2)


@keras.saving.register_keras_serializable(package=PACKAGE)
class SinusoidalPositionEncoding(keras.layers.Layer):
    """Adds the fixed sinusoidal position code of Vaswani et al. to (batch, frames, dim)."""

    def call(self, x):
        frames = ops.shape(x)[1]
        dim = x.shape[-1]
        pos = ops.cast(ops.arange(frames), "float32")[:, None]
        i = ops.cast(ops.arange(dim // 2), "float32")[None, :]
        angle = pos / ops.power(10_000.0, 2.0 * i / float(dim))
        code = ops.concatenate([ops.sin(angle), ops.cos(angle)], axis=-1)
        if dim % 2:
            code = ops.pad(code, [[0, 0], [0, 1]])
        return x + ops.cast(code[None], x.dtype)


def conformer_block(x, *, dim: int, heads: int, ff_mult: int, kernel_size: int,
                    dropout: float, name: str):
    """One Conformer block (Gulati et al. 2020): ½FFN, MHSA, conv module, ½FFN, LayerNorm.

    (batch, frames, dim) → (batch, frames, dim). Built from stock layers plus
    :class:`GatedLinearUnit`, so it serialises under ``safe_mode``.
    """
    L = keras.layers

    def feed_forward(h, tag):
        y = L.LayerNormalization(name=f"{name}_{tag}_ln")(h)
        y = L.Dense(dim * ff_mult, activation="swish", name=f"{name}_{tag}_up")(y)
        y = L.Dropout(dropout)(y)
        y = L.Dense(dim, name=f"{name}_{tag}_down")(y)
        y = L.Dropout(dropout)(y)
        y = L.Rescaling(0.5, name=f"{name}_{tag}_half")(y)
        return L.Add()([h, y])

    x = feed_forward(x, "ff1")
    y = L.LayerNormalization(name=f"{name}_mhsa_ln")(x)
    y = L.MultiHeadAttention(heads, key_dim=max(1, dim // heads), dropout=dropout,
                             name=f"{name}_mhsa")(y, y)
    x = L.Add()([x, L.Dropout(dropout)(y)])
    y = L.LayerNormalization(name=f"{name}_conv_ln")(x)
    y = L.Conv1D(2 * dim, 1, name=f"{name}_conv_pw1")(y)
    y = GatedLinearUnit(name=f"{name}_glu")(y)
    y = L.DepthwiseConv1D(kernel_size, padding="same", name=f"{name}_conv_dw")(y)
    y = L.BatchNormalization(name=f"{name}_conv_bn")(y)
    y = L.Activation("swish")(y)
    y = L.Conv1D(dim, 1, name=f"{name}_conv_pw2")(y)
    x = L.Add()([x, L.Dropout(dropout)(y)])
    x = feed_forward(x, "ff2")
    return L.LayerNormalization(name=f"{name}_out_ln")(x)


def subsample_frames(frames: int, factor: int) -> int:
    """Frames left after ``log2(factor)`` stride-2 'same' convolutions."""
    for _ in range(int(round(math.log2(max(1, factor))))):
        frames = (frames + 1) // 2
    return frames

"""Sample-array helpers shared by the audio submodules (:mod:`~spoofray.augment.channels`,
:mod:`~spoofray.augment.raw_boost`, :mod:`~spoofray.augment.vocoders`): the mono float32
check and trimming or padding to a length."""

from __future__ import annotations

import numpy as np


def _as_float(y: np.ndarray) -> np.ndarray:
    y = np.asarray(y, dtype=np.float32)
    if y.ndim != 1:
        raise ValueError(f"expected mono audio of shape (n,), got shape {y.shape}")
    return y


def fit_length(y: np.ndarray, n: int) -> np.ndarray:
    """Trim or zero-pad ``y`` to ``n`` samples."""
    return y[:n] if len(y) >= n else np.pad(y, (0, n - len(y)))

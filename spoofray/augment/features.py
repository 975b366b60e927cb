"""Feature-batch augmentation of the training loop: SpecAugment-style frequency/time masking,
mixup and time-axis cutmix over a batch of windows of every feature kind at once."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import numpy as np

from spoofray.config import Config, Interval


@dataclasses.dataclass(frozen=True)
class FeatureAugmentConfig(Config):
    """Feature-batch augmentation of the training loop (all off with :meth:`off`).

    Widths are fractions of the axis; each mask's width is drawn uniformly from
    ``[0, width]``. A batch gets mixup with probability ``mixup_prob``, else cutmix with
    probability ``cutmix_prob`` (mixing ratio from Beta(alpha, alpha)).
    """

    _constraints = {
        **{name: [Interval(float, 0.0, 1.0)]
           for name in ("spec_prob", "freq_width", "time_width", "mixup_prob", "cutmix_prob")},
        "freq_masks": [Interval(int, 0)],
        "time_masks": [Interval(int, 0)],
        "alpha": [Interval(float, 0.0, closed="neither")],
    }

    spec_prob: float = 0.5
    freq_masks: int = 2
    freq_width: float = 0.15
    time_masks: int = 2
    time_width: float = 0.1
    mixup_prob: float = 0.2
    cutmix_prob: float = 0.2
    alpha: float = 0.4

    @classmethod
    def off(cls) -> "FeatureAugmentConfig":
        return cls(spec_prob=0.0, mixup_prob=0.0, cutmix_prob=0.0)


def spec_augment(x: np.ndarray, rng: np.random.Generator, *, freq_masks: int = 2,
                 freq_width: float = 0.15, time_masks: int = 2, time_width: float = 0.1
                 ) -> np.ndarray:
    """SpecAugment masking (Park et al. 2019) of a batch of (rows, frames) features.

    Masked cells take the example's own mean, not zero: these are raw features (the
    model normalises inside), where zero may be far outside the data range.

    Parameters
    ----------
    x : ndarray, shape (n, rows, frames)

    Returns
    -------
    ndarray, shape (n, rows, frames)
        A masked copy.
    """
    x = np.array(x, dtype=np.float32, copy=True)
    n, rows, frames = x.shape
    fill = x.mean(axis=(1, 2))
    for i in range(n):
        for axis_len, count, width, along_rows in ((rows, freq_masks, freq_width, True),
                                                   (frames, time_masks, time_width, False)):
            for _ in range(count):
                w = int(rng.integers(0, int(width * axis_len) + 1))
                if w == 0:
                    continue
                start = int(rng.integers(0, axis_len - w + 1))
                if along_rows:
                    x[i, start:start + w, :] = fill[i]
                else:
                    x[i, :, start:start + w] = fill[i]
    return x


def mixup(batch: Mapping[str, np.ndarray], y: np.ndarray, rng: np.random.Generator,
          alpha: float = 0.4) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Mixup (Zhang et al. 2018): every kind mixed with one shared permutation and ratio.

    Parameters
    ----------
    batch : mapping kind -> ndarray, shape (n, ...)
    y : ndarray, shape (n,)
        Targets in [0, 1].

    Returns
    -------
    batch, y : the mixed features and soft targets, shapes unchanged
    """
    n = len(y)
    perm = rng.permutation(n)
    lam = rng.beta(alpha, alpha, size=n).astype(np.float32)
    lam = np.maximum(lam, 1.0 - lam)  # keep each example dominant, as is usual
    out = {}
    for kind, x in batch.items():
        shape = (n,) + (1,) * (x.ndim - 1)
        out[kind] = (lam.reshape(shape) * x + (1.0 - lam).reshape(shape) * x[perm]).astype(np.float32)
    return out, (lam * y + (1.0 - lam) * y[perm]).astype(np.float32)


def cutmix(batch: Mapping[str, np.ndarray], y: np.ndarray, rng: np.random.Generator,
           alpha: float = 0.4) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """CutMix along time: a frame span of each example replaced by another example's.

    Every (rows, frames) kind gets the same span (all kinds share the frame axis);
    1-D kinds (``stats``) are mixed linearly with the same ratio. Targets mix by the
    fraction of frames kept.

    Parameters
    ----------
    batch : mapping kind -> ndarray, shape (n, rows, frames) or (n, dims)
    y : ndarray, shape (n,)
    """
    n = len(y)
    frames = next((x.shape[2] for x in batch.values() if x.ndim == 3), None)
    if frames is None:
        return mixup(batch, y, rng, alpha)
    perm = rng.permutation(n)
    cut = np.round((1.0 - rng.beta(alpha, alpha, size=n)) * frames).astype(int)
    cut = np.minimum(cut, frames // 2)  # at most half: the example keeps its own label mostly
    start = np.array([rng.integers(0, frames - c + 1) for c in cut])
    keep = (1.0 - cut / frames).astype(np.float32)
    out = {}
    for kind, x in batch.items():
        x2 = np.array(x, dtype=np.float32, copy=True)
        if x.ndim == 3:
            for i in range(n):
                x2[i, :, start[i]:start[i] + cut[i]] = x[perm[i], :, start[i]:start[i] + cut[i]]
        else:
            shape = (n,) + (1,) * (x.ndim - 1)
            x2 = keep.reshape(shape) * x + (1.0 - keep).reshape(shape) * x[perm]
        out[kind] = x2.astype(np.float32)
    return out, (keep * y + (1.0 - keep) * y[perm]).astype(np.float32)


def augment_batch(batch: Mapping[str, np.ndarray], y: np.ndarray, rng: np.random.Generator,
                  cfg: FeatureAugmentConfig) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Apply the configured feature augmentations to one training batch.

    Parameters
    ----------
    batch : mapping kind -> ndarray, shape (n, *feature_shape)
    y : ndarray, shape (n,)
        0/1 targets (1 = spoof).

    Returns
    -------
    batch, y : augmented features and (possibly soft) float32 targets
    """
    out = {k: np.asarray(v, np.float32) for k, v in batch.items()}
    y = np.asarray(y, np.float32)
    if cfg.spec_prob and rng.random() < cfg.spec_prob:
        out = {k: spec_augment(v, rng, freq_masks=cfg.freq_masks, freq_width=cfg.freq_width,
                               time_masks=cfg.time_masks, time_width=cfg.time_width)
               if v.ndim == 3 else v for k, v in out.items()}
    draw = rng.random()
    if draw < cfg.mixup_prob:
        out, y = mixup(out, y, rng, cfg.alpha)
    elif draw < cfg.mixup_prob + cfg.cutmix_prob:
        out, y = cutmix(out, y, rng, cfg.alpha)
    return out, y

"""Leakage-free train/dev splits and cross-validation folds over windows.

Windows of one recording are never split apart, whatever the grouping: every group key
below is at least as coarse as the recording. Grouping choices (``by``):

``recording``  one group per input file (``uri``)
``speaker``    one group per speaker (files without a speaker fall back to their recording)
``attack``     spoofs grouped by generating system, so whole attacks are held out; bona fide
               grouped by speaker (or recording), so bona fide speakers are held out too
``group``      the manifest's own ``group`` column (falls back to the recording)
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from spoofray.errors import ConfigError

GROUP_BY = ("recording", "speaker", "attack", "group")


def _fallback(primary: pd.Series, uri: pd.Series) -> pd.Series:
    missing = primary.isna() | (primary.astype("string") == "")
    return primary.astype("string").where(~missing, "rec:" + uri.astype("string"))


def group_keys(meta: pd.DataFrame, by: str) -> np.ndarray:
    """One group key per row of ``meta`` (needs ``uri``, ``label`` and the ``by`` column).

    Returns
    -------
    keys : ndarray of str, shape (n_rows,)
    """
    if by not in GROUP_BY:
        raise ConfigError(f"unknown grouping {by!r}; choose one of {list(GROUP_BY)}")
    uri = meta["uri"]
    if by == "recording":
        keys = "rec:" + uri.astype("string")
    elif by == "speaker":
        keys = "spk:" + _fallback(meta["speaker"], uri)
    elif by == "group":
        keys = "grp:" + _fallback(meta["group"], uri)
    else:
        is_spoof = meta["label"] == "spoof"
        attack = "atk:" + _fallback(meta["attack"], uri)
        bona = "bona:" + _fallback(meta["speaker"], uri)
        keys = attack.where(is_spoof, bona)
    return keys.to_numpy(dtype=str)


def _binary_labels(meta: pd.DataFrame) -> np.ndarray:
    labels = meta["label"]
    unknown = sorted(set(labels.dropna().unique()) - {"bonafide", "spoof"})
    if labels.isna().any() or unknown:
        raise ConfigError(
            "training and evaluation need every row labelled 'bonafide' or 'spoof'; found "
            f"{int(labels.isna().sum())} unlabelled rows and labels {unknown}"
        )
    return (labels == "spoof").to_numpy(dtype=np.int64)


def group_kfold(meta: pd.DataFrame, *, by: str, n_splits: int = 5, seed: int = 0
                ) -> list[tuple[np.ndarray, np.ndarray]]:
    """Stratified group K-fold over the rows of ``meta``.

    Returns
    -------
    folds : list of (train_idx, test_idx) integer arrays
        Group-disjoint; each test fold holds both classes (else :class:`ConfigError`).
    """
    from sklearn.model_selection import StratifiedGroupKFold

    y = _binary_labels(meta)
    groups = group_keys(meta, by)
    n_groups = len(np.unique(groups))
    if n_groups < n_splits:
        raise ConfigError(
            f"grouping by {by!r} gives {n_groups} groups, fewer than n_splits={n_splits}; "
            "lower the number of folds or choose a finer grouping"
        )
    splitter = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    folds = [(tr, te) for tr, te in splitter.split(np.zeros(len(y)), y, groups)]
    for i, (_, te) in enumerate(folds):
        if len(np.unique(y[te])) < 2:
            raise ConfigError(
                f"fold {i} (grouped by {by!r}) holds only one class; with so few groups per "
                "class use fewer folds or another grouping"
            )
    return folds


def holdout_split(meta: pd.DataFrame, *, by: str, dev_fraction: float = 0.25, seed: int = 0,
                  dev_groups: Sequence[str] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """A single group-disjoint train/dev split.

    Parameters
    ----------
    dev_groups : sequence of str, optional
        Raw values of the grouping column (e.g. attack names) to put in dev; the rest of dev
        is filled at random up to ``dev_fraction`` of the groups. Bona fide keeps its own
        speaker/recording grouping.
    """
    if not 0.0 < dev_fraction < 1.0:
        raise ConfigError(f"dev_fraction must be in (0, 1), got {dev_fraction}")
    y = _binary_labels(meta)
    keys = group_keys(meta, by)
    rng = np.random.default_rng(seed)
    chosen: set[str] = set()
    if dev_groups:
        wanted = set(dev_groups)
        chosen = {k for k in np.unique(keys) if k.split(":", 1)[1] in wanted}
        if not chosen:
            raise ConfigError(f"none of {sorted(wanted)} is a {by!r} group in the data")
    for cls in (0, 1):
        cls_keys = np.unique(keys[y == cls])
        remaining = [k for k in cls_keys if k not in chosen]
        already = sum(1 for k in cls_keys if k in chosen)
        target = max(1, int(round(dev_fraction * len(cls_keys)))) - already
        if target > 0 and remaining:
            chosen.update(rng.choice(remaining, size=min(target, len(remaining)), replace=False))
    is_dev = np.isin(keys, list(chosen))
    train_idx, dev_idx = np.flatnonzero(~is_dev), np.flatnonzero(is_dev)
    for name, idx in (("train", train_idx), ("dev", dev_idx)):
        if len(np.unique(y[idx])) < 2:
            raise ConfigError(f"the {name} side of the split grouped by {by!r} holds one class")
    return train_idx, dev_idx


def assert_disjoint(meta: pd.DataFrame, a: np.ndarray, b: np.ndarray, by: str) -> None:
    """Raise :class:`ConfigError` if index sets ``a`` and ``b`` share a group or recording."""
    for grouping in {by, "recording"}:
        keys = group_keys(meta, grouping)
        shared = set(keys[a]) & set(keys[b])
        if shared:
            raise ConfigError(f"split leaks {len(shared)} {grouping} groups, e.g. {sorted(shared)[:3]}")

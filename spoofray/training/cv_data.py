"""Cross-validation data for the sklearn ensemble: loading, folds, file-level scoring.

No Ray here. A :class:`CvData` holds every model input of a dataset as a 2-D block, the
labels, the file each window belongs to, and group-disjoint folds; it is what a sweep
ships once to all trials.

Scores are per window; quality is reported per FILE (``uri``): a file's score is the mean
of its windows' P(spoof), because reports and thresholds are per file. An external
feature table (DEEP-VOICE CSV) has no files, so there each row is its own "file".
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import pandas as pd

from spoofray import dataset, splits, storage
from spoofray.config import STATS_NAMES
from spoofray.errors import ConfigError, LabelError
from spoofray.models.ml import INPUTS, SpoofVotingEnsemble, check_inputs, input_array

#: Threshold on P(spoof) for accuracy/precision/recall/F1 during a sweep (the final
#: model's threshold is chosen later, at the EER point of its out-of-fold scores).
SWEEP_THRESHOLD = 0.5

META_COLUMNS = ("uri", "label", "attack", "speaker", "group", "feature_config_hash")


@dataclasses.dataclass
class CvData:
    """Everything a cross-validated trial needs, as plain numpy arrays.

    Attributes
    ----------
    blocks : dict of input name to ndarray, shape (n_windows, d_input), float32
    y : ndarray of int64, shape (n_windows,)
        1 = spoof, 0 = bona fide.
    file_index : ndarray of int64, shape (n_windows,)
        Row of ``file_uris`` each window belongs to.
    file_uris : ndarray of str, shape (n_files,)
    file_labels : ndarray of int64, shape (n_files,)
    folds : list of (train_idx, test_idx)
        Window indices; group-disjoint (``group_by``), files never split.
    """

    blocks: dict[str, np.ndarray]
    y: np.ndarray
    file_index: np.ndarray
    file_uris: np.ndarray
    file_labels: np.ndarray
    folds: list[tuple[np.ndarray, np.ndarray]]
    group_by: str
    source: str
    feature_config: dict[str, Any] | None
    feature_config_hash: str | None
    #: "file" (windows pooled per uri) or "row" (external table: one row per item).
    level: str = "file"
    caveat: str | None = None

    @property
    def n_windows(self) -> int:
        return len(self.y)

    def X(self, inputs: Sequence[str]) -> np.ndarray:
        """Design matrix for ``inputs``, shape (n_windows, sum of block widths)."""
        names = check_inputs(inputs)
        missing = [n for n in names if n not in self.blocks]
        if missing:
            raise ConfigError(
                f"inputs {missing} are not in the data from {self.source} (it has "
                f"{sorted(self.blocks)}); drop them from the search space"
            )
        return np.concatenate([self.blocks[n] for n in names], axis=1)

    def fingerprint(self) -> str:
        """sha256 of the sorted (uri, label) pairs: which labelled files were used."""
        labels = np.where(self.file_labels == 1, "spoof", "bonafide")
        lines = sorted(f"{u}\t{lab}" for u, lab in zip(self.file_uris, labels))
        return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def _file_index(uris: np.ndarray, labels: np.ndarray, source: str
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    codes, uniques = pd.factorize(pd.Series(uris), sort=True)
    per_file = pd.DataFrame({"file": codes, "y": labels}).groupby("file")["y"]
    mixed = np.flatnonzero(per_file.nunique().to_numpy() > 1)
    if len(mixed):
        raise ConfigError(
            f"{source}: windows of one file carry different labels, e.g. "
            f"{list(np.asarray(uniques)[mixed[:3]])}; every window of a file needs its label"
        )
    return (codes.astype(np.int64), np.asarray(uniques, dtype=str),
            per_file.first().to_numpy(np.int64))


def load_feature_dataset(root: str, *, inputs: Iterable[str], group_by: str, n_splits: int,
                         seed: int = 0) -> CvData:
    """Read a spoofray feature dataset and cut group-aware folds.

    Parameters
    ----------
    root : str
        Dataset root (local or ``s3://``) as written by ``jobs/extract_features.py``.
    inputs : iterable of str
        Every input name (:data:`~spoofray.models.ml.INPUTS`) a trial may ask for; only
        their tensor columns are read.
    group_by : {"recording", "speaker", "attack", "group"}
    """
    names = check_inputs(sorted(set(inputs)))
    cfg = dataset.feature_config_of(root)
    kinds = sorted({INPUTS[n] for n in names})
    absent = [k for k in kinds if k not in cfg.kinds]
    if absent:
        raise ConfigError(
            f"the search space uses inputs {list(names)}, which need feature kinds {absent} "
            f"that the dataset {root} lacks (it has {list(cfg.kinds)}); re-extract with them "
            "or restrict 'inputs' in the space"
        )
    table = dataset.read_table(root, columns=[*META_COLUMNS, *kinds])
    meta = table.select(list(META_COLUMNS)).to_pandas()
    hashes = set(meta["feature_config_hash"].unique())
    if hashes != {cfg.config_hash()}:
        raise ConfigError(
            f"{root}: feature parts carry feature-config hashes {sorted(hashes)}, but its "
            f"manifest says {cfg.config_hash()}; the folder mixes datasets — re-extract it"
        )
    features = {k: dataset.tensor_column(table, k) for k in kinds}
    folds = splits.group_kfold(meta, by=group_by, n_splits=n_splits, seed=seed)
    y = (meta["label"] == "spoof").to_numpy(np.int64)  # group_kfold checked the labels
    file_index, file_uris, file_labels = _file_index(meta["uri"].to_numpy(str), y, root)
    return CvData(
        blocks={n: input_array(features, n) for n in names},
        y=y, file_index=file_index, file_uris=file_uris, file_labels=file_labels,
        folds=folds, group_by=group_by, source=root,
        feature_config=cfg.to_dict(), feature_config_hash=cfg.config_hash(), level="file",
    )


def _read_any_table(path: str) -> pd.DataFrame:
    lower = path.lower()
    if not lower.endswith((".parquet", ".pq", ".csv", ".csv.gz")):
        raise ConfigError(f"{path}: a feature table must be .csv, .csv.gz or .parquet")
    data = io.BytesIO(storage.read_bytes(path))
    if lower.endswith((".parquet", ".pq")):
        return pd.read_parquet(data)
    return pd.read_csv(data, compression="gzip" if lower.endswith(".gz") else None)


def load_feature_table(path: str, *, n_splits: int, block_rows: int = 0, seed: int = 0
                       ) -> CvData:
    """A DEEP-VOICE style table: the 26 :data:`~spoofray.config.STATS_NAMES` + ``LABEL``.

    ``LABEL`` is REAL/FAKE (any spelling :func:`spoofray.sources.normalize_label` accepts).
    Such tables have no file or speaker ids, so each row is scored on its own and folds
    group ``block_rows`` consecutive rows (DEEP-VOICE writes the 1-s rows of a recording
    one after another). ``block_rows=0`` makes folds row-level: rows of one recording then
    land on both sides and the EER is optimistic, which :attr:`CvData.caveat` says.
    """
    from spoofray.sources import normalize_label

    frame = _read_any_table(path)
    by_lower = {str(c).strip().lower(): c for c in frame.columns}
    wanted = [*STATS_NAMES, "label"]
    missing = [c for c in wanted if c not in by_lower]
    if missing:
        raise ConfigError(
            f"{path}: missing columns {missing}; a feature table needs the 26 DEEP-VOICE "
            f"columns {list(STATS_NAMES)} and a LABEL column (REAL/FAKE); found "
            f"{list(frame.columns)}"
        )
    stats = frame[[by_lower[c] for c in STATS_NAMES]]
    bad = stats.apply(pd.to_numeric, errors="coerce")
    non_finite = ~np.isfinite(bad.to_numpy(np.float64)).all(axis=1)
    if non_finite.any():
        rows = (np.flatnonzero(non_finite)[:5] + 1).tolist()
        raise ConfigError(f"{path}: non-numeric or missing feature values in data rows {rows}")
    labels = []
    for i, raw in enumerate(frame[by_lower["label"]].tolist()):
        label = normalize_label(raw, where=f"{path} row {i + 1}")
        if label is None:
            raise LabelError(f"{path} row {i + 1}: empty LABEL; training needs REAL or FAKE")
        labels.append(label)
    if block_rows < 0:
        raise ConfigError(f"block_rows must be >= 0, got {block_rows}")
    n = len(frame)
    row_ids = np.arange(n)
    base = os.path.basename(path.rstrip("/"))
    groups = (row_ids // block_rows if block_rows else row_ids).astype(str)
    meta = pd.DataFrame({
        "uri": [f"{base}#row{i}" for i in row_ids],
        "label": labels, "attack": None, "speaker": None,
        "group": ["block:" + g for g in groups],
    })
    folds = splits.group_kfold(meta, by="group", n_splits=n_splits, seed=seed)
    y = (meta["label"] == "spoof").to_numpy(np.int64)
    caveat = (
        f"folds group blocks of {block_rows} consecutive rows (the table has no recording "
        "ids); if a recording's rows are not contiguous, folds leak and EER is optimistic"
        if block_rows else
        "folds are row-level (the table has no recording ids): windows of one recording "
        "sit on both sides, so the EER is optimistic; use --table-block-rows"
    )
    return CvData(
        blocks={"stats": bad.to_numpy(np.float32)},
        y=y, file_index=row_ids.astype(np.int64), file_uris=meta["uri"].to_numpy(str),
        file_labels=y.copy(), folds=folds, group_by=f"row blocks of {block_rows}"
        if block_rows else "row", source=path, feature_config=None,
        feature_config_hash=None, level="row", caveat=caveat,
    )


# --- scoring -------------------------------------------------------------------------------


def file_scores(file_index: np.ndarray, window_scores: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray]:
    """Mean window score per file.

    Returns
    -------
    files : ndarray of int64, shape (n_files_present,)
    scores : ndarray of float64, shape (n_files_present,)
    """
    from spoofray import scoring

    files, inverse = np.unique(file_index, return_inverse=True)
    return files, scoring.file_scores(window_scores, inverse)


def spoof_proba(model: SpoofVotingEnsemble, X: np.ndarray) -> np.ndarray:
    """P(spoof) per row, shape (n,), from a model trained on 0/1 labels."""
    classes = list(model.classes_)
    if classes != [0, 1]:
        raise ConfigError(f"expected a model trained on labels [0, 1], got {classes}")
    return model.predict_proba(X)[:, 1]


def fit_fold(model: SpoofVotingEnsemble, data: CvData, fold: int
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Fit ``model`` on the training side of ``fold``; score its held-out side.

    Returns
    -------
    test_idx : ndarray, shape (n_test_windows,)
    window_scores : ndarray, shape (n_test_windows,)
    files, scores : see :func:`file_scores` (files of the held-out side)
    """
    train_idx, test_idx = data.folds[fold]
    X = data.X(model.inputs)
    model.fit(X[train_idx], data.y[train_idx])
    window = spoof_proba(model, X[test_idx])
    files, scores = file_scores(data.file_index[test_idx], window)
    return test_idx, window, files, scores


def fold_metrics(data: CvData, test_idx: np.ndarray, window_scores: np.ndarray,
                 files: np.ndarray, scores: np.ndarray) -> dict[str, float]:
    """File-level EER/AUC and threshold metrics at P(spoof) >= 0.5, plus window EER."""
    from spoofray.metrics import compute_eer, evaluate

    result = evaluate(data.file_labels[files], scores, threshold=SWEEP_THRESHOLD)
    window_eer, _ = compute_eer(data.y[test_idx], window_scores)
    return {
        "eer": result["eer"], "auc": result["auc"], "accuracy": result["accuracy"],
        "precision": result["precision"], "recall": result["recall"], "f1": result["f1"],
        "window_eer": float(window_eer),
    }

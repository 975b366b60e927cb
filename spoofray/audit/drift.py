"""Drift of a night's scores against earlier nights: PSI and KS, overall and per folder.

Pure numpy/pandas/scipy. A run's scored files (the *current* sample) are compared with the
files scored by the previous runs (the *reference* sample), overall and per top-level folder
of the archive.
"""

from __future__ import annotations

import posixpath
from collections.abc import Sequence

import numpy as np
import pandas as pd

from spoofray.errors import ConfigError
from spoofray.reports import with_current_names

#: Floor of a bin's share in the PSI formula: an empty bin would make ln(0) infinite.
PSI_EPSILON = 1e-4
OVERALL = "(overall)"

DRIFT_COLUMNS = ("group", "n_current", "n_reference", "n_error", "error_rate", "spoof_rate",
                 "spoof_rate_reference", "spoof_rate_change", "mean_score",
                 "mean_score_reference", "psi", "ks", "ks_pvalue", "note")


def population_stability_index(reference: np.ndarray, current: np.ndarray, *,
                               bins: int = 10, lo: float = 0.0, hi: float = 1.0) -> float:
    """PSI of two score samples over ``bins`` equal-width bins on ``[lo, hi]``.

    ``PSI = sum_i (c_i - r_i) * ln(c_i / r_i)`` with ``r_i``, ``c_i`` the share of each
    sample in bin ``i`` (floored at :data:`PSI_EPSILON`). Scores are probabilities, so fixed
    bins on [0, 1] make runs comparable with each other. Rule of thumb: < 0.1 stable,
    0.1–0.25 moderate shift, > 0.25 major shift.

    Parameters
    ----------
    reference, current : ndarray, shape (n,) and (m,)
        Non-empty; values outside ``[lo, hi]`` are counted in the edge bins.

    Returns
    -------
    float
        >= 0; 0 for identical histograms.
    """
    reference = np.asarray(reference, dtype=np.float64)
    current = np.asarray(current, dtype=np.float64)
    if bins < 1:
        raise ConfigError(f"bins must be >= 1, got {bins}")
    if not len(reference) or not len(current):
        raise ValueError("PSI needs two non-empty samples")
    edges = np.linspace(lo, hi, bins + 1)
    r = np.histogram(np.clip(reference, lo, hi), edges)[0] / len(reference)
    c = np.histogram(np.clip(current, lo, hi), edges)[0] / len(current)
    r = np.maximum(r, PSI_EPSILON)
    c = np.maximum(c, PSI_EPSILON)
    return float(np.sum((c - r) * np.log(c / r)))


def ks_statistic(reference: np.ndarray, current: np.ndarray) -> tuple[float, float]:
    """Two-sample Kolmogorov–Smirnov statistic (largest gap between the two empirical CDFs)
    and its two-sided p-value."""
    from scipy.stats import ks_2samp

    result = ks_2samp(np.asarray(reference, np.float64), np.asarray(current, np.float64))
    return float(result.statistic), float(result.pvalue)


def top_folder(uri: str, root: str) -> str:
    """The first folder of ``uri`` below ``root`` (``"."`` for files directly in it).

    Falls back to the file's parent folder name when ``uri`` is not below ``root`` (e.g. a
    manifest naming files elsewhere).
    """
    base = root.rstrip("/") + "/"
    if uri.startswith(base):
        rel = uri[len(base):]
        return rel.split("/", 1)[0] if "/" in rel else "."
    return posixpath.basename(posixpath.dirname(uri)) or "."


def _group_stats(group: str, cur: pd.DataFrame, ref: pd.DataFrame, *, bins: int,
                 min_files: int) -> dict:
    ok = cur[cur["status"] == "ok"]
    ref_ok = ref[ref["status"] == "ok"]
    row = {"group": group, "n_current": int(len(cur)), "n_reference": int(len(ref_ok)),
           "n_error": int((cur["status"] != "ok").sum()),
           "error_rate": float((cur["status"] != "ok").mean()) if len(cur) else np.nan,
           "spoof_rate": float((ok["predicted_label"] == "spoof").mean()) if len(ok) else np.nan,
           "spoof_rate_reference": (float((ref_ok["predicted_label"] == "spoof").mean())
                                    if len(ref_ok) else np.nan),
           "mean_score": float(ok["spoof_score"].mean()) if len(ok) else np.nan,
           "mean_score_reference": (float(ref_ok["spoof_score"].mean())
                                    if len(ref_ok) else np.nan),
           "psi": np.nan, "ks": np.nan, "ks_pvalue": np.nan, "note": ""}
    row["spoof_rate_change"] = row["spoof_rate"] - row["spoof_rate_reference"]
    if len(ok) < min_files or len(ref_ok) < min_files:
        row["note"] = (f"too few scored files for drift ({len(ok)} now, {len(ref_ok)} before; "
                       f"need {min_files} each)")
        return row
    cur_s = ok["spoof_score"].to_numpy(np.float64)
    ref_s = ref_ok["spoof_score"].to_numpy(np.float64)
    row["psi"] = population_stability_index(ref_s, cur_s, bins=bins)
    row["ks"], row["ks_pvalue"] = ks_statistic(ref_s, cur_s)
    return row


def drift_table(current: pd.DataFrame, reference: pd.DataFrame, *, root: str,
                bins: int = 10, min_files: int = 10) -> pd.DataFrame:
    """Per-group comparison of a run with earlier runs.

    Parameters
    ----------
    current, reference : DataFrame
        Report rows (``uri``, ``status``, ``spoof_score``, ``predicted_label``; an old
        report's ``label`` is read as it) of this run and of the reference runs. ``reference`` may be empty (first night).
    root : str
        The audited folder/prefix; groups are its top-level folders.
    min_files : int
        Fewer scored files than this on either side: PSI/KS are NaN and ``note`` says why.

    Returns
    -------
    DataFrame
        Columns :data:`DRIFT_COLUMNS`; first row is :data:`OVERALL`, then one row per folder
        of the current run, sorted.
    """
    if min_files < 1:
        raise ConfigError(f"min_files must be >= 1, got {min_files}")
    current, reference = with_current_names(current), with_current_names(reference)
    cur = current.assign(_group=[top_folder(u, root) for u in current["uri"]])
    ref = reference.assign(_group=[top_folder(u, root) for u in reference["uri"]])
    rows = [_group_stats(OVERALL, cur, ref, bins=bins, min_files=min_files)]
    for group in sorted(set(cur["_group"])):
        rows.append(_group_stats(group, cur[cur["_group"] == group],
                                 ref[ref["_group"] == group], bins=bins, min_files=min_files))
    return pd.DataFrame(rows, columns=list(DRIFT_COLUMNS))


def run_rates(reports: Sequence[pd.DataFrame]) -> pd.DataFrame:
    """Per-run ``run_id, n, spoof_rate, error_rate`` of report frames, one row per frame
    (for the trend plot; an empty frame gives NaN rates)."""
    rows = []
    for rep in map(with_current_names, reports):
        ok = rep[rep["status"] == "ok"]
        rows.append({"run_id": str(rep["run_id"].iloc[0]) if len(rep) else "", "n": int(len(rep)),
                     "spoof_rate": (float((ok["predicted_label"] == "spoof").mean())
                                    if len(ok) else np.nan),
                     "error_rate": float((rep["status"] != "ok").mean()) if len(rep) else np.nan})
    return pd.DataFrame(rows, columns=["run_id", "n", "spoof_rate", "error_rate"])

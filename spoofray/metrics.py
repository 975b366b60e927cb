"""Detection quality metrics: EER, min t-DCF, ROC AUC and threshold metrics.

Conventions (all of spoofray): label 1 / ``True`` / ``"spoof"`` is spoof, the positive
class; 0 / ``False`` / ``"bonafide"`` is bona fide. Scores are higher for "more likely
spoof", and a threshold ``t`` means "predict spoof iff ``score >= t``".

EER, the DET curve and min t-DCF are computed exactly as the ASVspoof 2019/2021
evaluation package does (``eval_metrics.py`` of ``tDCF_python_v1``, identical in
``asvspoof-challenge/2021`` ``eval-package/LA/package-stage-1/eval_metrics.py``). That code
takes bona fide as the *target* class with higher scores meaning more bona fide, so our
scores are negated on the way in and thresholds negated on the way out; the negation
keeps its tie handling (a stable sort with bona fide trials first among equal scores).
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from spoofray.errors import MetricError

__all__ = [
    "TDCFCostModel",
    "accuracy",
    "compute_det_curve",
    "compute_eer",
    "confusion_matrix",
    "evaluate",
    "f1_score",
    "false_alarm_rate",
    "min_tdcf",
    "per_attack_eer",
    "precision",
    "recall",
    "roc_auc",
]

_LABEL_STRINGS = {"bonafide": False, "spoof": True}
_LABEL_HELP = "labels must be 0/1, False/True or 'bonafide'/'spoof' (1, True, 'spoof' = spoof)"


# --- input checking ------------------------------------------------------------------------


def _spoof_mask(labels: ArrayLike) -> np.ndarray:
    """Labels of any accepted spelling as a bool array, True = spoof."""
    arr = np.asarray(labels)
    if arr.ndim != 1:
        raise MetricError(f"labels must be one-dimensional, got shape {arr.shape}")
    if arr.dtype == bool:
        return arr
    if arr.dtype.kind in "iuf":
        known = (arr == 0) | (arr == 1)
        if not known.all():
            bad = np.unique(arr[~known])[:5].tolist()
            raise MetricError(f"{_LABEL_HELP}; found numeric labels {bad}")
        return arr == 1
    if arr.dtype.kind in "UO":
        mask = np.empty(arr.shape, dtype=bool)
        unknown: list[Any] = []
        for i, value in enumerate(arr.tolist()):
            if isinstance(value, str) and value in _LABEL_STRINGS:
                mask[i] = _LABEL_STRINGS[value]
            elif isinstance(value, (bool, int, float, np.number, np.bool_)) and value in (0, 1):
                mask[i] = bool(value)
            elif len(unknown) < 5 and value not in unknown:
                unknown.append(value)
        if unknown:
            raise MetricError(
                f"{_LABEL_HELP}; found {unknown!r}. Map other spellings before computing metrics"
            )
        return mask
    raise MetricError(f"{_LABEL_HELP}; got an array of dtype {arr.dtype}")


def _finite_scores(scores: ArrayLike, name: str = "scores") -> np.ndarray:
    """Scores as a finite 1-D float64 array (may be empty)."""
    try:
        arr = np.asarray(scores, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise MetricError(f"{name} must be real numbers: {exc}") from exc
    if arr.ndim != 1:
        raise MetricError(f"{name} must be one-dimensional, got shape {arr.shape}")
    bad = ~np.isfinite(arr)
    if bad.any():
        raise MetricError(
            f"{name} must be finite; {int(bad.sum())} of {arr.size} are NaN or Inf "
            f"(first at index {int(np.flatnonzero(bad)[0])}). Fix or drop those trials"
        )
    return arr


def _checked(labels: ArrayLike, scores: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """``(is_spoof, scores)`` after length, emptiness, label and finiteness checks."""
    is_spoof = _spoof_mask(labels)
    values = _finite_scores(scores)
    if is_spoof.size != values.size:
        raise MetricError(
            f"labels and scores must have the same length; got {is_spoof.size} labels "
            f"and {values.size} scores"
        )
    if values.size == 0:
        raise MetricError("labels and scores are empty; a metric needs at least one trial")
    return is_spoof, values


def _require_both_classes(is_spoof: np.ndarray, metric: str) -> None:
    n_spoof = int(is_spoof.sum())
    if n_spoof == 0 or n_spoof == is_spoof.size:
        only = "spoof" if n_spoof else "bonafide"
        raise MetricError(
            f"{metric} needs both bonafide and spoof trials; all {is_spoof.size} are {only!r}"
        )


def _checked_threshold(threshold: float) -> float:
    try:
        value = float(threshold)
    except (TypeError, ValueError) as exc:
        raise MetricError(f"threshold must be a real number, got {threshold!r}") from exc
    if math.isnan(value):
        raise MetricError("threshold must not be NaN")
    return value


# --- the official ASVspoof computation (target = bona fide, higher = more bona fide) -------


def _official_det_curve(
    target_scores: np.ndarray, nontarget_scores: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``compute_det_curve`` of the ASVspoof package, same arithmetic, same tie order.

    Point ``k`` (0..n) rejects the ``k`` lowest scores of a stable sort of
    ``concat(target, nontarget)``; ``thresholds[k]`` is the ``k``-th lowest score, and
    ``thresholds[0]`` is the lowest score minus 0.001.
    """
    n_total = target_scores.size + nontarget_scores.size
    all_scores = np.concatenate((target_scores, nontarget_scores))
    is_target = np.concatenate((np.ones(target_scores.size), np.zeros(nontarget_scores.size)))
    order = np.argsort(all_scores, kind="mergesort")
    targets_rejected = np.cumsum(is_target[order])
    nontargets_accepted = nontarget_scores.size - (np.arange(1, n_total + 1) - targets_rejected)
    frr = np.concatenate((np.atleast_1d(0), targets_rejected / target_scores.size))
    far = np.concatenate((np.atleast_1d(1), nontargets_accepted / nontarget_scores.size))
    sorted_scores = all_scores[order]
    thresholds = np.concatenate((np.atleast_1d(sorted_scores[0] - 0.001), sorted_scores))
    return frr, far, thresholds


def _official_eer(target_scores: np.ndarray, nontarget_scores: np.ndarray) -> tuple[float, float]:
    """``compute_eer`` of the ASVspoof package: first argmin of ``|frr - far|``."""
    frr, far, thresholds = _official_det_curve(target_scores, nontarget_scores)
    k = int(np.argmin(np.abs(frr - far)))
    return float(np.mean((frr[k], far[k]))), float(thresholds[k])


# --- EER and DET -----------------------------------------------------------------------------


def compute_det_curve(
    labels: ArrayLike, scores: ArrayLike
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """DET curve exactly as ASVspoof's ``compute_det_curve``, in spoofray's score space.

    Parameters
    ----------
    labels : array-like, shape (n,)
        0/1, bools or ``"bonafide"``/``"spoof"``; spoof is positive.
    scores : array-like, shape (n,)
        Finite scores, higher = more likely spoof.

    Returns
    -------
    frr : ndarray, shape (n + 1,)
        Bona fide rejection rate (bona fide called spoof, the false-alarm rate), rising
        from 0 to 1.
    far : ndarray, shape (n + 1,)
        Spoof acceptance rate (spoof called bona fide, the miss rate), falling from 1 to 0.
    thresholds : ndarray, shape (n + 1,)
        Official thresholds negated, so non-increasing; point ``k`` calls spoof the ``k``
        highest-scoring trials, which is ``scores >= thresholds[k]`` unless trials tie
        at ``thresholds[k]`` (ties are split bona fide first, as the official code does).
        ``thresholds[0]`` is ``max(scores) + 0.001``: nothing called spoof.

    Raises
    ------
    MetricError
        Empty, length mismatch, NaN/Inf scores, unknown labels, or only one class.
    """
    is_spoof, values = _checked(labels, scores)
    _require_both_classes(is_spoof, "a DET curve")
    frr, far, thresholds = _official_det_curve(-values[~is_spoof], -values[is_spoof])
    return frr, far, -thresholds


def compute_eer(labels: ArrayLike, scores: ArrayLike) -> tuple[float, float]:
    """Equal error rate exactly as ASVspoof's ``compute_eer``, and its threshold.

    The EER point is the first index ``k`` minimising ``|frr[k] - far[k]|`` on
    :func:`compute_det_curve`, and ``eer = (frr[k] + far[k]) / 2``.

    Threshold mapping: the official threshold ``t_off`` is the highest (official, i.e.
    negated) score it rejects as bona fide. We return ``-t_off``, so "predict spoof iff
    ``score >= threshold``" reproduces the EER point's error rates exactly, unless trials
    of both classes tie at the threshold score: the official curve may then split the
    tie (tied bona fide called spoof before tied spoofs), which no threshold reproduces;
    ``score >= threshold`` calls every tied trial spoof, while ``eer`` stays the
    official value. A consequence of that tie order: when all scores are equal the EER
    is 1.0, not 0.5 (ROC AUC, which counts ties as one half, is 0.5).

    Parameters
    ----------
    labels : array-like, shape (n,)
        0/1, bools or ``"bonafide"``/``"spoof"``; spoof is positive.
    scores : array-like, shape (n,)
        Finite scores, higher = more likely spoof.

    Returns
    -------
    eer : float
        In [0, 1].
    threshold : float
        In our score space, as described above.

    Raises
    ------
    MetricError
        Empty, length mismatch, NaN/Inf scores, unknown labels, or only one class.
    """
    is_spoof, values = _checked(labels, scores)
    _require_both_classes(is_spoof, "EER")
    eer, official_threshold = _official_eer(-values[~is_spoof], -values[is_spoof])
    return eer, -official_threshold


# --- ranking and threshold metrics -------------------------------------------------------


def roc_auc(labels: ArrayLike, scores: ArrayLike) -> float:
    """Area under the ROC curve, P(spoof scores above bona fide), ties counting one half.

    Computed as the Mann-Whitney U statistic from mid-ranks.

    Parameters
    ----------
    labels : array-like, shape (n,)
    scores : array-like, shape (n,)
        Higher = more likely spoof.

    Returns
    -------
    float
        In [0, 1]; 0.5 when all scores are equal.

    Raises
    ------
    MetricError
        Empty, length mismatch, NaN/Inf scores, unknown labels, or only one class.
    """
    is_spoof, values = _checked(labels, scores)
    _require_both_classes(is_spoof, "ROC AUC")
    order = np.argsort(values, kind="mergesort")
    sorted_values = values[order]
    starts = np.concatenate(([0], np.flatnonzero(np.diff(sorted_values)) + 1))
    ends = np.concatenate((starts[1:], [values.size]))
    # 1-based ranks starts+1 .. ends share their mean.
    mid_ranks = np.empty(values.size)
    mid_ranks[order] = np.repeat((starts + 1 + ends) / 2.0, ends - starts)
    n_spoof = int(is_spoof.sum())
    n_bonafide = values.size - n_spoof
    u_spoof = mid_ranks[is_spoof].sum() - n_spoof * (n_spoof + 1) / 2.0
    return float(u_spoof / (n_spoof * n_bonafide))


def confusion_matrix(labels: ArrayLike, scores: ArrayLike, threshold: float) -> dict[str, int]:
    """Counts of the four outcomes of "predict spoof iff ``score >= threshold``".

    Parameters
    ----------
    labels : array-like, shape (n,)
    scores : array-like, shape (n,)
    threshold : float
        Any non-NaN value; ``-inf`` calls everything spoof, ``inf`` nothing.

    Returns
    -------
    dict
        ``tn``: bona fide called bona fide; ``fp``: bona fide called spoof (false alarm);
        ``fn``: spoof called bona fide (missed spoof); ``tp``: spoof called spoof.
        Plain ints summing to n.

    Raises
    ------
    MetricError
        Empty, length mismatch, NaN/Inf scores, unknown labels, NaN threshold.
    """
    is_spoof, values = _checked(labels, scores)
    called_spoof = values >= _checked_threshold(threshold)
    return {
        "tn": int(np.sum(~is_spoof & ~called_spoof)),
        "fp": int(np.sum(~is_spoof & called_spoof)),
        "fn": int(np.sum(is_spoof & ~called_spoof)),
        "tp": int(np.sum(is_spoof & called_spoof)),
    }


def accuracy(labels: ArrayLike, scores: ArrayLike, threshold: float) -> float:
    """Fraction of trials called correctly at ``threshold`` (spoof iff ``score >= threshold``)."""
    c = confusion_matrix(labels, scores, threshold)
    return (c["tp"] + c["tn"]) / sum(c.values())


def precision(labels: ArrayLike, scores: ArrayLike, threshold: float) -> float:
    """Fraction of trials called spoof that are spoof; 0.0 when nothing is called spoof.

    (0.0 for the undefined case matches scikit-learn's default ``zero_division``.)
    """
    c = confusion_matrix(labels, scores, threshold)
    called_spoof = c["tp"] + c["fp"]
    return c["tp"] / called_spoof if called_spoof else 0.0


def recall(labels: ArrayLike, scores: ArrayLike, threshold: float) -> float:
    """Fraction of spoof trials called spoof (detection rate).

    Raises
    ------
    MetricError
        Also when there are no spoof trials, since the rate is then undefined.
    """
    c = confusion_matrix(labels, scores, threshold)
    n_spoof = c["tp"] + c["fn"]
    if n_spoof == 0:
        raise MetricError("recall needs spoof trials; all trials are 'bonafide'")
    return c["tp"] / n_spoof


def f1_score(labels: ArrayLike, scores: ArrayLike, threshold: float) -> float:
    """Harmonic mean of precision and recall; 0.0 when no spoof is called correctly.

    Raises
    ------
    MetricError
        Also when there are no spoof trials.
    """
    c = confusion_matrix(labels, scores, threshold)
    if c["tp"] + c["fn"] == 0:
        raise MetricError("F1 needs spoof trials; all trials are 'bonafide'")
    # 2PR/(P+R) written with counts, which needs no special case for P = 0.
    return 2 * c["tp"] / (2 * c["tp"] + c["fp"] + c["fn"])


def false_alarm_rate(labels: ArrayLike, scores: ArrayLike, threshold: float) -> float:
    """Fraction of bona fide trials called spoof at ``threshold``.

    Raises
    ------
    MetricError
        Also when there are no bona fide trials.
    """
    c = confusion_matrix(labels, scores, threshold)
    n_bonafide = c["tn"] + c["fp"]
    if n_bonafide == 0:
        raise MetricError("the false-alarm rate needs bonafide trials; all trials are 'spoof'")
    return c["fp"] / n_bonafide


def per_attack_eer(labels: ArrayLike, scores: ArrayLike, attacks: ArrayLike) -> dict[str, float]:
    """EER of each attack's spoofs against all bona fide trials.

    Parameters
    ----------
    labels : array-like, shape (n,)
    scores : array-like, shape (n,)
    attacks : array-like, shape (n,)
        Attack (generating system) of each trial; read only on spoof rows, so bona fide
        rows may hold anything (``"-"``, ``None``, ...).

    Returns
    -------
    dict
        ``{str(attack): eer}`` sorted by attack name; EERs as in :func:`compute_eer`.

    Raises
    ------
    MetricError
        The checks of :func:`compute_eer`, ``attacks`` of the wrong length, or a spoof
        row whose attack is missing (None or NaN).
    """
    is_spoof, values = _checked(labels, scores)
    _require_both_classes(is_spoof, "per-attack EER")
    attack_arr = np.asarray(attacks, dtype=object)
    if attack_arr.ndim != 1 or attack_arr.size != values.size:
        raise MetricError(
            f"attacks must be one per trial; got shape {attack_arr.shape} for {values.size} trials"
        )
    spoof_rows = np.flatnonzero(is_spoof)
    names = []
    for i in spoof_rows:
        attack = attack_arr[i]
        if attack is None or (isinstance(attack, float) and math.isnan(attack)):
            raise MetricError(f"spoof trial at index {int(i)} has no attack name; label it")
        names.append(str(attack))
    names_arr = np.asarray(names, dtype=object)
    bonafide_official = -values[~is_spoof]
    result = {}
    for name in sorted(set(names)):
        spoof_official = -values[spoof_rows[names_arr == name]]
        result[name] = _official_eer(bonafide_official, spoof_official)[0]
    return result


# --- tandem detection cost function (ASVspoof 2019) -----------------------------------------


@dataclasses.dataclass(frozen=True)
class TDCFCostModel:
    """ASVspoof 2019 t-DCF cost model; defaults are the challenge's.

    Priors are written as the official script computes them, so they are bit-identical.
    """

    p_spoof: float = 0.05
    p_target: float = (1 - 0.05) * 0.99
    p_nontarget: float = (1 - 0.05) * 0.01
    c_miss_asv: float = 1.0
    c_fa_asv: float = 10.0
    c_miss_cm: float = 1.0
    c_fa_cm: float = 10.0


def min_tdcf(
    labels: ArrayLike,
    scores: ArrayLike,
    asv_target_scores: ArrayLike,
    asv_nontarget_scores: ArrayLike,
    asv_spoof_scores: ArrayLike,
    *,
    cost_model: TDCFCostModel | None = None,
) -> float:
    """Normalised minimum t-DCF of a CM in tandem with a fixed ASV, as ASVspoof 2019.

    Follows ``evaluate_tDCF_asvspoof19.py`` and ``compute_tDCF`` of ``tDCF_python_v1``:
    the ASV threshold is the official EER threshold of target vs nontarget ASV scores;
    at it ``Pfa_asv = mean(nontarget >= thr)``, ``Pmiss_asv = mean(target < thr)``,
    ``Pmiss_spoof_asv = mean(spoof < thr)``; then ``C1 = Ptar (Cmiss_cm - Cmiss_asv
    Pmiss_asv) - Pnon Cfa_asv Pfa_asv``, ``C2 = Cfa_cm Pspoof (1 - Pmiss_spoof_asv)`` and
    the result is ``min_k (C1 Pmiss_cm[k] + C2 Pfa_cm[k]) / min(C1, C2)`` over the CM DET
    curve. 0 means a perfect CM; 1 or more means the CM is no better than none.

    Parameters
    ----------
    labels : array-like, shape (n,)
        CM trial labels (spoof positive).
    scores : array-like, shape (n,)
        CM scores, higher = more likely spoof; at least 3 distinct values (the official
        check that these are soft scores, not decisions).
    asv_target_scores, asv_nontarget_scores, asv_spoof_scores : array-like, shape (m_*,)
        ASV scores of target, zero-effort nontarget and spoof trials, in the ASV's own
        convention (higher = more likely the claimed speaker). None may be empty.
    cost_model : TDCFCostModel, optional
        Defaults to the ASVspoof 2019 model.

    Returns
    -------
    float

    Raises
    ------
    MetricError
        Bad CM inputs (as :func:`compute_eer`), fewer than 3 distinct CM scores, empty or
        non-finite ASV scores, priors that are negative or do not sum to 1, or ASV error
        rates giving a negative or zero weight (the official code exits on a negative
        one; a zero one would divide by zero).
    """
    model = cost_model if cost_model is not None else TDCFCostModel()
    is_spoof, values = _checked(labels, scores)
    _require_both_classes(is_spoof, "min t-DCF")
    if np.unique(values).size < 3:
        raise MetricError(
            "min t-DCF needs soft CM scores with at least 3 distinct values, not decisions"
        )
    tar_asv = _finite_scores(asv_target_scores, "asv_target_scores")
    non_asv = _finite_scores(asv_nontarget_scores, "asv_nontarget_scores")
    spoof_asv = _finite_scores(asv_spoof_scores, "asv_spoof_scores")
    for name, arr in (("target", tar_asv), ("nontarget", non_asv), ("spoof", spoof_asv)):
        if arr.size == 0:
            raise MetricError(f"min t-DCF needs ASV scores of {name} trials; none were given")
    priors = (model.p_target, model.p_nontarget, model.p_spoof)
    if min(priors) < 0 or abs(sum(priors) - 1) > 1e-10:
        raise MetricError(f"t-DCF priors must be non-negative and sum to 1; got {priors}")
    costs = (model.c_miss_asv, model.c_fa_asv, model.c_miss_cm, model.c_fa_cm)
    if min(costs) < 0:
        warnings.warn(f"t-DCF costs are usually positive; got {costs}", stacklevel=2)

    _, asv_threshold = _official_eer(tar_asv, non_asv)
    pfa_asv = np.count_nonzero(non_asv >= asv_threshold) / non_asv.size
    pmiss_asv = np.count_nonzero(tar_asv < asv_threshold) / tar_asv.size
    pmiss_spoof_asv = np.count_nonzero(spoof_asv < asv_threshold) / spoof_asv.size

    pmiss_cm, pfa_cm, _ = _official_det_curve(-values[~is_spoof], -values[is_spoof])
    c1 = model.p_target * (model.c_miss_cm - model.c_miss_asv * pmiss_asv) - (
        model.p_nontarget * model.c_fa_asv * pfa_asv
    )
    c2 = model.c_fa_cm * model.p_spoof * (1 - pmiss_spoof_asv)
    if c1 < 0 or c2 < 0 or min(c1, c2) == 0:
        raise MetricError(
            f"t-DCF weights must be positive, got C1={c1:.6g}, C2={c2:.6g} from ASV rates "
            f"Pfa={pfa_asv:.4g}, Pmiss={pmiss_asv:.4g}, Pmiss_spoof={pmiss_spoof_asv:.4g}; "
            "check the ASV scores (C2 is 0 when the ASV rejects every spoof)"
        )
    tdcf_norm = (c1 * pmiss_cm + c2 * pfa_cm) / np.minimum(c1, c2)
    return float(tdcf_norm.min())


# --- everything at once ----------------------------------------------------------------------


def evaluate(
    labels: ArrayLike,
    scores: ArrayLike,
    *,
    threshold: float | None = None,
    attacks: ArrayLike | None = None,
    asv_scores: Mapping[str, ArrayLike] | None = None,
) -> dict[str, Any]:
    """All quality metrics of one set of CM scores, as a JSON-serialisable dict.

    Parameters
    ----------
    labels : array-like, shape (n,)
    scores : array-like, shape (n,)
        Higher = more likely spoof.
    threshold : float, optional
        Operating point of the threshold metrics (spoof iff ``score >= threshold``);
        default the EER threshold of :func:`compute_eer`.
    attacks : array-like, shape (n,), optional
        Attack of each trial; adds ``per_attack_eer``.
    asv_scores : mapping, optional
        ``{"target": ..., "nontarget": ..., "spoof": ...}`` ASV scores; adds ``min_tdcf``.

    Returns
    -------
    dict
        ``eer``, ``eer_threshold``, ``threshold`` (the one used), ``auc``, ``accuracy``,
        ``precision``, ``recall``, ``f1``, ``false_alarm_rate``, ``confusion``
        (see :func:`confusion_matrix`), ``n_bonafide``, ``n_spoof``, and
        ``per_attack_eer`` / ``min_tdcf`` when asked for. Plain floats and ints.

    Raises
    ------
    MetricError
        As the metrics it computes; both classes are always needed.
    """
    is_spoof, values = _checked(labels, scores)
    _require_both_classes(is_spoof, "evaluation")
    eer, eer_threshold = compute_eer(is_spoof, values)
    used = eer_threshold if threshold is None else _checked_threshold(threshold)
    result: dict[str, Any] = {
        "eer": eer,
        "eer_threshold": eer_threshold,
        "threshold": used,
        "auc": roc_auc(is_spoof, values),
        "accuracy": accuracy(is_spoof, values, used),
        "precision": precision(is_spoof, values, used),
        "recall": recall(is_spoof, values, used),
        "f1": f1_score(is_spoof, values, used),
        "false_alarm_rate": false_alarm_rate(is_spoof, values, used),
        "confusion": confusion_matrix(is_spoof, values, used),
        "n_bonafide": int((~is_spoof).sum()),
        "n_spoof": int(is_spoof.sum()),
    }
    if attacks is not None:
        result["per_attack_eer"] = per_attack_eer(is_spoof, values, attacks)
    if asv_scores is not None:
        missing = {"target", "nontarget", "spoof"} - set(asv_scores)
        if missing:
            raise MetricError(
                f"asv_scores needs keys 'target', 'nontarget', 'spoof'; missing {sorted(missing)}"
            )
        result["min_tdcf"] = min_tdcf(
            is_spoof,
            values,
            asv_scores["target"],
            asv_scores["nontarget"],
            asv_scores["spoof"],
        )
    return result

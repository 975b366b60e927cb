"""Window scores → file scores → decisions: the rules, each written once.

* A file's ``spoof_score`` is the mean of its windows' fused scores
  (:func:`file_scores`); the scorer, bundle calibration and training all call it.
* A file is called spoof when its score is ``>= threshold``.
* A threshold is chosen either at the equal-error-rate point of labelled scores
  (:func:`threshold_at_eer`) or for a target false-alarm rate on bona fide scores
  (:func:`threshold_at_false_alarm_rate`), the rule the shipped bundle uses: an EER point
  found on one data set moves with the class balance and the generators it happened to
  hold, a false-alarm budget on real speech is what a user can plan with.
"""

from __future__ import annotations

import numpy as np

from spoofray.errors import ConfigError, MetricError


def file_scores(window_scores: np.ndarray, file_index: np.ndarray) -> np.ndarray:
    """Mean window score per file.

    Parameters
    ----------
    window_scores : ndarray, shape (n_windows,)
    file_index : ndarray of int, shape (n_windows,)
        Which file (0..n_files-1) each window belongs to; every file has a window.

    Returns
    -------
    ndarray of float64, shape (n_files,)
    """
    index = np.asarray(file_index, dtype=np.int64)
    counts = np.bincount(index)
    if np.any(counts == 0):
        raise ConfigError("file_scores: some file index has no window; number files 0..n-1")
    return np.bincount(index, weights=np.asarray(window_scores, np.float64)) / counts


def file_score(window_scores: np.ndarray) -> float:
    """The score of one file from its windows' scores (see :func:`file_scores`)."""
    return float(file_scores(window_scores, np.zeros(len(window_scores), np.int64))[0])


def decide(score: float, threshold: float) -> str:
    """``"spoof"`` when ``score >= threshold``, else ``"bonafide"``."""
    return "spoof" if score >= threshold else "bonafide"


def threshold_at_eer(labels: np.ndarray, scores: np.ndarray) -> tuple[float, float]:
    """The threshold at the equal-error-rate point of labelled scores.

    Parameters
    ----------
    labels : ndarray, shape (n,)
        1 = spoof, 0 = bona fide.
    scores : ndarray, shape (n,)
        Higher = more likely spoof.

    Returns
    -------
    threshold : float
        Scores ``>= threshold`` are called spoof.
    eer : float
    """
    from spoofray.metrics import compute_eer

    eer, threshold = compute_eer(np.asarray(labels), np.asarray(scores, dtype=np.float64))
    return float(threshold), float(eer)


def threshold_at_false_alarm_rate(bonafide_scores: np.ndarray, target: float
                                  ) -> tuple[float, float]:
    """The lowest threshold that flags at most ``target`` of these bona fide scores.

    With ``n`` scores, at most ``floor(target * n)`` may reach the threshold; the threshold
    sits just above the next score, so ties never push the rate over the budget.

    Returns
    -------
    threshold : float
        In [0, 1] for scores in [0, 1].
    false_alarm_rate : float
        The fraction of ``bonafide_scores`` that are ``>= threshold``.

    Raises
    ------
    MetricError
        No scores, or non-finite scores.
    """
    s = np.sort(np.asarray(bonafide_scores, dtype=np.float64))[::-1]
    if s.size == 0 or not np.all(np.isfinite(s)):
        raise MetricError("a false-alarm threshold needs finite bona fide scores; got "
                          f"{s.size} scores ({int(np.sum(~np.isfinite(s)))} non-finite)")
    if not 0.0 <= target < 1.0:
        raise ConfigError(f"target false-alarm rate must be in [0, 1), got {target}")
    allowed = int(np.floor(target * s.size + 1e-9))
    threshold = float(np.nextafter(s[allowed], np.inf))
    return threshold, float(np.mean(s >= threshold))

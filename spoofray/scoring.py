"""Window scores → file scores → decisions: the rules, each written once.

* A file's ``spoof_score`` is the mean of its windows' fused scores
  (:func:`file_scores`); the scorer, bundle calibration and training all call it.
* A file is called spoof when its score is ``>= threshold``.
* A threshold is chosen either at the equal-error-rate point of labelled scores
  (:func:`threshold_at_eer`) or for a target false-alarm rate on bona fide scores
  (:func:`threshold_at_false_alarm_rate`), the rule the shipped bundle uses: an EER point
  found on one data set moves with the class balance and the generators it happened to
  hold, a false-alarm budget on real speech is what a user can plan with.
* A long recording with a short generated insert keeps a low mean. The segment rule
  (:class:`SegmentRule`) flags a file when ``k`` consecutive windows each score
  ``>= segment threshold``; a file is called spoof when its mean or its segment rule fires,
  and :func:`decision_rule` says which. Windows over the segment threshold, merged into
  spans (:func:`suspicious_spans`), are the report's ``segments``. The segment threshold
  is calibrated like the file threshold, for a false-alarm budget on long real recordings
  (:func:`run_score`, ``experiments/segment_rule.py``) and recorded in the bundle; bundles
  without one get the documented default of :func:`segment_rule_of`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

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


# --- suspicious segments and the segment rule ----------------------------------------------

#: ``k`` of the segment rule for bundles whose bundle.json records none (made before the
#: rule existed): three consecutive windows, 8 s of audio with the default 4 s windows and
#: 2 s hop. Their segment threshold is the run's file threshold (:func:`segment_rule_of`).
DEFAULT_SEGMENT_K = 3
#: ``decision_rule`` values: which rule flagged a file (None when neither fired).
FILE_MEAN, SEGMENT_RULE = "file_mean", "segment_rule"


@dataclasses.dataclass(frozen=True)
class SegmentRule:
    """Flag a file when ``k`` consecutive windows each score ``>= threshold``.

    Windows scoring ``>= threshold`` are also what the report's ``segments`` table lists
    (merged into spans), whether or not ``k`` of them follow each other.

    Attributes
    ----------
    threshold : float
        Window-score threshold, in [0, 1].
    k : int
        Consecutive windows that must reach it (>= 1).
    method : str
        Where the numbers came from (``bundle`` calibration, ``derived`` default, ``user``).
    """

    threshold: float
    k: int
    method: str = "bundle"

    def __post_init__(self) -> None:
        if not (math.isfinite(self.threshold) and 0.0 <= self.threshold <= 1.0):
            raise ConfigError(f"segment threshold must be in [0, 1], got {self.threshold}")
        if isinstance(self.k, bool) or not isinstance(self.k, (int, np.integer)) or self.k < 1:
            raise ConfigError(f"segment rule k must be an int >= 1, got {self.k!r}")

    def to_dict(self) -> dict[str, Any]:
        return {"threshold": float(self.threshold), "k": int(self.k), "method": self.method}


def segment_rule_of(manifest: Mapping[str, Any], file_threshold: float, *,
                    threshold: float | None = None, k: int | None = None) -> SegmentRule:
    """The segment rule a run uses with a bundle.

    Parameters
    ----------
    manifest : mapping
        ``bundle.json``; its ``segment_rule`` (``{"threshold", "k", ...}``) when it has one.
    file_threshold : float
        The run's file threshold (the bundle's, or ``--threshold``).
    threshold, k : optional
        Overrides (``--segment-threshold``, ``--segment-k``).

    Returns
    -------
    SegmentRule
        The bundle's calibrated rule; for a bundle without one, ``threshold`` = the file
        threshold and ``k`` = :data:`DEFAULT_SEGMENT_K` (method ``derived``): a run of
        windows each as suspicious as a whole flagged file. Overrides win (method ``user``).
    """
    recorded = manifest.get("segment_rule")
    if recorded:
        rule = SegmentRule(float(recorded["threshold"]), int(recorded["k"]), "bundle")
    else:
        rule = SegmentRule(float(file_threshold), DEFAULT_SEGMENT_K, "derived")
    if threshold is not None or k is not None:
        rule = SegmentRule(rule.threshold if threshold is None else float(threshold),
                           rule.k if k is None else int(k), "user")
    return rule


def run_score(window_scores: np.ndarray, k: int) -> float:
    """The highest score that ``k`` consecutive windows all reach: the max over runs of
    ``k`` windows of the run's lowest score (``-inf`` with fewer than ``k`` windows).

    The segment rule fires exactly when this is ``>= rule.threshold``, so a threshold for
    a false-alarm budget is :func:`threshold_at_false_alarm_rate` of the run scores of
    real recordings.
    """
    s = np.asarray(window_scores, dtype=np.float64)
    if s.size < k:
        return float("-inf")
    return float(np.lib.stride_tricks.sliding_window_view(s, k).min(axis=1).max())


def suspicious_spans(window_scores: np.ndarray, start_s: np.ndarray, end_s: np.ndarray,
                     threshold: float) -> list[tuple[float, float, float, int]]:
    """Windows scoring ``>= threshold``, merged into spans where they overlap or touch.

    Returns
    -------
    list of (start_s, end_s, score, n_windows)
        In time order; ``score`` is the span's highest window score.
    """
    s = np.asarray(window_scores, dtype=np.float64)
    spans: list[list[float]] = []
    for i in np.flatnonzero(s >= threshold):
        a, b = float(start_s[i]), float(end_s[i])
        if spans and a <= spans[-1][1]:
            last = spans[-1]
            last[1], last[2], last[3] = max(last[1], b), max(last[2], float(s[i])), last[3] + 1
        else:
            spans.append([a, b, float(s[i]), 1])
    return [(a, b, sc, int(n)) for a, b, sc, n in spans]


def decision_rule(score: float, window_scores: np.ndarray, threshold: float,
                  rule: SegmentRule) -> str | None:
    """Which rules flag a file: ``"file_mean"`` (its score ``>= threshold``),
    ``"segment_rule"`` (``rule.k`` consecutive windows ``>= rule.threshold``), both joined
    by ``+``, or None (bona fide)."""
    fired = [name for name, hit in ((FILE_MEAN, score >= threshold),
                                    (SEGMENT_RULE, run_score(window_scores, rule.k)
                                     >= rule.threshold)) if hit]
    return "+".join(fired) or None


def label_of(rule_fired: str | None) -> str:
    """``"spoof"`` when any rule fired, else ``"bonafide"``."""
    return "spoof" if rule_fired else "bonafide"


def channel_rollup(channel_scores: Sequence[float], channel_rules: Sequence[str | None]
                   ) -> tuple[float, str | None]:
    """A multi-channel file's roll-up from its channels scored apart: its score is the
    highest channel score, and it is flagged when any channel is, by the rules that fired
    in any channel (``decision_rule`` order, ``+``-joined).

    Returns
    -------
    spoof_score : float
    decision_rule : str or None
    """
    fired = {name for r in channel_rules if r for name in r.split("+")}
    rule = "+".join(n for n in (FILE_MEAN, SEGMENT_RULE) if n in fired) or None
    return float(max(channel_scores)), rule

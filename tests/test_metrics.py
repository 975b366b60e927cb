"""Tests of spoofray.metrics: hand-derived cases, the official ASVspoof code, sklearn."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn import metrics as skm

from spoofray import metrics
from spoofray.errors import MetricError

# --- transcription of the official ASVspoof 2019 eval_metrics.py (tDCF_python_v1) ---------
# Same statements as the original (bona fide = target, higher = more bona fide); used only
# as the oracle the module must match bit for bit.


def official_compute_det_curve(target_scores, nontarget_scores):
    n_scores = target_scores.size + nontarget_scores.size
    all_scores = np.concatenate((target_scores, nontarget_scores))
    labels = np.concatenate((np.ones(target_scores.size), np.zeros(nontarget_scores.size)))
    indices = np.argsort(all_scores, kind="mergesort")
    labels = labels[indices]
    tar_trial_sums = np.cumsum(labels)
    nontarget_trial_sums = nontarget_scores.size - (np.arange(1, n_scores + 1) - tar_trial_sums)
    frr = np.concatenate((np.atleast_1d(0), tar_trial_sums / target_scores.size))
    far = np.concatenate((np.atleast_1d(1), nontarget_trial_sums / nontarget_scores.size))
    thresholds = np.concatenate(
        (np.atleast_1d(all_scores[indices[0]] - 0.001), all_scores[indices])
    )
    return frr, far, thresholds


def official_compute_eer(target_scores, nontarget_scores):
    frr, far, thresholds = official_compute_det_curve(target_scores, nontarget_scores)
    abs_diffs = np.abs(frr - far)
    min_index = np.argmin(abs_diffs)
    eer = np.mean((frr[min_index], far[min_index]))
    return eer, thresholds[min_index]


def official_obtain_asv_error_rates(tar_asv, non_asv, spoof_asv, asv_threshold):
    Pfa_asv = sum(non_asv >= asv_threshold) / non_asv.size
    Pmiss_asv = sum(tar_asv < asv_threshold) / tar_asv.size
    Pmiss_spoof_asv = np.sum(spoof_asv < asv_threshold) / spoof_asv.size
    return Pfa_asv, Pmiss_asv, Pmiss_spoof_asv


def official_min_tdcf(bona_cm, spoof_cm, tar_asv, non_asv, spoof_asv):
    Pspoof = 0.05
    cost_model = {
        "Pspoof": Pspoof,
        "Ptar": (1 - Pspoof) * 0.99,
        "Pnon": (1 - Pspoof) * 0.01,
        "Cmiss_asv": 1,
        "Cfa_asv": 10,
        "Cmiss_cm": 1,
        "Cfa_cm": 10,
    }
    _, asv_threshold = official_compute_eer(tar_asv, non_asv)
    Pfa_asv, Pmiss_asv, Pmiss_spoof_asv = official_obtain_asv_error_rates(
        tar_asv, non_asv, spoof_asv, asv_threshold
    )
    Pmiss_cm, Pfa_cm, _ = official_compute_det_curve(bona_cm, spoof_cm)
    C1 = cost_model["Ptar"] * (cost_model["Cmiss_cm"] - cost_model["Cmiss_asv"] * Pmiss_asv) - \
        cost_model["Pnon"] * cost_model["Cfa_asv"] * Pfa_asv
    C2 = cost_model["Cfa_cm"] * cost_model["Pspoof"] * (1 - Pmiss_spoof_asv)
    tDCF = C1 * Pmiss_cm + C2 * Pfa_cm
    tDCF_norm = tDCF / np.minimum(C1, C2)
    return tDCF_norm[np.argmin(tDCF_norm)]


def _random_trials(rng, n_bonafide, n_spoof, decimals=None):
    """Labels (spoof=1) and scores, spoofs shifted up; rounding makes ties."""
    scores = np.concatenate((rng.normal(0, 1, n_bonafide), rng.normal(1, 1, n_spoof)))
    if decimals is not None:
        scores = np.round(scores, decimals)
    labels = np.concatenate((np.zeros(n_bonafide, int), np.ones(n_spoof, int)))
    perm = rng.permutation(labels.size)
    return labels[perm], scores[perm]


# --- EER by hand ------------------------------------------------------------------------------


def test_eer_perfectly_separated_is_zero():
    # Official view (negated): bona fide -0.1, -0.2; spoof -0.8, -0.9. Sorted: s s b b.
    # k=2 rejects the two spoofs: frr=0, far=0 -> EER 0 at official threshold -0.8.
    assert metrics.compute_eer([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9]) == (0.0, 0.8)


def test_eer_four_plus_four_by_hand():
    # bona fide 0.1 0.3 0.5 0.7, spoof 0.4 0.6 0.8 0.9. Negated and sorted ascending:
    #   -0.9s -0.8s -0.7b -0.6s -0.5b -0.4s -0.3b -0.1b
    # k (number rejected)  0     1     2     3     4
    # frr (bona rejected)  0     0     0     1/4   1/4
    # far (spoof accepted) 1     3/4   1/2   1/2   1/4
    # |frr - far| first reaches its minimum 0 at k=4: EER 1/4, official threshold -0.6.
    labels = [0, 0, 0, 0, 1, 1, 1, 1]
    scores = [0.1, 0.3, 0.5, 0.7, 0.4, 0.6, 0.8, 0.9]
    eer, threshold = metrics.compute_eer(labels, scores)
    assert (eer, threshold) == (0.25, 0.6)
    # The threshold means "spoof iff score >= 0.6": 1 of 4 bona fide called spoof (0.7),
    # 1 of 4 spoofs missed (0.4).
    confusion = metrics.confusion_matrix(labels, scores, threshold)
    assert confusion == {"tn": 3, "fp": 1, "fn": 1, "tp": 3}


def test_eer_ties_split_bonafide_first_as_the_official_code():
    # bona fide 0.2 0.5, spoof 0.5 0.8; negated: b=-0.2,-0.5 s=-0.5,-0.8. The stable sort
    # puts the tied bona fide (-0.5) before the tied spoof: -0.8s -0.5b -0.5s -0.2b.
    # k=2: frr=1/2, far=1/2 -> EER 0.5 at official threshold -0.5 (a threshold-only curve,
    # counting the tie together, would give 0.25 instead).
    assert metrics.compute_eer([0, 0, 1, 1], [0.2, 0.5, 0.5, 0.8]) == (0.5, 0.5)


def test_eer_all_scores_equal_is_one_under_official_tie_order():
    # All tied: sorted b b b s s. k=3 rejects all bona fide while all spoofs are still
    # accepted: frr=1, far=1, |diff|=0 -> EER 1.0 (k<3 has far=1, frr<1). The official
    # package gives 1.0, not 0.5; AUC, which counts ties as 1/2, gives 0.5.
    labels, scores = [0, 0, 0, 1, 1], [0.3] * 5
    assert metrics.compute_eer(labels, scores) == (1.0, 0.3)
    eer, threshold = official_compute_eer(np.full(3, -0.3), np.full(2, -0.3))
    assert (eer, -threshold) == (1.0, 0.3)
    assert metrics.roc_auc(labels, scores) == 0.5


def test_eer_inverted_scores_is_one():
    # Spoofs score below every bona fide. Negated, sorted: -0.9b -0.8b -0.2s -0.1s.
    # k=2 rejects both bona fide while both spoofs are accepted: frr=1, far=1 -> EER 1.0
    # at official threshold -0.8 (k=0 and k=4 have |diff| 1).
    assert metrics.compute_eer([1, 1, 0, 0], [0.1, 0.2, 0.8, 0.9]) == (1.0, 0.8)


@pytest.mark.parametrize(
    "labels",
    [
        [0, 0, 0, 0, 1, 1, 1, 1],
        [False] * 4 + [True] * 4,
        ["bonafide"] * 4 + ["spoof"] * 4,
        np.array(["bonafide"] * 4 + ["spoof"] * 4, dtype=object),
        np.array([0.0] * 4 + [1.0] * 4),
    ],
)
def test_label_spellings_agree(labels):
    assert metrics.compute_eer(labels, [0.1, 0.3, 0.5, 0.7, 0.4, 0.6, 0.8, 0.9]) == (0.25, 0.6)


# --- exact agreement with the official code -----------------------------------------------


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("decimals", [None, 1, 0])
def test_eer_and_det_match_official_code_exactly(seed, decimals):
    rng = np.random.default_rng(seed)
    n_bonafide, n_spoof = rng.integers(1, 300, size=2)
    labels, scores = _random_trials(rng, n_bonafide, n_spoof, decimals)
    bona, spoof = -scores[labels == 0], -scores[labels == 1]

    eer, threshold = metrics.compute_eer(labels, scores)
    official_eer, official_threshold = official_compute_eer(bona, spoof)
    assert eer == official_eer
    assert threshold == -official_threshold

    frr, far, thresholds = metrics.compute_det_curve(labels, scores)
    official = official_compute_det_curve(bona, spoof)
    np.testing.assert_array_equal(frr, official[0])
    np.testing.assert_array_equal(far, official[1])
    np.testing.assert_array_equal(thresholds, -official[2])


@pytest.mark.parametrize("seed", range(5))
def test_eer_threshold_realises_the_eer_point_without_ties(seed):
    labels, scores = _random_trials(np.random.default_rng(seed), 200, 150)
    eer, threshold = metrics.compute_eer(labels, scores)
    called_spoof = scores >= threshold
    false_alarm = called_spoof[labels == 0].mean()
    miss = (~called_spoof[labels == 1]).mean()
    assert (false_alarm + miss) / 2 == pytest.approx(eer, abs=1e-15)

    frr, far, thresholds = metrics.compute_det_curve(labels, scores)
    assert np.all(np.diff(thresholds) <= 0)
    for k in range(thresholds.size):
        assert frr[k] == pytest.approx((scores[labels == 0] >= thresholds[k]).mean(), abs=1e-15)
        assert far[k] == pytest.approx((scores[labels == 1] < thresholds[k]).mean(), abs=1e-15)


# --- AUC and threshold metrics -------------------------------------------------------------


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("decimals", [None, 1])
def test_auc_matches_sklearn(seed, decimals):
    labels, scores = _random_trials(np.random.default_rng(seed), 120, 80, decimals)
    expected = skm.roc_auc_score(labels, scores)
    assert metrics.roc_auc(labels, scores) == pytest.approx(expected, abs=1e-12)


def test_auc_by_hand():
    # Pairs (spoof, bona fide): 0.4 beats 0.1; 0.5 ties 0.5, beats 0.1; 0.9 beats both.
    # (1 + 1.5 + 2) / (3 * 2) = 0.75
    assert metrics.roc_auc([0, 0, 1, 1, 1], [0.1, 0.5, 0.4, 0.5, 0.9]) == 0.75


def test_threshold_metrics_by_hand():
    labels = ["bonafide", "bonafide", "bonafide", "spoof", "spoof"]
    scores = [0.1, 0.6, 0.7, 0.5, 0.9]
    # At 0.6: bona fide 0.6, 0.7 called spoof (fp=2), 0.1 not (tn=1); spoof 0.9 caught
    # (tp=1), 0.5 missed (fn=1). >= makes the 0.6 trial spoof.
    assert metrics.confusion_matrix(labels, scores, 0.6) == {"tn": 1, "fp": 2, "fn": 1, "tp": 1}
    assert metrics.accuracy(labels, scores, 0.6) == 2 / 5
    assert metrics.precision(labels, scores, 0.6) == 1 / 3
    assert metrics.recall(labels, scores, 0.6) == 1 / 2
    p, r = 1 / 3, 1 / 2
    assert metrics.f1_score(labels, scores, 0.6) == pytest.approx(2 * p * r / (p + r))
    assert metrics.false_alarm_rate(labels, scores, 0.6) == 2 / 3
    # Nothing called spoof: precision is defined as 0, as sklearn's default.
    assert metrics.precision(labels, scores, math.inf) == 0.0
    assert metrics.f1_score(labels, scores, math.inf) == 0.0


@pytest.mark.parametrize("threshold", [-1.0, 0.0, 0.3, 0.55, 2.0])
def test_threshold_metrics_match_sklearn(threshold):
    labels, scores = _random_trials(np.random.default_rng(7), 60, 40, decimals=1)
    predicted = (scores >= threshold).astype(int)
    pairs = [
        (metrics.accuracy, skm.accuracy_score),
        (metrics.precision, lambda y, p: skm.precision_score(y, p, zero_division=0)),
        (metrics.recall, lambda y, p: skm.recall_score(y, p, zero_division=0)),
        (metrics.f1_score, lambda y, p: skm.f1_score(y, p, zero_division=0)),
    ]
    for ours, theirs in pairs:
        assert ours(labels, scores, threshold) == pytest.approx(theirs(labels, predicted))
    tn, fp, fn, tp = skm.confusion_matrix(labels, predicted, labels=[0, 1]).ravel()
    confusion = metrics.confusion_matrix(labels, scores, threshold)
    assert confusion == {"tn": tn, "fp": fp, "fn": fn, "tp": tp}


# --- per-attack EER -------------------------------------------------------------------------


def test_per_attack_eer_by_hand():
    # Bona fide 0.1 0.3 0.5 0.7 against each attack:
    #   A01 spoofs 0.8 0.9 lie above every bona fide -> EER 0.
    #   A02 spoofs 0.2 0.4. Negated, sorted: -0.7b -0.5b -0.4s -0.3b -0.2s -0.1b;
    #   frr 0, 1/4, 1/2, 1/2 and far 1, 1, 1, 1/2 for k = 0..3 -> first |diff| 0 at k=3,
    #   EER 1/2.
    labels = [0, 0, 0, 0, 1, 1, 1, 1]
    scores = [0.1, 0.3, 0.5, 0.7, 0.8, 0.9, 0.2, 0.4]
    attacks = ["-", "-", None, "-", "A01", "A01", "A02", "A02"]
    assert metrics.per_attack_eer(labels, scores, attacks) == {"A01": 0.0, "A02": 0.5}


# --- min t-DCF ------------------------------------------------------------------------------

ASV_TARGET, ASV_NONTARGET, ASV_SPOOF = [2.0, 3.0], [0.0, 1.0], [1.5, 2.5]


def test_min_tdcf_by_hand():
    # ASV: official EER of target (2, 3) vs nontarget (0, 1) is at k=2, threshold 1.0 (the
    # highest rejected score). The official rates use ">= threshold" as accept, so
    # Pfa_asv = 1/2 (nontarget 1.0 passes), Pmiss_asv = 0, Pmiss_spoof_asv = 0.
    # C1 = 0.9405 * (1 - 0) - 0.0095 * 10 * 0.5 = 0.893; C2 = 10 * 0.05 * (1 - 0) = 0.5.
    # CM bona fide 0.9 0.1 0.2, spoof 0.5 0.6 0.7; negated, sorted: b s s s b b.
    # frr = 0 1/3 1/3 1/3 1/3 2/3 1, far = 1 1 2/3 1/3 0 0 0; (C1 frr + C2 far) / C2 is
    # smallest at k=4: C1 / 3 / C2.
    labels = [0, 0, 0, 1, 1, 1]
    scores = [0.9, 0.1, 0.2, 0.5, 0.6, 0.7]
    c1 = 0.9405 - 0.0095 * 10 * 0.5
    result = metrics.min_tdcf(labels, scores, ASV_TARGET, ASV_NONTARGET, ASV_SPOOF)
    assert result == pytest.approx(c1 / 3 / 0.5, rel=1e-12)


def test_min_tdcf_perfect_cm_is_zero():
    labels = [0, 0, 0, 1, 1, 1]
    scores = [0.1, 0.2, 0.3, 0.7, 0.8, 0.9]
    assert metrics.min_tdcf(labels, scores, ASV_TARGET, ASV_NONTARGET, ASV_SPOOF) == 0.0


@pytest.mark.parametrize("seed", range(5))
def test_min_tdcf_matches_official_code_exactly(seed):
    rng = np.random.default_rng(seed)
    labels, scores = _random_trials(rng, 150, 250, decimals=2)
    tar, non, spoof = rng.normal(3, 1, 80), rng.normal(0, 1, 200), rng.normal(1.5, 1.5, 120)
    expected = official_min_tdcf(-scores[labels == 0], -scores[labels == 1], tar, non, spoof)
    assert metrics.min_tdcf(labels, scores, tar, non, spoof) == expected


# --- evaluate -------------------------------------------------------------------------------


def test_evaluate_reports_plain_json_values():
    labels = [0, 0, 0, 0, 1, 1, 1, 1]
    scores = [0.1, 0.3, 0.5, 0.7, 0.4, 0.6, 0.8, 0.9]
    attacks = ["-"] * 4 + ["A01", "A02", "A01", "A02"]
    asv = {"target": ASV_TARGET, "nontarget": ASV_NONTARGET, "spoof": ASV_SPOOF}
    report = metrics.evaluate(labels, scores, attacks=attacks, asv_scores=asv)
    assert json.loads(json.dumps(report)) == report
    assert report["eer"] == 0.25 and report["eer_threshold"] == 0.6 and report["threshold"] == 0.6
    assert report["confusion"] == {"tn": 3, "fp": 1, "fn": 1, "tp": 3}
    assert (report["n_bonafide"], report["n_spoof"]) == (4, 4)
    assert report["accuracy"] == 0.75 and report["false_alarm_rate"] == 0.25
    assert set(report["per_attack_eer"]) == {"A01", "A02"}
    expected_tdcf = metrics.min_tdcf(labels, scores, ASV_TARGET, ASV_NONTARGET, ASV_SPOOF)
    assert report["min_tdcf"] == expected_tdcf
    assert all(type(v) in (float, int, dict) for v in report.values())

    at_half = metrics.evaluate(labels, scores, threshold=0.5)
    assert at_half["threshold"] == 0.5 and at_half["eer_threshold"] == 0.6
    assert at_half["confusion"] == {"tn": 2, "fp": 2, "fn": 1, "tp": 3}
    assert "per_attack_eer" not in at_half and "min_tdcf" not in at_half


# --- degenerate inputs ----------------------------------------------------------------------

OK_LABELS, OK_SCORES = [0, 0, 1, 1], [0.1, 0.2, 0.3, 0.4]
ASV_OK = ([2.0], [0.0], [1.0])
m = metrics

# (function, positional args, keyword args, message pattern)
DEGENERATE = [
    (m.compute_eer, ([], []), {}, "empty"),
    (m.compute_eer, ([0, 1, 1], [0.1, 0.2]), {}, "same length"),
    (m.compute_eer, ([0, 0], [0.1, 0.2]), {}, "both bonafide and spoof.*'bonafide'"),
    (m.compute_eer, (["spoof"] * 2, [0.1, 0.2]), {}, "both bonafide and spoof.*'spoof'"),
    (m.compute_eer, ([0, 1], [math.nan, 0.2]), {}, "NaN or Inf.*index 0"),
    (m.compute_eer, ([0, 1], [0.1, -math.inf]), {}, "NaN or Inf.*index 1"),
    (m.compute_eer, (["bonafide", "spooof"], [0.1, 0.2]), {}, "spooof"),
    (m.compute_eer, (["bonafide", "Spoof"], [0.1, 0.2]), {}, "Spoof"),
    (m.compute_eer, ([0, 2], [0.1, 0.2]), {}, r"numeric labels \[2\]"),
    (m.compute_eer, ([[0, 1]], [[0.1, 0.2]]), {}, "one-dimensional"),
    (m.compute_eer, ([0, 1], ["low", "high"]), {}, "real numbers"),
    (m.roc_auc, ([1, 1, 1], [0.1, 0.2, 0.3]), {}, "ROC AUC needs both"),
    (m.compute_det_curve, ([0], [0.1]), {}, "DET curve needs both"),
    (m.confusion_matrix, (OK_LABELS, OK_SCORES, math.nan), {}, "threshold must not be NaN"),
    (m.recall, ([0, 0], [0.1, 0.2], 0.5), {}, "recall needs spoof"),
    (m.f1_score, ([0, 0], [0.1, 0.2], 0.5), {}, "F1 needs spoof"),
    (m.false_alarm_rate, ([1, 1], [0.1, 0.2], 0.5), {}, "needs bonafide"),
    (m.per_attack_eer, (OK_LABELS, OK_SCORES, ["-", "A"]), {}, "one per trial"),
    (m.per_attack_eer, (OK_LABELS, OK_SCORES, ["-", "-", "A", None]), {}, "index 3 has no"),
    (m.min_tdcf, (OK_LABELS, [0.1, 0.1, 0.9, 0.9], *ASV_OK), {}, "3 distinct"),
    (m.min_tdcf, (OK_LABELS, OK_SCORES, [2.0], [0.0], []), {}, "ASV scores of spoof"),
    (m.min_tdcf, (OK_LABELS, OK_SCORES, [2.0], [math.nan], [1.0]), {}, "asv_nontarget_scores"),
    # The ASV rejects every spoof: C2 = 0 and the normalisation would divide by zero.
    (m.min_tdcf, (OK_LABELS, OK_SCORES, [2.0, 3.0], [0.0, 1.0], [-5.0]), {}, "C2=0"),
    (
        m.min_tdcf,
        (OK_LABELS, OK_SCORES, *ASV_OK),
        {"cost_model": m.TDCFCostModel(p_spoof=0.5)},
        "sum to 1",
    ),
    (m.evaluate, (OK_LABELS, OK_SCORES), {"asv_scores": {"target": [1.0]}}, "missing"),
    (m.evaluate, ([0, 0], [0.1, 0.2]), {}, "evaluation needs both"),
]


@pytest.mark.parametrize(("function", "args", "kwargs", "match"), DEGENERATE)
def test_degenerate_inputs_are_refused(function, args, kwargs, match):
    with pytest.raises(MetricError, match=match):
        function(*args, **kwargs)


# --- properties -------------------------------------------------------------------------------

_TRANSFORMS = [
    lambda x: 3.0 * x + 7.0,
    lambda x: x**3,
    lambda x: np.exp(x / 10.0),
    lambda x: np.arctan(x / 7.0),
]

_int_scores = st.lists(st.integers(-50, 50), min_size=1, max_size=30)


@settings(max_examples=150, deadline=None)
@given(bonafide=_int_scores, spoof=_int_scores, transform=st.sampled_from(_TRANSFORMS))
def test_eer_in_unit_interval_and_invariant_to_increasing_transforms(bonafide, spoof, transform):
    labels = np.array([0] * len(bonafide) + [1] * len(spoof))
    scores = np.array(bonafide + spoof, dtype=float)
    eer, _ = metrics.compute_eer(labels, scores)
    assert 0.0 <= eer <= 1.0
    assert metrics.compute_eer(labels, transform(scores))[0] == eer
    assert metrics.roc_auc(labels, transform(scores)) == metrics.roc_auc(labels, scores)

"""spoofray.scoring: the file-score rule and the two threshold rules, on hand-checked numbers."""

import numpy as np
import pytest

from spoofray import scoring
from spoofray.errors import ConfigError, MetricError


def test_file_scores_are_means_of_each_files_windows():
    scores = scoring.file_scores(np.array([0.2, 0.4, 0.9, 0.1, 0.3]), np.array([0, 0, 1, 2, 2]))
    np.testing.assert_allclose(scores, [0.3, 0.9, 0.2])
    assert scoring.file_score(np.array([0.25, 0.75])) == 0.5


def test_a_file_without_windows_is_refused():
    with pytest.raises(ConfigError, match="no window"):
        scoring.file_scores(np.array([0.5, 0.5]), np.array([0, 2]))


def test_decision_is_spoof_at_and_above_the_threshold():
    assert scoring.decide(0.5, 0.5) == "spoof"
    assert scoring.decide(np.nextafter(0.5, 0), 0.5) == "bonafide"


@pytest.mark.parametrize("target, flagged", [(0.0, 0), (0.01, 0), (0.1, 1), (0.25, 2), (0.3, 3)])
def test_false_alarm_threshold_flags_at_most_the_budget(target, flagged):
    # Ten bona fide scores 0.0, 0.1, ..., 0.9: a budget of 25 % allows floor(2.5) = 2.
    bona = np.arange(10) / 10
    threshold, rate = scoring.threshold_at_false_alarm_rate(bona, target)
    assert int(np.sum(bona >= threshold)) == flagged
    assert rate == flagged / 10
    # The lowest such threshold: the next lower score would be flagged too.
    assert bona[9 - flagged] < threshold <= np.nextafter(bona[9 - flagged], 1)


def test_ties_never_push_the_false_alarm_rate_over_the_budget():
    bona = np.array([0.1, 0.5, 0.5, 0.5, 0.2])
    threshold, rate = scoring.threshold_at_false_alarm_rate(bona, 0.2)  # allows 1 of 5
    assert rate == 0.0 and threshold > 0.5


@pytest.mark.parametrize("scores, target, error", [
    (np.array([]), 0.01, MetricError),
    (np.array([0.1, np.nan]), 0.01, MetricError),
    (np.array([0.1, 0.2]), 1.0, ConfigError),
    (np.array([0.1, 0.2]), -0.1, ConfigError),
])
def test_false_alarm_threshold_refuses_bad_input(scores, target, error):
    with pytest.raises(error):
        scoring.threshold_at_false_alarm_rate(scores, target)


def test_eer_threshold_separates_separable_scores():
    threshold, eer = scoring.threshold_at_eer(np.array([0, 0, 1, 1]), np.array([0.1, 0.2, 0.8, 0.9]))
    assert eer == 0.0 and 0.2 < threshold <= 0.8


# --- segments and the segment rule ---------------------------------------------------------


def test_run_score_is_the_best_level_k_consecutive_windows_all_reach():
    s = np.array([0.1, 0.9, 0.8, 0.2, 0.95, 0.99, 0.97])
    assert scoring.run_score(s, 1) == 0.99
    assert scoring.run_score(s, 2) == 0.97
    assert scoring.run_score(s, 3) == 0.95
    assert scoring.run_score(s, 8) == float("-inf")  # fewer windows than a run


@pytest.mark.parametrize("scores, rule, fired", [
    ([0.9, 0.9, 0.9], (0.95, 2), "file_mean"),                 # mean over threshold only
    ([0.1, 0.1, 0.97, 0.98, 0.1, 0.1], (0.95, 2), "segment_rule"),  # short insert, low mean
    ([0.1, 0.97, 0.1, 0.98, 0.1, 0.1], (0.95, 2), None),        # not consecutive
    ([0.99, 0.99], (0.95, 2), "file_mean+segment_rule"),
])
def test_which_rule_flags_a_file(scores, rule, fired):
    s = np.array(scores)
    got = scoring.decision_rule(float(s.mean()), s, 0.5, scoring.SegmentRule(*rule))
    assert got == fired
    assert scoring.label_of(got) == ("spoof" if fired else "bonafide")


def test_suspicious_windows_merge_into_spans():
    s = np.array([0.1, 0.9, 0.95, 0.2, 0.2, 0.2, 0.99])
    start = np.arange(7) * 2.0
    spans = scoring.suspicious_spans(s, start, start + 4.0, 0.5)
    assert spans == [(2.0, 8.0, 0.95, 2), (12.0, 16.0, 0.99, 1)]
    assert scoring.suspicious_spans(s, start, start + 4.0, 0.999) == []


def test_segment_rule_comes_from_the_bundle_else_from_the_file_threshold():
    recorded = {"segment_rule": {"threshold": 0.97, "k": 2, "method": "calibrated"}}
    assert scoring.segment_rule_of(recorded, 0.9) == scoring.SegmentRule(0.97, 2, "bundle")
    old = scoring.segment_rule_of({}, 0.9)  # a bundle made before the rule existed
    assert (old.threshold, old.k, old.method) == (0.9, scoring.DEFAULT_SEGMENT_K, "derived")
    user = scoring.segment_rule_of(recorded, 0.9, k=4)
    assert (user.threshold, user.k, user.method) == (0.97, 4, "user")
    with pytest.raises(ConfigError, match="k must be an int >= 1"):
        scoring.SegmentRule(0.9, 0)


def test_a_file_scored_per_channel_is_flagged_when_any_channel_is():
    assert scoring.channel_rollup([0.2, 0.4], [None, None]) == (0.4, None)
    assert scoring.channel_rollup([0.3, 0.1], [None, "segment_rule"]) == (0.3, "segment_rule")
    assert scoring.channel_rollup([0.9, 0.6], ["file_mean", "segment_rule"]) == (
        0.9, "file_mean+segment_rule")

"""The sklearn soft-voting ensemble: inputs, estimator conventions, skops persistence."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.tree import DecisionTreeClassifier

from spoofray.errors import BundleIntegrityError, ConfigError
from spoofray.models.ml import (MEMBERS, SpoofVotingEnsemble, design_matrix, input_array,
                                load_ensemble, make_ensemble, save_ensemble)


@pytest.fixture(autouse=True)
def _one_thread():
    # OpenMP (HistGradientBoosting) on an oversubscribed shared machine is ~30x slower.
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):
        yield


def _light(**params):
    """An ensemble small enough for many fits in a test."""
    members = {"rf": RandomForestClassifier(n_estimators=5),
               "hgb": HistGradientBoostingClassifier(max_iter=5)}
    return SpoofVotingEnsemble(**{**members, **params}, random_state=0)


@pytest.fixture(scope="module")
def toy():
    """Two Gaussian classes, spoof (1) shifted on the first 3 dimensions."""
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1], 60)
    X = rng.normal(size=(120, 6))
    X[y == 1, :3] += 1.5
    return X, y


# --- inputs -------------------------------------------------------------------------------


def test_design_matrix_pools_mean_then_std_over_frames():
    mfcc = np.array([[[1.0, 3.0], [0.0, 4.0]]], np.float32)  # 1 window, 2 rows, 2 frames
    stats = np.arange(26, dtype=np.float32).reshape(1, 26)
    X = design_matrix({"mfcc": mfcc, "stats": stats}, ["stats", "mfcc_pooled"])
    assert X.shape == (1, 26 + 4)
    np.testing.assert_array_equal(X[0, :26], stats[0])
    np.testing.assert_allclose(X[0, 26:], [2.0, 2.0, 1.0, 2.0])  # means 2, 2; stds 1, 2


@pytest.mark.parametrize(("inputs", "features", "error"), [
    (["stats", "mfc_pooled"], {"stats": np.zeros((2, 26))}, "did you mean 'mfcc_pooled'"),
    (["lfcc_pooled"], {"stats": np.zeros((2, 26))}, "needs the feature kind 'lfcc'"),
    (["stats", "stats"], {"stats": np.zeros((2, 26))}, "twice"),
    ("stats", {"stats": np.zeros((2, 26))}, "non-empty list"),
    (["stats", "mfcc_pooled"], {"stats": np.zeros((2, 26)), "mfcc": np.zeros((3, 4, 5))},
     "disagree on the number of rows"),
])
def test_design_matrix_refuses_bad_inputs(inputs, features, error):
    with pytest.raises(ConfigError, match=error):
        design_matrix(features, inputs)


# --- estimator conventions ------------------------------------------------------------------


def test_nested_params_work_on_default_members_and_survive_clone():
    model = SpoofVotingEnsemble()
    params = model.get_params()
    assert params["rf"] is None and params["rf__n_estimators"] == 100
    assert {"svc__C", "knn__n_neighbors", "hgb__learning_rate", "dt__max_depth"} <= set(params)
    model.set_params(rf__n_estimators=7, svc__C=3.0, weight_knn=0.0)
    assert isinstance(model.rf, RandomForestClassifier) and model.rf.n_estimators == 7
    twin = clone(model)
    assert twin.rf is not model.rf
    a, b = model.get_params(), twin.get_params()
    for key in a:
        if key not in MEMBERS:
            assert a[key] == b[key], key
    # Defaults are never shared between instances (mutating one leaves the other alone).
    assert SpoofVotingEnsemble().get_params()["rf__n_estimators"] == 100


def test_set_params_on_dropped_member_says_what_to_do():
    with pytest.raises(ConfigError, match="member 'rf' is 'drop'"):
        SpoofVotingEnsemble(rf="drop").set_params(rf__n_estimators=5)


def test_make_ensemble_names_unknown_parameter():
    with pytest.raises(ConfigError, match="did you mean 'rf__n_estimators'"):
        make_ensemble({"rf__n_estimator": 5})


def test_check_estimator_passes():
    from sklearn.utils.estimator_checks import check_estimator

    results = check_estimator(_light(), on_fail=None)
    failed = [(r["check_name"], str(r["exception"])[:200]) for r in results
              if r["status"] == "failed"]
    assert not failed
    assert sum(r["status"] == "passed" for r in results) > 40


def test_predict_proba_column_1_is_spoof(toy):
    X, y = toy
    for labels in (y, np.where(y == 1, "spoof", "bonafide")):
        model = _light().fit(X, labels)
        assert list(model.classes_) in ([0, 1], ["bonafide", "spoof"])
        p = model.predict_proba(X)[:, 1]
        assert p[y == 1].mean() > 0.7 > 0.3 > p[y == 0].mean()
        np.testing.assert_allclose(model.predict_proba(X).sum(axis=1), 1.0)


def test_weights_switch_members_and_weight_the_vote(toy):
    X, y = toy
    model = _light(weight_rf=0.0, weight_knn=0.0, weight_svc=3.0, hgb="drop").fit(X, y)
    assert set(model.named_estimators_) == {"svc", "dt"}
    members = model.member_proba(X)
    np.testing.assert_allclose(model.predict_proba(X),
                               (3.0 * members["svc"] + members["dt"]) / 4.0)
    # SVC sees standardised inputs and is calibrated (no probability=True).
    svc = model.named_estimators_["svc"]
    assert [name for name, _ in svc.steps] == ["scale", "svc"]
    assert type(svc.named_steps["svc"]).__name__ == "CalibratedClassifierCV"


def test_all_members_off_fails_in_fit(toy):
    X, y = toy
    model = SpoofVotingEnsemble(**{f"weight_{m}": 0.0 for m in MEMBERS})  # init never checks
    with pytest.raises(ConfigError, match="at least one of"):
        model.fit(X, y)


# --- persistence ---------------------------------------------------------------------------


def test_skops_round_trip_gives_identical_probabilities(toy, tmp_path):
    X, y = toy
    model = _light(inputs=("stats", "mfcc_pooled")).fit(X, y)
    path = save_ensemble(model, str(tmp_path / "ensemble.skops"))
    loaded = load_ensemble(path)
    np.testing.assert_array_equal(loaded.predict_proba(X), model.predict_proba(X))
    assert loaded.inputs == ("stats", "mfcc_pooled")
    assert (tmp_path / "ensemble.skops").read_bytes()[:2] == b"PK"  # a skops zip, not pickle


class UnreviewedTree(DecisionTreeClassifier):
    """A type no one put on the trusted list."""


def test_load_refuses_untrusted_types(toy, tmp_path):
    X, y = toy
    model = _light(dt=UnreviewedTree(max_depth=2)).fit(X, y)
    path = save_ensemble(model, str(tmp_path / "ensemble.skops"))
    with pytest.raises(BundleIntegrityError, match="trusted list.*UnreviewedTree"):
        load_ensemble(path)


def test_load_refuses_a_file_that_is_not_skops(tmp_path):
    path = tmp_path / "ensemble.skops"
    path.write_bytes(b"\x80\x04not a zip")  # e.g. a pickle
    with pytest.raises(BundleIntegrityError, match="not a readable skops file"):
        load_ensemble(str(path))


def test_dynamics_input_by_hand_and_blind_to_a_fixed_channel():
    # c = 2 coefficients: rows [c0, c1, d0, d1, dd0, dd1], 4 frames.
    lfcc = np.array([[[9, 9, 9, 9], [1, 3, 1, 3], [0, 2, 0, -2], [1, 1, 1, 1],
                      [0, 0, 0, 0], [-1, 1, -1, 1]]], dtype=np.float32)
    block = input_array({"lfcc": lfcc}, "lfcc_dynamics")
    # std of c1; std of d0, d1, dd0, dd1; mean |.| of d0, d1, dd0, dd1
    np.testing.assert_allclose(block, [[1, np.sqrt(2), 0, 0, 1, 1, 1, 0, 1]])
    shifted = lfcc.copy()
    shifted[:, :2] += np.array([5.0, -3.0], np.float32)[None, :, None]  # channel + level
    np.testing.assert_array_equal(input_array({"lfcc": shifted}, "lfcc_dynamics"), block)
    with pytest.raises(ConfigError, match="with deltas"):
        input_array({"lfcc": lfcc[:, :4]}, "lfcc_dynamics")


def test_logistic_member_is_off_by_default_and_votes_when_weighted():
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1], 30)
    X = rng.normal(size=(60, 3)) + y[:, None]
    assert "lr" not in make_ensemble({"random_state": 0}).fit(X, y).named_estimators_
    model = make_ensemble({"weight_rf": 0, "weight_hgb": 0, "weight_svc": 0, "weight_knn": 0,
                           "weight_dt": 0, "weight_lr": 1, "lr__C": 0.5}).fit(X, y)
    assert list(model.named_estimators_) == ["lr"]
    assert model.named_estimators_["lr"].named_steps["lr"].C == 0.5
    assert model.score(X, y) > 0.7

"""Ray Tune sweeps of the sklearn ensemble: spaces, folds, a real sweep, resume, tables.

Real Ray (the session's local cluster), real sklearn, real files; the sweep's dataset
comes from the real extraction of a small generated archive.
"""

from __future__ import annotations

import dataclasses
import glob
import hashlib
import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from spoofray import dataset, splits
from spoofray.errors import ConfigError, LabelError
from spoofray.models.ml import design_matrix, load_ensemble
from spoofray.testing import datasets
from spoofray.testing.waiting import process_exited, wait_for
from spoofray.training import cv_data
from spoofray.training.tune import TuneMLConfig, load_space, run_sweep, validate_space

REPO = Path(__file__).resolve().parents[1]
SMOKE_SPACE = str(REPO / "tune_spaces" / "smoke.yaml")
#: Deadline for the first 2 trials of the killed sweep (3 folds each, one at a time).
TWO_TRIALS_S = 600
SIDECAR_KEYS = {"name", "kind", "file", "inputs", "feature_config", "feature_config_hash",
                "threshold", "threshold_method", "oof_metrics", "training_data_fingerprint"}


@pytest.fixture(scope="module")
def extracted(ray_session, tmp_path_factory) -> str:
    """A feature dataset made by the real extraction from a generated archive."""
    from spoofray.config import AudioConfig, FeatureConfig
    from spoofray.pipeline.extract import ExtractConfig, extract_features
    from spoofray.testing.synth import make_demo_archive

    root = tmp_path_factory.mktemp("tune_data")
    archive = make_demo_archive(root / "archive", seed=0, n_bonafide=6, n_spoof=6,
                                n_speakers=3, broken=False)
    features = FeatureConfig(audio=AudioConfig(window_s=1.0, hop_s=1.0),
                             kinds=("mfcc", "stats"), n_mfcc=8)
    out = str(root / "features")
    extract_features(ExtractConfig(input=archive.manifest_path, output=out, features=features))
    return out


@pytest.fixture
def synthetic(tmp_path) -> str:
    return datasets.write_synthetic_dataset(str(tmp_path / "features"))


# --- search spaces ------------------------------------------------------------------------


def test_shipped_spaces_validate():
    full = load_space(str(REPO / "tune_spaces" / "voting_ensemble.yaml"))
    assert {"rf__n_estimators", "svc__C", "weight_knn", "inputs"} <= set(full)
    assert "inputs" in load_space(SMOKE_SPACE)


@pytest.mark.parametrize(("space", "error"), [
    ({"rf__n_estimator": 5}, r"unknown parameter 'rf__n_estimator' \(did you mean "
                             r"'rf__n_estimators'.*valid names include \['rf__bootstrap'"),
    ({"svc__C": {"logunifrom": [0.1, 1]}}, r"svc__C: unknown distribution 'logunifrom' "
                                            r"\(did you mean 'loguniform'"),
    ({"svc__C": {"loguniform": [0, 1]}}, r"svc__C: loguniform\(lower, upper, base\)"),
    ({"rf__n_estimators": {"uniform": [10, 100]}}, "must be an int"),
    ({"rf__criterion": {"choice": ["gini", "entropyy"]}}, "'entropyy'"),
    ({"inputs": {"choice": [["stats", "mfc_pooled"]]}}, "did you mean 'mfcc_pooled'"),
    ({"weight_rf": -1.0}, "weight_rf must be a finite number >= 0"),
    ({"n_jobs": 4}, r"set by the sweep \(--cpus-per-trial\)"),
    ([1, 2], "expected a non-empty mapping"),
])
def test_bad_space_is_refused_naming_the_key(space, error):
    with pytest.raises(ConfigError, match=error):
        validate_space(space, source="space.yaml")


def test_typo_fails_before_any_trial(tmp_path, synthetic):
    space = tmp_path / "typo.yaml"
    space.write_text("svc__C: {loguniform: [0.1, 10]}\nknn__n_neighbours: 5\n")
    cfg = TuneMLConfig(space=str(space), output=str(tmp_path / "out"), dataset=synthetic)
    with pytest.raises(ConfigError, match="knn__n_neighbours.*did you mean 'knn__n_neighbors'"):
        run_sweep(cfg)  # no Ray needed: validation comes first
    assert not (tmp_path / "out").exists()


# --- data and folds -----------------------------------------------------------------------


def test_group_folds_are_disjoint(synthetic):
    meta = dataset.read_table(synthetic, columns=["uri", "label", "attack", "speaker",
                                                  "group"]).to_pandas()
    for by in ("speaker", "attack", "recording"):
        data = cv_data.load_feature_dataset(synthetic, inputs=["stats"], group_by=by,
                                            n_splits=3)
        covered = np.concatenate([te for _, te in data.folds])
        assert sorted(covered) == list(range(len(meta)))  # every window tested exactly once
        for train_idx, test_idx in data.folds:
            splits.assert_disjoint(meta, train_idx, test_idx, by)


def test_file_scores_are_window_means():
    files, scores = cv_data.file_scores(np.array([2, 0, 2, 2]), np.array([0.1, 0.5, 0.3, 0.8]))
    np.testing.assert_array_equal(files, [0, 2])
    np.testing.assert_allclose(scores, [0.5, 0.4])


def test_deepvoice_table_reads_labels_and_groups_row_blocks(tmp_path):
    path = datasets.write_synthetic_table(str(tmp_path / "DATASET-balanced.csv"), n_rows=60)
    data = cv_data.load_feature_table(path, n_splits=3, block_rows=10)
    assert data.blocks["stats"].shape == (60, 26)
    assert data.y.tolist() == [0, 1] * 30  # REAL, FAKE alternate in the generated table
    for _, test_idx in data.folds:  # whole blocks of 10 rows stay together
        assert set(np.bincount(test_idx // 10)) <= {0, 10}
    assert "blocks of 10" in data.caveat
    row_level = cv_data.load_feature_table(path, n_splits=3)
    assert "optimistic" in row_level.caveat


@pytest.mark.parametrize(("edit", "error", "exc"), [
    (lambda f: f.drop(columns=["rolloff"]), r"missing columns \['rolloff'\]", ConfigError),
    (lambda f: f.assign(LABEL=["REAL", "maybe"] * 3), "row 2: unknown label 'maybe'",
     LabelError),
    (lambda f: f.assign(rms=[1.0, None] * 3), r"data rows \[2, 4, 6\]", ConfigError),
])
def test_deepvoice_table_errors(tmp_path, edit, error, exc):
    path = datasets.write_synthetic_table(str(tmp_path / "t.csv"), n_rows=6)
    edit(pd.read_csv(path)).to_csv(path, index=False)
    with pytest.raises(exc, match=error):
        cv_data.load_feature_table(path, n_splits=2)


# --- sweeps on the real Ray -----------------------------------------------------------------


@pytest.mark.slow
def test_smoke_sweep_writes_every_output(ray_session, extracted, tmp_path):
    out = tmp_path / "sweep"
    started = time.perf_counter()
    summary = run_sweep(TuneMLConfig(space=SMOKE_SPACE, output=str(out), dataset=extracted,
                                     group_by="speaker", n_splits=3, num_samples=3,
                                     verbose=0))
    elapsed = time.perf_counter() - started
    print(f"smoke sweep: {elapsed:.1f}s")

    results = pd.read_parquet(out / "results.parquet")
    assert len(results) == 3 and results["trial_id"].is_unique
    assert {"eer", "auc", "accuracy", "precision", "recall", "f1", "window_eer", "oof_eer",
            "status", "config/inputs", "config/svc__C"} <= set(results.columns)
    complete = results[results["status"] == "complete"]
    assert len(complete) >= 1 and complete["eer"].between(0, 1).all()
    assert summary["best"]["eer"] == complete["eer"].min()

    best = yaml.safe_load((out / "best_config.yaml").read_text())
    assert best == summary["best"]["params"]
    assert set(load_space(str(out / "best_config.yaml"))) == set(best)  # valid as a space
    for plot in ("eer_by_trial.png", "param_importance.png"):
        assert (out / "plots" / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    sidecar = json.loads((out / "model" / "member.json").read_text())
    assert set(sidecar) == SIDECAR_KEYS
    assert sidecar["threshold_method"] == "oof EER"
    assert sidecar["threshold"] == sidecar["oof_metrics"]["eer_threshold"]
    cfg = dataset.feature_config_of(extracted)
    assert sidecar["feature_config"] == cfg.to_dict()
    assert sidecar["feature_config_hash"] == cfg.config_hash()
    table = dataset.read_table(extracted)
    pairs = sorted(set(zip(table.column("uri").to_pylist(), table.column("label").to_pylist())))
    expected = hashlib.sha256("\n".join(f"{u}\t{lab}" for u, lab in pairs).encode())
    assert sidecar["training_data_fingerprint"] == expected.hexdigest()
    assert sidecar["oof_metrics"]["n_bonafide"] + sidecar["oof_metrics"]["n_spoof"] == len(
        pairs)

    model = load_ensemble(str(out / "model" / sidecar["file"]))
    assert list(model.inputs) == sidecar["inputs"] == best["inputs"]
    features = {k: dataset.tensor_column(table, k) for k in ("mfcc", "stats")}
    proba = model.predict_proba(design_matrix(features, model.inputs))[:, 1]
    assert proba.shape == (table.num_rows,) and ((proba >= 0) & (proba <= 1)).all()


def _terminated(experiment: Path) -> set[str]:
    """Trial ids that Tune's last saved experiment state lists as finished."""
    done = set()
    for state_file in glob.glob(str(experiment / "experiment_state-*.json")):
        try:
            state = json.loads(Path(state_file).read_text())
        except (json.JSONDecodeError, OSError):  # being rewritten right now
            continue
        for trial_json, _ in state["trial_data"]:
            trial = json.loads(trial_json)
            if trial["status"] == "TERMINATED":
                done.add(trial["trial_id"])
    return done


@pytest.mark.slow
def test_killed_sweep_resumes_without_rerunning_finished_trials(ray_session, synthetic,
                                                                 tmp_path):
    out = tmp_path / "sweep"
    experiment = out / "ray_results" / "tune_ml"
    args = ["--dataset", synthetic, "--output", str(out), "--space", SMOKE_SPACE,
            "--n-splits", "3", "--num-samples", "4", "--max-concurrent", "1", "--verbose", "0"]
    address = ray_session.get_runtime_context().gcs_address
    proc = subprocess.Popen([sys.executable, str(REPO / "jobs" / "tune_ml.py"), *args,
                             "--address", address], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: sorted(_terminated(experiment)), timeout_s=TWO_TRIALS_S, poll_s=0.2,
                 what=f"2 finished trials in {experiment} (to interrupt the sweep after)",
                 until=lambda done: len(done) >= 2, abort_if=process_exited(proc))
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    finished = _terminated(experiment)
    assert 2 <= len(finished) < 4
    before = {t: (experiment / f"trial_{t}" / "result.json").read_bytes() for t in finished}

    summary = run_sweep(TuneMLConfig(space=SMOKE_SPACE, output=str(out), dataset=synthetic,
                                     n_splits=3, num_samples=4, max_concurrent=1,
                                     resume=True, verbose=0))
    results = pd.read_parquet(out / "results.parquet")
    assert summary["resumed"] and len(results) == 4 and results["trial_id"].is_unique
    assert finished <= set(results["trial_id"])
    for trial_id, content in before.items():  # finished trials were not run again
        assert (experiment / f"trial_{trial_id}" / "result.json").read_bytes() == content
    assert (results["folds_done"] == 3).all()
    assert (out / "model" / "ensemble.skops").exists()


def test_resume_refuses_changed_settings(synthetic, tmp_path):
    out = tmp_path / "sweep"
    out.mkdir()
    (out / "sweep_config.json").write_text(json.dumps({"dataset": synthetic, "n_splits": 5}))
    cfg = TuneMLConfig(space=SMOKE_SPACE, output=str(out), dataset=synthetic, n_splits=3,
                       resume=True)
    with pytest.raises(ConfigError, match="n_splits"):
        run_sweep(cfg)


def test_tune_state_files_are_replaced_whole(tmp_path):
    import pyarrow.fs

    from spoofray.atomic_fs import atomic_local_filesystem

    fs = atomic_local_filesystem()
    state = tmp_path / "experiment_state-x.json"
    state.write_text("old")
    stream = fs.open_output_stream(str(state))
    stream.write(b"new, half written")
    assert state.read_text() == "old"  # a kill now leaves the old file intact
    stream.close()
    assert state.read_text() == "new, half written"
    abandoned = fs.open_output_stream(str(state))  # a writer that failed part-way
    abandoned.write(b"junk")
    del abandoned
    assert state.read_text() == "new, half written"
    assert [p.name for p in tmp_path.iterdir()] == [state.name]  # no temporary left over

    staging = tmp_path / "staging"
    (staging / "trial_1").mkdir(parents=True)
    (staging / "basic-variant-state-x.json").write_bytes(bytes(range(256)) * 4096)
    (staging / "trial_1" / "result.json").write_text("{}")
    pyarrow.fs.copy_files(str(staging), str(tmp_path / "storage"), destination_filesystem=fs)
    copied = sorted(p.relative_to(tmp_path / "storage").as_posix()
                    for p in (tmp_path / "storage").rglob("*"))
    assert copied == ["basic-variant-state-x.json", "trial_1", "trial_1/result.json"]
    assert (tmp_path / "storage" / "basic-variant-state-x.json").read_bytes() == (
        staging / "basic-variant-state-x.json").read_bytes()


def _table_sweep(tmp_path: Path, n_rows: int, **settings) -> tuple[TuneMLConfig, dict]:
    """A one-trial sweep of a small generated DEEP-VOICE table with quick members."""
    table = datasets.write_synthetic_table(str(tmp_path / "DATASET-balanced.csv"), n_rows=n_rows)
    space = tmp_path / "stats.yaml"
    space.write_text("weight_svc: 0.0\nweight_knn: 0.0\nhgb__max_iter: 10\n"
                     "rf__n_estimators: {choice: [5, 10]}\n")
    cfg = TuneMLConfig(space=str(space), output=str(tmp_path / "sweep"), table=table,
                       num_samples=1, verbose=0, **settings)
    return cfg, run_sweep(cfg)


@pytest.mark.slow
def test_resume_refuses_a_truncated_tune_state(ray_session, tmp_path):
    cfg, _ = _table_sweep(tmp_path, 60, n_splits=2)
    experiment = tmp_path / "sweep" / "ray_results" / "tune_ml"
    (searcher,) = experiment.glob("basic-variant-state-*.json")
    searcher.write_bytes(searcher.read_bytes()[:40])  # as a kill during a plain copy left it
    with pytest.raises(ConfigError, match=f"{re.escape(str(searcher))}.* unreadable .*--overwrite"):
        run_sweep(dataclasses.replace(cfg, resume=True))


@pytest.mark.slow
def test_deepvoice_table_sweep(ray_session, tmp_path):
    _, summary = _table_sweep(tmp_path, 90, table_block_rows=5, n_splits=3)
    out = tmp_path / "sweep"
    assert "blocks of 5" in summary["caveat"]
    results = pd.read_parquet(out / "results.parquet")
    assert results[["eer", "accuracy", "precision", "recall", "f1"]].notna().all().all()
    sidecar = json.loads((out / "model" / "member.json").read_text())
    assert sidecar["inputs"] == ["stats"] and sidecar["feature_config"] is None
    assert sidecar["oof_metrics"]["n_bonafide"] + sidecar["oof_metrics"]["n_spoof"] == 90


def test_job_help_and_bad_key_exit_code(tmp_path, synthetic):
    sys.path.insert(0, str(REPO / "jobs"))
    try:
        import tune_ml
    finally:
        sys.path.remove(str(REPO / "jobs"))
    space = tmp_path / "typo.yaml"
    space.write_text("rf__n_estimators: 10\nsvc_C: 1.0\n")
    code = tune_ml.main(["--dataset", synthetic, "--output", str(tmp_path / "o"),
                         "--space", str(space)])
    assert code == 2
    with pytest.raises(SystemExit) as exit_info:
        tune_ml.parse_args(["--help"])
    assert exit_info.value.code == 0
    assert "FILE-level EER" in tune_ml.__doc__ and "--resume" in tune_ml.__doc__

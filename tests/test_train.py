"""Ray Train (TensorflowTrainer, 2 CPU workers) training of every deep member, resume,
the member/sidecar contract end to end, and the pieces that keep workers in step."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from spoofray import dataset, splits
from spoofray.augment import FeatureAugmentConfig
from spoofray.config import AudioConfig, FeatureConfig
from spoofray.errors import ConfigError, OutputExistsError
from spoofray.models import dl
from spoofray.testing import datasets
from spoofray.training import train as T

# Tiny members: the point is the distributed loop and the contract, not accuracy.
TINY = {
    "cnn": {"filters": [8, 16]},
    "lcnn": {"width": 0.25},
    "tdnn": {"channels": [16, 16], "kernel_sizes": [3, 3], "dilations": [1, 2]},
    "rnn": {"units": 8},
    "mlp": {"hidden": [16]},
    "conformer": {"dim": 16, "heads": 2, "blocks": 1, "conv_kernel": 7},
    # A deep image backbone from scratch needs a gentler step than the small members. Its
    # BatchNormalization in the distributed loop is what this adds; vgg16 (plain convolutions,
    # as cnn has, and 15 M weights to all-reduce each step) is built, saved and reloaded in
    # tests/test_models_dl.py, not trained here (suite time).
    "efficientnet_b0": {"learning_rate": 3e-4},
}
# 0.5 s windows (51 frames), 32 mel bands: big enough for the image backbones unresized.
FC = FeatureConfig(audio=AudioConfig(window_s=0.5, hop_s=0.5), n_mels=32, n_mfcc=8, n_lfcc=8,
                   n_linear_filters=20, kinds=("logmel", "mfcc", "lfcc"))
FIT_TIMEOUT_S = 900  # a worker stuck in a collective must fail the test, not hang CI


@contextlib.contextmanager
def deadline(seconds: int):
    def _raise(signum, frame):
        raise TimeoutError(f"training did not finish within {seconds} s (workers hung?)")

    old = signal.signal(signal.SIGALRM, _raise)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


@pytest.fixture(scope="module")
def toy_root(tmp_path_factory) -> str:
    # 38 files x 3 windows in 3 uneven parts: 87 training windows (odd) -> 43 per worker,
    # which is not a multiple of the batch of 8: the uneven case that hangs naive loops.
    root = str(tmp_path_factory.mktemp("toy") / "features")
    return datasets.write_toy_feature_dataset(root, FC, n_files=38, windows_per_file=3, n_parts=3)


def _cfg(**overrides) -> T.DLTrainConfig:
    base = dict(members=tuple(TINY), member_params=TINY, epochs=1, batch_size=8,
                learning_rate=2e-3, num_workers=2, cpus_per_worker=0.5, patience=5,
                augment=FeatureAugmentConfig(spec_prob=0.5, mixup_prob=0.1, cutmix_prob=0.1))
    return T.DLTrainConfig(**{**base, **overrides})


RESUMED = ("cnn", "mlp")


@pytest.fixture(scope="module")
def trained(ray_session, toy_root, tmp_path_factory):
    """All members in ONE TensorflowTrainer run for 2 epochs (outputs kept aside), then two
    of them resumed from its checkpoint to epoch 3."""
    out = str(tmp_path_factory.mktemp("dl") / "out")
    with deadline(FIT_TIMEOUT_S):
        first = T.train_members(toy_root, out, _cfg(epochs=2))
    first_ckpt = T.latest_checkpoint(out)
    snapshot = str(tmp_path_factory.mktemp("dl_first"))
    shutil.copytree(os.path.join(out, "members"), os.path.join(snapshot, "members"))
    shutil.copy(os.path.join(out, "dev_scores.parquet"), snapshot)
    with deadline(FIT_TIMEOUT_S):
        resumed = T.train_members(
            toy_root, out, _cfg(epochs=3, members=RESUMED,
                                member_params={n: TINY[n] for n in RESUMED}), resume=True)
    return out, first, first_ckpt, resumed, snapshot


def _state_epochs(directory: str) -> list[int]:
    """Epochs of the checkpoints under ``directory`` (V1 and V2 name them differently)."""
    found = []
    for dirpath, _, files in os.walk(directory):
        if "state.json" in files:
            with open(os.path.join(dirpath, "state.json")) as fh:
                found.append(json.load(fh)["epoch"])
    return sorted(found)


@pytest.mark.slow
def test_every_member_trains_on_two_workers_and_its_loss_falls(trained):
    _, first, *_ = trained
    assert first.summary["data"]["n_train_windows"] % 2 == 1
    assert first.summary["epochs_done"] == 2
    history = first.summary["history"]
    assert [h["epoch"] for h in history] == [1, 2]
    for name in TINY:
        losses = [h[f"{name}/loss"] for h in history]
        assert all(np.isfinite(losses)) and losses[1] < losses[0], (name, losses)
        for key in ("dev_eer", "dev_auc", "dev_eer_file", "dev_auc_file"):
            assert 0.0 <= history[-1][f"{name}/{key}"] <= 1.0
    # The easy toy is learnt by the small, quick members.
    assert min(history[-1][f"{n}/dev_eer"] for n in ("cnn", "tdnn", "rnn")) <= 0.2


@pytest.mark.slow
def test_resume_continues_the_epoch_count_from_the_latest_checkpoint(trained):
    out, first, first_ckpt, resumed, _ = trained
    assert _state_epochs(first_ckpt) == [2]
    assert resumed.summary["resumed_from"] == first_ckpt
    assert resumed.summary["epochs_done"] == 3
    history = resumed.summary["history"]
    assert [h["epoch"] for h in history] == [1, 2, 3]
    # Epochs 1-2 are the first run's, carried over in the checkpoint; the resumed run (its
    # own Ray run folder) trained and checkpointed epoch 3 only, continuing the weights.
    assert history[:2] == first.summary["history"]
    assert _state_epochs(os.path.join(out, "ray", resumed.summary["run_name"])) == [3]
    assert _state_epochs(T.latest_checkpoint(out)) == [3]
    assert sorted(resumed.members) == sorted(RESUMED)
    for name in RESUMED:
        assert history[2][f"{name}/loss"] < history[0][f"{name}/loss"], name


@pytest.mark.slow
def test_latest_checkpoint_passes_over_an_interrupted_upload(trained, tmp_path):
    _, _, first_ckpt, _, _ = trained
    run = tmp_path / "out" / "ray" / "run"
    shutil.copytree(first_ckpt, run / "checkpoint_a")
    newer = run / "checkpoint_b"  # one epoch on, but its upload stopped part-way
    shutil.copytree(first_ckpt, newer)
    state = json.loads((newer / "state.json").read_text())
    (newer / "state.json").write_text(json.dumps({**state, "epoch": state["epoch"] + 1}))
    weights = newer / "cnn" / "weights.npz"
    assert state["files"]["cnn/weights.npz"] == weights.stat().st_size
    complete = weights.read_bytes()
    weights.write_bytes(complete[: len(complete) // 2])
    assert T.latest_checkpoint(str(tmp_path / "out")) == str(run / "checkpoint_a")
    weights.unlink()
    assert T.latest_checkpoint(str(tmp_path / "out")) == str(run / "checkpoint_a")
    weights.write_bytes(complete)
    assert T.latest_checkpoint(str(tmp_path / "out")) == str(newer)


@pytest.mark.slow
def test_outputs_follow_the_member_contract_in_a_fresh_process(trained, toy_root):
    _, first, _, _, out = trained  # the outputs of the all-member run
    meta = dataset.read_table(toy_root, columns=list(T.META_COLUMNS)).to_pandas()
    train_idx, dev_idx = splits.holdout_split(meta, by="attack", dev_fraction=0.25, seed=0)
    fingerprint = dl.training_data_fingerprint(meta["uri"].iloc[train_idx], meta["label"].iloc[train_idx])
    scores = pd.read_parquet(os.path.join(out, "dev_scores.parquet"))
    assert list(scores.columns) == ["uri", "window_index", "label", "attack", *TINY]
    assert len(scores) == len(dev_idx) and scores[list(TINY)].notna().all().all()
    for name in TINY:
        side = json.loads(open(os.path.join(out, "members", f"{name}.json")).read())
        assert side["file"] == f"{name}.keras" and side["kind"] == "keras"
        assert side["input"] == dl.member_config(name).input_kind
        assert side["feature_config_hash"] == FC.config_hash()
        assert side["training_data_fingerprint"] == fingerprint
        best = first.summary["members"][name]["best_epoch"]
        assert side["dev_metrics"]["epoch"] == best
        assert side["dev_metrics"]["eer"] == first.summary["history"][best - 1][f"{name}/dev_eer"]
    # A fresh process loads every member with safe_mode=True and reproduces dev_scores.
    code = f"""
import numpy as np, pandas as pd
from spoofray import dataset
from spoofray.models import dl
out, root = {out!r}, {toy_root!r}
scores = pd.read_parquet(out + "/dev_scores.parquet")
table = dataset.read_table(root)
row = {{(u, w): i for i, (u, w) in enumerate(zip(table["uri"].to_pylist(), table["window_index"].to_pylist()))}}
idx = [row[(u, w)] for u, w in zip(scores["uri"], scores["window_index"])]
for name in {list(TINY)!r}:
    model = dl.load_member(f"{{out}}/members/{{name}}.keras")
    x = dataset.tensor_column(table, dl.read_sidecar(f"{{out}}/members/{{name}}.keras")["input"])[idx]
    p = model.predict(x, verbose=0)
    assert p.shape == (len(idx), 1), p.shape
    np.testing.assert_allclose(p[:, 0], scores[name].to_numpy(), rtol=0, atol=1e-6, err_msg=name)
print("ok")
"""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=600, env=env)
    assert proc.returncode == 0 and "ok" in proc.stdout, proc.stderr[-3000:]


def test_output_refusals(trained, toy_root, tmp_path):
    out, *_ = trained
    with pytest.raises(OutputExistsError, match="overwrite"):
        T.train_members(toy_root, out, _cfg())
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        T.train_members(toy_root, str(tmp_path / "empty"), _cfg(), resume=True)
    with pytest.raises(ConfigError, match="stats"):
        T.train_members(toy_root, str(tmp_path / "x"),
                        _cfg(members=("mlp",), member_params={"mlp": {"input_kind": "stats"}}))


# --- pieces without Ray ------------------------------------------------------------------


def test_fixed_steps_gives_exactly_the_step_count_and_closes_the_source():
    from spoofray.training import train_worker as W

    closed = []

    def source(n):
        try:
            yield from range(n)
        finally:
            closed.append(n)

    assert list(W.fixed_steps(source(10), 4)) == [0, 1, 2, 3]
    assert closed == [10]  # the abandoned iterator was closed (Ray Data stops its executor)
    assert list(W.fixed_steps(source(2), 5)) == [0, 1, 1, 1, 1]  # a short shard pads
    with pytest.raises(RuntimeError, match="empty"):
        list(W.fixed_steps(iter([]), 2))


def test_train_config_checks():
    with pytest.raises(ConfigError, match="unknown member"):
        T.DLTrainConfig(members=("cnn", "resnet"))
    with pytest.raises(ConfigError, match="not in members"):
        T.DLTrainConfig(members=("cnn",), member_params={"rnn": {"units": 4}})
    with pytest.raises(ConfigError, match="distinct"):
        T.DLTrainConfig(members=("cnn", "cnn"))
    with pytest.raises(ConfigError, match="early_stop_on"):
        T.DLTrainConfig(early_stop_on="loss")
    cfg = _cfg()
    assert T.DLTrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg


def test_early_stopping_and_best_model_tracking(tmp_path):
    """The rank-0 bookkeeping of one member over epochs, with hand-made dev scores."""
    import keras

    from spoofray.training import train_worker as W

    cfg = _cfg(patience=2)
    y = np.array([0, 0, 1, 1], np.float32)
    batches = [{"y": y, "uri": np.array(["a", "a", "b", "c"], object),
                "window_index": np.array([0, 1, 0, 0]), "logmel": np.zeros((4, 2, 3), np.float32)}]
    model = keras.Sequential([keras.Input((2, 3)), keras.layers.Flatten(), keras.layers.Dense(1)])
    state = W._fresh_state(["m"])
    outcomes = {  # epoch -> scores given to the member
        0: [0.4, 0.6, 0.5, 0.7],  # EER 0.5: first epoch, best so far
        1: [0.1, 0.2, 0.8, 0.9],  # EER 0: better, saved
        2: [0.1, 0.3, 0.8, 0.9],  # EER 0, AUC 1: same, not better -> 1 bad epoch
        3: [0.9, 0.2, 0.8, 0.1],  # worse -> 2 bad epochs -> stop
    }
    for epoch, s in outcomes.items():
        m = W._score_and_track("m", epoch, 0.5, batches, lambda x, s=s: np.array(s)[:, None],
                               "logmel", model, state, cfg, str(tmp_path))
    ms = state["members"]["m"]
    assert ms["best_epoch"] == 2 and ms["best_metrics"]["eer"] == 0.0 and ms["stopped"]
    assert m["stopped"] and m["dev_eer"] == 0.5 and m["best_dev_eer"] == 0.0
    saved = pd.read_parquet(tmp_path / "m" / "best_dev_scores.parquet")
    assert saved["score"].tolist() == pytest.approx(outcomes[1])
    assert (tmp_path / "m" / "best.keras").exists()
    # File level: file "a" is the mean of its two windows.
    assert ms["best_metrics"]["n_dev_files"] == 3 and ms["best_metrics"]["eer_file"] == 0.0


def test_workers_set_a_generous_coordination_heartbeat(monkeypatch):
    """TF's default heartbeat (10 s, 5 s per RPC) kills runs on a loaded machine with
    "Deadline Exceeded"; the worker configures the coordination service first."""
    from tensorflow.python.eager import context

    from spoofray.training import train_worker as W

    workers = {"cluster": {"worker": ["h:1", "h:2"]}, "task": {"type": "worker", "index": 1}}
    assert W.coordination_service_kwargs(workers, 600) == {
        "service_type": "standalone", "service_leader": "/job:worker/replica:0/task:0",
        "heartbeat_timeout_in_ms": 600_000, "jobs": [("worker", 2)]}
    chief = {"cluster": {"chief": ["h:0"], "worker": ["h:1"]}, "task": {"type": "worker", "index": 0}}
    kw = W.coordination_service_kwargs(chief, 1.5)
    assert kw["service_leader"] == "/job:chief/replica:0/task:0" and kw["heartbeat_timeout_in_ms"] == 1500
    assert kw["jobs"] == [("chief", 1), ("worker", 1)]
    assert W.coordination_service_kwargs({}, 600) is None
    # Applied to this process's TF context (restored afterwards; nothing here connects).
    ctx = context.context()
    saved = ctx.coordination_service
    monkeypatch.setenv("TF_CONFIG", json.dumps(workers))
    try:
        ctx._coordination_service_config = None  # noqa: SLF001
        assert W.configure_coordination(_cfg().tf_heartbeat_timeout_s)
        got = ctx.coordination_service
        assert got.heartbeat_timeout_in_ms == 600_000 and got.service_type == "standalone"
        assert got.service_leader.startswith("/job:worker/replica:0/task:0")
        assert [(j.name, j.num_tasks) for j in got.coordinated_job_list] == [("worker", 2)]
        assert not W.configure_coordination(30.0)  # never overrides an existing service
    finally:
        ctx._coordination_service_config = saved  # noqa: SLF001
    with pytest.raises(ConfigError, match="tf_heartbeat_timeout_s"):
        T.DLTrainConfig(tf_heartbeat_timeout_s=0)


def test_train_job_help():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    proc = subprocess.run([sys.executable, os.path.join(root, "jobs", "train_dl.py"), "--help"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "--members" in proc.stdout and "--resume" in proc.stdout

"""The per-worker loop of :func:`spoofray.training.train.train_members` (runs in Ray Train
workers; imports TensorFlow).

Rule that keeps workers from hanging: every TensorFlow operation that may involve a
collective (training steps, reading/assigning distributed variables, the stop-flag
all-reduce) runs on every worker the same number of times. Only rank 0 scores dev and
writes files, and it does so on plain (non-distributed) copies of the models.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np

from spoofray.augment import augment_batch
from spoofray.config import FeatureConfig
from spoofray.errors import MetricError
from spoofray.models import dl
from spoofray.training.dl_config import DLTrainConfig


def fixed_steps(batches: Iterable[Any], steps: int) -> Iterator[Any]:
    """Exactly ``steps`` items: stop early, or repeat the last item when ``batches`` runs
    short. Workers with different batch counts would hang in the gradient all-reduce."""
    it = iter(batches)
    last = None
    try:
        for _ in range(steps):
            try:
                last = next(it)
            except StopIteration:
                if last is None:
                    raise RuntimeError("a worker's training shard is empty") from None
            yield last
    finally:
        close = getattr(it, "close", None)
        if close is not None:
            close()


def _init_tensorflow(cfg: DLTrainConfig):
    from spoofray import console

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    tf = console.import_tensorflow()  # without its start-up notices unless --verbose

    tf.get_logger().setLevel("ERROR")  # MWMS logs every all-reduce at INFO
    threads = max(1, int(round(cfg.cpus_per_worker)))
    try:  # only possible before TensorFlow's runtime starts
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(max(2, threads))
    except RuntimeError:
        pass
    # Ray's TensorflowConfig backend has set TF_CONFIG for this worker.
    configure_coordination(cfg.tf_heartbeat_timeout_s)
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    import keras

    return tf, keras, strategy


def coordination_service_kwargs(tf_config: dict[str, Any], heartbeat_timeout_s: float
                                ) -> dict[str, Any] | None:
    """Arguments of TensorFlow's ``configure_coordination_service`` for one worker.

    The same service MultiWorkerMirroredStrategy configures itself when none is set
    (``collective_all_reduce_strategy.py``: standalone service, leader = first chief or
    worker, one coordinated job per chief/worker job) plus a heartbeat timeout. TF's
    default is 10 s, and every heartbeat RPC gets half of it as its deadline: on a
    machine with a load of 100 a 5 s RPC misses and the whole run dies with "Deadline
    Exceeded". ``None`` without a chief/worker TF_CONFIG (MWMS then runs locally).
    """
    cluster = tf_config.get("cluster") or {}
    jobs = [(job, len(cluster[job])) for job in ("chief", "worker") if cluster.get(job)]
    task_type = (tf_config.get("task") or {}).get("type")
    if not jobs or task_type not in ("chief", "worker"):
        return None
    leader = f"/job:{jobs[0][0]}/replica:0/task:0"
    return {"service_type": "standalone", "service_leader": leader,
            "heartbeat_timeout_in_ms": int(heartbeat_timeout_s * 1000), "jobs": jobs}


def configure_coordination(heartbeat_timeout_s: float) -> bool:
    """Set the coordination service (with a generous heartbeat) before the strategy exists.

    Uses TensorFlow's own ``context.configure_coordination_service`` (no public API sets
    the heartbeat; ``CommunicationOptions.timeout_seconds`` only bounds collectives and
    is left unset = no timeout). Returns False, changing nothing, when there is no
    multi-worker TF_CONFIG or this TensorFlow lacks the hook (then TF's defaults apply).
    """
    kwargs = coordination_service_kwargs(json.loads(os.environ.get("TF_CONFIG") or "{}"),
                                         heartbeat_timeout_s)
    if kwargs is None:
        return False
    try:
        from tensorflow.compiler.xla.tsl.protobuf import coordination_config_pb2
        from tensorflow.python.eager import context
    except ImportError:  # pragma: no cover  (a TensorFlow that moved its internals)
        return False
    if context.context().coordination_service is not None:
        return False  # already configured in this process (e.g. a restarted loop)
    jobs = [coordination_config_pb2.CoordinatedJob(name=n, num_tasks=k) for n, k in kwargs.pop("jobs")]
    context.context().configure_coordination_service(coordinated_jobs=jobs, **kwargs)
    return True


def _fresh_state(names: list[str]) -> dict[str, Any]:
    return {"epoch": 0, "history": [],
            "members": {n: {"best_key": None, "best_epoch": None, "best_metrics": {},
                            "bad_epochs": 0, "stopped": False} for n in names}}


def run(config: dict[str, Any]) -> None:
    import ray.train

    cfg = DLTrainConfig.from_dict(config["cfg"])
    feature_cfg = FeatureConfig.from_dict(config["feature_cfg"])
    member_cfgs = {n: dl.member_config(n, d) for n, d in config["members"].items()}
    names = list(member_cfgs)
    norm_stats = {k: tuple(np.asarray(v, np.float32) for v in s) for k, s in config["norm_stats"].items()}
    cw0, cw1 = config["class_weights"]
    batch_size, steps = config["batch_size"], config["steps_per_epoch"]
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()

    tf, keras, strategy = _init_tensorflow(cfg)
    keras.utils.set_random_seed(cfg.seed)  # identical initial weights on every worker
    with strategy.scope():
        models = {n: dl.build_member(m, feature_cfg, norm_stats.get(m.input_kind))
                  for n, m in member_cfgs.items()}
        optimizers = {n: keras.optimizers.AdamW(learning_rate=m.learning_rate or cfg.learning_rate,
                                                weight_decay=cfg.weight_decay)
                      for n, m in member_cfgs.items()}
        for n in names:
            optimizers[n].build(models[n].trainable_variables)
    # Plain copies for dev scoring and saving: no distributed variables, no collectives.
    eval_models = {n: dl.build_member(m, feature_cfg, norm_stats.get(m.input_kind))
                   for n, m in member_cfgs.items()}
    workdir = tempfile.mkdtemp(prefix="spoofray-train-")
    state = _fresh_state(names)
    # A restart inside this run (FailureConfig) has the newest checkpoint; else --resume's.
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None and config.get("resume_checkpoint"):
        checkpoint = ray.train.Checkpoint(config["resume_checkpoint"])
    if checkpoint:
        with checkpoint.as_directory() as d:
            state = _restore(d, names, models, optimizers, workdir)

    global_batch = batch_size * world
    steps_fn = {n: _make_train_step(tf, keras, strategy, models[n], optimizers[n], global_batch)
                for n in names}
    predict_fn = {n: tf.function(lambda x, m=eval_models[n]: m(x, training=False), reduce_retracing=True)
                  for n in names}
    train_shard = ray.train.get_dataset_shard("train")
    dev_shard = ray.train.get_dataset_shard("dev") if rank == 0 else None
    dev_cache: list[dict[str, np.ndarray]] | None = None

    for epoch in range(state["epoch"], cfg.epochs):
        active = [n for n in names if not state["members"][n]["stopped"]]
        if not active:
            break
        t0 = time.time()
        rng = np.random.default_rng([cfg.seed, epoch, rank])
        losses: dict[str, list] = {n: [] for n in active}
        batches = train_shard.iter_batches(
            batch_size=batch_size, batch_format="numpy", drop_last=True, prefetch_batches=2,
            local_shuffle_buffer_size=cfg.shuffle_buffer_rows or None,
            local_shuffle_seed=(cfg.seed * 100_003 + epoch) * world + rank)
        for batch in fixed_steps(batches, steps):
            feats = {m.input_kind: batch[m.input_kind] for m in member_cfgs.values()}
            feats, y = augment_batch(feats, batch["y"], rng, cfg.augment)
            w = tf.constant(cw1 * y + cw0 * (1.0 - y))
            y = tf.constant(y)
            for n in active:
                losses[n].append(steps_fn[n](tf.constant(feats[member_cfgs[n].input_kind]), y, w))
        train_s = time.time() - t0

        weights = {n: models[n].get_weights() for n in names}  # symmetric on all workers
        opt_values = {n: [np.asarray(v) for v in optimizers[n].variables] for n in names}
        metrics: dict[str, Any] = {"epoch": epoch + 1, "train_s": round(train_s, 3)}
        flags = np.zeros(len(names), np.float32)
        if rank == 0:
            t1 = time.time()
            for n in active:
                eval_models[n].set_weights(weights[n])
            dev_batches, dev_cache = _dev_batches(dev_shard, dev_cache, cfg)
            for n in active:
                loss = float(np.mean([float(v) for v in losses[n]]))
                m = _score_and_track(n, epoch, loss, dev_batches, predict_fn[n],
                                     member_cfgs[n].input_kind, eval_models[n], state, cfg, workdir)
                metrics.update({f"{n}/{k}": v for k, v in m.items()})
            for key in ("loss", "dev_eer", "dev_auc", "dev_eer_file", "dev_auc_file"):
                metrics[key] = float(np.mean([metrics[f"{n}/{key}"] for n in active]))
            metrics["eval_s"] = round(time.time() - t1, 3)
            flags = np.array([float(state["members"][n]["stopped"]) for n in names], np.float32)
        # Rank 0 decided who stops; the all-reduce (others add zeros) tells every worker.
        flags = strategy.reduce(tf.distribute.ReduceOp.SUM,
                                strategy.run(lambda: tf.constant(flags)), axis=None).numpy()
        for n, f in zip(names, flags):
            state["members"][n]["stopped"] = bool(f > 0.5)
        state["epoch"] = epoch + 1
        metrics["epoch_s"] = round(time.time() - t0, 3)
        if rank == 0:
            state["history"].append(metrics)
            with tempfile.TemporaryDirectory(prefix="spoofray-ckpt-") as ckpt_dir:
                _write_checkpoint(ckpt_dir, state, weights, opt_values, workdir)
                ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(ckpt_dir),
                                 checkpoint_dir_name=f"epoch-{epoch + 1:04d}")
        else:
            ray.train.report(metrics)
    shutil.rmtree(workdir, ignore_errors=True)


def _make_train_step(tf, keras, strategy, model, optimizer, global_batch: int):
    """A compiled distributed step: class-weighted BCE, gradients summed over workers."""

    def replica_step(x, y, w):
        with tf.GradientTape() as tape:
            p = model(x, training=True)
            per_example = keras.losses.binary_crossentropy(y[:, None], p)  # (batch,)
            loss = tf.reduce_sum(per_example * w) / global_batch
            if model.losses:
                loss += tf.add_n(model.losses) / strategy.num_replicas_in_sync
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return loss

    @tf.function
    def step(x, y, w):
        per_replica = strategy.run(replica_step, args=(x, y, w))
        return strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)

    return step


def _dev_batches(dev_shard, cache, cfg: DLTrainConfig):
    """Dev batches for rank 0, from memory after the first epoch when they fit."""
    if cache is not None:
        return cache, cache
    batches, size, keep = [], 0, True
    for b in dev_shard.iter_batches(batch_size=cfg.eval_batch_size, batch_format="numpy"):
        size += sum(v.nbytes for v in b.values() if isinstance(v, np.ndarray) and v.dtype != object)
        keep = keep and size <= cfg.dev_cache_mb * 2**20
        batches.append(b)
    if not batches:
        raise RuntimeError("the dev split is empty on rank 0")
    return batches, (batches if keep else None)


def _score_and_track(name, epoch, loss, dev_batches, predict, kind, eval_model, state, cfg, workdir):
    """Score dev with one member, update its early-stopping state, keep its best model."""
    import pandas as pd

    from spoofray import metrics as M
    from spoofray import scoring

    scores = np.concatenate([np.asarray(predict(b[kind].astype(np.float32)))[:, 0] for b in dev_batches])
    y = np.concatenate([b["y"] for b in dev_batches]).astype(int)
    uri = np.concatenate([b["uri"] for b in dev_batches]).astype(str)
    window_index = np.concatenate([b["window_index"] for b in dev_batches])
    _, first, file_index = np.unique(uri, return_index=True, return_inverse=True)
    file_y, file_s = y[first], scoring.file_scores(scores, file_index)
    out = {"loss": loss}
    for suffix, (yy, ss) in (("", (y, scores)), ("_file", (file_y, file_s))):
        try:
            out[f"dev_eer{suffix}"] = float(M.compute_eer(yy, ss)[0])
            out[f"dev_auc{suffix}"] = float(M.roc_auc(yy, ss))
        except MetricError:  # NaN scores from a diverged model: the worst possible values
            out[f"dev_eer{suffix}"], out[f"dev_auc{suffix}"] = 1.0, 0.0
    ms = state["members"][name]
    suffix = "_file" if cfg.early_stop_on == "dev_eer_file" else ""
    key = [out[f"dev_eer{suffix}"], -out[f"dev_auc{suffix}"]]  # lower EER, then higher AUC
    if ms["best_key"] is None or key < ms["best_key"]:
        ms.update(best_key=key, best_epoch=epoch + 1, bad_epochs=0,
                  best_metrics={"epoch": epoch + 1, "level": "window", "eer": out["dev_eer"],
                                "auc": out["dev_auc"], "eer_file": out["dev_eer_file"],
                                "auc_file": out["dev_auc_file"], "loss": loss,
                                "n_dev_windows": int(len(y)), "n_dev_files": int(len(first)),
                                "early_stop_on": cfg.early_stop_on})
        os.makedirs(os.path.join(workdir, name), exist_ok=True)
        eval_model.save(os.path.join(workdir, name, "best.keras"))
        pd.DataFrame({"uri": uri, "window_index": window_index, "score": scores}).to_parquet(
            os.path.join(workdir, name, "best_dev_scores.parquet"), index=False)
    else:
        ms["bad_epochs"] += 1
        ms["stopped"] = ms["bad_epochs"] >= cfg.patience
    out["best_dev_eer"] = ms["best_metrics"]["eer"]
    out["stopped"] = ms["stopped"]
    return out


def _write_checkpoint(d: str, state, weights, opt_values, workdir: str) -> None:
    for n in state["members"]:
        os.makedirs(os.path.join(d, n))
        np.savez(os.path.join(d, n, "weights.npz"), *weights[n])
        np.savez(os.path.join(d, n, "optimizer.npz"), *opt_values[n])
        for fname in ("best.keras", "best_dev_scores.parquet"):
            shutil.copyfile(os.path.join(workdir, n, fname), os.path.join(d, n, fname))
    # Ray uploads a checkpoint file by file; a kill part-way leaves some files short or
    # missing. The sizes let train.latest_checkpoint pass over such a checkpoint.
    files = {f"{n}/{f}": os.path.getsize(os.path.join(d, n, f))
             for n in state["members"] for f in sorted(os.listdir(os.path.join(d, n)))}
    with open(os.path.join(d, "state.json"), "w") as fh:
        json.dump({**state, "files": files}, fh, indent=1, default=float)


def _restore(d: str, names, models, optimizers, workdir: str) -> dict[str, Any]:
    """Load weights, optimizer state, early-stopping state and best models of a checkpoint."""
    with open(os.path.join(d, "state.json")) as fh:
        state = json.load(fh)
    state.pop("files", None)  # describes that checkpoint only
    for n in names:
        if n not in state["members"]:
            raise ValueError(f"checkpoint {d} has no member {n!r} (it has {sorted(state['members'])})")
        with np.load(os.path.join(d, n, "weights.npz")) as w:
            models[n].set_weights([w[f"arr_{i}"] for i in range(len(w.files))])
        with np.load(os.path.join(d, n, "optimizer.npz")) as o:
            values = [o[f"arr_{i}"] for i in range(len(o.files))]
        if len(values) != len(optimizers[n].variables):
            raise ValueError(f"checkpoint optimizer state of {n!r} does not match the model")
        for var, value in zip(optimizers[n].variables, values):
            var.assign(value)
        os.makedirs(os.path.join(workdir, n), exist_ok=True)
        for fname in ("best.keras", "best_dev_scores.parquet"):
            shutil.copyfile(os.path.join(d, n, fname), os.path.join(workdir, n, fname))
    # Resuming a subset of the checkpoint's members continues just those.
    state["members"] = {n: state["members"][n] for n in names}
    return state

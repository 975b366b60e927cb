"""Train deep ensemble members with Ray Train's ``TensorflowTrainer``.

One call trains one or several members (:data:`spoofray.models.dl.MEMBER_CONFIGS`) in
one trainer run: every epoch streams the training shard once and steps every member on
each batch, so the data is read once for all of them.

Data: the feature dataset's Parquet parts become a Ray Dataset (``read_parquet``), cut
into group-disjoint train/dev by :func:`spoofray.splits.holdout_split`; ``train`` is
split across workers with ``streaming_split(equal=True)`` and every worker runs exactly
the same number of steps (equal batch counts; a short shard repeats its last batch), so
no worker waits forever in a collective. ``dev`` is read whole by rank 0.

Training (per worker): ``MultiWorkerMirroredStrategy`` and a Keras 3 custom loop with
``strategy.run`` (Keras 3 ``model.fit`` under this strategy inside Ray Train fails, ray
issue 47464), class-weighted binary cross-entropy, SpecAugment/mixup/cutmix on the
batches (:mod:`spoofray.augment`). After every epoch rank 0 scores dev, reports loss and
dev EER/AUC at window level (``dev_eer``) and file level (``dev_eer_file``: mean window
P(spoof) per file), and writes a checkpoint; stop decisions reach every worker through
an all-reduce. A member stops after ``patience`` epochs without a better dev EER.

Output layout (``output``, local or ``s3://``)::

    members/<name>.keras, members/<name>.json   the best epoch of each member + sidecar
    dev_scores.parquet                          uri, window_index, label, attack, <name>...
    training_summary.json                       config, data counts, history, timings
    ray/<run name>/...                          Ray Train runs and per-epoch checkpoints
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import posixpath
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterable
from typing import Any

import numpy as np

from spoofray import console, dataset, splits, storage
from spoofray.config import FeatureConfig
from spoofray.errors import ConfigError, OutputExistsError
from spoofray.models import dl
from spoofray.training import train_worker
from spoofray.training.dl_config import DLTrainConfig

log = logging.getLogger(__name__)

META_COLUMNS = ("uri", "window_index", "label", "attack", "speaker", "group")


@dataclasses.dataclass
class DLTrainResult:
    """What :func:`train_members` produced (URIs under ``output``)."""

    output: str
    members: dict[str, str]  # name -> URI of <name>.keras
    summary: dict[str, Any]


# --- driver ------------------------------------------------------------------------------


def train_members(dataset_root: str, output: str, cfg: DLTrainConfig, *, resume: bool = False,
                  overwrite: bool = False) -> DLTrainResult:
    """Train ``cfg.members`` on the feature dataset at ``dataset_root``; write to ``output``.

    Needs a running Ray (``ray.init()`` done by the caller or a job). ``resume`` continues
    from the latest checkpoint under ``<output>/ray`` (epoch count, weights, optimizer
    state, early-stopping state); the data split and normalisation are recomputed
    deterministically from ``cfg.seed``.
    """
    import ray.train
    from ray.train import CheckpointConfig, FailureConfig, RunConfig

    console.import_tensorflow()  # ray.train.tensorflow imports it: without its notices
    from ray.train.tensorflow import TensorflowTrainer

    started = time.time()
    output = output if storage.is_remote(output) else os.path.abspath(output)
    feature_cfg = dataset.feature_config_of(dataset_root)
    members = cfg.member_configs()
    for m in members.values():
        m.input_shape(feature_cfg)  # refuses kinds the dataset lacks, before any work
    resume_ckpt = _prepare_output(output, resume=resume, overwrite=overwrite)

    meta = dataset.read_table(dataset_root, columns=list(META_COLUMNS)).to_pandas()
    train_idx, dev_idx = splits.holdout_split(meta, by=cfg.split_by, dev_fraction=cfg.dev_fraction,
                                              seed=cfg.seed, dev_groups=cfg.dev_groups or None)
    splits.assert_disjoint(meta, train_idx, dev_idx, cfg.split_by)
    train_meta, dev_meta = meta.iloc[train_idx], meta.iloc[dev_idx]
    y_train = (train_meta["label"] == "spoof").to_numpy()
    n_spoof, n_bona = int(y_train.sum()), int((~y_train).sum())
    class_weights = ([len(y_train) / (2.0 * n_bona), len(y_train) / (2.0 * n_spoof)]
                     if cfg.class_weighting == "balanced" else [1.0, 1.0])
    kinds = sorted({m.input_kind for m in members.values()})
    norm_stats = feature_norm_stats_of(dataset_root, kinds, set(train_meta["uri"]),
                                       cfg.norm_sample_rows, cfg.seed)
    rows_per_worker = len(train_idx) // cfg.num_workers
    if rows_per_worker < 1:
        raise ConfigError(f"{len(train_idx)} training windows cannot feed {cfg.num_workers} workers")
    batch = min(cfg.batch_size, rows_per_worker)
    steps = rows_per_worker // batch
    if cfg.max_steps_per_epoch:
        steps = min(steps, cfg.max_steps_per_epoch)

    features_uri = storage.join(dataset_root, dataset.FEATURES_DIR)
    train_ds = _split_dataset(features_uri, kinds, train_meta["uri"].unique(), with_meta=False)
    dev_ds = _split_dataset(features_uri, kinds, dev_meta["uri"].unique(), with_meta=True)
    loop_config = {
        "cfg": cfg.to_dict(),
        "feature_cfg": feature_cfg.to_dict(),
        "members": {n: m.to_dict() for n, m in members.items()},
        "norm_stats": {k: [v.tolist() for v in s] for k, s in norm_stats.items()},
        "class_weights": class_weights,
        "batch_size": batch,
        "steps_per_epoch": steps,
        # Loaded by the workers (Train V2 has no resume_from_checkpoint; this works in both).
        "resume_checkpoint": resume_ckpt,
    }
    run_name = f"train_dl-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
    trainer = TensorflowTrainer(
        train_worker.run,
        train_loop_config=loop_config,
        scaling_config=_scaling_config(cfg),
        run_config=RunConfig(
            name=run_name,
            storage_path=storage.join(output, "ray"),
            checkpoint_config=CheckpointConfig(num_to_keep=cfg.keep_checkpoints),
            failure_config=FailureConfig(max_failures=cfg.max_failures),
        ),
        datasets={"train": train_ds, "dev": dev_ds},
        dataset_config=_data_config(cfg),
    )
    fit_started = time.time()
    result = trainer.fit()
    fit_s = time.time() - fit_started
    if getattr(result, "error", None):
        raise result.error
    ckpt = result.checkpoint or (ray.train.Checkpoint(resume_ckpt) if resume_ckpt else None)
    if ckpt is None:
        raise RuntimeError(f"training run {run_name} reported no checkpoint; see the Ray logs")
    fingerprint = dl.training_data_fingerprint(train_meta["uri"], train_meta["label"])
    with ckpt.as_directory() as ckpt_dir:
        return _write_outputs(
            ckpt_dir, output, cfg, feature_cfg, members, fingerprint, dev_meta,
            summary={
                "run_name": run_name,
                "ray_train": "v2" if _train_v2() else "v1",
                "resumed_from": resume_ckpt,
                "checkpoint": ckpt.path,
                "data": {"dataset": dataset_root, "n_train_windows": len(train_idx),
                         "n_dev_windows": len(dev_idx), "n_train_spoof": n_spoof,
                         "n_train_bonafide": n_bona, "n_dev_files": int(dev_meta["uri"].nunique()),
                         "split_by": cfg.split_by, "class_weights": class_weights,
                         "batch_size_per_worker": batch, "steps_per_epoch": steps},
                "timing_s": {"fit": round(fit_s, 2), "total": round(time.time() - started, 2)},
            })


def _train_v2() -> bool:
    from ray.train.v2._internal.constants import is_v2_enabled

    return is_v2_enabled()


def _scaling_config(cfg: DLTrainConfig):
    from ray.train import ScalingConfig

    resources = {"CPU": cfg.cpus_per_worker}
    if cfg.use_gpu:
        resources["GPU"] = 1
    kwargs: dict[str, Any] = {}
    if not _train_v2():
        # Train V1 reserves a whole CPU for its trainer actor otherwise, which deadlocks a
        # small machine whose CPUs all go to workers. (V2 has no such actor reservation.)
        kwargs["trainer_resources"] = {"CPU": 0}
    return ScalingConfig(num_workers=cfg.num_workers, use_gpu=cfg.use_gpu,
                         resources_per_worker=resources, **kwargs)


def _data_config(cfg: DLTrainConfig):
    from ray.train import DataConfig

    options = DataConfig.default_ingest_options()
    options.preserve_order = cfg.preserve_order
    # Only train is sharded; every worker gets all of dev, but only rank 0 reads it.
    return DataConfig(datasets_to_split=["train"], execution_options=options)


def _prepare_output(output: str, *, resume: bool, overwrite: bool) -> str | None:
    """Check the output folder; return the checkpoint URI to resume from (or None)."""
    if resume:
        ckpt = latest_checkpoint(output)
        if ckpt is None:
            raise FileNotFoundError(f"--resume: no checkpoint under {storage.join(output, 'ray')}")
        return ckpt
    if storage.exists_nonempty(output):
        if not overwrite:
            raise OutputExistsError(
                f"{output} already holds data; pass overwrite=True (--overwrite) to replace it "
                "or resume=True (--resume) to continue its latest checkpoint"
            )
        storage.remove(output)
    return None


def latest_checkpoint(output: str) -> str | None:
    """URI of the complete checkpoint with the highest epoch under ``<output>/ray`` (or None).

    Complete: its ``state.json`` reads, and every file it lists has the size it lists (an
    upload killed part-way leaves files short or missing; such a checkpoint is skipped).
    """
    best: tuple[int, str] | None = None
    for state_uri in storage.list_files(storage.join(output, "ray"), suffix="/state.json"):
        folder = posixpath.dirname(state_uri)
        try:
            state = json.loads(storage.read_bytes(state_uri))
            epoch = int(state["epoch"])
            complete = all(storage.info(storage.join(folder, name))["size"] == size
                           for name, size in state.get("files", {}).items())
        except (OSError, ValueError, KeyError):
            continue  # being written or deleted, or a file it lists never arrived
        if not complete:
            log.warning("skipping checkpoint %s: a file is shorter than its state.json says "
                        "(an interrupted upload)", folder)
            continue
        candidate = (epoch, folder)
        if best is None or candidate > best:
            best = candidate
    return best[1] if best else None


def feature_norm_stats_of(root: str, kinds: Iterable[str], train_uris: set[str], max_rows: int,
                          seed: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per-row mean and variance of each kind over up to ``max_rows`` training windows.

    Parts are visited in a seeded random order and read one at a time, so memory stays at
    one part however large the dataset.

    Returns
    -------
    dict kind -> (mean, var), each shape (rows,)
    """
    import pyarrow.compute as pc

    kinds = list(kinds)
    files = dataset.part_uris(root, dataset.FEATURES_DIR)
    allowed = None
    sums: dict[str, list[np.ndarray]] = {}
    count = 0
    for i in np.random.default_rng(seed).permutation(len(files)):
        table = dataset.read_part(files[i], columns=["uri", *kinds])
        if allowed is None:
            import pyarrow as pa

            allowed = pa.array(sorted(train_uris), pa.string())
        table = table.filter(pc.is_in(table["uri"], value_set=allowed))
        table = table.slice(0, max_rows - count)
        if len(table) == 0:
            continue
        for kind in kinds:
            x = dataset.tensor_column(table, kind).astype(np.float64)
            axes = (0, 2) if x.ndim == 3 else (0,)
            n = x.shape[0] * (x.shape[2] if x.ndim == 3 else 1)
            s = [x.sum(axis=axes), (x**2).sum(axis=axes), np.full(x.shape[1], float(n))]
            sums[kind] = s if kind not in sums else [a + b for a, b in zip(sums[kind], s)]
        count += len(table)
        if count >= max_rows:
            break
    if count == 0:
        raise ConfigError(f"no training windows found under {root} for the normalisation statistics")
    out = {}
    for kind, (s1, s2, n) in sums.items():
        mean = s1 / n
        out[kind] = (mean.astype(np.float32), np.maximum(s2 / n - mean**2, 0.0).astype(np.float32))
    return out


def _select_rows(batch, *, allowed, kinds: list[str], with_meta: bool):
    """Ray Data UDF: keep the rows of one split and add the float target ``y``."""
    import pyarrow as pa
    import pyarrow.compute as pc

    batch = batch.filter(pc.is_in(batch["uri"], value_set=allowed))
    y = pc.cast(pc.equal(batch["label"], "spoof"), pa.float32())
    cols = {k: batch[k] for k in kinds}
    cols["y"] = y
    if with_meta:
        cols["uri"] = batch["uri"]
        cols["window_index"] = batch["window_index"]
    return pa.table(cols)


def _split_dataset(features_uri: str, kinds: list[str], uris: Iterable[str], *, with_meta: bool):
    import pyarrow as pa
    import ray.data

    ds = ray.data.read_parquet(features_uri, columns=["uri", "window_index", "label", *kinds])
    allowed = pa.array(sorted(uris), pa.string())
    return ds.map_batches(_select_rows, batch_format="pyarrow",
                          fn_kwargs={"allowed": allowed, "kinds": kinds, "with_meta": with_meta})


def _write_outputs(ckpt_dir: str, output: str, cfg: DLTrainConfig, feature_cfg: FeatureConfig,
                   members: dict[str, dl.MemberConfig], fingerprint: str, dev_meta,
                   summary: dict[str, Any]) -> DLTrainResult:
    import pandas as pd

    with open(os.path.join(ckpt_dir, "state.json")) as fh:
        state = json.load(fh)
    out_members: dict[str, str] = {}
    scores = dev_meta[["uri", "window_index", "label", "attack"]].reset_index(drop=True)
    with tempfile.TemporaryDirectory() as tmp:
        for name, mcfg in members.items():
            mstate = state["members"][name]
            sidecar = dl.sidecar_dict(name, mcfg, feature_cfg, dev_metrics=mstate["best_metrics"],
                                      training_data_fingerprint=fingerprint)
            sidecar["best_epoch"] = mstate["best_epoch"]
            shutil.copyfile(os.path.join(ckpt_dir, name, "best.keras"), os.path.join(tmp, f"{name}.keras"))
            dl.write_sidecar(os.path.join(tmp, f"{name}.json"), sidecar)
            member_scores = pd.read_parquet(os.path.join(ckpt_dir, name, "best_dev_scores.parquet"))
            scores = scores.merge(member_scores.rename(columns={"score": name}),
                                  on=["uri", "window_index"], how="left")
            for fname in (f"{name}.keras", f"{name}.json"):
                with open(os.path.join(tmp, fname), "rb") as fh:
                    storage.write_bytes_atomic(storage.join(output, "members", fname), fh.read())
            out_members[name] = storage.join(output, "members", f"{name}.keras")
        scores_path = os.path.join(tmp, "dev_scores.parquet")
        scores.sort_values(["uri", "window_index"]).to_parquet(scores_path, index=False)
        with open(scores_path, "rb") as fh:
            storage.write_bytes_atomic(storage.join(output, "dev_scores.parquet"), fh.read())
    summary = {
        **summary,
        "config": cfg.to_dict(),
        "feature_config": feature_cfg.to_dict(),
        "feature_config_hash": feature_cfg.config_hash(),
        "training_data_fingerprint": fingerprint,
        "epochs_done": state["epoch"],
        "members": {n: {"file": f"members/{n}.keras", "best_epoch": state["members"][n]["best_epoch"],
                        "stopped_early": state["members"][n]["stopped"],
                        "dev_metrics": state["members"][n]["best_metrics"]} for n in members},
        "history": state["history"],
    }
    storage.write_bytes_atomic(storage.join(output, "training_summary.json"),
                               json.dumps(summary, indent=2, default=str).encode())
    return DLTrainResult(output=output, members=out_members, summary=summary)

"""Ray Tune sweeps of the sklearn soft-voting ensemble with group-aware cross-validation.

Flow of :func:`run_sweep`: load and validate the search space (YAML; keys are the
ensemble's ``get_params()`` names) before anything else; load the data once
(:mod:`spoofray.training.cv_data`) and ship it to trials with ``tune.with_parameters``;
each trial fits fold after fold and calls ``tune.report`` after every fold with the
running mean of the per-fold EERs, so ASHA can stop bad trials early; a checkpoint per
fold lets ``--resume`` continue interrupted trials instead of restarting them.

The metric is the FILE-level EER (a file's score is the mean of its windows' P(spoof)),
lower is better; AUC, window-level EER, and accuracy/precision/recall/F1 at P(spoof) >= 0.5
are reported alongside. After the sweep the best complete trial is refit on all data.

Output directory::

    results.parquet        one row per trial: config/<param>, metrics, status
    best_config.yaml       the best parameters (also usable as a --space of constants)
    plots/eer_by_trial.png, plots/param_importance.png
    model/ensemble.skops   best ensemble refit on all data (skops, never pickle)
    model/member.json      sidecar for the model bundle (threshold = out-of-fold EER point)
    summary.json
    sweep_config.json      the TuneMLConfig (checked again on --resume)
    ray_results/<name>/    Ray Tune's experiment (unless --storage-path says elsewhere)
"""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import math
import os
import tempfile
import time
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from spoofray import console, storage
from spoofray.config import Config, Interval, Options, setting
from spoofray.errors import ConfigError, OutputExistsError
from spoofray.models.ml import SpoofVotingEnsemble, did_you_mean, make_ensemble, save_ensemble
from spoofray.splits import GROUP_BY
from spoofray.training import cv_data

log = logging.getLogger(__name__)

METRIC, MODE = "eer", "min"
REPORTED = ("eer", "auc", "accuracy", "precision", "recall", "f1", "window_eer")
DISTRIBUTIONS = ("choice", "grid_search", "uniform", "quniform", "loguniform", "qloguniform",
                 "randint", "qrandint", "lograndint", "qlograndint", "randn", "qrandn")
#: Ensemble parameters the sweep sets itself, and the option that controls each.
RESERVED = {"n_jobs": "--cpus-per-trial", "random_state": "--seed"}
#: Settings that must not change between a sweep and its --resume.
RESUME_KEYS = ("dataset", "table", "space", "group_by", "n_splits", "table_block_rows", "seed")


@dataclasses.dataclass(frozen=True)
class TuneMLConfig(Config):
    """One sweep. Exactly one of ``dataset`` (spoofray feature dataset) or ``table``
    (DEEP-VOICE style CSV/Parquet) is the data."""

    _constraints = {
        "group_by": [Options(GROUP_BY)],
        "n_splits": [Interval(int, 2)],
        "table_block_rows": [Interval(int, 0)],
        "num_samples": [Interval(int, 1)],
        "time_budget_s": [None, Interval(float, 0, closed="neither")],
        "max_concurrent": [Interval(int, 0)],
        "cpus_per_trial": [Interval(int, 1)],
        "grace_period": [Interval(int, 1)],
        "reduction_factor": [Interval(int, 2)],
        "seed": [Interval(int, 0)],
        "resume": [bool],
        "overwrite": [bool],
        "verbose": [Options((0, 1, 2))],
    }

    space: str = setting("", "YAML search space", default_help="tune_spaces/"
                         "voting_ensemble.yaml; smoke.yaml with --smoke-test")
    output: str = setting("", "output folder (local or s3://)")
    dataset: str | None = setting(None, "feature dataset made by jobs/extract_features.py "
                                  "(local path or s3://); give it or --table")
    table: str | None = setting(None, "DEEP-VOICE style .csv/.parquet: 26 stats columns + "
                                "LABEL; give it or --dataset")
    storage_path: str | None = setting(None, "Ray Tune experiment storage, local or s3://",
                                       default_help="<output>/ray_results")
    name: str = setting("tune_ml", "experiment name")
    member_name: str = setting("ml", "the model's name in a bundle (its report column is "
                               "score_<name>)")
    group_by: str = setting("speaker", "what folds keep disjoint (missing speakers fall back "
                            "to the recording)")
    n_splits: int = setting(5, "folds")
    table_block_rows: int = setting(0, "--table only: consecutive rows per fold group; 0 = "
                                    "row-level folds, optimistic")
    num_samples: int = setting(20, "configurations to try")
    time_budget_s: float | None = setting(None, "stop starting trials after this long",
                                          default_help="no limit")
    max_concurrent: int = setting(0, "most trials at once; 0 = as many as CPUs allow")
    #: Also the BLAS/OpenMP thread limit.
    cpus_per_trial: int = setting(1, "CPUs per trial, also the members' n_jobs")
    grace_period: int = setting(1, "ASHA: folds every trial runs before it may be stopped")
    reduction_factor: int = setting(2, "ASHA: keep 1 of this many trials at each rung")
    seed: int = setting(0, "seed of folds, sampling and models")
    resume: bool = setting(False, "continue an interrupted sweep in --output (finished "
                           "trials are kept, unfinished ones continue from their last fold)")
    overwrite: bool = setting(False, "replace an existing --output")
    address: str | None = setting(None, "Ray cluster address",
                                  default_help="RAY_ADDRESS, else local Ray")
    verbose: int = setting(1, "Tune progress output (shown with --verbose only: a quiet "
                           "job shows spoofray's lines alone)")

    def _check(self) -> None:
        if not self.space or not self.output:
            raise ConfigError("TuneMLConfig needs a search space (space) and an output folder")
        if (self.dataset is None) == (self.table is None):
            raise ConfigError("give exactly one of dataset (feature dataset) or table (CSV)")

    def resolved(self) -> "TuneMLConfig":
        """A copy with local paths made absolute (Ray workers have other CWDs)."""
        def absolute(uri: str | None) -> str | None:
            return uri if uri is None or storage.is_remote(uri) else storage.filesystem(uri)[1]
        output = absolute(self.output)
        return dataclasses.replace(
            self, space=absolute(self.space), output=output, dataset=absolute(self.dataset),
            table=absolute(self.table),
            storage_path=absolute(self.storage_path) or storage.join(output, "ray_results"),
        )


# --- search space --------------------------------------------------------------------------


def load_space(path: str) -> dict[str, Any]:
    """Read a YAML search space with ``yaml.safe_load``; validate it (:func:`validate_space`)."""
    import yaml

    try:
        raw = yaml.safe_load(storage.read_bytes(path).decode())
    except FileNotFoundError as exc:
        raise ConfigError(f"search space {path} not found") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"search space {path} is not valid YAML: {exc}") from exc
    return validate_space(raw, source=path)


def validate_space(raw: Any, source: str = "search space") -> dict[str, Any]:
    """Turn a parsed YAML mapping into a Ray Tune ``param_space``, refusing any mistake.

    Each key must be a parameter of :class:`SpoofVotingEnsemble` (``get_params()`` names,
    e.g. ``rf__n_estimators``, ``weight_svc``, ``inputs``). Each value is a constant or a
    one-key mapping ``{distribution: args}`` with ``distribution`` one of
    :data:`DISTRIBUTIONS` and ``args`` a list (positional) or mapping (keyword) for the
    ``ray.tune`` function of that name (``choice`` takes the list of options). The
    bounds, options and a few samples of every key are checked with scikit-learn's own
    parameter validation, so a bad value fails here, not in a trial.

    Raises
    ------
    ConfigError
        Naming the file, the key, what was given and what is valid (with "did you mean").
    """
    if not isinstance(raw, Mapping) or not raw:
        raise ConfigError(f"{source}: expected a non-empty mapping of parameter -> "
                          f"distribution, got {type(raw).__name__}")
    valid = SpoofVotingEnsemble().get_params(deep=True)
    space: dict[str, Any] = {}
    for key, spec in raw.items():
        if key in RESERVED:
            raise ConfigError(f"{source}: {key!r} is set by the sweep ({RESERVED[key]}); "
                              "remove it from the space")
        if not isinstance(key, str) or key not in valid:
            prefix = str(key).split("__")[0]
            related = sorted(k for k in valid if k.startswith(prefix + "__")) or sorted(
                k for k in valid if "__" not in k and k not in RESERVED)
            raise ConfigError(
                f"{source}: unknown parameter {key!r}{did_you_mean(str(key), list(valid))}; "
                f"valid names include {related}"
            )
        domain, candidates = _parse_spec(key, spec, source)
        for value in candidates:
            _check_value(key, value, spec, source)
        space[key] = domain
    return space


def _parse_spec(key: str, spec: Any, source: str) -> tuple[Any, list[Any]]:
    from ray import tune
    from ray.tune.search.sample import Categorical, Domain, Float, Integer

    if not (isinstance(spec, Mapping) and len(spec) == 1 and isinstance(next(iter(spec)), str)):
        return spec, [spec]  # a constant (wrap a one-key mapping constant in a choice)
    name, args = next(iter(spec.items()))
    if name not in DISTRIBUTIONS:
        raise ConfigError(
            f"{source}: {key}: unknown distribution {name!r}"
            f"{did_you_mean(name, DISTRIBUTIONS)}; valid distributions are {list(DISTRIBUTIONS)}"
        )
    if name in ("choice", "grid_search") and isinstance(args, list):
        if not args:
            raise ConfigError(f"{source}: {key}: {name} needs at least one option")
        args = [args]
    try:
        if isinstance(args, Mapping):
            domain = getattr(tune, name)(**args)
        elif isinstance(args, list):
            domain = getattr(tune, name)(*args)
        else:
            raise TypeError(f"arguments must be a list or mapping, got {args!r}")
    except (TypeError, ValueError, AssertionError) as exc:
        import inspect

        expected = ", ".join(inspect.signature(getattr(tune, name)).parameters)
        raise ConfigError(
            f"{source}: {key}: {name}({expected}) cannot take {args!r}: {exc}"
        ) from exc
    if not isinstance(domain, Domain):  # grid_search gives {"grid_search": values}
        return domain, list(domain["grid_search"])
    if isinstance(domain, Categorical):
        return domain, list(domain.categories)
    samples = [_plain(v) for v in np.atleast_1d(domain.sample(size=8, random_state=0))]
    bounds = [domain.lower] + ([domain.upper] if isinstance(domain, Float) else [])
    if isinstance(domain, (Float, Integer)) and math.isfinite(domain.lower):
        return domain, [*bounds, *samples]
    return domain, samples


def _check_value(key: str, value: Any, spec: Any, source: str) -> None:
    try:
        make_ensemble({key: value})
    except ConfigError as exc:
        raise ConfigError(f"{source}: {key}: value {value!r} (from {spec!r}) is invalid: "
                          f"{exc}") from exc


def space_inputs(space: Mapping[str, Any]) -> set[str]:
    """Every input name a trial of ``space`` may use (for reading only those columns)."""
    from ray.tune.search.sample import Categorical

    value = space.get("inputs", SpoofVotingEnsemble().inputs)
    options = value.categories if isinstance(value, Categorical) else (
        value["grid_search"] if isinstance(value, Mapping) else [value])
    return {name for option in options for name in option}


# --- one trial -----------------------------------------------------------------------------


def _load_state(checkpoint: Any) -> dict[str, Any]:
    state: dict[str, Any] = {"folds": [], "files": [], "scores": []}
    if checkpoint is None:
        return state
    with checkpoint.as_directory() as d:
        with open(os.path.join(d, "state.json")) as fh:
            state["folds"] = json.load(fh)["folds"]
        with np.load(os.path.join(d, "oof.npz")) as npz:
            state["files"], state["scores"] = [npz["files"]], [npz["scores"]]
    return state


def cv_trial(config: dict[str, Any], *, data: cv_data.CvData, cpus: int, seed: int) -> None:
    """Ray Tune function trainable: one ensemble config, fold by fold, reporting each fold.

    Reports ``eer`` etc. as running means over the folds done, ``fold_eer`` of the last
    fold, ``folds_done``, and ``oof_eer`` (EER of all out-of-fold file scores pooled; NaN
    until the last fold).
    """
    from ray import tune
    from threadpoolctl import threadpool_limits

    from spoofray.metrics import compute_eer

    # Tune logs every persisted checkpoint at INFO: one line per fold per trial is noise.
    logging.getLogger("ray.train._internal.storage").setLevel(logging.WARNING)
    model = make_ensemble({**config, "n_jobs": cpus, "random_state": seed})
    state = _load_state(tune.get_checkpoint())
    n_folds = len(data.folds)
    for fold in range(len(state["folds"]), n_folds):
        with threadpool_limits(limits=cpus):
            test_idx, window, files, scores = cv_data.fit_fold(model, data, fold)
        state["folds"].append(cv_data.fold_metrics(data, test_idx, window, files, scores))
        state["files"].append(files)
        state["scores"].append(scores)
        metrics = {k: float(np.mean([f[k] for f in state["folds"]])) for k in REPORTED}
        metrics.update(fold_eer=state["folds"][-1]["eer"], folds_done=len(state["folds"]),
                       oof_eer=float("nan"))
        all_files = np.concatenate(state["files"])
        all_scores = np.concatenate(state["scores"])
        if len(state["folds"]) == n_folds:
            metrics["oof_eer"] = float(compute_eer(data.file_labels[all_files], all_scores)[0])
        with tempfile.TemporaryDirectory() as d:
            with open(os.path.join(d, "state.json"), "w") as fh:
                json.dump({"folds": state["folds"]}, fh)
            np.savez(os.path.join(d, "oof.npz"), files=all_files, scores=all_scores)
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(d))


def refit(data: cv_data.CvData, params: dict[str, Any], *, cpus: int, seed: int
          ) -> tuple[SpoofVotingEnsemble, np.ndarray, np.ndarray]:
    """Out-of-fold file scores of ``params`` and the model refit on all windows.

    Returns
    -------
    model : fitted SpoofVotingEnsemble
    files : ndarray, shape (n_files,)
        Indices into ``data.file_uris``.
    scores : ndarray, shape (n_files,)
        Out-of-fold P(spoof) per file (mean over its windows).
    """
    from threadpoolctl import threadpool_limits

    model = make_ensemble({**params, "n_jobs": cpus, "random_state": seed})
    files, scores = [], []
    with threadpool_limits(limits=cpus):
        for fold in range(len(data.folds)):
            _, _, f, s = cv_data.fit_fold(model, data, fold)
            files.append(f)
            scores.append(s)
        model.fit(data.X(model.inputs), data.y)
    model.set_params(n_jobs=None)
    return model, np.concatenate(files), np.concatenate(scores)


# --- the sweep -----------------------------------------------------------------------------


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _prepare_output(cfg: TuneMLConfig) -> None:
    config_uri = storage.join(cfg.output, "sweep_config.json")
    if cfg.resume:
        if not storage.exists_nonempty(config_uri):
            raise ConfigError(f"--resume: {cfg.output} holds no sweep to resume "
                              "(no sweep_config.json); start without --resume")
        before = json.loads(storage.read_bytes(config_uri))
        changed = {k: (before.get(k), getattr(cfg, k)) for k in RESUME_KEYS
                   if before.get(k) != getattr(cfg, k)}
        if changed:
            raise ConfigError(f"--resume with different settings than the interrupted sweep "
                              f"(before, now): {changed}; resume with the same ones")
        return
    if storage.exists_nonempty(cfg.output):
        if not cfg.overwrite:
            raise OutputExistsError(f"{cfg.output} is not empty; pass --overwrite to replace "
                                    "it, or --resume to continue the sweep in it")
        storage.remove(cfg.output)
    if storage.exists_nonempty(storage.join(cfg.storage_path, cfg.name)):
        if not cfg.overwrite:
            raise OutputExistsError(f"experiment {cfg.storage_path}/{cfg.name} exists; "
                                    "pass --overwrite or --resume")
        storage.remove(storage.join(cfg.storage_path, cfg.name))
    storage.write_bytes_atomic(config_uri, json.dumps(cfg.to_dict(), indent=2).encode())


def load_data(cfg: TuneMLConfig, space: Mapping[str, Any]) -> cv_data.CvData:
    """The sweep's data with folds, from ``cfg.dataset`` or ``cfg.table``."""
    if cfg.table is not None:
        if space_inputs(space) - {"stats"}:
            raise ConfigError(f"a feature table has only the 'stats' input; the space asks "
                              f"for {sorted(space_inputs(space))}")
        return cv_data.load_feature_table(cfg.table, n_splits=cfg.n_splits,
                                          block_rows=cfg.table_block_rows, seed=cfg.seed)
    return cv_data.load_feature_dataset(cfg.dataset, inputs=space_inputs(space),
                                        group_by=cfg.group_by, n_splits=cfg.n_splits,
                                        seed=cfg.seed)


def run_sweep(cfg: TuneMLConfig) -> dict[str, Any]:
    """Run (or ``resume``) a sweep on the current Ray, or start/join one; write the outputs.

    Returns
    -------
    summary : dict
        What ``summary.json`` holds: trial counts, best trial and its metrics, paths.
    """
    import ray
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.basic_variant import BasicVariantGenerator

    from spoofray.atomic_fs import atomic_local_filesystem
    from spoofray.pipeline.runtime import init_ray

    started = time.perf_counter()
    cfg = cfg.resolved()
    space = load_space(cfg.space)  # before any data is read or trial started
    _prepare_output(cfg)
    data = load_data(cfg, space)
    init_ray(cfg.address)
    # One checkpoint per fold with num_to_keep=1 forces a state snapshot per fold: that is
    # what makes --resume lose nothing, so Tune's warning about it is only noise here.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    trainable = tune.with_resources(
        tune.with_parameters(cv_trial, data=data, cpus=cfg.cpus_per_trial, seed=cfg.seed),
        {"cpu": cfg.cpus_per_trial},
    )
    experiment = storage.join(cfg.storage_path, cfg.name)
    # Locally, Tune's state files must be replaced whole: see spoofray.atomic_fs.
    state_fs = None if storage.is_remote(experiment) else atomic_local_filesystem()
    if cfg.resume:
        if not tune.Tuner.can_restore(experiment, storage_filesystem=state_fs):
            raise ConfigError(f"--resume: no restorable Tune experiment at {experiment} (the "
                              "sweep stopped before Tune saved any state); start again with "
                              "--overwrite")
        _check_saved_state(experiment)
        tuner = tune.Tuner.restore(experiment, trainable=trainable, resume_unfinished=True,
                                   resume_errored=False, storage_filesystem=state_fs)
    else:
        tuner = tune.Tuner(
            trainable,
            param_space=space,
            tune_config=tune.TuneConfig(
                metric=METRIC, mode=MODE, num_samples=cfg.num_samples,
                time_budget_s=cfg.time_budget_s,
                max_concurrent_trials=cfg.max_concurrent or None,
                search_alg=BasicVariantGenerator(random_state=cfg.seed),
                trial_dirname_creator=_trial_dirname,
                scheduler=ASHAScheduler(
                    time_attr="training_iteration", max_t=cfg.n_splits,
                    grace_period=min(cfg.grace_period, cfg.n_splits),
                    reduction_factor=cfg.reduction_factor),
            ),
            run_config=tune.RunConfig(
                name=cfg.name, storage_path=cfg.storage_path, storage_filesystem=state_fs,
                verbose=cfg.verbose if console.verbose() else 0,
                checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
                failure_config=tune.FailureConfig(max_failures=0),
            ),
        )
    grid = tuner.fit()
    results = results_table(grid, n_splits=cfg.n_splits)
    configs = {_trial_id(r): {k: _plain(v) for k, v in (r.config or {}).items()} for r in grid}
    _write_table(results, storage.join(cfg.output, "results.parquet"))
    write_plots(results, storage.join(cfg.output, "plots"))
    summary: dict[str, Any] = {
        "output": cfg.output, "experiment": experiment, "resumed": cfg.resume,
        "n_trials": len(results), **{f"n_{s}": int((results["status"] == s).sum())
                                     for s in ("complete", "stopped", "error")},
        "metric": "file-level EER (mean window P(spoof) per file), out-of-fold, lower is better"
        if data.level == "file" else "row-level EER (external table), out-of-fold",
        "group_by": data.group_by, "n_splits": cfg.n_splits, "caveat": data.caveat,
        "data": data.source, "n_windows": data.n_windows, "n_files": len(data.file_uris),
    }
    best = best_trial(results)
    if best is None:
        summary["best"] = None
        summary["error"] = "no trial completed every fold; nothing to refit"
    else:
        params = configs[best["trial_id"]]
        summary["best"] = {"trial_id": best["trial_id"], "params": params,
                           **{k: best[k] for k in (*REPORTED, "oof_eer")}}
        _write_best_config(params, summary["best"], storage.join(cfg.output, "best_config.yaml"))
        task = ray.remote(num_cpus=cfg.cpus_per_trial)(refit)
        model, files, scores = ray.get(task.remote(data, params, cpus=cfg.cpus_per_trial,
                                                   seed=cfg.seed))
        summary["model"] = write_model(model, data, files, scores,
                                       storage.join(cfg.output, "model"), cfg.member_name)
    summary["elapsed_s"] = round(time.perf_counter() - started, 2)
    summary = _json_safe(summary)
    storage.write_bytes_atomic(storage.join(cfg.output, "summary.json"),
                               json.dumps(summary, indent=2).encode())
    return summary


def _check_saved_state(experiment: str) -> None:
    """Refuse to resume from a state file Tune cannot read.

    Tune would log the failure and quietly run a new, different sweep in its place (say
    1 trial instead of the 20 asked for) and the summary would still say "resumed".
    """
    import pickle

    import ray.cloudpickle

    # What TuneController.resume reads: the newest of each, picked by name as Tune does.
    for prefix, load in (("experiment_state-", json.loads),
                         ("basic-variant-state-", ray.cloudpickle.loads)):
        found = storage.list_dir(experiment, prefix=prefix, suffix=".json")
        if not found:
            continue
        newest = max(found)
        try:
            load(storage.read_bytes(newest))
        except (ValueError, EOFError, pickle.UnpicklingError) as exc:
            raise ConfigError(
                f"--resume: Tune's saved state {newest} is unreadable "
                f"({type(exc).__name__}: {exc}); resuming from it would silently start a "
                "different sweep. Start again with --overwrite") from exc


def _json_safe(value: Any) -> Any:
    """Plain JSON types, NaN as None (strict JSON readers refuse NaN)."""
    value = _plain(value)
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _trial_dirname(trial: Any) -> str:
    # Tune's default names hold every parameter value: long, and unwieldy on object stores.
    return f"trial_{trial.trial_id}"


def _is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


# --- outputs -------------------------------------------------------------------------------


def results_table(grid: Any, *, n_splits: int) -> pd.DataFrame:
    """One row per trial: ``trial_id``, ``status`` (complete/stopped/error), ``folds_done``,
    the reported metrics (last report: means over the folds done), ``error`` and
    ``config/<param>`` (lists as JSON text)."""
    rows = []
    for result in grid:
        m = result.metrics or {}
        folds_done = int(m.get("folds_done") or 0)
        status = ("error" if result.error else
                  "complete" if folds_done == n_splits else "stopped")
        row: dict[str, Any] = {
            "trial_id": _trial_id(result),
            "status": status, "folds_done": folds_done,
            **{k: float(m.get(k, float("nan"))) for k in (*REPORTED, "oof_eer")},
            "time_total_s": float(m.get("time_total_s", float("nan"))),
            "error": str(result.error).splitlines()[0][:500] if result.error else None,
        }
        for key, value in (result.config or {}).items():
            value = _plain(value)
            row[f"config/{key}"] = json.dumps(value) if isinstance(value, list) else value
        rows.append(row)
    frame = pd.DataFrame(rows)
    if frame.empty:
        return frame
    for col in [c for c in frame.columns if c.startswith("config/")]:
        kinds = {type(v) for v in frame[col] if not _is_missing(v)}
        if len(kinds - {int, float}) and len(kinds) > 1:  # mixed types: store as text
            frame[col] = frame[col].map(lambda v: None if _is_missing(v) else str(v))
    return frame.sort_values("trial_id").reset_index(drop=True)


def _trial_id(result: Any) -> str:
    return (result.metrics or {}).get("trial_id") or os.path.basename(str(result.path))


def best_trial(results: pd.DataFrame) -> dict[str, Any] | None:
    """The complete trial with the lowest EER (ties: higher AUC), or None."""
    if results.empty:
        return None
    done = results[(results["status"] == "complete") & results["eer"].notna()]
    if done.empty:
        return None
    order = done.sort_values(["eer", "auc", "trial_id"], ascending=[True, False, True])
    return order.iloc[0].to_dict()


def _write_table(frame: pd.DataFrame, uri: str) -> None:
    buf = io.BytesIO()
    frame.to_parquet(buf, index=False)
    storage.write_bytes_atomic(uri, buf.getvalue())


def _write_best_config(params: dict[str, Any], best: dict[str, Any], uri: str) -> None:
    import yaml

    header = (f"# Best trial {best['trial_id']}: file-level EER {best['eer']:.4f} (mean over "
              f"folds), AUC {best['auc']:.4f}.\n# Usable as a --space of constants.\n")
    body = yaml.safe_dump({k: _plain(v) for k, v in params.items()}, sort_keys=True)
    storage.write_bytes_atomic(uri, (header + body).encode())


def write_model(model: SpoofVotingEnsemble, data: cv_data.CvData, files: np.ndarray,
                scores: np.ndarray, model_dir: str, name: str = "ml") -> dict[str, Any]:
    """Save ``model/ensemble.skops`` and the sidecar ``model/member.json``; return the sidecar."""
    from spoofray.metrics import evaluate

    labels = data.file_labels[files]
    oof = evaluate(labels, scores)  # threshold: the EER point of the out-of-fold scores
    save_ensemble(model, storage.join(model_dir, "ensemble.skops"))
    sidecar = {
        "name": name,
        "kind": "sklearn",
        "file": "ensemble.skops",
        "inputs": list(model.inputs),
        "feature_config": data.feature_config,
        "feature_config_hash": data.feature_config_hash,
        "threshold": oof["eer_threshold"],
        "threshold_method": "oof EER",
        "oof_metrics": oof,
        "training_data_fingerprint": data.fingerprint(),
    }
    sidecar = _json_safe(sidecar)
    storage.write_bytes_atomic(storage.join(model_dir, "member.json"),
                               json.dumps(sidecar, indent=2).encode())
    return sidecar


def parameter_importance(results: pd.DataFrame) -> pd.Series:
    """Importance of each varied parameter for the EER of complete trials.

    A random forest regresses EER on the trial table (categorical values as codes); its
    impurity importances are returned, largest first. Empty when fewer than 4 complete
    trials or no parameter varies.
    """
    from sklearn.ensemble import RandomForestRegressor

    done = results[(results["status"] == "complete") & results["eer"].notna()]
    cols = [c for c in done.columns if c.startswith("config/") and done[c].nunique() > 1]
    if len(done) < 4 or not cols:
        return pd.Series(dtype=float)
    X = np.column_stack([
        pd.to_numeric(done[c], errors="coerce").fillna(-1).to_numpy()
        if pd.api.types.is_numeric_dtype(done[c]) else pd.factorize(done[c].astype(str))[0]
        for c in cols
    ])
    forest = RandomForestRegressor(n_estimators=200, random_state=0).fit(X, done["eer"])
    names = [c[len("config/"):] for c in cols]
    return pd.Series(forest.feature_importances_, index=names).sort_values(ascending=False)


def write_plots(results: pd.DataFrame, plots_dir: str) -> None:
    """``eer_by_trial.png`` and ``param_importance.png`` under ``plots_dir``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    if not results.empty:
        x = np.arange(len(results))
        for status, marker in (("complete", "o"), ("stopped", "x"), ("error", "s")):
            sel = (results["status"] == status).to_numpy()
            ax.scatter(x[sel], results["eer"].to_numpy()[sel], marker=marker, label=status)
        done = results["eer"].where(results["status"] == "complete")
        ax.step(x, done.cummin().to_numpy(), where="post", color="k", label="best so far")
        ax.legend()
    ax.set_xlabel("trial (creation order)")
    ax.set_ylabel("file-level EER (mean over folds done)")
    ax.set_title("EER by trial (stopped trials: folds done before ASHA stopped them)")
    _save_figure(fig, storage.join(plots_dir, "eer_by_trial.png"))

    importance = parameter_importance(results) if not results.empty else pd.Series(dtype=float)
    fig, ax = plt.subplots(figsize=(7, max(3, 0.35 * len(importance) + 1)))
    if importance.empty:
        ax.text(0.5, 0.5, "needs >= 4 complete trials with varied parameters",
                ha="center", va="center")
        ax.set_axis_off()
    else:
        ax.barh(importance.index[::-1], importance.to_numpy()[::-1])
        ax.set_xlabel("random-forest importance for EER")
    ax.set_title("parameter importance")
    _save_figure(fig, storage.join(plots_dir, "param_importance.png"))


def _save_figure(fig: Any, uri: str) -> None:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    storage.write_bytes_atomic(uri, buf.getvalue())


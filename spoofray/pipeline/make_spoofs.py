"""Training spoofs from your own bona fide audio, on Ray: copy-synthesis of every clip, and
its words said by TTS engines (``CopysynConfig.tts``).

Stages: list (driver) → ``from_items`` → ``map_batches`` of :func:`make_spoofs_batch` (per
source clip: :func:`spoofray.augment.copysyn_item` writes its FLAC files, then a done record;
CPU tasks) → one summary row per source back to the driver, which shows progress as they
come, checks that every listed item came back exactly once, and writes ``errors.csv`` and
then ``manifest.csv`` (atomically, last: a folder without it is unfinished).

Resuming: a source whose done record (``_done/<key>.json``, written after its files, holding
its manifest rows) exists is not redone; a killed run rerun with ``resume`` finishes the rest.
The settings of the first run are kept in ``_make_spoofs.json`` and a resume with other
settings is refused, so one folder never mixes two recipes.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from spoofray import augment, sources, storage
from spoofray.config import Config, Interval, setting
from spoofray.errors import ConfigError, InputFileError, OutputExistsError, SpoofrayError
from spoofray.pipeline import plan, runtime

log = logging.getLogger(__name__)

SUMMARY_COLUMNS = ("uri", "status", "n_outputs", "rows", "error_type", "error_message",
                   "duration_s", "seconds")
ERROR_COLUMNS = ("uri", "error_type", "error_message")
SETTINGS_NAME = "_make_spoofs.json"
DONE_DIR = "_done"


@dataclasses.dataclass(frozen=True)
class MakeSpoofsConfig(Config):
    """What :func:`make_spoofs` reads, makes and writes."""

    _nested = {"copysyn": augment.CopysynConfig}

    _constraints = {
        "items_per_task": [Interval(int, 1)],
        "concurrency": [None, Interval(int, 1)],
        "num_cpus_per_task": [Interval(float, 0, closed="neither")],
        "resume": [bool],
        "limit": [None, Interval(int, 1)],
        "progress_every_s": [Interval(float, 0)],
    }

    input: str = setting("", "bona fide audio: folder, s3:// prefix, manifest .csv/.parquet "
                         "or ASVspoof protocol .txt (items labelled spoof are skipped)",
                         path=True)
    output: str = setting("", "folder to write (local path or s3://)", path=True)
    audio_root: str | None = setting(None, "audio folder of an ASVspoof protocol",
                                     default_help="the protocol's folder", path=True)
    copysyn: augment.CopysynConfig = dataclasses.field(default_factory=augment.CopysynConfig)
    #: Copy-synthesis takes seconds per clip, so small tasks cost little and keep progress
    #: (and the work lost to a killed task) fine-grained.
    items_per_task: int = setting(2, "sources per Ray task")
    concurrency: int | None = setting(None, "most parallel tasks",
                                      default_help="Ray Data decides from the free CPUs")
    num_cpus_per_task: float = setting(1.0, "CPUs reserved per task")
    resume: bool = setting(False, "finish an interrupted run in --output (same settings): "
                           "sources already done are skipped")
    limit: int | None = setting(None, "only the first N listed files", default_help="all")
    progress_every_s: float = setting(10.0, "seconds between progress lines on the driver "
                                      "(0: after every finished task)")

    def _check(self) -> None:
        if not self.input or not self.output:
            raise ConfigError("MakeSpoofsConfig needs both input and output")


def done_uri(output: str, uri: str) -> str:
    """Where the done record of source ``uri`` lives."""
    return storage.join(output, DONE_DIR, augment.source_key(uri) + ".json")


def make_item(item: dict[str, Any], cfg: augment.CopysynConfig, output: str) -> dict[str, Any]:
    """One source → its files and done record (or its error); its summary row.

    A source with a done record is not redone (``status`` ``resumed``). One that cannot be
    decoded, or that a vocoder fails on, is an ``error`` row; refusals that would fail every
    clip (storage outage, missing vocoder package, bad config) are raised.
    """
    started = time.perf_counter()
    row: dict[str, Any] = {"uri": item["uri"], "status": "made", "n_outputs": 0, "rows": "[]",
                           "error_type": None, "error_message": None, "duration_s": None}
    done = done_uri(output, item["uri"])
    if storage.exists_nonempty(done):
        record = json.loads(storage.read_bytes(done))
        if record.get("uri") == item["uri"]:
            rows = record["rows"]
            return {**row, "status": "resumed", "n_outputs": len(rows), "rows": json.dumps(rows),
                    "duration_s": record.get("duration_s"), "seconds": 0.0}
    try:
        rows, duration_s = augment.copysyn_item(item, cfg, output)
    except InputFileError as exc:
        return {**row, "status": "error", "error_type": exc.error_type,
                "error_message": str(exc), "seconds": time.perf_counter() - started}
    except SpoofrayError:
        raise
    except Exception as exc:  # noqa: BLE001 - a vocoder failing on one clip must not stop the run
        return {**row, "status": "error", "error_type": type(exc).__name__,
                "error_message": f"{item['uri']}: making spoofs failed: {exc}",
                "seconds": time.perf_counter() - started}
    storage.write_bytes_atomic(done, json.dumps(
        {"uri": item["uri"], "duration_s": duration_s, "rows": rows}).encode())
    return {**row, "n_outputs": len(rows), "rows": json.dumps(rows), "duration_s": duration_s,
            "seconds": time.perf_counter() - started}


def make_spoofs_batch(batch: pd.DataFrame, *, copysyn: dict[str, Any], output: str,
                      threads: int = 1) -> pd.DataFrame:
    """Ray Data batch function: listed sources → one summary row each (:func:`make_item`)."""
    cfg = augment.CopysynConfig.from_dict(copysyn)
    if "hifigan" in cfg.vocoders:
        _limit_tensorflow_threads(threads)
    rows = [make_item(_clean(item), cfg, output) for item in batch.to_dict("records")]
    return pd.DataFrame(rows, columns=list(SUMMARY_COLUMNS))


def _limit_tensorflow_threads(threads: int) -> None:
    """TensorFlow uses every core of the node by default; a task gets ``num_cpus``."""
    import tensorflow as tf

    try:  # only possible before TensorFlow's runtime starts (once per worker process)
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:
        pass


def _clean(item: dict[str, Any]) -> dict[str, Any]:
    """pandas turns missing strings into NaN/None inconsistently; make them None."""
    return {k: (None if v is pd.NA or (isinstance(v, float) and np.isnan(v)) else v)
            for k, v in item.items()}


def check_output(cfg: MakeSpoofsConfig) -> None:
    """Refuse an existing output unless resuming, and a resume with other settings.

    Needs no cluster: jobs call it (with :meth:`CopysynConfig.check_runnable`) before Ray
    starts; :func:`make_spoofs` calls it again.
    """
    settings = storage.join(cfg.output, SETTINGS_NAME)
    if not storage.exists_nonempty(cfg.output):
        return
    if not cfg.resume:
        raise OutputExistsError(
            f"output {cfg.output} already exists and is not empty; pass --resume to finish an "
            "interrupted run there, or choose another --output")
    if storage.exists_nonempty(settings):
        before = json.loads(storage.read_bytes(settings))["copysyn"]
        if before != cfg.copysyn.to_dict():
            changed = sorted(k for k in before if before[k] != cfg.copysyn.to_dict().get(k))
            raise ConfigError(
                f"--resume in {cfg.output} with other settings than its first run ({changed}: "
                f"first run {[before[k] for k in changed]}); rerun with the same settings, or "
                "choose another --output")


def make_spoofs(cfg: MakeSpoofsConfig,
                items: Sequence[sources.AudioItem] | None = None) -> dict[str, Any]:
    """Run copy-synthesis of every bona fide input on the current Ray (``runtime.init_ray``).

    Inputs labelled spoof are skipped (counted); unlabelled ones count as bona fide.

    Returns
    -------
    dict
        ``manifest`` and ``errors`` URIs, ``counts`` (listed, made, resumed, errors,
        skipped_spoof, files written) and timings.
    """
    import ray

    started = time.perf_counter()
    cfg.copysyn.check_runnable()
    check_output(cfg)
    if items is None:
        items = sources.resolve_inputs(cfg.input, audio_root=cfg.audio_root)
    items = list(items)[: cfg.limit]
    todo = [it for it in items if it.label != "spoof"]
    if not todo:
        raise ConfigError(f"no bona fide items in {cfg.input} to copy-synthesise (all "
                          f"{len(items)} are labelled spoof)")
    storage.write_bytes_atomic(storage.join(cfg.output, SETTINGS_NAME), json.dumps(
        {"input": cfg.input, "copysyn": cfg.copysyn.to_dict()}, indent=2).encode())
    log.info("making spoofs of %d bona fide files from %s into %s (%d spoof inputs skipped)",
             len(todo), cfg.input, cfg.output, len(items) - len(todo))

    work = plan.plan(todo, files_per_task=cfg.items_per_task)
    ds = ray.data.from_items(work.rows(), override_num_blocks=work.n_blocks)
    ds = ds.map_batches(
        make_spoofs_batch,
        fn_kwargs={"copysyn": cfg.copysyn.to_dict(), "output": cfg.output,
                   "threads": max(1, int(cfg.num_cpus_per_task))},
        batch_size=None, batch_format="pandas", num_cpus=cfg.num_cpus_per_task,
        compute=ray.data.TaskPoolStrategy(size=cfg.concurrency) if cfg.concurrency else None,
    )
    parts = []
    progress = _Progress(len(todo), cfg.progress_every_s)
    try:
        for part in ds.iter_batches(batch_size=None, batch_format="pandas"):
            parts.append(part)
            progress.update(part)
    except Exception as exc:
        runtime.raise_if_storage_outage(
            exc, stopped="making spoofs",
            left=f"{cfg.output} has no manifest.csv yet; rerun with --resume once storage is back")
        raise
    progress.finish()
    skipped = pd.DataFrame([{"uri": it.uri, "status": "skipped", "n_outputs": 0, "rows": "[]"}
                            for it in items if it.label == "spoof"], columns=list(SUMMARY_COLUMNS))
    summary = pd.concat([*parts, skipped], ignore_index=True)
    plan.check_accounting([it.uri for it in items], summary["uri"],
                          left=f"{cfg.output} was left without manifest.csv")
    return _publish(cfg, items, summary, time.perf_counter() - started)


class _Progress:
    """``done/total`` sources, errors and rate, logged at most every ``every_s`` seconds."""

    def __init__(self, total: int, every_s: float) -> None:
        self.total, self.every_s = total, every_s
        self.done = self.errors = self.resumed = 0
        self.audio_s = 0.0
        self.started = self.last = time.perf_counter()

    def update(self, part: pd.DataFrame) -> None:
        self.done += len(part)
        self.errors += int((part["status"] == "error").sum())
        self.resumed += int((part["status"] == "resumed").sum())
        self.audio_s += float(part.loc[part["status"] == "made", "duration_s"].sum())
        if time.perf_counter() - self.last >= self.every_s:
            self.log()

    def log(self) -> None:
        self.last = time.perf_counter()
        elapsed = self.last - self.started
        rate = (self.done - self.resumed) / elapsed if elapsed > 0 else 0.0
        left = f"about {(self.total - self.done) / rate:.0f} s left" if rate > 0 else ""
        log.info("make_spoofs: %d/%d sources done (errors %d, resumed %d), %.2f sources/s, "
                 "%.1f s of source audio per s %s", self.done, self.total, self.errors,
                 self.resumed, rate, self.audio_s / elapsed if elapsed else 0.0, left)

    def finish(self) -> None:
        self.log()


def _publish(cfg: MakeSpoofsConfig, items: Sequence[sources.AudioItem], summary: pd.DataFrame,
             seconds: float) -> dict[str, Any]:
    """errors.csv, then manifest.csv (last, atomically); the counts."""
    errors = summary[summary["status"] == "error"]
    errors_uri = storage.join(cfg.output, "errors.csv")
    storage.write_bytes_atomic(errors_uri, errors[list(ERROR_COLUMNS)].to_csv(index=False).encode())
    # Sorted by source, so a resumed run writes the same manifest as an uninterrupted one.
    rows = [row for rows in summary.sort_values("uri")["rows"] for row in json.loads(rows)]
    counts = {
        "listed": len(items),
        **{status: int((summary["status"] == status).sum())
           for status in ("made", "resumed", "error", "skipped")},
        "files_written": len(rows),
        "labels": {label: sum(r["label"] == label for r in rows) for label in ("bonafide", "spoof")},
    }
    if not rows:
        raise SpoofrayError(f"none of the {len(errors)} bona fide inputs could be used; the "
                            f"reasons are in {errors_uri}")
    manifest = storage.join(cfg.output, "manifest.csv")
    storage.write_bytes_atomic(manifest, augment.manifest_csv(rows))
    made = summary[summary["status"] == "made"]
    return {"manifest": manifest, "errors": errors_uri, "counts": counts,
            "errors_by_type": {str(k): int(v) for k, v in errors["error_type"].value_counts().items()},
            "seconds": seconds, "source_audio_s_made": float(made["duration_s"].sum())}

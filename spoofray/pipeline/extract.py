"""Feature extraction on Ray: any listing of audio → the feature dataset of ``dataset.py``.

Stages: list (driver) → :func:`extract_batch` as plain Ray tasks (read, decode, resample,
window, features; :mod:`~spoofray.pipeline.tasks`) → per-file summary rows back to the driver.

Files go out largest first in tasks sized by :func:`spoofray.pipeline.plan.plan`. Tasks
write under a temporary sibling of the output (``storage.temporary_sibling``). Each task
writes its batch's windows in parts of about ``max_windows_per_part`` windows and its errors
as one part, named by a hash of the batch's input URIs (plus the part's number): a retried
task rewrites the same parts instead of adding duplicates. The driver then checks that every
listed file came back exactly once (:func:`~spoofray.pipeline.plan.check_accounting`),
removes parts no surviving summary row refers to (left by a retried task batched
differently), writes ``_manifest.json`` and publishes the folder with
:func:`storage.publish_dir` (manifest last): a dataset without a manifest is known
incomplete, and a failed run publishes nothing.

The temporary folder has a fixed name (``_tmp_<output name>-unfinished``): when a run is
killed, or stopped by a failure other than a failed accounting check, its finished parts
stay there, and the same extraction started again with ``resume`` (``--resume``) keeps the
files they cover and extracts only the rest (:mod:`spoofray.pipeline.resume`); without
``--resume`` it is refused (``--overwrite`` starts over).
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib
import logging
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

import spoofray
from spoofray import dataset, progress, sources, storage
from spoofray import preflight as preflight_checks
from spoofray.config import Config, FeatureConfig, Interval, setting
from spoofray.errors import ConfigError, OutputExistsError, StorageUnavailableError
from spoofray.featurize import FileFeatures, featurize_file
from spoofray.pipeline import plan, resume, runtime, tasks

log = logging.getLogger(__name__)

SUMMARY_COLUMNS = ("uri", "status", "n_windows", "duration_s", "sample_rate", "channels",
                   "error_type", "error_message", "seconds", "features_part", "errors_part")


@dataclasses.dataclass(frozen=True)
class ExtractConfig(Config):
    """What :func:`extract_features` reads, computes and writes."""

    _nested = {"features": FeatureConfig}
    _constraints = {
        "files_per_task": [Interval(int, 1)],
        "max_windows_per_part": [Interval(int, 1)],
        "concurrency": [None, Interval(int, 1)],
        "num_cpus_per_task": [Interval(float, 0, closed="neither")],
        "overwrite": [bool],
        "limit": [None, Interval(int, 1)],
        "resume": [bool],
    }

    input: str = setting("", "folder, s3:// prefix, manifest .csv/.parquet, or ASVspoof "
                         "protocol .txt (labels from <label>/ folders, manifest or protocol)",
                         path=True)
    output: str = setting("", "where to write the dataset (local path or s3://)", path=True)
    audio_root: str | None = setting(None, "audio folder of an ASVspoof protocol",
                                     default_help="the protocol's folder", path=True)
    features: FeatureConfig = dataclasses.field(default_factory=FeatureConfig)
    #: A task should run for seconds (each costs a submission, a summary frame and at
    #: least one part file): 128 typical clips take 2-4 s of one core. Measured in
    #: docs/benchmarks.md.
    files_per_task: int = setting(128, "most files per Ray task (each task writes its own "
                                  "parts: bigger tasks, fewer and larger parts)")
    #: 512 windows of the default features are ~150 MB of float32.
    max_windows_per_part: int = setting(
        512, "a task closes a features part after the file that brings it to this many "
        "windows, so its memory stays bounded whatever its files' lengths")
    concurrency: int | None = setting(None, "most parallel tasks",
                                      default_help="the cluster's CPUs / --num-cpus-per-task")
    num_cpus_per_task: float = setting(1.0, "CPUs reserved per task")
    overwrite: bool = setting(False, "replace an existing output (and discard the parts of an "
                              "unfinished attempt at it)")
    limit: int | None = setting(None, "only the first N listed files (smoke tests, quick "
                                "looks)", default_help="all")
    resume: bool = setting(False, "continue an unfinished extraction into the same output: keep "
                           "the files its finished parts cover, extract only the rest (refused "
                           "when the feature config or input differ)")

    def _check(self) -> None:
        if not self.input or not self.output:
            raise ConfigError("ExtractConfig needs both input and output")
        if self.resume and self.overwrite:
            raise ConfigError("--resume keeps an unfinished attempt's parts and --overwrite "
                              "discards them: pass one of them")


def extract_batch(items: Sequence[dict[str, Any]], *, features: dict[str, Any], output: str,
                  max_windows_per_part: int = ExtractConfig.max_windows_per_part) -> pd.DataFrame:
    """The task of extraction: listed files (``AudioItem`` dicts) → parts written + one
    summary row per file.

    Windows are written once ``max_windows_per_part`` have gathered (never splitting a
    file), as parts ``<key>``, ``<key>-1``, ... where ``key`` hashes the batch's URIs; a
    retried task makes the same cuts and so rewrites the same parts.
    """
    cfg = FeatureConfig.from_dict(features)
    key = dataset.part_key([item["uri"] for item in items])
    summary: list[dict[str, Any]] = [{} for _ in items]
    pending: list[tuple[int, FileFeatures]] = []  # (position in batch, result) not yet written
    bad: list[tuple[int, FileFeatures]] = []
    n_parts = 0

    def write_pending() -> None:
        nonlocal n_parts
        part = key if n_parts == 0 else f"{key}-{n_parts}"
        dataset.write_part(output, dataset.FEATURES_DIR, part,
                           _windows_table([r for _, r in pending], cfg))
        for i, r in pending:
            summary[i] = _summary_row(r, part, None)
        pending.clear()  # the written windows leave memory with the results
        n_parts += 1

    for i, item in enumerate(items):
        result = featurize_file(item, cfg)
        if result.status == "error":
            bad.append((i, result))
            continue
        pending.append((i, result))
        if sum(r.n_windows for _, r in pending) >= max_windows_per_part:
            write_pending()
    if pending:
        write_pending()
    if bad:
        rows = [{**r.item, "error_type": r.error_type, "error_message": r.error_message}
                for _, r in bad]
        dataset.write_part(output, dataset.ERRORS_DIR, key, dataset.errors_table(rows))
        for i, r in bad:
            summary[i] = _summary_row(r, None, key)
    return pd.DataFrame(summary, columns=list(SUMMARY_COLUMNS))


def _windows_table(results: Sequence[FileFeatures], cfg: FeatureConfig):
    meta: dict[str, list] = {k: [] for k in dataset.WINDOW_META_SCHEMA.names}
    for r in results:
        n = r.n_windows
        for col in dataset.ITEM_COLUMNS:
            meta[col] += [r.item.get(col)] * n
        meta["window_index"] += list(range(n))
        meta["start_s"] += r.start_s.tolist()
        meta["end_s"] += r.end_s.tolist()
        meta["duration_s"] += [r.duration_s] * n
    feats = {k: np.concatenate([r.features[k] for r in results]) for k in cfg.kinds}
    return dataset.windows_table(meta, feats, cfg)


def _summary_row(r: FileFeatures, features_part: str | None, errors_part: str | None) -> dict:
    return {
        "uri": r.item["uri"], "status": r.status, "n_windows": r.n_windows,
        "duration_s": r.duration_s, "sample_rate": r.sample_rate, "channels": r.channels,
        "error_type": r.error_type, "error_message": r.error_message, "seconds": r.seconds,
        "features_part": features_part, "errors_part": errors_part,
    }


#: The temporary folder's tag: every attempt at one output builds in the same folder, so a
#: stopped one can be resumed (``--resume``).
TMP_TAG = "unfinished"


def _check_output_free(cfg: ExtractConfig) -> bool:
    """True when ``cfg.output`` holds data that ``--overwrite`` will replace."""
    if storage.exists_nonempty(cfg.output):
        if not cfg.overwrite:
            raise OutputExistsError(
                f"output {cfg.output} already exists and is not empty; pass --overwrite to "
                "replace it, or choose another --output"
            )
        return True
    return False


def _prepare_output(cfg: ExtractConfig) -> str:
    """Check the output, and return the temporary folder to build it in."""
    if _check_output_free(cfg):
        storage.remove(cfg.output)
    tmp = storage.temporary_sibling(cfg.output, tag=TMP_TAG)
    if cfg.overwrite:
        storage.remove(tmp)
    return tmp


def resume_settings(cfg: ExtractConfig) -> dict[str, Any]:
    """What an extraction's parts depend on: a ``--resume`` must find the same."""
    return {"feature_config_hash": cfg.features.config_hash(), "input": cfg.input,
            "audio_root": cfg.audio_root, "limit": cfg.limit}


def _part_key(part_uri: str) -> str:
    return part_uri.rstrip("/").rsplit("/", 1)[-1][len("part-"):-len(".parquet")]


def _earlier_summary(tmp: str, items: Sequence[sources.AudioItem]) -> pd.DataFrame:
    """Summary rows (:data:`SUMMARY_COLUMNS`) of the files an unfinished attempt's finished
    parts hold. Only ``uri`` (and the error columns of error parts) is read back.

    Parts sharing a file with another part are removed (their files are extracted again); a
    part holding a file the input no longer lists is refused.
    """
    features = storage.list_dir(storage.join(tmp, dataset.FEATURES_DIR), suffix=".parquet")
    errors = storage.list_dir(storage.join(tmp, dataset.ERRORS_DIR), suffix=".parquet")
    tables: dict[str, pd.DataFrame] = {}

    def read_uris(part: str) -> list[str]:
        cols = ["uri", "duration_s"] if part in features else [
            "uri", "error_type", "error_message"]
        tables[part] = dataset.read_part(part, cols).to_pandas()
        return tables[part]["uri"].tolist()

    kept, overlapping = resume.covered_uris([*features, *errors], read_uris)
    for part in overlapping:
        log.warning("removing %s: it shares files with another part (they are extracted "
                    "again)", part)
        storage.remove(part)
    rows = []
    for part in kept:
        frame = tables[part]
        if part in features:
            for uri, windows in frame.groupby("uri", sort=False):
                rows.append({"uri": uri, "status": "ok", "n_windows": len(windows),
                             "duration_s": float(windows["duration_s"].iloc[0]),
                             "features_part": _part_key(part)})
        else:
            rows += [{"uri": r.uri, "status": "error", "n_windows": 0,
                      "error_type": r.error_type, "error_message": r.error_message,
                      "errors_part": _part_key(part)} for r in frame.itertuples()]
    summary = pd.DataFrame(rows, columns=list(SUMMARY_COLUMNS))
    gone = sorted(set(summary["uri"]) - {it.uri for it in items})
    if gone:
        raise ConfigError(
            f"cannot resume: the finished parts in {tmp} hold {len(gone)} file(s) the input "
            f"no longer lists (e.g. {gone[:3]}): the input changed since the extraction "
            "started; pass --overwrite to start over")
    return summary


def preflight(cfg: ExtractConfig) -> list[sources.AudioItem]:
    """What can be refused without a cluster, before Ray starts (:mod:`spoofray.preflight`):
    S3 credentials, the output (a writable folder or creatable prefix, not already holding
    data unless ``overwrite``) and the input (exists and lists at least one file).

    Returns
    -------
    list of AudioItem
        The listed input; pass it to :func:`extract_features` (``items=``).
    """
    storage.check_credentials(cfg.input, cfg.output, cfg.audio_root)
    preflight_checks.check_output_root(cfg.output)
    _check_output_free(cfg)
    return sources.resolve_inputs(cfg.input, audio_root=cfg.audio_root)


def _inputs_fingerprint(items: Sequence[sources.AudioItem]) -> str:
    h = hashlib.sha256()
    for it in items:
        h.update(f"{it.uri}\t{it.label}\t{it.size_bytes}\n".encode())
    return h.hexdigest()


def _remove_orphan_parts(output: str, summary: pd.DataFrame) -> int:
    """Delete parts that no summary row refers to (left by a retried task batched
    differently); return how many were removed."""
    removed = 0
    for subdir, column in ((dataset.FEATURES_DIR, "features_part"),
                           (dataset.ERRORS_DIR, "errors_part")):
        wanted = {f"part-{k}.parquet" for k in summary[column].dropna().unique()}
        removed += storage.remove_unlisted(storage.join(output, subdir), wanted)
    return removed


def _check_accounting(items: Sequence[sources.AudioItem], summary: pd.DataFrame, *,
                      left: str) -> None:
    plan.check_accounting([it.uri for it in items], summary["uri"], left=left)


def extract_features(cfg: ExtractConfig,
                     items: Sequence[sources.AudioItem] | None = None) -> dict[str, Any]:
    """Run the extraction on the current Ray (start one with ``runtime.init_ray``).

    Parameters
    ----------
    items : sequence of AudioItem, optional
        Extract exactly these instead of listing ``cfg.input`` (which then only names the
        source in the manifest).

    Returns
    -------
    manifest : dict
        What was written to ``<output>/_manifest.json``.
    """
    started = time.perf_counter()
    if items is None:
        items = sources.resolve_inputs(cfg.input, audio_root=cfg.audio_root)
    items = list(items)
    if cfg.limit is not None:
        items = items[: cfg.limit]
    listed_s = time.perf_counter() - started
    # Tasks write under a temporary sibling that is published whole, manifest last.
    tmp = _prepare_output(cfg)
    resumed = resume.open_tmp(tmp, resume_settings(cfg), resume=cfg.resume,
                              what=f"the extraction into {cfg.output}",
                              restart_hint=f"pass --overwrite to start over (or delete {tmp})")
    earlier = _earlier_summary(tmp, items) if resumed else None
    done = set() if earlier is None else set(earlier["uri"])
    todo = [it for it in items if it.uri not in done]
    log.info("extracting features of %d files from %s into %s%s", len(todo), cfg.input,
             cfg.output, f" (resumed: {len(done)} of {len(items)} files are in finished parts)"
             if resumed else "")

    unpublished = (f"nothing was published: {cfg.output} has no {dataset.MANIFEST_NAME}; "
                   f"the finished parts are kept in {tmp}: run again with --resume to "
                   "extract only the rest")
    try:
        if todo:
            try:
                new = _summaries(cfg, todo, tmp)
            except Exception as exc:  # an outage that outlasted the retries must read as one
                runtime.raise_if_storage_outage(
                    exc, stopped="extraction",
                    left=f"{unpublished}, once storage is back")
                raise
        else:
            new = pd.DataFrame(columns=list(SUMMARY_COLUMNS))
    except BaseException:
        log.error("extraction into %s stopped; %s", cfg.output, unpublished)
        raise
    summary = new if earlier is None else pd.concat([earlier, new], ignore_index=True)
    try:
        pipeline_s = time.perf_counter() - started - listed_s

        _check_accounting(items, summary, left=f"nothing was published: {cfg.output} has no "
                                               f"{dataset.MANIFEST_NAME}")
        orphans = _remove_orphan_parts(tmp, summary)
        manifest = _manifest(cfg, items, summary, listed_s, pipeline_s, orphans)
        if resumed:
            manifest["resumed"] = {"files_in_earlier_parts": len(done),
                                   "files_extracted_now": len(new)}
        dataset.write_manifest(tmp, manifest)
        storage.publish_dir(tmp, cfg.output, dataset.MANIFEST_NAME)
    except StorageUnavailableError:
        log.error("extraction into %s could not finish; %s", cfg.output, unpublished)
        raise
    except BaseException:
        storage.remove_quietly(tmp, "the unpublished dataset",
                               unpublished_because="its name starts with _tmp_, so it is "
                                                   "no dataset to readers")
        raise
    return manifest


def _summaries(cfg: ExtractConfig, items: Sequence[sources.AudioItem], tmp: str
               ) -> pd.DataFrame:
    """Extract ``items`` into ``tmp``: the per-file summary rows as tasks finish, with the
    driver's progress line."""
    sizes = {it.uri: it.size_bytes for it in items}
    shown = progress.Progress(
        len(items), total_bytes=None if None in sizes.values() else sum(sizes.values()),
        verb="extracted")
    slots = tasks.slots(cfg.num_cpus_per_task, cfg.concurrency)
    work = plan.plan(items, files_per_task=cfg.files_per_task, slots=slots)
    frames = []
    for batch in tasks.run_blocks(
            extract_batch, work.blocks(),
            kwargs={"features": cfg.features.to_dict(), "output": tmp,
                    "max_windows_per_part": cfg.max_windows_per_part},
            slots=slots, concurrency=cfg.concurrency, num_cpus=cfg.num_cpus_per_task):
        ok = batch["status"] == "ok"
        shown.add(len(batch), audio_s=float(batch.loc[ok, "duration_s"].fillna(0).sum()),
                  size_bytes=sum(sizes.get(u) or 0 for u in batch["uri"]))
        frames.append(batch)
    shown.close()
    return (pd.concat(frames, ignore_index=True) if frames
            else pd.DataFrame(columns=list(SUMMARY_COLUMNS)))


def _manifest(cfg: ExtractConfig, items: Sequence[sources.AudioItem], summary: pd.DataFrame,
              listed_s: float, pipeline_s: float, orphans: int) -> dict[str, Any]:
    ok = summary[summary["status"] == "ok"]
    bad = summary[summary["status"] == "error"]
    audio_s = float(ok["duration_s"].sum())
    labels = pd.Series([it.label for it in items]).fillna("unlabelled").value_counts()
    return {
        "format": "spoofray-features/1",
        "spoofray_version": spoofray.__version__,
        "created_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "input": cfg.input,
        "feature_config": cfg.features.to_dict(),
        "feature_config_hash": cfg.features.config_hash(),
        "extract_config": {k: v for k, v in cfg.to_dict().items() if k != "features"},
        "inputs_fingerprint": _inputs_fingerprint(items),
        "counts": {
            "files_listed": len(items),
            "files_ok": int(len(ok)),
            "files_error": int(len(bad)),
            "windows": int(ok["n_windows"].sum()),
            "labels": {str(k): int(v) for k, v in labels.items()},
            "errors_by_type": {str(k): int(v) for k, v in bad["error_type"].value_counts().items()},
            "orphan_parts_removed": orphans,
        },
        "audio_hours": audio_s / 3600.0,
        "timings_s": {
            "listing": listed_s,
            "pipeline_wall": pipeline_s,
            "per_file_work_sum": float(summary["seconds"].sum()),
        },
        "throughput": {
            "audio_s_per_wall_s": audio_s / pipeline_s if pipeline_s > 0 else None,
            "files_per_s": len(items) / pipeline_s if pipeline_s > 0 else None,
        },
    }

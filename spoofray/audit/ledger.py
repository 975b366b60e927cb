"""The audit ledger: what was scored, from which version of each file, with which bundle.

Layout under an audit output root (``<output>``)::

    <output>/date=YYYY-MM-DD/run_id=<id>/report/part-*.parquet   one partition per run
    <output>/date=YYYY-MM-DD/run_id=<id>/summary.json, plots/, _SUCCESS
    <output>/_audit/ledger.parquet                                 one row per file ever scored
    <output>/_audit/plans/run_id=<id>.parquet                      a run's work, before commit
    <output>/_audit/date=YYYY-MM-DD/run_id=<id>/                    audit.json, alerts.json,
                                                                   drift.parquet, index.html,
                                                                   summary.wav

Names starting with ``_`` keep the audit state out of dataset discovery (pyarrow, Spark and
DuckDB skip them), so ``<output>/date=*/run_id=*/report/*.parquet`` is exactly the reports.

Commit protocol (single writer per output root): a run first writes its **plan** (the files
it will score and their fingerprints), then scores them into a report that
:func:`~spoofray.pipeline.score.score_archive` publishes atomically (``_SUCCESS`` last), and
only then replaces the ledger (one atomic object write). A run killed before the report is
committed leaves a plan without a report: the next run drops it and scores those files
again. A run killed after the commit leaves a plan with a committed report: the next run
applies that report to the ledger instead of scoring the files again. Either way each file
appears once per scoring and no listed file is skipped.

No Ray here: pure pandas/pyarrow over :mod:`spoofray.storage`.
"""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import os
import posixpath
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from spoofray import storage
from spoofray.errors import ConfigError, SpoofrayError
from spoofray.pipeline.plan import check_accounting
from spoofray.reports import SUCCESS_MARKER, SUMMARY_NAME
from spoofray.sources import AudioItem

log = logging.getLogger(__name__)

AUDIT_DIR = "_audit"
LEDGER_NAME = "ledger.parquet"
PLANS_DIR = "plans"
_COUNTS_KEY = "spoofray_audit_counts"

#: Why a listed file is scored in a run (the ``reason`` column of a plan).
REASONS = ("new", "changed", "error_retry", "new_bundle", "rescore")
#: What to do with unchanged files when the bundle's name or version differs from theirs.
ON_NEW_BUNDLE = ("rescore-all", "new-only")

LEDGER_SCHEMA = pa.schema([
    ("uri", pa.string()), ("size_bytes", pa.int64()), ("fingerprint", pa.string()),
    ("bundle_name", pa.string()), ("bundle_version", pa.string()), ("run_id", pa.string()),
    ("date", pa.string()), ("status", pa.string()), ("error_type", pa.string()),
    ("spoof_score", pa.float64()), ("predicted_label", pa.string()),
    ("scored_at", pa.timestamp("us", tz="UTC")),
])

PLAN_SCHEMA = pa.schema([
    ("uri", pa.string()), ("label", pa.string()), ("attack", pa.string()),
    ("speaker", pa.string()), ("group", pa.string()), ("size_bytes", pa.int64()),
    ("fingerprint", pa.string()), ("reason", pa.string()), ("run_id", pa.string()),
    ("date", pa.string()), ("bundle_uri", pa.string()), ("bundle_name", pa.string()),
    ("bundle_version", pa.string()),
])


def _isin(values: pd.Series, among: pd.Series) -> np.ndarray:
    """``values.isin(among)`` for string columns, through Arrow (pandas' own is per element)."""
    import pyarrow.compute as pc

    mask = pc.is_in(pa.array(values.astype(object), type=pa.string()),
                    value_set=pa.array(among.astype(object), type=pa.string()))
    return mask.to_numpy(zero_copy_only=False).astype(bool)


# --- locations ------------------------------------------------------------------------------


def ledger_uri(output: str) -> str:
    return storage.join(output, AUDIT_DIR, LEDGER_NAME)


def plan_uri(output: str, run_id: str) -> str:
    return storage.join(output, AUDIT_DIR, PLANS_DIR, f"run_id={run_id}.parquet")


def partition_uri(output: str, date: str) -> str:
    """The ``date=`` partition that :func:`score_archive` writes its ``run_id=`` folder into."""
    return storage.join(output, f"date={date}")


def run_uri(output: str, date: str, run_id: str) -> str:
    return storage.join(partition_uri(output, date), f"run_id={run_id}")


def audit_run_uri(output: str, date: str, run_id: str) -> str:
    """Where a run's audit products (page, alerts, drift) go."""
    return storage.join(output, AUDIT_DIR, f"date={date}", f"run_id={run_id}")


def is_committed(run_folder: str) -> bool:
    return storage.exists(storage.join(run_folder, SUCCESS_MARKER))


# --- fingerprints -----------------------------------------------------------------------------


def _etag(info: Mapping[str, Any]) -> str | None:
    for key in ("ETag", "etag", "e_tag"):
        if info.get(key):
            return str(info[key]).strip('"')
    return None


def fingerprints(items: Sequence[AudioItem], root: str | None = None) -> dict[str, str | None]:
    """A change fingerprint of each file: ``etag:<ETag>`` on S3, ``mtime_ns:<n>`` locally.

    Together with the size it says whether a file changed since it was scored. S3 objects
    under ``root`` come from one listing of that prefix (one request per 1000 objects, not
    one per file); others are asked one by one. A missing file gets None (it becomes an
    error row when scored, like any unreadable file).

    Parameters
    ----------
    items : sequence of AudioItem
        As listed by :func:`spoofray.sources.resolve_inputs`.
    root : str, optional
        The listed folder or prefix, for the one-listing shortcut on S3.
    """
    out: dict[str, str | None] = {}
    remote = [it.uri for it in items if storage.is_remote(it.uri)]
    listed: dict[str, Mapping[str, Any]] = {}
    if remote and root and storage.is_remote(root) and not storage.is_file(root):
        listed = storage.list_files(root)
    for it in items:
        if not storage.is_remote(it.uri):
            try:
                out[it.uri] = f"mtime_ns:{os.stat(it.uri).st_mtime_ns}"
            except OSError:
                out[it.uri] = None
            continue
        info = listed.get(it.uri)
        if info is None:
            try:
                info = storage.info(it.uri)
            except (FileNotFoundError, PermissionError):
                out[it.uri] = None
                continue
        tag = _etag(info)
        modified = info.get("LastModified") or info.get("mtime")
        out[it.uri] = f"etag:{tag}" if tag else (f"modified:{modified}" if modified else None)
    return out


# --- ledger I/O ---------------------------------------------------------------------------------


def _write_parquet(uri: str, table: pa.Table) -> None:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd")
    storage.write_bytes_atomic(uri, sink.getvalue().to_pybytes())


def _read_parquet(uri: str) -> pd.DataFrame:
    return pq.read_table(io.BytesIO(storage.read_bytes(uri))).to_pandas()


def read_ledger(output: str) -> pd.DataFrame:
    """The ledger of an audit output root (empty, with the ledger's columns, if none yet).

    One row per file ever scored: ``uri, size_bytes, fingerprint`` (what was scored),
    ``bundle_name, bundle_version, run_id, date`` (by whom, when), ``status, error_type,
    spoof_score, predicted_label, scored_at`` (the latest result; ledgers written before
    the report's rename call it ``label`` and are read as ``predicted_label``).
    """
    uri = ledger_uri(output)
    if not storage.exists(uri):
        return LEDGER_SCHEMA.empty_table().to_pandas()
    table = _read_parquet(uri)
    if "label" in table.columns and "predicted_label" not in table.columns:
        table = table.rename(columns={"label": "predicted_label"})
    missing = [n for n in LEDGER_SCHEMA.names if n not in table.columns]
    if missing:
        raise SpoofrayError(f"{uri} is not an audit ledger: columns {missing} are missing. "
                            "Point --output at the audit's own output root")
    return table


def write_ledger(output: str, ledger: pd.DataFrame) -> None:
    """Replace the ledger in one atomic write (readers see the old or the new one, whole)."""
    if ledger["uri"].duplicated().any():
        raise SpoofrayError("refusing to write a ledger with duplicated URIs (a bug): "
                            f"{ledger.loc[ledger['uri'].duplicated(), 'uri'].head(3).tolist()}")
    table = pa.Table.from_pandas(ledger[LEDGER_SCHEMA.names].sort_values("uri"),
                                 schema=LEDGER_SCHEMA, preserve_index=False)
    _write_parquet(ledger_uri(output), table)


def apply_report(ledger: pd.DataFrame, plan: pd.DataFrame, report: pd.DataFrame) -> pd.DataFrame:
    """The ledger after a committed run: its plan's files replaced by their report rows.

    Raises
    ------
    SpoofrayError
        When the report does not hold every planned file exactly once (nothing is changed).
    """
    check_accounting(plan["uri"], report["uri"],
                     what=f"accounting of run {plan['run_id'].iloc[0] if len(plan) else '?'} "
                          "against its plan", left="the ledger was not changed")
    rows = plan[["uri", "size_bytes", "fingerprint", "bundle_name", "bundle_version", "run_id",
                 "date"]].merge(
        report[["uri", "status", "error_type", "spoof_score", "predicted_label", "scored_at"]],
        on="uri", how="left", validate="one_to_one")
    kept = ledger[~_isin(ledger["uri"], plan["uri"])]
    frames = [f for f in (kept, rows) if len(f)]
    if not frames:
        return LEDGER_SCHEMA.empty_table().to_pandas()
    return pd.concat(frames, ignore_index=True)[LEDGER_SCHEMA.names]


# --- what to score -----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Selection:
    """Which listed files a run scores, and why.

    Attributes
    ----------
    todo : DataFrame
        Plan rows without run/bundle columns: the item fields, ``fingerprint``, ``reason``.
    counts : dict
        ``listed``, ``unchanged`` (skipped), ``gone`` (in the ledger, no longer listed) and
        one count per reason in :data:`REASONS`.
    """

    todo: pd.DataFrame
    counts: dict[str, int]


def select_work(items: Sequence[AudioItem], prints: Mapping[str, str | None],
                ledger: pd.DataFrame, *, bundle_name: str, bundle_version: str,
                rescore: bool = False, on_new_bundle: str = "rescore-all",
                retry_errors: bool = True, just_finished: Iterable[str] = ()) -> Selection:
    """Decide what to score: files new, changed (size or fingerprint), previously errored;
    all of them with ``rescore``; unchanged files last scored by another bundle when
    ``on_new_bundle="rescore-all"``.

    Parameters
    ----------
    items : sequence of AudioItem
        Everything listed now.
    prints : mapping of str to str or None
        :func:`fingerprints` of ``items``.
    ledger : DataFrame
        :func:`read_ledger`.
    just_finished : iterable of str
        Run ids finished moments ago (recovered by this invocation): their errors are not
        retried again at once.
    """
    if on_new_bundle not in ON_NEW_BUNDLE:
        raise ConfigError(f"on_new_bundle must be one of {list(ON_NEW_BUNDLE)}, "
                          f"got {on_new_bundle!r}")
    # Vectorised: an archive may list millions of files.
    fields = list(AudioItem.__dataclass_fields__)
    # Column by column: dataclasses.asdict per item would dominate the cost.
    listed = pd.DataFrame({f: [getattr(it, f) for it in items] for f in fields}, columns=fields)
    listed["fingerprint"] = listed["uri"].map(prints)
    prev = ledger[["uri", "size_bytes", "fingerprint", "bundle_name", "bundle_version",
                   "status", "run_id"]].add_prefix("prev_")
    both = listed.merge(prev, left_on="uri", right_on="prev_uri", how="left",
                        validate="one_to_one")
    known = both["prev_uri"].notna()
    same_size = (both["size_bytes"].isna() & both["prev_size_bytes"].isna()) | (
        both["size_bytes"].astype("Float64") == both["prev_size_bytes"].astype("Float64")
    ).fillna(False)
    changed = known & (both["fingerprint"].isna()
                       | (both["fingerprint"] != both["prev_fingerprint"]) | ~same_size)
    errored = known & (both["prev_status"] != "ok") & ~both["prev_run_id"].isin(
        set(just_finished))
    other_bundle = known & ((both["prev_bundle_name"] != bundle_name)
                            | (both["prev_bundle_version"] != bundle_version))
    # First matching reason wins, in this order.
    conditions = [
        ("new", ~known), ("changed", changed), ("error_retry", errored & retry_errors),
        ("rescore", known & rescore),
        ("new_bundle", other_bundle & (on_new_bundle == "rescore-all")),
    ]
    reason = pd.Series(None, index=both.index, dtype=object)
    for name, mask in conditions:
        reason = reason.mask(reason.isna() & mask.astype(bool), name)
    both["reason"] = reason
    counts = {"listed": len(items), "unchanged": int(reason.isna().sum()),
              **{r: int((reason == r).sum()) for r in REASONS},
              "gone": int((~_isin(ledger["uri"], listed["uri"])).sum()) if len(ledger) else 0}
    columns = [*AudioItem.__dataclass_fields__, "fingerprint", "reason"]
    todo = both.loc[reason.notna(), columns].reset_index(drop=True)
    todo["size_bytes"] = todo["size_bytes"].astype("Int64")
    return Selection(todo=todo, counts=counts)


def plan_items(plan: pd.DataFrame) -> list[AudioItem]:
    """The :class:`AudioItem` list a plan scores."""
    out = []
    for r in plan.itertuples(index=False):
        size = None if pd.isna(r.size_bytes) else int(r.size_bytes)
        out.append(AudioItem(uri=r.uri, label=_text(r.label), attack=_text(r.attack),
                             speaker=_text(r.speaker), group=_text(r.group), size_bytes=size))
    return out


def _text(value: Any) -> str | None:
    return None if value is None or (isinstance(value, float) and pd.isna(value)) else str(value)


# --- plans --------------------------------------------------------------------------------------


def write_plan(output: str, todo: pd.DataFrame, *, run_id: str, date: str, bundle_uri: str,
               bundle_name: str, bundle_version: str,
               counts: Mapping[str, int] | None = None) -> pd.DataFrame:
    """Record a run's work before scoring starts; returns the plan.

    ``counts`` (the :class:`Selection` counts) travel in the file's metadata so that a run
    recovering this one can report them.
    """
    plan = todo.assign(run_id=run_id, date=date, bundle_uri=bundle_uri,
                       bundle_name=bundle_name, bundle_version=bundle_version)
    schema = PLAN_SCHEMA.with_metadata({_COUNTS_KEY: json.dumps(dict(counts or {}))})
    table = pa.Table.from_pandas(plan[PLAN_SCHEMA.names], schema=schema, preserve_index=False)
    _write_parquet(plan_uri(output, run_id), table)
    return plan


def read_plan(uri: str) -> tuple[pd.DataFrame, dict[str, int]]:
    """A plan and the selection counts recorded with it."""
    table = pq.read_table(io.BytesIO(storage.read_bytes(uri)))
    raw = (table.schema.metadata or {}).get(_COUNTS_KEY.encode())
    plan = table.to_pandas()
    counts = json.loads(raw) if raw else {}
    if not counts:
        counts = {"listed": len(plan), "unchanged": 0, "gone": 0,
                  **{r: int((plan["reason"] == r).sum()) for r in REASONS}}
    return plan, counts


def open_plans(output: str) -> list[str]:
    """Plan files left by earlier runs (each is a run whose ledger update is pending)."""
    return storage.list_dir(storage.join(output, AUDIT_DIR, PLANS_DIR), prefix="run_id=",
                            suffix=".parquet")


def drop_plan(output: str, run_id: str) -> None:
    storage.remove(plan_uri(output, run_id))


def drop_uncommitted(output: str, date: str, run_id: str) -> None:
    """Remove what a run killed before its commit left behind (its temporary folder)."""
    storage.remove(storage.join(partition_uri(output, date), f"_tmp_run_id={run_id}"))


# --- earlier runs -------------------------------------------------------------------------------


def committed_runs(output: str) -> list[dict[str, Any]]:
    """Committed report runs under ``output``: ``{"date", "run_id", "uri", "started_at"}``,
    oldest first (by date, then the run's ``started_at``, then run id)."""
    runs = []
    for date_dir in storage.list_dir(output, prefix="date="):
        date = posixpath.basename(date_dir)[len("date="):]
        for run_dir in storage.list_dir(date_dir, prefix="run_id="):
            if is_committed(run_dir):
                runs.append({"date": date, "run_id": posixpath.basename(run_dir)[len("run_id="):],
                             "uri": run_dir})
    per_date: dict[str, int] = {}
    for run in runs:
        per_date[run["date"]] = per_date.get(run["date"], 0) + 1
    for run in runs:  # only several runs on one date need their start times to be ordered
        run["started_at"] = _started_at(run["uri"]) if per_date[run["date"]] > 1 else None
    return sorted(runs, key=lambda r: (r["date"], r["started_at"] or "", r["run_id"]))


def _started_at(run_folder: str) -> str | None:
    try:
        return json.loads(storage.read_bytes(storage.join(run_folder, SUMMARY_NAME))).get(
            "started_at")
    except (FileNotFoundError, ValueError):
        return None

"""Streaming scorer on Ray: an audio archive → one report row per file, published atomically.

Stages, for a bundle with deep members (two stages, a Ray Data dataset)::

    list (driver) → from_items → featurize_batch (CPU tasks: read, decode, resample,
    window, the bundle's feature kinds) → BundleScorer (actor pool; bundle loaded once
    per actor; batched inference; per-file aggregation) → report parts (driver)

and for a bundle of scikit-learn members only, the shipped one among them (one stage,
plain Ray tasks, :func:`scores_in_one_stage`)::

    list (driver) → score_files_batch (CPU tasks: featurized_file then
    BundleScorer.score_rows, the bundle loaded once per worker process) → report parts
    (driver)

Rows are per FILE all the way: a featurized row carries the file's stacked window
tensors (``(n_windows, *shape)`` float32, the shape being fixed by the bundle's feature
config; raw bytes in an Arrow column between two stages), so aggregation needs no
shuffle. Bad files are error rows from the first stage on and flow through untouched.

Output (``<output>/run_id=<id>/``, written under ``<output>/_tmp_run_id=<id>/`` and then
published; ``_SUCCESS`` last)::

    report/part-<key>.parquet ...   the report (columns: :func:`report_columns`): one row per
                                    file, plus one per channel of a file scored per channel
    segments/part-<key>.parquet ... suspicious spans (:data:`reports.SEGMENT_COLUMNS`) of the
                                    report part with the same key
    windows/part-<key>.parquet ...  every window's score (:data:`reports.WINDOW_COLUMNS`)
    summary.json                    counts, spoof rate, score quantiles, hours, throughput
    plots/*.png                     score histogram, spoof rate per folder, top suspicious
    index.html                      the run page (:mod:`spoofray.run_page`)
    _resume.json                    the settings the parts depend on (bundle, threshold, ...)
    _SUCCESS

Report parts are written while the run goes (at least every ``part_every_s`` seconds),
each named by a hash of its files' URIs. A run that is killed leaves its finished parts in
the temporary folder; the same run started again with ``resume`` (``--resume``) lists the
input again, keeps the files those parts cover and scores only the rest
(:mod:`spoofray.pipeline.resume`). A failure the driver sees keeps finished parts the same
way, except a failed accounting check (the parts are then suspect and removed).
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib
import json
import logging
import os
import posixpath
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from spoofray import preflight as preflight_checks
from spoofray import console, dataset, progress, reports, scoring, sources, storage
from spoofray.config import Check, FeatureConfig, Interval, ScoreSettings, ordered_kinds, setting
from spoofray.errors import (ConfigError, OutputExistsError, SpoofrayError,
                             StorageUnavailableError)
from spoofray.featurize import FileFeatures, featurize_file
from spoofray.models.bundle import BundleSpec, load_payload
from spoofray.models.registry import LATEST, bundle_note, resolve_bundle
from spoofray.pipeline import plan, resume, runtime, tasks
from spoofray.reports import (PLOTS_DIR, REPORT_DIR, SEGMENTS_DIR, SUCCESS_MARKER, SUMMARY_NAME,
                              WINDOWS_DIR)

log = logging.getLogger(__name__)

#: Report rows buffered on the driver before a part file is written.
ROWS_PER_PART = 200_000

#: Files per task when each task also scores (``--files-per-task`` unset): tasks of
#: seconds (512 clips of ~8 s are 2.5-4 s of one core), the plan's balancing evens out
#: the last ones; 64 and 128 scored no faster (docs/benchmarks.md, "Scoring"). A task's
#: memory does not grow with it (see WINDOWS_PER_CALL).
ONE_STAGE_FILES_PER_TASK = 512
#: Most windows a one-stage task holds before it scores them (~100 MB of the shipped
#: bundle's LFCC tensors; one longer file is scored alone).
WINDOWS_PER_CALL = 1024
#: Files per featurize task when windows travel to scoring actors: a long recording has
#: thousands of windows, all held until the task ends.
TWO_STAGE_FILES_PER_TASK = 4
#: CPUs a two-stage featurize task reserves (the scoring actors leave it at least this).
FEATURIZE_TASK_CPUS = 1

ITEM_KEYS = ("uri", "label", "attack", "speaker", "group", "size_bytes")


@dataclasses.dataclass(frozen=True)
class ScoreConfig(ScoreSettings):
    """What :func:`score_archive` reads, with which bundle, and where the report goes; how
    it runs and decides is inherited from :class:`~spoofray.config.ScoreSettings`."""

    _constraints = {
        **ScoreSettings._constraints,
        "run_id": [None, Check(lambda v: _safe_run_id(v),
                               "a name of letters, digits, '-', '_', '.'")],
        "limit": [None, Interval(int, 1)],
        "resume": [bool],
        "page": [bool], "page_audio": [bool], "page_files": [Interval(int, 0, 1000)],
    }

    input: str = setting("", "folder, s3:// prefix, manifest or ASVspoof protocol", path=True)
    output: str = setting("", "report root, local or s3:// (a run_id=<id>/ folder is added)",
                          path=True)
    bundle: str | None = setting(
        None, f"bundle folder, local or s3://, or '{LATEST}' (the newest in the local "
        "registry)", default_help="the shipped spoofray-base (docs/model_card.md)", path=True,
        literal=(LATEST,))
    audio_root: str | None = setting(None, "audio folder of an ASVspoof protocol",
                                     default_help="the protocol's folder", path=True)
    run_id: str | None = setting(None, "name of this run",
                                 default_help="UTC time + random suffix")
    limit: int | None = setting(None, "only the first N listed files (smoke tests, quick "
                                "looks)", default_help="all")
    page: bool = setting(True, "write the run page <run>/index.html (spoofray.run_page)")
    page_files: int = setting(20, "files the run page shows the window-score timeline and "
                              "spectrogram of (the most suspicious)")
    page_audio: bool = setting(False, "embed each of those files' most suspicious window as "
                               "audio in the run page (off: the page holds no audio, so it "
                               "can be passed around)")
    resume: bool = setting(False, "continue the unfinished run --run-id: keep the files its "
                           "finished report parts cover, score only the rest (refused when "
                           "the bundle, threshold or feature config differ)")

    def _check(self) -> None:
        super()._check()
        if not self.input or not self.output:
            raise ConfigError("ScoreConfig needs both input and output")
        if self.resume and not self.run_id:
            raise ConfigError("--resume needs the --run-id of the run to continue")


def _safe_run_id(run_id: str) -> bool:
    return bool(run_id) and all(c.isalnum() or c in "-_." for c in run_id)


def new_run_id() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ-") + uuid.uuid4().hex[:6]


# --- stage 1: featurize (CPU tasks) ----------------------------------------------------------


def files_schema(kinds: Sequence[str]) -> pa.Schema:
    """Schema of featurized per-file rows: metadata, window times, raw tensor bytes."""
    return pa.schema([
        ("uri", pa.string()), ("label", pa.string()), ("attack", pa.string()),
        ("speaker", pa.string()), ("group", pa.string()), ("size_bytes", pa.int64()),
        ("status", pa.string()), ("error_type", pa.string()), ("error_message", pa.string()),
        ("duration_s", pa.float64()), ("sample_rate", pa.int64()), ("channels", pa.int64()),
        ("band", pa.string()), ("upper_band_db", pa.float64()),
        ("channel_bands", pa.list_(pa.string())),
        ("channel_upper_band_db", pa.list_(pa.float64())),
        ("n_windows", pa.int64()), ("start_s", pa.list_(pa.float64())),
        ("end_s", pa.list_(pa.float64())), ("window_channel", pa.list_(pa.int64())),
        *[(f"tensor_{k}", pa.large_binary()) for k in kinds],
    ])


def _clean_item(raw: dict[str, Any]) -> dict[str, Any]:
    item = {k: raw.get(k) for k in ITEM_KEYS}
    if item["size_bytes"] is not None:
        item["size_bytes"] = int(item["size_bytes"])
    return item


def featurized_file(raw: dict[str, Any], cfg: FeatureConfig,
                    kinds_by_band: dict[str, tuple[str, ...]], channels: str
                    ) -> tuple[dict[str, Any], dict[str, np.ndarray] | None]:
    """One listed file → its featurized row (metadata, band and window times, no tensors)
    and its window tensors by kind: the kinds its band's members read (None for an error
    row; a band the bundle has none for is one, :class:`UnsupportedBandError`).

    Never raises for a per-file problem (that is the file's error row). Raises
    :class:`~spoofray.errors.StorageUnavailableError` when the store stayed unreachable
    for the whole retry budget: every file would fail alike, so the run must fail and
    publish nothing rather than report good files as errors.
    """
    item = _clean_item(raw)
    try:
        r = featurize_file(item, cfg, channels=channels, kinds_by_band=kinds_by_band)
    except StorageUnavailableError:
        raise
    except Exception as exc:  # a decoder bug on one file must not fail an archive run
        r = FileFeatures(item=item, status="error", error_type=type(exc).__name__,
                         error_message=f"{item['uri']}: unexpected {type(exc).__name__} "
                         f"while featurizing: {exc}")
    row = {**item, "status": r.status, "error_type": r.error_type,
           "error_message": r.error_message, "duration_s": r.duration_s,
           "sample_rate": r.sample_rate, "channels": r.channels, "n_windows": r.n_windows,
           "band": r.band, "upper_band_db": r.upper_band_db, "channel_bands": None,
           "channel_upper_band_db": None, "start_s": None, "end_s": None,
           "window_channel": None}
    if r.status != "ok":
        return row, None
    if r.channel_bands is not None:
        heard = [r.channel_bands.get(c) for c in range(int(r.channels))]
        row["channel_bands"] = [h[0] if h else None for h in heard]
        row["channel_upper_band_db"] = [h[1] if h else None for h in heard]
    row["start_s"] = np.asarray(r.start_s, np.float64)
    row["end_s"] = np.asarray(r.end_s, np.float64)
    if r.window_channel is not None:
        row["window_channel"] = np.asarray(r.window_channel, np.int64)
    shapes = dataclasses.replace(cfg, kinds=tuple(r.features)).feature_shapes()
    tensors = {}
    for k in r.features:
        tensors[k] = np.ascontiguousarray(r.features[k], dtype=np.float32)
        if tensors[k].shape != (r.n_windows, *shapes[k]):
            raise SpoofrayError(f"{item['uri']}: feature {k} has shape {tensors[k].shape}, "
                                f"expected {(r.n_windows, *shapes[k])}")
    return row, tensors


def featurize_batch(batch: pa.Table, *, features: dict[str, Any],
                    kinds_by_band: dict[str, list[str]], channels: str = "mix") -> pa.Table:
    """Ray Data batch function of two-stage scoring: listed files → one featurized row per
    file (:func:`featurized_file`; a file whose channels are featurized apart, see
    ``channels``, holds all their windows), its tensors as raw bytes (None for the kinds
    its band does not read)."""
    cfg = FeatureConfig.from_dict(features)
    wanted = {b: tuple(k) for b, k in kinds_by_band.items()}
    kinds = ordered_kinds(k for ks in wanted.values() for k in ks)
    rows = []
    for raw in batch.to_pylist():
        row, tensors = featurized_file(raw, cfg, wanted, channels)
        for key in ("start_s", "end_s", "window_channel"):
            if row[key] is not None:
                row[key] = row[key].tolist()
        for k in kinds:
            row[f"tensor_{k}"] = (tensors[k].tobytes() if tensors is not None and k in tensors
                                  else None)
        rows.append(row)
    return pa.Table.from_pylist(rows, schema=files_schema(kinds))



# --- stage 2: score (actor pool) -------------------------------------------------------------


def report_columns(member_names: Sequence[str]) -> pa.Schema:
    """The report schema (DESIGN.md "Report") for a bundle with these members.

    ``predicted_label`` is the decision (reports written before it was named so call it
    ``label``; :func:`reports.read_report` renames it) and ``decision_rule`` the rules that
    made it spoof (``file_mean``, ``segment_rule``, both ``+``-joined; None for bona fide);
    ``n_segments`` counts the row's spans in the segments table. ``channel`` is None on a
    file's row and the channel index on the rows of a file scored per channel, whose file
    row is then their roll-up (:func:`scoring.channel_rollup`). ``true_label``/
    ``true_attack`` carry what the input listing knew (None when unlabelled).
    ``source_sample_rate`` is the file's own rate; ``band`` (``wide``/``narrow``) and
    ``upper_band_db`` say which of the bundle's bands judged the row and why
    (:func:`spoofray.audio.measure_band`), and ``threshold`` is that band's.
    """
    return pa.schema([
        ("uri", pa.string()), ("channel", pa.int64()), ("size_bytes", pa.int64()),
        ("duration_s", pa.float64()),
        ("source_sample_rate", pa.int64()), ("channels", pa.int64()),
        ("band", pa.string()), ("upper_band_db", pa.float64()), ("n_windows", pa.int64()),
        ("spoof_score", pa.float64()), ("predicted_label", pa.string()),
        ("decision_rule", pa.string()), ("threshold", pa.float64()),
        ("n_segments", pa.int64()), ("segment_threshold", pa.float64()),
        ("segment_k", pa.int64()),
        *[(f"score_{m}", pa.float64()) for m in member_names],
        ("max_window_score", pa.float64()), ("top_window_start_s", pa.float64()),
        ("top_window_end_s", pa.float64()),
        ("status", pa.string()), ("error_type", pa.string()), ("error_message", pa.string()),
        ("model_name", pa.string()), ("model_version", pa.string()), ("run_id", pa.string()),
        ("scored_at", pa.timestamp("us", tz="UTC")),
        ("true_label", pa.string()), ("true_attack", pa.string()),
    ])


#: The scorer's rows: the report's columns plus the row's spans, which the driver moves
#: into the segments table.
SEGMENTS_FIELD = pa.field("segments", pa.list_(pa.struct([
    ("start_s", pa.float64()), ("end_s", pa.float64()), ("score", pa.float64()),
    ("n_windows", pa.int64())])))


def scorer_columns(member_names: Sequence[str]) -> pa.Schema:
    """What :class:`BundleScorer` returns: :func:`report_columns` plus ``segments`` and
    ``windows`` (:data:`reports.WINDOWS_FIELD`)."""
    return report_columns(member_names).append(SEGMENTS_FIELD).append(reports.WINDOWS_FIELD)


def aggregate_file(window: dict[str, np.ndarray], start_s: np.ndarray, end_s: np.ndarray,
                   threshold: float, rule: scoring.SegmentRule | None = None
                   ) -> dict[str, Any]:
    """Per-file scores from window scores.

    Parameters
    ----------
    window : dict of str -> ndarray, shape (n_windows,)
        ``spoof_score`` and ``score_<member>`` as :meth:`Bundle.score_windows` returns.
    start_s, end_s : ndarray, shape (n_windows,)
    rule : SegmentRule, optional
        The segment rule (default: the file threshold and :data:`scoring.DEFAULT_SEGMENT_K`).

    Returns
    -------
    dict
        ``spoof_score`` (mean window score), ``decision_rule`` and ``predicted_label``
        (:func:`scoring.decision_rule`), member means, ``max_window_score``, the most
        suspicious window's start/end, ``segments`` (:func:`scoring.suspicious_spans`) and
        their count, ``windows`` (each window's span and fused score).
    """
    rule = rule or scoring.SegmentRule(threshold, scoring.DEFAULT_SEGMENT_K, "derived")
    fused = np.asarray(window["spoof_score"], dtype=np.float64)
    top = int(np.argmax(fused))
    score = scoring.file_score(fused)
    fired = scoring.decision_rule(score, fused, threshold, rule)
    spans = scoring.suspicious_spans(fused, start_s, end_s, rule.threshold)
    out = {k: scoring.file_score(v) for k, v in window.items()}
    out.update(spoof_score=score, predicted_label=scoring.label_of(fired), decision_rule=fired,
               max_window_score=float(fused[top]), top_window_start_s=float(start_s[top]),
               top_window_end_s=float(end_s[top]), n_segments=len(spans),
               segment_threshold=rule.threshold, segment_k=rule.k,
               segments=[{"start_s": a, "end_s": b, "score": sc, "n_windows": n}
                         for a, b, sc, n in spans],
               windows=[{"start_s": float(a), "end_s": float(b), "score": float(sc)}
                        for a, b, sc in zip(start_s, end_s, fused)])
    return out


def rollup_rows(file_row: dict[str, Any], channel_rows: list[dict[str, Any]]
                ) -> dict[str, Any]:
    """The file row of a file scored per channel, from its channel rows
    (:func:`scoring.channel_rollup`); the most suspicious channel's scores, band, threshold
    and top window. Only a file none of whose channels scored is an error row."""
    ok = [r for r in channel_rows if r["status"] == "ok"]
    if not ok:
        first = channel_rows[0]
        return {**file_row, "status": "error", "error_type": first["error_type"],
                "error_message": first["error_message"]}
    score, fired = scoring.channel_rollup([r["spoof_score"] for r in ok],
                                          [r["decision_rule"] for r in ok])
    worst = max(ok, key=lambda r: r["spoof_score"])
    top = max(ok, key=lambda r: r["max_window_score"])
    out = {**file_row, **{k: v for k, v in worst.items() if k.startswith("score_")}}
    out.update(spoof_score=score, decision_rule=fired, predicted_label=scoring.label_of(fired),
               band=worst["band"], upper_band_db=worst["upper_band_db"],
               threshold=worst["threshold"],
               max_window_score=top["max_window_score"],
               top_window_start_s=top["top_window_start_s"],
               top_window_end_s=top["top_window_end_s"],
               n_segments=sum(r["n_segments"] for r in ok),
               segment_threshold=worst["segment_threshold"], segment_k=worst["segment_k"],
               segments=[])
    return out


class BundleScorer:
    """Featurized file rows → report rows: a Ray Data callable class for two stages, and
    what :func:`score_files_batch` calls for one.

    The bundle arrives as a payload in the object store (so actors on any node get it, even
    when the driver read it from a local folder) and is verified and loaded once per actor
    (once per worker process, for one stage).
    ``thresholds`` and ``segment_rules`` are the run's, per band, worked out once by the
    driver. Each file (each channel, when they are scored apart) is judged by the members,
    threshold and segment rule of its band.
    """

    def __init__(self, payload: list, *, bundle_uri: str, thresholds: dict[str, float],
                 run_id: str, segment_rules: dict[str, dict[str, Any]]) -> None:
        import ray

        # A node-local cache in the temp dir: actors need model files on disk, and workers
        # must not depend on the driver's SPOOFRAY_HOME.
        cache = os.path.join(tempfile.gettempdir(), f"spoofray-bundles-{os.getuid()}")
        self.bundle = load_payload(ray.get(payload[0]), shown_as=bundle_uri, cache_dir=cache)
        self.thresholds = {b: float(t) for b, t in thresholds.items()}
        # An error row has no band: it shows the run's threshold when every band shares one.
        shared = set(self.thresholds.values())
        self.error_threshold = shared.pop() if len(shared) == 1 else None
        self.rules = {b: scoring.SegmentRule(**r) for b, r in segment_rules.items()}
        self.run_id = run_id
        self.schema = scorer_columns(self.bundle.member_names)
        self.shapes = dataclasses.replace(self.bundle.feature_config,
                                          kinds=tuple(self.bundle.needed_kinds)).feature_shapes()

    def _tensors(self, batch: pa.Table, i: int, n: int) -> dict[str, np.ndarray]:
        out = {}
        for k in self.bundle.needed_kinds:
            value = batch.column(f"tensor_{k}")[i]
            if value.is_valid:  # kinds the file's band does not read are null
                out[k] = np.frombuffer(value.as_buffer(), dtype=np.float32).reshape(
                    (n, *self.shapes[k]))
        return out

    def _score(self, feats: list[dict[str, np.ndarray]], band: str
               ) -> list[dict[str, np.ndarray] | Exception]:
        """Window scores of several files of one band in one model call (one call per file
        on failure)."""
        counts = [len(next(iter(f.values()))) for f in feats]
        try:
            joined = {k: np.concatenate([f[k] for f in feats]) for k in feats[0]}
            scores = self.bundle.score_windows(joined, band)
            bounds = np.cumsum([0, *counts])
            return [{k: v[a:b] for k, v in scores.items()} for a, b in zip(bounds, bounds[1:])]
        except Exception:  # find which file fails instead of failing the batch
            results: list[dict[str, np.ndarray] | Exception] = []
            for f in feats:
                try:
                    results.append(self.bundle.score_windows(f, band))
                except Exception as exc:  # noqa: BLE001 - becomes that file's error row
                    results.append(exc)
            return results

    def __call__(self, batch: pa.Table) -> pa.Table:
        """A batch of featurized rows (:func:`featurize_batch`) → report rows."""
        meta = batch.drop_columns([c for c in batch.column_names if c.startswith("tensor_")])
        rows = meta.to_pylist()
        tensors = [self._tensors(batch, i, r["n_windows"])
                   if r["status"] == "ok" and r["n_windows"] else None
                   for i, r in enumerate(rows)]
        return self.score_rows(rows, tensors)

    def _units(self, rows: list[dict[str, Any]],
               tensors: Sequence[dict[str, np.ndarray] | None]
               ) -> list[tuple[int, int | None, str, dict[str, np.ndarray]]]:
        """What is judged apart: ``(row, channel or None, band, window tensors)``."""
        units = []
        for i, r in enumerate(rows):
            if r["status"] != "ok":
                continue
            if r["window_channel"] is None:
                units.append((i, None, r["band"], tensors[i]))
                continue
            which = np.asarray(r["window_channel"])
            for c, band in enumerate(r["channel_bands"]):
                keep = which == c
                if band is not None and keep.any():
                    units.append((i, c, band, {k: v[keep] for k, v in tensors[i].items()}))
        return units

    def score_rows(self, rows: list[dict[str, Any]],
                   tensors: Sequence[dict[str, np.ndarray] | None]) -> pa.Table:
        """Featurized rows and their window tensors (:func:`featurized_file`) → report rows,
        the windows of each band scored in one model call."""
        for r in rows:
            if r["status"] == "ok" and not r["n_windows"]:
                r.update(status="error", error_type="InvalidAudioError",
                         error_message=f"{r['uri']}: no windows to score")
        units = self._units(rows, tensors)
        scored: dict[tuple[int, int | None], dict[str, np.ndarray] | Exception] = {}
        for band in sorted({u[2] for u in units}):
            group = [u for u in units if u[2] == band]
            scored.update({(u[0], u[1]): res
                           for u, res in zip(group, self._score([u[3] for u in group], band))})
        now = _dt.datetime.now(_dt.timezone.utc)
        b = self.bundle
        out = []
        for i, r in enumerate(rows):
            row = {"uri": r["uri"], "size_bytes": r["size_bytes"], "duration_s": r["duration_s"],
                   "source_sample_rate": r["sample_rate"], "channels": r["channels"],
                   "band": r["band"], "upper_band_db": r["upper_band_db"],
                   "n_windows": r["n_windows"],
                   "threshold": self.thresholds.get(r["band"], self.error_threshold),
                   "status": r["status"], "error_type": r["error_type"],
                   "error_message": r["error_message"], "model_name": b.name,
                   "model_version": b.version, "run_id": self.run_id, "scored_at": now,
                   "true_label": r["label"], "true_attack": r["attack"]}
            if r["status"] == "ok" and r["window_channel"] is not None:
                per = self._channel_rows(row, r, {c: res for (j, c), res in scored.items()
                                                  if j == i})
                out += [rollup_rows(row, per), *per]
                continue
            if r["status"] == "ok":
                row.update(self._judged(r["uri"], scored[(i, None)], r["band"], r["start_s"],
                                        r["end_s"]))
            out.append(row)
        return pa.Table.from_pylist(out, schema=self.schema)

    def _judged(self, uri: str, result: dict[str, np.ndarray] | Exception, band: str,
                start_s: Any, end_s: Any) -> dict[str, Any]:
        """A file's (or channel's) scores, decision and spans at its band's threshold."""
        if isinstance(result, Exception):
            return {"status": "error", "error_type": type(result).__name__,
                    "error_message": f"{uri}: scoring failed: {result}"}
        agg = aggregate_file(result, np.asarray(start_s), np.asarray(end_s),
                             self.thresholds[band], self.rules[band])
        if not np.isfinite(agg["spoof_score"]):
            return {"status": "error", "error_type": "ScoringError",
                    "error_message": f"{uri}: the model gave a non-finite score"}
        return agg

    def _channel_rows(self, row: dict[str, Any], r: dict[str, Any],
                      scored: dict[int, dict[str, np.ndarray] | Exception]
                      ) -> list[dict[str, Any]]:
        """One row per channel of a file scored per channel (a silent one as an error);
        ``scored``: each heard channel's window scores."""
        which = np.asarray(r["window_channel"])
        out = []
        for c in range(int(r["channels"])):
            keep = which == c
            band = r["channel_bands"][c]
            one = {**row, "channel": c, "n_windows": int(keep.sum()), "band": band,
                   "upper_band_db": r["channel_upper_band_db"][c],
                   "threshold": self.thresholds.get(band, self.error_threshold)}
            if not keep.any():
                one.update(status="error", error_type="InvalidAudioError",
                           error_message=f"{r['uri']}: channel {c} is digital silence; "
                           "nothing to judge")
            else:
                one.update(self._judged(r["uri"], scored[c], band,
                                        np.asarray(r["start_s"])[keep],
                                        np.asarray(r["end_s"])[keep]))
            out.append(one)
        return out


# --- driver ---------------------------------------------------------------------------------


def _write_table(uri: str, table: pa.Table) -> None:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd")
    storage.write_bytes_atomic(uri, sink.getvalue().to_pybytes())


def split_segments(scored: pa.Table) -> tuple[pa.Table, pa.Table]:
    """A scored block → (its report rows, its segments table rows): the ``segments`` list
    of each row becomes rows of :data:`reports.SEGMENTS_SCHEMA`."""
    report = scored.drop_columns(["segments"])
    rows = [{"uri": u, "channel": c, **span}
            for u, c, spans in zip(scored.column("uri").to_pylist(),
                                   scored.column("channel").to_pylist(),
                                   scored.column("segments").to_pylist())
            for span in spans or ()]
    return report, pa.Table.from_pylist(rows, schema=reports.SEGMENTS_SCHEMA)


def _write_parts(tmp: str, part: pa.Table, spans: pa.Table, windows: pa.Table) -> None:
    """A report part, its spans and its windows under one key; the report part last, as it
    is what marks the part finished for ``--resume``."""
    name = report_part_name(part)
    _write_table(storage.join(tmp, SEGMENTS_DIR, name), spans)
    _write_table(storage.join(tmp, WINDOWS_DIR, name), windows)
    _write_table(storage.join(tmp, REPORT_DIR, name), part)


def _counted(blocks: Iterator[pa.Table], shown: progress.Progress) -> Iterator[pa.Table]:
    for block in blocks:
        _count(shown, block)
        yield block


def publish_run(tmp: str, final: str) -> None:
    """Move a finished run folder into place with ``_SUCCESS`` last
    (:func:`storage.publish_dir`). Until ``_SUCCESS`` exists the folder is not a finished
    report to the readers that decide what is one (:func:`reports.read_report`, the
    audit's ``committed_runs``)."""
    storage.write_bytes_atomic(storage.join(tmp, SUCCESS_MARKER), b"")
    storage.publish_dir(tmp, final, SUCCESS_MARKER)


def _discard(uri: str, what: str) -> None:
    """Remove ``uri`` on the way out of a failed run, never masking the failure itself."""
    storage.remove_quietly(uri, what, unpublished_because=f"it has no {SUCCESS_MARKER}, so "
                                                          "readers ignore it")


def _report_blocks(blocks: Iterator[pa.Table], *, left: str) -> Iterator[pa.Table]:
    """The scored blocks as they finish; a storage outage that stopped a task is re-raised
    as :class:`~spoofray.errors.StorageUnavailableError` saying what was ``left``."""
    try:
        yield from blocks
    except Exception as exc:
        runtime.raise_if_storage_outage(exc, stopped="scoring",
                                        left=f"{left}, once storage is back")
        raise


def _count(shown: progress.Progress, block: pa.Table) -> None:
    """Add a block of report rows to the progress line."""
    import pyarrow.compute as pc

    if "channel" in block.column_names:  # per-channel rows: count their file's roll-up only
        block = block.filter(pc.is_null(block.column("channel")))
    ok = pc.equal(block.column("status"), "ok")
    audio = pc.sum(pc.if_else(ok, block.column("duration_s"), 0.0)).as_py() or 0.0
    size = pc.sum(block.column("size_bytes")).as_py() or 0
    shown.add(block.num_rows, audio_s=audio, size_bytes=size)


def check_run_free(final: str) -> None:
    """Refuse to score into ``final`` (``<output>/run_id=<id>``) when it already holds a run."""
    if storage.exists_nonempty(final):
        if storage.exists_nonempty(storage.join(final, SUCCESS_MARKER)):
            raise OutputExistsError(f"{final} already exists; choose another --run-id")
        raise OutputExistsError(
            f"{final} already exists without {SUCCESS_MARKER}: a run whose publishing was "
            "interrupted left it (readers ignore it). Delete it, or choose another --run-id")


def preflight(cfg: ScoreConfig) -> list[sources.AudioItem]:
    """What can be refused without a cluster, before Ray or TensorFlow start
    (:mod:`spoofray.preflight`): S3 credentials, the output root (a writable folder or
    creatable prefix, not an earlier run, not the folder this ``--run-id`` already took),
    the bundle (exists and verifies, without loading a model) and the input (exists and
    lists at least one file).

    Returns
    -------
    list of AudioItem
        The listed input; pass it to :func:`score_archive` (``items=``) to list only once.
    """
    storage.check_credentials(cfg.input, cfg.output, cfg.bundle, cfg.audio_root)
    preflight_checks.check_output_root(cfg.output)
    preflight_checks.check_not_a_run(cfg.output)
    if cfg.run_id:
        check_run_free(storage.join(cfg.output, f"run_id={cfg.run_id}"))
    bundle_uri, _ = resolve_bundle(cfg.bundle)
    BundleSpec.verify(bundle_uri)
    return sources.resolve_inputs(cfg.input, audio_root=cfg.audio_root)


def score_archive(cfg: ScoreConfig,
                  items: Sequence[sources.AudioItem] | None = None) -> dict[str, Any]:
    """Score an archive on the current Ray (start one with ``runtime.init_ray``).

    Parameters
    ----------
    items : sequence of AudioItem, optional
        Score exactly these instead of listing ``cfg.input`` (the nightly audit scores only
        what is new); ``cfg.input`` then only names the archive in the summary and plots.

    Returns
    -------
    dict
        The run summary (also written as ``summary.json``), with ``run_uri``.

    Raises
    ------
    SpoofrayError
        Accounting mismatch (nothing is published then), bad config, bundle refused, a
        resume with other settings than the unfinished run's.
    """
    started = time.perf_counter()
    started_at = _dt.datetime.now(_dt.timezone.utc)
    bundle_uri, bundle_source = resolve_bundle(cfg.bundle)
    # Refuse a bad bundle before any work: checksums, feature config and the members' input
    # shapes, without loading a model (the scoring actors do, once each).
    bundle = BundleSpec.verify(bundle_uri)
    if bundle_source != "given":
        log.warning("%s", bundle_note(bundle.name, bundle.version, bundle_uri, bundle_source))
    checksum = bundle_checksum(bundle)  # the bundle as shipped, before a threshold override
    if cfg.threshold is not None:
        bundle = bundle.with_threshold(cfg.threshold)
    # The run's thresholds and segment rules, one per band, handed to every actor.
    thresholds = {b: spec.threshold for b, spec in bundle.bands.items()}
    rules = {b: scoring.segment_rule_of({"segment_rule": spec.segment_rule}, spec.threshold,
                                        threshold=cfg.segment_threshold, k=cfg.segment_k)
             for b, spec in bundle.bands.items()}

    if items is None:
        items = sources.resolve_inputs(cfg.input, audio_root=cfg.audio_root)
    items = list(items)
    if cfg.limit is not None:
        items = items[: cfg.limit]
    run_id = cfg.run_id or new_run_id()
    final = storage.join(cfg.output, f"run_id={run_id}")
    tmp = storage.join(cfg.output, f"_tmp_run_id={run_id}")
    check_run_free(final)
    resumed = resume.open_tmp(
        tmp, resume_settings(cfg, bundle, checksum, thresholds), resume=cfg.resume,
        what=f"scoring run {run_id!r}", restart_hint=f"choose another --run-id (or delete {tmp})")
    earlier = _earlier_rows(tmp, items) if resumed else None
    done = set() if earlier is None else set(earlier["uri"])
    todo = [it for it in items if it.uri not in done]
    log.info("scoring %s from %s with bundle %s %s into %s%s", console.count(len(todo), "file"),
             cfg.input,
             bundle.name, bundle.version, final,
             f" (resumed: {len(done)} of {len(items)} files are in finished parts)"
             if earlier is not None else "")

    schema = report_columns(bundle.member_names)
    kept: list[pa.Table] = []  # the new rows' summary columns, for accounting + summary
    left = (f"Nothing was published ({final} has no {SUCCESS_MARKER}); the finished report "
            f"parts are kept in {tmp}: rerun with --run-id {run_id} --resume to score only "
            "the rest")
    try:
        if todo:
            sizes = [it.size_bytes for it in todo]
            shown = progress.Progress(len(todo), total_bytes=sum(sizes) if None not in sizes
                                      else None, verb="scored")
            blocks = _report_blocks(_scored_blocks(cfg, bundle, bundle_uri, thresholds, run_id,
                                                     todo, rules), left=left)
            for scored in _gathered(_counted(blocks, shown), every_s=cfg.part_every_s):
                scored, windows = reports.split_windows(scored)
                part, spans = split_segments(scored)
                _write_parts(tmp, part, spans, windows)
                kept.append(part.select(list(reports.SUMMARY_COLUMNS)))
            shown.close()
        if not kept and earlier is None:  # an empty archive still has a (empty) report
            _write_parts(tmp, schema.empty_table(), reports.SEGMENTS_SCHEMA.empty_table(),
                         reports.WINDOWS_SCHEMA.empty_table())
        new = (pa.concat_tables(kept) if kept else
               schema.empty_table().select(list(reports.SUMMARY_COLUMNS))).to_pandas()
        report = new if earlier is None else pd.concat([earlier, new], ignore_index=True)
    except BaseException:
        if kept or resumed:  # finished parts: keep them for --resume
            log.error("scoring run %s stopped; %s", run_id, left)
        else:
            _discard(tmp, "the unpublished run folder")
        raise
    try:
        plan.check_accounting([it.uri for it in items], reports.file_rows(report)["uri"],
                              what="report accounting", left="Nothing was published")
        wall_s = time.perf_counter() - started
        summary = reports.summarize_report(
            report, wall_s=wall_s, input_uri=cfg.input, run_id=run_id,
            started_at=started_at.isoformat(timespec="seconds"),
            bundle={"uri": bundle_uri, "name": bundle.name, "version": bundle.version,
                    "source": bundle_source, "threshold": bundle.threshold,
                    "threshold_method": bundle.threshold_method,
                    "segment_rule": rules[next(iter(rules))].to_dict(),
                    "bands": {b: {"members": list(spec.members), "threshold": thresholds[b],
                                  "threshold_method": spec.threshold_method,
                                  "segment_rule": rules[b].to_dict()}
                              for b, spec in bundle.bands.items()}})
        summary.update(run_uri=final, score_config=cfg.to_dict(),
                       finished_at=_dt.datetime.now(_dt.timezone.utc).isoformat(
                           timespec="seconds"),
                       resumed={"files_in_earlier_parts": len(done),
                                "files_scored_now": len(reports.file_rows(new))}
                       if resumed else None)
        storage.write_bytes_atomic(storage.join(tmp, SUMMARY_NAME),
                                   json.dumps(summary, indent=2).encode())
        if cfg.plots:
            for name, png in reports.report_plots(report, threshold=bundle.threshold,
                                                  input_uri=cfg.input).items():
                storage.write_bytes_atomic(storage.join(tmp, PLOTS_DIR, name), png)
        if cfg.page:
            from spoofray import run_page

            run_page.write_run_page(tmp, summary, evaluation=bundle.manifest.get("evaluation"),
                                    feature_config=bundle.feature_config,
                                    top_n=cfg.page_files, audio=cfg.page_audio)
        publish_run(tmp, final)
    except StorageUnavailableError:
        log.error("scoring run %s could not finish; %s", run_id, left)
        raise
    except BaseException:
        _discard(tmp, "the unpublished run folder")
        raise
    return summary


def resume_settings(cfg: ScoreConfig, bundle: BundleSpec, checksum: str,
                    thresholds: dict[str, float]) -> dict[str, Any]:
    """What a scoring run's report parts depend on: a ``--resume`` must find the same."""
    shared = set(thresholds.values())
    return {"bundle_name": bundle.name, "bundle_version": bundle.version,
            "bundle_checksum": checksum,
            # One number when every band shares it (as unfinished runs of bundles without
            # bands recorded it), else one per band.
            "threshold": float(shared.pop()) if len(shared) == 1 else
            {b: float(t) for b, t in sorted(thresholds.items())},
            "feature_config_hash": bundle.feature_config.config_hash(),
            "input": cfg.input, "audio_root": cfg.audio_root, "limit": cfg.limit,
            "channels": cfg.channels, "segment_threshold": cfg.segment_threshold,
            "segment_k": cfg.segment_k}


def bundle_checksum(bundle: BundleSpec) -> str:
    """sha256 of the bundle's ``bundle.json`` as loaded (it holds every file's sha256)."""
    return hashlib.sha256(json.dumps(dict(bundle.manifest), sort_keys=True,
                                     default=str).encode()).hexdigest()


def report_part_name(part: pa.Table) -> str:
    """``part-<key>.parquet``, the key a hash of the part's sorted input URIs."""
    return f"part-{dataset.part_key(part.column('uri').to_pylist())}.parquet"


def _earlier_rows(tmp: str, items: Sequence[sources.AudioItem]) -> pd.DataFrame:
    """The summary columns of the rows in an unfinished run's finished parts.

    Parts that share a file with another part are removed (their files are scored again);
    a part holding a file that is no longer listed means the input changed: refused.
    """
    folder = storage.join(tmp, REPORT_DIR)
    cols = list(reports.SUMMARY_COLUMNS)
    frames: dict[str, pd.DataFrame] = {}

    def read_uris(part: str) -> list[str]:
        frames[part] = reports.read_report(part, columns=cols)
        return frames[part]["uri"].tolist()

    kept, overlapping = resume.covered_uris(storage.list_dir(folder, suffix=".parquet"),
                                            read_uris)
    for part in overlapping:
        log.warning("removing %s: it shares files with another part (they are scored again)",
                    part)
        storage.remove(part)
    # Spans and windows whose report part is not finished (or was just removed) are scored
    # again too.
    finished = {posixpath.basename(p) for p in kept}
    for side in (SEGMENTS_DIR, WINDOWS_DIR):
        for spans in storage.list_dir(storage.join(tmp, side), suffix=".parquet"):
            if posixpath.basename(spans) not in finished:
                storage.remove(spans)
    rows = (pd.concat([frames[p] for p in kept], ignore_index=True) if kept
            else pd.DataFrame({c: pd.Series(dtype=object) for c in cols}))
    gone = sorted(set(rows["uri"]) - {it.uri for it in items})
    if gone:
        raise ConfigError(
            f"cannot resume: the finished parts in {folder} hold {len(gone)} file(s) the input "
            f"no longer lists (e.g. {gone[:3]}): the input changed since the run started; "
            "choose another --run-id to score it afresh")
    return rows


def _scored_blocks(cfg: ScoreConfig, bundle: BundleSpec, bundle_uri: str,
                   thresholds: dict[str, float], run_id: str,
                   items: Sequence[sources.AudioItem],
                   rules: dict[str, scoring.SegmentRule]) -> Iterator[pa.Table]:
    """Report rows of ``items``, a block at a time as they finish: one stage on plain Ray
    tasks (:func:`scores_in_one_stage`, :mod:`~spoofray.pipeline.tasks`), else a Ray Data
    dataset of two stages."""
    import ray

    featurize = {"features": bundle.feature_config.to_dict(),
                 "kinds_by_band": {b: list(k) for b, k in bundle.kinds_by_band().items()},
                 "channels": cfg.channels}
    scorer = {"payload": [ray.put(bundle.payload())], "bundle_uri": bundle_uri,
              "thresholds": thresholds, "run_id": run_id,
              "segment_rules": {b: r.to_dict() for b, r in rules.items()}}
    memory = cfg.featurize_memory_mb * 1024 * 1024
    if scores_in_one_stage(cfg, bundle):
        # Few long tasks: blocks of like bytes, two tasks per slot at least.
        slots = tasks.slots(concurrency=cfg.featurize_concurrency)
        work = plan.plan(items, files_per_task=cfg.files_per_task or ONE_STAGE_FILES_PER_TASK,
                         slots=slots, balanced=True)
        return tasks.run_blocks(
            score_files_batch, (pa.Table.from_pylist(rows) for rows in work.blocks()),
            kwargs={**featurize, "scorer": scorer, "files_per_call": cfg.batch_size},
            slots=slots, concurrency=cfg.featurize_concurrency, memory_bytes=memory)
    cpus = ray.cluster_resources().get("CPU", 0.0)
    per_actor = actor_cpus(cfg, cpus)
    if per_actor != cfg.num_cpus_per_actor:
        log.warning("this Ray has %g CPU(s): %d scoring actor(s) of %g CPU would leave no "
                    "CPU to the featurize tasks that feed them, and the run would wait "
                    "forever; each actor reserves %.3g CPU instead (give Ray more CPUs or "
                    "lower --concurrency to keep them apart)", cpus, cfg.concurrency,
                    cfg.num_cpus_per_actor, per_actor)
    # Listed order, and no spreading over workers: the featurize stage takes batches of
    # files_per_task (long recordings make tasks long), which merges shorter blocks anyway.
    files_per_task = cfg.files_per_task or TWO_STAGE_FILES_PER_TASK
    work = plan.plan(items, files_per_task=files_per_task, largest_first_order=False)
    ds = ray.data.from_items(work.rows(), override_num_blocks=work.n_blocks)
    ds = ds.map_batches(featurize_batch, fn_kwargs=featurize, batch_size=files_per_task,
                        batch_format="pyarrow", num_cpus=FEATURIZE_TASK_CPUS,
                        # Its own memory request also keeps Ray from fusing these CPU tasks
                        # into the scoring actors, which would serialise featurizing behind
                        # the pool.
                        memory=memory,
                        compute=ray.data.TaskPoolStrategy(size=cfg.featurize_concurrency)
                        if cfg.featurize_concurrency else None)
    return ds.map_batches(
        BundleScorer, fn_constructor_kwargs=scorer,
        batch_size=cfg.batch_size, batch_format="pyarrow", zero_copy_batch=True,
        num_cpus=per_actor, num_gpus=cfg.num_gpus or None,
        compute=ray.data.ActorPoolStrategy(size=cfg.concurrency)
    ).iter_batches(batch_size=None, batch_format="pyarrow")


def actor_cpus(cfg: ScoreSettings, cluster_cpus: float) -> float:
    """CPUs each scoring actor reserves (two stages): ``cfg.num_cpus_per_actor``, or less
    when the actors would leave less than one featurize task's
    :data:`FEATURIZE_TASK_CPUS`: no featurize task could start, and the actors would wait
    for windows forever. They then share what one featurize task leaves (nothing on a
    1-CPU Ray: they run beside it unreserved). A cluster with no CPU yet is left alone:
    its autoscaler adds nodes for both."""
    wanted = cfg.concurrency * cfg.num_cpus_per_actor
    if cluster_cpus <= 0 or wanted + FEATURIZE_TASK_CPUS <= cluster_cpus:
        return cfg.num_cpus_per_actor
    return max(0.0, cluster_cpus - FEATURIZE_TASK_CPUS) / cfg.concurrency


def scores_in_one_stage(cfg: ScoreSettings, bundle: BundleSpec) -> bool:
    """Whether featurize and score run in the same task (``cfg.stages``; ``auto``: when
    every member is a scikit-learn model and no GPU is asked for).

    Scikit-learn members score a window in microseconds, so handing windows to a
    scoring actor would cost far more (copies through the object store, a CPU the actor
    holds) than scoring them where they were made. Deep members are loaded once per actor
    and batch windows across tasks, on a GPU when there is one: two stages.
    """
    if cfg.stages != "auto":
        return cfg.stages == "one"
    return not cfg.num_gpus and all(m.kind == "sklearn" for m in bundle.members)


#: The scorer of the last run this worker process scored for (see score_files_batch).
_CACHED_SCORER: dict[tuple, BundleScorer] = {}


def score_files_batch(batch: pa.Table, *, features: dict[str, Any],
                      kinds_by_band: dict[str, list[str]], channels: str,
                      scorer: dict[str, Any], files_per_call: int) -> pa.Table:
    """The task of one-stage scoring: listed files → report rows.

    The bundle is loaded once per worker process and run (a task worker runs many tasks of
    one run). Files are featurized one by one and scored together once ``files_per_call``
    files or :data:`WINDOWS_PER_CALL` windows have gathered, so a task holds the windows of
    that much audio at once (or of one longer file), however many files it scores. The
    windows stay arrays: no Arrow row per file, as two stages need (:func:`featurize_batch`).
    """
    key = (scorer["payload"][0].hex(), json.dumps(scorer["thresholds"], sort_keys=True),
           scorer["run_id"], json.dumps(scorer["segment_rules"], sort_keys=True))
    if key not in _CACHED_SCORER:
        _CACHED_SCORER.clear()
        _CACHED_SCORER[key] = BundleScorer(**scorer)
    score = _CACHED_SCORER[key]
    cfg = FeatureConfig.from_dict(features)
    wanted = {b: tuple(k) for b, k in kinds_by_band.items()}
    raws = batch.to_pylist()
    parts, rows, tensors, windows = [], [], [], 0
    for i, raw in enumerate(raws):
        row, feats = featurized_file(raw, cfg, wanted, channels)
        rows.append(row)
        tensors.append(feats)
        windows += row["n_windows"] or 0
        if len(rows) >= files_per_call or windows >= WINDOWS_PER_CALL or i == len(raws) - 1:
            parts.append(score.score_rows(rows, tensors))
            rows, tensors, windows = [], [], 0
    return pa.concat_tables(parts) if parts else score.schema.empty_table()


def _gathered(blocks: Iterator[pa.Table], *, every_s: float) -> Iterator[pa.Table]:
    """Scored blocks joined into parts: one whenever ``every_s`` seconds have passed since
    the last (or :data:`ROWS_PER_PART` rows have gathered), and one with the rest."""
    tables: list[pa.Table] = []
    buffered, since = 0, time.monotonic()
    for block in blocks:
        if block.num_rows:
            tables.append(block)
            buffered += block.num_rows
        if tables and (buffered >= ROWS_PER_PART or time.monotonic() - since >= every_s):
            yield pa.concat_tables(tables)
            tables, buffered, since = [], 0, time.monotonic()
    if tables:
        yield pa.concat_tables(tables)

"""One nightly audit: recover, list, select, score, commit, compare, alert, publish.

:func:`run_audit` is what ``jobs/nightly_audit.py`` calls. The order of writes is the
commit protocol of :mod:`spoofray.audit.ledger`::

    1. finish runs an earlier, interrupted audit left (a plan whose report was committed:
       apply it to the ledger; a plan without a committed report: drop it)
    2. list the archive, fingerprint every file, select the work
    3. write the plan                                   (fault point "after-plan")
    4. score exactly the planned files into <output>/date=D/run_id=R/  (atomic, _SUCCESS last)
                                                        (fault point "after-commit")
    5. replace the ledger (one atomic write)
    6. drift, alerts, page, spoken summary under <output>/_audit/date=D/run_id=R/
    7. drop the plan

Fault injection (tests, fire drills): with ``SPOOFRAY_AUDIT_FAULT=after-plan`` or
``after-commit`` in its environment the process kills itself with SIGKILL at that point,
exactly as an OOM killer or a node loss would. The next run must then finish the work with
no duplicate and no gap.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import logging
import os
import signal
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from spoofray import storage
from spoofray.audit import alerts as _alerts
from spoofray.audit import drift as _drift
from spoofray.audit import ledger as _ledger
from spoofray.audit import page as _page
from spoofray.config import Check, Config, Interval, Options, ScoreSettings, setting
from spoofray.errors import ConfigError, SpoofrayError
from spoofray.reports import PLOTS_DIR, file_rows, read_report

log = logging.getLogger(__name__)

FAULT_ENV = "SPOOFRAY_AUDIT_FAULT"
FAULT_POINTS = ("after-plan", "after-commit")
#: Written last into a run's audit folder: the folder is complete once it exists.
AUDIT_MARKER = "audit.json"
#: Report columns the ledger and the drift need (``channel`` to keep the file rows only).
REPORT_COLUMNS = ("uri", "channel", "status", "error_type", "spoof_score", "predicted_label",
                  "scored_at", "run_id", "threshold")


def _is_date(value: str) -> bool:
    _dt.date.fromisoformat(value)
    return True


@dataclasses.dataclass(frozen=True)
class AuditConfig(Config):
    """What a nightly audit reads, how it decides what to score, and where it writes; how
    it scores is a nested :class:`~spoofray.config.ScoreSettings` (``scoring``)."""

    _nested = {"scoring": ScoreSettings}
    _constraints = {
        "on_new_bundle": [Options(_ledger.ON_NEW_BUNDLE)],
        "date": [None, Check(_is_date, "a date YYYY-MM-DD")],
        "reference_runs": [Interval(int, 1)],
        "psi_bins": [Interval(int, 1)],
        "drift_min_files": [Interval(int, 1)],
        "rescore": [bool],
        "retry_errors": [bool],
        "spoken_summary": [bool],
    }

    input: str = setting("", "archive: folder, s3:// prefix, manifest or ASVspoof protocol",
                         path=True)
    output: str = setting("", "audit root, local or s3:// (date= partitions, _audit/)",
                          path=True)
    bundle: str | None = setting(
        None, "bundle folder, local or s3://, or 'latest' (the newest in the local registry)",
        default_help="the shipped spoofray-base (docs/model_card.md)", path=True,
        literal=("latest",))
    audio_root: str | None = setting(None, "audio folder of an ASVspoof protocol",
                                     default_help="the protocol's folder", path=True)
    #: Without rules the exit code is 0 unless the run crashes.
    rules: str | None = setting(None, "alert rules YAML, local or s3:// (e.g. "
                                "audit_rules/default.yaml); without it no alert can fire",
                                default_help="no rules", path=True)
    date: str | None = setting(None, "partition date YYYY-MM-DD", default_help="today, UTC")
    run_id: str | None = setting(None, "name of this run",
                                 default_help="UTC time + random suffix")
    rescore: bool = setting(False, "score every listed file, changed or not")
    on_new_bundle: str = setting(
        "rescore-all", "when the bundle name/version differs from the ledger's: rescore "
        "every file, or only new/changed/errored ones")
    retry_errors: bool = setting(True, "score files whose last result was an error again")
    reference_runs: int = setting(7, "earlier runs that form the drift reference")
    psi_bins: int = setting(10, "equal-width score bins of the PSI")
    #: Fewer scored files than this (now or before) in a group: no PSI/KS for it.
    drift_min_files: int = setting(10, "fewest scored files per group for PSI/KS")
    spoken_summary: bool = setting(True, "make summary.wav (with espeak-ng when installed)")
    espeak_binary: str = setting("espeak-ng", "text-to-speech program of the spoken summary")
    #: Handed to every ScoreConfig of the audit unchanged (the flags --batch-size, ...).
    scoring: ScoreSettings = dataclasses.field(default_factory=ScoreSettings)

    def _check(self) -> None:
        if not self.input or not self.output:
            raise ConfigError("AuditConfig needs both input and output")


def _fault_point(name: str) -> None:
    if os.environ.get(FAULT_ENV) == name:
        log.warning("%s=%s: killing this process now (fault injection)", FAULT_ENV, name)
        logging.shutdown()
        os.kill(os.getpid(), signal.SIGKILL)


def _bundle_identity(uri: str) -> tuple[str, str]:
    """Name and version from ``bundle.json`` (full verification happens when scoring)."""
    from spoofray.models.bundle import BUNDLE_JSON

    try:
        meta = json.loads(storage.read_bytes(storage.join(uri, BUNDLE_JSON)))
        return str(meta["name"]), str(meta["version"])
    except FileNotFoundError:
        raise ConfigError(f"no {BUNDLE_JSON} in {uri}: not a model bundle. Make one with "
                          "`python jobs/bundle.py assemble ...`") from None
    except (ValueError, KeyError) as exc:
        raise ConfigError(f"{uri}/{BUNDLE_JSON} is unreadable or lacks name/version: "
                          f"{exc}") from None


def _score_subset(cfg: AuditConfig, *, items: list, run_id: str, date: str,
                  bundle_uri: str) -> dict[str, Any]:
    from spoofray.pipeline.score import ScoreConfig, score_archive

    score_cfg = ScoreConfig(
        input=cfg.input, output=_ledger.partition_uri(cfg.output, date), bundle=bundle_uri,
        audio_root=cfg.audio_root, run_id=run_id,
        **{f.name: getattr(cfg.scoring, f.name) for f in dataclasses.fields(ScoreSettings)})
    return score_archive(score_cfg, items=items)


def _write_json(uri: str, data: Any) -> None:
    storage.write_bytes_atomic(uri, json.dumps(data, indent=2, default=str).encode())


# --- the steps ----------------------------------------------------------------------------------


def _reference(cfg: AuditConfig, run_id: str | None, date: str
               ) -> tuple[list[dict[str, Any]], list[pd.DataFrame]]:
    """Up to ``reference_runs`` committed runs before this one, and their reports."""
    runs = _ledger.committed_runs(cfg.output)
    ids = [r["run_id"] for r in runs]
    if run_id in ids:
        runs = runs[: ids.index(run_id)]
    else:
        runs = [r for r in runs if r["date"] <= date]
    chosen = runs[-cfg.reference_runs:]
    frames = [file_rows(read_report(r["uri"], columns=REPORT_COLUMNS)) for r in chosen]
    return chosen, frames


def _report_plots(run_folder: str | None) -> dict[str, bytes]:
    out = {}
    if run_folder is None:
        return out
    for name in _page.report_plot_names():
        try:
            out[name] = storage.read_bytes(storage.join(run_folder, PLOTS_DIR, name))
        except FileNotFoundError:
            continue
    return out


#: Report columns the page shows beyond :data:`REPORT_COLUMNS` (failing files' messages,
#: the suspicious files' top windows).
PAGE_COLUMNS = ("uri", "status", "error_type", "error_message", "spoof_score",
                "predicted_label", "max_window_score", "top_window_start_s", "top_window_end_s")


def _page_details(run_folder: str | None, current: pd.DataFrame) -> pd.DataFrame:
    """The run's report with the columns the page shows; ``current`` when the report
    cannot give them (a report written before a column existed)."""
    if run_folder is None:
        return current
    try:
        return read_report(run_folder, columns=PAGE_COLUMNS)
    except Exception as exc:  # noqa: BLE001 - the page then shows less, the audit goes on
        log.warning("audit page: reading %s for details failed (%s: %s); the page shows "
                    "less", run_folder, type(exc).__name__, exc)
        return current


def _bundle_evaluation(uri: str | None) -> dict[str, Any] | None:
    """``bundle.json["evaluation"]`` (the model card's numbers), or None."""
    from spoofray.models.bundle import BUNDLE_JSON

    if not uri:
        return None
    try:
        return json.loads(storage.read_bytes(storage.join(uri, BUNDLE_JSON))).get("evaluation")
    except Exception:  # noqa: BLE001 - scoring already verified the bundle; the page can do without
        return None


def finish_run(cfg: AuditConfig, rules: tuple, *, run_id: str, date: str,
               current: pd.DataFrame, counts: dict[str, int], bundle: dict[str, Any],
               run_folder: str | None, recovered: bool = False) -> dict[str, Any]:
    """Drift, alerts, page and spoken summary of one run; returns its audit record."""
    ref_runs, ref_frames = _reference(cfg, run_id if run_folder else None, date)
    ref_ids = [r["run_id"] for r in ref_runs]
    reference = (pd.concat(ref_frames, ignore_index=True) if ref_frames
                 else pd.DataFrame(columns=list(REPORT_COLUMNS)))
    drift = _drift.drift_table(current, reference, root=cfg.input, bins=cfg.psi_bins,
                               min_files=cfg.drift_min_files)
    fired = _alerts.evaluate_rules(rules, drift)
    trend = _drift.run_rates([*ref_frames, current])
    trend["run_id"] = ref_ids + [run_id]
    trend["date"] = [r["date"] for r in ref_runs] + [date]
    where = _ledger.audit_run_uri(cfg.output, date, run_id)
    thresholds = current["threshold"].dropna().unique() if len(current) else []
    audit = {
        "run_id": run_id, "date": date, "input": cfg.input, "output": cfg.output,
        "run_uri": run_folder, "bundle": bundle, "counts": counts, "n_scored": int(len(current)),
        "recovered": recovered, "reference_runs": ref_ids,
        "drift": json.loads(drift.to_json(orient="records")), "alerts": fired,
        "page": storage.join(where, "index.html"), "spoken_summary": None,
        "spoken_summary_note": None, "ledger": _ledger.ledger_uri(cfg.output),
        "finished_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    # Written into a temporary sibling and published whole, audit.json last.
    tmp = storage.temporary_sibling(where)
    if cfg.spoken_summary:
        wav, note = _page.speak(_page.summary_text(audit, drift), binary=cfg.espeak_binary)
        if wav is not None:
            audit["spoken_summary"] = storage.join(where, "summary.wav")
            storage.write_bytes_atomic(storage.join(tmp, "summary.wav"), wav)
        else:
            log.warning("%s", note)
            audit["spoken_summary_note"] = note
    else:
        audit["spoken_summary_note"] = "spoken summary not requested"
    plots = _page.audit_plots(current, reference, drift, trend,
                              threshold=float(thresholds[0]) if len(thresholds) == 1 else None)
    details = _page_details(run_folder, current)
    page = _page.render_page(audit, drift, plots, _report_plots(run_folder),
                             _page.suspicious_table(details) if len(details) else None,
                             failures=_page.failures_table(details) if len(details) else None,
                             n_failed=int((details["status"] != "ok").sum()) if len(details)
                             else 0, model=_bundle_evaluation(bundle.get("uri")))
    try:
        sink = pa.BufferOutputStream()
        pq.write_table(pa.Table.from_pandas(drift, preserve_index=False), sink)
        storage.write_bytes_atomic(storage.join(tmp, "drift.parquet"),
                                   sink.getvalue().to_pybytes())
        storage.write_bytes_atomic(storage.join(tmp, "index.html"), page.encode("utf-8"))
        _write_json(storage.join(tmp, "alerts.json"), {"run_id": run_id, "date": date, **fired})
        _write_json(storage.join(tmp, AUDIT_MARKER), audit)
        storage.remove(where)  # what an interrupted earlier attempt at this run published
        storage.publish_dir(tmp, where, AUDIT_MARKER)
    except BaseException:
        storage.remove_quietly(tmp, "the unpublished audit products")
        raise
    log.info("audit %s: %d scored, %d alert(s); page %s", run_id, len(current),
             len(fired["fired"]), audit["page"])
    return audit


def _commit(cfg: AuditConfig, rules: tuple, plan: pd.DataFrame, counts: dict[str, int], *,
            recovered: bool) -> dict[str, Any]:
    """Apply a committed run's report to the ledger, then audit it and drop its plan."""
    run_id, date = str(plan["run_id"].iloc[0]), str(plan["date"].iloc[0])
    folder = _ledger.run_uri(cfg.output, date, run_id)
    report = file_rows(read_report(folder, columns=REPORT_COLUMNS))
    ledger = _ledger.apply_report(_ledger.read_ledger(cfg.output), plan, report)
    _ledger.write_ledger(cfg.output, ledger)
    bundle = {"uri": str(plan["bundle_uri"].iloc[0]), "name": str(plan["bundle_name"].iloc[0]),
              "version": str(plan["bundle_version"].iloc[0])}
    audit = finish_run(cfg, rules, run_id=run_id, date=date, current=report,
                       counts=counts, bundle=bundle, run_folder=folder,
                       recovered=recovered)
    _ledger.drop_plan(cfg.output, run_id)
    return audit


def recover(cfg: AuditConfig, rules: tuple) -> list[dict[str, Any]]:
    """Finish or undo what interrupted audits left; returns the audits finished here."""
    finished = []
    for uri in _ledger.open_plans(cfg.output):
        plan, counts = _ledger.read_plan(uri)
        if not len(plan):
            storage.remove(uri)
            continue
        run_id, date = str(plan["run_id"].iloc[0]), str(plan["date"].iloc[0])
        if _ledger.is_committed(_ledger.run_uri(cfg.output, date, run_id)):
            log.warning("run %s was committed but its ledger update did not happen (the "
                        "process was interrupted); applying its report now", run_id)
            finished.append(_commit(cfg, rules, plan, counts, recovered=True))
        else:
            log.warning("run %s was interrupted before its report was committed; its %d "
                        "files will be scored again", run_id, len(plan))
            _ledger.drop_uncommitted(cfg.output, date, run_id)
            storage.remove(uri)
    return finished


def preflight(cfg: AuditConfig) -> list:
    """What can be refused without a cluster, before Ray starts (:mod:`spoofray.preflight`):
    S3 credentials, the rules file, the output root (a writable folder or creatable
    prefix), the bundle (exists and verifies, no model loaded) and the input (exists and
    lists at least one file).

    Returns
    -------
    list of AudioItem
        The listed archive; pass it to :func:`run_audit` (``items=``) to list only once.
    """
    from spoofray import preflight as checks
    from spoofray import sources
    from spoofray.models.bundle import BundleSpec
    from spoofray.models.registry import resolve_bundle

    storage.check_credentials(cfg.input, cfg.output, cfg.bundle, cfg.audio_root, cfg.rules)
    _alerts.load_rules(cfg.rules)
    checks.check_output_root(cfg.output)
    BundleSpec.verify(resolve_bundle(cfg.bundle)[0])
    return sources.resolve_inputs(cfg.input, audio_root=cfg.audio_root)


def run_audit(cfg: AuditConfig, items: list | None = None) -> dict[str, Any]:
    """Run one nightly audit on the current Ray (start one with ``runtime.init_ray``).

    ``items``: the archive as :func:`preflight` listed it (listed here when not given).

    Returns
    -------
    dict
        ``runs`` (the audit record of each run finished by this call: a recovered one
        first, then this night's), ``alerts_fired`` (count over those runs) and
        ``exit_code`` (:data:`~spoofray.audit.alerts.EXIT_ALERTS` when any alert fired,
        else :data:`~spoofray.audit.alerts.EXIT_OK`).

    Raises
    ------
    ConfigError
        Bad rules file, date, policy or bundle (before any scoring).
    SpoofrayError
        A report that does not account for its plan (the ledger is left unchanged).
    """
    from spoofray import sources
    from spoofray.models.registry import bundle_note, resolve_bundle
    from spoofray.pipeline.score import new_run_id

    rules = _alerts.load_rules(cfg.rules)
    date = cfg.date or _dt.datetime.now(_dt.timezone.utc).date().isoformat()
    bundle_uri, bundle_source = resolve_bundle(cfg.bundle)
    bundle_name, bundle_version = _bundle_identity(bundle_uri)
    if bundle_source != "given":
        log.warning("%s", bundle_note(bundle_name, bundle_version, bundle_uri, bundle_source))
    finished = recover(cfg, rules)

    if items is None:
        items = sources.resolve_inputs(cfg.input, audio_root=cfg.audio_root)
    prints = _ledger.fingerprints(items, root=cfg.input)
    selection = _ledger.select_work(
        items, prints, _ledger.read_ledger(cfg.output), bundle_name=bundle_name,
        bundle_version=bundle_version, rescore=cfg.rescore, on_new_bundle=cfg.on_new_bundle,
        retry_errors=cfg.retry_errors, just_finished=[a["run_id"] for a in finished])
    run_id = cfg.run_id or new_run_id()
    log.info("audit %s of %s: %s", run_id, cfg.input, selection.counts)
    bundle = {"uri": bundle_uri, "name": bundle_name, "version": bundle_version}
    if not len(selection.todo) and finished:
        log.info("nothing left to score after finishing the interrupted run(s)")
    elif not len(selection.todo):
        empty = pd.DataFrame({c: pd.Series(dtype=object) for c in REPORT_COLUMNS})
        empty["spoof_score"] = empty["spoof_score"].astype(float)
        finished.append(finish_run(cfg, rules, run_id=run_id, date=date, current=empty,
                                   counts=selection.counts, bundle=bundle, run_folder=None))
    else:
        plan = _ledger.write_plan(cfg.output, selection.todo, run_id=run_id, date=date,
                                  bundle_uri=bundle_uri, bundle_name=bundle_name,
                                  bundle_version=bundle_version, counts=selection.counts)
        _fault_point("after-plan")
        _score_subset(cfg, items=_ledger.plan_items(plan), run_id=run_id, date=date,
                      bundle_uri=bundle_uri)
        _fault_point("after-commit")
        finished.append(_commit(cfg, rules, plan, selection.counts, recovered=False))
    n_fired = sum(len(a["alerts"]["fired"]) for a in finished)
    return {"runs": finished, "alerts_fired": n_fired,
            "exit_code": _alerts.EXIT_ALERTS if n_fired else _alerts.EXIT_OK}


def read_audit_reports(output: str) -> pd.DataFrame:
    """Every committed report row under an audit output root, with a ``date`` column.

    The same as ``duckdb: read_parquet('<output>/date=*/run_id=*/report/*.parquet',
    hive_partitioning=true)``.
    """
    frames = [read_report(r["uri"]).assign(date=r["date"])
              for r in _ledger.committed_runs(output)]
    if not frames:
        raise SpoofrayError(f"no committed audit runs under {output}")
    return pd.concat(frames, ignore_index=True)

"""Scoring reports on disk, their summary and plots, and evaluation against known labels.

No Ray here: a report is Parquet that pandas, pyarrow and DuckDB read as-is. A scoring
run folder (see :mod:`spoofray.pipeline.score`) is::

    <output>/run_id=<id>/report/part-*.parquet   one row per input file (``channel`` None),
                                                 plus one per channel of files scored per channel
    <output>/run_id=<id>/segments/part-*.parquet suspicious spans (:data:`SEGMENT_COLUMNS`)
    <output>/run_id=<id>/windows/part-*.parquet  every window's fused score (:data:`WINDOW_COLUMNS`)
    <output>/run_id=<id>/summary.json
    <output>/run_id=<id>/plots/*.png
    <output>/run_id=<id>/index.html              the run page (:mod:`spoofray.run_page`)
    <output>/run_id=<id>/_SUCCESS                written last

:func:`evaluate_report` joins a report with labels and writes the metric table
(``metrics.parquet``/``metrics.json``) and ROC/DET plots (``roc.png``, ``det.png``).
"""

from __future__ import annotations

import dataclasses
import io
import json
import math
import os
import posixpath
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from spoofray import storage
from spoofray.config import BANDS, Config, Interval, Options, setting
from spoofray.errors import ConfigError, MetricError

REPORT_DIR = "report"
SEGMENTS_DIR = "segments"
#: The segments table: one row per suspicious span (windows scoring at or over the run's
#: segment threshold, merged where they overlap; ``score`` is the span's highest window
#: score). ``channel`` is None for a file scored mixed down.
SEGMENTS_SCHEMA = pa.schema([("uri", pa.string()), ("channel", pa.int64()),
                             ("start_s", pa.float64()), ("end_s", pa.float64()),
                             ("score", pa.float64()), ("n_windows", pa.int64())])
SEGMENT_COLUMNS = tuple(SEGMENTS_SCHEMA.names)
WINDOWS_DIR = "windows"
#: The windows table: one row per scored window, its fused score (``score``, what the file
#: mean and the segment rule are computed from) and span. ``channel`` as in the segments
#: table; a file scored per channel has its channels' windows (its roll-up row has none).
WINDOWS_SCHEMA = pa.schema([("uri", pa.string()), ("channel", pa.int64()),
                            ("window_index", pa.int64()), ("start_s", pa.float64()),
                            ("end_s", pa.float64()), ("score", pa.float64())])
WINDOW_COLUMNS = tuple(WINDOWS_SCHEMA.names)
#: How the scorer's rows carry their windows to the driver (a list per report row, in
#: window order), which moves them into the windows table (:func:`split_windows`).
WINDOWS_FIELD = pa.field("windows", pa.list_(pa.struct([
    ("start_s", pa.float64()), ("end_s", pa.float64()), ("score", pa.float64())])))
SUMMARY_NAME = "summary.json"
PLOTS_DIR = "plots"
SUCCESS_MARKER = "_SUCCESS"
QUANTILES = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)
#: Report columns :func:`summarize_report` and :func:`report_plots` read.
SUMMARY_COLUMNS = ("uri", "channel", "status", "error_type", "spoof_score", "predicted_label",
                   "decision_rule", "n_segments", "duration_s", "size_bytes",
                   "top_window_start_s", "true_label", "band")
#: How many files the "most suspicious" plot and summary list show.
TOP_N = 20
#: Bar colours of files called spoof and of files not called spoof, in every score-bar plot.
FLAGGED_COLOR, UNFLAGGED_COLOR = "tab:red", "tab:gray"
#: Report columns renamed since reports were first written, old name -> current name.
#: Readers rename on read, so old reports stay readable.
RENAMED_COLUMNS = {"label": "predicted_label", "sample_rate": "source_sample_rate"}
#: Report columns added since reports were first written, with what they hold for a report
#: written before: readers fill them in, so old reports stay readable with today's columns.
ADDED_COLUMNS = {"channel": None, "decision_rule": None, "n_segments": None,
                 "segment_threshold": None, "segment_k": None, "band": None,
                 "upper_band_db": None}


# --- reading -------------------------------------------------------------------------------


def report_folder(uri: str) -> str:
    """The ``report/`` folder of a run folder (or ``uri`` itself if it already is one)."""
    base = uri.rstrip("/")
    return base if posixpath.basename(base) == REPORT_DIR else storage.join(base, REPORT_DIR)


def with_current_names(frame: pd.DataFrame) -> pd.DataFrame:
    """A report frame with today's column names (:data:`RENAMED_COLUMNS`): an old report's
    ``label`` (the prediction) becomes ``predicted_label``."""
    old = {o: n for o, n in RENAMED_COLUMNS.items()
           if o in frame.columns and n not in frame.columns}
    return frame.rename(columns=old) if old else frame


def file_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """The report's file rows: one per input file (a file scored per channel also has one
    row per channel, with ``channel`` set; its file row is their roll-up). Counting,
    summaries, evaluation and the accounting check read these."""
    if "channel" not in frame.columns:
        return frame
    return frame[frame["channel"].isna()]


def stored_names(columns: Sequence[str], stored: Sequence[str]) -> list[str]:
    """The column names to read from a report part that holds ``stored``, for today's
    ``columns`` (an old part holds ``label`` where today's hold ``predicted_label``)."""
    back = {n: o for o, n in RENAMED_COLUMNS.items()}
    return [back[c] if c not in stored and back.get(c) in stored else c for c in columns]


def read_report(uri: str, columns: Sequence[str] | None = None) -> pd.DataFrame:
    """A report as a DataFrame: a ``run_id=`` folder, its ``report/`` folder or one Parquet file.

    A run folder without ``_SUCCESS`` is refused: it is incomplete. Old reports' column
    names are brought up to date (:func:`with_current_names`).

    Parameters
    ----------
    columns : sequence of str, optional
        Read only these columns (the audit's ledger and drift need a few, not all ~25).
    """
    cols = list(columns) if columns is not None else None
    if storage.is_file(uri):
        return _read_part(uri, cols)
    folder = report_folder(uri)
    run = folder[: -len(REPORT_DIR)].rstrip("/")
    if not storage.exists(folder):
        raise FileNotFoundError(f"{uri}: no {REPORT_DIR}/ folder; expected a scoring run folder "
                                "<output>/run_id=<id>/ written by jobs/score_archive.py")
    if not posixpath.basename(run).startswith("_tmp") and not storage.exists(
            storage.join(run, SUCCESS_MARKER)):
        raise FileNotFoundError(f"{run} has no {SUCCESS_MARKER}: the run did not finish; "
                                "score the archive again")
    parts = storage.list_dir(folder, suffix=".parquet")
    if not parts:
        raise FileNotFoundError(f"no report parts under {folder}")
    return pd.concat([_read_part(p, cols) for p in parts], ignore_index=True)


def _read_part(uri: str, columns: list[str] | None) -> pd.DataFrame:
    # pyarrow reads through the filesystem handle: only the asked columns' chunks travel.
    # An old part holds ``label`` where today's hold ``predicted_label``: ask for what it has.
    import pyarrow.parquet as pq

    fs, path = storage.filesystem(uri)

    def read() -> pd.DataFrame:
        if columns is None:
            return pd.read_parquet(path, filesystem=fs)
        with fs.open(path, "rb") as fh:
            stored = pq.read_schema(fh).names
        names = stored_names(columns, stored)
        added = [c for c in names if c not in stored and c in ADDED_COLUMNS]
        frame = pd.read_parquet(path, filesystem=fs, columns=[c for c in names if c not in added])
        return frame.assign(**{c: ADDED_COLUMNS[c] for c in added})[names]

    frame = with_current_names(storage.retrying(uri, "reading", read))
    if columns is None:
        missing = {c: v for c, v in ADDED_COLUMNS.items() if c not in frame.columns}
        frame = frame.assign(**missing) if missing else frame
    return frame


def read_segments(uri: str) -> pd.DataFrame:
    """A run's segments table (:data:`SEGMENT_COLUMNS`); empty for a run written before
    segments were (it has no ``segments/`` folder)."""
    return _read_side_table(uri, SEGMENTS_DIR, SEGMENTS_SCHEMA)


def read_windows(uri: str, uris: Sequence[str] | None = None) -> pd.DataFrame:
    """A run's windows table (:data:`WINDOW_COLUMNS`), or only the windows of ``uris``
    (read with a filter: a big run's table holds every window of every file); empty for a
    run written before window scores were kept (it has no ``windows/`` folder)."""
    return _read_side_table(uri, WINDOWS_DIR, WINDOWS_SCHEMA, uris)


def split_windows(scored: pa.Table) -> tuple[pa.Table, pa.Table]:
    """A scored block (the scorer's rows, with a :data:`WINDOWS_FIELD` list per row) →
    (the block without it, its windows table rows, :data:`WINDOWS_SCHEMA`)."""
    if WINDOWS_FIELD.name not in scored.column_names:
        return scored, WINDOWS_SCHEMA.empty_table()
    rows = [{"uri": u, "channel": c, "window_index": i, **w}
            for u, c, ws in zip(scored.column("uri").to_pylist(),
                                scored.column("channel").to_pylist(),
                                scored.column(WINDOWS_FIELD.name).to_pylist())
            for i, w in enumerate(ws or ())]
    return (scored.drop_columns([WINDOWS_FIELD.name]),
            pa.Table.from_pylist(rows, schema=WINDOWS_SCHEMA))


def _read_side_table(uri: str, name: str, schema: pa.Schema,
                     uris: Sequence[str] | None = None) -> pd.DataFrame:
    base = report_folder(uri)
    run = base[: -len(REPORT_DIR)].rstrip("/")
    folder = storage.join(run, name)
    parts = storage.list_dir(folder, suffix=".parquet") if storage.exists(folder) else []
    if not parts or (uris is not None and not len(uris)):
        return schema.empty_table().to_pandas()
    wanted = None if uris is None else [("uri", "in", list(uris))]

    def read(part: str) -> pd.DataFrame:
        fs, path = storage.filesystem(part)
        return pd.read_parquet(path, filesystem=fs, filters=wanted)

    return pd.concat([storage.retrying(p, "reading", lambda p=p: read(p)) for p in parts],
                     ignore_index=True)


# --- summary -----------------------------------------------------------------------------


def describe_file(row: Mapping[str, Any]) -> str:
    """One report row as a sentence: the file's decision, score and most suspicious window,
    or its error (what a one-file run prints)."""
    if row.get("status") != "ok":
        return f"{row['uri']}: not scored: {row.get('error_type')}: {row.get('error_message')}"
    text = (f"{row['uri']}: {row['predicted_label']} (spoof score {row['spoof_score']:.3f}, "
            f"threshold {row['threshold']:.3f}")
    start, end = _num(row.get("top_window_start_s")), _num(row.get("top_window_end_s"))
    if start is not None and end is not None:
        text += f"; most suspicious window {start:.1f}-{end:.1f} s"
    return text + ")"


def _num(x: Any) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else float(x)


def summarize_report(report: pd.DataFrame, *, wall_s: float, input_uri: str, run_id: str,
                     started_at: str, bundle: Mapping[str, Any]) -> dict[str, Any]:
    """The run summary: counts, spoof rate, score quantiles, audio hours, throughput; of
    the report's file rows (:func:`file_rows`)."""
    report = file_rows(report)
    ok = report[report["status"] == "ok"]
    bad = report[report["status"] != "ok"]
    scores = ok["spoof_score"].to_numpy(dtype=np.float64)
    audio_s = float(ok["duration_s"].sum())
    n_spoof = int((ok["predicted_label"] == "spoof").sum())
    top = ok.nlargest(min(TOP_N, len(ok)), "spoof_score")
    return {
        "run_id": run_id, "input": input_uri, "started_at": started_at,
        "bundle": dict(bundle),
        "counts": {
            "files": int(len(report)), "ok": int(len(ok)), "error": int(len(bad)),
            "spoof": n_spoof, "bonafide": int(len(ok) - n_spoof),
            "errors_by_type": {str(k): int(v) for k, v in
                               bad["error_type"].value_counts().items()},
            "spoof_by_rule": ({str(k): int(v) for k, v in
                               ok["decision_rule"].value_counts().items()}
                              if "decision_rule" in ok else {}),
            "segments": int(ok["n_segments"].fillna(0).sum()) if "n_segments" in ok else 0,
            "by_band": ({str(k): int(v) for k, v in ok["band"].value_counts().items()}
                        if "band" in ok else {}),
        },
        "spoof_rate": n_spoof / len(ok) if len(ok) else None,
        "score_quantiles": ({f"p{round(q * 100):02d}": float(np.quantile(scores, q))
                             for q in QUANTILES} if len(scores) else {}),
        "score_mean": float(scores.mean()) if len(scores) else None,
        "audio_hours": audio_s / 3600.0,
        "input_bytes": int(report["size_bytes"].fillna(0).sum()),
        "wall_s": wall_s,
        "throughput": {
            "files_per_s": len(report) / wall_s if wall_s > 0 else None,
            "audio_s_per_wall_s": audio_s / wall_s if wall_s > 0 else None,
        },
        "most_suspicious": [{"uri": r.uri, "spoof_score": float(r.spoof_score),
                             "top_window_start_s": _num(r.top_window_start_s)}
                            for r in top.itertuples()],
    }


def _count(n: int) -> str:
    return f"{n:,} file" if n == 1 else f"{n:,} files"


def top_folders(uris: Sequence[str], input_uri: str | None = None) -> list[str]:
    """The first folder of each URI below the common root ("." for files at the root)."""
    if not len(uris):
        return []
    root = os.path.commonpath(list(uris)) if len(uris) > 1 else posixpath.dirname(uris[0])
    if "://" in root:  # commonpath folds "s3://" into "s3:/"
        root = root.replace(":/", "://", 1)
    if any(u == root for u in uris):
        root = posixpath.dirname(root)
    out = []
    for u in uris:
        rel = u[len(root):].lstrip("/")
        out.append(rel.split("/", 1)[0] if "/" in rel else ".")
    return out


def short_names(uris: Sequence[str]) -> list[str]:
    """The shortest path suffix that tells each URI apart from the others: the file name,
    with as many parent folders as it takes (``2024-01-02/call.wav`` and
    ``2024-01-03/call.wav`` where a bare ``call.wav`` would merge their bars)."""
    split = [u.rstrip("/").split("/") for u in uris]
    depth = [1] * len(split)
    while True:
        names = ["/".join(parts[-d:]) for parts, d in zip(split, depth)]
        seen: dict[str, list[int]] = {}
        for i, name in enumerate(names):
            seen.setdefault(name, []).append(i)
        clashes = [i for group in seen.values() if len(group) > 1 for i in group
                   if depth[i] < len(split[i])]
        if not clashes:
            return names
        for i in clashes:
            depth[i] += 1


def _label(name: str, width: int = 48) -> str:
    """A plot label of at most ``width`` characters, cut at the front (the end of a path
    tells files apart)."""
    return name if len(name) <= width else "…" + name[-(width - 1):]


def _integer_axis(axis: Any) -> None:
    """Counts on ``axis`` (whole files): no 2.5 ticks."""
    from matplotlib.ticker import MaxNLocator

    axis.set_major_locator(MaxNLocator(integer=True))


def _note(ax: Any, text: str) -> None:
    """Say on an empty (or degenerate) plot why it is so."""
    import textwrap

    ax.text(0.5, 0.5, textwrap.fill(text, 38), transform=ax.transAxes, ha="center",
            va="center",
            fontsize=10, color="0.25", bbox={"facecolor": "white", "edgecolor": "0.7"})


def _figure_png(fig: Any) -> bytes:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # workers and CI have no display
    import matplotlib.pyplot as plt

    return plt


def report_plots(report: pd.DataFrame, *, threshold: float, input_uri: str | None = None
                 ) -> dict[str, bytes]:
    """PNG plots of a report: ``score_histogram.png``, ``spoof_rate_by_folder.png``,
    ``most_suspicious.png``."""
    plt = _pyplot()
    report = file_rows(report)
    ok = report[report["status"] == "ok"]
    out: dict[str, bytes] = {}

    fig, ax = plt.subplots(figsize=(7, 4))
    bins = np.linspace(0.0, 1.0, 41)
    known = ok["true_label"].isin(["bonafide", "spoof"]) if "true_label" in ok else None
    if known is not None and known.any():
        for lab, color in (("bonafide", "tab:green"), ("spoof", "tab:red")):
            ax.hist(ok.loc[ok["true_label"] == lab, "spoof_score"], bins=bins, alpha=0.6,
                    color=color, label=f"known {lab}")
        if (~known).any():
            ax.hist(ok.loc[~known, "spoof_score"], bins=bins, alpha=0.5, color="tab:gray",
                    label="unlabelled")
    else:
        ax.hist(ok["spoof_score"], bins=bins, color="tab:blue", label="files")
    ax.axvline(threshold, color="k", linestyle="--", label="threshold")
    ax.legend()
    ax.set(xlabel="spoof score (file mean)", ylabel="files",
           title=f"Spoof scores of {_count(len(ok))} (threshold {threshold:.3f})")
    _integer_axis(ax.yaxis)
    if not len(ok):
        _note(ax, "no file was scored (every file is an error row; see the report)")
    out["score_histogram.png"] = _figure_png(fig)

    fig, ax = plt.subplots(figsize=(7, 4))
    if len(ok):
        folders = pd.Series(top_folders(ok["uri"].tolist(), input_uri), index=ok.index)
        rate = (ok["predicted_label"] == "spoof").groupby(folders).mean().sort_values(ascending=False)
        rate = rate.head(30)
        ax.barh([_label(str(f)) for f in rate.index[::-1]], rate.to_numpy()[::-1],
                color="tab:red")
    else:
        _note(ax, "no file was scored")
    ax.set(xlabel="fraction called spoof", xlim=(0, 1), title="Spoof rate per top-level folder")
    out["spoof_rate_by_folder.png"] = _figure_png(fig)

    top = ok.nlargest(min(TOP_N, len(ok)), "spoof_score")
    fig, ax = plt.subplots(figsize=(8, max(3.0, 0.3 * len(top) + 1)))
    # Positions, not names, on the axis: barh merges bars that share a label.
    names = [_label(n) for n in short_names(top["uri"].tolist())]
    flagged = (top["predicted_label"] == "spoof").to_numpy()
    y = np.arange(len(top))[::-1]
    scores = top["spoof_score"].to_numpy()
    # Flagged apart from not flagged: a file under the threshold may be flagged by the
    # segment rule, and one over it is flagged by its mean.
    for hit, color, what in ((True, FLAGGED_COLOR, "flagged spoof"),
                             (False, UNFLAGGED_COLOR, "not flagged")):
        if (flagged == hit).any():
            ax.barh(y[flagged == hit], scores[flagged == hit], color=color, label=what)
    ax.set_yticks(y, names, fontsize=8)
    ax.axvline(threshold, color="k", linestyle="--", label=f"threshold {threshold:.3f}")
    if len(top):
        ax.legend(fontsize=8, loc="lower right")
    ax.set(xlabel="spoof score", xlim=(0, 1),
           title=f"{len(top)} most suspicious {'file' if len(top) == 1 else 'files'}")
    if not len(top):
        _note(ax, "no file was scored")
    out["most_suspicious.png"] = _figure_png(fig)
    return out


# --- evaluation -----------------------------------------------------------------------------

METRIC_COLUMNS = ("scope", "attack", "n_bonafide", "n_spoof", "eer", "eer_threshold", "auc",
                  "min_tdcf", "threshold", "accuracy", "precision", "recall", "f1", "false_alarm_rate",
                  "tn", "fp", "fn", "tp")


@dataclasses.dataclass(frozen=True)
class EvaluateConfig(Config):
    """What :func:`evaluate_report` joins and where it writes."""

    _constraints = {"threshold": [None, Interval(float, 0, 1)], "band": [None, Options(BANDS)]}

    report: str = setting("", "run folder <output>/run_id=<id>/, its report/ folder or a "
                          "Parquet file (local or s3://)", path=True)
    output: str = setting("", "folder for metrics and plots (local or s3://)", path=True)
    labels: str | None = setting(None, "manifest, ASVspoof protocol or labelled folder",
                                 default_help="the labels the scored listing carried",
                                 path=True)
    audio_root: str | None = setting(None, "audio folder of an ASVspoof protocol",
                                     default_help="the protocol's folder", path=True)
    threshold: float | None = setting(None, "operating point of accuracy/precision/recall/F1",
                                      default_help="the report's")
    band: str | None = setting(None, "evaluate only the rows this band judged (wide or narrow), "
                               "at that band's threshold", default_help="every row")
    asv_scores: str | None = setting(
        None, "ASV score file ('[speaker] [utt] key score', key target/nontarget/spoof): adds "
        "min t-DCF (ASVspoof 2019 cost model) to the overall row",
        default_help="no t-DCF", path=True)

    def _check(self) -> None:
        if not self.report or not self.output:
            raise ConfigError("EvaluateConfig needs both report and output")


def join_labels(report: pd.DataFrame, labels: str | None = None, *,
                audio_root: str | None = None) -> pd.DataFrame:
    """The report with ``true_label``/``true_attack`` from ``labels`` (or as carried)."""
    out = report.copy()
    if labels is None:
        if "true_label" not in out:
            raise ConfigError("the report carries no true_label column; give --labels")
        return out
    from spoofray import sources

    items = sources.resolve_inputs(labels, audio_root=audio_root)
    table = pd.DataFrame([{"uri": it.uri, "true_label": it.label, "true_attack": it.attack}
                          for it in items])
    matched = out["uri"].isin(table["uri"])
    if not matched.any():
        ours = ", ".join(out["uri"].head(3).astype(str))
        theirs = ", ".join(table["uri"].head(3).astype(str))
        raise ConfigError(
            f"no report URI matched the labels: the report has {_count(len(out))} (e.g. "
            f"{ours}), {labels} lists {_count(len(table))} (e.g. {theirs}); labels are "
            "joined on the exact URI the file was scored under: list the files with the "
            "same paths (or give --labels the input that was scored)")
    out = out.drop(columns=[c for c in ("true_label", "true_attack") if c in out])
    out = out.merge(table, on="uri", how="left")
    out.attrs["labels_matched"] = int(matched.sum())
    out.attrs["labels_listed"] = int(len(table))
    return out


def _row(scope: str, attack: str | None, m: Mapping[str, Any]) -> dict[str, Any]:
    row = {"scope": scope, "attack": attack}
    row.update({k: m[k] for k in METRIC_COLUMNS if k in m})
    row.update(m["confusion"])
    return row


def metric_table(joined: pd.DataFrame, threshold: float,
                 asv_scores: Mapping[str, Sequence[float]] | None = None) -> pd.DataFrame:
    """The metric table: one ``overall`` row and one ``attack`` row per known attack; with
    ``asv_scores`` (:func:`spoofray.interchange.read_asv_scores`) the overall row has
    ``min_tdcf``.

    Attack rows score that attack's spoofs against every bona fide file. Error rows and
    unlabelled files are left out (counted by :func:`evaluate_report`).
    """
    from spoofray import metrics

    usable = joined[(joined["status"] == "ok") & joined["true_label"].isin(["bonafide", "spoof"])]
    labels = (usable["true_label"] == "spoof").to_numpy()
    scores = usable["spoof_score"].to_numpy(dtype=np.float64)
    if labels.size == 0:
        raise MetricError("evaluation needs scored, labelled files; none of the report's "
                          "ok rows has a bonafide/spoof label")
    if labels.all() or not labels.any():
        # One class (a folder of known-real calls, say): only its rate at the threshold.
        c = metrics.confusion_matrix(labels, scores, threshold)
        one = {"n_bonafide": int((~labels).sum()), "n_spoof": int(labels.sum()),
               "threshold": threshold, "confusion": c}
        if labels.any():
            one["recall"] = metrics.recall(labels, scores, threshold)
        else:
            one["false_alarm_rate"] = metrics.false_alarm_rate(labels, scores, threshold)
        return pd.DataFrame([_row("overall", None, one)]).reindex(columns=list(METRIC_COLUMNS))
    rows = [_row("overall", None, metrics.evaluate(labels, scores, threshold=threshold,
                                                   asv_scores=asv_scores))]
    attacks = usable["true_attack"].fillna("").astype(str).to_numpy()
    for attack in sorted(set(attacks[labels]) - {""}):
        keep = ~labels | (attacks == attack)
        rows.append(_row("attack", attack, metrics.evaluate(labels[keep], scores[keep],
                                                            threshold=threshold)))
    table = pd.DataFrame(rows)
    return table[[c for c in METRIC_COLUMNS if c in table]]


def evaluation_plots(joined: pd.DataFrame) -> dict[str, bytes]:
    """``roc.png`` and ``det.png`` (overall and per attack)."""
    from statistics import NormalDist

    from spoofray import metrics

    probit = np.vectorize(NormalDist().inv_cdf)  # DET axes are normal deviates

    plt = _pyplot()
    usable = joined[(joined["status"] == "ok") & joined["true_label"].isin(["bonafide", "spoof"])]
    labels = (usable["true_label"] == "spoof").to_numpy()
    scores = usable["spoof_score"].to_numpy(dtype=np.float64)
    attacks = usable["true_attack"].fillna("").astype(str).to_numpy()
    curves = [("overall", np.ones(len(labels), bool))]
    curves += [(a, ~labels | (attacks == a)) for a in sorted(set(attacks[labels]) - {""})][:8]
    fig_roc, ax_roc = plt.subplots(figsize=(5.5, 5))
    fig_det, ax_det = plt.subplots(figsize=(5.5, 5))
    lo, hi = 5e-4, 0.995
    clip = lambda p: np.clip(p, lo, hi)  # noqa: E731 - the probit of 0 or 1 is infinite
    separated = []
    for name, keep in curves:
        frr, far, _ = metrics.compute_det_curve(labels[keep], scores[keep])
        eer, _ = metrics.compute_eer(labels[keep], scores[keep])
        if eer == 0:
            separated.append(name)
        ax_roc.plot(frr, 1 - far, label=f"{name} (AUC {metrics.roc_auc(labels[keep], scores[keep]):.3f})",
                    lw=2 if name == "overall" else 1)
        ax_det.plot(probit(clip(frr)), probit(clip(far)), label=f"{name} (EER {eer:.3f})",
                    lw=2 if name == "overall" else 1)
    ax_roc.plot([0, 1], [0, 1], "k:", lw=0.8)
    ax_roc.set(xlabel="false alarm rate (bona fide called spoof)",
               ylabel="detection rate (spoof called spoof)", title="ROC")
    ax_roc.legend(fontsize=7)
    ticks = np.array([0.001, 0.01, 0.05, 0.2, 0.5, 0.8, 0.95])
    ax_det.set_xticks(probit(ticks), [f"{t:g}" for t in ticks])
    ax_det.set_yticks(probit(ticks), [f"{t:g}" for t in ticks])
    ax_det.set(xlabel="false alarm rate", ylabel="miss rate (spoof called bona fide)",
               title="DET", xlim=probit([lo, hi]), ylim=probit([lo, hi]))
    ax_det.legend(fontsize=7)
    if separated:
        # Miss and false-alarm rates are never both above 0 then: the curve lies on the
        # axes' edges, outside what a probit scale can show.
        _note(ax_det, f"EER 0 ({', '.join(separated)}): every spoof scores above every "
              "bona fide file, so there is no trade-off curve to draw")
    return {"roc.png": _figure_png(fig_roc), "det.png": _figure_png(fig_det)}


def evaluate_report(cfg: EvaluateConfig) -> dict[str, Any]:
    """Join a report with labels, write the metric table and plots into ``cfg.output``.

    Returns
    -------
    dict
        What ``metrics.json`` holds: ``counts``, ``threshold`` and ``metrics`` (the rows).
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    report = file_rows(read_report(cfg.report))
    joined = join_labels(report, cfg.labels, audio_root=cfg.audio_root)
    if cfg.band is not None:
        joined = joined[joined["band"] == cfg.band]
        if joined.empty:
            raise MetricError(f"{cfg.report}: no row was judged as {cfg.band}band audio; "
                              "evaluate another band or every row (no --band)")
    if cfg.threshold is not None:
        threshold = float(cfg.threshold)
    else:
        known = joined["threshold"].dropna().unique()
        if len(known) != 1:
            by_band = (joined.dropna(subset=["threshold"]).groupby("band")["threshold"]
                       .first().to_dict())
            raise ConfigError(
                f"the report holds {len(known)} distinct thresholds"
                + (f" (one per band: {by_band})" if by_band else "")
                + "; pass --band to evaluate one band at its own threshold, or --threshold")
        threshold = float(known[0])
    asv = None
    if cfg.asv_scores:
        from spoofray import interchange

        asv = interchange.read_asv_scores(cfg.asv_scores)
    table = metric_table(joined, threshold, asv)
    labelled = joined["true_label"].isin(["bonafide", "spoof"])
    counts = {"files": int(len(joined)), "labelled": int(labelled.sum()),
              "unlabelled": int((~labelled).sum()),
              # every error row is left out, labelled or not
              "error_rows_left_out": int((joined["status"] != "ok").sum())}
    if "labels_matched" in joined.attrs:
        counts.update(matched_labels=joined.attrs["labels_matched"],
                      labels_listed=joined.attrs["labels_listed"])
    result = {"report": cfg.report, "labels": cfg.labels or "carried by the report",
              "band": cfg.band,
              "asv_scores": cfg.asv_scores,
              "threshold": threshold, "counts": counts,
              "metrics": json.loads(table.to_json(orient="records"))}
    sink = pa.BufferOutputStream()
    pq.write_table(pa.Table.from_pandas(table, preserve_index=False), sink)
    storage.write_bytes_atomic(storage.join(cfg.output, "metrics.parquet"),
                               sink.getvalue().to_pybytes())
    storage.write_bytes_atomic(storage.join(cfg.output, "metrics.json"),
                               json.dumps(result, indent=2).encode())
    if table["n_bonafide"].iloc[0] and table["n_spoof"].iloc[0]:  # curves need both classes
        for name, png in evaluation_plots(joined).items():
            storage.write_bytes_atomic(storage.join(cfg.output, name), png)
    return result


# --- export ---------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ExportConfig(Config):
    """What :func:`export_scores` reads and writes."""

    report: str = setting("", "run folder <output>/run_id=<id>/ (local or s3://)", path=True)
    output: str = setting("", "ASVspoof-style score file to write, one line per file, higher "
                          "= bona fide (local or s3://)", path=True)
    supervisions: str | None = setting(
        None, "also write the suspicious segments as a lhotse SupervisionSet (.jsonl or "
        ".jsonl.gz)", default_help="not written", path=True)
    recordings: str | None = setting(
        None, "the lhotse RecordingSet that was scored: its recording ids name the lines",
        default_help="file names without extension", path=True)

    def _check(self) -> None:
        if not self.report or not self.output:
            raise ConfigError("ExportConfig needs both report and output")


def export_scores(cfg: ExportConfig) -> dict[str, Any]:
    """Write a run's file rows as an ASVspoof countermeasure score file
    (:func:`spoofray.interchange.cm_score_lines`) and, when asked, its segments as lhotse
    supervisions. Error rows have no score and are left out (counted)."""
    from spoofray import interchange, sources

    report = file_rows(read_report(cfg.report))
    ok = report[report["status"] == "ok"].sort_values("uri")
    named = ({it.uri: it.group for it in sources.read_lhotse(cfg.recordings)}
             if cfg.recordings else None)
    ids = interchange.utterance_ids(report["uri"].tolist(), named)
    id_of = dict(zip(report["uri"], ids))
    labels = ok["true_label"].tolist() if "true_label" in ok else None
    attacks = ok["true_attack"].tolist() if "true_attack" in ok else None
    lines = interchange.cm_score_lines([id_of[u] for u in ok["uri"]], ok["spoof_score"].tolist(),
                                       labels, attacks)
    storage.write_bytes_atomic(cfg.output, "".join(f"{x}\n" for x in lines).encode())
    result = {"output": cfg.output, "lines": len(lines), "error_rows_left_out": int(
        (report["status"] != "ok").sum()), "layout": "utt attack key score"
              if lines and len(lines[0].split()) == 4 else "utt score"}
    if cfg.supervisions:
        sups = interchange.segments_as_supervisions(
            read_segments(cfg.report).to_dict("records"), id_of)
        interchange.write_jsonl(cfg.supervisions, sups)
        result.update(supervisions=cfg.supervisions, segments=len(sups))
    return result

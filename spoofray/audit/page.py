"""A run's audit page (one static HTML file, readable offline) and its spoken summary.

The page embeds every plot as a base64 PNG and every table as HTML, so it can be mailed,
archived or opened from S3 without any server or network. The spoken summary is a WAV made
with ``espeak-ng`` (when installed) for listeners who cannot read the page.
"""

from __future__ import annotations

import base64
import html
import logging
import math
import os
import shutil
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from spoofray.audit.drift import OVERALL
from spoofray.reports import with_current_names
from spoofray.run_page import MODEL_HEADLINE, model_headline  # noqa: F401  (both pages)

log = logging.getLogger(__name__)


# --- plots ------------------------------------------------------------------------------------


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # schedulers and CI have no display
    import matplotlib.pyplot as plt

    return plt


def _png(fig: Any) -> bytes:
    import io

    plt = _pyplot()
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return buf.getvalue()


def audit_plots(current: pd.DataFrame, reference: pd.DataFrame, drift: pd.DataFrame,
                trend: pd.DataFrame, *, threshold: float | None) -> dict[str, bytes]:
    """PNG plots: score distributions now vs before, spoof rate per folder now vs before,
    PSI per folder, and spoof/error rate over the recent runs."""
    plt = _pyplot()
    out: dict[str, bytes] = {}
    bins = np.linspace(0.0, 1.0, 21)
    cur = current.loc[current["status"] == "ok", "spoof_score"].to_numpy(np.float64)
    ref = reference.loc[reference["status"] == "ok", "spoof_score"].to_numpy(np.float64)

    fig, ax = plt.subplots(figsize=(7, 3.8))
    if len(ref):
        ax.hist(ref, bins=bins, density=True, alpha=0.5, color="tab:gray",
                label=f"earlier runs ({len(ref)} files)")
    if len(cur):
        ax.hist(cur, bins=bins, density=True, alpha=0.6, color="tab:blue",
                label=f"this run ({len(cur)} files)")
    if threshold is not None:
        ax.axvline(threshold, color="k", linestyle="--", label=f"threshold {threshold:.3f}")
    ax.set(xlabel="spoof score (file mean)", ylabel="density", xlim=(0, 1),
           title="Score distribution: this run vs earlier runs")
    ax.legend(fontsize=8)
    out["score_distribution.png"] = _png(fig)

    folders = drift[drift["group"] != OVERALL]
    fig, ax = plt.subplots(figsize=(7, max(2.5, 0.45 * len(folders) + 1.2)))
    y = np.arange(len(folders))
    ax.barh(y - 0.2, folders["spoof_rate_reference"].fillna(0), height=0.4, color="tab:gray",
            label="earlier runs")
    ax.barh(y + 0.2, folders["spoof_rate"].fillna(0), height=0.4, color="tab:red",
            label="this run")
    ax.set_yticks(y, folders["group"].tolist())
    ax.set(xlim=(0, 1), xlabel="fraction called spoof", title="Spoof rate per top-level folder")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    out["spoof_rate_by_folder.png"] = _png(fig)

    fig, ax = plt.subplots(figsize=(7, max(2.5, 0.45 * len(drift) + 1.2)))
    psi = drift["psi"].to_numpy(np.float64)
    ax.barh(np.arange(len(drift)), np.nan_to_num(psi), color=[
        "tab:red" if v > 0.25 else "tab:orange" if v > 0.1 else "tab:green" for v in
        np.nan_to_num(psi)])
    ax.set_yticks(np.arange(len(drift)), drift["group"].tolist())
    for x in (0.1, 0.25):
        ax.axvline(x, color="k", linestyle=":", lw=0.8)
    ax.set(xlabel="population stability index (missing: too few files)",
           title="Score drift vs earlier runs")
    out["psi_by_folder.png"] = _png(fig)

    fig, ax = plt.subplots(figsize=(7, 3.2))
    x = np.arange(len(trend))
    ax.plot(x, trend["spoof_rate"], "o-", color="tab:red", label="spoof rate")
    ax.plot(x, trend["error_rate"], "s--", color="tab:gray", label="error rate")
    labels = [f"{d}\n{str(r)[-6:]}" for d, r in zip(trend.get("date", trend["run_id"]),
                                                      trend["run_id"])]
    ax.set_xticks(x, labels, fontsize=7)
    ax.set(ylim=(0, 1), ylabel="fraction", title="Recent runs (last = this run)")
    ax.legend(fontsize=8)
    out["trend.png"] = _png(fig)
    return out


# --- page ---------------------------------------------------------------------------------------

_STYLE = """
body{font-family:system-ui,sans-serif;max-width:1100px;margin:1.5em auto;padding:0 1em;
color:#111}
h1{font-size:1.5em}h2{font-size:1.2em;margin-top:1.6em}
table{border-collapse:collapse;margin:.5em 0;font-size:.85em;max-width:100%}
th,td{border:1px solid #bbb;padding:.25em .5em;text-align:left;vertical-align:top;
overflow-wrap:anywhere}th{background:#eee}
.fit{max-width:100%;overflow-x:auto}
td.path{max-width:36em}
.alert{background:#fde2e2;border-left:.4em solid #c00;padding:.5em 1em;margin:.3em 0}
.ok{background:#e4f6e4;border-left:.4em solid #2a2;padding:.5em 1em}
img{max-width:100%;display:block;margin:.5em 0}
"""


#: Longest cell text on the page; longer messages and paths are cut in the middle.
MAX_CELL = 160
#: How many failing files the page names.
MAX_FAILURES = 20


def _cut(value: Any, limit: int = MAX_CELL) -> Any:
    if isinstance(value, str) and len(value) > limit:
        half = (limit - 1) // 2
        return value[:half] + "…" + value[-half:]
    return value


def _table(df: pd.DataFrame) -> str:
    """An escaped HTML table that fits the page: headers with spaces (so they wrap), long
    cells cut, and a horizontal scroll box as the last resort."""
    shown = df.rename(columns={c: str(c).replace("_", " ") for c in df.columns})
    for column in shown.columns:
        if not pd.api.types.is_numeric_dtype(shown[column]):
            shown[column] = shown[column].map(_cut)
    body = shown.to_html(index=False, escape=True, na_rep="–", border=0,
                         float_format=lambda v: f"{v:.4g}")
    return f"<div class='fit'>{body}</div>"


def _facts(facts: Mapping[str, Any]) -> str:
    rows = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>"
                   for k, v in facts.items())
    return f"<table>{rows}</table>"


def _img(name: str, png: bytes) -> str:
    alt = html.escape(name.rsplit(".", 1)[0].replace("_", " "))
    data = base64.b64encode(png).decode("ascii")
    return f'<img alt="{alt}" src="data:image/png;base64,{data}">'


def failures_table(current: pd.DataFrame, n: int = MAX_FAILURES) -> pd.DataFrame:
    """The first ``n`` files of a run that could not be scored: ``uri``, ``error_type`` and
    (when read) ``error_message``."""
    bad = current[current["status"] != "ok"]
    cols = [c for c in ("uri", "error_type", "error_message") if c in bad]
    return bad.sort_values("uri")[cols].head(n)


def render_page(audit: Mapping[str, Any], drift: pd.DataFrame, plots: Mapping[str, bytes],
                report_plots: Mapping[str, bytes] | None = None,
                suspicious: pd.DataFrame | None = None, failures: pd.DataFrame | None = None,
                n_failed: int | None = None, model: Mapping[str, Any] | None = None) -> str:
    """The run's page: facts, alerts, failing files, drift table, plots, the model's
    quality; no external resources.

    Parameters
    ----------
    failures : DataFrame, optional
        :func:`failures_table`; ``n_failed`` says how many failed in all.
    model : mapping, optional
        The bundle's ``evaluation`` record (``bundle.json["evaluation"]``).
    """
    counts = audit["counts"]
    alerts = audit["alerts"]
    title = f"spoofray nightly audit {audit['date']} (run {audit['run_id']})"
    parts = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
             f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>",
             f"<h1>{html.escape(title)}</h1>"]
    if alerts["fired"]:
        parts.append(f"<h2>Alerts ({len(alerts['fired'])})</h2>")
        parts += [f"<div class='alert' role='alert'><b>{html.escape(a['severity'])}</b>: "
                  f"{html.escape(a['message'])}</div>" for a in alerts["fired"]]
    else:
        parts.append(f"<div class='ok'>No alert fired ({alerts['n_rules']} rules).</div>")
    if failures is not None and len(failures):
        total = max(n_failed or 0, len(failures))
        shown = (f"all {total}" if total == len(failures)
                 else f"the first {len(failures)} of {total}, by URI")
        parts.append(f"<h2>Files that could not be scored ({shown})</h2>"
                     "<p>They are error rows of the report (<code>status = 'error'</code>); "
                     "the next night retries them unless <code>--no-retry-errors</code>.</p>")
        parts.append(_table(failures))
    parts.append("<h2>This run</h2>")
    parts.append(_facts({
        "archive": audit["input"], "report": audit["run_uri"] or "(nothing scored)",
        "bundle": f"{audit['bundle']['name']} {audit['bundle']['version']}",
        "files listed": counts["listed"], "scored": audit["n_scored"],
        **{f"scored because {k.replace('_', ' ')}": counts[k] for k in
           ("new", "changed", "error_retry", "new_bundle", "rescore") if counts.get(k)},
        "unchanged (skipped)": counts["unchanged"], "gone since last seen": counts["gone"],
        "recovered from an interrupted run": "yes" if audit.get("recovered") else "no",
        "reference runs": ", ".join(audit["reference_runs"]) or "none (first run)"}))
    parts.append("<h2>Drift and rates per folder</h2>"
                 "<p>PSI: population stability index of the score distribution against the "
                 "reference runs (&lt;0.1 stable, 0.1–0.25 moderate, &gt;0.25 major). KS: "
                 "two-sample Kolmogorov–Smirnov statistic.</p>")
    parts.append(_table(drift))
    for name, png in plots.items():
        parts.append(_img(name, png))
    if suspicious is not None and len(suspicious):
        parts.append("<h2>Most suspicious files of this run</h2>"
                     "<p>Window: the span of the recording that scored highest; listen "
                     "there first.</p>")
        parts.append(_table(suspicious))
    headline = model_headline(model)
    parts.append("<h2>The model</h2>")
    if headline:
        parts.append("<p>How well this bundle did when it was evaluated (its model card); "
                     "read these rates before acting on a spoof rate.</p>")
        parts.append(_facts({"bundle": f"{audit['bundle']['name']} "
                                       f"{audit['bundle']['version']}", **headline}))
    else:
        parts.append("<p>This bundle records no evaluation (<code>bundle.json</code> has no "
                     "<code>evaluation</code>): its error rates are unknown here.</p>")
    for name, png in (report_plots or {}).items():
        parts.append(_img(f"report {name}", png))
    if alerts["skipped"]:
        parts.append("<h2>Rules not evaluated</h2>")
        parts.append(_table(pd.DataFrame(alerts["skipped"])))
    parts.append("</body></html>")
    return "\n".join(parts)


# --- spoken summary ----------------------------------------------------------------------------


def _pct(x: Any) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "not available"
    return f"{100 * float(x):.0f} percent"


def summary_text(audit: Mapping[str, Any], drift: pd.DataFrame) -> str:
    """A few plain sentences for text-to-speech (no tables, no symbols)."""
    counts = audit["counts"]
    overall = drift[drift["group"] == OVERALL]
    row = overall.iloc[0] if len(overall) else None
    why = [f"{counts[k]} {label}" for k, label in
           (("new", "new"), ("changed", "changed"), ("error_retry", "retried after errors"),
            ("new_bundle", "rescored for the new model"), ("rescore", "rescored on request"))
           if counts.get(k)]
    text = [f"Spoof ray nightly audit for {audit['date']}.",
            f"{counts['listed']} files listed. {audit['n_scored']} scored"
            + (f": {', '.join(why)}." if why else ".")]
    if row is not None and audit["n_scored"]:
        text.append(f"Spoof rate {_pct(row['spoof_rate'])}, earlier runs "
                    f"{_pct(row['spoof_rate_reference'])}. Error rate {_pct(row['error_rate'])}.")
        if not math.isnan(row["psi"]):
            text.append(f"Population stability index {row['psi']:.2f}.")
    fired = audit["alerts"]["fired"]
    if fired:
        text.append(f"{len(fired)} alert{'s' if len(fired) > 1 else ''} fired.")
        text += [f"{a['severity']}: {a['message']}." for a in fired[:5]]
    else:
        text.append("No alert fired.")
    return " ".join(text).replace("_", " ")


def speak(text: str, *, binary: str = "espeak-ng", timeout_s: float = 120.0
          ) -> tuple[bytes | None, str | None]:
    """Synthesize ``text`` to WAV bytes with espeak-ng.

    Returns
    -------
    (bytes or None, str or None)
        The WAV and None, or None and why no WAV was made (not installed, failed). Never
        raises: the spoken summary is optional.
    """
    exe = shutil.which(binary)
    if exe is None:
        return None, (f"spoken summary skipped: {binary} is not installed (Debian/Ubuntu: "
                      "apt-get install espeak-ng); the HTML page has the same content")
    with tempfile.TemporaryDirectory(prefix="spoofray-speak-") as tmp:
        wav = os.path.join(tmp, "summary.wav")
        try:
            proc = subprocess.run([exe, "-w", wav, "--stdin"], input=text.encode("utf-8"),
                                  capture_output=True, timeout=timeout_s)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return None, f"spoken summary skipped: {binary} failed to run: {exc}"
        if proc.returncode != 0 or not os.path.exists(wav):
            err = proc.stderr.decode("utf-8", "replace").strip()[:300]
            return None, f"spoken summary skipped: {binary} exited {proc.returncode}: {err}"
        with open(wav, "rb") as fh:
            return fh.read(), None


def _span(start: Any, end: Any) -> str | None:
    if start is None or end is None or pd.isna(start) or pd.isna(end):
        return None
    return f"{_clock(start)}–{_clock(end)}"


def _clock(seconds: float) -> str:
    seconds = float(seconds)
    if seconds < 60:
        return f"{seconds:.1f} s"
    return f"{int(seconds // 60)}:{seconds % 60:04.1f}"


def suspicious_table(current: pd.DataFrame, n: int = 20) -> pd.DataFrame:
    """The ``n`` highest-scoring files of a run (``uri``, ``spoof_score``,
    ``predicted_label`` and, when the report was read with them, the most suspicious
    window's span; an old report's ``label`` is read as it)."""
    current = with_current_names(current)
    ok = current[current["status"] == "ok"]
    top = ok.nlargest(min(n, len(ok)), "spoof_score")
    out = top[["uri", "spoof_score", "predicted_label"]].copy()
    if "top_window_start_s" in top and "top_window_end_s" in top:
        out["window"] = [_span(a, b) for a, b in zip(top["top_window_start_s"],
                                                     top["top_window_end_s"])]
    if "max_window_score" in top:
        out["window_score"] = top["max_window_score"]
    return out


def report_plot_names() -> Sequence[str]:
    return ("score_histogram.png", "most_suspicious.png")

"""A scoring run's page, ``<run>/index.html``: what an analyst opens first.

One self-contained HTML file (no script, style sheet or font from elsewhere, no network;
plots inlined as ``data:`` PNGs; a few lines of inline script sort the table), written
with the report by :func:`spoofray.pipeline.score.score_archive`:

* the run: its input, counts, the bundle and its threshold and segment rule;
* the model card's headline (:func:`model_headline`, from ``bundle.json["evaluation"]``):
  what the rates of this run can be trusted to mean;
* a sortable table of the flagged files and the most suspicious others;
* for each of the top ``page_files`` files, the timeline of its window scores (per channel
  for a call scored per channel) with the file threshold, the segment threshold and its
  suspicious spans (:func:`spoofray.timeline.timeline_png`), and the log spectrogram of its
  most suspicious window; its audio only when asked (``page_audio``: the page is often
  mailed around, a recording should not be by default).

No Ray here; the files shown are read again (:mod:`spoofray.reader`) for their
spectrograms, only the top ``page_files`` of them.
"""

from __future__ import annotations

import base64
import html
import io
import logging
import math
import posixpath
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from spoofray import reports, storage, timeline
from spoofray.config import FeatureConfig
from spoofray.errors import InputFileError

log = logging.getLogger(__name__)

PAGE_NAME = "index.html"
#: Most rows the page's table lists (flagged files first, by score); the report has all.
MAX_TABLE_ROWS = 500
#: The report columns the page reads (not the member scores, ...).
PAGE_COLUMNS = ("uri", "channel", "status", "predicted_label", "decision_rule", "spoof_score",
                "max_window_score", "top_window_start_s", "top_window_end_s", "n_segments",
                "duration_s", "channels", "true_label", "threshold", "segment_threshold",
                "segment_k")
#: Longest file the page reads again for its spectrogram (decoding is whole-file: a
#: longer recording would hold that much audio in the driver's memory).
MAX_REREAD_S = 1800.0
#: Seconds of context either side of the most suspicious window in the page's audio clip.
CLIP_CONTEXT_S = 1.0

#: ``bundle.json["evaluation"]`` keys a page shows, and how it names them.
MODEL_HEADLINE = {
    "protocol": "evaluated by", "pooled_eer": "EER (pooled)", "pooled_auc": "ROC AUC (pooled)",
    "threshold": "threshold", "recall_at_threshold": "spoofs caught at the threshold",
    "false_alarm_rate_at_threshold": "real speech flagged at the threshold",
    "false_alarm_rate_8khz_telephone": "8 kHz telephone speech flagged",
    "worst_source_eer": "EER of the worst held-out source",
}


def model_headline(evaluation: Mapping[str, Any] | None) -> dict[str, str]:
    """The model card's headline numbers from a bundle's ``evaluation`` record (what
    ``bundle.json["evaluation"]`` holds), worded for a page; empty when there is none."""
    out: dict[str, str] = {}
    for key, name in MODEL_HEADLINE.items():
        value = (evaluation or {}).get(key)
        if isinstance(value, float):
            value = f"{value:.3f}" if key in ("threshold", "pooled_auc") else f"{100 * value:.1f} %"
        if value is not None:
            out[name] = str(value)
    return out


# --- which files ----------------------------------------------------------------------------


def ranked_files(report: pd.DataFrame) -> pd.DataFrame:
    """The report's scored file rows, flagged files first, then by spoof score (highest
    first), then by most suspicious window: the order of the page's table and timelines."""
    ok = reports.file_rows(report)
    ok = ok[ok["status"] == "ok"]
    flagged = (ok["predicted_label"] == "spoof").astype(int)
    return (ok.assign(_flagged=flagged)
            .sort_values(["_flagged", "spoof_score", "max_window_score", "uri"],
                         ascending=[False, False, False, True])
            .drop(columns="_flagged"))


def table_rows(ranked: pd.DataFrame, top_n: int, limit: int = MAX_TABLE_ROWS) -> pd.DataFrame:
    """The files the table lists: every flagged file and the ``top_n`` most suspicious,
    at most ``limit``."""
    keep = (ranked["predicted_label"] == "spoof").to_numpy().copy()
    keep[: top_n] = True
    return ranked[keep].head(limit)


# --- audio of one shown file ----------------------------------------------------------------


def top_window(windows: pd.DataFrame, uri: str) -> tuple[int | None, float, float, float]:
    """The most suspicious window of ``uri`` in the windows table: (channel, start_s,
    end_s, score)."""
    rows = timeline.file_windows(windows, uri)
    best = rows.loc[rows["score"].idxmax()]
    channel = None if pd.isna(best["channel"]) else int(best["channel"])
    return channel, float(best["start_s"]), float(best["end_s"]), float(best["score"])


def window_audio(uri: str, cfg: FeatureConfig, channel: int | None, start_s: float,
                 end_s: float) -> np.ndarray:
    """The samples of ``uri`` from ``start_s`` to ``end_s`` as the scorer read them (decoded,
    resampled to ``cfg.audio.sample_rate``; ``channel``'s alone, or the mix-down for None).

    Raises
    ------
    InputFileError
        The file can no longer be read or decoded (moved, changed, storage fault).
    """
    from spoofray import audio
    from spoofray.reader import read_item_bytes

    data = read_item_bytes({"uri": uri}, cfg)
    decoded = audio.load(data, uri, cfg.audio, keep_channels=channel is not None)
    x = decoded.samples
    if x.ndim == 2:
        x = x[channel] if channel is not None and channel < len(x) else audio.to_mono(x)
    sr = cfg.audio.sample_rate
    return x[max(0, int(round(start_s * sr))): int(round(end_s * sr))]


def wav_bytes(samples: np.ndarray, sample_rate: int) -> bytes:
    """16-bit PCM WAV of mono ``samples``."""
    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, np.asarray(samples, np.float32), sample_rate, format="WAV", subtype="PCM_16")
    return buf.getvalue()


# --- page -------------------------------------------------------------------------------------

_STYLE = """
body{font-family:system-ui,sans-serif;max-width:1100px;margin:1.5em auto;padding:0 1em;
color:#111}
h1{font-size:1.45em;overflow-wrap:anywhere}h2{font-size:1.2em;margin-top:1.6em}
h3{font-size:1em;margin:.2em 0;overflow-wrap:anywhere}
table{border-collapse:collapse;margin:.5em 0;font-size:.85em;max-width:100%}
th,td{border:1px solid #bbb;padding:.25em .5em;text-align:left;vertical-align:top;
overflow-wrap:anywhere}th{background:#eee}
table.sortable th{cursor:pointer;user-select:none}table.sortable th:after{content:" \\2195";
color:#999}
.fit{max-width:100%;overflow-x:auto}
tr.spoof td:first-child{border-left:.35em solid #c0392b}
.spoof-label{color:#a11;font-weight:600}
section.file{border-top:1px solid #ccc;padding-top:.6em;margin-top:1.2em}
.note{color:#555;font-size:.9em}
img{max-width:100%;display:block;margin:.4em 0}
img.plot{max-width:720px}
.facts{display:flex;flex-wrap:wrap;gap:0 2em;align-items:flex-start}
.facts>div{flex:1 1 380px;min-width:0}
audio{display:block;margin:.3em 0}
"""

#: Sorts the table by the clicked column (numbers by value, ``data-v`` when a cell has one).
_SORT_SCRIPT = """
document.querySelectorAll('table.sortable').forEach(function(t){
  t.querySelectorAll('th').forEach(function(th,i){
    th.addEventListener('click',function(){
      var body=t.tBodies[0],rows=Array.prototype.slice.call(body.rows);
      var up=th.getAttribute('data-up')!=='1';th.setAttribute('data-up',up?'1':'0');
      function key(r){var c=r.cells[i];return c.hasAttribute('data-v')?c.getAttribute('data-v'):c.textContent;}
      rows.sort(function(a,b){var x=key(a),y=key(b),nx=parseFloat(x),ny=parseFloat(y);
        var d=(!isNaN(nx)&&!isNaN(ny))?nx-ny:x.localeCompare(y);return up?d:-d;});
      rows.forEach(function(r){body.appendChild(r);});
    });
  });
});
"""


def _esc(x: Any) -> str:
    return html.escape(str(x))


def _facts(facts: Mapping[str, Any]) -> str:
    rows = "".join(f"<tr><th>{_esc(k)}</th><td>{_esc(v)}</td></tr>" for k, v in facts.items())
    return f"<div class='fit'><table>{rows}</table></div>"


def _img(png: bytes, alt: str, cls: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return f'<img class="{cls}" alt="{_esc(alt)}" src="data:image/png;base64,{data}">'


def _num(x: Any) -> float | None:
    if x is None or x is pd.NA or (isinstance(x, float) and math.isnan(x)):
        return None
    return float(x)


def _cell(value: Any, sort: Any = None, cls: str = "") -> str:
    v = "" if sort is None else f' data-v="{_esc(sort)}"'
    c = f' class="{cls}"' if cls else ""
    return f"<td{v}{c}>{value}</td>"


def _files_table(rows: pd.DataFrame, names: Mapping[str, str], anchors: Mapping[str, str],
                 labelled: bool) -> str:
    head = ["#", "file", "decision", "rule", "spoof score", "top window score",
            "top window", "segments", "duration", "channels"]
    if labelled:
        head.append("true label")
    out = ["<div class='fit'><table id='files' class='sortable'><thead><tr>"
           + "".join(f"<th>{_esc(h)}</th>" for h in head) + "</tr></thead><tbody>"]
    for rank, r in enumerate(rows.itertuples(index=False), 1):
        uri = r.uri
        name = _esc(names[uri])
        link = f"<a href='#{anchors[uri]}'>{name}</a>" if uri in anchors else name
        spoof = r.predicted_label == "spoof"
        start, end = _num(r.top_window_start_s), _num(r.top_window_end_s)
        span = (f"{timeline.clock(start)}–{timeline.clock(end)}"
                if start is not None and end is not None else "–")
        cells = [_cell(rank, rank), _cell(f"<span title='{_esc(uri)}'>{link}</span>", uri),
                 _cell(_esc(r.predicted_label), cls="spoof-label" if spoof else ""),
                 _cell(_esc(r.decision_rule) if isinstance(r.decision_rule, str) else "–"),
                 _cell(f"{r.spoof_score:.3f}", r.spoof_score),
                 _cell(f"{r.max_window_score:.3f}" if _num(r.max_window_score) is not None
                       else "–", _num(r.max_window_score)),
                 _cell(span, start), _cell(int(r.n_segments or 0), int(r.n_segments or 0)),
                 _cell(timeline.clock(r.duration_s), r.duration_s),
                 _cell(int(r.channels) if _num(r.channels) is not None else "–")]
        if labelled:
            cells.append(_cell(_esc(r.true_label) if isinstance(r.true_label, str) else "–"))
        out.append(f"<tr class='{'spoof' if spoof else 'bonafide'}'>" + "".join(cells) + "</tr>")
    out.append("</tbody></table></div>")
    return "".join(out)


def render_run_page(summary: Mapping[str, Any], evaluation: Mapping[str, Any] | None,
                    table: pd.DataFrame, shown: Sequence[Mapping[str, Any]],
                    plots: Mapping[str, bytes], *, n_ranked: int) -> str:
    """The page's HTML.

    Parameters
    ----------
    summary : mapping
        The run's ``summary.json``.
    evaluation : mapping, optional
        The bundle's ``evaluation`` record.
    table : DataFrame
        :func:`table_rows` of the report.
    shown : sequence of mapping
        Per file given a timeline: ``row`` (its report row), ``anchor``, ``timeline``
        (PNG bytes), ``spectrogram`` (PNG bytes or None), ``window`` ((channel, start_s,
        end_s, score)), ``note`` (why a plot is missing, or None), ``audio`` (WAV bytes or
        None).
    plots : mapping
        The run's report plots (name → PNG), shown under the table.
    n_ranked : int
        How many files were scored (the table lists the first of them).
    """
    counts = summary["counts"]
    bundle = summary["bundle"]
    rule = bundle.get("segment_rule") or {}
    title = f"spoofray run {summary['run_id']}"
    parts = ["<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
             "<meta name='viewport' content='width=device-width, initial-scale=1'>"
             f"<title>{_esc(title)}</title><style>{_STYLE}</style></head><body>",
             f"<h1>{_esc(title)}</h1>"]
    by_rule = ", ".join(f"{k.replace('_', ' ')}: {v}" for k, v in
                        counts.get("spoof_by_rule", {}).items()) or "none"
    errors = ", ".join(f"{k}: {v}" for k, v in counts.get("errors_by_type", {}).items())
    parts.append("<div class='facts'><div><h2>This run</h2>")
    parts.append(_facts({
        "archive": summary["input"], "report": summary.get("run_uri", ""),
        "started": summary["started_at"], "files": counts["files"],
        "called spoof": f"{counts['spoof']} (by rule: {by_rule})",
        "called bona fide": counts["bonafide"],
        "not scored (error rows)": f"{counts['error']}" + (f" ({errors})" if errors else ""),
        "suspicious spans": counts.get("segments", 0),
        "audio": f"{summary['audio_hours']:.2f} h",
        "bundle": f"{bundle['name']} {bundle['version']}",
        "file threshold": f"{bundle['threshold']:.3f} ({bundle.get('threshold_method')}): "
                          "a file whose mean window score reaches it is called spoof",
        "segment rule": (f"{rule['k']} window(s) in a row at or over {rule['threshold']:.3f} "
                         f"({rule.get('method')}) call a file spoof" if rule else "none"),
    }))
    headline = model_headline(evaluation)
    parts.append("</div><div><h2>The model</h2>")
    if headline:
        parts.append("<p class='note'>How well this bundle did when it was evaluated (its "
                     "model card); read these rates before acting on a spoof rate.</p>")
        parts.append(_facts({"bundle": f"{bundle['name']} {bundle['version']}", **headline}))
    else:
        parts.append("<p>This bundle records no evaluation (<code>bundle.json</code> has no "
                     "<code>evaluation</code>): its error rates are unknown here.</p>")
    parts.append("</div></div>")
    names = dict(zip(table["uri"], reports.short_names(table["uri"].tolist())))
    anchors = {s["row"]["uri"]: s["anchor"] for s in shown}
    n_flagged = int((table["predicted_label"] == "spoof").sum())
    parts.append(f"<h2>Flagged and most suspicious files ({len(table)} of {n_ranked} scored)"
                 "</h2><p class='note'>Flagged files first, then by spoof score; click a "
                 "column to sort. The top window is the span that scored highest: listen "
                 "there first. The report has every file.</p>")
    if n_flagged == MAX_TABLE_ROWS:
        parts.append(f"<p class='note'>Only the first {MAX_TABLE_ROWS} flagged files are "
                     "listed; read the report for the rest.</p>")
    labelled = "true_label" in table and table["true_label"].notna().any()
    parts.append(_files_table(table, names, anchors, bool(labelled)))
    if shown:
        parts.append(f"<h2>Timelines of the top {len(shown)}</h2><p class='note'>Each "
                     "window's score over the recording, the file threshold (dashed; the "
                     "file's mean is held against it), the segment threshold (dotted; "
                     "windows at or over it are red, their spans shaded), then the log "
                     "spectrogram of the most suspicious window.</p>")
    for s in shown:
        row = s["row"]
        channel, start, end, score = s["window"]
        where = "" if channel is None else f"channel {channel}, "
        parts.append(f"<section class='file' id='{s['anchor']}'><h3>{_esc(row['uri'])}</h3>"
                     f"<p>{_esc(row['predicted_label'])}"
                     + (f" by {_esc(row['decision_rule'])}" if isinstance(
                         row.get("decision_rule"), str) else "")
                     + f"; spoof score {row['spoof_score']:.3f}; most suspicious window "
                     f"{where}{timeline.clock(start)}–{timeline.clock(end)} ({score:.3f})</p>")
        parts.append(_img(s["timeline"], f"timeline of {names.get(row['uri'], row['uri'])}",
                          "timeline"))
        if s.get("spectrogram") is not None:
            parts.append(_img(s["spectrogram"], "log spectrogram of the most suspicious "
                              "window", "spectrogram"))
        if s.get("audio") is not None:
            data = base64.b64encode(s["audio"]).decode("ascii")
            parts.append(f"<audio controls preload='none' src='data:audio/wav;base64,{data}'>"
                         "</audio>")
        if s.get("note"):
            parts.append(f"<p class='note'>{_esc(s['note'])}</p>")
        parts.append("</section>")
    if plots:
        parts.append("<h2>All files of the run</h2>")
    for name, png in plots.items():
        parts.append(_img(png, name.rsplit(".", 1)[0].replace("_", " "), "plot"))
    parts.append(f"<script>{_SORT_SCRIPT}</script></body></html>")
    return "\n".join(parts)


def write_run_page(run: str, summary: Mapping[str, Any], *, evaluation: Mapping[str, Any]
                   | None, feature_config: FeatureConfig, top_n: int = 20,
                   audio: bool = False) -> str:
    """Write ``<run>/index.html`` from the run folder's report, segments, windows and plots
    (the folder may still be the unpublished ``_tmp_run_id=`` one).

    Parameters
    ----------
    run : str
        The run folder (local or s3://).
    summary : mapping
        The run's summary (:func:`spoofray.reports.summarize_report` plus ``run_uri``).
    evaluation : mapping, optional
        ``bundle.json["evaluation"]``.
    feature_config : FeatureConfig
        The bundle's: how the shown files are read again for their spectrograms.
    top_n : int
        Files given a timeline and spectrogram.
    audio : bool
        Also embed each shown file's most suspicious window (with
        :data:`CLIP_CONTEXT_S` either side) as WAV.

    Returns
    -------
    str
        The page's URI.
    """
    from spoofray import features

    ranked = ranked_files(reports.read_report(run, columns=PAGE_COLUMNS))
    table = table_rows(ranked, top_n)
    top = ranked.head(top_n)
    windows = reports.read_windows(run, uris=top["uri"].tolist())
    segments = reports.read_segments(run)
    sr = feature_config.audio.sample_rate
    shown = []
    for i, row in enumerate(top.to_dict("records"), 1):
        if timeline.file_windows(windows, row["uri"]).empty:
            continue  # a run written before window scores were kept
        window = top_window(windows, row["uri"])
        item: dict[str, Any] = {"row": row, "anchor": f"file-{i}", "window": window,
                                "timeline": timeline.timeline_png(windows, segments, row),
                                "spectrogram": None, "audio": None, "note": None}
        channel, start, end, _ = window
        if float(row["duration_s"] or 0.0) > MAX_REREAD_S:
            item["note"] = (f"no spectrogram: the file is longer than {MAX_REREAD_S:.0f} s, "
                            "which the page does not decode again; `spoofray explain` it")
            shown.append(item)
            continue
        try:
            clip = window_audio(row["uri"], feature_config, channel, start - CLIP_CONTEXT_S,
                                end + CLIP_CONTEXT_S)
        except (InputFileError, OSError) as exc:
            item["note"] = f"no spectrogram: the file could not be read again ({exc})"
        else:
            lead = min(CLIP_CONTEXT_S, start)
            part = clip[int(round(lead * sr)): int(round((lead + end - start) * sr))]
            if part.size > feature_config.n_fft:
                db = features.log_spectrogram(part, feature_config)
                item["spectrogram"] = timeline.spectrogram_png(
                    db, sample_rate=sr, hop_length=feature_config.hop_length, start_s=start,
                    title=f"most suspicious window {timeline.clock(start)}–"
                          f"{timeline.clock(end)}" + ("" if channel is None
                                                      else f", channel {channel}"))
            if audio:
                item["audio"] = wav_bytes(clip, sr)
        shown.append(item)
    plots_dir = storage.join(run, reports.PLOTS_DIR)
    plots = {posixpath.basename(p): storage.read_bytes(p)
             for p in storage.list_dir(plots_dir, suffix=".png")
             if posixpath.basename(p) in ("score_histogram.png", "most_suspicious.png")}
    page = render_run_page({**summary}, evaluation, table, shown, plots, n_ranked=len(ranked))
    uri = storage.join(run, PAGE_NAME)
    storage.write_bytes_atomic(uri, page.encode("utf-8"))
    return uri

"""One file's window scores over time: what an analyst reads to see *where* a file is
suspicious, as a terminal strip (one character per window) and as a PNG.

Input is a run's windows and segments tables (:func:`spoofray.reports.read_windows`,
:func:`spoofray.reports.read_segments`) cut to one file; nothing is scored here. No Ray;
matplotlib is imported inside the plotting functions.
"""

from __future__ import annotations

import io
import math
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from spoofray.errors import ConfigError

#: Characters of the terminal strip, lowest score first (a window's score picks one).
BLOCKS = "▁▂▃▄▅▆▇█"
#: The same in ASCII, for terminals that cannot show block characters.
ASCII_BLOCKS = "_.-:=+*#"
#: Inches under a timeline's panels for its legend.
LEGEND_IN = 0.45
#: Under a window of the strip: part of a suspicious span (the segments table).
SPAN_MARK = "^"


def file_windows(windows: pd.DataFrame, uri: str) -> pd.DataFrame:
    """The windows of ``uri`` (every channel), in channel and time order."""
    rows = windows[windows["uri"] == uri]
    key = rows["channel"].fillna(-1)
    return rows.assign(_c=key).sort_values(["_c", "window_index"]).drop(columns="_c")


def channels_of(rows: pd.DataFrame) -> list[int | None]:
    """The channels the windows of one file were scored in: ``[None]`` for a file scored
    mixed down, ``[0, 1]`` for a call scored per channel."""
    if rows["channel"].isna().all():
        return [None]
    return sorted(int(c) for c in rows["channel"].dropna().unique())


def _of_channel(rows: pd.DataFrame, channel: int | None) -> pd.DataFrame:
    return rows[rows["channel"].isna()] if channel is None else rows[rows["channel"] == channel]


def _can_print(text: str, stream: Any = None) -> bool:
    encoding = getattr(stream or sys.stdout, "encoding", None) or "ascii"
    try:
        text.encode(encoding)
    except (UnicodeEncodeError, LookupError):
        return False
    return True


def strip(scores: Sequence[float], *, ascii_only: bool = False) -> str:
    """One character per window score in [0, 1], higher = a taller block."""
    chars = ASCII_BLOCKS if ascii_only else BLOCKS
    s = np.clip(np.nan_to_num(np.asarray(scores, dtype=np.float64)), 0.0, 1.0)
    return "".join(chars[min(len(chars) - 1, int(v * len(chars)))] for v in s)


def span_marks(rows: pd.DataFrame, spans: pd.DataFrame) -> str:
    """Under each window of ``rows`` (one channel): :data:`SPAN_MARK` when it lies inside a
    suspicious span of ``spans`` (same channel), else a space."""
    marks = []
    for a, b in zip(rows["start_s"], rows["end_s"]):
        inside = ((spans["start_s"] <= a + 1e-9) & (spans["end_s"] >= b - 1e-9)).any()
        marks.append(SPAN_MARK if inside else " ")
    return "".join(marks).rstrip()


def terminal_timeline(windows: pd.DataFrame, segments: pd.DataFrame, uri: str, *,
                      stream: Any = None) -> list[str]:
    """The lines ``spoofray explain`` prints for one file: per channel, its windows' scores
    as a strip (one character per window, :data:`BLOCKS`), the windows of its suspicious
    spans marked under it, and the time the strip covers.

    ASCII (:data:`ASCII_BLOCKS`) when ``stream`` (stdout by default) cannot encode the
    block characters.
    """
    rows = file_windows(windows, uri)
    if rows.empty:
        return [f"{uri}: no window scores in this run (the file was not scored, or the run "
                "was written before window scores were kept)"]
    ascii_only = not _can_print(BLOCKS, stream)
    spans = segments[segments["uri"] == uri]
    chans = channels_of(rows)
    width = len("file") if chans == [None] else len("channel 0")
    out = [f"window scores, one character per window ({'low ' + (ASCII_BLOCKS if ascii_only else BLOCKS) + ' high'}; "
           f"{SPAN_MARK} = in a suspicious span):"]
    for c in chans:
        mine = _of_channel(rows, c)
        name = "file" if c is None else f"channel {c}"
        out.append(f"  {name:<{width}} |{strip(mine['score'], ascii_only=ascii_only)}|")
        marks = span_marks(mine, _of_channel(spans, c))
        if marks.strip():
            out.append(f"  {'':<{width}}  {marks}")
    first, last = float(rows["start_s"].min()), float(rows["end_s"].max())
    hop = np.diff(_of_channel(rows, chans[0])["start_s"].to_numpy())
    step = f", a window every {float(hop[0]):g} s" if len(hop) else ""
    out.append(f"  {'':<{width}}  {_clock(first)} to {_clock(last)}{step}")
    return out


def _clock(seconds: float) -> str:
    seconds = float(seconds)
    if seconds < 60:
        return f"{seconds:.1f} s"
    return f"{int(seconds // 60)}:{seconds % 60:04.1f}"


def clock(seconds: float) -> str:
    """``"12.0 s"``, ``"1:32.0"``: a time in a recording as the page and explain show it."""
    return _clock(seconds)


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # workers and CI have no display
    import matplotlib.pyplot as plt

    return plt


def _png(fig: Any, dpi: int = 100, tight: bool = True) -> bytes:
    plt = _pyplot()
    buf = io.BytesIO()
    if tight:
        fig.tight_layout()
    fig.savefig(buf, format="png", dpi=dpi)
    plt.close(fig)
    return buf.getvalue()


def timeline_png(windows: pd.DataFrame, segments: pd.DataFrame, row: Mapping[str, Any], *,
                 title: str | None = None) -> bytes:
    """A PNG of one file's window scores over time: one panel per channel scored (one for a
    file scored mixed down), each window's score at its span's centre, the file threshold
    (which the file mean is held against) and the segment threshold (which each window is
    held against; ``segment_k`` of them in a row fire the segment rule) as lines, the
    file's suspicious spans shaded.

    Parameters
    ----------
    windows, segments : DataFrame
        The run's windows and segments tables (other files' rows are ignored).
    row : mapping
        The file's report row (``uri``, ``threshold``, ``segment_threshold``,
        ``segment_k``, ``spoof_score``, ``predicted_label``, ``decision_rule``).
    """
    uri = row["uri"]
    rows = file_windows(windows, uri)
    if rows.empty:
        raise ConfigError(f"{uri}: the windows table has no window of this file; expected "
                          "a file the run scored (error rows have none), in a run written "
                          "with window scores (windows/ folder)")
    plt = _pyplot()
    chans = channels_of(rows)
    spans = segments[segments["uri"] == uri]
    threshold = _float(row.get("threshold"))
    seg_threshold = _float(row.get("segment_threshold"))
    end = float(rows["end_s"].max())
    height = 0.9 + 1.7 * len(chans) + LEGEND_IN
    fig, axes = plt.subplots(len(chans), 1, figsize=(9, height), sharex=True, squeeze=False)
    for ax, c in zip(axes[:, 0], chans):
        mine = _of_channel(rows, c)
        centre = (mine["start_s"].to_numpy() + mine["end_s"].to_numpy()) / 2
        score = mine["score"].to_numpy(np.float64)
        for span in _of_channel(spans, c).itertuples():
            ax.axvspan(span.start_s, span.end_s, color="tab:red", alpha=0.18, lw=0)
        over = score >= (seg_threshold if seg_threshold is not None else np.inf)
        ax.plot(centre, score, "-", color="0.35", lw=1)
        ax.plot(centre[~over], score[~over], "o", color="tab:blue", ms=3.5,
                label="window score")
        if over.any():
            ax.plot(centre[over], score[over], "o", color="tab:red", ms=4.5,
                    label="window at or over the segment threshold")
        mean = float(score.mean())
        ax.axhline(mean, color="tab:blue", lw=0.8, alpha=0.6)
        ax.text(end, mean, f" mean {mean:.2f}", va="center", ha="left", fontsize=7,
                color="tab:blue")
        if threshold is not None:
            ax.axhline(threshold, color="k", ls="--", lw=1,
                       label=f"file threshold {threshold:.3f} (the mean)")
        if seg_threshold is not None:
            k = row.get("segment_k")
            ax.axhline(seg_threshold, color="tab:red", ls=":", lw=1.2,
                       label=f"segment threshold {seg_threshold:.3f}"
                       + (f" (k = {int(k)})" if k is not None and not _nan(k) else ""))
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlim(0, end)
        ax.set_ylabel("spoof score" if c is None else f"channel {c}")
    seen: dict[str, Any] = {}
    for ax in axes[:, 0]:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            seen.setdefault(label, handle)
    fig.legend(list(seen.values()), list(seen), fontsize=7, loc="lower center", ncol=2,
               frameon=False)
    axes[-1, 0].set_xlabel("time in the recording (s); shaded: suspicious spans")
    decided = row.get("predicted_label") or "?"
    rule = row.get("decision_rule")
    axes[0, 0].set_title(title or f"{_short(uri)}: {decided}"
                         + (f" ({rule})" if isinstance(rule, str) and rule else ""),
                         fontsize=9)
    fig.tight_layout(rect=(0, LEGEND_IN / height, 1, 1))
    return _png(fig, tight=False)


def spectrogram_png(db: np.ndarray, *, sample_rate: int, hop_length: int, start_s: float,
                    title: str) -> bytes:
    """A PNG of a log power spectrogram (:func:`spoofray.features.log_spectrogram`) that
    starts ``start_s`` into its recording."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(9, 2.6))
    n_bins, n_frames = db.shape
    top = float(np.max(db))
    image = ax.imshow(db, origin="lower", aspect="auto", cmap="magma", vmin=top - 80, vmax=top,
                      extent=(start_s, start_s + n_frames * hop_length / sample_rate, 0,
                              sample_rate / 2000.0))
    fig.colorbar(image, ax=ax, pad=0.01, label="dB")
    ax.set(xlabel="time in the recording (s)", ylabel="kHz")
    ax.set_title(title, fontsize=9)
    return _png(fig)


def _short(uri: str, width: int = 70) -> str:
    return uri if len(uri) <= width else "…" + uri[-(width - 1):]


def _float(x: Any) -> float | None:
    return None if x is None or _nan(x) else float(x)


def _nan(x: Any) -> bool:
    return isinstance(x, float) and math.isnan(x) or x is pd.NA

"""``spoofray explain FILE``: one file scored by the production scorer, and why it was called
what it was called.

The file is scored by :func:`spoofray.pipeline.score.score_archive` (the same featurizing,
members, fusion, file mean, segment rule and thresholds as any run: nothing is scored
here) into a one-file run, temporary unless ``output`` is given. Its report row, segments
and windows are then read back and told: the decision, which rule fired and against which
threshold, the suspicious spans, a terminal timeline (one character per window,
:func:`spoofray.timeline.terminal_timeline`) and the same timeline as a PNG.

Exit codes of the job (:data:`EXIT_CODES`): 0 bona fide, 3 spoof, 4 the file could not be
scored (it is an error row: not audio, silent, too long, ...), 2 a refusal before scoring.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from collections.abc import Mapping
from typing import Any

import pandas as pd

from spoofray import reports, scoring, storage, timeline
from spoofray.config import ScoreSettings, setting
from spoofray.errors import ConfigError

#: Exit code of ``spoofray explain`` per outcome.
EXIT_BONAFIDE, EXIT_SPOOF, EXIT_NOT_SCORED = 0, 3, 4
EXIT_CODES = {"bonafide": EXIT_BONAFIDE, "spoof": EXIT_SPOOF}
#: The run id of an explain run (its folder is ``<output>/run_id=explain-<n>``).
RUN_ID_PREFIX = "explain"


@dataclasses.dataclass(frozen=True)
class ExplainConfig(ScoreSettings):
    """What ``spoofray explain`` scores, with which bundle, and where it writes; how it
    scores and decides (threshold, channels, segment rule) as any run
    (:class:`~spoofray.config.ScoreSettings`)."""

    input: str = setting("", "the audio file, local or s3://", path=True, cli=False)
    bundle: str | None = setting(
        None, "bundle folder, local or s3://, or 'latest' (the newest in the local registry)",
        default_help="the shipped spoofray-base (docs/model_card.md)", path=True,
        literal=("latest",))
    png: str | None = setting(None, "where to write the timeline PNG (local or s3://)",
                              default_help="<file name>.timeline.png in the current folder",
                              path=True)
    output: str | None = setting(
        None, "keep the one-file run (report, segments, windows, run page) under this folder",
        default_help="a temporary folder, removed afterwards", path=True)

    def _check(self) -> None:
        super()._check()
        if not self.input:
            raise ConfigError("ExplainConfig needs input: the audio file to explain")


def score_config(cfg: ExplainConfig, output: str, run_id: str) -> Any:
    """The :class:`~spoofray.pipeline.score.ScoreConfig` of the one-file run."""
    from spoofray.pipeline.score import ScoreConfig

    shared = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(ScoreSettings)}
    keep = cfg.output is not None
    return ScoreConfig(**{**shared, "plots": keep and cfg.plots}, input=cfg.input,
                       output=output, bundle=cfg.bundle, run_id=run_id, page=keep,
                       page_files=1)


def preflight(cfg: ExplainConfig) -> None:
    """Refusals that need no cluster: the scorer's (input, bundle, output), and an input
    that is not exactly one file."""
    from spoofray.pipeline import score

    with tempfile.TemporaryDirectory(prefix="spoofray-explain-check-") as tmp:
        items = score.preflight(score_config(cfg, cfg.output or tmp, "preflight"))
    if len(items) != 1:
        raise ConfigError(f"explain takes one audio file; {cfg.input} lists {len(items)} "
                          "files: score a folder with `spoofray score`, or name one file")


def explain_file(cfg: ExplainConfig) -> dict[str, Any]:
    """Score ``cfg.input`` on the current Ray and gather its explanation.

    Returns
    -------
    dict
        ``row`` (the file's report row), ``channel_rows`` (one per channel of a file
        scored per channel, else empty), ``segments`` and ``windows`` (the file's rows of
        those tables), ``summary`` (of the run), ``png`` (where the timeline was written,
        None for an error row), ``run_uri`` (None when the run was temporary).
    """
    from spoofray.pipeline.score import score_archive

    with tempfile.TemporaryDirectory(prefix="spoofray-explain-") as tmp:
        output = cfg.output or tmp
        run_id = f"{RUN_ID_PREFIX}-{pd.Timestamp.now(tz='UTC'):%Y%m%dT%H%M%S%f}"
        summary = score_archive(score_config(cfg, output, run_id))
        run = summary["run_uri"]
        report = reports.read_report(run)
        segments = reports.read_segments(run)
        windows = reports.read_windows(run)
        (uri,) = reports.file_rows(report)["uri"].tolist()
        row = reports.file_rows(report).iloc[0].to_dict()
        channel_rows = [r for r in report.to_dict("records") if not pd.isna(r["channel"])]
        png = None
        if row["status"] == "ok":
            png = cfg.png or default_png(uri)
            storage.write_bytes_atomic(png, timeline.timeline_png(windows, segments, row))
        return {"row": row, "channel_rows": channel_rows,
                "segments": segments[segments["uri"] == uri].reset_index(drop=True),
                "windows": timeline.file_windows(windows, uri).reset_index(drop=True),
                "summary": summary, "png": png, "run_uri": run if cfg.output else None}


def default_png(uri: str) -> str:
    """``<file name>.timeline.png`` in the current folder."""
    name = uri.rstrip("/").rsplit("/", 1)[-1]
    return os.path.abspath(f"{name}.timeline.png")


def exit_code(row: Mapping[str, Any]) -> int:
    """:data:`EXIT_SPOOF`, :data:`EXIT_BONAFIDE` or :data:`EXIT_NOT_SCORED` for a file's
    report row."""
    if row.get("status") != "ok":
        return EXIT_NOT_SCORED
    return EXIT_CODES[row["predicted_label"]]


def _rule_lines(row: Mapping[str, Any], prefix: str = "") -> list[str]:
    """Which rule fired for one report row, and each rule's numbers against its threshold."""
    score, threshold = float(row["spoof_score"]), float(row["threshold"])
    seg, k = float(row["segment_threshold"]), int(row["segment_k"])
    rule = row.get("decision_rule")
    fired = set(rule.split("+")) if isinstance(rule, str) and rule else set()
    mean = (f"file mean {score:.3f} {'reaches' if score >= threshold else 'is under'} the "
            f"file threshold {threshold:.3f}")
    top = float(row["max_window_score"])
    segment = (f"{k} window{'s' if k > 1 else ''} in a row at or over the segment threshold "
               f"{seg:.3f}: {'yes' if scoring.SEGMENT_RULE in fired else 'no'} (highest "
               f"window {top:.3f}, {int(row.get('n_segments') or 0)} suspicious span(s))")
    if fired:
        names = " and ".join(r.replace("_", " ") for r in sorted(fired))
        head = f"{prefix}rule fired: {names}"
    else:
        head = f"{prefix}no rule fired"
    return [head, f"{prefix}  {mean}", f"{prefix}  {segment}"]


def explanation_lines(result: Mapping[str, Any]) -> list[str]:
    """What ``spoofray explain`` prints for :func:`explain_file`'s result."""
    row = result["row"]
    out = [reports.describe_file(row)]
    if row["status"] != "ok":
        return out
    if result["channel_rows"]:
        out.append(f"  scored per channel ({len(result['channel_rows'])} channels); the file "
                   "is spoof when any channel is, its score the highest channel's")
        for r in result["channel_rows"]:
            if r["status"] != "ok":
                out.append(f"  channel {int(r['channel'])}: not scored: {r['error_message']}")
                continue
            out.append(f"  channel {int(r['channel'])}: {r['predicted_label']} (spoof score "
                       f"{r['spoof_score']:.3f})")
            out += _rule_lines(r, prefix="    ")
    else:
        out += _rule_lines(row, prefix="  ")
    spans = result["segments"]
    if len(spans):
        out.append("  suspicious spans:")
        for s in spans.itertuples():
            side = "" if pd.isna(s.channel) else f"channel {int(s.channel)}: "
            out.append(f"    {side}{timeline.clock(s.start_s)}–{timeline.clock(s.end_s)} "
                       f"(highest window {s.score:.3f}, {int(s.n_windows)} window"
                       f"{'s' if s.n_windows != 1 else ''})")
    else:
        out.append("  suspicious spans: none")
    out += ["  " + line for line in timeline.terminal_timeline(
        result["windows"], result["segments"], row["uri"])]
    if result.get("png"):
        out.append(f"  timeline plot: {result['png']}")
    if result.get("run_uri"):
        out.append(f"  run: {result['run_uri']} (report, segments, windows, index.html)")
    return out

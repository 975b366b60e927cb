"""Measured outcomes of the reliability tests, and the generated part of ``docs/reliability.md``.

Each scenario test (hostile inputs, node loss, storage faults) leaves one JSON record with
:func:`write_record` (the ``record`` fixture of ``tests/conftest.py``);
:func:`reliability_markdown` turns a folder of them into the tables of the document::

    python -c "from spoofray.testing import reliability as r; \
    print(r.reliability_markdown(r.read_records('/tmp/reliability')))"
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from typing import Any


def write_record(directory: str | os.PathLike, name: str, record: Mapping[str, Any]) -> str:
    """Write one test's measured outcome as ``<directory>/<name>.json``; return the path."""
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(os.fspath(directory), f"{name}.json")
    with open(path, "w") as fh:
        json.dump({"name": name, **record}, fh, indent=2, sort_keys=True, default=str)
    return path


def read_records(directory: str | os.PathLike) -> list[dict[str, Any]]:
    """Every record :func:`write_record` left in ``directory``, sorted by name."""
    out = []
    for entry in sorted(os.listdir(directory)):
        if entry.endswith(".json"):
            with open(os.path.join(directory, entry)) as fh:
                out.append(json.load(fh))
    return out


COUNT_COLUMNS = ("inputs", "rows", "ok", "errors", "duplicates", "missing")


def _cell(value: Any) -> str:
    """``value`` as one Markdown table cell: no pipes, newlines or HTML-looking ``<dir>``."""
    return (str(value).replace("|", "\\|").replace("\n", " ").replace("<", "&lt;")
            .replace(">", "&gt;"))


def records_markdown(records: Iterable[Mapping[str, Any]]) -> str:
    """A Markdown table of records: fault, outcome and the counts of :data:`COUNT_COLUMNS`."""
    lines = ["| scenario | fault / input | outcome | " + " | ".join(COUNT_COLUMNS) + " |",
             "|---|---|---|" + "---|" * len(COUNT_COLUMNS)]
    for r in records:
        counts = r.get("counts") or {}
        cells = [str(counts.get(c, "")) for c in COUNT_COLUMNS]
        lines.append(f"| {r['name']} | {_cell(r.get('fault', ''))} | "
                     f"{_cell(r.get('outcome', ''))} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def cases_markdown(records: Iterable[Mapping[str, Any]]) -> str:
    """Markdown tables of the per-case details some records carry (``cases`` lists of
    dicts, e.g. each hostile file's expected and observed outcome), one table per record."""
    out = []
    for r in records:
        cases = r.get("cases")
        if not cases or not isinstance(cases, list):
            continue
        columns = [c for c in ("name", "what", "expect", "got", "seconds", "message")
                   if any(c in case for case in cases)]
        out += [f"#### {r['name']}", "",
                "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
        for case in cases:
            cells = [_cell(case.get(c, ""))[:240] for c in columns]
            out.append("| " + " | ".join(cells) + " |")
        out.append("")
    return "\n".join(out)


def reliability_markdown(records: Iterable[Mapping[str, Any]]) -> str:
    """The generated part of ``docs/reliability.md``: the results table, the memory growth
    of the one-process hostile run, skipped cases, then the per-case tables."""
    records = list(records)
    out = [records_markdown(records), ""]
    for r in records:
        growth = r.get("rss_growth_mib_by_file")
        if growth:
            top = sorted(growth.items(), key=lambda kv: -kv[1])[:5]
            out += [f"Peak RSS of `{r['name']}`: {r['peak_rss_mib']:.0f} MiB (baseline after "
                    f"imports {r['baseline_rss_mib']:.0f} MiB); largest growth by file (MiB):",
                    "", "| file | RSS growth |", "|---|---|",
                    *[f"| {name} | {mib} |" for name, mib in top], ""]
        for skipped in r.get("skipped") or []:
            out += [f"Skipped in `{r['name']}`: `{skipped['name']}`: {skipped['reason']}", ""]
    out += ["### Per-case outcomes", "", cases_markdown(records)]
    return "\n".join(out).rstrip() + "\n"

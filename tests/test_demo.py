"""``make demo`` (jobs/demo.py) end to end on a local Ray, as a user runs it: quiet, every
line it shows is spoofray's own."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from spoofray import console

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

#: The lines spoofray itself shows: the demo's steps and closing lines, spoofray's log lines
#: (jobs/_bootstrap.py's format, a ``spoofray.`` logger) and its progress lines.
OWN_LINES = (
    re.compile(r"^\[\d/8 +\d+s\] "),
    re.compile(r"^The report is in .*/report/ — "),
    re.compile(r"^Its page \(open it in a browser\): .*/index\.html$"),
    re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} [A-Z]+ spoofray(\.[\w.]+)?: "),
    re.compile(r"^(extracted|scored) [\d,]+/[\d,]+ files? \(\d+%\), "),
)


def foreign_lines(text: str) -> list[str]:
    """The non-blank lines of ``text`` that are not :data:`OWN_LINES`."""
    return [line for line in text.splitlines()
            if line.strip() and not any(p.match(line) for p in OWN_LINES)]


def test_own_lines_are_told_from_the_rest():
    assert foreign_lines("[3/8   71s] sklearn ensemble sweep: x\n\n"
                         "2026-12-06 22:39:32,723 INFO spoofray.pipeline.runtime: starting Ray\n"
                         "scored 41/41 files (100%), 2.7 min of audio, 2.7 files/s, done in 15s\n"
                         ) == []
    noise = ["2026-12-06 22:40:30,562 INFO matplotlib.font_manager: generated new fontManager",
             "\x1b[36m(RayTrainWorker pid=9301)\x1b[0m Checkpoint successfully created at: x",
             "│ Number of trials                 4                       │"]
    assert foreign_lines("\n".join(noise)) == noise


@pytest.mark.slow
def test_the_demo_shows_only_spoofrays_lines(tmp_path):
    env = {k: v for k, v in os.environ.items()
           if k not in ("RAY_ADDRESS", console.VERBOSE_ENV, "RAY_DEDUP_LOGS",
                        "TF_CPP_MIN_LOG_LEVEL", "RAY_AIR_NEW_OUTPUT")}
    run = subprocess.run([sys.executable, os.path.join(REPO, "jobs", "demo.py"),
                          "--output", str(tmp_path / "demo"), "--num-cpus", "2"],
                         capture_output=True, text=True, timeout=1500, env=env, cwd=tmp_path)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-5000:]
    shown = run.stdout + run.stderr
    assert foreign_lines(shown) == [], shown[-5000:]
    steps = [line for line in run.stdout.splitlines() if OWN_LINES[0].match(line)]
    assert len(steps) == 8, run.stdout
    page = re.search(r"Its page \(open it in a browser\): (\S+)", run.stdout).group(1)
    assert os.path.getsize(page) > 0

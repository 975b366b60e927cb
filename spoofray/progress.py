"""The driver's progress line: files done of total, audio hours, rate and time left.

Updated as rows come back (the scorer calls :meth:`Progress.add` per block of report
rows). On a terminal it is one line rewritten in place; elsewhere (``ray job submit`` logs,
cron mail, files) a new line at most every ``every_s`` seconds, and a last one at the end.
No Ray here::

    scored 1,200/5,000 files (24%), 3.10 h of audio, 8.4 files/s, about 7m32s left
"""

from __future__ import annotations

import sys
import time
from typing import IO


def _audio(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.0f} s of audio"
    if seconds < 3600:
        return f"{seconds / 60:.1f} min of audio"
    return f"{seconds / 3600:,.2f} h of audio"


def _rate(files: int, elapsed: float) -> str:
    per_s = files / elapsed
    return f"{per_s:.1f} files/s" if per_s >= 1 else f"{per_s * 60:.1f} files/min"


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


class Progress:
    """Progress of ``total`` files.

    Parameters
    ----------
    total : int
        Files listed for this run.
    total_bytes : int, optional
        Their size; when known the time left follows bytes (long files weigh more),
        else files.
    verb : str
        What happens to a file ("scored", "extracted").
    stream : file, optional
        Where the line goes (default ``sys.stderr``).
    every_s : float
        Least seconds between two lines when ``stream`` is not a terminal.
    """

    def __init__(self, total: int, *, total_bytes: int | None = None, verb: str = "scored",
                 stream: IO[str] | None = None, every_s: float = 30.0,
                 clock=time.monotonic) -> None:
        self.total, self.total_bytes, self.verb = int(total), total_bytes or None, verb
        self.stream = stream if stream is not None else sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.every_s = 0.5 if self.tty else every_s
        self.clock = clock
        self.started = clock()
        self.shown_at: float | None = None
        self.shown_files = -1
        self.files = 0
        self.bytes = 0
        self.audio_s = 0.0
        self.closed = False

    def add(self, files: int, *, audio_s: float = 0.0, size_bytes: int = 0) -> None:
        """Count ``files`` more files done (``audio_s`` seconds of audio, ``size_bytes``)."""
        self.files += int(files)
        self.audio_s += float(audio_s)
        self.bytes += int(size_bytes)
        now = self.clock()
        if self.shown_at is None or now - self.shown_at >= self.every_s:
            self._show(now)

    def line(self, now: float | None = None) -> str:
        """The progress line as it stands."""
        now = self.clock() if now is None else now
        elapsed = max(now - self.started, 1e-9)
        done = f"{self.files:,}/{self.total:,}" if self.total != 1 else f"{self.files}/1"
        pct = f" ({100 * self.files / self.total:.0f}%)" if self.total else ""
        parts = [f"{self.verb} {done} {'file' if self.total == 1 else 'files'}{pct}",
                 _audio(self.audio_s), _rate(self.files, elapsed)]
        if 0 < self.files < self.total:
            if self.total_bytes and self.bytes:
                left = elapsed * (self.total_bytes - self.bytes) / self.bytes
            else:
                left = elapsed * (self.total - self.files) / self.files
            parts.append(f"about {_duration(max(left, 0.0))} left")
        elif self.files >= self.total:
            parts.append(f"done in {_duration(elapsed)}")
        return ", ".join(parts)

    def _show(self, now: float) -> None:
        self.shown_at, self.shown_files = now, self.files
        text = self.line(now)
        if self.tty:
            self.stream.write("\r" + text.ljust(79) + "\x1b[K")
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def close(self) -> None:
        """Show the last state (and end the terminal line)."""
        if self.closed:
            return
        self.closed = True
        if self.shown_files != self.files or self.shown_at is None:
            self._show(self.clock())
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()


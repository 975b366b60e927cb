"""Waiting in tests for something outside the test's control (a node joining, a task
reaching a node, a server answering, a file appearing): one rule, :func:`wait_for`.

A wait is a deadline on the event, sized from the step it waits for on a loaded 2-core
machine, never a bare sleep: it polls ``probe`` until the event is seen, fails at once when
the event can no longer come (``abort_if``), and when the deadline passes says what it saw
last, so a failure on a busy CI box can be told from a slow one.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class WaitTimeout(TimeoutError):
    """The deadline of :func:`wait_for` passed; ``last`` is the last value the probe gave."""

    def __init__(self, message: str, last: object) -> None:
        super().__init__(message)
        self.last = last


class WaitAborted(RuntimeError):
    """``abort_if`` of :func:`wait_for` said the event can no longer happen."""


def wait_for(probe: Callable[[], T], *, timeout_s: float, what: str, poll_s: float = 0.5,
             until: Callable[[T], object] = bool,
             abort_if: Callable[[], str | None] | None = None) -> T:
    """Call ``probe()`` every ``poll_s`` seconds until ``until(value)`` holds; return that value.

    Parameters
    ----------
    probe : callable
        Looks once (lists the nodes, counts the files, ...). Its exceptions propagate: a
        probe that can fail transiently catches that itself and returns what it saw.
    timeout_s : float
        Deadline for the event, from now.
    what : str
        The event, for the error message ("2 live nodes in the cluster at ...").
    poll_s : float
        Pause between looks (the probe's own duration is not added to the deadline).
    until : callable
        When a value counts as the event (default: truthy).
    abort_if : callable, optional
        Called after every look that missed; a non-empty string (why the event cannot come any more,
        e.g. "the driver exited with code 1: <log>") raises :class:`WaitAborted` at once.

    Raises
    ------
    WaitTimeout
        ``timeout_s`` passed; the message names ``what``, the time waited and the last value.
    WaitAborted
        ``abort_if`` gave a reason; the message carries it and the last value.
    """
    started = time.monotonic()
    deadline = started + timeout_s
    while True:
        value = probe()
        if until(value):
            return value
        last = value
        # Asked after a look, not before: an event that came just before the process
        # exited (its last file written) still counts.
        reason = abort_if() if abort_if is not None else None
        if reason:
            raise WaitAborted(f"gave up waiting for {what} after "
                              f"{time.monotonic() - started:.0f} s: {reason}; "
                              f"last seen: {last!r}")
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise WaitTimeout(f"no {what} after {time.monotonic() - started:.0f} s "
                              f"(deadline {timeout_s:.0f} s); last seen: {last!r}", last)
        time.sleep(min(poll_s, remaining))


def process_exited(proc, log_path=None, *, tail_chars: int = 3000) -> Callable[[], str | None]:
    """An ``abort_if`` for :func:`wait_for`: the reason once ``proc`` (a ``Popen``) has
    exited, with the tail of ``log_path`` when given; ``None`` while it runs."""

    def check() -> str | None:
        code = proc.poll()
        if code is None:
            return None
        reason = f"process {proc.pid} exited with code {code}"
        if log_path is not None:
            try:
                with open(log_path, errors="replace") as fh:
                    reason += f"; its log ends:\n{fh.read()[-tail_chars:]}"
            except OSError as exc:
                reason += f" (log unreadable: {exc})"
        return reason

    return check


def run_to_end(args, *, timeout_s: float, what: str, **kwargs):
    """``subprocess.run(args, capture_output=True, text=True, **kwargs)`` with a deadline,
    in a process group of its own: a run still going after ``timeout_s`` is SIGKILLed with
    everything it started (a local Ray's processes too) and raises :class:`WaitTimeout`
    carrying the ends of what it printed so far, which tell the step it was stuck at."""
    import os
    import signal
    import subprocess

    with subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          start_new_session=True, **kwargs) as proc:
        try:
            out, err = proc.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, err = proc.communicate()  # all it printed, from the start
            raise WaitTimeout(f"no end of {what} after {timeout_s:.0f} s; its stdout ends:\n"
                              f"{out[-2000:]}\nits stderr ends:\n{err[-3000:]}",
                              (out, err)) from None
    return subprocess.CompletedProcess(args, proc.returncode, out, err)

"""What a job shows on its console: quiet by default, everything with ``--verbose``.

Quiet means TensorFlow's start-up notices (oneDNN, CUDA drivers, CPU instructions, absl)
and Ray's start-up and progress noise are not shown; spoofray's own log lines, warnings and
errors are. ``--verbose`` (or ``SPOOFRAY_VERBOSE=1``) shows all of it. The setting is an
environment variable so that Ray workers started on this machine inherit it. No Ray here
(:func:`spoofray.pipeline.runtime.init_ray` quiets Ray itself).
"""

from __future__ import annotations

import atexit
import contextlib
import importlib.abc
import importlib.util
import logging
import os
import re
import sys
import tempfile
import threading
import warnings
from collections.abc import Iterator
from typing import Any

VERBOSE_ENV = "SPOOFRAY_VERBOSE"


def count(n: int, noun: str, plural: str | None = None) -> str:
    """``"1 file"``, ``"2 files"``, ``"1,200 files"``."""
    return f"{n:,} {noun if n == 1 else plural or noun + 's'}"


def verbose() -> bool:
    """True when ``--verbose`` was given (``SPOOFRAY_VERBOSE`` set to anything but 0)."""
    return os.environ.get(VERBOSE_ENV, "0") not in ("", "0", "false", "no")


def set_verbose(on: bool) -> None:
    """Turn verbose output on or off for this process and the workers it starts."""
    os.environ[VERBOSE_ENV] = "1" if on else "0"
    if not on:
        # Read by TensorFlow when it is imported; 3 hides its C++ notices and errors
        # (failures still raise Python exceptions).
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        quiet_other_loggers()
        ignore_known_warnings()


#: Loggers whose INFO lines a quiet job shows (every other library's start at WARNING).
OWN_LOGGER = "spoofray"
#: The log level jobs set up (``jobs/_bootstrap.py``).
LOG_LEVEL_ENV = "SPOOFRAY_LOG_LEVEL"


def quiet_other_loggers() -> None:
    """Other libraries' INFO lines off (``matplotlib.font_manager: generated new
    fontManager``), spoofray's kept: the root logger goes to WARNING and the ``spoofray``
    logger keeps the level the root had. Left alone when ``SPOOFRAY_LOG_LEVEL`` is set:
    whoever asks for a level (DEBUG, to see botocore's retries) gets it for everyone."""
    if os.environ.get(LOG_LEVEL_ENV):
        return
    root = logging.getLogger()
    own = logging.getLogger(OWN_LOGGER)
    if root.level < logging.WARNING:
        if own.level == logging.NOTSET:
            own.setLevel(root.level)
        root.setLevel(logging.WARNING)


#: Python warnings of upstream code a quiet job does not show, by exact message start and
#: category name: each harmless, about code that is not ours. Anything else is shown.
KNOWN_WARNINGS = (
    # Ray Data 2.60 warns about its own use of a deprecated option (Ray Train's dataset
    # config sets it); nothing a user of spoofray can change.
    ("RayDeprecationWarning",
     "`ExecutionOptions.exclude_resources` is deprecated and will be removed"),
)


def ignore_known_warnings() -> None:
    """Drop :data:`KNOWN_WARNINGS` where warnings are shown (``warnings.showwarning``): by
    category name, as the category class is not importable without importing Ray."""
    shown = warnings.showwarning
    if getattr(shown, "_spoofray", False):
        return

    def showwarning(message, category, filename, lineno, file=None, line=None):
        text = str(message)
        if any(category.__name__ == c and text.startswith(m) for c, m in KNOWN_WARNINGS):
            return
        shown(message, category, filename, lineno, file, line)

    showwarning._spoofray = True  # type: ignore[attr-defined]
    warnings.showwarning = showwarning


#: Lines a quiet job drops from its console, as regular expressions matched against the
#: whole line (Ray colours its prefixes: the escapes are optional). Each is harmless, and
#: nothing a spoofray user can act on:
KNOWN_LINES = (
    # Ray's C++ core worker in the driver logs, at error level and straight to stderr, that
    # a restartable actor (Ray Data's map workers, Ray Train's) takes constructor
    # arguments from the object store.
    re.compile(r"^\[[0-9-]+ [0-9:,]+ E \d+ \d+\] core_worker\.cc:\d+: Actor with class name: "
               r"'[^']*' and ID: '[0-9a-f]+' has constructor arguments in the object store "
               r"and max_restarts > 0\. If the arguments in the object store go out of scope "
               r"or are lost, the actor restart will fail\..*$"),
    # The raylet's hint, pushed to the driver's stdout, when a loaded machine starts Ray
    # Tune's or Train's worker processes slower than they are asked for.
    re.compile(r"^(\x1b\[\d+m)?\(raylet\)(\x1b\[0m)? WARNING: \d+ PYTHON worker processes "
               r"have been started on node: [0-9a-f]+ with address: \S+, which is \d+x the "
               r"maximum expected startup concurrency \(\d+\)\. This could be a result of "
               r"using a large number of actors, tasks blocked in ray\.get\(\) calls, or "
               r"tasks with fractional CPU requests .*$"),
)
#: How a :data:`KNOWN_LINES` line can start: a line that starts otherwise is passed on as
#: it comes, before its end (a progress line that ends in ``\r`` shows at once).
_KNOWN_STARTS = (b"[", b"\x1b[", b"(raylet)")

_FILTERS: dict[int, tuple[int, threading.Thread]] = {}


def _could_be_known(start: bytes) -> bool:
    return any(start.startswith(s) or s.startswith(start) for s in _KNOWN_STARTS)


def _pump(read_end: int, real: int) -> None:
    """Copy the pipe to ``real``, line by line, without :data:`KNOWN_LINES`."""
    pending, mid_line = b"", False
    with os.fdopen(read_end, "rb", buffering=0) as pipe:
        while True:
            try:
                chunk = pipe.read(65536)
            except OSError:
                chunk = b""
            if not chunk:
                if pending:
                    os.write(real, pending)
                return
            buf, out = pending + chunk, bytearray()
            while buf:
                end = buf.find(b"\n")
                if mid_line:  # the rest of a line already passed on
                    out += buf if end < 0 else buf[: end + 1]
                    buf, mid_line = (b"", True) if end < 0 else (buf[end + 1:], False)
                elif end < 0:
                    if _could_be_known(buf):
                        break  # held until its end tells what it is
                    out += buf
                    buf, mid_line = b"", True
                else:
                    line, buf = buf[:end], buf[end + 1:]
                    text = line.decode("utf-8", "replace")
                    if not any(p.match(text) for p in KNOWN_LINES):
                        out += line + b"\n"
            pending = buf
            if out:
                os.write(real, bytes(out))


def drop_known_lines() -> None:
    """From now on, what this process writes to file descriptors 1 and 2 passes through a
    filter that drops :data:`KNOWN_LINES` and passes every other line on unchanged (Python's
    ``sys.stdout``/``sys.stderr`` and native code alike: Ray's core worker writes to fd 2
    directly, so no logging setting reaches it). Undone when the process exits."""
    if _FILTERS:
        return
    for fd, stream in ((1, sys.stdout), (2, sys.stderr)):
        stream.flush()
        real = os.dup(fd)
        read_end, write_end = os.pipe()
        os.dup2(write_end, fd)
        os.close(write_end)
        thread = threading.Thread(target=_pump, args=(read_end, real), daemon=True,
                                  name=f"spoofray-console-filter-{fd}")
        thread.start()
        _FILTERS[fd] = (real, thread)
    atexit.register(_stop_filters)


def _stop_filters() -> None:
    """Put the real stdout and stderr back and let the filters write what they still hold."""
    for fd, stream in ((1, sys.stdout), (2, sys.stderr)):
        if fd not in _FILTERS:
            continue
        real, thread = _FILTERS.pop(fd)
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
        os.dup2(real, fd)  # the pipe's last writer here is gone: its pump ends
        thread.join(timeout=5)


@contextlib.contextmanager
def stderr_held_back() -> Iterator[None]:
    """Hold back what native code writes to file descriptor 2 while the block runs; show it
    only when the block raises. TensorFlow writes its import notices before its own log
    level applies, so they cannot be switched off any other way."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            yield
        except BaseException:
            os.dup2(saved, 2)
            held.seek(0)
            os.write(2, held.read())
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)


class _HeldBackImport(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Runs the first ``import tensorflow`` of the process with :func:`stderr_held_back`."""

    def __init__(self) -> None:
        self._loader: Any = None

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> Any:
        if name != "tensorflow" or self._loader is not None:
            return None
        sys.meta_path.remove(self)  # once; the finders after this one find it
        spec = importlib.util.find_spec(name)
        if spec is None or spec.loader is None:
            return spec
        self._loader, spec.loader = spec.loader, self
        return spec

    def create_module(self, spec: Any) -> Any:
        return self._loader.create_module(spec)

    def exec_module(self, module: Any) -> None:
        module.__loader__ = module.__spec__.loader = self._loader  # TensorFlow's own again
        with stderr_held_back():
            self._loader.exec_module(module)


def hold_back_tensorflow_import() -> None:
    """Whoever imports TensorFlow first in this process, its start-up notices are held back
    as in :func:`import_tensorflow`. For Ray workers: Ray Train's TensorflowTrainer imports
    TensorFlow in its controller and worker processes before any spoofray code runs there
    (:func:`spoofray.pipeline.runtime.init_ray` calls this when a worker starts)."""
    if "tensorflow" in sys.modules or any(isinstance(f, _HeldBackImport) for f in sys.meta_path):
        return
    sys.meta_path.insert(0, _HeldBackImport())


def import_tensorflow() -> Any:
    """``import tensorflow`` (and Keras), quietly unless verbose; returns the module."""
    if "tensorflow" in sys.modules or verbose():
        import tensorflow as tf

        return tf
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    with stderr_held_back():
        import keras  # noqa: F401  (imports TensorFlow's backend)
        import tensorflow as tf
    return tf

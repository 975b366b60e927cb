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


def quiet_other_loggers() -> None:
    """Other libraries' INFO lines off (``matplotlib.font_manager: generated new
    fontManager``), spoofray's kept: the root logger goes to WARNING and the ``spoofray``
    logger keeps the level the root had (``SPOOFRAY_LOG_LEVEL``, INFO by default)."""
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


#: Lines native code (Ray's C++ core worker in the driver) writes to stderr that a quiet
#: job drops, as regular expressions matched against the whole line. Each is harmless:
#: Ray Data's and Ray Train's actors are restartable and take constructor arguments from
#: the object store, which Ray's core worker logs at error level for every such actor.
KNOWN_NATIVE_LINES = (
    re.compile(r"^\[[0-9-]+ [0-9:,]+ E \d+ \d+\] core_worker\.cc:\d+: Actor with class name: "
               r"'[^']*' and ID: '[0-9a-f]+' has constructor arguments in the object store "
               r"and max_restarts > 0\. If the arguments in the object store go out of scope "
               r"or are lost, the actor restart will fail\..*$"),
)

_FILTER: dict[str, Any] = {}


def drop_known_native_lines() -> None:
    """From now on, lines written to this process's file descriptor 2 pass through a
    filter that drops :data:`KNOWN_NATIVE_LINES` and writes every other line on, at once
    and unchanged (Python's own ``sys.stderr`` goes through it too). Native code writes
    there directly, so no logging setting reaches it. Undone when the process exits."""
    if _FILTER:
        return
    sys.stderr.flush()
    real = os.dup(2)
    read_end, write_end = os.pipe()
    os.dup2(write_end, 2)
    os.close(write_end)

    def pump() -> None:
        with os.fdopen(read_end, "rb", buffering=0) as pipe:
            pending = b""
            while True:
                try:
                    chunk = pipe.read(65536)
                except OSError:
                    chunk = b""
                if not chunk:
                    if pending:
                        os.write(real, pending)
                    return
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    text = line.decode("utf-8", "replace")
                    if not any(p.match(text) for p in KNOWN_NATIVE_LINES):
                        os.write(real, line + b"\n")

    thread = threading.Thread(target=pump, name="spoofray-stderr-filter", daemon=True)
    thread.start()
    _FILTER.update(real=real, thread=thread)
    atexit.register(_stop_filter)


def _stop_filter() -> None:
    """Put the real stderr back and let the filter write what it still holds."""
    if not _FILTER:
        return
    try:
        sys.stderr.flush()
    except (OSError, ValueError):
        pass
    os.dup2(_FILTER["real"], 2)  # the pipe's last writer here is gone: the pump ends
    _FILTER["thread"].join(timeout=5)
    _FILTER.clear()


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

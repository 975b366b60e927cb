"""What a job shows on its console: quiet by default, everything with ``--verbose``.

Quiet means TensorFlow's start-up notices (oneDNN, CUDA drivers, CPU instructions, absl)
and Ray's start-up and progress noise are not shown; spoofray's own log lines, warnings and
errors are. ``--verbose`` (or ``SPOOFRAY_VERBOSE=1``) shows all of it. The setting is an
environment variable so that Ray workers started on this machine inherit it. No Ray here
(:func:`spoofray.pipeline.runtime.init_ray` quiets Ray itself).
"""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.util
import os
import sys
import tempfile
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

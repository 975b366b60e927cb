"""What a job shows on its console: quiet by default, everything with ``--verbose``.

Quiet means TensorFlow's start-up notices (oneDNN, CUDA drivers, CPU instructions, absl)
and Ray's start-up and progress noise are not shown; spoofray's own log lines, warnings and
errors are. ``--verbose`` (or ``SPOOFRAY_VERBOSE=1``) shows all of it. The setting is an
environment variable so that Ray workers started on this machine inherit it. No Ray here
(:func:`spoofray.pipeline.runtime.init_ray` quiets Ray itself).
"""

from __future__ import annotations

import contextlib
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

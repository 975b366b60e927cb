"""Checks that need no cluster: the jobs run them before Ray or TensorFlow start.

A wrong ``--output`` (a file, an earlier run's folder, an unwritable place), a missing
bundle or input, or S3 without credentials must not cost a Ray start-up, let alone a whole
scoring pass: each is refused here with a one-line :class:`~spoofray.errors.SpoofrayError`
that the job prints with exit code 2. Every job's own ``preflight`` (``score``, ``extract``,
the audit) is made of these checks plus the listing of its input. No Ray here.
"""

from __future__ import annotations

import os
import posixpath

from spoofray import storage
from spoofray.errors import ConfigError

#: The marker of a published run folder (:data:`spoofray.reports.SUCCESS_MARKER`).
_SUCCESS = "_SUCCESS"


def check_output_root(uri: str, *, flag: str = "--output") -> None:
    """``uri`` can take this job's output: a writable folder, or one that can be made.

    Locally: an existing writable folder, or a path whose nearest existing parent is a
    writable folder. On S3: a prefix in a bucket that exists (the prefix need not), and
    not an existing object.

    Raises
    ------
    ConfigError
        ``uri`` is a file, cannot be created or written, or its bucket is missing.
    """
    if storage.is_remote(uri):
        fs, path = storage.filesystem(uri)
        bucket = path.split("/", 1)[0]
        scheme = uri.split("://", 1)[0]
        try:
            if not storage.exists(f"{scheme}://{bucket}"):
                raise ConfigError(f"{flag} {uri}: bucket {bucket} does not exist (or these "
                                  "credentials cannot see it); create it or fix the URI")
            if path != bucket and storage.is_file(uri):
                raise ConfigError(f"{flag} {uri} is an object, not a prefix: give a prefix "
                                  "(a folder) to write into")
        except PermissionError as exc:
            raise ConfigError(f"{flag} {uri}: access denied ({exc}); check the credentials' "
                              "permissions on that bucket") from None
        return
    path = os.path.abspath(os.path.expanduser(uri))
    if os.path.exists(path):
        if not os.path.isdir(path):
            raise ConfigError(f"{flag} {uri} is a file: give a folder (it is created when "
                              "missing)")
        if not os.access(path, os.W_OK | os.X_OK):
            raise ConfigError(f"{flag} {uri}: this user cannot write into that folder")
        return
    parent = path
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise ConfigError(f"{flag} {uri} cannot be created: {parent} is a file")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ConfigError(f"{flag} {uri} cannot be created: this user cannot write into "
                          f"{parent}")


def check_not_a_run(uri: str, *, flag: str = "--output") -> None:
    """Refuse an ``--output`` that is itself an earlier run's folder (``run_id=<id>/``):
    a new run would be nested inside it. The output is the root the runs go under."""
    name = posixpath.basename(uri.rstrip("/"))
    if name.startswith("run_id=") or storage.exists(storage.join(uri, _SUCCESS)):
        parent = posixpath.dirname(uri.rstrip("/")) or "."
        raise ConfigError(f"{flag} {uri} is the folder of an earlier run; give the report "
                          f"root instead (each run adds its own run_id=<id>/ there), e.g. "
                          f"{parent}")

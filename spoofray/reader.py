"""The one reader of input files: the raw bytes of a listed file, under the input limits.

Local files must be regular files and remote reads retry transient storage faults; a file
over ``AudioConfig.max_file_bytes`` is refused before (or while) it is read. Both
:func:`spoofray.featurize.featurize_file` and :func:`spoofray.audio.load_path` read through
here, so every way into the pipeline gets the same checks.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from spoofray import storage
from spoofray.config import FeatureConfig
from spoofray.errors import AudioTooLongError, FileReadError, InputFileError


def read_item_bytes(item: Mapping[str, Any], cfg: FeatureConfig) -> bytes:
    """The raw bytes of ``item['uri']``, refusing files over the configured size limit.

    Local files must be regular files (a FIFO or a link to ``/dev/zero`` named ``.wav``
    would hang or stream forever). Remote reads retry transient storage faults with
    backoff; an outage that outlasts the retry budget raises
    :class:`~spoofray.storage.StorageUnavailableError` (a run failure, not an error row).

    Raises
    ------
    FileReadError
        Missing, unreadable, not a regular file, or a non-transient storage error.
    AudioTooLongError
        Over ``cfg.audio.max_file_bytes``.
    StorageUnavailableError
        The store stayed unreachable.
    """
    uri = item["uri"]
    limit = cfg.audio.max_file_bytes

    def too_big(size: int | None) -> AudioTooLongError | None:
        if size is None or size <= limit:
            return None
        return AudioTooLongError(
            f"{uri}: {size} bytes is over the {limit}-byte limit (AudioConfig.max_file_bytes); "
            "raise the limit to process it")

    def read_remote() -> bytes:
        fs, path = storage.filesystem(uri)
        size = item.get("size_bytes")
        if size is None:
            size = fs.size(path)
        if (exc := too_big(size)) is not None:
            raise exc
        with fs.open(path, "rb") as fh:
            # Read one byte past the limit so a file that grew since listing is still refused.
            return fh.read(limit + 1)

    try:
        if storage.is_remote(uri):
            data = storage.with_retries(read_remote, what=f"reading {uri}")
        else:
            path = storage.filesystem(uri)[1]
            if (exc := too_big(os.stat(path).st_size)) is not None:  # sparse 3 GiB: not read
                raise exc
            data = storage.read_local_file(path, limit)
    except (InputFileError, storage.StorageUnavailableError):
        raise
    except (OSError, ValueError) as exc:  # missing, permissions, not a file, storage errors
        hint = ""
        if "\\x" in uri and isinstance(exc, FileNotFoundError):
            hint = (" (its name is not valid UTF-8, so it was listed with \\x escapes and "
                    "cannot be opened by that name: rename the file to UTF-8)")
        raise FileReadError(
            f"{uri}: could not read the file ({type(exc).__name__}: {exc}){hint}") from exc
    if len(data) > limit:
        raise AudioTooLongError(
            f"{uri}: larger than the {limit}-byte limit (AudioConfig.max_file_bytes)")
    return data

"""Resuming an unfinished pipeline run from the parts it already finished.

Scoring (:mod:`spoofray.pipeline.score`) and extraction (:mod:`spoofray.pipeline.extract`)
write their output as parts under a temporary folder, each part written whole (one
rename locally, one PUT on S3) and covering a known set of inputs. A run that was killed
(SIGKILL, OOM, lost head node, lost driver) leaves that folder behind; started again with
``--resume`` it lists its input again, keeps the inputs its finished parts cover and
processes only the rest.

The temporary folder starts with a record of the settings the parts depend on
(:data:`RECORD_NAME`); a resume with other settings (another bundle, threshold, feature
config, input) is refused, naming what differs. No Ray here.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from spoofray import storage
from spoofray.errors import ConfigError, OutputExistsError

log = logging.getLogger(__name__)

#: The settings record at the top of a run's temporary folder.
RECORD_NAME = "_resume.json"
FORMAT = "spoofray-resume/1"


def differences(before: Mapping[str, Any], now: Mapping[str, Any]) -> list[str]:
    """``"<key>: <before> then, <now> now"`` for each key whose value differs."""
    keys = sorted(set(before) | set(now))
    return [f"{k}: {before.get(k)!r} then, {now.get(k)!r} now"
            for k in keys if before.get(k) != now.get(k)]


def read_record(tmp: str) -> dict[str, Any] | None:
    """The settings record of the unfinished run in ``tmp``; None when there is none."""
    uri = storage.join(tmp, RECORD_NAME)
    if not storage.exists(uri):
        return None
    try:
        record = json.loads(storage.read_bytes(uri))
    except ValueError as exc:
        raise ConfigError(f"{uri} is not valid JSON ({exc}); delete {tmp} to start over") \
            from exc
    return record if isinstance(record, dict) else None


def write_record(tmp: str, settings: Mapping[str, Any]) -> None:
    storage.write_bytes_atomic(storage.join(tmp, RECORD_NAME), json.dumps(
        {"format": FORMAT, "settings": dict(settings)}, indent=2, sort_keys=True,
        default=str).encode())


def open_tmp(tmp: str, settings: Mapping[str, Any], *, resume: bool, what: str,
             restart_hint: str) -> bool:
    """Get ``tmp`` ready for a run with ``settings``; True when an unfinished run is resumed.

    Parameters
    ----------
    tmp : str
        The run's temporary folder.
    settings : mapping
        JSON-able settings the parts depend on (bundle checksum, threshold, feature-config
        hash, input, ...): a resume must find the same.
    resume : bool
        Continue what an earlier attempt left in ``tmp``.
    what : str
        Names the run in messages (``"scoring run 'r1'"``).
    restart_hint : str
        How to start afresh instead (``"choose another --run-id"``).

    Raises
    ------
    OutputExistsError
        ``tmp`` holds an unfinished run and ``resume`` is False.
    ConfigError
        ``resume`` with settings other than the unfinished run's (each difference named),
        or a folder without a readable settings record.
    """
    if storage.exists_nonempty(tmp) and not _holds_parts(tmp):
        storage.remove(tmp)  # stopped before it finished a part: nothing to keep
    if not storage.exists_nonempty(tmp):
        if resume:
            log.warning("%s: nothing to resume at %s; starting from the beginning", what, tmp)
        write_record(tmp, settings)
        return False
    if not resume:
        raise OutputExistsError(
            f"{tmp} holds the unfinished parts of {what} (an earlier attempt was stopped). "
            f"Pass --resume to keep them and process only the rest, or {restart_hint}")
    record = read_record(tmp)
    if record is None or record.get("format") != FORMAT:
        raise ConfigError(
            f"cannot resume {what}: {tmp} has no {RECORD_NAME} (left by an older spoofray, or "
            f"stopped before it started); delete {tmp}, or {restart_hint}")
    changed = differences(record.get("settings") or {}, json.loads(json.dumps(
        dict(settings), default=str)))
    if changed:
        raise ConfigError(
            f"cannot resume {what} with other settings than it started with: "
            + "; ".join(changed) + f". Resume with the same settings, or {restart_hint}")
    return True


def _holds_parts(tmp: str) -> bool:
    """True when ``tmp`` holds a finished Parquet part anywhere below it."""
    return bool(storage.list_files(tmp, suffix=".parquet"))


def covered_uris(parts: Iterable[str], read_uris: Callable[[str], Iterable[str]]
                 ) -> tuple[dict[str, list[str]], list[str]]:
    """Which inputs finished parts cover.

    Parameters
    ----------
    parts : iterable of str
        URIs of finished part files.
    read_uris : callable
        A part's URI → the input URIs in it (its ``uri`` column).

    Returns
    -------
    kept : dict
        Part URI → its input URIs, for the parts that share no input with another part.
    overlapping : list of str
        Parts that share an input with another part (a retried task batched differently
        can leave such): their inputs are not covered; the caller removes them.
    """
    by_part = {p: sorted(set(read_uris(p))) for p in parts}
    owners: dict[str, int] = {}
    for uris in by_part.values():
        for u in uris:
            owners[u] = owners.get(u, 0) + 1
    overlapping = sorted(p for p, uris in by_part.items() if any(owners[u] > 1 for u in uris))
    return {p: u for p, u in by_part.items() if p not in overlapping}, overlapping

"""File formats of the field, in and out: lhotse manifests and ASVspoof score files.

No lhotse import (it pulls in torch): its JSONL manifests are plain JSON lines, read and
written here.

* **lhotse** ``RecordingSet`` JSONL (``.jsonl`` or ``.jsonl.gz``), one recording per line:
  ``{"id", "sources": [{"type": "file"|"url", "channels": [...], "source": path}],
  "sampling_rate", "num_samples", "duration"}``; a ``SupervisionSet`` JSONL, one segment
  per line: ``{"id", "recording_id", "start", "duration", "channel", "speaker",
  "custom"}``. As an input (:func:`spoofray.sources.read_lhotse`), recordings name the
  files and supervisions (optional) their speakers and labels (``custom.label``,
  ``custom.attack``). As an output (:func:`segments_as_supervisions`), a report's
  suspicious spans become supervisions.
* **ASVspoof score files**: a countermeasure (CM) score file has one line per utterance,
  higher = bona fide (:func:`cm_score_lines`): ``utt score`` or, when labels are known,
  the 2019 layout ``utt attack key score``; an ASV score file (:func:`read_asv_scores`) has
  lines ``[speaker] [utt] key score`` with ``key`` in target/nontarget/spoof, as
  ``tDCF_python_v1`` reads them.
"""

from __future__ import annotations

import gzip
import json
import math
import posixpath
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from spoofray import storage
from spoofray.errors import SourceError

LHOTSE_EXTENSIONS = (".jsonl", ".jsonl.gz")
ASV_KEYS = ("target", "nontarget", "spoof")


# --- lhotse JSONL ------------------------------------------------------------------------------


def is_lhotse(uri: str) -> bool:
    return uri.lower().endswith(LHOTSE_EXTENSIONS)


def read_jsonl(uri: str) -> list[dict[str, Any]]:
    """The records of a JSONL file (gzip when it ends ``.gz``), local or ``s3://``."""
    try:
        data = storage.read_bytes(uri)
    except FileNotFoundError:
        raise SourceError(f"no such file: {uri}") from None
    if uri.lower().endswith(".gz"):
        data = gzip.decompress(data)
    out = []
    for n, line in enumerate(data.decode("utf-8").splitlines(), 1):
        if line.strip():
            try:
                out.append(json.loads(line))
            except ValueError as exc:
                raise SourceError(f"{uri} line {n} is not JSON ({exc}); expected a lhotse "
                                  "manifest, one JSON object per line") from None
    return out


def write_jsonl(uri: str, records: Iterable[Mapping[str, Any]]) -> None:
    """Write records as JSONL (gzip when ``uri`` ends ``.gz``), atomically."""
    data = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode()
    storage.write_bytes_atomic(uri, gzip.compress(data) if uri.lower().endswith(".gz") else data)


def manifest_kind(records: Sequence[Mapping[str, Any]], uri: str) -> str:
    """``"recordings"`` or ``"supervisions"``, from the first record's keys."""
    if not records:
        raise SourceError(f"lhotse manifest {uri} is empty")
    first = records[0]
    if "sources" in first:
        return "recordings"
    if "recording_id" in first:
        return "supervisions"
    raise SourceError(f"{uri}: neither a lhotse RecordingSet (records with 'sources') nor a "
                      f"SupervisionSet (records with 'recording_id'); first record has keys "
                      f"{sorted(first)}")


def sibling(uri: str, kind: str) -> str:
    """lhotse recipes name a corpus part's two manifests ``<x>_recordings_<part>.jsonl.gz``
    and ``<x>_supervisions_<part>.jsonl.gz``: the other one's URI."""
    other = {"recordings": "supervisions", "supervisions": "recordings"}[kind]
    base = posixpath.basename(uri)
    if kind not in base:
        return ""
    return uri[: len(uri) - len(base)] + base.replace(kind, other, 1)


def recording_source(record: Mapping[str, Any], where: str) -> str:
    """The one audio file (path or URL, as written) of a lhotse recording."""
    sources = record.get("sources") or []
    if len(sources) != 1 or sources[0].get("type") not in ("file", "url"):
        raise SourceError(f"{where}: recording {record.get('id')!r} has {len(sources)} sources "
                          f"of types {[s.get('type') for s in sources]}; spoofray reads "
                          "recordings with one 'file' or 'url' source (all channels in one file)")
    return str(sources[0]["source"])


# --- outputs -------------------------------------------------------------------------------


def utterance_ids(uris: Sequence[str], named: Mapping[str, str] | None = None) -> list[str]:
    """One whitespace-free id per file for score files and supervisions: the id ``named``
    gives it (a lhotse recording id), else its file name without extension; the path
    below the files' common folder when names repeat."""
    named = named or {}
    stems = [named.get(u) or posixpath.splitext(posixpath.basename(u))[0] for u in uris]
    if len(set(stems)) != len(stems):
        root = posixpath.commonpath(uris) if len(uris) > 1 else ""
        stems = [named.get(u) or posixpath.splitext(u[len(root):].lstrip("/"))[0]
                 for u in uris]
    ids = ["_".join(s.split()) for s in stems]
    if len(set(ids)) != len(ids):
        raise SourceError("two files would get the same utterance id; rename them")
    return ids


def cm_score_lines(ids: Sequence[str], spoof_scores: Sequence[float],
                   labels: Sequence[str | None] | None = None,
                   attacks: Sequence[str | None] | None = None) -> list[str]:
    """ASVspoof countermeasure score lines, higher = bona fide (``1 - spoof_score``).

    With ``labels`` for every file: ``utt attack key score`` (ASVspoof 2019 layout,
    ``-`` for a bona fide file's attack); otherwise ``utt score``.
    """
    full = labels is not None and all(lab in ("bonafide", "spoof") for lab in labels)
    out = []
    for i, (utt, p) in enumerate(zip(ids, spoof_scores)):
        score = f"{1.0 - float(p):.9g}"
        if full:
            attack = (attacks[i] if attacks is not None else None) or "-"
            out.append(f"{utt} {'-' if labels[i] == 'bonafide' else attack} {labels[i]} {score}")
        else:
            out.append(f"{utt} {score}")
    return out


def segments_as_supervisions(segments: Iterable[Mapping[str, Any]], ids: Mapping[str, str]
                             ) -> list[dict[str, Any]]:
    """Suspicious spans (rows of the segments table) as lhotse supervisions: the span's
    recording (``ids``: uri → recording id), start, duration, channel (0 for a file scored
    mixed down) and ``custom`` ``{"label": "spoof", "spoof_score": ...}``."""
    out, seen = [], {}
    for s in segments:
        rec = ids[s["uri"]]
        channel = s.get("channel")
        channel = 0 if channel is None or (isinstance(channel, float) and math.isnan(channel)) \
            else int(channel)
        n = seen[rec] = seen.get(rec, -1) + 1
        out.append({"id": f"{rec}-spoof-{n:04d}", "recording_id": rec,
                    "start": round(float(s["start_s"]), 4),
                    "duration": round(float(s["end_s"]) - float(s["start_s"]), 4),
                    "channel": channel,
                    "custom": {"label": "spoof", "spoof_score": float(s["score"])}})
    return out


# --- ASV scores ----------------------------------------------------------------------------


def read_asv_scores(uri: str) -> dict[str, list[float]]:
    """An ASV score file as ``{"target": [...], "nontarget": [...], "spoof": [...]}``
    (the ``asv_scores`` of :func:`spoofray.metrics.evaluate`): lines whose last two fields
    are ``key score``."""
    try:
        text = storage.read_bytes(uri).decode()
    except FileNotFoundError:
        raise SourceError(f"no such ASV score file: {uri}") from None
    out: dict[str, list[float]] = {k: [] for k in ASV_KEYS}
    for n, line in enumerate(text.splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) < 2 or fields[-2] not in ASV_KEYS:
            raise SourceError(f"{uri} line {n}: expected '[speaker] [utt] key score' with key "
                              f"in {list(ASV_KEYS)}, got {line.strip()!r}")
        try:
            out[fields[-2]].append(float(fields[-1]))
        except ValueError:
            raise SourceError(f"{uri} line {n}: score {fields[-1]!r} is not a number") from None
    return out

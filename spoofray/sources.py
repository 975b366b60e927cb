"""Listing and labels: which audio files a run reads, and what is known about each.

Four kinds of input become one sorted list of :class:`AudioItem`:

- a local folder or ``s3://bucket/prefix``, listed recursively (:func:`list_audio`);
  folders named like a label (``real/``, ``fake/``, ``bonafide/``, ``spoof/`` …) label
  the files below them, and the folder right under a spoof folder names the attack;
- a manifest CSV/Parquet with a ``path`` column (:func:`read_manifest`);
- an ASVspoof CM protocol plus an audio root (:func:`read_asvspoof_protocol`);
- a lhotse ``RecordingSet`` or ``SupervisionSet`` JSONL (:func:`read_lhotse`);
- a single audio file.

:func:`resolve_inputs` picks the right reader from what the input is. Everything here
only lists and labels; no audio is read.
"""

from __future__ import annotations

import dataclasses
import io
import logging
import math
import os
import posixpath
from typing import Any

from spoofray import interchange
from spoofray.errors import LabelError, SourceError
from spoofray.storage import filesystem, is_remote, redact, retrying, to_uri

logger = logging.getLogger(__name__)

#: File name endings treated as audio when listing folders (compared case-insensitively).
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3", ".m4a", ".opus")

#: Every accepted spelling (lower case) of each label.
BONAFIDE_SPELLINGS = ("bonafide", "genuine", "real", "bona-fide", "bona_fide")
SPOOF_SPELLINGS = ("spoof", "fake", "spoofed", "synthetic")
_LABEL_BY_SPELLING = {
    **{s: "bonafide" for s in BONAFIDE_SPELLINGS},
    **{s: "spoof" for s in SPOOF_SPELLINGS},
}
_NO_VALUE = ("", "-")

MANIFEST_EXTENSIONS = (".csv", ".parquet", ".pq")
PROTOCOL_EXTENSIONS = (".txt", ".tsv")  # ASVspoof 5 ships whitespace-separated ".tsv"
_OPTIONAL_MANIFEST_COLUMNS = ("label", "attack", "speaker", "group")


@dataclasses.dataclass(frozen=True)
class AudioItem:
    """One input file and what the listing knows about it.

    Attributes
    ----------
    uri : str
        Absolute local path or ``s3://bucket/key``.
    label : {'bonafide', 'spoof'} or None
        Ground truth when the input provides it.
    attack : str or None
        Generating system of a spoofed file, when known.
    speaker : str or None
        Speaker identifier, when known (used to keep evaluation splits speaker-disjoint).
    group : str or None
        Any further grouping key for disjoint splits (source recording, session, …).
    size_bytes : int or None
        Size from the listing; None when the file is missing or its size is unknown.
    """

    uri: str
    label: str | None = None
    attack: str | None = None
    speaker: str | None = None
    group: str | None = None
    size_bytes: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# --- labels ---------------------------------------------------------------------------


def _is_missing(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    if type(value).__name__ in ("NAType", "NaTType"):  # pandas missing markers
        return True
    try:  # numpy NaN scalars (float32 etc.)
        return bool(value != value)
    except (TypeError, ValueError):
        return False


def normalize_label(value: Any, *, where: str | None = None) -> str | None:
    """The canonical label for one of its accepted spellings.

    Parameters
    ----------
    value : str or None
        A label as written by a user or dataset. Case and surrounding spaces are ignored.
    where : str, optional
        Where the value came from (``"manifest.csv row 12"``), put first in the error.

    Returns
    -------
    {'bonafide', 'spoof'} or None
        None for ``None``, NaN, ``""`` and ``"-"`` (unlabelled).

    Raises
    ------
    LabelError
        For any other value; the message names it and lists the accepted spellings.
    """
    if _is_missing(value):
        return None
    text = value.strip() if isinstance(value, str) else None
    if text is not None:
        if text in _NO_VALUE:
            return None
        label = _LABEL_BY_SPELLING.get(text.lower())
        if label is not None:
            return label
    prefix = f"{where}: " if where else ""
    raise LabelError(
        f"{prefix}unknown label {value!r}; expected one of {', '.join(BONAFIDE_SPELLINGS)} "
        f"(bona fide) or {', '.join(SPOOF_SPELLINGS)} (spoof), any case, or empty/'-' for "
        "unlabelled. Fix the value or leave it empty."
    )


def _label_of_folder(name: str) -> str | None:
    return _LABEL_BY_SPELLING.get(name.lower())


def _optional_text(value: Any) -> str | None:
    """A free-text cell (attack, speaker, group) with ``""``/``"-"``/NaN meaning none."""
    if _is_missing(value):
        return None
    if isinstance(value, float) and value.is_integer():
        # Parquet/pandas turn integer ids into floats once a column has a gap.
        value = int(value)
    text = str(value).strip()
    return None if text in _NO_VALUE else text


def is_audio_path(path: str) -> bool:
    """True when ``path`` ends with one of :data:`AUDIO_EXTENSIONS` (any case)."""
    return path.lower().endswith(AUDIO_EXTENSIONS)


def _utf8_path(path: str) -> str:
    """``path`` as UTF-8-safe text: an undecodable name (lone surrogates, which no Arrow
    string column accepts, so one such name would fail a whole run) becomes its
    ``\\xNN``-escaped spelling; the file then gets an error row saying to rename it."""
    try:
        path.encode("utf-8")
        return path
    except UnicodeEncodeError:
        escaped = os.fsencode(path).decode("utf-8", "backslashreplace")
        logger.warning("file name is not valid UTF-8: %s; it will be an error row (rename it "
                       "to UTF-8 to process it)", escaped)
        return escaped


# --- folders and prefixes ---------------------------------------------------------------


def _labels_from_folders(folders: list[str]) -> tuple[str | None, str | None]:
    """(label, attack) from the folder names between the listing root and a file."""
    for i, name in enumerate(folders):
        label = _label_of_folder(name)
        if label is None:
            continue
        attack = folders[i + 1] if label == "spoof" and i + 1 < len(folders) else None
        return label, attack
    return None, None


def _walk_local(root: str) -> tuple[list[tuple[str, int | None]], int]:
    """Audio files below a local folder as (path, size), and the count of skipped files.

    Directory symlinks are followed, but each real directory is entered once (keyed by
    device and inode), so symlink loops end and a linked folder is not listed twice.
    """
    found: list[tuple[str, int | None]] = []
    skipped = 0
    root_stat = os.stat(root)
    seen = {(root_stat.st_dev, root_stat.st_ino)}
    stack = [root]
    while stack:
        folder = stack.pop()
        try:
            with os.scandir(folder) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            logger.warning("cannot list %s (%s); its files are left out", folder, exc)
            continue
        subfolders = []
        for entry in entries:
            if entry.name.startswith("."):
                continue
            try:
                if entry.is_dir(follow_symlinks=True):
                    st = entry.stat(follow_symlinks=True)
                    key = (st.st_dev, st.st_ino)
                    if key in seen:
                        logger.info("not entering %s: already listed (symlink loop?)", entry.path)
                        continue
                    seen.add(key)
                    subfolders.append(entry.path)
                    continue
            except OSError:
                pass  # broken or unreadable link: handled as a file below
            if not is_audio_path(entry.name):
                skipped += 1
                continue
            try:
                size: int | None = entry.stat(follow_symlinks=True).st_size
            except OSError:
                size = None  # dangling link: kept, the reader reports it as an error row
            found.append((entry.path, size))
        stack.extend(reversed(subfolders))
    return found, skipped


def _walk_remote(fs: Any, root: str) -> tuple[list[tuple[str, int | None]], int]:
    """Audio objects below a remote prefix as (path, size), and the count skipped."""
    fs.invalidate_cache(root)  # fsspec instances are shared; a stale listing misses new files
    found: list[tuple[str, int | None]] = []
    skipped = 0
    found_all = retrying(to_uri(fs, root), "listing",
                         lambda: fs.find(root, detail=True, withdirs=False))
    for path, info in found_all.items():
        rel = posixpath.relpath(path, root)
        if rel == "." or any(part.startswith(".") for part in rel.split("/")):
            continue
        if not is_audio_path(path):
            skipped += 1
            continue
        found.append((path, info.get("size")))
    return found, skipped


def list_audio(uri: str) -> list[AudioItem]:
    """Every audio file below a local folder or ``s3://`` prefix, recursively.

    Hidden files and folders (name starting with ``.``) are skipped; other non-audio
    files are skipped and counted in an INFO log line. The first folder below ``uri``
    whose name is a label spelling (``real``, ``fake``, ``bonafide``, ``spoof`` …) labels
    the files under it; below a spoof folder, the next folder names the attack::

        <uri>/spoof/griffinlim/x.wav        -> label 'spoof', attack 'griffinlim'
        <uri>/ljspeech/bonafide/LJ001.flac  -> label 'bonafide', attack None

    Parameters
    ----------
    uri : str
        Local folder or ``s3://bucket/prefix``.

    Returns
    -------
    list of AudioItem
        Sorted by ``uri``, ``size_bytes`` filled. Empty when nothing matched.

    Raises
    ------
    SourceError
        When ``uri`` does not exist or is not a folder/prefix.
    """
    fs, root = filesystem(uri)
    remote = is_remote(uri)
    if remote:
        fs.invalidate_cache(root)
    if not retrying(uri, "checking", lambda: fs.exists(root)):
        raise SourceError(f"no such file or folder: {uri}")
    if not retrying(uri, "checking", lambda: fs.isdir(root)):
        raise SourceError(
            f"list_audio expects a folder or prefix, got the file {uri}; "
            "use resolve_inputs() for single files, manifests and protocols"
        )
    found, skipped = _walk_remote(fs, root) if remote else _walk_local(root)
    if skipped:
        logger.info("skipped %d non-audio file(s) under %s (audio: %s)",
                    skipped, uri, " ".join(AUDIO_EXTENSIONS))
    rel_of = (lambda p: posixpath.relpath(p, root)) if remote else (
        lambda p: os.path.relpath(p, root).replace(os.sep, "/"))
    items = []
    for path, size in found:
        path = path if remote else _utf8_path(path)
        label, attack = _labels_from_folders(rel_of(path).split("/")[:-1])
        items.append(AudioItem(uri=to_uri(fs, path), label=label, attack=attack,
                               size_bytes=size))
    return sorted(items, key=lambda item: item.uri)


# --- sizes of named files -----------------------------------------------------------------


def _sizes(uris: list[str], root_uri: str) -> dict[str, int | None]:
    """Size of each named file, None when it is missing (or not a regular file).

    Local files are stat-ed one by one (cheap). S3 objects below ``root_uri`` come from one
    listing of that prefix rather than one request per object; others are asked singly.
    """
    sizes: dict[str, int | None] = {}
    listed: dict[str, int | None] = {}
    root_prefix = root_uri.rstrip("/") + "/"
    if is_remote(root_uri) and any(u.startswith(root_prefix) for u in uris):
        fs, root = filesystem(root_uri)
        fs.invalidate_cache(root)
        found = retrying(root_uri, "listing", lambda: fs.find(root, detail=True, withdirs=False)
                         if fs.exists(root) else {})
        listed = {to_uri(fs, path): info.get("size") for path, info in found.items()}
    for uri in uris:
        if not is_remote(uri):
            sizes[uri] = os.path.getsize(uri) if os.path.isfile(uri) else None
        elif uri in listed or (is_remote(root_uri) and uri.startswith(root_prefix)):
            sizes[uri] = listed.get(uri)
        else:
            fs, path = filesystem(uri)
            try:
                info = fs.info(path)
                sizes[uri] = info.get("size") if info.get("type") == "file" else None
            except (FileNotFoundError, PermissionError):
                sizes[uri] = None
    return sizes


def _parent_uri(uri: str) -> str:
    if is_remote(uri):
        return posixpath.dirname(uri.rstrip("/"))
    return os.path.dirname(os.path.abspath(uri))


# --- manifests ----------------------------------------------------------------------------


def _manifest_uri(value: str, root_uri: str, where: str) -> str:
    """The URI a manifest ``path`` cell names, refusing anything outside the root."""
    text = value.strip()
    if not text:
        raise SourceError(f"{where}: empty path; every row needs the file it describes")
    if text.startswith("s3://"):
        return text
    if text.startswith("file://"):
        text = text[len("file://"):]
    elif "://" in text:
        raise SourceError(
            f"{where}: unsupported scheme in path {redact(value)!r}; use a path relative to the "
            "manifest, or an s3:// URI"
        )
    outside = (
        f"{where}: path {redact(value)!r} points outside {root_uri}; paths must stay below that "
        "folder (or be s3:// URIs). Fix the path, or move the manifest/audio root up."
    )
    if is_remote(root_uri):
        if text.startswith("/"):
            raise SourceError(outside)
        rel = posixpath.normpath(text)
        if rel == ".." or rel.startswith("../"):
            raise SourceError(outside)
        return f"{root_uri.rstrip('/')}/{rel}"
    full = os.path.normpath(os.path.join(root_uri, text))
    if os.path.commonpath([full, root_uri]) != root_uri:
        raise SourceError(outside)
    return full


def _read_table(uri: str) -> Any:
    import pandas as pd  # heavy; only manifest reading needs it

    fs, path = filesystem(uri)
    parquet = uri.lower().endswith((".parquet", ".pq"))
    try:
        fh = io.BytesIO(retrying(uri, "reading", lambda: fs.cat_file(path)))
        if parquet:
            return pd.read_parquet(fh)
        # Everything as text: ids like "0012" must keep their zeros, "-" stays "-".
        return pd.read_csv(fh, dtype=str, keep_default_na=False, skipinitialspace=True)
    except FileNotFoundError:
        raise SourceError(f"no such file or folder: {uri}") from None
    except pd.errors.EmptyDataError:
        raise SourceError(f"manifest {uri} is empty; it needs a header with a "
                          "'path' column and one row per file") from None
    except (ValueError, OSError, UnicodeDecodeError) as exc:
        kind = "Parquet" if parquet else "CSV (UTF-8, comma-separated, header row)"
        raise SourceError(f"cannot read manifest {uri} as {kind}: {exc}") from exc


def read_manifest(uri: str) -> list[AudioItem]:
    """Items listed in a manifest CSV or Parquet file.

    Columns: ``path`` (required) — relative to the manifest's folder, or an ``s3://``
    URI; optional ``label``, ``attack``, ``speaker``, ``group`` (``""``/``"-"`` = none).
    Other columns are ignored. Rows whose file is missing are kept with
    ``size_bytes=None``: every row reaches the report, as an error row if need be.

    Parameters
    ----------
    uri : str
        Local path or ``s3://`` URI of a ``.csv``, ``.parquet`` or ``.pq`` file.

    Returns
    -------
    list of AudioItem
        One per row, sorted by ``uri``.

    Raises
    ------
    SourceError
        Unreadable or empty manifest, no ``path`` column, a path leaving the manifest's
        folder, or the same file twice. Rows are numbered from 1 (first data row).
    LabelError
        A label that is not a known spelling, naming the manifest and row.
    """
    if not is_remote(uri):
        uri = os.path.abspath(os.path.expanduser(uri))
    table = _read_table(uri)
    if "path" not in table.columns:
        raise SourceError(
            f"manifest {uri} has no 'path' column; found columns {list(table.columns)}. "
            "Add a 'path' column with each file's path relative to the manifest."
        )
    if len(table) == 0:
        raise SourceError(f"manifest {uri} has no rows; it must list at least one file")
    root_uri = _parent_uri(uri)
    present = [c for c in _OPTIONAL_MANIFEST_COLUMNS if c in table.columns]
    columns = {c: table[c].tolist() for c in ("path", *present)}
    rows = []
    first_row_of: dict[str, int] = {}
    for i, raw_path in enumerate(columns["path"]):
        where = f"manifest {uri} row {i + 1}"
        if _is_missing(raw_path):
            raise SourceError(f"{where}: empty path; every row needs the file it describes")
        file_uri = _manifest_uri(str(raw_path), root_uri, where)
        if file_uri in first_row_of:
            raise SourceError(
                f"{where}: path {raw_path!r} is the same file as row {first_row_of[file_uri]} "
                f"({file_uri}); list each file once"
            )
        first_row_of[file_uri] = i + 1
        get = {c: columns[c][i] for c in present}
        rows.append(dict(
            uri=file_uri,
            label=normalize_label(get.get("label"), where=where),
            attack=_optional_text(get.get("attack")),
            speaker=_optional_text(get.get("speaker")),
            group=_optional_text(get.get("group")),
        ))
    sizes = _sizes([r["uri"] for r in rows], root_uri)
    items = [AudioItem(**r, size_bytes=sizes[r["uri"]]) for r in rows]
    return sorted(items, key=lambda item: item.uri)


# --- lhotse manifests -----------------------------------------------------------------------


def read_lhotse(uri: str) -> list[AudioItem]:
    """Items of a lhotse ``RecordingSet`` JSONL, labelled from its ``SupervisionSet``.

    Given a recordings manifest, its supervisions are the sibling file lhotse recipes
    write (``*_recordings_*`` → ``*_supervisions_*``) when it exists; given a supervisions
    manifest, the recordings are that sibling (required). Each recording is one item (its
    one ``file``/``url`` source, relative paths below the manifest's folder as in
    :func:`read_manifest`); its supervisions give ``speaker`` and, from ``custom``,
    ``label`` and ``attack`` (all of a recording's supervisions must agree on the label).
    The recording id is the item's ``group``.

    Raises
    ------
    SourceError
        Not a lhotse manifest, a supervisions manifest without its recordings, a recording
        with several sources, a path leaving the manifest's folder, a file twice.
    LabelError
        An unknown label, or supervisions of one recording with different labels.
    """
    if not is_remote(uri):
        uri = os.path.abspath(os.path.expanduser(uri))
    records = interchange.read_jsonl(uri)
    kind = interchange.manifest_kind(records, uri)
    other = interchange.sibling(uri, kind)
    other_records = (interchange.read_jsonl(other) if other and retrying(
        other, "checking", lambda: filesystem(other)[0].exists(filesystem(other)[1])) else None)
    if kind == "recordings":
        recordings, supervisions = records, other_records or []
    elif other_records is None:
        raise SourceError(f"{uri} is a lhotse SupervisionSet; its RecordingSet (where the "
                          f"audio is) was expected beside it as {other or '*_recordings_*'}; "
                          "give the recordings manifest as the input instead")
    else:
        recordings, supervisions = other_records, records
    recordings_uri = other if kind == "supervisions" else uri
    root_uri = _parent_uri(recordings_uri)
    about: dict[str, dict[str, str | None]] = {}
    for sup in supervisions:
        rec, custom = str(sup.get("recording_id")), sup.get("custom") or {}
        where = f"{recordings_uri if kind == 'recordings' else uri}: supervision {sup.get('id')!r}"
        label = normalize_label(custom.get("label"), where=where)
        seen = about.setdefault(rec, {"label": label, "attack": None, "speaker": None})
        if seen["label"] != label:
            raise LabelError(f"{where}: label {label!r}, but another supervision of recording "
                             f"{rec!r} says {seen['label']!r}; a file has one label")
        seen["attack"] = seen["attack"] or _optional_text(custom.get("attack"))
        seen["speaker"] = seen["speaker"] or _optional_text(sup.get("speaker"))
    rows, seen_uris = [], set()
    for r in recordings:
        where = f"lhotse recordings {recordings_uri} recording {r.get('id')!r}"
        file_uri = _manifest_uri(interchange.recording_source(r, where), root_uri, where)
        if file_uri in seen_uris:
            raise SourceError(f"{where}: {file_uri} is listed twice; list each file once")
        seen_uris.add(file_uri)
        known = about.get(str(r.get("id")), {})
        rows.append(dict(uri=file_uri, label=known.get("label"), attack=known.get("attack"),
                         speaker=known.get("speaker"), group=str(r.get("id"))))
    sizes = _sizes([r["uri"] for r in rows], root_uri)
    return sorted((AudioItem(**r, size_bytes=sizes[r["uri"]]) for r in rows),
                  key=lambda item: item.uri)


# --- ASVspoof protocols ---------------------------------------------------------------------

_PROTOCOL_KEYS = ("bonafide", "spoof")


def _parse_protocol_line(tokens: list[str]) -> tuple[str, str | None, str, str | None] | None:
    """(utt_id, speaker, key, attack) of one protocol line, or None when malformed.

    ASVspoof 2019 ``SPK UTT - ATTACK KEY``, 2021 ``SPK UTT CODEC TX ATTACK KEY ...`` and
    ASVspoof 5 ``SPK UTT GENDER CODEC Q SEED TAG ATTACK KEY -`` all put the attack right
    before the key; the key is the last bonafide/spoof token (ASVspoof 5 also writes
    ``bonafide`` in its attack column).
    """
    if len(tokens) < 3:
        return None
    key_index = None
    for i in range(len(tokens) - 1, 1, -1):
        if tokens[i].lower() in _PROTOCOL_KEYS:
            key_index = i
            break
    if key_index is None:
        return None
    attack = tokens[key_index - 1] if key_index >= 3 else None
    if attack is not None and (attack in _NO_VALUE or attack.lower() in _PROTOCOL_KEYS):
        attack = None
    return tokens[1], _optional_text(tokens[0]), tokens[key_index].lower(), attack


def read_asvspoof_protocol(
    protocol_uri: str, audio_root: str, ext: str = ".flac"
) -> list[AudioItem]:
    """Items of an ASVspoof countermeasure protocol file.

    Each line names one trial, ASVspoof 2019 style ``SPEAKER UTT_ID - ATTACK KEY`` (KEY
    ``bonafide``/``spoof``, ATTACK ``-`` for bona fide); the ASVspoof 2021 and ASVspoof 5
    layouts are read too. Audio is at ``<audio_root>/<UTT_ID><ext>`` (UTT_ID may contain
    ``/``; an UTT_ID already ending in an audio extension is used as is). Blank lines and
    lines starting with ``#`` are ignored. Missing audio is kept with ``size_bytes=None``.

    Parameters
    ----------
    protocol_uri : str
        Local path or ``s3://`` URI of the protocol text file.
    audio_root : str
        Folder or ``s3://`` prefix holding the audio.
    ext : str, default ".flac"
        Extension appended to each UTT_ID.

    Returns
    -------
    list of AudioItem
        One per trial line, sorted by ``uri``; ``speaker`` from column 1.

    Raises
    ------
    SourceError
        Unreadable or empty protocol, a line without a bonafide/spoof key, an UTT_ID
        leaving ``audio_root``, or the same UTT_ID twice; lines are numbered from 1.
    """
    fs, path = filesystem(protocol_uri)
    try:
        text = retrying(protocol_uri, "reading", lambda: fs.cat_file(path)).decode("utf-8")
    except FileNotFoundError:
        raise SourceError(f"no such file or folder: {protocol_uri}") from None
    except UnicodeDecodeError as exc:
        raise SourceError(f"protocol {protocol_uri} is not UTF-8 text: {exc}") from exc
    if not is_remote(audio_root):
        audio_root = os.path.abspath(os.path.expanduser(audio_root))
    rows = []
    first_line_of: dict[str, int] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        tokens = line.split()
        if not tokens or tokens[0].startswith("#"):
            continue
        where = f"protocol {protocol_uri} line {number}"
        parsed = _parse_protocol_line(tokens)
        if parsed is None:
            shown = line if len(line) <= 200 else line[:200] + "…"
            raise SourceError(
                f"{where}: expected 'SPEAKER UTT_ID - ATTACK KEY' with KEY bonafide or spoof "
                f"(ASVspoof 2019 CM layout; 2021 and 5 layouts also accepted), got {shown!r}"
            )
        utt_id, speaker, key, attack = parsed
        name = utt_id if is_audio_path(utt_id) else utt_id + ext
        file_uri = _manifest_uri(name, audio_root, where)
        if file_uri in first_line_of:
            raise SourceError(
                f"{where}: UTT_ID {utt_id!r} already listed on line {first_line_of[file_uri]}; "
                "list each trial once"
            )
        first_line_of[file_uri] = number
        rows.append(dict(uri=file_uri, label=key, attack=attack, speaker=speaker))
    if not rows:
        raise SourceError(f"protocol {protocol_uri} has no trial lines")
    sizes = _sizes([r["uri"] for r in rows], audio_root)
    items = [AudioItem(**r, size_bytes=sizes[r["uri"]]) for r in rows]
    return sorted(items, key=lambda item: item.uri)


# --- dispatch -------------------------------------------------------------------------------


def resolve_inputs(
    input: str | os.PathLike, *, audio_root: str | None = None, protocol_ext: str = ".flac"
) -> list[AudioItem]:
    """The audio items an input names, whatever kind of input it is.

    ======================================  ============================================
    input                                   read with
    ======================================  ============================================
    folder or ``s3://`` prefix              :func:`list_audio`
    ``.csv`` / ``.parquet`` / ``.pq``       :func:`read_manifest`
    ``.txt`` / ``.tsv``                     :func:`read_asvspoof_protocol`
    ``.jsonl`` / ``.jsonl.gz`` (lhotse)     :func:`read_lhotse`
    one audio file                          a single unlabelled item
    ======================================  ============================================

    Parameters
    ----------
    input : str or path-like
        Local path or ``s3://`` URI.
    audio_root : str, optional
        Audio folder for a protocol; defaults to the protocol's own folder.
    protocol_ext : str, default ".flac"
        Extension appended to protocol UTT_IDs.

    Returns
    -------
    list of AudioItem
        Sorted by ``uri``, each file once, never empty.

    Raises
    ------
    SourceError
        Missing input, unsupported file type, or nothing to read.
    """
    uri = os.fspath(input)
    if is_remote(uri) and not uri.startswith("s3://"):
        # fsspec would happily fetch http(s):// (a presigned URL, whose signature would
        # then be echoed into manifests and summaries): only local paths and s3:// are inputs.
        raise SourceError(f"unsupported input {redact(uri)!r}: use a local path or an s3:// "
                          "URI (download other URLs first)")
    fs, path = filesystem(uri)
    if is_remote(uri):
        fs.invalidate_cache(path)
    else:
        uri = path
    if not retrying(uri, "checking", lambda: fs.exists(path)):
        raise SourceError(f"no such file or folder: {uri}")
    lower = uri.lower()
    if retrying(uri, "checking", lambda: fs.isdir(path)):
        items = list_audio(uri)
        if not items:
            raise SourceError(
                f"no audio files under {uri}: looked for {' '.join(AUDIO_EXTENSIONS)} "
                "(any case, hidden files skipped). Check the path or the file extensions."
            )
    elif lower.endswith(MANIFEST_EXTENSIONS):
        items = read_manifest(uri)
    elif interchange.is_lhotse(lower):
        items = read_lhotse(uri)
    elif lower.endswith(PROTOCOL_EXTENSIONS):
        items = read_asvspoof_protocol(
            uri, audio_root if audio_root is not None else _parent_uri(uri), ext=protocol_ext
        )
    elif is_audio_path(lower):
        size = fs.info(path).get("size")
        items = [AudioItem(uri=to_uri(fs, path), size_bytes=size)]
    else:
        raise SourceError(
            f"cannot tell what {uri} is: expected a folder or s3:// prefix, a manifest "
            f"({' '.join(MANIFEST_EXTENSIONS)}), an ASVspoof protocol "
            f"({' '.join(PROTOCOL_EXTENSIONS)}), a lhotse manifest "
            f"({' '.join(interchange.LHOTSE_EXTENSIONS)}) or an audio file "
            f"({' '.join(AUDIO_EXTENSIONS)})"
        )
    items = sorted(items, key=lambda item: item.uri)
    for before, after in zip(items, items[1:]):
        if before.uri == after.uri:  # readers refuse duplicates; this guards the contract
            raise SourceError(f"{uri} lists {after.uri} more than once")
    return items

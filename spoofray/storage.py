"""Local and S3 storage through fsspec, one way for every module.

``s3://`` goes through s3fs, which honours ``AWS_ENDPOINT_URL`` (MinIO, moto, any
S3-compatible store). Everything else is the local filesystem. Credentials are never
put into messages: only bucket/key paths are.
"""

from __future__ import annotations

import errno
import logging
import os
import posixpath
import random
import stat
import time
import uuid
from collections.abc import Callable
from typing import Any, TypeVar

import fsspec

from spoofray.errors import ConfigError
from spoofray.errors import StorageUnavailableError  # noqa: F401 - also storage.<name>

log = logging.getLogger(__name__)
T = TypeVar("T")

# botocore's DEBUG wire logs print request headers: the session token, the access key id
# in the signature, presigned query strings (botocore.auth, botocore.endpoint). A root
# logger at DEBUG (SPOOFRAY_LOG_LEVEL=DEBUG) must not switch them on; whoever really
# needs them can still set these loggers' levels explicitly.
for _name in ("botocore", "aiobotocore", "boto3", "s3transfer", "urllib3"):
    if logging.getLogger(_name).level == logging.NOTSET:
        logging.getLogger(_name).setLevel(logging.INFO)
# "Found credentials in environment variables", once per process and worker: noise.
for _name in ("botocore.credentials", "aiobotocore.credentials"):
    if logging.getLogger(_name).level == logging.NOTSET:
        logging.getLogger(_name).setLevel(logging.WARNING)

#: Seconds a storage call keeps retrying a transient fault (endpoint down, connection
#: reset, timeout) before giving up; override with SPOOFRAY_STORAGE_RETRY_S.
DEFAULT_RETRY_BUDGET_S = 60.0

# Exception class names (anywhere in the MRO) that mean "the store did not answer", not
# "the object is bad": botocore, aiohttp and fsspec spell them differently, and naming
# them keeps this module free of hard imports of those libraries.
_TRANSIENT_NAMES = frozenset({
    "EndpointConnectionError", "ConnectTimeoutError", "ReadTimeoutError",
    "ConnectionClosedError", "ServerDisconnectedError", "ClientConnectorError",
    "ClientOSError", "ClientPayloadError", "FSTimeoutError", "ResponseStreamingError",
})
_TRANSIENT_ERRNOS = frozenset({errno.ECONNREFUSED, errno.ECONNRESET, errno.ECONNABORTED,
                               errno.ETIMEDOUT, errno.EPIPE, errno.EHOSTUNREACH,
                               errno.ENETUNREACH,
                               # s3fs's spelling of HTTP 503 SlowDown and 500 InternalError
                               errno.EBUSY, getattr(errno, "EREMOTEIO", errno.EIO)})


def is_transient(exc: BaseException) -> bool:
    """True when ``exc`` says the store was unreachable or timed out (worth retrying)."""
    if isinstance(exc, (FileNotFoundError, PermissionError, IsADirectoryError,
                        NotADirectoryError)):
        return False
    if isinstance(exc, (ConnectionError, TimeoutError)):
        return True
    if isinstance(exc, OSError) and exc.errno in _TRANSIENT_ERRNOS:
        return True
    return any(cls.__name__ in _TRANSIENT_NAMES for cls in type(exc).__mro__)


def retry_budget_s() -> float:
    raw = os.environ.get("SPOOFRAY_STORAGE_RETRY_S")
    try:
        return DEFAULT_RETRY_BUDGET_S if raw is None else max(0.0, float(raw))
    except ValueError:
        return DEFAULT_RETRY_BUDGET_S


def with_retries(fn: Callable[[], T], *, what: str, budget_s: float | None = None) -> T:
    """Call ``fn``; on a transient storage fault retry with exponential backoff.

    Parameters
    ----------
    fn : callable
        The whole operation (open + read, or one PUT): retried from the start.
    what : str
        What is being done, for log lines and the final error (a URI, never credentials).
    budget_s : float, optional
        Give up once this many seconds have passed (default :func:`retry_budget_s`).

    Raises
    ------
    StorageUnavailableError
        The fault outlasted the budget. Other errors pass through untouched.
    """
    budget = retry_budget_s() if budget_s is None else budget_s
    started = time.monotonic()
    attempt = 0
    while True:
        try:
            return fn()
        except StorageUnavailableError:
            raise
        except Exception as exc:  # noqa: BLE001 - filtered by is_transient just below
            if not is_transient(exc):
                raise
            attempt += 1
            elapsed = time.monotonic() - started
            if elapsed >= budget:
                raise StorageUnavailableError(
                    f"{what}: storage unreachable for {elapsed:.0f} s over {attempt} attempt(s) "
                    f"({type(exc).__name__}: {exc}); check the endpoint and network, or raise "
                    "SPOOFRAY_STORAGE_RETRY_S, then rerun"
                ) from exc
            # Backoff 0.5, 1, 2, 4, 8 s (with jitter so that many workers do not retry in
            # step), never sleeping past the budget.
            delay = min(8.0, 0.5 * 2 ** (attempt - 1)) * random.uniform(0.75, 1.25)
            delay = min(delay, max(0.0, budget - elapsed))
            log.warning("%s: transient storage fault (%s); retry %d in %.1f s",
                        what, type(exc).__name__, attempt, delay)
            time.sleep(delay)


def is_remote(uri: str) -> bool:
    return "://" in uri and not uri.startswith("file://")


def retrying(uri: str, what: str, call: Callable[[], T], *, budget_s: float | None = None) -> T:
    """``call()``, retried on transient storage faults (:func:`with_retries`, message
    ``"<what> <uri>"``) when ``uri`` is remote; a local call runs once."""
    if not is_remote(uri):
        return call()
    return with_retries(call, what=f"{what} {uri}", budget_s=budget_s)


def _s3_options() -> dict[str, Any]:
    # s3fs reads AWS_ENDPOINT_URL itself only in recent botocore; pass it explicitly so
    # every s3fs version and every worker process behaves the same.
    endpoint = os.environ.get("AWS_ENDPOINT_URL") or os.environ.get("AWS_ENDPOINT_URL_S3")
    opts: dict[str, Any] = {}
    if endpoint:
        opts["client_kwargs"] = {"endpoint_url": endpoint}
    return opts


def check_credentials(*uris: str | None) -> None:
    """Refuse, before any work, ``s3://`` URIs when no AWS credentials can be found.

    botocore looks where it always does (``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``,
    ``AWS_PROFILE`` and ``~/.aws``, web identity, container or instance roles); without
    this check the first listing fails deep inside s3fs with ``NoCredentialsError``.
    Local paths need nothing. Never says which credentials were found.

    Raises
    ------
    ConfigError
        An ``s3://`` URI is given and no credentials resolve.
    """
    remote = [u for u in uris if u and u.startswith("s3://")]
    if not remote:
        return
    import botocore.session

    try:
        found = botocore.session.get_session().get_credentials()
    except Exception as exc:  # noqa: BLE001 - a broken profile file, say: still "no credentials"
        found, why = None, f" ({type(exc).__name__}: {exc})"
    else:
        why = ""
    if found is None:
        raise ConfigError(
            f"no S3 credentials found for {redact(remote[0])}{why}: set AWS_ACCESS_KEY_ID and "
            "AWS_SECRET_ACCESS_KEY (or AWS_PROFILE), or run where a role provides them; for "
            "MinIO or another S3-compatible store also set AWS_ENDPOINT_URL")


def redact(text: str) -> str:
    """``text`` with URL query strings and ``user:password@`` parts removed.

    A presigned URL carries its signature (and an access key id) in the query string;
    echoing one into an error message would put a live credential into logs.
    """
    if "://" not in text:
        return text
    scheme, rest = text.split("://", 1)
    rest = rest.split("?", 1)[0] + ("?<query removed>" if "?" in rest else "")
    head, sep, tail = rest.partition("/")
    if "@" in head:
        head = "<credentials removed>@" + head.rsplit("@", 1)[1]
    return f"{scheme}://{head}{sep}{tail}"


def filesystem(uri: str) -> tuple[fsspec.AbstractFileSystem, str]:
    """The filesystem for ``uri`` and the path inside it (no scheme).

    Parameters
    ----------
    uri : str
        A local path, ``file://`` URL or ``s3://bucket/key``.
    """
    if uri.startswith("s3://"):
        fs = fsspec.filesystem("s3", **_s3_options())
        return fs, uri[len("s3://") :].rstrip("/")
    if uri.startswith("file://"):
        uri = uri[len("file://") :]
    if "://" in uri:
        protocol = uri.split("://", 1)[0]
        return fsspec.filesystem(protocol), uri.split("://", 1)[1]
    return fsspec.filesystem("file"), os.path.abspath(os.path.expanduser(uri))


def to_uri(fs: fsspec.AbstractFileSystem, path: str) -> str:
    """Inverse of :func:`filesystem`: a user-facing URI for ``path`` on ``fs``."""
    protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    if protocol in ("file", "local"):
        return path
    return f"{protocol}://{path}"


def join(uri: str, *parts: str) -> str:
    """Join path parts onto a local path or URI with forward slashes."""
    if is_remote(uri):
        return posixpath.join(uri.rstrip("/"), *parts)
    return os.path.join(uri, *parts)


def read_bytes(uri: str) -> bytes:
    """The whole object at ``uri``; transient storage faults are retried (:func:`with_retries`)."""
    fs, path = filesystem(uri)

    def read() -> bytes:
        with fs.open(path, "rb") as fh:
            return fh.read()

    return retrying(uri, "reading", read)


def read_local_file(path: str, limit: int) -> bytes:
    """Up to ``limit + 1`` bytes of a local REGULAR file (caller compares with ``limit``).

    Opened non-blocking and checked with ``fstat`` on the open descriptor (no race with a
    rename): a FIFO named ``x.wav`` would block a plain ``open`` forever, and a link to
    ``/dev/zero`` would stream without end. Both are refused with :class:`OSError`.
    """
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            kind = ("a directory" if stat.S_ISDIR(mode) else "a FIFO (named pipe)"
                    if stat.S_ISFIFO(mode) else "a character device" if stat.S_ISCHR(mode)
                    else "a block device" if stat.S_ISBLK(mode) else "a socket"
                    if stat.S_ISSOCK(mode) else "not a regular file")
            raise OSError(errno.EINVAL, f"not a regular file: it is {kind}")
        with os.fdopen(fd, "rb", closefd=True) as fh:
            fd = -1
            return fh.read(limit + 1)
    finally:
        if fd >= 0:
            os.close(fd)


def write_bytes_atomic(uri: str, data: bytes) -> None:
    """Write a whole object so that readers see either nothing or all of it.

    Locally: write to a temporary sibling and rename. On S3 a single PUT is already atomic
    (and is retried on transient faults, see :func:`with_retries`).
    """
    fs, path = filesystem(uri)
    if is_remote(uri):
        def put() -> None:
            with fs.open(path, "wb") as fh:
                fh.write(data)

        with_retries(put, what=f"writing {uri}")
        return
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def exists_nonempty(uri: str) -> bool:
    """True when ``uri`` is a file, or a directory/prefix with anything in it (remote checks
    retry transient faults, see :func:`with_retries`)."""
    fs, path = filesystem(uri)

    def check() -> bool:
        if not fs.exists(path):
            return False
        if fs.isfile(path):
            return True
        return bool(fs.ls(path, detail=False))

    return retrying(uri, "checking", check)


def remove(uri: str, *, budget_s: float | None = None) -> None:
    """Remove a file or a whole directory/prefix; a retry after a partial removal finishes it.

    ``budget_s`` bounds the retries (default :func:`retry_budget_s`; 0 tries once).
    """
    fs, path = filesystem(uri)

    def rm() -> None:
        fs.invalidate_cache(path)  # a retry must see what the failed attempt left
        if fs.exists(path):
            fs.rm(path, recursive=True)

    retrying(uri, "removing", rm, budget_s=budget_s)


def exists(uri: str) -> bool:
    """True when a file or folder/prefix is at ``uri`` (a fresh look, not a cached listing;
    remote checks retry transient faults)."""
    fs, path = filesystem(uri)

    def check() -> bool:
        fs.invalidate_cache(path)
        fs.invalidate_cache(posixpath.dirname(path))
        return fs.exists(path)

    return retrying(uri, "checking", check)


def info(uri: str) -> dict[str, Any]:
    """fsspec's info of one file (``size``; on S3 also ``ETag``, ``LastModified``); remote
    calls retry transient faults; a missing file raises :class:`FileNotFoundError`."""
    fs, path = filesystem(uri)
    return retrying(uri, "inspecting", lambda: fs.info(path))


def is_file(uri: str) -> bool:
    """True when ``uri`` is a file/object (not a folder/prefix); remote checks retry."""
    fs, path = filesystem(uri)

    def check() -> bool:
        fs.invalidate_cache(path)
        fs.invalidate_cache(posixpath.dirname(path))
        return fs.isfile(path)

    return retrying(uri, "checking", check)


def list_dir(uri: str, *, suffix: str = "", prefix: str = "") -> list[str]:
    """URIs of the entries (files and folders) directly under ``uri`` whose names start with
    ``prefix`` and end with ``suffix``, sorted; ``[]`` when ``uri`` does not exist.

    A fresh listing (fsspec caches listings per instance, and instances are shared); remote
    listings retry transient faults.
    """
    fs, path = filesystem(uri)

    def listing() -> list[str]:
        fs.invalidate_cache(path)
        if not fs.exists(path):
            return []
        names = fs.ls(path, detail=False)
        return sorted(to_uri(fs, p.rstrip("/")) for p in names
                      if _name_matches(p, prefix, suffix) and p.rstrip("/") != path)

    return retrying(uri, "listing", listing)


def list_files(uri: str, *, suffix: str = "") -> dict[str, dict[str, Any]]:
    """Every file below ``uri`` (recursive) whose name ends with ``suffix``: its URI →
    fsspec's info (``size``; on S3 also ``ETag``, ``LastModified``), sorted by URI;
    ``{}`` when ``uri`` does not exist. Remote listings retry transient faults."""
    fs, path = filesystem(uri)

    def listing() -> dict[str, dict[str, Any]]:
        fs.invalidate_cache(path)
        if not fs.exists(path):
            return {}
        if fs.isfile(path):
            return {to_uri(fs, path): fs.info(path)} if path.endswith(suffix) else {}
        found = fs.find(path, detail=True, withdirs=False)
        return {to_uri(fs, p): info for p, info in sorted(found.items())
                if p.endswith(suffix)}

    return retrying(uri, "listing", listing)


def _name_matches(path: str, prefix: str, suffix: str) -> bool:
    name = path.rstrip("/").rsplit("/", 1)[-1]
    return name.startswith(prefix) and name.endswith(suffix)


def copy(src: str, dst: str) -> None:
    """Copy one file/object ``src`` to ``dst`` (same store); remote copies retry transient
    faults. Locally the copy appears under its name whole (temporary sibling + rename)."""
    fs, src_path = filesystem(src)
    _, dst_path = filesystem(dst)
    if not is_remote(src):
        write_bytes_atomic(dst, read_bytes(src))
        return
    retrying(src, "copying", lambda: fs.copy(src_path, dst_path))


def remove_unlisted(folder: str, keep: set[str] | frozenset[str]) -> int:
    """Remove the files directly under ``folder`` whose names are not in ``keep``; return how
    many were removed (a missing folder removes nothing).

    On S3 a transient fault retries the whole sweep (listing again is what makes a retry
    after a partial sweep correct); the count then covers the last attempt only.
    """
    fs, path = filesystem(folder)

    def sweep() -> int:
        fs.invalidate_cache(path)
        if not fs.exists(path):
            return 0
        removed = 0
        for p in fs.ls(path, detail=False):
            if p.rstrip("/").rsplit("/", 1)[-1] not in keep:
                fs.rm(p)
                removed += 1
        return removed

    return retrying(folder, "removing unlisted files under", sweep)


def remove_quietly(uri: str, what: str, *, unpublished_because: str = "") -> None:
    """Remove ``uri`` on the way out of a failure, never masking the failure itself: one
    try (storage may be down, which may be why we are here), and a warning if it fails."""
    try:
        remove(uri, budget_s=0)
    except Exception as exc:  # noqa: BLE001 - the original failure is what must propagate
        log.warning("could not remove %s at %s (%s: %s)%s; delete it once storage is back",
                    what, uri, type(exc).__name__, redact(str(exc)),
                    f"; {unpublished_because}" if unpublished_because else "")


def temporary_sibling(final: str, tag: str | None = None) -> str:
    """A folder name next to ``final`` to build it in before :func:`publish_dir`.

    Same parent, so locally one rename publishes it; the ``_tmp_`` prefix keeps it out of
    dataset discovery (pyarrow, Spark and DuckDB skip ``_`` names). At an S3 bucket's root,
    which has no parent, it goes inside ``final``. ``tag`` ends the name (default: a fresh
    random one); a fixed tag gives every attempt the same folder, so one can resume another.
    """
    tag = tag or uuid.uuid4().hex[:8]
    if not is_remote(final):
        path = filesystem(final)[1]
        return os.path.join(os.path.dirname(path), f"_tmp_{os.path.basename(path)}-{tag}")
    base = final.rstrip("/")
    head, _, name = base.rpartition("/")
    if head.endswith(":/"):  # s3://bucket
        return f"{base}/_tmp_-{tag}"
    return f"{head}/_tmp_{name}-{tag}"


def publish_dir(tmp: str, final: str, marker: str) -> None:
    """Make the finished folder ``tmp`` appear as ``final``, its ``marker`` file last.

    The one publish protocol of spoofray (score runs: ``_SUCCESS``; feature datasets:
    ``_manifest.json``; audit products: ``audit.json``). ``tmp/<marker>`` must already be
    written: readers take a folder without its marker as unfinished.

    Local: one rename of the folder, so readers see all of it or nothing (``final`` must not
    exist, or be an empty folder). S3 has no rename: every other object is copied (each
    copy retried on transient faults), then the marker, then ``tmp`` is removed. If a copy
    fails for good, what was copied to ``final`` is removed (best effort: storage may still
    be down; without its marker it reads as unfinished either way) and the error
    propagates. ``tmp`` is left for the caller to discard on failure.

    Raises
    ------
    FileNotFoundError
        ``tmp`` holds no ``marker``: nothing is published.
    """
    marker_uri = join(tmp, marker)
    if not exists(marker_uri):
        raise FileNotFoundError(f"{marker_uri} is missing: a folder is published only "
                                f"with its {marker} written; nothing was published")
    if not is_remote(tmp):
        final_path = filesystem(final)[1]
        os.makedirs(os.path.dirname(final_path) or ".", exist_ok=True)
        os.rename(filesystem(tmp)[1], final_path)
        return
    fs, tmp_path = filesystem(tmp)
    _, final_path = filesystem(final)
    marker_path = filesystem(marker_uri)[1]
    objects = [p for p in retrying(tmp, "listing", lambda: _fresh_find(fs, tmp_path))
               if p != marker_path]
    try:
        for src in [*objects, marker_path]:  # the marker last
            dst = final_path + src[len(tmp_path):]
            with_retries(lambda src=src, dst=dst: fs.copy(src, dst),
                         what=f"publishing {to_uri(fs, src)} to {final}")
    except BaseException:
        remove_quietly(final, "the partly published folder",
                       unpublished_because=f"it has no {marker}, so readers ignore it")
        raise
    try:
        remove(tmp)
    except StorageUnavailableError as exc:  # published all the same: say so, do not fail
        log.warning("%s is published, but its temporary copy could not be removed (%s); "
                    "it is ignored by readers and safe to delete", final, exc)


def _fresh_find(fs: fsspec.AbstractFileSystem, path: str) -> list[str]:
    fs.invalidate_cache(path)
    return sorted(fs.find(path))

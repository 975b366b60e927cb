"""Local and S3 storage through fsspec, one way for every module.

``s3://`` goes through s3fs, which honours ``AWS_ENDPOINT_URL`` (MinIO, moto, any
S3-compatible store). Everything else is the local filesystem. Credentials are never
put into messages: only bucket/key paths are.
"""

from __future__ import annotations

import os
import posixpath
import uuid
from typing import Any

import fsspec


def is_remote(uri: str) -> bool:
    return "://" in uri and not uri.startswith("file://")


def _s3_options() -> dict[str, Any]:
    # s3fs reads AWS_ENDPOINT_URL itself only in recent botocore; pass it explicitly so
    # every s3fs version and every worker process behaves the same.
    endpoint = os.environ.get("AWS_ENDPOINT_URL") or os.environ.get("AWS_ENDPOINT_URL_S3")
    opts: dict[str, Any] = {}
    if endpoint:
        opts["client_kwargs"] = {"endpoint_url": endpoint}
    return opts


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
    fs, path = filesystem(uri)
    with fs.open(path, "rb") as fh:
        return fh.read()


def write_bytes_atomic(uri: str, data: bytes) -> None:
    """Write a whole object so that readers see either nothing or all of it.

    Locally: write to a temporary sibling and rename. On S3 a single PUT is already atomic.
    """
    fs, path = filesystem(uri)
    if is_remote(uri):
        with fs.open(path, "wb") as fh:
            fh.write(data)
        return
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def exists_nonempty(uri: str) -> bool:
    """True when ``uri`` is a file, or a directory/prefix with anything in it."""
    fs, path = filesystem(uri)
    if not fs.exists(path):
        return False
    if fs.isfile(path):
        return True
    return bool(fs.ls(path, detail=False))


def remove(uri: str) -> None:
    fs, path = filesystem(uri)
    if fs.exists(path):
        fs.rm(path, recursive=True)

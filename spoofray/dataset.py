"""The feature dataset on disk: schema, part files, and reading it back.

Layout of a dataset at ``<root>`` (local or ``s3://``)::

    <root>/features/part-<key>.parquet   one row per window (schema below)
    <root>/errors/part-<key>.parquet     one row per file that could not be used
    <root>/_manifest.json                config, counts, hours, timings; written last

Tensor columns use Arrow's canonical ``fixed_shape_tensor`` extension type, so pyarrow,
pandas, DuckDB and Ray Data all read them without spoofray installed. Part names are a
hash of the input URIs they hold, so a retried task rewrites the same part (no duplicates).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from spoofray import storage
from spoofray.config import FeatureConfig

FEATURES_DIR = "features"
ERRORS_DIR = "errors"
MANIFEST_NAME = "_manifest.json"

#: Per-item metadata carried from the listing into every window and error row.
ITEM_COLUMNS = ("uri", "label", "attack", "speaker", "group")

WINDOW_META_SCHEMA = pa.schema(
    [
        ("uri", pa.string()),
        ("window_index", pa.int32()),
        ("start_s", pa.float64()),
        ("end_s", pa.float64()),
        ("label", pa.string()),
        ("attack", pa.string()),
        ("speaker", pa.string()),
        ("group", pa.string()),
        ("duration_s", pa.float64()),
        ("feature_config_hash", pa.string()),
    ]
)

ERROR_SCHEMA = pa.schema(
    [
        ("uri", pa.string()),
        ("label", pa.string()),
        ("attack", pa.string()),
        ("speaker", pa.string()),
        ("group", pa.string()),
        ("size_bytes", pa.int64()),
        ("error_type", pa.string()),
        ("error_message", pa.string()),
    ]
)


def tensor_type(cfg: FeatureConfig, kind: str) -> pa.DataType:
    dtype = pa.float16() if cfg.store_float16 else pa.float32()
    return pa.fixed_shape_tensor(dtype, list(cfg.feature_shapes()[kind]))


def window_schema(cfg: FeatureConfig) -> pa.Schema:
    """Full schema of the ``features/`` table for ``cfg``."""
    fields = list(WINDOW_META_SCHEMA)
    fields += [pa.field(kind, tensor_type(cfg, kind)) for kind in cfg.kinds]
    return pa.schema(fields, metadata={b"feature_config": json.dumps(cfg.to_dict()).encode()})


def windows_table(
    meta: Mapping[str, Sequence[Any]], features: Mapping[str, np.ndarray], cfg: FeatureConfig
) -> pa.Table:
    """Build one ``features/`` table.

    Parameters
    ----------
    meta : mapping of column name to sequence, length n_windows
        Every column of :data:`WINDOW_META_SCHEMA` except ``feature_config_hash``.
    features : mapping of kind to array, shape (n_windows, *cfg.feature_shapes()[kind])
    """
    schema = window_schema(cfg)
    n = len(meta["uri"])
    columns: dict[str, pa.Array] = {}
    for field in WINDOW_META_SCHEMA:
        if field.name == "feature_config_hash":
            columns[field.name] = pa.array([cfg.config_hash()] * n, pa.string())
        else:
            columns[field.name] = pa.array(list(meta[field.name]), field.type)
    np_dtype = np.float16 if cfg.store_float16 else np.float32
    for kind, shape in cfg.feature_shapes().items():
        arr = np.ascontiguousarray(features[kind], dtype=np_dtype).reshape((n, *shape))
        if n == 0:
            storage_type = pa.list_(schema.field(kind).type.value_type, int(np.prod(shape)))
            columns[kind] = pa.ExtensionArray.from_storage(
                schema.field(kind).type, pa.array([], storage_type)
            )
        else:
            columns[kind] = pa.FixedShapeTensorArray.from_numpy_ndarray(arr)
    return pa.table([columns[f.name] for f in schema], schema=schema)


def errors_table(rows: Sequence[Mapping[str, Any]]) -> pa.Table:
    return pa.Table.from_pylist([{k: r.get(k) for k in ERROR_SCHEMA.names} for r in rows],
                                schema=ERROR_SCHEMA)


def part_key(uris: Sequence[str]) -> str:
    """Deterministic part-file key for a batch of input URIs."""
    h = hashlib.sha256("\n".join(sorted(uris)).encode()).hexdigest()
    return h[:20]


def write_part(root: str, subdir: str, key: str, table: pa.Table) -> str:
    """Write ``table`` as ``<root>/<subdir>/part-<key>.parquet`` atomically; return its URI."""
    uri = storage.join(root, subdir, f"part-{key}.parquet")
    sink = pa.BufferOutputStream()
    # Feature tensors are float noise to a dictionary or to min/max statistics: building
    # either costs time and buys nothing (a dictionary made writing as slow as computing the
    # features, and the files 45% larger). Splitting their floats into byte streams lets
    # zstd find the repetitive exponent bytes: 11% smaller parts for the same CPU.
    # Version 2 data pages leave the (list) levels uncompressed: same bytes, ~10% less
    # write CPU. Measured in docs/benchmarks.md.
    tensors = [f.name for f in table.schema if isinstance(f.type, pa.FixedShapeTensorType)]
    text = [f.name for f in table.schema if pa.types.is_string(f.type)]
    pq.write_table(table, sink, compression="zstd", use_dictionary=text,
                   write_statistics=[n for n in table.schema.names if n not in tensors],
                   use_byte_stream_split=[f"{n}.list.element" for n in tensors],
                   data_page_version="2.0")
    storage.write_bytes_atomic(uri, sink.getvalue().to_pybytes())
    return uri


def part_uris(root: str, subdir: str = FEATURES_DIR) -> list[str]:
    """The Parquet parts of ``<root>/<subdir>``, sorted (``[]`` when there is none)."""
    return storage.list_dir(storage.join(root, subdir), suffix=".parquet")


def read_part(uri: str, columns: Sequence[str] | None = None) -> pa.Table:
    """One part (only ``columns`` when given); remote reads retry transient storage faults."""
    # pyarrow reads through the filesystem handle: only the asked columns' chunks travel.
    fs, path = storage.filesystem(uri)
    return storage.retrying(uri, "reading", lambda: pq.read_table(
        path, filesystem=fs, columns=list(columns) if columns else None))


def read_table(root: str, subdir: str = FEATURES_DIR, columns: Sequence[str] | None = None
               ) -> pa.Table:
    """Read every part of ``<root>/<subdir>`` into one table (empty table if none)."""
    files = part_uris(root, subdir)
    if not files:
        raise FileNotFoundError(
            f"no Parquet parts under {storage.join(root, subdir)}; is {root!r} a spoofray "
            "feature dataset (made by jobs/extract_features.py)?"
        )
    tables = [read_part(f, columns) for f in files]
    return pa.concat_tables(tables)


def read_errors(root: str) -> pa.Table:
    files = part_uris(root, ERRORS_DIR)
    if not files:
        return ERROR_SCHEMA.empty_table()
    return pa.concat_tables([read_part(f) for f in files])


def tensor_column(table: pa.Table, kind: str) -> np.ndarray:
    """A tensor column as a float32 array of shape (n_rows, *shape)."""
    col = table.column(kind).combine_chunks()
    if len(col) == 0:
        shape = col.type.shape
        return np.zeros((0, *shape), np.float32)
    return col.to_numpy_ndarray().astype(np.float32, copy=False)


def write_manifest(root: str, manifest: Mapping[str, Any]) -> str:
    """Write ``<root>/_manifest.json`` (the dataset's completion marker); return its URI."""
    uri = storage.join(root, MANIFEST_NAME)
    storage.write_bytes_atomic(uri, json.dumps(manifest, indent=2, default=_json_default).encode())
    return uri


def _json_default(value: Any) -> Any:
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def read_manifest(root: str) -> dict[str, Any]:
    return json.loads(storage.read_bytes(storage.join(root, MANIFEST_NAME)))


def feature_config_of(root: str) -> FeatureConfig:
    """The :class:`FeatureConfig` a dataset was made with (from its manifest)."""
    return FeatureConfig.from_dict(read_manifest(root)["feature_config"])

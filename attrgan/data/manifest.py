"""Parquet manifests: the input of every job (DESIGN.md "Manifest").

One module on purpose (it is long): every rule on what a manifest may hold (schema, values of any
kind, how rows enter the stream) is in one place to read and to audit (docs/security.md).

A manifest is one Parquet file, a folder of Parquet files, or a hive-partitioned prefix
(`.../date=2026-11-25/camera=c1/part-0.parquet`), on S3 or the local disk. Its fixed columns:

    crop_id                         string, required, unique — the key carried to the output
    image_uri                       string, required — s3://…, file://…, an absolute local path,
                                    or a path relative to the manifest (see `read_manifest`)
    bbox_x, bbox_y, bbox_w, bbox_h  int32, nullable — crop box in pixels; all null = whole image
    camera_id                       string, nullable
    captured_at                     timestamp[us, UTC], nullable (naive timestamps are taken as UTC)
    split                           string, nullable — train / val / test
    track_id                        string, nullable — the person's track (crops of one person over
                                    consecutive frames), unique within a (camera, partition); null:
                                    the row is a track of its own
    frame_index                     int64, nullable, >= 0 — the crop's frame within its track

plus, in training/eval manifests, one int8 column per attribute id: 1 positive, 0 negative,
-1 unknown (a null label is read as -1). Hive partition keys come back as string columns.

Only files ending in .parquet / .parq / .pq are data files; names starting with '_' or '.'
(`_SUCCESS`, `_temporary/`, `.crc`) are skipped, so images may sit beside a manifest.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import posixpath
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import quote

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from attrgan.config import StorageConfig
from attrgan.data.storage import (MESSAGE_CHARS, filesystem, is_s3, parent, redact, redacted_head, retrying,
                                  split_s3)

MANIFEST_SCHEMA = pa.schema([
    pa.field("crop_id", pa.string(), nullable=False),
    pa.field("image_uri", pa.string(), nullable=False),
    pa.field("bbox_x", pa.int32()),
    pa.field("bbox_y", pa.int32()),
    pa.field("bbox_w", pa.int32()),
    pa.field("bbox_h", pa.int32()),
    pa.field("camera_id", pa.string()),
    pa.field("captured_at", pa.timestamp("us", tz="UTC")),
    pa.field("split", pa.string()),
    pa.field("track_id", pa.string()),
    pa.field("frame_index", pa.int64()),
])
FIXED_COLUMNS: tuple[str, ...] = tuple(MANIFEST_SCHEMA.names)
REQUIRED_COLUMNS: tuple[str, ...] = ("crop_id", "image_uri")
BBOX_COLUMNS: tuple[str, ...] = ("bbox_x", "bbox_y", "bbox_w", "bbox_h")
# A crop's track and frame in it (not the per-track results table, `contracts.TRACK_COLUMNS`);
# optional: a manifest without them reads as one track per row.
TRACK_FRAME_COLUMNS: tuple[str, ...] = ("track_id", "frame_index")
LABEL_VALUES = (-1, 0, 1)
DATA_SUFFIXES = (".parquet", ".parq", ".pq")

Partition = str | Mapping[str, Any]


class ManifestError(ValueError):
    """A manifest is missing, unreadable, or breaks the manifest contract."""


# ---------------------------------------------------------------------------------------------
# reading


def read_manifest(uri: str, storage: StorageConfig | None = None, partition: Partition | None = None,
                  columns: Sequence[str] | None = None) -> pa.Table:
    """Read, validate and normalise a manifest.

    uri: a Parquet file, a folder of them, or a hive-partitioned prefix (s3:// or local).
    partition: one partition of a partitioned manifest, as its relative folder
        ("date=2026-11-25/camera=c1", or a leading part of it such as "date=2026-11-25") or as a
        dict in folder order ({"date": "2026-11-25", "camera": "c1"}). Its keys stay as columns.
    columns: the columns to read; crop_id and image_uri are always included.

    Returns a `pa.Table` cast to `MANIFEST_SCHEMA` types (label columns int8) whose image_uri
    values are absolute: relative paths are resolved against the manifest's folder — the file's
    folder for a single file, the given folder/prefix itself for a folder or partitioned prefix
    (whichever partition is selected). `s3://`, `file://` and absolute local paths stay as they are.

    Rows are not filtered here: `allowed_prefixes(uri, storage)` gives the prefixes that image_uri
    values must lie under, and `decode_batch` turns each refused row into an error row.
    """
    scan_manifest(uri, storage)  # every file's footer: readable, schema within the contract
    fs, path = filesystem(uri, storage)
    info = fs.get_file_info(path)
    if info.type == pafs.FileType.File:
        if partition is not None:
            raise ManifestError(f"partition {partition!r} given, but the manifest {uri} is a single file")
        dataset = ds.dataset([path], filesystem=fs, format="parquet")
        base = parent(uri)
    else:
        rel = "" if partition is None else _partition_path(partition)
        files = _data_files(fs, path, rel, uri)
        if not files:
            if rel:
                raise ManifestError(f"partition {rel!r} not found under {uri}; partitions: "
                                    f"{_preview(list_partitions(uri, storage))}")
            raise ManifestError(f"no Parquet files (*{', *'.join(DATA_SUFFIXES)}) under {uri}")
        keys = _partition_keys(files, uri)
        partitioning = ds.partitioning(pa.schema([(k, pa.string()) for k in keys]), flavor="hive") if keys else None
        dataset = ds.dataset([f for f, _ in files], filesystem=fs, format="parquet",
                             partitioning=partitioning, partition_base_dir=path)
        base = uri.rstrip("/") if is_s3(uri) or "://" in uri else os.path.abspath(uri)
    read_columns = None
    if columns is not None:
        read_columns = list(dict.fromkeys([*REQUIRED_COLUMNS, *columns]))
        unknown = [c for c in read_columns if c not in dataset.schema.names]
        unknown_required = [c for c in unknown if c in REQUIRED_COLUMNS]
        if unknown_required:
            raise ManifestError(f"manifest {uri} is missing the required column {unknown_required[0]!r}; "
                                f"it has {dataset.schema.names}")
        if unknown:
            raise ManifestError(f"manifest {uri} has no column(s) {unknown}; it has {dataset.schema.names}")
    try:
        table = dataset.to_table(columns=read_columns)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OSError) as exc:
        raise ManifestError(f"cannot read manifest {uri}: {exc}") from None
    try:
        table = validate_manifest(table)
    except ManifestError as exc:
        raise ManifestError(f"{uri}: {exc}") from None
    return _resolve_image_uris(table, base)


@dataclasses.dataclass(frozen=True)
class ManifestScan:
    """What a manifest holds, learned from its files' Parquet footers alone (no rows read).

    base: the folder relative image_uri values resolve against (see `read_manifest`).
    keys: the hive partition keys, in folder order.
    files: partition folder ("" when unpartitioned) → ((filesystem path, rows), ...), sorted.
    columns: file column → Arrow type (the first file's type when files disagree compatibly).
    """

    uri: str
    base: str
    keys: tuple[str, ...]
    files: Mapping[str, tuple[tuple[str, int], ...]]
    columns: Mapping[str, pa.DataType]

    @property
    def partitions(self) -> list[str]:
        return list(self.files)

    def rows(self, partition: str) -> int:
        return sum(n for _, n in self.files[partition])


def scan_manifest(uri: str, storage: StorageConfig | None = None, *, threads: int = 16) -> ManifestScan:
    """List a manifest's files and check every file's schema from its footer (`check_columns`).

    ManifestError when the manifest is missing, holds no data files, a file is not readable
    Parquet (naming the file), or a schema breaks the contract. OSError (unreachable storage)
    passes through: the caller knows which setting to name.
    """
    fs, path = filesystem(uri, storage)
    info = fs.get_file_info(path)
    if info.type == pafs.FileType.NotFound:
        raise ManifestError(f"manifest not found: {uri}")
    if info.type == pafs.FileType.File:
        files, base = [(path, "")], parent(uri)
    else:
        files = _data_files(fs, path, "", uri)
        if not files:
            raise ManifestError(f"no Parquet files (*{', *'.join(DATA_SUFFIXES)}) under {uri}")
        base = uri.rstrip("/") if is_s3(uri) or "://" in uri else os.path.abspath(uri)
    keys = _partition_keys(files, uri)

    def footer(item: tuple[str, str]) -> tuple[pa.Schema, int]:
        file = item[0]
        try:
            meta = pq.read_metadata(file, filesystem=fs)
            return meta.schema.to_arrow_schema(), meta.num_rows
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError, ValueError) as exc:
            shown = file[len(path):].lstrip("/") or file
            raise ManifestError(f"manifest file {shown!r} under {uri} is not readable Parquet "
                                f"({str(exc).splitlines()[0][:200]})") from None

    with ThreadPoolExecutor(max_workers=max(1, min(threads, len(files)))) as pool:
        footers = list(pool.map(footer, files))
    columns: dict[str, pa.DataType] = {}
    first: dict[str, tuple[Any, str]] = {}  # fixed column → (storage kind, the file that set it)
    by_partition: dict[str, list[tuple[str, int]]] = {}
    for (file, folder), (schema, rows) in zip(files, footers):
        inner = file[len(path):].lstrip("/")
        check_columns(schema, keys=keys, where=f"{uri}: file {inner!r}" if inner else f"{uri}: manifest")
        for field in schema:
            columns.setdefault(field.name, field.type)
            if field.name not in _FAMILIES or pa.types.is_null(field.type):
                continue
            # Files read together must store a fixed column alike: a reader cannot merge a
            # dictionary with plain strings, or timestamps of other units / time zones.
            kind = _storage_kind(field.type)
            seen = first.setdefault(field.name, (kind, inner))
            if seen[0] != kind:
                raise ManifestError(f"{uri}: column {field.name!r} is {columns[field.name]} in {seen[1]!r} but "
                                    f"{field.type} in {inner!r}; write every file of a manifest with one type")
        by_partition.setdefault(folder, []).append((file, rows))
    return ManifestScan(uri=uri, base=base, keys=tuple(keys), files={k: tuple(v) for k, v in by_partition.items()},
                        columns=columns)


def _storage_kind(tp: pa.DataType) -> Any:
    """How a fixed column is stored, as far as reading several files together cares."""
    if pa.types.is_dictionary(tp):
        return ("dictionary", _type_family(tp.value_type))
    if pa.types.is_timestamp(tp):
        return ("timestamp", tp.unit, tp.tz)
    family = _type_family(tp)
    return "number" if family in ("integer", "floating") else family  # numbers merge


def _type_family(tp: pa.DataType) -> str:
    if pa.types.is_dictionary(tp):
        tp = tp.value_type
    if pa.types.is_string(tp) or pa.types.is_large_string(tp):
        return "string"
    if pa.types.is_integer(tp):
        return "integer"
    if pa.types.is_timestamp(tp):
        return "timestamp"
    if pa.types.is_floating(tp):
        return "floating"
    return str(tp)


# What each fixed column may be stored as: values of these families cast without guessing (a
# float bbox, as pandas writes an integer column with nulls, must hold whole numbers).
_FAMILIES = {"crop_id": ("string",), "image_uri": ("string",), "camera_id": ("string",), "split": ("string",),
             **{c: ("integer", "floating") for c in BBOX_COLUMNS}, "captured_at": ("timestamp",),
             "track_id": ("string",), "frame_index": ("integer", "floating")}


def check_columns(schema: pa.Schema, *, keys: Sequence[str] = (), where: str = "manifest") -> None:
    """The schema-level contract of one manifest file: required columns, the fixed columns' types,
    bbox columns as a set, and no column that repeats a hive partition key. ManifestError."""
    names = schema.names
    for name in REQUIRED_COLUMNS:
        if name not in names:
            raise ManifestError(f"{where} is missing the required column {name!r}; it has {names}")
    clash = [k for k in keys if k in names]
    if clash:
        raise ManifestError(f"{where}: column(s) {clash} are also hive partition keys of the folders; "
                            "rename the column or the folder key (which value wins would be a guess)")
    bbox = [c for c in BBOX_COLUMNS if c in names]
    if bbox and len(bbox) != len(BBOX_COLUMNS):
        raise ManifestError(f"{where}: bbox columns come as a set: has {bbox}, missing "
                            f"{[c for c in BBOX_COLUMNS if c not in bbox]}")
    for field in schema:
        families = _FAMILIES.get(field.name)
        if families and _type_family(field.type) not in families and not pa.types.is_null(field.type):
            raise ManifestError(f"{where}: column {field.name!r}: {_expected(field.name, field.type)}")


def _expected(name: str, got: pa.DataType) -> str:
    target = MANIFEST_SCHEMA.field(name).type
    if pa.types.is_timestamp(target):
        return (f"expected a timestamp ({target}; naive timestamps are taken as UTC), got {got}: "
                "integers are refused because their unit (s, ms, us) would be a guess")
    return f"expected {target}, got {got}"


def _partition_path(partition: Partition) -> str:
    if isinstance(partition, Mapping):
        if not partition:
            raise ValueError("partition dict is empty")
        return "/".join(f"{k}={quote(str(v), safe='')}" for k, v in partition.items())
    if not isinstance(partition, str):
        raise ValueError(f"partition must be 'key=value/...' or a dict, got {partition!r}")
    rel = partition.strip("/")
    segments = rel.split("/")
    if not rel or any(s.count("=") < 1 or s.startswith("=") or s in (".", "..") for s in segments):
        raise ValueError(f"partition must look like 'key=value' or 'key=value/key2=value2', got {partition!r}")
    return rel


def _data_files(fs: pafs.FileSystem, root: str, rel: str, uri: str) -> list[tuple[str, str]]:
    """(path, folder relative to root) of every data file under root/rel, sorted by path."""
    start = f"{root}/{rel}" if rel else root
    infos = fs.get_file_info(pafs.FileSelector(start, allow_not_found=True, recursive=True))
    out = []
    for info in infos:
        if info.type != pafs.FileType.File:
            continue
        inner = info.path[len(root):].lstrip("/")
        segments = inner.split("/")
        if any(s.startswith(("_", ".")) for s in segments) or not inner.lower().endswith(DATA_SUFFIXES):
            continue
        folder = "/".join(segments[:-1])
        if folder and not all("=" in s and not s.startswith("=") for s in segments[:-1]):
            raise ManifestError(f"{uri}: Parquet file {inner!r} lies in a folder that is not a hive partition "
                                "(key=value/...); move it or point the job at that file")
        out.append((info.path, folder))
    return sorted(out)


def _partition_keys(files: list[tuple[str, str]], uri: str) -> list[str]:
    layouts = {tuple(s.split("=", 1)[0] for s in folder.split("/")) if folder else () for _, folder in files}
    if len(layouts) > 1:
        raise ManifestError(f"{uri}: partition folders disagree on their keys: {sorted(layouts)}")
    return list(layouts.pop())


def list_partitions(uri: str, storage: StorageConfig | None = None) -> list[str]:
    """The hive partition folders under `uri` that hold data files, relative and sorted.

    [""] for an unpartitioned manifest (a single file, or files directly in the folder);
    [] when the folder holds no data files. ManifestError when `uri` does not exist.
    """
    fs, path = filesystem(uri, storage)
    info = fs.get_file_info(path)
    if info.type == pafs.FileType.NotFound:
        raise ManifestError(f"manifest not found: {uri}")
    if info.type == pafs.FileType.File:
        return [""]
    return sorted({folder for _, folder in _data_files(fs, path, "", uri)})


# ---------------------------------------------------------------------------------------------
# validation


def validate_manifest(table: pa.Table | Any, attributes: Sequence[str] | None = None) -> pa.Table:
    """Check `table` (pyarrow Table or pandas DataFrame) against the manifest contract.

    Returns the table with fixed columns cast to `MANIFEST_SCHEMA` types and label columns to int8
    (nulls → -1). Label columns are `attributes` when given (each must be present), otherwise
    `manifest_attributes(table)`. Raises ManifestError naming the column and the problem.
    """
    table = _as_table(table)
    names = table.column_names
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ManifestError(f"column name(s) appear more than once: {repeated}")
    for name in REQUIRED_COLUMNS:
        if name not in names:
            raise ManifestError(f"manifest is missing the required column {name!r}; it has {names}")
    bbox = [c for c in BBOX_COLUMNS if c in names]
    if bbox and len(bbox) != len(BBOX_COLUMNS):
        raise ManifestError(f"bbox columns come as a set: has {bbox}, missing "
                            f"{[c for c in BBOX_COLUMNS if c not in bbox]}")
    for field in MANIFEST_SCHEMA:
        if field.name in names:
            table = _set(table, field.name, _cast(table[field.name], field.name, field.type))
    for name in names:
        _check_text(table[name], name)
    if "frame_index" in names:
        negative = pc.fill_null(pc.less(table["frame_index"], 0), False)
        if pc.any(negative).as_py():
            raise ManifestError(f"column 'frame_index' must be >= 0 (a frame's number within its track); "
                                f"{pc.sum(negative).as_py()} row(s) are negative: "
                                f"{_examples(table, negative, 'frame_index')}")

    crop_ids = table["crop_id"]
    if crop_ids.null_count:
        rows = np.flatnonzero(crop_ids.is_null().to_numpy(zero_copy_only=False))
        raise ManifestError(f"column 'crop_id' has {len(rows)} null value(s), e.g. rows {rows[:5].tolist()}")
    uris = table["image_uri"]
    empty = pc.or_kleene(uris.is_null(), pc.equal(pc.utf8_trim_whitespace(uris), "")).fill_null(True)
    if pc.any(empty).as_py():
        raise ManifestError(f"column 'image_uri' is null or empty in {pc.sum(empty).as_py()} row(s): "
                            f"{_examples(table, empty)}")
    problem = crop_id_problem(crop_ids)
    if problem:
        raise ManifestError(problem)
    # A row's image_uri value (scheme, bucket, path) is checked when the row is decoded: a bad one
    # makes that row an error row, never the whole manifest.
    if attributes is None:
        labels = manifest_attributes(table)
    else:
        labels = list(attributes)
        missing = [a for a in labels if a not in table.column_names]
        if missing:
            raise ManifestError(f"label column(s) {missing} missing; the manifest has labels for "
                                f"{manifest_attributes(table)}")
    for name in labels:
        if name in FIXED_COLUMNS:
            raise ManifestError(f"{name!r} is a fixed manifest column, not an attribute")
        table = _set(table, name, pa.chunked_array([_label_array(table[name], name)], type=pa.int8()))
    return table


def crop_id_problem(ids: pa.ChunkedArray | pa.Array) -> str | None:
    """Why crop_ids cannot key one partition's results (nulls, or repeated keys), or None. A value
    that is not UTF-8 or too long is keyed by its stand-in (`text_column`), as its results row is."""
    if ids.null_count:
        return f"column 'crop_id' has {ids.null_count} null value(s)"
    keys, _ = text_column(ids, "crop_id")
    counts = pc.value_counts(keys)
    dupes = counts.filter(pc.greater(counts.field("counts"), 1))
    if len(dupes):
        shown = ", ".join(f"{d['values']!r} (x{d['counts']})" for d in dupes.to_pylist()[:5])
        return f"column 'crop_id' must be unique; {len(dupes)} value(s) repeat: {shown}"
    return None


def _check_text(column: pa.ChunkedArray, name: str) -> None:
    """ManifestError when a text column holds values that are not UTF-8 (Parquet readers do not
    check; every later use of the value would fail on it)."""
    tp = column.type.value_type if pa.types.is_dictionary(column.type) else column.type
    if not (pa.types.is_string(tp) or pa.types.is_large_string(tp)):
        return
    try:
        column.validate(full=True)
        return
    except pa.ArrowInvalid:
        pass
    column = column.combine_chunks()
    if pa.types.is_dictionary(column.type):
        column = column.dictionary_decode()
    raw = column.view(pa.large_binary() if pa.types.is_large_string(column.type) else pa.binary())
    bad = [i for i, v in enumerate(raw.to_pylist()) if v is not None and not _is_utf8(v)]
    raise ManifestError(f"column {name!r} holds {len(bad)} value(s) that are not UTF-8 text, e.g. rows {bad[:5]}")


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False


def _as_table(table: Any) -> pa.Table:
    if isinstance(table, pa.Table):
        return table
    if isinstance(table, pa.RecordBatch):
        return pa.Table.from_batches([table])
    try:
        import pandas as pd
    except ImportError:  # pragma: no cover - pandas is a dependency
        pd = None
    if pd is not None and isinstance(table, pd.DataFrame):
        return pa.Table.from_pandas(table, preserve_index=False)
    raise ValueError(f"expected a pyarrow Table or pandas DataFrame, got {type(table).__name__}")


def _set(table: pa.Table, name: str, column: pa.ChunkedArray) -> pa.Table:
    i = table.column_names.index(name)
    return table.set_column(i, pa.field(name, column.type), column)


def _cast(column: pa.ChunkedArray, name: str, target: pa.DataType) -> pa.ChunkedArray:
    source = column.type
    if pa.types.is_dictionary(source):
        column = column.cast(source.value_type)
        source = column.type
    if source == target:
        return column
    if pa.types.is_timestamp(target) and not (pa.types.is_timestamp(source) or pa.types.is_null(source)):
        raise ManifestError(f"column {name!r}: {_expected(name, source)}")
    # Dropping sub-microsecond digits of a timestamp loses nothing a person cares about.
    safe = not (pa.types.is_timestamp(source) and pa.types.is_timestamp(target))
    try:
        return column.cast(target, safe=safe)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as exc:
        raise ManifestError(f"column {name!r}: expected {target}, got {source} that cannot be cast "
                            f"safely ({str(exc).splitlines()[0]})") from None


def _is_integer(tp: pa.DataType) -> bool:
    return pa.types.is_integer(tp) or (pa.types.is_dictionary(tp) and pa.types.is_integer(tp.value_type))


def _label_array(column: Any, name: str) -> np.ndarray:
    """int8 numpy labels of one column (nulls → -1); ManifestError for other values."""
    if isinstance(column, (pa.ChunkedArray, pa.Array)):
        tp = column.type
        if not (_is_integer(tp) or pa.types.is_boolean(tp) or pa.types.is_floating(tp)):
            raise ManifestError(f"label column {name!r}: expected int8 labels (1, 0, -1), got {tp}")
        filled = column.cast(pa.float64()).fill_null(-1)
        values = filled.to_numpy() if isinstance(filled, pa.Array) else np.asarray(filled)
    else:
        if hasattr(column, "to_numpy") and not isinstance(column, np.ndarray):  # pandas, incl. nullable Int8
            column = column.to_numpy(dtype=np.float64, na_value=np.nan)
        values = np.asarray(column)
        if values.dtype == object:
            values = np.array([-1 if v is None else v for v in values], dtype=np.float64)
        values = np.where(np.isnan(values), -1, values) if values.dtype.kind == "f" else values
    bad = ~np.isin(values, LABEL_VALUES)
    if bad.any():
        shown = [int(v) if float(v).is_integer() else float(v) for v in np.unique(values[bad])[:5]]
        raise ManifestError(f"label column {name!r} has values outside {{-1, 0, 1}} in {int(bad.sum())} row(s): "
                            f"{shown}")
    return values.astype(np.int8)


def manifest_attributes(table: Any) -> list[str]:
    """The label columns present, in column order: non-fixed columns typed int8, or of another
    integer type whose values all lie in {-1, 0, 1}. (Partition keys are strings, never labels.)"""
    table = _as_table(table)
    out = []
    for field in table.schema:
        if field.name in FIXED_COLUMNS or not _is_integer(field.type):
            continue
        if field.type == pa.int8():
            out.append(field.name)
            continue
        bounds = pc.min_max(table[field.name]).as_py()
        if bounds["min"] is None or (bounds["min"] >= -1 and bounds["max"] <= 1):
            out.append(field.name)
    return out


def label_columns(table: Any, attributes: Sequence[str]) -> np.ndarray:
    """(N, A) int8 labels (1 / 0 / -1) of `attributes`, in that order, from a Table, DataFrame or
    dict of columns. Nulls read as -1 (unknown). ManifestError for a missing column or bad values."""
    attributes = list(attributes)
    if isinstance(table, (pa.Table, pa.RecordBatch)):
        names, get = table.column_names, table.column
    elif isinstance(table, Mapping) or hasattr(table, "columns"):
        names, get = list(table.keys()), table.__getitem__
    else:
        raise ValueError(f"expected a Table, DataFrame or dict of columns, got {type(table).__name__}")
    missing = [a for a in attributes if a not in names]
    if missing:
        raise ManifestError(f"label column(s) {missing} missing; columns present: {list(names)}")
    n = len(table) if not isinstance(table, Mapping) else (len(next(iter(table.values()))) if table else 0)
    if not attributes:
        return np.zeros((n, 0), dtype=np.int8)
    return np.stack([_label_array(get(a), a) for a in attributes], axis=1)


def _examples(table: pa.Table, mask: pa.ChunkedArray | pa.Array, show: str | None = None, n: int = 3) -> str:
    flags = mask.to_numpy(zero_copy_only=False) if isinstance(mask, pa.Array) else mask.to_numpy()
    rows = np.flatnonzero(np.asarray(flags, dtype=bool))[:n]
    ids = table["crop_id"].take(pa.array(rows)).to_pylist()
    if show:
        values = table[show].take(pa.array(rows)).to_pylist()
        return ", ".join(f"crop_id {i!r}: {v!r}" for i, v in zip(ids, values))
    return ", ".join(f"crop_id {i!r} (row {r})" for i, r in zip(ids, rows.tolist()))


def _preview(items: list[str], n: int = 5) -> str:
    return repr(items[:n]) + (f" and {len(items) - n} more" if len(items) > n else "")


# ---------------------------------------------------------------------------------------------
# image_uri resolution and the allowed-prefix check


def resolve_uri(value: str, base: str) -> str:
    """`value` made absolute against folder `base` (s3://…, file://… or a local path).

    s3://, file:// and absolute local paths are returned unchanged; relative ones are joined and
    normalised. ManifestError when a relative path climbs above the bucket root.
    """
    if "://" in value or value.startswith("/"):
        return value
    if is_s3(base):
        bucket, key = split_s3(base)
        joined = posixpath.normpath(posixpath.join(key, value))
        if joined == ".." or joined.startswith("../") or joined == ".":
            raise ManifestError(f"image_uri {redact(value)!r} points outside the bucket of {redact(base)}")
        return f"s3://{bucket}/{joined}"
    if base[:7].lower() == "file://":
        return "file://" + os.path.normpath(os.path.join(base[7:], value))
    return os.path.normpath(os.path.join(base, value))


def _resolve_image_uris(table: pa.Table, base: str) -> pa.Table:
    # Many crops share a frame: resolve each distinct value once.
    encoded = table["image_uri"].combine_chunks().dictionary_encode()
    resolved = pa.array([resolve_uri(v, base) for v in encoded.dictionary.to_pylist()], type=pa.string())
    column = pc.take(resolved, encoded.indices)
    return _set(table, "image_uri", pa.chunked_array([column]))


def allowed_prefixes(manifest_uri: str, storage: StorageConfig | None = None) -> tuple[str, ...] | None:
    """The prefixes a manifest's image_uri values must lie under, or None for no restriction.

    `storage.allowed_prefixes` when set; otherwise a manifest on S3 may only point into its own
    bucket (so a manifest row cannot make a job read arbitrary objects or local files), and a
    local manifest with no policy may read anything the job can see (a laptop run).
    """
    prefixes = tuple(storage.allowed_prefixes) if storage is not None else ()
    if prefixes:
        return prefixes
    if is_s3(manifest_uri):
        return (f"s3://{split_s3(manifest_uri)[0]}",)
    return None


# ---------------------------------------------------------------------------------------------
# writing


def write_manifest(table_or_df: Any, uri: str, storage: StorageConfig | None = None,
                   partition_cols: Sequence[str] | None = None) -> str:
    """Validate and write a manifest; returns `uri`.

    A uri ending in .parquet (without partition_cols) is written as one file; otherwise a folder
    `uri/part-0.parquet`, or hive partitions `uri/k=v/.../part-0.parquet` when `partition_cols` is
    given (partition values are written as strings; rewriting a partition replaces its files only).
    image_uri values are written as given (relative paths stay relative).
    """
    table = validate_manifest(table_or_df).replace_schema_metadata(None)
    fs, path = filesystem(uri, storage)
    partition_cols = list(partition_cols or [])
    for col in partition_cols:
        if col not in table.column_names:
            raise ManifestError(f"partition column {col!r} is not in the manifest; it has {table.column_names}")
        if col in REQUIRED_COLUMNS or col in BBOX_COLUMNS:
            raise ValueError(f"cannot partition by {col!r}")
    if not partition_cols and uri.lower().endswith(DATA_SUFFIXES):
        if not is_s3(uri):
            fs.create_dir(os.path.dirname(path), recursive=True)
        pq.write_table(table, path, filesystem=fs)
        return uri
    partitioning = None
    if partition_cols:
        for col in partition_cols:
            if table[col].type != pa.string():
                table = _set(table, col, table[col].cast(pa.string()))
        partitioning = ds.partitioning(pa.schema([(c, pa.string()) for c in partition_cols]), flavor="hive")
    ds.write_dataset(table, path, filesystem=fs, format="parquet", partitioning=partitioning,
                     basename_template="part-{i}.parquet",
                     # Replace only the partitions being written; without partitions, overwrite
                     # part-0 and leave anything else in the folder (e.g. images) alone.
                     existing_data_behavior="delete_matching" if partition_cols else "overwrite_or_ignore")
    return uri


# ---------------------------------------------------------------------------------------------
# manifest rows on their way into a scoring stream (cluster tasks; light imports, no torch)

# Manifest columns the extraction reads. crop_id, image_uri, camera_id and captured_at are carried to
# the results; track_id and frame_index travel with the rows for the results side to carry.
INPUT_COLUMNS = ("crop_id", "image_uri", "bbox_x", "bbox_y", "bbox_w", "bbox_h", "camera_id", "captured_at",
                 *TRACK_FRAME_COLUMNS)
# Index (into the run's partitions) that each row carries through the stream.
PARTITION_INDEX = "_partition_index"
# A row's problem found before decoding (an image_uri that cannot be resolved): the row is not
# fetched, and the message becomes its `error`.
ROW_ERROR = "_row_error"


# The longest value a row may hold per text column the extraction reads. A longer value, or one
# that is not UTF-8 text, makes its row an error row, and only its first STAND_IN_BYTES are looked
# at beyond measuring and hashing it (docs/security.md). S3 keys are at most 1,024 bytes, Linux
# paths 4,096.
MAX_VALUE_BYTES = {"crop_id": 1024, "image_uri": 4096, "camera_id": 1024, "track_id": 1024}
STAND_IN_BYTES = 64
# The error kind of a bad value of each column (the text before the error's first ':').
_VALUE_KINDS = {"image_uri": "bad uri", "crop_id": "bad crop_id", "camera_id": "bad camera_id",
                "track_id": "bad track_id"}


def stand_in(raw: bytes | pa.Buffer) -> str:
    """What stands in for a text value that is not UTF-8 or too long: its first STAND_IN_BYTES
    characters, bytes that are not UTF-8 as \\xNN escapes, redacted with the whole value in view
    (a URL's user-info may end past them), then "…#" and 16 hex digits of the SHA-256 of the
    whole value, so distinct values keep distinct stand-ins (a crop_id stays a key)."""
    text = (raw.to_pybytes() if isinstance(raw, pa.Buffer) else bytes(raw)).decode("utf-8", "backslashreplace")
    return f"{redacted_head(text, STAND_IN_BYTES)}…#{hashlib.sha256(raw).hexdigest()[:16]}"


def text_problem(name: str, value: str | bytes | pa.Buffer) -> tuple[str | None, str]:
    """(problem, usable value) of one value of text column `name` (a MAX_VALUE_BYTES key).

    problem: None for UTF-8 text within the column's limit, else the row's error ("bad uri:
    image_uri is not UTF-8 text (…)", "bad crop_id: crop_id is longer than 1,024 bytes (…)");
    usable value: the value as str, or its `stand_in`. Costs O(limit) beyond hashing and redacting
    a bad value."""
    limit, kind = MAX_VALUE_BYTES[name], _VALUE_KINDS[name]
    if isinstance(value, str):
        if len(value) <= limit:  # characters: never fewer than bytes
            try:
                raw = value.encode("utf-8")
            except UnicodeEncodeError:  # lone surrogates: not text another reader could store
                raw = value.encode("utf-8", "backslashreplace")
                return f"{kind}: {name} is not UTF-8 text ({redact(stand_in(raw))})", stand_in(raw)
            if len(raw) <= limit:
                return None, value
        raw = value.encode("utf-8", "backslashreplace")
    else:
        raw = value
    size = raw.size if isinstance(raw, pa.Buffer) else len(raw)
    if size > limit:
        return f"{kind}: {name} is longer than {limit:,} bytes ({redact(stand_in(raw))})", stand_in(raw)
    data = raw.to_pybytes() if isinstance(raw, pa.Buffer) else bytes(raw)
    if _is_utf8(data):
        return None, data.decode("utf-8")
    return f"{kind}: {name} is not UTF-8 text ({redact(stand_in(raw))})", stand_in(raw)


def text_column(column: pa.Array | pa.ChunkedArray, name: str) -> tuple[pa.Array, pa.Array]:
    """(values, problems) of a text column of `name` as read from a manifest file (string, large
    string, dictionary or all-null): values as strings, each bad one replaced by its `stand_in`,
    and the row's error where a value is bad (`text_problem`), null elsewhere. Vectorised when every
    value is UTF-8 within the limit, as in every sound manifest; never raises for a value."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    if pa.types.is_dictionary(column.type):
        column = column.dictionary_decode()
    if pa.types.is_null(column.type):
        column = column.cast(pa.string())
    raw = column.view(pa.large_binary() if pa.types.is_large_string(column.type) else pa.binary())
    too_long = pc.fill_null(pc.greater(pc.binary_length(raw), MAX_VALUE_BYTES[name]), False)
    try:
        column.validate(full=True)  # UTF-8 check of every value, in C++
        if not pc.any(too_long).as_py():
            return column.cast(pa.string()), pa.nulls(len(column), pa.string())
    except pa.ArrowInvalid:
        pass
    values: list[str | None] = []
    problems: list[str | None] = []
    long_rows = set(np.flatnonzero(too_long.to_numpy(zero_copy_only=False)).tolist())
    # Long values come out as None here and are taken from their buffers below: never copied whole.
    short = pc.if_else(too_long, pa.scalar(None, raw.type), raw).to_pylist()
    for i, value in enumerate(short):
        if i in long_rows:
            value = raw[i].as_buffer()
        elif value is None:
            values.append(None)
            problems.append(None)
            continue
        problem, usable = text_problem(name, value)
        values.append(usable)
        problems.append(problem)
    return pa.array(values, pa.string()), pa.array(problems, pa.string())


# Rows and uncompressed bytes of row groups gathered into one block: a file of many small row
# groups reads in a few bounded blocks (a row group larger than that is a block of its own).
BLOCK_ROWS = 65_536
BLOCK_BYTES = 64 << 20


def read_manifest_files(batch: pa.Table, *, manifest: str, storage: StorageConfig, base: str,
                        partition_of: Mapping[str, int]) -> Iterator[pa.Table]:
    """Manifest files (a `path` column of paths on the manifest's filesystem) → their rows,
    prepared for the stream (`prepare_rows`), in blocks of consecutive row groups of at most
    BLOCK_ROWS rows and BLOCK_BYTES bytes (`row_group_blocks`; bounded whatever a file's size,
    and few whatever its number of row groups). Transient storage failures are retried
    (`storage.retries`). Runs on the cluster.

    Not `ray.data.read_parquet`: Ray Data 2.60 lists the files and starts footer-reader actors for
    every read (7-11 s per run on 2 CPUs, against 0.3-0.5 s here), and the driver has already read
    the footers (`scan_manifest`)."""
    fs, _ = filesystem(manifest, storage, sdk_retries=False)  # `retrying` is the one retry loop
    for path in batch["path"].to_pylist():
        for table in read_blocks(fs, path, INPUT_COLUMNS, storage):
            table = table.append_column("path", pa.array([path] * table.num_rows, pa.string()))
            yield prepare_rows(table, base=base, partition_of=partition_of)


def read_blocks(fs: pafs.FileSystem, path: str, columns: Sequence[str], storage: StorageConfig) -> Iterator[pa.Table]:
    """The `columns` present in one manifest file, in blocks of consecutive row groups
    (`row_group_blocks`), each read retried on transient failures. One read per block, buffered
    whole: a file of 20,000 small row groups reads like one of a few large ones (docs/security.md),
    where Arrow's dataset scanner makes a batch of every row group."""
    file = retrying(path, storage, lambda: pq.ParquetFile(fs.open_input_file(path), pre_buffer=True))
    try:
        present = [c for c in columns if c in file.schema_arrow.names]
        meta = file.metadata
        sizes = [(meta.row_group(i).num_rows, meta.row_group(i).total_byte_size) for i in range(meta.num_row_groups)]
        for groups in row_group_blocks(sizes):
            yield retrying(path, storage, lambda: file.read_row_groups(groups, columns=present))
    finally:
        file.close()


def row_group_blocks(sizes: Sequence[tuple[int, int]], *, rows: int = BLOCK_ROWS,
                     nbytes: int = BLOCK_BYTES) -> list[list[int]]:
    """Consecutive row groups, given as (rows, uncompressed bytes) each, gathered into blocks of at
    most `rows` rows and `nbytes` bytes; a row group over either limit is a block of its own."""
    blocks: list[list[int]] = []
    total_rows = total_bytes = 0
    for i, (n, size) in enumerate(sizes):
        if not blocks or total_rows + n > rows or total_bytes + size > nbytes:
            blocks.append([])
            total_rows = total_bytes = 0
        blocks[-1].append(i)
        total_rows += n
        total_bytes += size
    return blocks


def prepare_rows(table: pa.Table, *, base: str, partition_of: Mapping[str, int]) -> pa.Table:
    """Manifest rows as read from one file (INPUT_COLUMNS present in it, and `path`) → the
    stream's rows: INPUT_COLUMNS with the contract's types (absent optional ones null, bbox int64
    so an out-of-range box is a row error, not a failed cast), image_uri resolved against `base`,
    PARTITION_INDEX from the row's file, and ROW_ERROR for a value that cannot be used: text that
    is not UTF-8 or over its limit (`text_column`; the row carries stand-ins), an image_uri that
    cannot be resolved, a box that is not whole pixels, a frame_index that is not a whole number
    from 0 to 2**63 - 1 (carried as null). Runs on the cluster; never raises for a row's values, and
    only UTF-8 text leaves it (docs/security.md "Manifest values")."""
    n = table.num_rows
    paths = table["path"].combine_chunks().dictionary_encode()
    index = pa.array([partition_of[p] for p in paths.dictionary.to_pylist()], pa.int32())
    # Text that is not UTF-8 or too long: the row's error, its value a printable stand-in (a bad
    # image_uri is never resolved nor fetched). The first problem in column order is the row's.
    text = {name: text_column(table[name] if name in table.column_names else pa.nulls(n, pa.string()), name)
            for name in MAX_VALUE_BYTES}
    # A null image_uri becomes "" (decoding makes it that row's "missing uri" error).
    given, uri_problems = text["image_uri"]
    uris = pc.fill_null(pc.if_else(pc.is_null(uri_problems), given, ""), "").dictionary_encode()
    resolved, problems = [], []
    for value in uris.dictionary.to_pylist():
        try:
            resolved.append(resolve_uri(value, base) if value.strip() else "")
            problems.append(None)
        except (ManifestError, ValueError) as exc:
            resolved.append("")
            problems.append(f"bad uri: {redact(str(exc), MESSAGE_CHARS)}")
    types = {"crop_id": pa.string(), "bbox_x": pa.int64(), "bbox_y": pa.int64(), "bbox_w": pa.int64(),
             "bbox_h": pa.int64(), "camera_id": pa.string(), "captured_at": pa.timestamp("us", tz="UTC"),
             "track_id": pa.string(), "frame_index": pa.int64()}
    row_error = pc.coalesce(text["crop_id"][1], uri_problems, pc.take(pa.array(problems, pa.string()), uris.indices),
                            text["camera_id"][1], text["track_id"][1])
    columns = {}
    for name in INPUT_COLUMNS:
        if name == "image_uri":
            columns[name] = pc.take(pa.array(resolved, pa.string()), uris.indices)
        elif name in text:
            columns[name] = text[name][0]
        elif name in table.column_names:
            column = table[name].combine_chunks()
            if pa.types.is_dictionary(column.type):
                column = column.dictionary_decode()
            if pa.types.is_floating(column.type):  # numbers written by pandas: whole numbers or a row error
                column = column.cast(pa.float64())  # float16 has no floor kernel; float64 holds each exactly
                bad = pc.fill_null(pc.invert(pc.equal(column, pc.floor(column))), False)
                if name == "frame_index":  # past int64 the cast below would wrap it
                    bad = pc.or_(bad, pc.fill_null(pc.greater_equal(pc.abs(column), 2.0 ** 63), False))
                column, row_error = _refuse(column, bad, row_error, _NUMBER_PROBLEMS[name])
            # Timestamps: drop sub-microsecond digits, take naive ones as UTC (the manifest contract);
            # numbers: an out-of-range box wraps and is refused as a bad bbox when decoding.
            column = column.cast(types[name], safe=pa.types.is_string(types[name]))
            if name == "frame_index":  # negative, or an unsigned value past int64 that the cast wrapped
                column, row_error = _refuse(column, pc.fill_null(pc.less(column, 0), False), row_error,
                                            _NUMBER_PROBLEMS[name])
            columns[name] = column
        else:
            columns[name] = pa.nulls(n, types[name])
    columns[PARTITION_INDEX] = pc.take(index, paths.indices)
    columns[ROW_ERROR] = row_error
    return pa.table(columns)


# The row error of a number column's value that cannot be used.
_NUMBER_PROBLEMS = {**{name: f"bad bbox: {name} is not a whole number of pixels" for name in BBOX_COLUMNS},
                    "frame_index": "bad frame_index: frame_index is not a whole number from 0 to 2**63 - 1"}


def _refuse(column: pa.Array, bad: pa.Array, row_error: pa.Array, message: str) -> tuple[pa.Array, pa.Array]:
    """(column with its `bad` values null, row_error with `message` where `bad` and no earlier error)."""
    row_error = pc.if_else(pc.and_(bad, pc.is_null(row_error)), pa.scalar(message, pa.string()), row_error)
    return pc.if_else(bad, pa.scalar(None, column.type), column), row_error

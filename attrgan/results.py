"""Read extraction results into pandas, touching only the partitions a query needs.

One module on purpose (it is long): the commit protocol's writing steps (staging, promotion,
`_SUCCESS`, generations, transient records) and its readers share the folder layout and the
markers, so what a reader may trust is read beside how it is written.

The extraction job writes one prefix per input partition (e.g. `date=2024-05-01/camera=cam07/`
when the manifest is hive-partitioned that way), then a `_SUCCESS` marker in it. A reader must
only trust prefixes that carry the marker: a partition being rewritten, or whose job died
half-way, has none. Rows follow the "Results" schema of DESIGN.md (`crop_id`, `image_uri`,
`camera_id`, `captured_at` (timestamp, UTC), `status`, `error`, `super_resolved`,
`reconstructed`, `occlusion_score`, `<attr>`, `<attr>_score`, `model_version`, `processed_at`).

Two levels of pruning keep a query over a large archive cheap:

1. listing: hive folders named `date=YYYY-MM-DD` (the UTC day of `captured_at`) outside the time
   window, and `camera=` / `camera_id=` folders not asked for, are never listed or opened;
2. reading: the `captured_at` / `camera_id` filters go down to pyarrow, which skips row groups by
   their statistics and reads only the requested columns.

Example — crops with a backpack seen on camera `cam07` last night (18:00 to 06:00 UTC)::

    import datetime as dt
    from attrgan.results import load_results

    midnight = dt.datetime.now(dt.timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)
    df = load_results("s3://archive/results/", start=midnight - dt.timedelta(hours=6),
                      end=midnight + dt.timedelta(hours=6), cameras=["cam07"],
                      attributes=["backpack"])
    hits = df[(df["status"] == "ok") & (df["backpack"] == True)]  # noqa: E712 (null on error rows)
    hits.sort_values("backpack_score", ascending=False)[["crop_id", "captured_at", "backpack_score"]]

Only the `date=` folders of the two days and their `camera=cam07` folders are listed and read.
The per-track tables committed beside the crops are read the same way by `load_tracks`.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import uuid
from urllib.parse import unquote
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.fs as pafs

from attrgan import faults
from attrgan.config import StorageConfig
from attrgan.contracts import (BASE_COLUMNS, STAGING_DIR, SUCCESS_MARKER, TRACK_COLUMNS, TRACK_FILES_KEY, TRACKS_DIR,
                               TRANSIENT_RECORD)
from attrgan.data.storage import filesystem, is_not_found, join, read_bytes, write_bytes, write_durably

log = logging.getLogger(__name__)

# Times a reader starts again from the markers when a file it was given is gone (`_consistently`).
READ_ATTEMPTS = 3
# Hive keys whose values the reader understands well enough to skip folders.
DATE_KEYS = frozenset({"date"})
CAMERA_KEYS = frozenset({"camera", "camera_id"})
TimeLike = dt.datetime | dt.date | pd.Timestamp | str
T = TypeVar("T")


# ---------------------------------------------------------------------------------------------
# Writing: the commit protocol
#
# A partition's results live in `<out>/<partition>/` as `part-<run>-<n>.parquet` files, and its
# `_SUCCESS` marker (JSON) lists the files that make up its committed results. A run
#   1. writes new files under `<out>/_staging/<run>/<partition>/` (readers skip `_` paths);
#   2. verifies them (one row per manifest row, no duplicate crop_id);
#   3. moves them into the partition folder under names no committed file has;
#   4. replaces `_SUCCESS` in one write (an S3 PUT, a rename locally): the switch to the new files.
# Killed at any moment, a partition's marker names either its complete old files or its complete
# new ones, and `load_results` reads exactly those. The files the switch superseded stay one
# generation: a reader that read the old marker a moment before the switch still finds every file
# it names. The next run deletes them at its start (`clean_partition`), with any other leftovers
# (staged files, files moved in by a run killed before its switch).


def new_run_id() -> str:
    """A run's id: sortable by start time, unique across concurrent drivers."""
    return dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:8]


def _read_marker(fs: pafs.FileSystem, path: str) -> dict[str, Any] | None:
    """A partition's `_SUCCESS`: None when absent or not valid JSON (not committed); {} when empty
    (an older or other writer's marker: every data file of the folder is committed). A marker that
    exists but cannot be read (denied, unreachable) raises OSError: guessing would mix files."""
    try:
        with fs.open_input_stream(path) as f:
            data = f.read()
    except FileNotFoundError:
        return None
    except OSError as exc:
        if is_not_found(exc):
            return None
        raise
    if not data.strip():
        return {}  # an empty marker (Hadoop, Spark and older writers): done, files not listed
    try:
        marker = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError):
        log.warning("%s is not valid JSON: treating the partition as not done", path)
        return None
    return marker if isinstance(marker, dict) else None


def _marker_files(marker: Mapping[str, Any] | None) -> list[str] | None:
    files = marker.get("files") if marker else None
    if not isinstance(files, list) or not all(isinstance(f, str) and "/" not in f for f in files):
        return None
    return files


def marker_track_files(marker: Mapping[str, Any] | None) -> list[str]:
    """The track files a `_SUCCESS` lists (paths in its partition's TRACKS_DIR); [] for a marker
    written before tracks existed, or one whose list is not this code's."""
    files = marker.get(TRACK_FILES_KEY) if marker else None
    if not isinstance(files, list) or not all(
            isinstance(f, str) and f.startswith(f"{TRACKS_DIR}/") and f.count("/") == 1 for f in files):
        return []
    return files


def read_success(uri: str, storage: StorageConfig | None = None) -> dict[str, Any] | None:
    """The parsed `_SUCCESS` marker of output partition `uri`; None when absent or not valid JSON,
    {} when empty; OSError when it cannot be read."""
    fs, path = _filesystem(uri, storage)
    return _read_marker(fs, f"{path}/{SUCCESS_MARKER}")


def _write_atomically(fs: pafs.FileSystem, path: str, data: bytes) -> None:
    """Readers see the old content or the new, never a part: an S3 PUT replaces an object whole;
    on a local disk the bytes go to a temporary name, reach the disk (fsync), then are renamed
    over the target, so a power loss cannot leave an empty marker."""
    if isinstance(fs, pafs.LocalFileSystem):
        folder, name = os.path.split(path)
        temporary = f"{folder}/_{name}.{uuid.uuid4().hex}.tmp"
        write_durably(temporary, data)
        os.replace(temporary, path)
    else:
        with fs.open_output_stream(path) as f:
            f.write(data)


def clean_partition(uri: str, storage: StorageConfig | None = None) -> int:
    """Delete, at the start of a run, what earlier runs left in output partition `uri`: data
    files its `_SUCCESS` does not list (the generation the last switch superseded, files of a run
    killed before its switch) and temporary markers. A partition without a marker listing its
    files keeps its data files (an older layout, or never committed: nothing to protect, nothing
    to trust). Returns the number of files deleted."""
    fs, path = _filesystem(uri, storage)
    marker = _read_marker(fs, f"{path}/{SUCCESS_MARKER}")
    listed = _marker_files(marker)
    infos = fs.get_file_info(pafs.FileSelector(path, allow_not_found=True))
    stale = [i.path for i in infos if i.type == pafs.FileType.File and (
        (listed is not None and _is_data_file(i.base_name) and i.base_name not in listed)
        or (i.base_name.startswith(f"_{SUCCESS_MARKER}.") and i.base_name.endswith(".tmp")))]
    if listed is not None:  # the track files go with the crop files they were committed with
        tracks = {f.split("/", 1)[1] for f in marker_track_files(marker)}
        stale += [i.path for i in fs.get_file_info(pafs.FileSelector(f"{path}/{TRACKS_DIR}", allow_not_found=True))
                  if i.type == pafs.FileType.File and i.base_name not in tracks]
    for file in stale:
        fs.delete_file(file)
    return len(stale)


def clean_staging(out: str, storage: StorageConfig | None = None, *, keep: str | None = None) -> None:
    """Delete `<out>/_staging/` except the run `keep` (one run writes an output base at a time)."""
    fs, path = _filesystem(out, storage)
    for info in fs.get_file_info(pafs.FileSelector(f"{path}/{STAGING_DIR}", allow_not_found=True)):
        if info.type == pafs.FileType.Directory and info.base_name != keep:
            fs.delete_dir(info.path)


def staging_uri(out: str, run_id: str, partition: str) -> str:
    """Where run `run_id` stages partition `partition`'s files under output base `out`."""
    return join(out, STAGING_DIR, run_id, partition)


def promote(uri: str, staged: Sequence[str], marker: Mapping[str, Any], *, run_id: str,
            storage: StorageConfig | None = None, fault: str | None = None,
            staged_tracks: Sequence[str] = ()) -> list[str]:
    """Make the verified files `staged` (URIs) partition `uri`'s committed results (steps 3-4
    above), with its track table `staged_tracks` in TRACKS_DIR; `marker` becomes its `_SUCCESS`
    with both file lists added (one switch for crops and tracks). The files it supersedes stay
    for readers of the old marker until the next run's `clean_partition`. Returns the file names.

    fault: a step name ("promoting", "before_success", "after_success") at which to kill this
    process with SIGKILL (`attrgan.faults`).
    """
    fs, path = _filesystem(uri, storage)
    names = [f"part-{run_id}-{i:05d}.parquet" for i in range(len(staged))]
    fs.create_dir(path, recursive=True)
    for i, (source, name) in enumerate(zip(staged, names)):
        fs.move(_filesystem(source, storage)[1], f"{path}/{name}")
        if i == 0:
            faults.kill_at(fault, "promoting")
    tracks = [f"{TRACKS_DIR}/part-{run_id}-{i:05d}.parquet" for i in range(len(staged_tracks))]
    if tracks:
        fs.create_dir(f"{path}/{TRACKS_DIR}", recursive=True)
    for source, name in zip(staged_tracks, tracks):
        fs.move(_filesystem(source, storage)[1], f"{path}/{name}")
    faults.kill_at(fault, "before_success")
    _write_atomically(fs, f"{path}/{SUCCESS_MARKER}", json.dumps(
        {**marker, "files": names, TRACK_FILES_KEY: tracks}, indent=2).encode())
    faults.kill_at(fault, "after_success")
    return names


# ---------------------------------------------------------------------------------------------
# Crops that fail for a transient reason night after night
#
# A partition with a `transient` row is held back: the next run redoes it. So that one object that
# times out on every read cannot hold its partition back forever, a held-back partition keeps
# `<out>/<partition>/_transient.json`: {"runs": {crop_id: runs in a row that failed it}, "run",
# "updated_at"}. A run that fails such a crop for a transient reason again in its
# `max_transient_runs`-th run in a row gives up on it: the row becomes a permanent error
# ("gave up: …", `gave_up_error`) and the partition commits. A commit deletes the record.

# Crops a partition's record tracks at most: more transient failures than that is an outage, not
# a few poison objects, and the record stays bounded.
MAX_TRACKED_CROPS = 10_000


def read_transient(uri: str, storage: StorageConfig | None = None) -> dict[str, int]:
    """Output partition `uri`'s record: crop_id → runs in a row that failed it ({} when none, or
    when it is not a record this code wrote)."""
    try:
        record = json.loads(read_bytes(join(uri, TRANSIENT_RECORD), storage, max_bytes=16 << 20))
    except FileNotFoundError:
        return {}
    except (ValueError, UnicodeDecodeError):
        log.warning("%s/%s is not valid JSON: starting its count again", uri, TRANSIENT_RECORD)
        return {}
    runs = record.get("runs") if isinstance(record, dict) else None
    if not isinstance(runs, dict):
        return {}
    return {k: v for k, v in runs.items() if isinstance(k, str) and isinstance(v, int) and v > 0}


def write_transient(uri: str, failing: Iterable[str], prior: Mapping[str, int], *, run_id: str,
                    storage: StorageConfig | None = None) -> dict[str, int]:
    """Record that the crops `failing` failed for a transient reason once more (crops that did not
    fail this time drop out: runs count in a row). Returns the new counts."""
    runs = {c: prior.get(c, 0) + 1 for c in sorted(set(failing))[:MAX_TRACKED_CROPS]}
    record = {"runs": runs, "run": run_id, "updated_at": dt.datetime.now(dt.timezone.utc).isoformat()}
    write_bytes(join(uri, TRANSIENT_RECORD), json.dumps(record, indent=1).encode(), storage)
    return runs


def forget_transient(uri: str, storage: StorageConfig | None = None) -> None:
    """Delete partition `uri`'s record (it committed: nothing is held back any more)."""
    fs, path = _filesystem(join(uri, TRANSIENT_RECORD), storage)
    try:
        fs.delete_file(path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        if not is_not_found(exc):
            raise


@dataclass(frozen=True)
class _Window:
    """A query's time window [start, end) in UTC and its camera set; None means unbounded."""

    start: pd.Timestamp | None
    end: pd.Timestamp | None
    cameras: frozenset[str] | None

    def keeps_day(self, day: dt.date) -> bool:
        day_start = pd.Timestamp(day, tz="UTC")
        day_end = day_start + pd.Timedelta(days=1)
        if self.start is not None and day_end <= self.start:
            return False
        return self.end is None or day_start < self.end

    def keeps_folder(self, name: str) -> bool:
        """False only when the hive folder `key=value` provably holds no row of the query."""
        key, sep, value = name.partition("=")
        if not sep:
            return True
        value = unquote(value)  # hive writers percent-encode values ("cam%2007")
        if key in DATE_KEYS:
            try:
                day = dt.date.fromisoformat(value)
            except ValueError:
                return True  # not a day after all: read it rather than drop rows silently
            return self.keeps_day(day)
        if key in CAMERA_KEYS and self.cameras is not None:
            return value in self.cameras
        return True


def _utc(value: TimeLike | None, name: str) -> pd.Timestamp | None:
    if value is None:
        return None
    try:
        ts = pd.Timestamp(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name}: expected a datetime or ISO-8601 string, got {value!r}") from None
    # Naive times are taken as UTC, the timezone of `captured_at`.
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def _window(start: TimeLike | None, end: TimeLike | None, cameras: Iterable[str] | None) -> _Window:
    start_ts, end_ts = _utc(start, "start"), _utc(end, "end")
    if start_ts is not None and end_ts is not None and end_ts <= start_ts:
        raise ValueError(f"end must be after start, got start={start_ts} end={end_ts}")
    camera_set = None
    if cameras is not None:
        if isinstance(cameras, str):
            raise ValueError(f"cameras: expected a list of camera ids, got the string {cameras!r}")
        camera_set = frozenset(cameras)
        if not camera_set:
            raise ValueError("cameras: expected at least one camera id, got an empty list")
    return _Window(start_ts, end_ts, camera_set)


def _filesystem(uri: str, storage: StorageConfig | None) -> tuple[pafs.FileSystem, str]:
    fs, path = filesystem(uri, storage if storage is not None else StorageConfig.from_env())
    return fs, path.rstrip("/")


def _is_data_file(name: str) -> bool:
    return name.endswith(".parquet") and not name.startswith(("_", "."))


def complete_partitions(uri: str, *, start: TimeLike | None = None, end: TimeLike | None = None,
                        cameras: Iterable[str] | None = None,
                        storage: StorageConfig | None = None) -> list[str]:
    """Prefixes under `uri` that hold a `_SUCCESS` marker and may hold rows of the query.

    Walks the folder tree breadth-first, listing one level at a time, and never descends into a
    hive folder the window rules out. A folder with the marker is a partition; it is not searched
    for nested partitions. `storage` defaults to `StorageConfig.from_env()`. Returns filesystem
    paths (without scheme), sorted. Raises FileNotFoundError when `uri` does not exist.
    """
    window = _window(start, end, cameras)
    fs, root = _filesystem(uri, storage)
    if fs.get_file_info(root).type == pafs.FileType.NotFound:
        raise FileNotFoundError(f"no results at {uri!r}")
    return sorted(_walk(fs, root, window))


def _walk(fs: pafs.FileSystem, root: str, window: _Window) -> list[str]:
    found: list[str] = []
    pending = [root]
    while pending:
        folder = pending.pop()
        infos = fs.get_file_info(pafs.FileSelector(folder, allow_not_found=True))
        if any(i.base_name == SUCCESS_MARKER and i.type == pafs.FileType.File for i in infos):
            found.append(folder)
            continue
        pending.extend(i.path for i in infos if i.type == pafs.FileType.Directory
                       and not i.base_name.startswith(("_", ".")) and window.keeps_folder(i.base_name))
    return found


def _data_files(fs: pafs.FileSystem, partitions: Sequence[str]) -> list[str]:
    """The committed files of each partition: those its `_SUCCESS` lists (files beside them are
    a later run's, not promoted yet, or an earlier one's, not cleaned yet); every data file of a
    partition whose marker predates the list."""
    files: list[str] = []
    for folder in partitions:
        marker = _read_marker(fs, f"{folder}/{SUCCESS_MARKER}")
        if marker is None:
            continue  # not valid JSON: not a commit
        listed = _marker_files(marker)
        if listed is not None:
            files.extend(f"{folder}/{name}" for name in listed)
            continue
        infos = fs.get_file_info(pafs.FileSelector(folder, recursive=True))
        files.extend(i.path for i in infos if i.type == pafs.FileType.File and _is_data_file(i.base_name)
                     and not any(part.startswith(("_", ".")) for part in i.path[len(folder):].split("/")))
    return sorted(files)


def results_filter(*, start: TimeLike | None = None, end: TimeLike | None = None,
                   cameras: Iterable[str] | None = None) -> ds.Expression | None:
    """The row filter of a query: `start <= captured_at < end` and `camera_id in cameras`."""
    window = _window(start, end, cameras)
    parts: list[ds.Expression] = []
    # Scalars typed as UTC microseconds; pyarrow casts them to the column's own unit.
    ts_type = pa.timestamp("us", tz="UTC")
    if window.start is not None:
        parts.append(ds.field("captured_at") >= pa.scalar(window.start.to_pydatetime(), type=ts_type))
    if window.end is not None:
        parts.append(ds.field("captured_at") < pa.scalar(window.end.to_pydatetime(), type=ts_type))
    if window.cameras is not None:
        parts.append(ds.field("camera_id").isin(sorted(window.cameras)))
    if not parts:
        return None
    expr = parts[0]
    for p in parts[1:]:
        expr = expr & p
    return expr


def _gone(exc: OSError) -> bool:
    return isinstance(exc, FileNotFoundError) or is_not_found(exc) or "No such file or directory" in str(exc)


def _consistently(read: Callable[[], T]) -> T:
    """`read()`, started again from the markers when a file it was given is gone: a reader that
    read a partition's `_SUCCESS` before the previous switch can find the files it names deleted by
    a run that started since (superseded files stay one generation). Each attempt reads one
    generation per partition, never a mix."""
    for _ in range(READ_ATTEMPTS - 1):
        try:
            return read()
        except OSError as exc:
            if not _gone(exc):
                raise
            log.info("a committed file was replaced while reading (%s); reading the markers again",
                     type(exc).__name__)
    return read()


def results_dataset(uri: str, *, start: TimeLike | None = None, end: TimeLike | None = None,
                    cameras: Iterable[str] | None = None,
                    storage: StorageConfig | None = None) -> ds.Dataset:
    """A pyarrow dataset over the Parquet files of the complete partitions the query can touch.

    One fragment per file. Apply `results_filter(...)` of the same query when scanning it; the
    dataset only prunes whole partitions. The schema unites every partition's (one footer read
    per partition: partitions written by different bundles may hold different attributes). Its
    files stay readable until a run that starts after the next commit of their partition.
    """
    return _consistently(lambda: _results_dataset(uri, start=start, end=end, cameras=cameras, storage=storage))


def _results_dataset(uri: str, *, start: TimeLike | None, end: TimeLike | None, cameras: Iterable[str] | None,
                     storage: StorageConfig | None) -> ds.Dataset:
    import pyarrow.parquet as pq

    fs, _ = _filesystem(uri, storage)
    partitions = complete_partitions(uri, start=start, end=end, cameras=cameras, storage=storage)
    files = _data_files(fs, partitions)
    firsts = {f.rsplit("/", 1)[0]: f for f in reversed(files)}  # one file per folder
    schemas = [pq.read_schema(f, filesystem=fs) for f in firsts.values()]
    schema = pa.unify_schemas(schemas, promote_options="permissive") if schemas else None
    return ds.dataset(files, filesystem=fs, format="parquet", schema=schema)


def _select(schema: pa.Schema, columns: Sequence[str] | None,
            attributes: Sequence[str] | None) -> list[str] | None:
    if isinstance(columns, str) or isinstance(attributes, str):
        raise ValueError(f"columns/attributes: expected lists of names, got {columns or attributes!r}")
    if columns is None and attributes is None:
        return None
    wanted = list(columns) if columns is not None else [c for c in BASE_COLUMNS if c in schema.names]
    for attr in attributes or ():
        wanted += [attr, f"{attr}_score"]
    missing = [c for c in wanted if c not in schema.names]
    if missing:
        raise ValueError(f"unknown result column(s) {missing}; available: {schema.names}")
    return list(dict.fromkeys(wanted))  # keep order, drop duplicates


def load_results(uri: str, *, start: TimeLike | None = None, end: TimeLike | None = None,
                 cameras: Iterable[str] | None = None, columns: Sequence[str] | None = None,
                 attributes: Sequence[str] | None = None,
                 storage: StorageConfig | None = None) -> pd.DataFrame:
    """Extraction results under `uri` (local path, `file://` or `s3://`) as a DataFrame.

    Args:
        start, end: keep rows with `start <= captured_at < end`; datetimes (naive = UTC),
            pandas Timestamps or ISO-8601 strings. Rows with a null `captured_at` are dropped
            when either bound is given.
        cameras: keep rows whose `camera_id` is in this list.
        columns: columns to return; default all of them (or BASE_COLUMNS with `attributes`).
        attributes: attribute ids whose `<attr>` (bool) and `<attr>_score` (float32) columns
            are added to `columns`.
        storage: object storage settings; default `StorageConfig.from_env()`.

    Only partitions with a `_SUCCESS` marker are read. `captured_at` comes back as
    `datetime64[ns, UTC]`, decisions as `boolean` and scores as `Float32` (`<NA>` on error rows,
    `results_to_pandas`). An existing prefix with no matching partition gives an empty
    DataFrame; a missing one raises FileNotFoundError; an unknown column raises ValueError.
    """
    def read() -> pd.DataFrame:
        dataset = _results_dataset(uri, start=start, end=end, cameras=cameras, storage=storage)
        if not dataset.files:
            if columns is None and attributes is None:
                return pd.DataFrame()
            names = list(columns or BASE_COLUMNS) + [f"{a}{s}" for a in attributes or () for s in ("", "_score")]
            return pd.DataFrame(columns=list(dict.fromkeys(names)))
        selected = _select(dataset.schema, columns, attributes)
        table = dataset.to_table(columns=selected, filter=results_filter(start=start, end=end, cameras=cameras))
        return results_to_pandas(table)

    return _consistently(read)


# Error rows hold nulls in `<attr>` / `<attr>_score`: pandas' nullable dtypes keep them as <NA>
# in a boolean / Float32 column instead of None in an object column.
PANDAS_DTYPES = {pa.bool_(): pd.BooleanDtype(), pa.float32(): pd.Float32Dtype(), pa.float64(): pd.Float64Dtype()}


def results_to_pandas(table: pa.Table) -> pd.DataFrame:
    """A results table as pandas: booleans `boolean`, scores `Float32`, timestamps datetime64[ns, UTC]."""
    return table.to_pandas(types_mapper=PANDAS_DTYPES.get)


# ---------------------------------------------------------------------------------------------
# Tracks: one row per person track per partition (DESIGN.md "Reading tracks")
#
# A committed partition's track table is the files its `_SUCCESS` lists under `track_files`
# (`_tracks/part-<run>-<n>.parquet`, relative to the partition), with the fusion's record under
# `tracks` (rows, person_attributes, thresholds, fusion). One switch commits crops and tracks.

def _track_files(marker: Mapping[str, Any]) -> list[str] | None:
    """The marker's track files (relative to the partition); None when it lists none (a partition
    written before tracks existed). A list that names anything but a data file directly in
    TRACKS_DIR is refused: a marker never points a reader elsewhere."""
    listed = marker.get(TRACK_FILES_KEY)
    if listed is None:
        return None
    folder = TRACKS_DIR + "/"
    if not isinstance(listed, list) or not all(
            isinstance(f, str) and f.startswith(folder) and "/" not in f[len(folder):]
            and _is_data_file(f[len(folder):]) for f in listed):
        raise ValueError(f"{TRACK_FILES_KEY} must list {folder}<name>.parquet files")
    return listed


def _track_thresholds(marker: Mapping[str, Any]) -> dict[str, float]:
    record = marker.get("tracks")
    thresholds = record.get("thresholds") if isinstance(record, Mapping) else None
    if not isinstance(thresholds, Mapping):
        return {}
    return {a: float(t) for a, t in thresholds.items() if isinstance(a, str) and isinstance(t, (int, float))
            and not isinstance(t, bool) and 0.0 <= t <= 1.0}


def _committed_tracks(fs: pafs.FileSystem, partitions: Sequence[str]) -> tuple[list[str], dict[str, float]]:
    """(the track files `_SUCCESS` lists in each partition, the decision thresholds of their
    markers, later partitions over earlier ones)."""
    files: list[str] = []
    thresholds: dict[str, float] = {}
    for folder in partitions:
        marker = _read_marker(fs, f"{folder}/{SUCCESS_MARKER}")
        try:
            listed = _track_files(marker) if marker else None
        except ValueError as exc:
            log.warning("%s/%s: %s; reading no tracks of it", folder, SUCCESS_MARKER, exc)
            continue
        if listed:
            files.extend(f"{folder}/{name}" for name in listed)
            thresholds.update(_track_thresholds(marker))
    return files, thresholds


def track_attributes(columns: Sequence[str]) -> tuple[str, ...]:
    """The person-level attributes among a track table's `columns`: the names with both `<attr>`
    and `<attr>_score` columns, in the table's order."""
    names = set(columns)
    return tuple(n for n in columns if n not in TRACK_COLUMNS and f"{n}_score" in names)


def load_tracks(uri: str, *, start: TimeLike | None = None, end: TimeLike | None = None,
                cameras: Iterable[str] | None = None, where: str | None = None, top: int | None = None,
                columns: Sequence[str] | None = None, storage: StorageConfig | None = None) -> pd.DataFrame:
    """Person tracks of the complete partitions under `uri`, best first.

    Args:
        start, end: keep tracks seen in [start, end): `last_seen >= start` and `first_seen < end`
            (a track overlapping the window, whole; null times are dropped when a bound is given).
            Partitions outside the window (`date=` folders) are not read, so a track crossing the
            window's edge into such a partition counts only its crops inside the partitions read.
        cameras: keep tracks whose `camera_id` is in this list (pushed down to the files).
        where: a query expression (`attrgan.query`, e.g. "backpack and not female"), checked
            against the tables' attributes before any track file is read.
        top: keep the first `top` tracks.
        columns: attributes (`backpack`: its `<attr>` and `<attr>_score`) or other track columns to
            return beside the fixed ones (`contracts.FIXED_TRACK_FIELDS`, model_version and
            processed_at: always read, merging needs them) and the query's attributes; default
            every column. Only these are read from the files.
        storage: object storage settings; default `StorageConfig.from_env()`.

    Reads exactly the files each partition's `_SUCCESS` lists under `track_files` (the markers
    again when one is gone mid-read, as `load_results`). A `_SUCCESS` without `track_files`
    (results written before track tables existed) has no tracks: that partition adds none. A
    track seen in several partitions (a person crossing midnight) is one row, merged by
    `fusion.merge_tracks` with the markers' thresholds.

    Order ("best first"): with `where`, by `relevance` (a column added: the mean over the
    expression's attribute terms of the fused score, 1 - score for terms that ask for an
    attribute's absence, `Query.relevance`); without, by `weight` (the sum of the track's crops'
    quality weights: more and better crops first); ties by more crops, then camera, track and
    first_seen. Types as `load_results` (`boolean`, `Float32`, timestamps UTC). A missing `uri`
    raises FileNotFoundError; a bad expression `query.QueryError`; an unknown column ValueError.
    """
    from attrgan.query import parse

    query = parse(where) if where is not None else None  # syntax first: no I/O for a typo
    if top is not None and (isinstance(top, bool) or not isinstance(top, int) or top < 1):
        raise ValueError(f"top must be a positive integer, got {top!r}")
    if isinstance(columns, str):
        raise ValueError(f"columns: expected a list of names, got the string {columns!r}")
    window = _window(start, end, cameras)

    def read() -> pd.DataFrame:
        fs, _ = _filesystem(uri, storage)
        partitions = complete_partitions(uri, start=start, end=end, cameras=cameras, storage=storage)
        files, thresholds = _committed_tracks(fs, partitions)
        return _read_tracks(fs, files, thresholds, query, columns, window)

    tracks = _consistently(read)
    return tracks.head(top) if top is not None else tracks


def _read_tracks(fs: pafs.FileSystem, files: Sequence[str], thresholds: Mapping[str, float], query: Any,
                 columns: Sequence[str] | None, window: _Window) -> pd.DataFrame:
    import pyarrow.parquet as pq

    from attrgan.contracts import tracks_schema
    from attrgan.fusion import merge_tracks

    firsts = {f.rsplit("/", 2)[0]: f for f in reversed(files)}  # one footer per partition
    schemas = [pq.read_schema(f, filesystem=fs) for f in firsts.values()]
    schema = pa.unify_schemas(schemas, promote_options="permissive") if schemas else tracks_schema(())
    known = track_attributes(schema.names)
    if query is not None and files:  # no track table at all: nothing to check the names against
        query.check(known)
    attributes = list(known) if columns is None else [c for c in columns if c in known]
    others = [] if columns is None else [c for c in columns if c not in known]
    missing = [c for c in others if c not in schema.names]
    if missing:
        raise ValueError(f"unknown track column(s) {missing}; available: {schema.names}")
    if query is not None:
        attributes += [a for a in query.attributes if a not in attributes]
    wanted = list(dict.fromkeys([*TRACK_COLUMNS, *others, *(f"{a}{s}" for a in attributes for s in ("", "_score"))]))
    wanted = [c for c in schema.names if c in wanted]  # the table's order
    if files:
        camera_filter = ds.field("camera_id").isin(sorted(window.cameras)) if window.cameras is not None else None
        table = ds.dataset(list(files), filesystem=fs, format="parquet", schema=schema).to_table(
            columns=wanted, filter=camera_filter)
    else:
        table = schema.empty_table().select(wanted)
    # merge_tracks works on plain pandas (NaN scores, object decisions); the result is typed as
    # load_results' through the selected schema again.
    merged = merge_tracks(table.to_pandas(), person_attributes=attributes, thresholds=thresholds)
    tracks = results_to_pandas(pa.Table.from_pandas(merged, schema=table.schema, preserve_index=False))
    keep = pd.Series(True, index=tracks.index)
    if window.start is not None:
        keep &= (tracks["last_seen"] >= window.start).fillna(False)
    if window.end is not None:
        keep &= (tracks["first_seen"] < window.end).fillna(False)
    if query is not None:
        keep &= query.matches(tracks)
    tracks = tracks[keep.astype(bool)].copy()
    order = ["weight", "crops"]
    if query is not None:
        tracks["relevance"] = query.relevance(tracks)
        order.insert(0, "relevance")
    tracks = tracks.sort_values([*order, "camera_id", "track_id", "first_seen"],
                                ascending=[False] * len(order) + [True, True, True], na_position="last",
                                kind="stable")
    return tracks.reset_index(drop=True)

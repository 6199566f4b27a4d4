"""Read extraction results into pandas, touching only the partitions a query needs.

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
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.fs as pafs

from attrgan.config import StorageConfig

SUCCESS_MARKER = "_SUCCESS"
# Hive keys whose values the reader understands well enough to skip folders.
DATE_KEYS = frozenset({"date"})
CAMERA_KEYS = frozenset({"camera", "camera_id"})
# Columns every result row carries; with `attributes=` these come first, then `<attr>, <attr>_score`.
BASE_COLUMNS = (
    "crop_id", "image_uri", "camera_id", "captured_at", "status", "error", "super_resolved",
    "reconstructed", "occlusion_score", "model_version", "processed_at",
)

TimeLike = dt.datetime | dt.date | pd.Timestamp | str


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
    from attrgan.data.storage import filesystem

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
        pending.extend(i.path for i in infos
                       if i.type == pafs.FileType.Directory and window.keeps_folder(i.base_name))
    return found


def _data_files(fs: pafs.FileSystem, partitions: Sequence[str]) -> list[str]:
    files: list[str] = []
    for folder in partitions:
        infos = fs.get_file_info(pafs.FileSelector(folder, recursive=True))
        files.extend(i.path for i in infos if i.type == pafs.FileType.File and _is_data_file(i.base_name))
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


def results_dataset(uri: str, *, start: TimeLike | None = None, end: TimeLike | None = None,
                    cameras: Iterable[str] | None = None,
                    storage: StorageConfig | None = None) -> ds.Dataset:
    """A pyarrow dataset over the Parquet files of the complete partitions the query can touch.

    One fragment per file. Apply `results_filter(...)` of the same query when scanning it; the
    dataset only prunes whole partitions. The schema is taken from the first file.
    """
    fs, _ = _filesystem(uri, storage)
    partitions = complete_partitions(uri, start=start, end=end, cameras=cameras, storage=storage)
    return ds.dataset(_data_files(fs, partitions), filesystem=fs, format="parquet")


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
    `datetime64[ns, UTC]`. An existing prefix with no matching partition gives an empty
    DataFrame; a missing one raises FileNotFoundError; an unknown column raises ValueError.
    """
    dataset = results_dataset(uri, start=start, end=end, cameras=cameras, storage=storage)
    if not dataset.files:
        if columns is None and attributes is None:
            return pd.DataFrame()
        names = list(columns or BASE_COLUMNS) + [f"{a}{s}" for a in attributes or () for s in ("", "_score")]
        return pd.DataFrame(columns=list(dict.fromkeys(names)))
    selected = _select(dataset.schema, columns, attributes)
    table = dataset.to_table(columns=selected,
                             filter=results_filter(start=start, end=end, cameras=cameras))
    return table.to_pandas()

"""attrgan.results: partition pruning, pushed-down filters, `_SUCCESS` handling, local and S3."""

from __future__ import annotations

import datetime as dt

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from attrgan.results import complete_partitions, load_results, results_dataset, results_filter

UTC = dt.timezone.utc
ATTRS = ("female", "backpack")

# (partition, file name, [(camera, "YYYY-MM-DD HH:MM", backpack)], complete)
# Partitions are UTC days of captured_at, as the extraction job writes them.
LAYOUT = [
    ("date=2024-05-01/camera=cam1", "part-0.parquet",
     [("cam1", "2024-05-01 20:00", True), ("cam1", "2024-05-01 23:30", False)], True),
    ("date=2024-05-01/camera=cam1", "part-1.parquet", [("cam1", "2024-05-01 10:00", True)], True),
    ("date=2024-05-01/camera=cam2", "part-0.parquet", [("cam2", "2024-05-01 22:00", True)], True),
    ("date=2024-05-02/camera=cam1", "part-0.parquet",
     [("cam1", "2024-05-02 02:00", True), ("cam1", "2024-05-02 09:00", True)], True),
    # Being rewritten (no marker yet): must never be read.
    ("date=2024-05-02/camera=cam2", "part-0.parquet", [("cam2", "2024-05-02 01:00", True)], False),
]
NIGHT = {"start": dt.datetime(2024, 5, 1, 18, tzinfo=UTC), "end": dt.datetime(2024, 5, 2, 6, tzinfo=UTC)}


def crop_id(camera: str, when: str) -> str:
    return f"{camera}-{when[5:10]}-{when[11:13]}{when[14:16]}"


def result_table(rows: list[tuple[str, str, bool]]) -> pa.Table:
    """Rows in the DESIGN.md results schema; scores are hand-picked from the backpack flag."""
    n = len(rows)
    ts = pa.timestamp("us", tz="UTC")
    data = {
        "crop_id": pa.array([crop_id(c, w) for c, w, _ in rows], pa.string()),
        "image_uri": pa.array([f"s3://frames/{crop_id(c, w)}.jpg" for c, w, _ in rows], pa.string()),
        "camera_id": pa.array([c for c, _, _ in rows], pa.string()),
        "captured_at": pa.array([dt.datetime.fromisoformat(w).replace(tzinfo=UTC) for _, w, _ in rows], ts),
        "status": pa.array(["ok"] * n, pa.string()),
        "error": pa.array([None] * n, pa.string()),
        "super_resolved": pa.array([False] * n, pa.bool_()),
        "reconstructed": pa.array([False] * n, pa.bool_()),
        "occlusion_score": pa.array([0.1] * n, pa.float32()),
        "female": pa.array([False] * n, pa.bool_()),
        "female_score": pa.array([0.2] * n, pa.float32()),
        "backpack": pa.array([b for _, _, b in rows], pa.bool_()),
        "backpack_score": pa.array([0.9 if b else 0.1 for _, _, b in rows], pa.float32()),
        "model_version": pa.array(["v1"] * n, pa.string()),
        "processed_at": pa.array([dt.datetime(2024, 5, 3, tzinfo=UTC)] * n, ts),
    }
    return pa.table(data)


def write_layout(fs, root: str) -> None:
    """Write LAYOUT under `root` with pyarrow filesystem `fs`; markers after data, like the job."""
    for partition, name, rows, _ in LAYOUT:
        fs.create_dir(f"{root}/{partition}", recursive=True)
        pq.write_table(result_table(rows), f"{root}/{partition}/{name}", filesystem=fs)
    for partition in {p for p, _, _, complete in LAYOUT if complete}:
        with fs.open_output_stream(f"{root}/{partition}/_SUCCESS"):
            pass


@pytest.fixture
def local_results(tmp_path):
    from pyarrow.fs import LocalFileSystem

    root = tmp_path / "results"
    write_layout(LocalFileSystem(), str(root))
    return str(root)


@pytest.fixture
def s3_results(storage, s3_bucket):
    from attrgan.data.storage import filesystem

    uri = f"s3://{s3_bucket}/results"
    fs, path = filesystem(uri, storage)
    write_layout(fs, path.rstrip("/"))
    return uri


def test_only_complete_partitions_are_listed(local_results):
    found = complete_partitions(local_results)
    assert [p.split("results/")[1] for p in found] == [
        "date=2024-05-01/camera=cam1", "date=2024-05-01/camera=cam2", "date=2024-05-02/camera=cam1"]
    df = load_results(local_results)
    # 6 rows in complete partitions; the cam2 row of 2024-05-02 has no marker.
    assert len(df) == 6
    assert crop_id("cam2", "2024-05-02 01:00") not in set(df["crop_id"])


def test_pruning_reads_fewer_files(local_results):
    everything = results_dataset(local_results)
    assert len(list(everything.get_fragments())) == 5 - 1  # 5 files written, one unmarked
    night_cam1 = results_dataset(local_results, cameras=["cam1"], **NIGHT)
    # Both days overlap the night; only camera=cam1 folders: 2 files + 1 file.
    assert len(list(night_cam1.get_fragments())) == 3
    one_day = results_dataset(local_results, start="2024-05-02T00:00", end="2024-05-02T12:00")
    assert [f.path.split("results/")[1] for f in one_day.get_fragments()] == [
        "date=2024-05-02/camera=cam1/part-0.parquet"]


def test_backpacks_on_camera_last_night(local_results):
    df = load_results(local_results, cameras=["cam1"], attributes=["backpack"], **NIGHT)
    # cam1 rows inside [18:00, 06:00): 20:00 (backpack), 23:30 (none), 02:00 (backpack).
    assert sorted(df["crop_id"]) == ["cam1-05-01-2000", "cam1-05-01-2330", "cam1-05-02-0200"]
    hits = df[df["backpack"]]
    assert sorted(hits["crop_id"]) == ["cam1-05-01-2000", "cam1-05-02-0200"]
    assert list(df.columns[-2:]) == ["backpack", "backpack_score"]
    assert "female" not in df.columns
    assert str(df["captured_at"].dtype).startswith("datetime64") and str(df["captured_at"].dt.tz) == "UTC"
    assert df["backpack_score"].dtype == "Float32" and df["backpack"].dtype == "boolean"


def test_filters_are_exact_at_the_bounds(local_results):
    # start is inclusive, end exclusive; naive datetimes are UTC.
    df = load_results(local_results, start=dt.datetime(2024, 5, 1, 20), end=dt.datetime(2024, 5, 1, 22),
                      columns=["crop_id"])
    assert list(df.columns) == ["crop_id"] and list(df["crop_id"]) == ["cam1-05-01-2000"]
    expr = results_filter(cameras=["cam2"])
    assert "camera_id" in str(expr) and results_filter() is None


def test_time_zones_are_converted(local_results):
    # 22:00 UTC is 00:00 the next day in UTC+2.
    plus2 = dt.timezone(dt.timedelta(hours=2))
    df = load_results(local_results, start=dt.datetime(2024, 5, 2, 0, tzinfo=plus2),
                      end=dt.datetime(2024, 5, 2, 0, 1, tzinfo=plus2), columns=["crop_id"])
    assert list(df["crop_id"]) == ["cam2-05-01-2200"]


def test_unpartitioned_results(tmp_path):
    root = tmp_path / "flat"
    root.mkdir()
    pq.write_table(result_table([("cam9", "2024-05-01 12:00", True)]), root / "part-0.parquet")
    with pytest.raises(FileNotFoundError, match="no results"):
        load_results(str(tmp_path / "missing"))
    assert load_results(str(root), columns=["crop_id"]).empty  # no marker yet
    (root / "_SUCCESS").touch()
    assert list(load_results(str(root))["crop_id"]) == ["cam9-05-01-1200"]


def test_bad_arguments(local_results):
    with pytest.raises(ValueError, match="end must be after start"):
        load_results(local_results, start="2024-05-02", end="2024-05-01")
    with pytest.raises(ValueError, match="list of camera ids"):
        load_results(local_results, cameras="cam1")
    with pytest.raises(ValueError, match="ISO-8601"):
        load_results(local_results, start="yesterday-ish")
    with pytest.raises(ValueError, match=r"unknown result column\(s\) \['hat', 'hat_score'\]"):
        load_results(local_results, attributes=["hat"])


def test_s3_results_with_pruning(s3_results, storage):
    assert len(list(results_dataset(s3_results, cameras=["cam1"], storage=storage, **NIGHT).get_fragments())) == 3
    df = load_results(s3_results, cameras=["cam1"], attributes=list(ATTRS), storage=storage, **NIGHT)
    assert sorted(df.loc[df["backpack"], "crop_id"]) == ["cam1-05-01-2000", "cam1-05-02-0200"]
    assert not df["female"].any() and (df["status"] == "ok").all()
    assert len(load_results(s3_results, storage=storage)) == 6


def test_error_rows_read_as_nullable_dtypes(tmp_path):
    """An error row has no decisions or scores: <NA> in boolean / Float32 columns, not None objects."""
    root = tmp_path / "flat"
    root.mkdir()
    table = result_table([("cam1", "2024-05-01 12:00", True), ("cam1", "2024-05-01 13:00", False)])
    for name in ("backpack", "backpack_score", "occlusion_score"):
        column = table[name].combine_chunks()
        masked = pa.array(column.to_pylist()[:1] + [None], column.type)
        table = table.set_column(table.schema.get_field_index(name), name, masked)
    pq.write_table(table, root / "part-0.parquet")
    (root / "_SUCCESS").touch()
    df = load_results(str(root))
    assert df["backpack"].dtype == "boolean" and df["backpack_score"].dtype == "Float32"
    assert df["backpack"].isna().tolist() == [False, True] and df["occlusion_score"].isna().tolist() == [False, True]
    assert df["backpack"].fillna(False).tolist() == [True, False]


def test_duckdb_reads_only_committed_partitions(local_results):
    """The README's DuckDB example: DuckDB scans the dataset of complete partitions (pyarrow reads)."""
    duckdb = pytest.importorskip("duckdb")
    # The dataset prunes whole partitions (days, cameras); the SQL filters rows.
    results = results_dataset(local_results, cameras=["cam1"], **NIGHT)  # noqa: F841 (DuckDB finds it by name)
    rows = duckdb.sql("""SELECT crop_id FROM results WHERE status = 'ok' AND backpack
                         AND captured_at >= TIMESTAMPTZ '2024-05-01 18:00Z'
                         AND captured_at < TIMESTAMPTZ '2024-05-02 06:00Z'
                         ORDER BY crop_id""").fetchall()
    assert rows == [("cam1-05-01-2000",), ("cam1-05-02-0200",)]
    everything = results_dataset(local_results)  # noqa: F841
    counts = dict(duckdb.sql("SELECT camera_id, count(*) FROM everything GROUP BY ALL").fetchall())
    assert counts == {"cam1": 5, "cam2": 1}  # the unmarked cam2 partition of 2024-05-02 is not read

import datetime as dt
import os

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from attrgan.config import StorageConfig
from attrgan.data import storage as st
from attrgan.data.images import decode_batch
from attrgan.data.storage import allowed
from attrgan.data.manifest import (
    INPUT_COLUMNS,
    MANIFEST_SCHEMA,
    ROW_ERROR,
    TRACK_FRAME_COLUMNS,
    ManifestError,
    allowed_prefixes,
    label_columns,
    list_partitions,
    manifest_attributes,
    prepare_rows,
    read_manifest,
    scan_manifest,
    validate_manifest,
    write_manifest,
)


def frame(n=4, **extra):
    data = {
        "crop_id": [f"c{i}" for i in range(n)],
        "image_uri": [f"images/{i}.jpg" for i in range(n)],
        "bbox_x": [0, 5, None, 1][:n],
        "bbox_y": [0, 6, None, 2][:n],
        "bbox_w": [10, 7, None, 3][:n],
        "bbox_h": [20, 8, None, 4][:n],
        "camera_id": ["c1", "c1", "c2", "c2"][:n],
        "captured_at": pd.to_datetime(["2026-11-25 10:00:00"] * n),
        "split": ["train", "val", "test", "train"][:n],
        "female": [1, 0, -1, 1][:n],
        "hat": [0, 0, 1, -1][:n],
    }
    data.update(extra)
    return pd.DataFrame(data)


def test_validate_casts_to_contract_types():
    table = validate_manifest(frame())
    assert set(MANIFEST_SCHEMA.names) - set(table.column_names) == set(TRACK_FRAME_COLUMNS)  # optional: absent
    for field in MANIFEST_SCHEMA:
        if field.name not in TRACK_FRAME_COLUMNS:
            assert table.schema.field(field.name).type == field.type, field.name
    assert table.schema.field("female").type == pa.int8() and table.schema.field("hat").type == pa.int8()
    # pandas' NaN for missing bbox values becomes a real null int32.
    assert table["bbox_x"].to_pylist() == [0, 5, None, 1]
    # naive timestamps are taken as UTC
    assert table["captured_at"][0].as_py() == dt.datetime(2026, 11, 25, 10, tzinfo=dt.timezone.utc)
    assert manifest_attributes(table) == ["female", "hat"]
    np.testing.assert_array_equal(label_columns(table, ["hat", "female"]),
                                  np.array([[0, 1], [0, 0], [1, -1], [-1, 1]], dtype=np.int8))


def test_manifest_attributes_skips_non_label_integers():
    table = validate_manifest(frame(frame_index=[10, 11, 12, 13], flag=[0, 1, 1, 0]))
    assert manifest_attributes(table) == ["female", "hat", "flag"]
    assert table.schema.field("frame_index").type == pa.int64()  # untouched


@pytest.mark.parametrize("mutate, match", [
    (lambda df: df.drop(columns=["image_uri"]), r"missing the required column 'image_uri'"),
    (lambda df: df.drop(columns=["crop_id"]), r"missing the required column 'crop_id'"),
    (lambda df: df.assign(crop_id=["a", "b", "a", "b"]), r"'crop_id' must be unique; 2 value\(s\) repeat: 'a' \(x2\)"),
    (lambda df: df.assign(crop_id=["a", None, "c", "d"]), r"'crop_id' has 1 null value\(s\), e.g. rows \[1\]"),
    (lambda df: df.assign(image_uri=["x.jpg", None, " ", "y.jpg"]),
     r"'image_uri' is null or empty in 2 row\(s\): crop_id 'c1' \(row 1\), crop_id 'c2' \(row 2\)"),
        (lambda df: df.assign(captured_at=np.array([1_700_000_000] * 4, dtype=np.int64)),
         r"column 'captured_at': expected a timestamp .* got int64: integers are refused"),
    (lambda df: df.assign(bbox_x=["a", "b", "c", "d"]), r"column 'bbox_x': expected int32, got (large_)?string that cannot be cast safely"),
    (lambda df: df.assign(bbox_w=[1.5, 2.0, 3.0, 4.0]), r"column 'bbox_w': expected int32, got double"),
    (lambda df: df.assign(bbox_w=[2**40, 1, 1, 1]), r"column 'bbox_w': expected int32, got int64"),
    (lambda df: df.drop(columns=["bbox_h"]), r"bbox columns come as a set.*missing \['bbox_h'\]"),
    (lambda df: df.assign(female=np.array([1, 2, 0, 0], dtype=np.int8)), r"'female' has values outside \{-1, 0, 1\} in 1 row\(s\): \[2\]"),
    (lambda df: df.assign(frame_index=[0, -1, 2, -5]),
     r"column 'frame_index' must be >= 0 .*; 2 row\(s\) are negative: crop_id 'c1': -1, crop_id 'c3': -5"),
    (lambda df: df.assign(frame_index=[0.5, 1, 2, 3]), r"column 'frame_index': expected int64, got double"),
])
def test_validate_rejects_bad_manifests(mutate, match):
    with pytest.raises(ManifestError, match=match):
        validate_manifest(mutate(frame()))


def test_label_errors_and_sources():
    with pytest.raises(ManifestError, match=r"label column\(s\) \['boots'\] missing"):
        validate_manifest(frame(), attributes=["female", "boots"])
    with pytest.raises(ManifestError, match=r"'female' has values outside .* \[2\]"):
        label_columns({"female": np.array([1, 2])}, ["female"])
    with pytest.raises(ManifestError, match=r"\['boots'\] missing"):
        label_columns(frame(), ["boots"])
    # pandas nullable ints and dicts of numpy columns; nulls are unknown (-1)
    df = pd.DataFrame({"a": pd.array([1, None, 0], dtype="Int8"), "b": [0.0, np.nan, 1.0]})
    np.testing.assert_array_equal(label_columns(df, ["a", "b"]), [[1, 0], [-1, -1], [0, 1]])
    assert label_columns({"a": np.array([1, 0])}, []).shape == (2, 0)
    explicit = validate_manifest(frame(boots=[1.0, None, 0.0, 1.0]), attributes=["boots"])
    assert explicit["boots"].to_pylist() == [1, -1, 0, 1] and explicit.schema.field("boots").type == pa.int8()


@pytest.mark.parametrize("where", ["s3", "local"])
def test_single_file_round_trip_and_relative_uris(where, storage, s3_bucket, tmp_path):
    root = f"s3://{s3_bucket}/sets/a" if where == "s3" else str(tmp_path / "sets" / "a")
    df = frame()
    df.loc[1, "image_uri"] = "../shared/1.jpg"
    df.loc[2, "image_uri"] = f"s3://{s3_bucket}/abs/2.jpg" if where == "s3" else "/abs/2.jpg"
    uri = write_manifest(df, st.join(root, "manifest.parquet"), storage)
    table = read_manifest(uri, storage)
    parent = f"s3://{s3_bucket}/sets" if where == "s3" else str(tmp_path / "sets")
    assert table["image_uri"].to_pylist() == [
        f"{root}/images/0.jpg", f"{parent}/shared/1.jpg", df.loc[2, "image_uri"], f"{root}/images/3.jpg"]
    assert table["crop_id"].to_pylist() == ["c0", "c1", "c2", "c3"]
    assert table.schema.field("female").type == pa.int8()
    # the file itself keeps the relative values
    fs, path = st.filesystem(uri, storage)
    assert pq.read_table(path, filesystem=fs)["image_uri"][0].as_py() == "images/0.jpg"
    assert list_partitions(uri, storage) == [""]
    only = read_manifest(uri, storage, columns=["female"])
    assert only.column_names == ["crop_id", "image_uri", "female"]
    with pytest.raises(ManifestError, match=r"no column\(s\) \['boots'\]"):
        read_manifest(uri, storage, columns=["boots"])


def test_s3_manifest_written_by_fsspec_read_by_pyarrow(storage, s3_bucket):
    fs, path = st.fsspec_filesystem(f"s3://{s3_bucket}/m/manifest.parquet", storage)
    with fs.open(path, "wb") as f:
        frame().to_parquet(f, index=False)
    table = read_manifest(f"s3://{s3_bucket}/m/manifest.parquet", storage)
    assert table.num_rows == 4 and table["image_uri"][3].as_py() == f"s3://{s3_bucket}/m/images/3.jpg"


@pytest.mark.parametrize("where", ["s3", "local"])
def test_hive_partitions_listing_and_selection(where, storage, s3_bucket, tmp_path):
    root = f"s3://{s3_bucket}/nightly" if where == "s3" else f"file://{tmp_path}/nightly"
    df = frame(date=["2026-11-25", "2026-11-25", "2026-11-26", "2026-11-26"])
    write_manifest(df, root, storage, partition_cols=["date", "camera_id"])
    st.write_bytes(st.join(root, "_SUCCESS"), b"", storage)  # markers are not data
    st.write_bytes(st.join(root, "images", "0.jpg"), b"jpeg", storage)  # nor are images beside it
    assert list_partitions(root, storage) == ["date=2026-11-25/camera_id=c1", "date=2026-11-26/camera_id=c2"]

    everything = read_manifest(root, storage)
    assert sorted(everything["crop_id"].to_pylist()) == ["c0", "c1", "c2", "c3"]
    assert everything.schema.field("date").type == pa.string()
    # relative image_uri resolve against the prefix given, not the partition folder
    assert set(everything["image_uri"].to_pylist()) == {f"{root}/images/{i}.jpg" for i in range(4)}

    for partition in ("date=2026-11-26/camera_id=c2", {"date": "2026-11-26", "camera_id": "c2"}, "date=2026-11-26"):
        part = read_manifest(root, storage, partition=partition)
        assert sorted(part["crop_id"].to_pylist()) == ["c2", "c3"]
        assert part["date"].to_pylist() == ["2026-11-26"] * 2 and part["camera_id"].to_pylist() == ["c2"] * 2
        assert part["image_uri"][0].as_py().startswith(f"{root}/images/")
    with pytest.raises(ManifestError, match=r"partition 'date=2027-01-01' not found.*date=2026-11-25/camera_id=c1"):
        read_manifest(root, storage, partition="date=2027-01-01")
    with pytest.raises(ValueError, match="key=value"):
        read_manifest(root, storage, partition="2026-11-26")

    # Rewriting one partition replaces it and leaves the others alone.
    write_manifest(frame(1, date=["2026-11-26"], camera_id=["c2"], crop_id=["new"]), root, storage,
                   partition_cols=["date", "camera_id"])
    assert sorted(read_manifest(root, storage)["crop_id"].to_pylist()) == ["c0", "c1", "new"]


def test_folder_of_files_and_layout_errors(tmp_path):
    root = tmp_path / "folder"
    root.mkdir()
    frame(2).to_parquet(root / "a.parquet", index=False)
    frame(4).iloc[2:].to_parquet(root / "b.parquet", index=False)
    table = read_manifest(str(root))
    assert table["crop_id"].to_pylist() == ["c0", "c1", "c2", "c3"]
    assert table["image_uri"][0].as_py() == str(root / "images" / "0.jpg")
    assert list_partitions(str(root)) == [""]

    (root / "2026").mkdir()
    frame(1).to_parquet(root / "2026" / "c.parquet", index=False)
    with pytest.raises(ManifestError, match=r"'2026/c.parquet' lies in a folder that is not a hive partition"):
        read_manifest(str(root))
    with pytest.raises(ManifestError, match="manifest not found"):
        read_manifest(str(tmp_path / "nope"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ManifestError, match="no Parquet files"):
        read_manifest(str(tmp_path / "empty"))
    with pytest.raises(ManifestError, match="single file"):
        read_manifest(str(root / "a.parquet"), partition="date=x")


def test_read_reports_bad_content_with_the_uri(tmp_path):
    path = tmp_path / "m.parquet"
    frame().drop(columns=["image_uri"]).to_parquet(path, index=False)
    with pytest.raises(ManifestError, match=rf"{path}: manifest is missing the required column 'image_uri'"):
        read_manifest(str(path))
    with pytest.raises(ManifestError, match=r"required column 'image_uri'"):
        read_manifest(str(path), columns=["crop_id"])
    frame().assign(crop_id=["a", "a", "b", "c"]).to_parquet(path, index=False)
    with pytest.raises(ManifestError, match=r"'crop_id' must be unique.*'a' \(x2\)"):
        read_manifest(str(path))
    frame().assign(image_uri=["../../../../../../x.jpg"] * 4).to_parquet(path, index=False)
    assert read_manifest(str(path))["image_uri"][0].as_py() == "/x.jpg"  # local: normal path rules


def test_allowed_prefixes_turn_refused_rows_into_error_rows(storage, s3_bucket, tmp_path):
    uri = f"s3://{s3_bucket}/m/manifest.parquet"
    df = frame(3).assign(image_uri=["images/0.jpg", "s3://other-bucket/1.jpg", "/etc/passwd"])
    write_manifest(df, uri, storage)
    table = read_manifest(uri, storage)
    assert table.num_rows == 3  # nothing is dropped or refused wholesale
    # default for an S3 manifest: its own bucket only
    prefixes = allowed_prefixes(uri, storage)
    assert prefixes == (f"s3://{s3_bucket}",)
    out = decode_batch(table, size=(32, 16), storage=storage, allowed_prefixes=prefixes)
    assert list(out["status"]) == ["error"] * 3
    assert out["error"][0].startswith("missing object")  # allowed, but not there
    assert out["error"][1].startswith("refused uri: s3://other-bucket/1.jpg")
    assert out["error"][2].startswith("refused uri: /etc/passwd")
    opened = StorageConfig(endpoint_url=storage.endpoint_url, region="us-east-1",
                           allowed_prefixes=(f"s3://{s3_bucket}/m/images", "s3://other-bucket"))
    assert allowed_prefixes(uri, opened) == opened.allowed_prefixes
    assert allowed(f"s3://{s3_bucket}/m/images/0.jpg", opened.allowed_prefixes)
    assert not allowed(f"s3://{s3_bucket}/m/images/../../x.jpg", opened.allowed_prefixes)
    write_manifest(frame(1).assign(image_uri=["../../x.jpg"]), uri, storage)
    with pytest.raises(ManifestError, match="points outside the bucket"):
        read_manifest(uri, storage)
    assert allowed_prefixes(str(tmp_path / "m.parquet")) is None
    # a local manifest with no policy reads anything local
    local = write_manifest(frame(2), str(tmp_path / "m.parquet"))
    assert read_manifest(local)["image_uri"][0].as_py() == os.path.join(tmp_path, "images", "0.jpg")


def test_files_are_checked_from_their_footers(tmp_path):
    root = tmp_path / "m"
    (root / "date=2026-11-25").mkdir(parents=True)
    frame().assign(date="2026-11-24").to_parquet(root / "date=2026-11-25" / "part-0.parquet", index=False)
    # The folder says one day, the file another: which one wins would be a guess.
    with pytest.raises(ManifestError, match=r"column\(s\) \['date'\] are also hive partition keys"):
        read_manifest(str(root))
    frame().to_parquet(root / "date=2026-11-25" / "part-0.parquet", index=False)
    scan = scan_manifest(str(root))
    assert (scan.keys, scan.partitions, scan.rows("date=2026-11-25")) == (("date",), ["date=2026-11-25"], 4)
    (root / "date=2026-11-25" / "part-1.parquet").write_bytes(b"PAR1 not really")
    with pytest.raises(ManifestError, match=r"file 'date=2026-11-25/part-1.parquet' under .* is not readable Parquet"):
        read_manifest(str(root))
    (root / "date=2026-11-25" / "part-1.parquet").write_bytes(b"")
    with pytest.raises(ManifestError, match=r"part-1.parquet' under .* is not readable Parquet"):
        scan_manifest(str(root))


def test_a_rows_uri_value_never_refuses_the_manifest(tmp_path):
    # Unsupported schemes and bucket-less S3 URIs are decided row by row when decoding.
    path = tmp_path / "m.parquet"
    frame().assign(image_uri=["ftp://h/x.jpg", "gs://b/k.jpg", "s3:///key", "s3://"]).to_parquet(path, index=False)
    assert read_manifest(str(path)).num_rows == 4


def test_files_of_one_manifest_store_fixed_columns_alike(tmp_path):
    root = tmp_path / "m"
    root.mkdir()
    pq.write_table(pa.table({"crop_id": ["a"], "image_uri": ["a.png"]}), root / "part-0.parquet")
    pq.write_table(pa.table({"crop_id": ["b"], "image_uri": pa.array(["b.png"]).dictionary_encode()}),
                   root / "part-1.parquet")
    with pytest.raises(ManifestError, match=r"column 'image_uri' is string in 'part-0.parquet' but "
                                            r"dictionary<values=string, indices=int32.*> in 'part-1.parquet'"):
        scan_manifest(str(root))
    pq.write_table(pa.table({"crop_id": ["b"], "image_uri": pa.array(["b.png"], pa.large_string()),
                             "bbox_x": pa.array([1.0]), "bbox_y": [1], "bbox_w": [1], "bbox_h": [1]}),
                   root / "part-1.parquet")
    assert scan_manifest(str(root)).rows("") == 2  # string and large_string, floats and ints merge


def test_tracks_are_optional_columns_typed_like_the_contract(tmp_path):
    # frame_index is a fixed column: frames 0 and 1 never read as an attribute's labels.
    df = frame(track_id=["t1", "t1", None, "t2"], frame_index=[0, 1, None, 0])
    path = write_manifest(df, str(tmp_path / "m.parquet"))
    table = read_manifest(path)
    assert (table.schema.field("track_id").type, table.schema.field("frame_index").type) == (pa.string(), pa.int64())
    assert table["track_id"].to_pylist() == ["t1", "t1", None, "t2"]
    assert table["frame_index"].to_pylist() == [0, 1, None, 0]
    assert manifest_attributes(table) == ["female", "hat"]
    pq.write_table(pa.table({"crop_id": ["a"], "image_uri": ["a.png"], "track_id": [7]}), tmp_path / "bad.parquet")
    with pytest.raises(ManifestError, match=r"column 'track_id': expected string, got int64"):
        scan_manifest(str(tmp_path / "bad.parquet"))


def test_bad_track_values_are_row_errors_in_the_stream():
    """track_id is carried like camera_id (a stand-in and `bad track_id: …`); a frame_index that
    is not a whole number >= 0 is a row error and carried as null. Never a failed block."""
    def prepared(**columns):
        n = len(next(iter(columns.values())))
        table = pa.table({"crop_id": [f"c{i}" for i in range(n)], "image_uri": ["a.png"] * n, **columns,
                          "path": ["m.parquet"] * n})
        return prepare_rows(table, base="/m", partition_of={"m.parquet": 0})

    plain = prepared(camera_id=["c1"])  # a manifest without track columns: null, no error
    assert plain.column_names[:len(INPUT_COLUMNS)] == list(INPUT_COLUMNS)
    assert plain.select(["track_id", "frame_index", ROW_ERROR]).to_pylist() == [
        {"track_id": None, "frame_index": None, ROW_ERROR: None}]
    ids = pa.array([b"t1", b"\xff", b"x" * 1025, None], pa.binary()).view(pa.string())
    rows = prepared(track_id=ids, frame_index=pa.array([0, 1, 2, 3], pa.int16()))
    assert rows["track_id"].to_pylist() == ["t1", "\\xff…#a8100ae6aa1940d0", rows["track_id"][2].as_py(), None]
    assert rows["track_id"][2].as_py().startswith("x" * 64 + "…#")
    errors = rows[ROW_ERROR].to_pylist()
    assert errors[0] is None and errors[3] is None
    assert errors[1].startswith("bad track_id: track_id is not UTF-8 text (\\xff…#")
    assert errors[2].startswith("bad track_id: track_id is longer than 1,024 bytes (xxx")
    refused = "bad frame_index: frame_index is not a whole number from 0 to 2**63 - 1"
    for values in (pa.array([3, -1, None], pa.int64()), pa.array([3.0, 1.5, None]), pa.array([3.0, -2.0, None]),
                   pa.array([3.0, 2.0 ** 63, None]), pa.array([3, 2 ** 63, None], pa.uint64())):
        rows = prepared(frame_index=values)
        assert rows["frame_index"].to_pylist() == [3, None, None], values
        assert rows[ROW_ERROR].to_pylist() == [None, refused, None], values

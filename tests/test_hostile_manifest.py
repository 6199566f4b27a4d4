"""Hostile manifest values: any value in any column the extraction reads gives exactly one row for
its crop (ok or an error row), never a failed block; many row groups read in a few bounded blocks."""

from __future__ import annotations

import io

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as hst
from PIL import Image

from attrgan.config import StorageConfig
from attrgan.data.images import decode_batch
from attrgan.data.manifest import (BLOCK_ROWS, INPUT_COLUMNS, MAX_VALUE_BYTES, PARTITION_INDEX, ROW_ERROR,
                                   ManifestError, crop_id_problem, prepare_rows, read_manifest, read_manifest_files,
                                   row_group_blocks)
from attrgan.ray_scoring import decode_rows

TEXT_COLUMNS = ("crop_id", "image_uri", "camera_id", "track_id")
NUMBER_COLUMNS = ("bbox_x", "bbox_y", "bbox_w", "bbox_h", "frame_index")


def text(values: list[bytes | None]) -> pa.Array:
    """A string column holding exactly these bytes, UTF-8 or not, as a writer that does not
    check would store it (Parquet readers do not check either)."""
    return pa.array(values, pa.binary()).view(pa.string())


def png(path, shape=(40, 20)) -> str:
    buf = io.BytesIO()
    Image.fromarray(np.full((*shape, 3), 90, np.uint8)).save(buf, format="PNG")
    path.write_bytes(buf.getvalue())
    return str(path)


def prepared_and_decoded(table: pa.Table, folder) -> tuple[pa.Table, dict]:
    """What the extraction does to a block of manifest rows before the networks, without Ray."""
    table = table.append_column("path", pa.array(["m.parquet"] * table.num_rows, pa.string()))
    rows = prepare_rows(table, base=str(folder), partition_of={"m.parquet": 0})
    batch = {name: np.asarray(rows[name].to_pylist(), dtype=object) for name in rows.column_names}
    # Only the test's folder may be read, whatever a generated image_uri names.
    return rows, decode_rows(batch, size=(16, 8), workers=2, allowed_prefixes=[str(folder)])


def test_invalid_utf8_image_uri_or_crop_id_is_an_error_row_not_a_failed_block(tmp_path):
    good = png(tmp_path / "a.png")
    path = tmp_path / "m.parquet"
    pq.write_table(pa.table({"crop_id": text([b"ok", b"id-\xff\xfe", b"uri", b"cam"]),
                             "image_uri": text([good.encode(), good.encode(), b"/x/\xc3(.png", good.encode()]),
                             "camera_id": text([b"c0", b"c0", b"c0", b"\xed\xa0\x80"])}), path)
    blocks = list(read_manifest_files(pa.table({"path": [str(path)]}), manifest=str(path), storage=StorageConfig(),
                                      base=str(tmp_path), partition_of={str(path): 0}))
    rows = pa.concat_tables(blocks)
    assert rows.column_names == [*INPUT_COLUMNS, PARTITION_INDEX, ROW_ERROR]
    assert rows["crop_id"].to_pylist()[0] == "ok" and rows["crop_id"].to_pylist()[1].startswith("id-\\xff\\xfe…#")
    assert rows["camera_id"].to_pylist()[3].startswith("\\xed\\xa0\\x80…#")
    out = decode_rows({n: np.asarray(rows[n].to_pylist(), dtype=object) for n in rows.column_names}, size=(16, 8))
    assert out["status"].tolist() == ["ok", "error", "error", "error"]
    assert out["error"][1].startswith("bad crop_id: crop_id is not UTF-8 text (id-\\xff\\xfe…#")
    assert out["error"][2].startswith("bad uri: image_uri is not UTF-8 text (/x/\\xc3(.png…#")
    assert out["error"][3].startswith("bad camera_id: camera_id is not UTF-8 text")
    assert out["image_uri"][2] == ""  # never resolved nor fetched


# Values of every shape a text column can hold: text, bytes that are not UTF-8, nulls, values near and
# over the column limits; boxes of any number type, NaN, infinities and huge integers.
text_values = (hst.none() | hst.text(max_size=20).map(str.encode) | hst.binary(max_size=20)
               | hst.sampled_from([b"a.png", b"s3://b/k.png", b"../../up.png", b"\xff" * 3, b"/dev/zero", b" "])
               | hst.tuples(hst.sampled_from([1024, 1025, 4096, 4097]), hst.sampled_from([b"x", b"\xe9"]))
               .map(lambda n_c: n_c[1] * n_c[0]))
box_values = hst.none() | hst.floats(allow_nan=True, allow_infinity=True) | hst.integers(-2**63, 2**63 - 1)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=hst.lists(hst.tuples(text_values, text_values, text_values, text_values, hst.tuples(*[box_values] * 5)),
                      min_size=1, max_size=6),
       box_type=hst.sampled_from([pa.float64(), pa.int64()]))
def test_any_values_give_exactly_one_row_each(tmp_path, rows, box_type):
    png(tmp_path / "a.png")
    boxes = [[r[4][i] for r in rows] for i in range(5)]
    keep = (lambda v: v if isinstance(v, int) else None) if box_type == pa.int64() else (
        lambda v: None if v is None else float(v))
    boxes = [[keep(v) for v in column] for column in boxes]
    table = pa.table({**{name: text([r[i] for r in rows]) for i, name in enumerate(TEXT_COLUMNS)},
                      **{name: pa.array(column, box_type) for name, column in zip(NUMBER_COLUMNS, boxes)}})
    prepared, out = prepared_and_decoded(table, tmp_path)
    assert prepared.num_rows == len(rows) and len(out["status"]) == len(rows)
    prepared.validate(full=True)  # only UTF-8 text leaves the row preparation
    for i, (crop_id, *_) in enumerate(rows):
        status, error = out["status"][i], out["error"][i]
        assert (status == "ok") == (error is None), (status, error)
        key = prepared["crop_id"][i].as_py()
        if crop_id is not None:
            fine = len(crop_id) <= MAX_VALUE_BYTES["crop_id"] and crop_id.decode("utf-8", "ignore").encode() == crop_id
            assert key == crop_id.decode() if fine else key.count("…#") and len(key.encode()) <= 4 * 64 + 20
        if error is not None:
            assert len(error) < 2 * MAX_VALUE_BYTES["image_uri"] + 1000
    # Distinct values keep distinct keys (stand-ins carry a hash of the whole value).
    given_ids = [r[0] for r in rows if r[0] is not None]
    keys = [k for k in prepared["crop_id"].to_pylist() if k is not None]
    assert len(set(keys)) == len(set(given_ids))


def test_values_far_over_the_limits_are_error_rows_of_bounded_size(tmp_path):
    big = b"s3://key:secret@b/" + b"x" * 10_000_000
    table = pa.table({"crop_id": text([b"c" * 10_000_000, b"ok"]), "image_uri": text([b"a.png", big]),
                      "camera_id": text([b"cam", b"\xff" * 10_000_000])})
    prepared, out = prepared_and_decoded(table, tmp_path)
    assert out["status"].tolist() == ["error", "error"]
    assert out["error"][0].startswith("bad crop_id: crop_id is longer than 1,024 bytes (cccc")
    assert out["error"][1].startswith("bad uri: image_uri is longer than 4,096 bytes (s3://***@b/xxx")  # redacted
    assert all(len(e) < 300 for e in out["error"]) and max(len(k) for k in prepared["crop_id"].to_pylist()) < 100


def test_a_uri_climbing_out_of_its_bucket_is_a_redacted_bounded_row_error():
    table = pa.table({"crop_id": ["a", "b"],
                      "image_uri": ["../../x.jpg?X-Amz-Signature=SECRETSIG&X-Amz-Credential=AKIAXX",
                                    "../" * 1300 + "y?token=SECRET"],
                      "path": ["m.parquet"] * 2})
    errors = prepare_rows(table, base="s3://bucket/m", partition_of={"m.parquet": 0})[ROW_ERROR].to_pylist()
    assert all(e.startswith("bad uri: image_uri") for e in errors), errors
    assert not any("SECRET" in e or "AKIAXX" in e for e in errors) and all(len(e) < 1100 for e in errors)


def test_a_half_float_box_is_whole_pixels_or_a_bad_bbox_row(tmp_path):
    good = png(tmp_path / "a.png")
    box = {name: pa.array(np.array(values, np.float16))
           for name, values in (("bbox_x", [0, 1.5]), ("bbox_y", [0, 0]), ("bbox_w", [10, 10]), ("bbox_h", [20, 20]))}
    _, out = prepared_and_decoded(pa.table({"crop_id": ["a", "b"], "image_uri": [good, good], **box}), tmp_path)
    assert out["status"].tolist() == ["ok", "error"] and out["error"][1].startswith("bad bbox: bbox_x"), out["error"]


def test_crop_ids_are_checked_for_repeats_by_their_row_keys():
    assert crop_id_problem(pa.chunked_array([text([b"a", b"\xff", b"b"])])) is None
    problem = crop_id_problem(pa.chunked_array([text([b"\xff", b"a", b"\xff"])]))
    assert problem.startswith("column 'crop_id' must be unique; 1 value(s) repeat: '\\\\xff…#")


def test_read_manifest_names_a_text_column_that_is_not_utf8(tmp_path):
    path = tmp_path / "m.parquet"
    pq.write_table(pa.table({"crop_id": ["a", "b", "c"], "image_uri": text([b"1.png", b"\xff.png", b"3.png"]),
                             "split": ["train"] * 3}), path)
    with pytest.raises(ManifestError, match=r"column 'image_uri' holds 1 value\(s\) that are not UTF-8 text, "
                                            r"e.g. rows \[1\]"):
        read_manifest(str(path))


def test_decode_batch_takes_a_table_whose_text_is_not_utf8(tmp_path):
    good = png(tmp_path / "a.png")
    out = decode_batch(pa.table({"crop_id": text([b"a", b"\xff"]), "image_uri": text([good.encode(), b"\xff"])}),
                       size=(16, 8))
    assert out["status"].tolist() == ["ok", "error"] and out["error"][1].startswith("bad uri: image_uri is not UTF-8")
    assert out["crop_id"].tolist() == ["a", b"\xff"]


def test_row_groups_gather_into_blocks_bounded_by_rows_and_bytes():
    assert row_group_blocks([(10, 100)] * 5, rows=25, nbytes=10**6) == [[0, 1], [2, 3], [4]]
    assert row_group_blocks([(1, 400), (1, 400), (1, 400)], rows=100, nbytes=1000) == [[0, 1], [2]]
    assert row_group_blocks([(500, 1), (1, 1)], rows=100, nbytes=1000) == [[0], [1]]  # a large group alone
    assert row_group_blocks([]) == []


def test_a_file_of_many_row_groups_reads_in_a_few_blocks(tmp_path):
    rows = 30_000
    path = tmp_path / "m.parquet"
    pq.write_table(pa.table({"crop_id": [f"c{i}" for i in range(rows)], "image_uri": ["a.png"] * rows}), path,
                   row_group_size=10)
    assert pq.ParquetFile(path).num_row_groups == 3_000
    blocks = list(read_manifest_files(pa.table({"path": [str(path)]}), manifest=str(path), storage=StorageConfig(),
                                      base=str(tmp_path), partition_of={str(path): 0}))
    assert [b.num_rows for b in blocks] == [rows] and rows <= BLOCK_ROWS
    assert blocks[0]["crop_id"].to_pylist()[-1] == f"c{rows - 1}"


def test_an_error_raised_in_a_ray_task_prints_as_its_cause_on_one_line(monkeypatch, capsys):
    from ray.exceptions import RayTaskError

    from attrgan import cli

    def failing(args):
        cause = ManifestError("manifest m.parquet: column 'crop_id' is bad")
        raise RayTaskError("check_ids", "Traceback (most recent call last):\n  \x1b[31mFile x\x1b[0m\n",
                           cause).as_instanceof_cause()

    monkeypatch.setitem(cli.RUNNERS, "extract", failing)
    with pytest.raises(SystemExit) as exit_:
        cli.main(["extract", "--manifest", "m", "--bundle", "b", "--out", "o"])
    assert exit_.value.code == 2
    assert capsys.readouterr().err == "attrgan extract: error: manifest m.parquet: column 'crop_id' is bad\n"


@pytest.mark.ray
def test_extract_commits_a_partition_with_invalid_utf8_crop_id_and_image_uri(ray_local, tmp_path):
    from attrgan.bundle import save_bundle
    from attrgan.extract import ExtractConfig, run_extract
    from attrgan.pipeline import PipelineConfig
    from attrgan.results import load_results
    from helpers import tiny_bundle

    save_bundle(str(tmp_path / "bundle"), tiny_bundle())
    (tmp_path / "m").mkdir()
    uris = [png(tmp_path / "m" / f"{i}.png", (70, 28)).encode() for i in range(3)]
    pq.write_table(pa.table({"crop_id": text([b"a", b"b\xff", b"c", b"d"]),
                             "image_uri": text([uris[0], uris[1], b"/\xc3(/x.png", uris[2]])}),
                   tmp_path / "m" / "p.parquet")
    summary = run_extract(ExtractConfig(manifest=str(tmp_path / "m"), bundle=str(tmp_path / "bundle"),
                                        out=str(tmp_path / "out"), actors=1, batch_size=4,
                                        pipeline=PipelineConfig(device="cpu")))
    assert summary.rows == 4 and summary.incomplete == ()
    assert summary.errors == {"bad crop_id": 1, "bad uri": 1}
    results = load_results(str(tmp_path / "out")).set_index("crop_id")
    assert len(results) == 4 and results.index.is_unique
    assert results.loc["a", "status"] == results.loc["d", "status"] == "ok"
    assert results.loc["c", "error"].startswith("bad uri: image_uri is not UTF-8 text")
    bad_key = next(k for k in results.index if k.startswith("b\\xff…#"))
    assert results.loc[bad_key, "error"].startswith("bad crop_id:")

"""Manifest reading under hostile input (docs/security.md "Manifest values"):

- rows/s of `read_manifest_files` on a 200,000-row file written as 20,000 row groups of 10 rows
  against the same rows in one row group, and the blocks each gives;
- CPU per row, outside the networks, of the worst values a row can hold: read from Parquet,
  prepared (`prepare_rows`) and decoded (`decode_rows`; bad values never reach a fetch), with
  10 MB values and text that is not UTF-8; and a 65,536-row block with one bad value among
  good ones (the slow path of `text_column` takes the whole block).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from attrgan.config import StorageConfig
from attrgan.data.manifest import read_manifest_files
from attrgan.ray_scoring import decode_rows


def _read(path: Path) -> tuple[list[pa.Table], float]:
    start = time.process_time()
    blocks = list(read_manifest_files(pa.table({"path": [str(path)]}), manifest=str(path), storage=StorageConfig(),
                                      base=str(path.parent), partition_of={str(path): 0}))
    return blocks, time.process_time() - start


def _best(path: Path, repeats: int) -> tuple[int, float]:
    runs = [_read(path) for _ in range(repeats)]
    return len(runs[0][0]), min(seconds for _, seconds in runs)


def _text(values: list[bytes]) -> pa.Array:
    return pa.array(values, pa.binary()).view(pa.string())


def _row_cost(folder: Path, name: str, columns: dict[str, list[bytes]], repeats: int) -> float:
    """CPU seconds per row to read, prepare and decode these rows (best of `repeats`)."""
    path = folder / f"{name}.parquet"
    pq.write_table(pa.table({k: _text(v) for k, v in columns.items()}), path)
    n = len(next(iter(columns.values())))
    best = float("inf")
    for _ in range(repeats):
        blocks, seconds = _read(path)
        start = time.process_time()
        for rows in blocks:
            batch = {c: np.asarray(rows[c].to_pylist(), dtype=object) for c in rows.column_names}
            out = decode_rows(batch, size=(320, 128), allowed_prefixes=[str(folder)])
            assert len(out["status"]) == rows.num_rows
        best = min(best, seconds + time.process_time() - start)
    return best / n


def run(quick: bool = False) -> None:
    repeats = 2 if quick else 3
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        rows = 200_000
        table = pa.table({"crop_id": [f"c{i:08d}" for i in range(rows)],
                          "image_uri": [f"img/{i % 5000}.jpg" for i in range(rows)]})
        for label, group in (("1 row group", rows), ("20,000 row groups", 10)):
            path = folder / f"{group}.parquet"
            pq.write_table(table, path, row_group_size=group)
            blocks, seconds = _best(path, repeats)
            print(f"read_manifest_files, {rows:,} rows in {label}: {blocks} block(s), {seconds:.2f} s CPU, "
                  f"{rows / seconds:,.0f} rows/s", flush=True)

        big, n = 10_000_000, 4 if quick else 10
        good = [f"c{i}".encode() for i in range(n)]
        uris = [b"a.png"] * n
        cases = {
            "10 MB crop_id": {"crop_id": [bytes([97 + i]) * big for i in range(n)], "image_uri": uris},
            "10 MB image_uri": {"crop_id": good, "image_uri": [b"s3://b/" + b"k" * big] * n},
            "10 MB camera_id, not UTF-8": {"crop_id": good, "image_uri": uris, "camera_id": [b"\xff" * big] * n},
            "short values, not UTF-8": {"crop_id": [b"\xff%d" % i for i in range(n)], "image_uri": [b"\xc3("] * n},
        }
        for label, columns in cases.items():
            cost = _row_cost(folder, label.replace(" ", "_").replace(",", ""), columns, repeats)
            print(f"per row, {label}: {cost * 1000:.1f} ms CPU", flush=True)
        block = 65_536
        mixed = {"crop_id": [f"c{i}".encode() for i in range(block - 1)] + [b"\xff"],
                 "image_uri": [f"/nowhere/{i}.png".encode() for i in range(block)]}
        cost = _row_cost(folder, "mixed", mixed, repeats)
        print(f"per row, a {block:,}-row block with one crop_id not UTF-8 (images refused, not fetched): "
              f"{cost * 1e6:.0f} us CPU", flush=True)

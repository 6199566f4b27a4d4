"""The extraction's data plane at archive scale: manifest rows → results rows with no model work.

Every row of a hive-partitioned manifest points at a missing file, so each becomes an error row:
what is timed is reading the manifest on the cluster, decoding attempts, building results rows,
staging, verifying and committing them, and grouping each partition's crops into its track table
(TRACK_LENGTH crops per track). Each size runs in a fresh driver process on a fresh local Ray,
once without track tables and once with them, and reports rows/s over `run_extract` and the
driver's peak RSS (getrusage). The driver handles metadata only, so its memory must not grow with
the rows:

    targets: driver peak RSS at 1 M rows <= 1.1 x at 100 k; rows/s at 1 M >= rows/s at 100 k;
    track tables add <= 10 % to the run's time.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

PARTITIONS = 16
TRACK_LENGTH = 20  # crops per track: 50,000 tracks in 1 M crops

_CHILD = """
import json, os, resource, sys, time
import ray
from attrgan.extract import ExtractConfig, run_extract
from attrgan.pipeline import PipelineConfig
ray.init(address="local", num_cpus=int(sys.argv[4]), include_dashboard=False, log_to_driver=False,
         runtime_env={"env_vars": {"RAY_AUTH_MODE": "disabled"}})
start = time.perf_counter()
s = run_extract(ExtractConfig(manifest=sys.argv[1], bundle=sys.argv[2], out=sys.argv[3], incremental=False,
                              tracks=sys.argv[5] == "tracks", pipeline=PipelineConfig(device="cpu")))
seconds = time.perf_counter() - start
print(json.dumps({"rows": s.rows, "errors": sum(s.errors.values()), "seconds": seconds,
                  "driver_peak_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
"""


def make_manifest(root: Path, rows: int, partitions: int = PARTITIONS) -> str:
    """A hive manifest `root/manifest/date=.../part-0.parquet` of `rows` rows whose images do not exist."""
    per = -(-rows // partitions)
    for p in range(partitions):
        lo, hi = p * per, min(rows, (p + 1) * per)
        folder = root / "manifest" / f"date=2026-10-{p + 1:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        ids = np.arange(lo, hi)
        table = pa.table({
            "crop_id": pa.array([f"c{i:08d}" for i in ids], pa.string()),
            "image_uri": pa.array([f"{root}/missing/{i % 1000}.jpg" for i in ids], pa.string()),
            "camera_id": pa.array([f"cam{i // TRACK_LENGTH % 40:02d}" for i in ids], pa.string()),
            "track_id": pa.array([f"t{i // TRACK_LENGTH:07d}" for i in ids], pa.string()),
            "frame_index": pa.array(ids % TRACK_LENGTH, pa.int64()),
        })
        pq.write_table(table, folder / "part-0.parquet")
    return str(root / "manifest")


def _bundle(root: Path) -> str:
    from attrgan.devtools.bench.extract import make_bundle
    from attrgan.bundle import save_bundle

    save_bundle(str(root / "bundle"), make_bundle(paper=False))
    return str(root / "bundle")


def measure(rows: int, root: Path, bundle: str, *, tracks: bool) -> dict:
    manifest = str(root / str(rows) / "manifest")
    if not os.path.exists(manifest):
        make_manifest(root / str(rows), rows)
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_DATA_DISABLE_PROGRESS_BARS": "1"}
    cpus = str(max(4, os.cpu_count() or 1))
    out = str(root / str(rows) / ("out-tracks" if tracks else "out"))
    done = subprocess.run([sys.executable, "-c", _CHILD, manifest, bundle, out, cpus, "tracks" if tracks else "crops"],
                          env=env, capture_output=True, text=True)
    reports = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not reports:
        raise RuntimeError(f"data-plane run of {rows} rows failed:\n{done.stderr[-3000:]}")
    result = json.loads(reports[-1])
    if result["rows"] != rows or result["errors"] != rows:
        raise RuntimeError(f"expected {rows} error rows, got {result}")
    return result


def search_time(out: Path) -> str:
    """How long a two-attribute people search takes over a night's track tables (this process,
    its imports already done): what an operator waits for."""
    from attrgan.results import load_tracks

    where = "backpack and not female"  # two of the bench bundle's RAP attributes
    load_tracks(str(out), top=1)  # warm the imports and the filesystem
    start = time.perf_counter()
    found = load_tracks(str(out), where=where, top=50)
    seconds = time.perf_counter() - start
    return f"search {where!r} over {PARTITIONS} partitions' tracks: {seconds:.2f} s ({len(found)} tracks found)"


def run(quick: bool = False) -> None:
    sizes = (20_000, 200_000) if quick else (100_000, 1_000_000)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        bundle = _bundle(root)
        results, crops_only = {}, {}
        for n in sizes:
            for tracks in (False, True):
                start = time.perf_counter()
                result = measure(n, root, bundle, tracks=tracks)
                (results if tracks else crops_only)[n] = result
                print(f"  {n:>9,} rows ({PARTITIONS} partitions, {'with' if tracks else 'without'} tracks): "
                      f"{n / result['seconds']:8.0f} rows/s over {result['seconds']:.1f} s, driver peak RSS "
                      f"{result['driver_peak_kib'] / 1024:.0f} MiB (whole step {time.perf_counter() - start:.0f} s)",
                      flush=True)
        small, large = sizes
        print(f"  {search_time(root / str(large) / 'out-tracks')}", flush=True)
    rss = results[large]["driver_peak_kib"] / results[small]["driver_peak_kib"]
    rate = (large / results[large]["seconds"]) / (small / results[small]["seconds"])
    print(f"  driver peak RSS {large:,} / {small:,}: {rss:.2f}x (target <= 1.1); "
          f"rows/s {large:,} / {small:,}: {rate:.2f}x (target >= 1)")
    for n in sizes:
        print(f"  track tables at {n:,} rows ({n // TRACK_LENGTH:,} tracks): "
              f"{results[n]['seconds'] / crops_only[n]['seconds']:.2f}x the run's time without them (target <= 1.10)")


if __name__ == "__main__":
    run(quick="--quick" in sys.argv)

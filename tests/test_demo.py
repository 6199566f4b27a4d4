"""`make demo`'s path: the night manifest it builds, and the whole demo at --small sizes (slow)."""

from __future__ import annotations

import datetime as dt
import json

import pyarrow as pa
import pytest

from attrgan.demo import DemoConfig, night_manifest


def _version(suffix: str, n: int) -> pa.Table:
    base = dt.datetime(2024, 1, 15, 22, 0, tzinfo=dt.timezone.utc)
    return pa.table({
        "crop_id": [f"c{i}{suffix}" for i in range(n)],
        "image_uri": [f"s3://b/{suffix or 'clean'}/{i}.jpg" for i in range(n)],
        **{c: pa.nulls(n, pa.int32()) for c in ("bbox_x", "bbox_y", "bbox_w", "bbox_h")},
        "camera_id": ["cam00"] * n,
        # crop 4 is captured after midnight UTC: it belongs to the next day's partition
        "captured_at": pa.array([base + dt.timedelta(hours=i) for i in range(n)], pa.timestamp("us", tz="UTC")),
        "split": ["test"] * n,
        "backpack": pa.array([1] * n, pa.int8()),
    })


def test_night_manifest_takes_each_crop_once_in_one_version_and_partitions_by_utc_day():
    night = night_manifest(_version("", 6), _version("-occ", 6), _version("-low", 6))
    assert night.num_rows == 6
    assert night["crop_id"].to_pylist() == ["c0", "c1-occ", "c2-low", "c3", "c4-occ", "c5-low"]
    assert night["date"].to_pylist() == ["2024-01-15"] * 2 + ["2024-01-16"] * 4
    assert "backpack" not in night.column_names and "split" not in night.column_names
    with pytest.raises(ValueError, match="same rows"):
        night_manifest(_version("", 6), _version("-occ", 5), _version("-low", 6))


def test_demo_config_checks_sizes():
    with pytest.raises(ValueError, match="crops must be >= 20"):
        DemoConfig(crops=5)
    with pytest.raises(ValueError, match="network names"):
        DemoConfig(train={"classifer": {}})
    small = DemoConfig.small(out="x")
    assert small.out == "x" and small.crops < DemoConfig().crops


@pytest.mark.slow
def test_demo_small_runs_end_to_end(tmp_path, monkeypatch):
    """The whole `make demo` path at tiny sizes: S3, synth, Ray Train x3, extraction, evaluation, query."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    out = tmp_path / "demo-out"
    # A fresh process: the demo starts (and stops) its own Ray and S3 server, as `make demo` does.
    proc = subprocess.run([sys.executable, str(root / "jobs" / "demo.py"), "--small", "--out", str(out)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for step in ("[1/6", "[2/6", "[3/6", "[4/6", "[5/6", "[6/6"):
        assert step in proc.stdout
    assert "restored (complete pipeline)" in proc.stdout and "Report:" in proc.stdout

    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["steps"]) == {"setup", "synth", "train", "extract", "evaluate", "query"}
    assert set(summary["gains_ma"]) == {"occlusion", "low resolution", "complete"}
    report = out / "report" / "report.md"
    assert report.is_file() and "## Table 2" in report.read_text()
    metrics = json.loads((out / "report" / "metrics.json").read_text())
    assert metrics["counts"] == {"clean": 6, "occluded": 6, "lowres": 6}
    assert (out / "report" / "figures" / "examples_complete.png").is_file()
    assert list(out.glob("query_backpack_*.csv"))

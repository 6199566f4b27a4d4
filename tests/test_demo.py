"""`make demo`'s path: the night manifest it builds, and the whole demo at --small sizes (slow)."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pytest

from attrgan import cli
from attrgan.config import StorageConfig
from attrgan.corrupt import track_conditions
from attrgan.devtools.demo import DemoConfig, epoch_progress, image_heights, keep_bundle, night_manifest
from helpers import png


def _version(suffix: str, n: int) -> pa.Table:
    base = dt.datetime(2024, 1, 15, 22, 0, tzinfo=dt.timezone.utc)
    return pa.table({
        "crop_id": [f"c{i}{suffix}" for i in range(n)],
        "image_uri": [f"s3://b/{suffix or 'clean'}/{i}.jpg" for i in range(n)],
        **{c: pa.nulls(n, pa.int32()) for c in ("bbox_x", "bbox_y", "bbox_w", "bbox_h")},
        "camera_id": ["cam00"] * n,
        # crops from 2 h on are captured after midnight UTC: they belong to the next day's partition
        "captured_at": pa.array([base + dt.timedelta(minutes=20 * i) for i in range(n)], pa.timestamp("us", tz="UTC")),
        # two people over 8 frames each, then two crops without a track
        "track_id": ["t0"] * 8 + ["t1"] * 8 + [None] * (n - 16),
        "frame_index": pa.array(list(range(8)) * 2 + [None] * (n - 16), pa.int64()),
        "split": ["test"] * n,
        "backpack": pa.array([1] * n, pa.int8()),
    })


def test_night_manifest_takes_each_frame_from_the_version_track_conditions_picks():
    n = 18
    heights = [100.0 + 10 * (i % 8) for i in range(n)]  # each track approaches: its first frames are far
    night = night_manifest(_version("", n), _version("-occ", n), _version("-low", n), heights=heights, seed=4)
    want = track_conditions(["t0"] * 8 + ["t1"] * 8 + [None] * 2, list(range(8)) * 2 + [None] * 2, heights,
                            crop_ids=[f"c{i}" for i in range(n)], seed=4)
    assert set(want) == {"clean", "occluded", "lowres"} and want[0] == want[8] == "lowres"  # the far end is small
    suffix = {"clean": "", "occluded": "-occ", "lowres": "-low"}
    assert night["crop_id"].to_pylist() == [f"c{i}{suffix[c]}" for i, c in enumerate(want)]  # in captured_at order
    assert night["image_uri"].to_pylist() == [f"s3://b/{suffix[c] or 'clean'}/{i}.jpg" for i, c in enumerate(want)]
    assert night["track_id"].to_pylist() == ["t0"] * 8 + ["t1"] * 8 + [None] * 2
    assert night["frame_index"].to_pylist() == list(range(8)) * 2 + [None] * 2
    assert night["captured_at"].to_pylist() == _version("", n)["captured_at"].to_pylist()
    assert night["date"].to_pylist() == ["2024-01-15"] * 6 + ["2024-01-16"] * 12
    assert "backpack" not in night.column_names and "split" not in night.column_names
    with pytest.raises(ValueError, match="same rows"):
        night_manifest(_version("", n), _version("-occ", n - 1), _version("-low", n), heights=heights)


def test_image_heights_reads_each_stored_image(tmp_path):
    from PIL import Image

    uris = []
    for i, height in enumerate((40, 7, 160)):
        Image.new("RGB", (16, height)).save(tmp_path / f"{i}.jpg")
        uris.append(str(tmp_path / f"{i}.jpg"))
    assert image_heights(uris, StorageConfig()).tolist() == [40.0, 7.0, 160.0]


def test_demo_config_checks_sizes():
    with pytest.raises(ValueError, match="crops must be >= 20"):
        DemoConfig(crops=5)
    with pytest.raises(ValueError, match="network names"):
        DemoConfig(train={"classifer": {}})
    small = DemoConfig.small(out="x")
    assert small.out == "x" and small.crops < DemoConfig().crops


def test_epoch_progress_says_each_epoch_once_from_the_runs_csv(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    lines: list[str] = []
    with epoch_progress(str(run), StorageConfig(), model="classifier", epochs=2, say=lines.append, interval=0.01):
        (run / "epochs.csv").write_text("epoch,step,images_per_s,train_loss,val_mA\n0,4,120.5,0.6931,0.5\n")
        time.sleep(0.2)
        assert len(lines) == 1  # seen while training goes on
        (run / "epochs.csv").write_text("epoch,step,images_per_s,train_loss,val_mA\n0,4,120.5,0.6931,0.5\n"
                                        "1,8,130.0,0.5,\n")
    assert lines[0].startswith("    classifier epoch 1/2: train_loss 0.693, val_mA 0.5, 120 img/s, ")
    assert lines[1].startswith("    classifier epoch 2/2: train_loss 0.5, 130 img/s, ") and len(lines) == 2


def test_keep_bundle_copies_every_file_and_replaces_an_older_copy(tmp_path):
    src = tmp_path / "s3-bundle"
    for name in ("classifier/config.json", "classifier/model.safetensors", "superres/config.json"):
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        (src / name).write_text(name)
    (tmp_path / "out/bundle/old").mkdir(parents=True)
    kept = keep_bundle(str(src), StorageConfig(), tmp_path / "out" / "bundle")
    assert sorted(str(p.relative_to(kept)) for p in kept.rglob("*") if p.is_file()) == [
        "classifier/config.json", "classifier/model.safetensors", "superres/config.json"]
    assert (kept / "classifier/config.json").read_text() == "classifier/config.json"


@pytest.mark.slow
def test_demo_small_runs_end_to_end(tmp_path, capsys):
    """The whole `make demo` path at tiny sizes: S3, synth, Ray Train x3, extraction, evaluation, query,
    search."""
    root = Path(__file__).resolve().parents[1]
    out = tmp_path / "demo-out"
    # A fresh process: the demo starts (and stops) its own Ray and S3 server, as `make demo` does.
    proc = subprocess.run([sys.executable, str(root / "jobs" / "demo.py"), "--small", "--out", str(out)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for step in range(1, 8):
        assert f"[{step}/7" in proc.stdout
    assert "restored (complete pipeline)" in proc.stdout and "Report:" in proc.stdout

    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["steps"]) == {"setup", "synth", "train", "extract", "evaluate", "query", "search"}
    assert set(summary["gains_ma"]) == {"occlusion", "low resolution", "complete"}
    report = out / "report" / "report.md"
    assert report.is_file() and "## Table 2" in report.read_text()
    # The test split is tracks: the report and the summary have the per-person tables.
    assert "## Per person: tracks" in report.read_text() and "per person (tracks):" in proc.stdout
    assert summary["tracks"]["sets"]["mixed"]["plain"]["crops"] == 6
    metrics = json.loads((out / "report" / "metrics.json").read_text())
    assert metrics["counts"] == {"clean": 6, "occluded": 6, "lowres": 6}
    assert (out / "report" / "figures" / "examples_complete.png").is_file()
    assert list(out.glob("query_backpack_*.csv"))
    assert summary["page"] == str(out / "search.html") and "<html" in (out / "search.html").read_text()

    # The bundle outlives the demo's S3, one line per epoch was shown, and the printed command runs.
    assert summary["bundle"] == str(out / "bundle")
    for model in ("classifier", "reconstruction", "superres"):
        assert f"    {model} epoch 1/1: " in proc.stdout
        assert (out / "bundle" / model / "model.safetensors").is_file()
    assert f"attrgan predict path/to/crops/ --bundle {out / 'bundle'}" in proc.stdout
    assert f"attrgan extract --manifest path/to/manifest.parquet --bundle {out / 'bundle'}" in proc.stdout
    # The printed predict command, in this process: its parser and pipeline are the product's own.
    crops = tmp_path / "crops"
    crops.mkdir()
    for i, shape in enumerate([(200, 80), (30, 12)]):  # the second no taller than G^S's input
        (crops / f"{i}.png").write_bytes(png(i, shape))
    capsys.readouterr()
    cli.main(["predict", str(crops), "--bundle", str(out / "bundle"), "--json"])
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["status"] for r in records] == ["ok", "ok"] and [r["super_resolved"] for r in records] == [False, True]
    assert 0 <= records[0]["backpack_score"] <= 1

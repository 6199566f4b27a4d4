"""The extraction job: pure parts without Ray, then end to end on local Ray and the local S3 server."""

from __future__ import annotations

import datetime as dt
import importlib.util
import functools
import json
import logging
import os
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pyarrow.dataset as pads
import pytest
import torch
from PIL import Image

from attrgan.bundle import save_bundle
from attrgan.config import StorageConfig
from attrgan.data.manifest import ManifestError, write_manifest
from attrgan.data.storage import filesystem, list_dir, read_bytes, write_bytes
from attrgan.data.manifest import INPUT_COLUMNS, PARTITION_INDEX, ROW_ERROR, prepare_rows
from attrgan.faults import ACTOR_EXIT_ENV
from attrgan.extract import (ExtractConfig, ResultsScorer, newest_first, results_batch, rows_per_block,
                             run_extract, select_partitions)
from attrgan.contracts import SUCCESS_MARKER as SUCCESS_FILE
from attrgan.contracts import error_kind, results_schema
from attrgan.results import read_success, results_dataset
from attrgan.ray_scoring import ScoringActor, decode_rows, plan_actors
from attrgan.sink import PRECISION, commit_groups
from attrgan.pipeline import Pipeline, PipelineConfig
from attrgan.progress import format_progress
from helpers import ATTRS, new_bucket, png, random_images, tiny_bundle


# One torch thread: these tests run beside Ray workers on a 2-core machine.
pytestmark = pytest.mark.usefixtures("one_torch_thread")


# ---------------------------------------------------------------------------------------------
# no Ray


def test_plan_actors_leaves_decode_tasks_a_cpu():
    # Decode tasks beside CPU actors (the GPU layout, forced here): the conftest cluster of 4 CPUs,
    # 2 actors → one CPU each, two left for decoding.
    plan = plan_actors(cluster_cpus=4, cluster_gpus=0, actors=2, decode_in_actors=False)
    assert (plan.actors, plan.num_cpus, plan.num_gpus, plan.decode_cpus) == (2, 1.0, 0.0, 1.0)
    assert not plan.decode_in_actors
    # 2 CPUs, 2 actors: one CPU decodes, read/write tasks keep 0.2, the actors share the rest.
    plan = plan_actors(cluster_cpus=2, cluster_gpus=0, actors=2, decode_in_actors=False)
    assert (plan.num_cpus, plan.decode_cpus, plan.torch_threads) == (0.4, 1.0, 1)
    # 1 CPU: decode, read/write tasks and the single actor share it.
    plan = plan_actors(cluster_cpus=1, cluster_gpus=0, actors=1, decode_in_actors=False)
    assert (plan.num_cpus, plan.decode_cpus) == (pytest.approx(0.3), 0.5)
    # GPUs cap the pool: 4 requested, 2 GPUs at 1 each → 2 actors with a GPU and a CPU each, and
    # decoding stays in CPU tasks by default.
    plan = plan_actors(cluster_cpus=16, cluster_gpus=2, actors=4, min_actors=3)
    assert (plan.actors, plan.min_actors, plan.num_gpus, plan.num_cpus) == (2, 2, 1.0, 1.0)
    assert not plan.decode_in_actors and plan.decode_cpus == 1.0
    plan = plan_actors(cluster_cpus=16, cluster_gpus=1, actors=4, gpus_per_actor=0.25)
    assert (plan.actors, plan.num_gpus) == (4, 0.25)
    # torch threads: the CPU share rounded down by default, or as configured.
    assert plan_actors(cluster_cpus=8, cluster_gpus=0, actors=1, cpus_per_actor=2.5).torch_threads == 2
    assert plan_actors(cluster_cpus=4, cluster_gpus=0, actors=1, torch_threads=2).torch_threads == 2
    # An explicit CPU share that would starve decoding shrinks the pool, or is refused.
    assert plan_actors(cluster_cpus=4, cluster_gpus=0, actors=4, cpus_per_actor=1.5,
                       decode_in_actors=False).actors == 1
    with pytest.raises(ValueError, match="CPU left for decoding"):
        plan_actors(cluster_cpus=4, cluster_gpus=0, actors=1, cpus_per_actor=4, decode_in_actors=False)


def test_plan_actors_on_cpus_decodes_in_the_actors():
    # No GPU: the actors decode their own batches, so no CPU is held back for decode tasks.
    plan = plan_actors(cluster_cpus=4, cluster_gpus=0, actors=2)
    assert plan.decode_in_actors and (plan.actors, plan.num_cpus, plan.decode_cpus) == (2, 1.0, 0.0)
    plan = plan_actors(cluster_cpus=2, cluster_gpus=0, actors=4)
    assert (plan.actors, plan.num_cpus, plan.torch_threads) == (4, pytest.approx(0.45), 1)
    assert plan_actors(cluster_cpus=4, cluster_gpus=0, actors=1, cpus_per_actor=3).torch_threads == 3
    with pytest.raises(ValueError, match="does not fit"):  # read and write tasks need a share too
        plan_actors(cluster_cpus=4, cluster_gpus=0, actors=1, cpus_per_actor=4)
    assert plan_actors(cluster_cpus=4, cluster_gpus=0, actors=4, cpus_per_actor=1.5).actors == 2
    # gpus_per_actor=0 runs on CPU even with GPUs present, and then decodes in the actors.
    plan = plan_actors(cluster_cpus=4, cluster_gpus=2, actors=2, gpus_per_actor=0)
    assert plan.num_gpus == 0.0 and plan.decode_in_actors
    with pytest.raises(ValueError, match="does not fit"):
        plan_actors(cluster_cpus=4, cluster_gpus=0, actors=1, cpus_per_actor=5)


def test_results_schema_columns():
    schema = results_schema(("female", "hat"))
    assert schema.names == ["crop_id", "image_uri", "camera_id", "captured_at", "track_id", "frame_index",
                            "status", "error", "super_resolved", "reconstructed", "occlusion_score",
                            "crop_height", "female", "female_score",
                            "hat", "hat_score", "model_version", "processed_at"]
    assert schema.field("hat").type == pa.bool_() and schema.field("hat_score").type == pa.float32()
    assert schema.field("processed_at").type == pa.timestamp("us", tz="UTC")
    with pytest.raises(ValueError, match="collides"):
        results_schema(("status",))


def test_results_batch_keeps_error_rows_with_null_scores():
    bundle = tiny_bundle(thresholds=[0.0, 1.0, 0.0])
    pipeline = Pipeline(bundle, PipelineConfig(device="cpu"))
    captured = np.array(["2026-11-25T10:00:00", "NaT", "2026-11-25T11:30:00"], dtype="datetime64[us]")
    batch = {
        "crop_id": np.array(["a", "b", "c"], dtype=object),
        "image_uri": np.array(["s3://x/a.png", "s3://x/b.png", "s3://x/c.png"], dtype=object),
        "camera_id": np.array(["cam1", None, "cam2"], dtype=object),
        "captured_at": captured,
        "image": random_images(3),
        "crop_height": np.array([12, 0, 64], dtype=np.int32),
        "status": np.array(["ok", "error", "ok"], dtype=object),
        "error": np.array([None, "missing object: s3://x/b.png not found", None], dtype=object),
    }
    now = dt.datetime(2026, 11, 26, 1, 2, 3, tzinfo=dt.timezone.utc)
    table = results_batch(batch, pipeline, model_version="v1", processed_at=now)
    assert table.schema == results_schema(ATTRS)
    rows = table.to_pylist()
    assert [r["status"] for r in rows] == ["ok", "error", "ok"]
    assert rows[1]["error"].startswith("missing object") and rows[0]["error"] is None
    assert [r["super_resolved"] for r in rows] == [True, False, False]  # height 12 ≤ G^S's input height 16
    assert [r["reconstructed"] for r in rows] == [True, False, True]  # occlusion threshold 0
    assert rows[1]["female"] is None and rows[1]["female_score"] is None and rows[1]["occlusion_score"] is None
    assert rows[0]["female"] is True and rows[2]["hat"] is False  # thresholds 0 and 1
    assert rows[0]["captured_at"] == dt.datetime(2026, 11, 25, 10, tzinfo=dt.timezone.utc)
    assert rows[1]["captured_at"] is None and rows[1]["camera_id"] is None
    assert {r["model_version"] for r in rows} == {"v1"} and rows[2]["processed_at"] == now
    # The ok rows carry exactly the pipeline's scores.
    ok = pipeline(batch["image"][[0, 2]], np.array([12, 64]))
    np.testing.assert_allclose(table["hat_score"].to_numpy(zero_copy_only=False)[[0, 2]], ok["scores"][:, 1])


def test_results_batch_all_null_optional_columns():
    # An all-null column can come back from Ray Data as float NaN (Arrow's null type).
    pipeline = Pipeline(tiny_bundle(), PipelineConfig(device="cpu"))
    batch = {"crop_id": np.array(["a", "b"], dtype=object), "image_uri": np.array(["a.png", "b.png"], dtype=object),
             "camera_id": np.array([np.nan, np.nan]), "captured_at": np.array([np.nan, np.nan]),
             "image": random_images(2), "crop_height": np.array([64, 64], np.int32),
             "status": np.array(["ok", "ok"], dtype=object), "error": np.array([np.nan, np.nan])}
    now = dt.datetime(2026, 11, 26, tzinfo=dt.timezone.utc)
    table = results_batch(batch, pipeline, model_version="v1", processed_at=now)
    assert table["camera_id"].null_count == 2 and table["captured_at"].null_count == 2
    assert table["error"].null_count == 2 and table["status"].to_pylist() == ["ok", "ok"]


def test_select_partitions_and_error_kind():
    available = ["day=1/cam=a", "day=1/cam=b", "day=2/cam=a"]
    assert select_partitions(available, []) == available
    assert select_partitions(available, ["day=1"]) == ["day=1/cam=a", "day=1/cam=b"]
    assert select_partitions(available, ["day=2/cam=a", "day=2"]) == ["day=2/cam=a"]
    with pytest.raises(ManifestError, match="'day=3' is not in the manifest"):
        select_partitions(available, ["day=3"])
    assert error_kind("missing object: s3://b/k not found") == "missing object"
    assert error_kind("bad bbox: (x=1) outside") == "bad bbox"


def _results_rows(crop_ids: list[str], errors: dict[str, str] | None = None) -> pa.Table:
    """Results rows for `crop_ids` (as results_batch builds them), with the given error rows."""
    errors = errors or {}
    now = dt.datetime(2026, 11, 26, tzinfo=dt.timezone.utc)
    n = len(crop_ids)
    columns = {"crop_id": crop_ids, "image_uri": [f"{c}.png" for c in crop_ids], "camera_id": [None] * n,
               "captured_at": [None] * n, "track_id": [None] * n, "frame_index": [None] * n, "status": ["error" if c in errors else "ok" for c in crop_ids],
               "error": [errors.get(c) for c in crop_ids], "super_resolved": [c.endswith("low") for c in crop_ids],
               "reconstructed": [False] * n, "occlusion_score": [0.25] * n, "crop_height": [160] * n, "hat": [True] * n,
               "hat_score": [0.75] * n, "model_version": ["v1"] * n, "processed_at": [now] * n}
    return pa.Table.from_pydict(columns, schema=results_schema(("hat",)))


def test_config_from_yaml_and_job_flags(tmp_path, monkeypatch):
    spec = importlib.util.spec_from_file_location("extract_job", Path(__file__).resolve().parents[1] / "jobs/extract.py")
    job = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(job)
    monkeypatch.setenv("ATTRGAN_S3_ENDPOINT_URL", "http://127.0.0.1:9")
    path = tmp_path / "extract.yaml"
    path.write_text("actors: 3\nbatch_size: 16\npipeline:\n  sr_max_height: 100\nstorage:\n  region: eu-west-1\n")
    args = job.build_parser().parse_args(["--manifest", "s3://b/m", "--bundle", "s3://b/bundle", "--out", "s3://b/o",
                                          "--partition", "day=1", "--partition", "day=2", "--batch-size", "8",
                                          "--full", "--config", str(path), "--set", "max_restarts=5"])
    config = job.build_config(args)
    assert config.partitions == ("day=1", "day=2") and not config.incremental
    assert (config.actors, config.batch_size, config.max_restarts) == (3, 8, 5)  # flags beat the YAML
    assert config.pipeline.sr_max_height == 100
    assert config.storage.endpoint_url == "http://127.0.0.1:9" and config.storage.region == "eu-west-1"
    assert config.storage.allowed_prefixes == ()  # the manifest's bucket then (manifest.allowed_prefixes)
    args = job.build_parser().parse_args(["--manifest", "s3://b/m", "--bundle", "s3://b/bundle", "--out", "s3://b/o",
                                          "--allow-prefix", "s3://frames", "--allow-prefix", "s3://b",
                                          "--set", "decode_in_actors=false"])
    assert job.build_config(args).storage.allowed_prefixes == ("s3://frames", "s3://b")
    assert job.build_config(args).decode_in_actors is False  # decode tasks forced on a CPU cluster
    with pytest.raises(ValueError, match="batch_size must be an integer >= 1, got 0"):
        ExtractConfig(manifest="m", bundle="b", out="o", batch_size=0)
    with pytest.raises(ValueError, match="min_actors"):
        ExtractConfig(manifest="m", bundle="b", out="o", actors=1, min_actors=2)
    with pytest.raises(ValueError, match="torch_threads must be an integer >= 1 or None, got 0"):
        ExtractConfig(manifest="m", bundle="b", out="o", torch_threads=0)


# ---------------------------------------------------------------------------------------------
# end to end on the local S3 server

FULL = (140, 56)  # (H, W) of a full-size frame; over half the tiny classifier's 64 rows
LOW = (14, 6)  # a low-resolution crop: no taller than G^S's input (16) → super-resolved


@pytest.fixture(scope="module")
def scene(s3_endpoint):
    """A bundle and a 2-partition manifest of 14 rows on a fresh bucket: clean, occluded-looking,
    low-res and bad rows (missing object, not-an-image bytes, bbox outside the frame, an image in
    another bucket than the manifest's)."""
    bucket, other = new_bucket(s3_endpoint), new_bucket(s3_endpoint)
    storage = StorageConfig(endpoint_url=s3_endpoint, region="us-east-1")
    base = f"s3://{bucket}"
    # occlusion_down threshold 0: every decodable crop is reconstructed.
    bundle = save_bundle(f"{base}/bundle", tiny_bundle(thresholds=[0.5, 0.5, 0.0]), storage=storage)

    rows = []
    for day in ("1", "2"):
        for k in range(3):
            name = f"d{day}-full{k}"
            write_bytes(f"{base}/images/{name}.png", png(int(day) * 10 + k, FULL), storage)
            rows.append({"crop_id": name, "image_uri": f"{base}/images/{name}.png", "kind": "full", "day": day})
        name = f"d{day}-low"
        write_bytes(f"{base}/images/{name}.png", png(int(day) * 10 + 5, LOW), storage)
        rows.append({"crop_id": name, "image_uri": f"{base}/images/{name}.png", "kind": "low", "day": day})
        # A low-res crop cut from a full frame by its bbox: its crop height decides, not the frame's.
        rows.append({"crop_id": f"d{day}-lowbox", "image_uri": f"{base}/images/d{day}-full0.png", "kind": "low",
                     "day": day, "bbox": (4, 10, 8, 14)})
    write_bytes(f"{base}/images/broken.png", b"this is not an image", storage)
    write_bytes(f"s3://{other}/images/d1-full0.png", png(10, FULL), storage)
    rows += [
        {"crop_id": "bad-missing", "image_uri": f"{base}/images/nowhere.png", "kind": "missing object", "day": "1"},
        # Readable with the job's credentials, but outside the manifest's bucket: refused, not fetched.
        {"crop_id": "bad-bucket", "image_uri": f"s3://{other}/images/d1-full0.png", "kind": "refused uri", "day": "1"},
        {"crop_id": "bad-bytes", "image_uri": f"{base}/images/broken.png", "kind": "undecodable image", "day": "2"},
        {"crop_id": "bad-bbox", "image_uri": f"{base}/images/d2-full1.png", "kind": "bad bbox", "day": "2",
         "bbox": (500, 500, 20, 40)},
    ]
    frame = pd.DataFrame({
        "crop_id": [r["crop_id"] for r in rows],
        "image_uri": [r["image_uri"] for r in rows],
        **{col: pd.array([r["bbox"][i] if "bbox" in r else None for r in rows], dtype="Int32")
           for i, col in enumerate(("bbox_x", "bbox_y", "bbox_w", "bbox_h"))},
        "camera_id": ["cam0" if r["crop_id"] in WALKER else f"cam{i % 2}" for i, r in enumerate(rows)],
        "captured_at": pd.to_datetime([f"2026-11-2{r['day']}T0{i % 10}:00:00Z" for i, r in enumerate(rows)]),
        "day": [r["day"] for r in rows],
        # One person seen before and after midnight, across batches, one of their crops a bad row;
        # every other crop is its own track.
        "track_id": ["walker" if r["crop_id"] in WALKER else None for r in rows],
        "frame_index": pd.array([WALKER.index(r["crop_id"]) if r["crop_id"] in WALKER else None for r in rows],
                                dtype="Int64"),
    })
    write_manifest(frame, f"{base}/manifest", storage=storage, partition_cols=["day"])
    kinds = {r["crop_id"]: r["kind"] for r in rows}
    return {"base": base, "storage": storage, "bundle": bundle, "kinds": kinds, "frame": frame}


WALKER = ("d1-full1", "d1-full2", "d1-low", "d1-lowbox", "d2-full1", "d2-full2", "d2-low", "d2-lowbox", "bad-bbox")


def config_for(scene, out: str, **overrides) -> ExtractConfig:
    values = {"manifest": f"{scene['base']}/manifest", "bundle": f"{scene['base']}/bundle", "out": out,
              "storage": scene["storage"], "actors": 1, "batch_size": 4, "pipeline": PipelineConfig(device="cpu")}
    return ExtractConfig(**(values | overrides))


def read_results(scene, out: str) -> pd.DataFrame:
    """The committed results with their hive partition columns (`day`)."""
    fs, path = filesystem(out, scene["storage"])
    files = results_dataset(out, storage=scene["storage"]).files
    return pads.dataset(files, filesystem=fs, format="parquet", partitioning="hive",
                        partition_base_dir=path).to_table().to_pandas()


class Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.fixture(scope="module")
def first_run_and_log(ray_local, scene):
    """One full extraction of the scene, shared by the Ray tests below, and the messages it logged
    (a progress line every 0.5 s)."""
    out = f"{scene['base']}/results"
    logger, collect = logging.getLogger("attrgan"), Collect()
    level = logger.level
    logger.setLevel(logging.INFO)
    logger.addHandler(collect)
    try:
        summary = run_extract(config_for(scene, out, progress_interval_s=0.5))
    finally:
        logger.removeHandler(collect)
        logger.setLevel(level)
    return summary, out, collect.messages


@pytest.fixture(scope="module")
def first_run(first_run_and_log):
    return first_run_and_log[:2]


@pytest.mark.ray
def test_each_partition_commits_its_tracks_and_a_person_across_midnight_reads_as_one(first_run, scene):
    from attrgan.results import load_tracks

    _, out = first_run
    tracks = load_tracks(out, storage=scene["storage"])
    (walker,) = tracks[tracks["track_id"] == "walker"].itertuples()
    assert (walker.camera_id, walker.crops, walker.crops_ok, walker.first_frame, walker.last_frame) == ("cam0", 9, 8, 0, 8)
    assert walker.best_crop_id in WALKER and 0 < walker.super_resolved_share < 1
    alone = tracks[tracks["track_id"].isna()]
    assert sorted(alone["best_crop_id"]) == sorted(set(scene["kinds"]) - set(WALKER))
    assert (alone["crops"] == 1).all()
    # In the files, the walker has a row in each day's partition; load_tracks merged them.
    # In the files the walker has a row in each day's partition (7 crops each: the walker's 4 and
    # 3 others; its 5 and 2 others); load_tracks merged them.
    for day, rows in (("1", 4), ("2", 3)):
        assert read_success(f"{out}/day={day}", scene["storage"])["tracks"]["rows"] == rows


@pytest.mark.ray
def test_a_run_logs_progress_each_commit_and_the_summary_last(first_run_and_log):
    summary, _, messages = first_run_and_log
    progress = [m for m in messages if m.startswith("extract: progress ")]
    assert progress and all(re.fullmatch(r"extract: progress \d+/14 rows \(\d+%\), [\d.]+ rows/s, ETA .+", m)
                            for m in progress), progress
    commits = [m for m in messages if m.startswith("extract: committed ")]
    assert commits == [p.format() for p in summary.processed]  # one line per partition as it commits
    assert commits[1].startswith("extract: committed day=2: 7 rows in 3 tracks, errors: ") and "bad bbox 1" in commits[1]
    assert "super-resolved 2, reconstructed 5; at " in commits[1]
    assert messages[-1] == summary.format()
    # The JSON record: each partition's rows, errors by kind, restorations and seconds.
    record = json.loads(json.dumps(summary.to_dict()))
    assert [(p["partition"], p["rows"], p["errors"]) for p in record["partitions"]] == [
        (p.partition, p.rows, p.errors) for p in summary.processed]
    assert all(p["seconds"] > 0 and {"super_resolved", "reconstructed"} <= set(p) for p in record["partitions"])
    assert record["restorations"] == summary.restorations and record["rows"] == 14 and record["incomplete"] == []


@pytest.mark.ray
def test_extract_end_to_end_and_incremental(scene, first_run):
    summary, out = first_run
    kinds = scene["kinds"]
    assert summary.rows == len(kinds) == 14 and summary.skipped == ()
    # One stream for both partitions (batches of 4 cross the partition boundary at row 7).
    assert [(p.partition, p.rows) for p in summary.processed] == [("day=1", 7), ("day=2", 7)]
    assert summary.errors == {"missing object": 1, "refused uri": 1, "undecodable image": 1, "bad bbox": 1}
    assert summary.super_resolved == 4 and summary.reconstructed == 10  # every ok row

    frame = read_results(scene, out)  # pandas + pyarrow read the output prefix directly
    assert sorted(frame["crop_id"]) == sorted(kinds)  # exactly one row per manifest row
    by_id = frame.set_index("crop_id")
    for crop_id, kind in kinds.items():
        row = by_id.loc[crop_id]
        if kind in ("full", "low"):
            assert row["status"] == "ok" and pd.isna(row["error"])
            assert row["super_resolved"] == (kind == "low"), crop_id
            assert row["reconstructed"] and 0 <= row["occlusion_score"] <= 1
        else:
            assert row["status"] == "error" and row["error"].startswith(kind + ":"), (crop_id, row["error"])
            assert not row["super_resolved"] and pd.isna(row["female_score"])
    assert set(by_id["model_version"]) == {scene["bundle"].version}
    assert by_id.loc["d1-full0", "captured_at"] == pd.Timestamp("2026-11-21T00:00:00Z")
    assert by_id.loc["d1-full0", "camera_id"] == "cam0" and str(by_id.loc["d1-full0", "day"]) == "1"
    fs, path = filesystem(out + "/day=1", scene["storage"])
    on_disk = pads.dataset(path, filesystem=fs, format="parquet").schema
    assert [(f.name, f.type) for f in on_disk] == [(f.name, f.type) for f in results_schema(ATTRS)]

    marker = json.loads(read_bytes(out + "/day=2/" + SUCCESS_FILE, scene["storage"]))
    assert marker["model_version"] == scene["bundle"].version and marker["rows"] == 7
    assert marker["errors"] == {"undecodable image": 1, "bad bbox": 1}
    assert marker["precision"] in ("fp32", "bf16") and marker["precision"] == summary.precision
    assert marker["restorations"] == summary.restorations == {  # a bundle from before stored gains
        name: {"runs": True, "reason": "no validation gain stored"} for name in ("superres", "reconstruction")}
    assert marker["files"] == [f for f in (n.rsplit("/", 1)[1] for n in list_dir(out + "/day=2", scene["storage"]))
                               if f.endswith(".parquet")]

    # Incremental: both partitions are done with this bundle version → nothing runs.
    skipped = run_extract(config_for(scene, out))
    assert skipped.processed == () and skipped.skipped == ("day=1", "day=2") and skipped.rows == 0


@pytest.mark.ray
@pytest.mark.slow
def test_rerun_with_a_killed_actor_replaces_the_partition_without_duplicates(scene, first_run, tmp_path,
                                                                            monkeypatch):
    _, out = first_run
    day2_files = list_dir(out + "/day=2", scene["storage"])
    marker = tmp_path / "actor-killed"
    monkeypatch.setenv(ACTOR_EXIT_ENV, str(marker))
    # Decode tasks before the actors here (the GPU layout); the first run decoded in the actors.
    summary = run_extract(config_for(scene, out, partitions=("day=1",), incremental=False, batch_size=2,
                                     max_restarts=2, decode_in_actors=False))
    assert marker.exists()  # the actor really died once, on its second batch
    assert [p.partition for p in summary.processed] == ["day=1"] and summary.rows == 7
    frame = read_results(scene, out)
    assert sorted(frame["crop_id"]) == sorted(scene["kinds"]) and frame["crop_id"].is_unique
    assert list_dir(out + "/day=2", scene["storage"]) == day2_files  # the other partition is untouched


def test_schema_error_stops_before_any_work(s3_bucket, storage):
    base = f"s3://{s3_bucket}"
    bundle = save_bundle(f"{base}/bundle", tiny_bundle(), storage=storage)
    bad = pd.DataFrame({"crop_id": ["a", "b"], "image_uri": ["x.png", "y.png"], "bbox_x": ["left", "right"],
                        "bbox_y": [0, 0], "bbox_w": [1, 1], "bbox_h": [1, 1]})
    fs, path = filesystem(f"{base}/manifest/part-0.parquet", storage)
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pandas(bad, preserve_index=False), path, filesystem=fs)
    config = ExtractConfig(manifest=f"{base}/manifest", bundle=f"{base}/bundle", out=f"{base}/results",
                           storage=storage)
    with pytest.raises(ManifestError, match="bbox_x"):
        run_extract(config)
    assert list_dir(f"{base}/results", storage) == []  # nothing written
    assert bundle.version  # the bundle was fine: the manifest alone stopped the job


def test_actor_checks_the_bundle_version(tmp_path):
    bundle = save_bundle(str(tmp_path / "bundle"), tiny_bundle())
    kwargs = {"bundle_uri": str(tmp_path / "bundle"), "storage": StorageConfig(),
              "pipeline_config": PipelineConfig(device="cpu"), "torch_threads": 1}
    batch = {"crop_id": np.array(["a"], object), "image_uri": np.array(["a.png"], object),
             "camera_id": np.array([None], object), "captured_at": np.array([None], object),
             "image": random_images(1), "crop_height": np.array([64], np.int32),
             "status": np.array(["ok"], object), "error": np.array([None], object)}
    threads = torch.get_num_threads()
    try:
        actor = ScoringActor(make_scorer=functools.partial(ResultsScorer, model_version=bundle.version), **kwargs)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(threads)
    table = actor(batch)
    assert table.num_rows == 1 and table["model_version"][0].as_py() == bundle.version
    assert table.schema == results_schema(ATTRS)
    tagged = actor(batch | {PARTITION_INDEX: np.array([3], np.int32)})  # carried through the stream
    assert tagged.column_names[-2:] == [PARTITION_INDEX, PRECISION] and tagged[PARTITION_INDEX].to_pylist() == [3]
    assert tagged[PRECISION].to_pylist() == [actor.scorer.pipeline.precision]
    with pytest.raises(RuntimeError, match="changed during the run"):
        ScoringActor(make_scorer=functools.partial(ResultsScorer, model_version="something-else"), **kwargs)


def test_actor_decodes_manifest_rows_itself(tmp_path):
    bundle = save_bundle(str(tmp_path / "bundle"), tiny_bundle())
    Image.fromarray(random_images(1, size=FULL)[0]).save(tmp_path / "a.png")
    threads = torch.get_num_threads()
    try:
        actor = ScoringActor(make_scorer=functools.partial(ResultsScorer, model_version=bundle.version),
                             bundle_uri=str(tmp_path / "bundle"), storage=StorageConfig(),
                             pipeline_config=PipelineConfig(device="cpu"), torch_threads=1,
                             decode={"size": bundle.classifier.config.input_size})
    finally:
        torch.set_num_threads(threads)
    rows = {"crop_id": np.array(["a", "b"], object),
            "image_uri": np.array([str(tmp_path / "a.png"), str(tmp_path / "nowhere.png")], object),
            "camera_id": np.array(["cam0", None], object), "captured_at": np.array([None, None], object)}
    table = actor(rows)
    assert table["crop_id"].to_pylist() == ["a", "b"] and table["status"].to_pylist() == ["ok", "error"]
    assert table["error"][1].as_py().startswith("missing object:") and table["female_score"][0].is_valid


def test_partitions_go_newest_first_and_since_stops_at_a_day():
    parts = ["date=2026-11-23/camera=a", "date=2026-11-25/camera=a", "date=2026-11-24/camera=b", "extra=1"]
    assert newest_first(parts) == ["date=2026-11-25/camera=a", "date=2026-11-24/camera=b",
                                   "date=2026-11-23/camera=a", "extra=1"]
    assert newest_first(parts, since="2026-11-24") == ["date=2026-11-25/camera=a", "date=2026-11-24/camera=b"]
    with pytest.raises(ManifestError, match="since=2026-11-24 needs a manifest partitioned by date="):
        newest_first(["camera=a", "camera=b"], since="2026-11-24")
    with pytest.raises(ValueError, match="since must be a date YYYY-MM-DD, got 'yesterday'"):
        ExtractConfig(manifest="m", bundle="b", out="o", since="yesterday")


def test_commit_groups_hold_at_most_the_limit_in_order():
    rows = {"a": 5, "b": 4, "c": 12, "d": 0, "e": 3}
    groups = commit_groups(list(rows), rows, 10)
    assert [(g.partitions, g.rows) for g in groups] == [(("a", "b"), (5, 4)), (("c",), (12,)), (("d", "e"), (0, 3))]


def test_blocks_hold_a_few_batches_and_give_every_actor_a_share_of_a_small_run():
    assert rows_per_block(1_000_000, batch_size=64, actors=2) == 256  # BATCHES_PER_BLOCK batches
    assert rows_per_block(256, batch_size=64, actors=2) == 128  # two blocks, one per actor
    assert rows_per_block(96, batch_size=32, actors=2) == 48
    assert rows_per_block(5, batch_size=64, actors=8) == 1
    assert rows_per_block(0, batch_size=64, actors=2) == 1


def test_prepare_rows_types_resolves_and_flags_values_without_failing():
    table = pa.table({
        "crop_id": ["a", "b", "c"],
        "image_uri": ["x/1.png", "../../../../up.png", None],
        "bbox_x": pa.array([1.0, 2.5, None]), "bbox_y": pa.array([0.0, 0.0, None]),
        "bbox_w": pa.array([4.0, 4.0, None]), "bbox_h": pa.array([8.0, 8.0, None]),
        "captured_at": pa.array([dt.datetime(2026, 11, 25, 1, 2, 3)] * 3, pa.timestamp("ns")),
        "path": ["b/m/date=1/p.parquet", "b/m/date=1/p.parquet", "b/m/date=2/p.parquet"],
    })
    out = prepare_rows(table, base="s3://b/m", partition_of={"b/m/date=1/p.parquet": 0, "b/m/date=2/p.parquet": 1})
    assert out.column_names == [*INPUT_COLUMNS, PARTITION_INDEX, ROW_ERROR]
    assert out["image_uri"].to_pylist() == ["s3://b/m/x/1.png", "", ""]
    assert out[PARTITION_INDEX].to_pylist() == [0, 0, 1] and out["camera_id"].null_count == 3
    assert out["bbox_x"].type == pa.int64() and out["bbox_x"].to_pylist() == [1, None, None]
    errors = out[ROW_ERROR].to_pylist()
    assert errors[0] is None and errors[2] is None and errors[1].startswith("bad uri:")
    assert out["captured_at"].type == pa.timestamp("us", tz="UTC")
    # The pre-decode error survives decoding, and the row's given URI is kept.
    decoded = decode_rows({k: np.asarray(out[k].to_pylist(), dtype=object) for k in out.column_names},
                          size=(64, 32))
    assert decoded["status"].tolist()[1:] == ["error", "error"] and decoded["error"][1].startswith("bad uri:")
    assert decoded["error"][2].startswith("missing uri:")  # a null image_uri is that row's error


def test_manifest_files_with_different_columns_read_into_one_prepared_table(tmp_path):
    from attrgan.config import StorageConfig
    from attrgan.data.manifest import read_manifest_files

    (tmp_path / "date=1").mkdir()
    (tmp_path / "date=2").mkdir()
    first, second = str(tmp_path / "date=1" / "a.parquet"), str(tmp_path / "date=2" / "b.parquet")
    pq.write_table(pa.table({"crop_id": ["c"], "image_uri": ["3.png"], "bbox_x": [1.5], "bbox_y": [0.0],
                             "bbox_w": [4.0], "bbox_h": [8.0]}), second)
    pq.write_table(pa.table({"crop_id": ["a", "b"], "image_uri": ["1.png", "2.png"], "camera_id": ["c1", "c1"],
                             "extra": [1, 2]}), first, row_group_size=1)  # an extra column is not read
    parts = list(read_manifest_files(pa.table({"path": [first, second]}), manifest=str(tmp_path),
                                     storage=StorageConfig(), base=str(tmp_path), partition_of={first: 0, second: 1}))
    assert [p.num_rows for p in parts] == [2, 1]  # a file's small row groups gather into one block
    out = pa.concat_tables(parts)
    assert out.column_names == [*INPUT_COLUMNS, PARTITION_INDEX, ROW_ERROR]
    assert out["crop_id"].to_pylist() == ["a", "b", "c"] and out[PARTITION_INDEX].to_pylist() == [0, 0, 1]
    assert out["camera_id"].to_pylist() == ["c1", "c1", None]
    assert out["image_uri"].to_pylist() == [str(tmp_path / f"{i}.png") for i in (1, 2, 3)]
    assert out[ROW_ERROR].to_pylist()[2].startswith("bad bbox:")  # 1.5 pixels


def test_duplicate_crop_ids_stop_the_job_before_any_work(ray_local, tmp_path):
    save_bundle(str(tmp_path / "bundle"), tiny_bundle())
    frame = pd.DataFrame({"crop_id": ["a", "b", "a"], "image_uri": ["1.png", "2.png", "3.png"]})
    (tmp_path / "m" / "date=2026-11-25").mkdir(parents=True)
    frame.to_parquet(tmp_path / "m" / "date=2026-11-25" / "part-0.parquet", index=False)
    config = ExtractConfig(manifest=str(tmp_path / "m"), bundle=str(tmp_path / "bundle"), out=str(tmp_path / "out"))
    with pytest.raises(ManifestError, match=r"partition date=2026-11-25: column 'crop_id' must be unique.*'a' \(x2\)"):
        run_extract(config)
    assert not [p for p in (tmp_path / "out").rglob("*") if p.is_file()]


def test_progress_line_reads_done_total_rate_and_eta():
    assert format_progress(0, 1000, 10.0) == "extract: progress 0/1,000 rows (0%), 0.0 rows/s, ETA unknown"
    assert format_progress(250, 1000, 10.0) == "extract: progress 250/1,000 rows (25%), 25.0 rows/s, ETA 30 s"
    assert format_progress(100, 10_000_000, 10.0).endswith("10.0 rows/s, ETA 277.8 h")
    assert format_progress(1_000_000, 10_000_000, 3600.0).endswith("277.8 rows/s, ETA 9.0 h")
    assert format_progress(500, 1000, 60.0).endswith("ETA 60 s") and format_progress(100, 1000, 60.0).endswith("9 min")
    # A batch redone after a failure counts twice: the line never shows more than the total.
    assert format_progress(1010, 1000, 5.0).startswith("extract: progress 1,000/1,000 rows (100%)")
    assert format_progress(0, 0, 0.0) == "extract: progress 0/0 rows, 0.0 rows/s, ETA unknown"


def test_only_rays_actor_arguments_notice_is_dropped_from_stderr(capfd, monkeypatch):
    from attrgan import ray_setup

    monkeypatch.setattr(ray_setup, "_notice_dropped", False)
    notice = (b"[2026-12-07 03:22:16,509 E 16739 16739] core_worker.cc:2465: Actor with class name: 'MapWorker' and "
              b"ID: '6bd7' has constructor arguments in the object store and max_restarts > 0. If the arguments ...\n")
    with ray_setup.quiet_actor_args_notice():
        os.write(2, b"before\n[2026-12-07 03:22:16,500 E 1 1] core_worker.cc:10: another error\n")
        os.write(2, notice[:40])  # a line may arrive in pieces
        os.write(2, notice[40:] + b"a progress bar\r")
        os.write(2, b"after\n")
    assert capfd.readouterr().err == ("before\n[2026-12-07 03:22:16,500 E 1 1] core_worker.cc:10: another error\n"
                                      "a progress bar\rafter\n")
    assert ray_setup._notice_dropped  # Ray prints it once per process: later runs leave stderr alone
    with ray_setup.quiet_actor_args_notice():
        os.write(2, notice)
    assert capfd.readouterr().err == notice.decode()


# Lines an operator would read as errors: Python's and Ray's ERROR records, Ray's C++ "E" lines
# (the driver's own and those forwarded from workers), tracebacks.
ERROR_LINE = re.compile(r"\bERROR\b|\[[^\]]* E \d+ \d+\]|Traceback")


def test_the_error_line_pattern_catches_rays_own_error_lines():
    ray_line = ("[2026-12-07 03:22:16,509 E 16739 16739] core_worker.cc:2465: Actor with class name: "
                "'MapWorker(MapBatches(ScoringActor))' and ID: '6bd7' has constructor arguments in the object store "
                "and max_restarts > 0.")
    assert ERROR_LINE.search(ray_line) and ERROR_LINE.search("(MapWorker pid=12) " + ray_line)
    assert ERROR_LINE.search("2026-12-07 03:22:16,509 ERROR attrgan.extract: x") and ERROR_LINE.search("Traceback (most")
    assert not ERROR_LINE.search("2026-12-07 03:22:16,509 INFO attrgan.extract: extract: 0 errors")

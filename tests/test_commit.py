"""The results commit protocol: staged files are promoted, `_SUCCESS` names the committed files,
and a driver killed at any step leaves every partition's old or new results whole."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pyarrow.compute as pc
import pytest

from attrgan.config import StorageConfig
from attrgan.data.storage import list_dir, write_bytes
from attrgan.contracts import STAGING_DIR, SUCCESS_MARKER, TRACKS_DIR, results_schema
from attrgan.results import (clean_partition, clean_staging, load_results, promote, read_success, results_dataset,
                             staging_uri)


def results_rows(crop_ids: list[str], version: str) -> pa.Table:
    now = dt.datetime(2026, 11, 26, tzinfo=dt.timezone.utc)
    n = len(crop_ids)
    columns = {"crop_id": crop_ids, "image_uri": [f"{c}.png" for c in crop_ids], "camera_id": [None] * n,
               "captured_at": [None] * n, "track_id": [None] * n, "frame_index": [None] * n, "status": ["ok"] * n, "error": [None] * n, "super_resolved": [False] * n,
               "reconstructed": [False] * n, "occlusion_score": [0.25] * n, "crop_height": [160] * n, "hat": [True] * n,
               "hat_score": [0.75] * n, "model_version": [version] * n, "processed_at": [now] * n}
    return pa.Table.from_pydict(columns, schema=results_schema(("hat",)))


def stage(out: str, run: str, partition: str, tables: list[pa.Table]) -> list[str]:
    files = []
    for i, table in enumerate(tables):
        path = Path(staging_uri(out, run, partition)) / f"part-{i}.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, path)
        files.append(str(path))
    return files


def test_promote_switches_partitions_whole_and_readers_see_only_committed_files(tmp_path):
    out = str(tmp_path / "out")
    part = f"{out}/day=1"
    old = ["a", "b", "c"]
    promote(part, stage(out, "run1", "day=1", [results_rows(old[:2], "v1"), results_rows(old[2:], "v1")]),
            {"model_version": "v1"}, run_id="run1")
    assert read_success(part)["files"] == ["part-run1-00000.parquet", "part-run1-00001.parquet"]
    assert sorted(load_results(out)["crop_id"]) == old

    # A later run's files moved in but not yet committed: readers still see the old results only.
    new = ["a", "b", "c", "d"]
    staged = stage(out, "run2", "day=1", [results_rows(new, "v2")])
    os.replace(staged[0], f"{part}/part-run2-00000.parquet")
    frame = load_results(out)
    assert sorted(frame["crop_id"]) == old and set(frame["model_version"]) == {"v1"}

    # The next run cleans that leftover, then commits its own files.
    assert clean_partition(part) == 1
    promote(part, stage(out, "run3", "day=1", [results_rows(new, "v2")]), {"model_version": "v2"}, run_id="run3")
    frame = load_results(out)
    assert sorted(frame["crop_id"]) == new and set(frame["model_version"]) == {"v2"}
    # The superseded files stay one generation, for readers of the old marker; the next run's
    # clean-up deletes them.
    assert sorted(os.listdir(part)) == [SUCCESS_MARKER, "part-run1-00000.parquet", "part-run1-00001.parquet",
                                        "part-run3-00000.parquet"]
    assert clean_partition(part) == 2
    assert sorted(os.listdir(part)) == [SUCCESS_MARKER, "part-run3-00000.parquet"]
    assert json.loads(Path(part, SUCCESS_MARKER).read_text())["model_version"] == "v2"

    # Staging is not results: readers skip it, and a run removes what others left there.
    stage(out, "run4", "day=2", [results_rows(["x"], "v2")])
    assert sorted(load_results(out)["crop_id"]) == new
    clean_staging(out, keep="run5")
    assert not Path(out, STAGING_DIR, "run4").exists()


def test_partitions_written_before_file_lists_still_read_whole(tmp_path):
    part = tmp_path / "out" / "day=1"
    part.mkdir(parents=True)
    pq.write_table(results_rows(["a", "b"], "v0"), part / "part-00000.parquet")
    (part / SUCCESS_MARKER).write_text(json.dumps({"model_version": "v0", "rows": 2}))
    assert clean_partition(str(part)) == 0  # no list: every data file is the committed result
    assert sorted(load_results(str(tmp_path / "out"))["crop_id"]) == ["a", "b"]
    promote(str(part), stage(str(tmp_path / "out"), "r", "day=1", [results_rows(["a", "b"], "v1")]),
            {"model_version": "v1"}, run_id="r")
    assert clean_partition(str(part)) == 1  # the next run: the old layout's file was superseded
    assert sorted(os.listdir(part)) == [SUCCESS_MARKER, "part-r-00000.parquet"]


@pytest.mark.parametrize("where", ["local", "s3"])
def test_readers_during_repeated_commits_see_one_whole_generation(tmp_path, where, request):
    """Runs commit a partition again and again (each run cleaning up first, as `run_extract`
    does) while a reader loops: every read gives one generation's rows, whole, and never fails,
    also through a dataset handed on (to DuckDB) and scanned after the next switch."""
    if where == "s3":
        storage = request.getfixturevalue("storage")
        out = f"s3://{request.getfixturevalue('s3_bucket')}/out"
    else:
        storage, out = StorageConfig(), str(tmp_path / "out")
    part, ids = f"{out}/day=1", [f"c{i}" for i in range(30)]

    def commit(generation: int) -> None:
        run = f"run{generation:03d}"
        clean_partition(part, storage)
        staged = []
        for i in range(3):  # three files: a reader mixing generations would see it
            sink = pa.BufferOutputStream()
            pq.write_table(results_rows(ids[i::3], f"v{generation}"), sink)
            staged.append(f"{staging_uri(out, run, 'day=1')}/part-{i}.parquet")
            write_bytes(staged[-1], sink.getvalue().to_pybytes(), storage)
        promote(part, staged, {"model_version": f"v{generation}"}, run_id=run, storage=storage)

    commit(0)
    done, seen, failures = threading.Event(), [], []

    def read_in_a_loop() -> None:
        while not done.is_set():
            try:
                frame = load_results(out, storage=storage, columns=["crop_id", "model_version"])
                seen.append((sorted(frame["crop_id"]), set(frame["model_version"])))
                dataset = results_dataset(out, storage=storage)  # what DuckDB is handed: read a moment later
                seen.append((sorted(dataset.to_table(columns=["crop_id"])["crop_id"].to_pylist()),
                             set(dataset.to_table(columns=["model_version"])["model_version"].to_pylist())))
            except Exception as exc:  # noqa: BLE001 (any failure is what the test looks for)
                failures.append(repr(exc))

    reader = threading.Thread(target=read_in_a_loop)
    reader.start()
    try:
        for generation in range(1, 11):
            commit(generation)
            time.sleep(0.2)  # a run's other work: a read takes less than that here
    finally:
        done.set()
        reader.join()
    assert failures == []
    assert len(seen) > 10  # the reads really overlapped the commits
    assert [s for s in seen if not (s[0] == sorted(ids) and len(s[1]) == 1)] == []
    assert len({v for _, versions in seen for v in versions}) > 1


def test_a_reader_whose_files_went_away_reads_the_markers_again(tmp_path, monkeypatch):
    """A reader that read a marker before the previous switch finds its files deleted by a run
    started since: it starts again from the markers and gets the new generation whole."""
    import attrgan.results as results

    out = str(tmp_path / "out")
    promote(f"{out}/day=1", stage(out, "r1", "day=1", [results_rows(["a", "b"], "v1")]), {"model_version": "v1"},
            run_id="r1")
    listed, calls = results._data_files, []

    def stale_then_fresh(fs, partitions):
        calls.append(1)
        if len(calls) == 1:  # the first attempt read the marker, then two runs came by
            files = listed(fs, partitions)
            promote(f"{out}/day=1", stage(out, "r2", "day=1", [results_rows(["a", "b", "c"], "v2")]),
                    {"model_version": "v2"}, run_id="r2")
            clean_partition(f"{out}/day=1")
            return files
        return listed(fs, partitions)

    monkeypatch.setattr(results, "_data_files", stale_then_fresh)
    frame = load_results(out)
    assert len(calls) == 2 and sorted(frame["crop_id"]) == ["a", "b", "c"] and set(frame["model_version"]) == {"v2"}


# ---------------------------------------------------------------------------------------------
# the driver killed with SIGKILL at each step of the commit


DRIVER = textwrap.dedent("""
    import logging, sys
    import ray
    from attrgan.config import StorageConfig
    from attrgan.extract import ExtractConfig, run_extract
    from attrgan.pipeline import PipelineConfig

    logging.basicConfig(level=logging.WARNING)
    ray.init(address=sys.argv[1], log_to_driver=False)
    # break_lease: the run before was killed, and a killed run's lease stays for its TTL.
    run_extract(ExtractConfig(manifest=sys.argv[2], bundle=sys.argv[3], out=sys.argv[4], actors=1, batch_size=8,
                              incremental=False, pipeline=PipelineConfig(device="cpu"), storage=StorageConfig(),
                              break_lease=True))
""")


@pytest.fixture(scope="module")
def local_scene(tmp_path_factory):
    """A bundle and a 2-partition local manifest of 6 crops (one missing image)."""
    import numpy as np
    import pandas as pd
    from PIL import Image

    from attrgan.bundle import save_bundle
    from attrgan.data.manifest import write_manifest
    from helpers import tiny_bundle

    root = tmp_path_factory.mktemp("scene")
    save_bundle(str(root / "bundle"), tiny_bundle())
    rows = []
    for day in ("2026-11-24", "2026-11-25"):
        for k in range(3):
            name = f"{day}-{k}.png"
            pixels = np.random.default_rng(k).integers(0, 256, (80, 32, 3), dtype=np.uint8)
            if k < 2:
                Image.fromarray(pixels).save(root / name)
            rows.append({"crop_id": f"{day}-{k}", "image_uri": str(root / name), "date": day})
    write_manifest(pd.DataFrame(rows), str(root / "manifest"), partition_cols=["date"])
    return root


@pytest.mark.ray
@pytest.mark.slow
def test_a_driver_killed_at_each_commit_step_leaves_whole_results(ray_local, local_scene, tmp_path):
    from attrgan.extract import ExtractConfig, run_extract
    from attrgan.faults import COMMIT_STEP_ENV as COMMIT_FAULT_ENV
    from attrgan.pipeline import PipelineConfig

    out = str(tmp_path / "results")
    config = ExtractConfig(manifest=str(local_scene / "manifest"), bundle=str(local_scene / "bundle"), out=out,
                           actors=1, batch_size=8, incremental=False, pipeline=PipelineConfig(device="cpu"))
    partitions = [p.partition for p in run_extract(config).processed]
    assert partitions == ["date=2026-11-25", "date=2026-11-24"]  # newest first
    expected = sorted(f"{d}-{k}" for d in ("2026-11-24", "2026-11-25") for k in range(3))
    address = ray_local.get_runtime_context().gcs_address

    for step in ("staged", "promoting", "before_success", "after_success"):
        before = {p: read_success(f"{out}/{p}")["run"] for p in partitions}
        env = {**os.environ, COMMIT_FAULT_ENV: step, "PYTHONPATH": str(Path(__file__).parents[1])}
        killed = subprocess.run([sys.executable, "-c", DRIVER, address, str(local_scene / "manifest"),
                                 str(local_scene / "bundle"), out], env=env, capture_output=True, timeout=300)
        assert killed.returncode == -9, (step, killed.stderr.decode()[-2000:])
        assert os.path.exists(f"{out}/_lease.json")  # a killed run leaves its lease (taken over after its TTL)
        # Every partition holds its complete old results or its complete new ones.
        frame = load_results(out)
        assert sorted(frame["crop_id"]) == expected and frame["crop_id"].is_unique, step
        for p in partitions:  # ... and the track table committed with them
            assert pc.sum(committed_tracks(f"{out}/{p}")["crops"]).as_py() == 3, (step, p)
        replaced = [p for p in partitions if read_success(f"{out}/{p}")["run"] != before[p]]
        # The newest partition is promoted first: only a kill after its _SUCCESS switched it.
        assert replaced == (["date=2026-11-25"] if step == "after_success" else []), step

    # An incremental run has nothing to score, yet cleans what the last kill left beside the
    # committed files; a full rerun redoes everything.
    assert run_extract(dataclasses.replace(config, incremental=True, break_lease=True)).skipped == tuple(partitions)
    for partition in partitions:
        marker = read_success(f"{out}/{partition}")
        assert sorted(os.listdir(f"{out}/{partition}")) == sorted([SUCCESS_MARKER, TRACKS_DIR, *marker["files"]])
        assert [f"{TRACKS_DIR}/{f}" for f in os.listdir(f"{out}/{partition}/{TRACKS_DIR}")] == marker["track_files"]
    superseded = {p: read_success(f"{out}/{p}")["files"] for p in partitions}
    again = run_extract(config)
    assert [p.partition for p in again.processed] == partitions and again.errors == {"missing object": 2}
    assert sorted(load_results(out)["crop_id"]) == expected
    assert not list_dir(f"{out}/{STAGING_DIR}")
    for partition in partitions:  # the superseded generation stays until the next run starts
        listed = read_success(f"{out}/{partition}")["files"]
        assert sorted(os.listdir(f"{out}/{partition}")) == sorted([SUCCESS_MARKER, TRACKS_DIR, *listed,
                                                                   *superseded[partition]])
        assert pc.sum(committed_tracks(f"{out}/{partition}")["crops"]).as_py() == 3


def committed_tracks(partition: str) -> pa.Table:
    """The track table a partition's `_SUCCESS` lists, checked against the row count it states."""
    marker = read_success(partition)
    table = pa.concat_tables([pq.read_table(f"{partition}/{f}") for f in marker["track_files"]])
    assert table.num_rows == marker["tracks"]["rows"]
    return table


def test_readers_never_guess_a_partitions_files(tmp_path):
    out = tmp_path / "out"
    part = out / "day=1"
    promote(str(part), stage(str(out), "r1", "day=1", [results_rows(["a", "b"], "v1")]), {"model_version": "v1"},
            run_id="r1")
    pq.write_table(results_rows(["a", "b"], "v2"), part / "part-r2-00000.parquet")  # moved in, not committed
    (part / SUCCESS_MARKER).write_text("{not json")  # a broken marker is no commit
    assert load_results(str(out)).empty
    (part / SUCCESS_MARKER).write_text("")  # an empty marker (other writers): every data file
    assert sorted(load_results(str(out))["model_version"]) == ["v1", "v1", "v2", "v2"]


def test_write_decode_and_check_tasks_start_without_torch(tmp_path):
    # A Ray worker imports the modules of what it runs: the datasink (pickled into every write
    # task), the decode and check tasks must not bring in torch and the models (~3.5 s per fresh
    # worker); nor may the torch-free layer they stand on (DESIGN.md's module map).
    from ray import cloudpickle

    from attrgan.config import StorageConfig
    from attrgan.ray_scoring import decode_rows
    from attrgan.fusion import Fusion
    from attrgan.sink import CommitGroup, ResultsSink, TrackPlan, check_ids, check_staged

    sink = ResultsSink(out=str(tmp_path), storage=StorageConfig(), rows_per_file=10,
                       group=CommitGroup(("date=2026-11-25",), (3,)), run_id="r1", schema=results_schema(["hat"]),
                       marker={"model_version": "v1", "pipeline": {"device": "cpu"}}, start=0.0,
                       tracks=TrackPlan(("hat",), {"hat": 0.5}, Fusion(), 0.5))
    payload = cloudpickle.dumps((sink, check_ids._function, check_staged._function,
                                 decode_rows))
    layer = ["attrgan.contracts", "attrgan.results", "attrgan.fusion", "attrgan.data.images", "attrgan.data.manifest"]
    load = ("import importlib, pickle, sys; pickle.loads(sys.stdin.buffer.read()); "
            f"[importlib.import_module(m) for m in {layer}]; "
            "print(sorted({'torch', 'attrgan.extract'} & set(sys.modules)))")
    proc = subprocess.run([sys.executable, "-c", load], input=payload, capture_output=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])})
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    assert proc.stdout.decode().strip() == "[]"


# ---------------------------------------------------------------------------------------------
# crops that fail for a transient reason run after run


def test_the_decode_step_gives_up_on_a_crop_only_at_its_last_allowed_run():
    from attrgan.contracts import TransientHistory
    from attrgan.ray_scoring import give_up

    history = TransientHistory(max_runs=3, runs={0: {"a": 2, "b": 1}, 1: {"a": 1}})
    errors = ["transient: timeout", "transient: timeout", "transient: 503", "missing object: x", None]
    out = give_up(errors, ["a", "b", "a", "a", "a"], [0, 0, 1, 0, 0], history)
    assert out[0] == "gave up: its image read failed for a transient reason in 3 runs in a row (transient: timeout)"
    assert list(out[1:]) == errors[1:]  # a second run in a row, the other partition's 'a', other kinds, ok rows
    assert give_up(["transient: x"], ["new"], [0], TransientHistory(max_runs=1, runs={}))[0].startswith("gave up:")


def test_the_transient_record_counts_runs_in_a_row(tmp_path):
    from attrgan.contracts import TRANSIENT_RECORD
    from attrgan.results import MAX_TRACKED_CROPS, forget_transient, read_transient, write_transient

    part = str(tmp_path / "out" / "day=1")
    assert read_transient(part) == {}
    assert write_transient(part, ["a", "b", "a"], {}, run_id="r1") == {"a": 1, "b": 1}
    # 'b' read fine this time: it drops out; 'a' failed again; 'c' is new.
    assert write_transient(part, ["a", "c"], read_transient(part), run_id="r2") == {"a": 2, "c": 1}
    assert read_transient(part) == {"a": 2, "c": 1}
    assert len(write_transient(part, (f"x{i}" for i in range(MAX_TRACKED_CROPS + 5)), {}, run_id="r3")) \
        == MAX_TRACKED_CROPS  # an outage, not poison: the record stays bounded
    Path(part, TRANSIENT_RECORD).write_text('{"runs": {"a": "many", "b": 2, "c": -1}}')
    assert read_transient(part) == {"b": 2}  # what this code did not write counts for nothing
    Path(part, TRANSIENT_RECORD).write_text("{not json")
    assert read_transient(part) == {}
    forget_transient(part)
    forget_transient(part)  # twice: gone is gone
    assert not Path(part, TRANSIENT_RECORD).exists()
    assert load_results(str(tmp_path / "out")).empty  # a record is no commit, and readers skip it


@pytest.mark.ray
def test_a_failed_track_table_holds_its_partition_back_and_its_previous_crops_and_tracks_stay(ray_local, tmp_path):
    from attrgan.config import StorageConfig
    from attrgan.fusion import Fusion
    from attrgan.sink import CommitGroup, ResultsSink, TrackPlan

    out = str(tmp_path / "out")

    def commit(run: str, person_attributes: tuple[str, ...]) -> ResultsSink:
        sink = ResultsSink(out=out, storage=StorageConfig(), rows_per_file=10, group=CommitGroup(("day=1",), (2,)),
                           run_id=run, schema=results_schema(("hat",)), marker={"model_version": run}, start=0.0,
                           tracks=TrackPlan(person_attributes, {"hat": 0.5}, Fusion(), 0.5))
        files = stage(out, run, "day=1", [results_rows(["a", "b"], run)])
        sink.commit([{"partition": 0, "file": f, "rows": 2, "errors": {}, "transient_ids": [], "super_resolved": 0,
                      "reconstructed": 0, "node": "n", "precision": ["fp32"]} for f in files])
        return sink

    assert [s.tracks for s in commit("r1", ("hat",)).committed] == [2]  # two crops without a track: two tracks
    failed = commit("r2", ("hat", "no_such_attribute"))  # its track task cannot read the column
    assert failed.committed == [] and "building its track table failed" in failed.incomplete[0][1]
    assert read_success(f"{out}/day=1")["model_version"] == "r1"
    assert sorted(load_results(out)["crop_id"]) == ["a", "b"]
    assert sorted(committed_tracks(f"{out}/day=1")["best_crop_id"].to_pylist()) == ["a", "b"]

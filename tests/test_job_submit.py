"""The product for real: a local Ray head, `ray job submit` of the training and extraction jobs
against the local S3 server, then the results read back with attrgan.results / pandas."""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd
import pytest
import torch

pytestmark = [pytest.mark.ray, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[1]
RAY = str(Path(sys.executable).parent / "ray")
# The working dir is uploaded to the cluster; the venv and caches must not be.
EXCLUDES = [".venv", ".git", "**/__pycache__", "*.egg-info", ".pytest_cache"]
TINY_TRAIN = ["--preset", "cpu-small", "--workers", "1", "--epochs", "1",
              "--set", "max_steps_per_epoch=2", "--set", "batch_size=8", "--set", "cpus_per_worker=0.5"]


def load_local():
    spec = importlib.util.spec_from_file_location("attrgan_cluster_local", ROOT / "cluster" / "local.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def head():
    """A `ray start --head` on 127.0.0.1 with free ports, 4 CPUs and its own temp dir; always stopped."""
    local = load_local()
    # Short path: Ray's Unix sockets live under it (107-byte limit).
    temp_dir = tempfile.mkdtemp(prefix="agr", dir="/tmp")
    try:
        state = local.start(num_cpus=4, port=0, dashboard_port=0, temp_dir=temp_dir, auth="disabled",
                            object_store=512 * 1024**2, timeout_s=120)
        yield local, state
    finally:
        # Ends this head's processes only (not `ray stop --force`, which kills every Ray of the user).
        local.stop(temp_dir=temp_dir, grace_s=2)  # a test head: no need to wait for a clean exit
        shutil.rmtree(temp_dir, ignore_errors=True)


# An error-level line of Python logging or of Ray (its C++ lines: "[time E pid tid]"), or a traceback.
ERROR_LINE = re.compile(r"\bERROR\b|\[[^\]]* E \d+ \d+\]|Traceback")


def submit(local, state: dict, s3_endpoint: str, *entrypoint: str, timeout: float = 600) -> str:
    """`ray job submit ... -- python <entrypoint>`; returns its output, fails the test on failure."""
    # Only the endpoint travels in the runtime env; the (test) credentials reach the job through
    # the head's environment, the way an instance role or a Secret would.
    runtime_env = {"env_vars": {"ATTRGAN_S3_ENDPOINT_URL": s3_endpoint, "AWS_REGION": "us-east-1"},
                   "excludes": EXCLUDES}
    cmd = [RAY, "job", "submit", "--address", state["dashboard_url"], "--working-dir", str(ROOT),
           "--runtime-env-json", json.dumps(runtime_env), "--", "python", *entrypoint]
    proc = subprocess.run(cmd, cwd=ROOT, env=local.ray_env("disabled"), capture_output=True, text=True,
                          timeout=timeout)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0 and "succeeded" in out.lower(), f"job failed:\n{out[-6000:]}"
    assert "testing" not in " ".join(cmd)  # no credentials on the command line
    return out


def test_train_then_extract_then_query(head, s3_endpoint, s3_bucket, storage):
    from attrgan.bundle import save_network
    from attrgan.data.storage import read_bytes
    from attrgan.data.manifest import read_manifest
    from attrgan.models import ReconstructionConfig, ReconstructionGenerator, SuperResConfig, SuperResGenerator
    from attrgan.data.synth import generate
    from attrgan.results import load_results

    local, state = head
    manifest = generate(f"s3://{s3_bucket}/synth", 48, seed=1, storage=storage, workers=1, cameras=2)
    bundle = f"s3://{s3_bucket}/models/v1"
    out = f"s3://{s3_bucket}/attributes"

    # One training job shows the submission path (the GAN jobs differ only in the model trained,
    # tests/test_train_ray.py); the generators are written untrained, straight into the bundle.
    log = submit(local, state, s3_endpoint, "jobs/train.py", "--model", "classifier", "--manifest", manifest,
                 "--bundle", bundle, *TINY_TRAIN)
    assert "classifier: trained" in log
    # Ray Train's placement-group cleaner reached this head's state API (cluster/local.py start):
    # neither it nor the controller logged waiting for it, anywhere in the head's logs.
    logs = "".join(f.read_text(errors="replace") for f in Path(state["temp_dir"]).glob("session_latest/logs/**/*")
                   if f.is_file())
    assert "Monitor thread did not exit" not in logs and "Failed to stop PlacementGroupCleaner" not in logs
    torch.manual_seed(0)
    save_network(f"{bundle}/superres", SuperResGenerator(SuperResConfig(width=1 / 64)), storage=storage)
    save_network(f"{bundle}/reconstruction", ReconstructionGenerator(ReconstructionConfig(width=1 / 32)), storage=storage)
    log = submit(local, state, s3_endpoint, "jobs/extract.py", "--manifest", manifest, "--bundle", bundle,
                 "--out", out, "--actors", "1", "--batch-size", "16", "--set", "progress_interval_s=0.5",
                 "--summary-json", f"s3://{s3_bucket}/night.json")
    # What an operator reads: progress, a line per committed partition, and no error-level line.
    assert not [line for line in log.splitlines() if ERROR_LINE.search(line)], log
    assert "will not allow it to scale up" not in log
    assert "extract: progress " in log and "extract: committed " in log
    summary = json.loads(read_bytes(f"s3://{s3_bucket}/night.json", storage))
    assert sum(p["rows"] for p in summary["partitions"]) == 48 and all(p["errors"] == {} for p in summary["partitions"])
    assert set(summary["restorations"]) == {"superres", "reconstruction"} and summary["seconds"] > 0

    rows = read_manifest(manifest, storage).to_pandas()
    results = load_results(out, storage=storage)
    # Exactly one result per manifest row, every one processed.
    assert sorted(results["crop_id"]) == sorted(rows["crop_id"])
    assert set(results["status"]) <= {"ok", "error"} and (results["status"] == "ok").all()

    # The typical query: one camera, a time window, one attribute — same answer as pandas by hand.
    camera = sorted(rows["camera_id"].unique())[0]
    t = rows["captured_at"].sort_values()
    start, end = t.iloc[len(t) // 4], t.iloc[3 * len(t) // 4]
    got = load_results(out, start=start, end=end, cameras=[camera], attributes=["backpack"], storage=storage)
    everything = results.set_index("crop_id")
    want = everything[(everything["camera_id"] == camera) & (everything["captured_at"] >= start)
                      & (everything["captured_at"] < end)]
    assert len(want) > 0 and sorted(got["crop_id"]) == sorted(want.index)
    pd.testing.assert_series_equal(got.set_index("crop_id")["backpack_score"].sort_index(),
                                   want["backpack_score"].sort_index())

"""The extraction's actor pool on an autoscaling Ray: Ray's fake multi-node provider starts worker
nodes as local raylets when the pool's actors ask for a resource only those nodes offer."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pandas as pd
import pytest

from attrgan.bundle import save_bundle
from attrgan.data.manifest import write_manifest
from attrgan.results import load_results
from helpers import png, tiny_bundle

ROOT = Path(__file__).parents[1]

AUTOSCALE_DRIVER = textwrap.dedent("""
    import dataclasses, json, os, subprocess, sys, time
    import ray
    from ray._private.services import get_node_ip_address
    from attrgan.extract import ExtractConfig, run_extract
    from attrgan.pipeline import PipelineConfig
    from attrgan.ray_scoring import Unschedulable, cluster_offer

    manifest, bundle, out, temp_dir, port, client_port, agent_port = sys.argv[1:8]
    address = f"{get_node_ip_address()}:{port}"
    # Ray's fake multi-node provider (what ray.cluster_utils.AutoscalingCluster starts, without its
    # `ray stop --force`, which would end every Ray on the machine): a head with CPUs only, and a
    # worker type offering a GPU-like custom resource, none of it up at the start.
    worker = {"CPU": 2, "fake_gpu": 1}
    spec = {
        "cluster_name": "fake_multinode", "max_workers": 2, "head_node_type": "ray.head.default",
        "provider": {"type": "fake_multinode", "use_node_id_as_ip": True, "disable_node_updaters": True,
                     "disable_launch_config_check": True, "gcs_address": address},
        "available_node_types": {
            "ray.head.default": {"resources": {"CPU": 2}, "node_config": {}, "max_workers": 0},
            "gpu_group": {"resources": worker, "node_config": {}, "min_workers": 0, "max_workers": 2}},
        "auth": {}, "upscaling_speed": 1.0, "idle_timeout_minutes": 1.0, "docker": {},
        "initialization_commands": [], "setup_commands": [], "head_setup_commands": [],
        "worker_setup_commands": [], "head_start_ray_commands": [], "worker_start_ray_commands": [],
        "file_mounts": {}, "cluster_synced_files": [], "file_mounts_sync_continuously": False,
        "rsync_exclude": [], "rsync_filter": []}
    path = os.path.join(temp_dir, "autoscaling.json")
    with open(path, "w") as f:
        json.dump(spec, f)
    env = {**os.environ, "RAY_FAKE_CLUSTER": "1", "AUTOSCALER_UPDATE_INTERVAL_S": "1"}
    # Every port explicit: other Rays on the machine hold the default ones.
    started = subprocess.run([os.path.join(os.path.dirname(sys.executable), "ray"), "start", "--head", "--port", port,
                              "--ray-client-server-port", client_port, "--dashboard-agent-listen-port", agent_port,
                              f"--autoscaling-config={path}", "--num-cpus=2", "--temp-dir", temp_dir,
                              "--include-dashboard=false", "--disable-usage-stats"], env=env, capture_output=True, text=True)
    if started.returncode:
        sys.exit("ray start failed: " + started.stdout[-2000:] + started.stderr[-2000:])
    ray.init(address=address, log_to_driver=False, runtime_env={"env_vars": {"RAY_AUTH_MODE": "disabled"}})
    while ray._private.state.state._connect_and_get_accessor().get_internal_kv(
            b"", b"__autoscaling_status") is None:  # the monitor's first report
        time.sleep(0.2)
    # The actors decode their own rows: decode tasks would hold the CPUs that Ray Data budgets the
    # pool by, and so tiny a run would end before the pool grew.
    config = ExtractConfig(manifest=manifest, bundle=bundle, out=out, min_actors=1, actors=2, decode_in_actors=True,
                           actor_resources={"fake_gpu": 1}, batch_size=2, rows_per_file=8, incremental=False,
                           pipeline=PipelineConfig(device="cpu"))
    report = {"head": ray.get_runtime_context().get_node_id(), "offer": cluster_offer()[1]}

    # A resource no node type offers, while the node types are unknown to the job: a bounded wait.
    try:
        run_extract(dataclasses.replace(config, actor_resources={"tpu_v9": 1}, actor_start_timeout_s=2))
    except Unschedulable as exc:
        report["unknown"] = str(exc)

    earlier = set(ray._private.state.actors())
    report["rows"] = run_extract(config).rows
    # The GCS's actor table (the state API needs a dashboard): the pool's actors, and the nodes of
    # those that started.
    pool = [a for key, a in ray._private.state.actors().items()
            if key not in earlier and "ScoringActor" in a["ActorClassName"]]
    report["actors"] = len(pool)
    report["actor_nodes"] = [a["Address"]["NodeID"] for a in pool if a["StartTime"] > 0]
    report["worker_nodes"] = [n["NodeID"] for n in ray.nodes() if n["Resources"].get("fake_gpu")]  # dead ones too

    # Once the GCS holds the autoscaler's node types (as an autoscaler that reports them leaves
    # them), the same mistake fails before any task runs.
    from ray.core.generated import autoscaler_pb2
    types = autoscaler_pb2.ClusterConfig()
    for name, resources, most in (("head", {"CPU": 2}, 0), ("gpu_group", worker, 2)):
        group = types.node_group_configs.add(name=name, max_count=most)
        group.resources.update(resources)
    ray._raylet.GcsClient(address=address).report_cluster_config(types.SerializeToString())
    report["known_offer"] = cluster_offer()[1]
    try:
        run_extract(dataclasses.replace(config, actor_resources={"tpu_v9": 1}))
    except Unschedulable as exc:
        report["known"] = str(exc)
    print(json.dumps(report), flush=True)
    os._exit(0)  # the cluster is stopped by the test
""")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stop_cluster(temp_dir: str) -> None:
    """Stop only this test's cluster: its processes name its temp dir or its GCS address."""
    spec = importlib.util.spec_from_file_location("attrgan_cluster_local", ROOT / "cluster" / "local.py")
    local = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(local)
    local.stop(temp_dir=temp_dir, grace_s=5.0)


@pytest.mark.ray
@pytest.mark.slow
def test_pool_of_custom_resource_actors_scales_an_autoscaling_cluster_from_zero_workers(tmp_path):
    save_bundle(str(tmp_path / "bundle"), tiny_bundle())
    rows = []
    for d, day in enumerate(("2026-11-23", "2026-11-24", "2026-11-25")):
        for k in range(24):
            (tmp_path / f"{day}-{k}.png").write_bytes(png(d * 100 + k))
            rows.append({"crop_id": f"{day}-{k}", "image_uri": str(tmp_path / f"{day}-{k}.png"), "date": day})
    write_manifest(pd.DataFrame(rows), str(tmp_path / "manifest"), partition_cols=["date"])
    out = str(tmp_path / "results")
    temp_dir = tempfile.mkdtemp(prefix="ag-as-", dir="/tmp")  # short: Ray's socket paths <= 107 bytes
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RAY_AUTH_MODE": "disabled"}
    try:
        done = subprocess.run([sys.executable, "-c", AUTOSCALE_DRIVER, str(tmp_path / "manifest"),
                               str(tmp_path / "bundle"), out, temp_dir, *(str(_free_port()) for _ in range(3))],
                              env=env, capture_output=True, text=True, timeout=600)
    finally:
        _stop_cluster(temp_dir)
        shutil.rmtree(temp_dir, ignore_errors=True)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])

    # Nothing offered fake_gpu at the start: the autoscaler added the worker nodes, and the actors
    # that started ran there, one per node (one fake_gpu each), never on the head. The pool grew past
    # its one starting actor: Ray Data asked for the second while the first was busy. (Whether the
    # autoscaler starts a node for it before so tiny a run ends depends on the machine's load.)
    assert not any("fake_gpu" in t for t in report["offer"] or [])
    assert report["worker_nodes"] and report["head"] not in report["worker_nodes"]
    assert report["actor_nodes"] and set(report["actor_nodes"]) <= set(report["worker_nodes"])
    assert len(set(report["actor_nodes"])) == len(report["actor_nodes"])
    assert report["actors"] == 2
    assert report["rows"] == len(rows)
    frame = load_results(out)
    assert len(frame) == len(rows) and frame["crop_id"].is_unique and (frame["status"] == "ok").all()
    assert sorted(frame["crop_id"]) == sorted(r["crop_id"] for r in rows)

    # Unschedulable requests name what an actor asks for and what the cluster offers.
    assert report["offer"] is None  # Ray 2.60's v1 autoscaler does not publish its node types
    assert "could start within actor_start_timeout_s=2 s" in report["unknown"]
    assert "{CPU: 1, tpu_v9: 1}" in report["unknown"] and "the cluster has {CPU: " in report["unknown"]
    assert {"CPU": 2.0, "fake_gpu": 1.0} in report["known_offer"]
    assert "asks for, {CPU: 1, tpu_v9: 1}" in report["known"]
    assert "offer {CPU: 2, fake_gpu: 1}, {CPU: 2};" in report["known"]

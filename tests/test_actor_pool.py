"""Sizing the pipeline actor pool from the settings and from what the cluster has or can add
(`attrgan.ray_scoring.plan_actors`, no Ray), and the settings that describe it."""

from __future__ import annotations

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from attrgan.config import ConfigError, load, parse_overrides
from attrgan.extract import ExtractConfig
from attrgan.ray_scoring import Unschedulable, plan_actors

HEAD = {"CPU": 2.0}  # a KubeRay head with a few CPUs and no GPU
GPU_GROUP = {"CPU": 8.0, "GPU": 1.0, "nvidia_h100": 1.0}


def test_cuda_asks_for_gpu_actors_before_any_gpu_node_is_up():
    # The GPU worker group rests at 0 nodes: the pool still asks for GPUs, up to `actors` of them
    # (not capped by today's none), and decoding stays in CPU tasks.
    plan = plan_actors(cluster_cpus=2, cluster_gpus=0, actors=8, min_actors=1, device="cuda", node_types=None)
    assert (plan.actors, plan.min_actors, plan.num_gpus, plan.num_cpus) == (8, 1, 1.0, 1.0)
    assert not plan.decode_in_actors and plan.decode_cpus == 1.0
    assert plan.asks() == {"CPU": 1.0, "GPU": 1.0}
    # A head with no CPUs at all (num-cpus: 0) is no reason to refuse: the workers bring CPUs.
    assert plan_actors(cluster_cpus=0, cluster_gpus=0, actors=4, device="cuda").actors == 4
    # With GPUs up now the pool is not capped by them either.
    assert plan_actors(cluster_cpus=16, cluster_gpus=1, actors=4, device="cuda").actors == 4


def test_auto_uses_the_gpus_up_now_or_those_the_autoscaler_offers():
    # GPUs now: today's plan, the pool capped by them and the CPU shares sized by the cluster's.
    plan = plan_actors(cluster_cpus=16, cluster_gpus=2, actors=4, min_actors=3)
    assert (plan.actors, plan.min_actors, plan.num_gpus) == (2, 2, 1.0)
    # No GPU now, a node type with one: GPU actors, the pool's range as configured.
    plan = plan_actors(cluster_cpus=2, cluster_gpus=0, actors=4, node_types=[HEAD, GPU_GROUP])
    assert (plan.actors, plan.num_gpus, plan.decode_in_actors) == (4, 1.0, False)
    # No GPU anywhere (or not known): CPU actors on today's CPUs, decoding in the actors.
    for node_types in ([HEAD], None):
        plan = plan_actors(cluster_cpus=4, cluster_gpus=0, actors=2, node_types=node_types)
        assert (plan.num_gpus, plan.decode_in_actors, plan.actors) == (0.0, True, 2)
    # device "cpu" or gpus_per_actor 0 never hold a GPU, whatever the cluster has.
    assert plan_actors(cluster_cpus=4, cluster_gpus=2, actors=2, device="cpu").num_gpus == 0.0
    assert plan_actors(cluster_cpus=4, cluster_gpus=0, actors=2, gpus_per_actor=0, device="cuda").num_gpus == 0.0


def test_custom_resources_go_to_the_actors_and_decoding_to_cpu_tasks():
    plan = plan_actors(cluster_cpus=1, cluster_gpus=0, actors=2, device="cpu", actor_resources={"fake_gpu": 1},
                       node_types=None)
    assert (plan.actors, plan.num_cpus, plan.num_gpus, dict(plan.resources)) == (2, 1.0, 0.0, {"fake_gpu": 1.0})
    assert not plan.decode_in_actors and plan.asks() == {"CPU": 1.0, "fake_gpu": 1.0}
    plan = plan_actors(cluster_cpus=2, cluster_gpus=0, actors=8, cpus_per_actor=4, device="cuda",
                       actor_resources={"nvidia_h100": 1}, node_types=[HEAD, GPU_GROUP])
    assert plan.asks() == {"CPU": 4.0, "GPU": 1.0, "nvidia_h100": 1.0} and plan.torch_threads == 4
    assert plan_actors(cluster_cpus=4, cluster_gpus=0, actors=2, actor_resources={"x": 0}).resources == {}


def test_a_request_no_node_type_offers_fails_naming_both_sides():
    with pytest.raises(Unschedulable) as info:
        plan_actors(cluster_cpus=2, cluster_gpus=0, actors=2, device="cuda", actor_resources={"nvidia_h100": 1},
                    node_types=[HEAD, {"CPU": 8.0, "GPU": 1.0, "nvidia_a10g": 1.0}])
    assert "{CPU: 1, GPU: 1, nvidia_h100: 1}" in str(info.value)
    assert "{CPU: 2}, {CPU: 8, GPU: 1, nvidia_a10g: 1}" in str(info.value)
    with pytest.raises(Unschedulable, match="CPU: 16"):  # one node must hold all of an actor's share
        plan_actors(cluster_cpus=2, cluster_gpus=0, actors=1, cpus_per_actor=16, device="cuda",
                    node_types=[HEAD, GPU_GROUP])
    # Node types not known: the run waits for the autoscaler instead (`actor_start_timeout_s`).
    assert plan_actors(cluster_cpus=2, cluster_gpus=0, actors=1, actor_resources={"tpu": 1}, node_types=None)


amounts = st.sampled_from([0.0, 0.5, 1.0, 2.0, 8.0])
node_type = st.fixed_dictionaries({"CPU": amounts, "GPU": amounts, "fake_gpu": amounts})


@settings(max_examples=150, deadline=None)
@given(node_types=st.lists(node_type, max_size=4), cpus=st.sampled_from([0.5, 1.0, 4.0]),
       gpus=st.sampled_from([0.0, 0.5, 1.0]), custom=st.sampled_from([0.0, 1.0]))
def test_refused_exactly_when_no_node_type_holds_one_actor(node_types, cpus, gpus, custom):
    # Actors that ask for a GPU or a custom resource (CPU-only actors are sized by today's CPUs).
    assume(gpus or custom)
    asks = {k: v for k, v in {"CPU": cpus, "GPU": gpus, "fake_gpu": custom}.items() if v > 0}
    fits = any(all(t[k] >= v for k, v in asks.items()) for t in node_types)
    try:
        plan = plan_actors(cluster_cpus=2, cluster_gpus=0, actors=3, cpus_per_actor=cpus, gpus_per_actor=gpus,
                           device="cuda", actor_resources={"fake_gpu": custom}, node_types=node_types)
    except Unschedulable:
        assert not fits
    else:
        assert fits and plan.asks() == asks and plan.actors == 3


def test_actor_resources_setting(tmp_path):
    config = ExtractConfig(manifest="m", bundle="b", out="o", actor_resources={"nvidia_h100": 1})
    assert config.actor_resources == {"nvidia_h100": 1.0} and config.actor_start_timeout_s == 1800
    path = tmp_path / "extract.yaml"
    path.write_text("manifest: m\nbundle: b\nout: o\nactor_resources:\n  nvidia_h100: 1\n")
    overrides = parse_overrides(["actor_resources.fake_gpu=0.5", "actor_start_timeout_s=60"])
    config = load(ExtractConfig, path, overrides)
    assert config.actor_resources == {"nvidia_h100": 1.0, "fake_gpu": 0.5} and config.actor_start_timeout_s == 60
    for bad, problem in (({"GPU": 1}, "gpus_per_actor"), ({"": 1}, "not a custom resource"),
                         ({"x": -1}, ">= 0"), ({"x": True}, ">= 0"), ({"x": "one"}, ">= 0"), ([1], "mapping")):
        with pytest.raises(ValueError, match=problem):
            ExtractConfig(manifest="m", bundle="b", out="o", actor_resources=bad)
    with pytest.raises(ValueError, match="actor_start_timeout_s"):
        ExtractConfig(manifest="m", bundle="b", out="o", actor_start_timeout_s=-1)
    with pytest.raises(ConfigError):
        load(ExtractConfig, path, parse_overrides(["actor_start_timeout_s=soon"]))


@pytest.mark.parametrize("name", ["rayjob-extract.yaml", "raycronjob-extract.yaml"])
def test_kuberay_extraction_scales_its_gpu_group_from_zero_for_the_actors(name, monkeypatch):
    import json
    import shlex
    from pathlib import Path

    import yaml

    from attrgan.cli import extract_config, extract_parser

    doc = yaml.safe_load((Path(__file__).parents[1] / "cluster" / "kuberay" / name).read_text())
    job = doc["spec"] if doc["kind"] == "RayJob" else doc["spec"]["jobTemplate"]
    cluster = job["rayClusterSpec"]
    assert cluster["enableInTreeAutoscaling"] and cluster["autoscalerOptions"]["idleTimeoutSeconds"] > 0
    (group,) = cluster["workerGroupSpecs"]
    assert group["minReplicas"] == 0 and group["replicas"] == 0
    # rayStartParams.resources is a quoted JSON object (KubeRay hands it to `ray start --resources`).
    offered = json.loads(json.loads(group["rayStartParams"]["resources"]))
    for key in ("AWS_ENDPOINT_URL", "ATTRGAN_S3_ENDPOINT_URL"):
        monkeypatch.delenv(key, raising=False)
    config = extract_config(extract_parser().parse_args(shlex.split(job["entrypoint"])[2:]))  # attrgan extract ...
    assert config.pipeline.device == "cuda" and config.actor_resources
    assert all(offered.get(k, 0) >= v for k, v in config.actor_resources.items())
    assert group["maxReplicas"] >= config.actors  # one GPU and one attrgan_gpu per pod

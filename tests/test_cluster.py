"""Cluster configs: local head script, Ray cluster-launcher YAML (Ray's own schema), KubeRay manifests."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shlex
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

import ray

ROOT = Path(__file__).resolve().parents[1]
CLUSTER = ROOT / "cluster"
KUBERAY = CLUSTER / "kuberay"
GIB = 1024**3


def load_module(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def local():
    return load_module(CLUSTER / "local.py", "attrgan_cluster_local")


# --- cluster/local.py ---------------------------------------------------------------------------

def test_object_store_sizing(local):
    # 25 % of 16 GiB = 4 GiB, under the 8 GiB cap and 90 % of an 8 GiB /dev/shm.
    assert local.object_store_bytes(total_memory=16 * GIB, shm_bytes=8 * GIB) == 4 * GIB
    # 25 % of 128 GiB = 32 GiB, capped at 8 GiB.
    assert local.object_store_bytes(total_memory=128 * GIB, shm_bytes=64 * GIB) == 8 * GIB
    # A 2 GiB /dev/shm (docker --shm-size=2g) limits it to 0.9 × 2 GiB.
    assert local.object_store_bytes(total_memory=16 * GIB, shm_bytes=2 * GIB) == int(0.9 * 2 * GIB)
    assert local.object_store_bytes(total_memory=16 * GIB, shm_bytes=None, fraction=0.1, cap=GIB) == GIB
    with pytest.raises(ValueError, match="under Ray's minimum"):
        local.object_store_bytes(total_memory=GIB, shm_bytes=64 * 1024**2)
    with pytest.raises(ValueError, match="fraction must be in"):
        local.object_store_bytes(total_memory=GIB, shm_bytes=None, fraction=0.0)


def test_start_command_and_environment(local):
    cmd = local.start_command(port=7000, dashboard_port=7001, client_port=7002, agent_port=7003,
                              num_cpus=4, object_store=GIB, temp_dir="/tmp/x")
    assert cmd[:3] == [str(Path(sys.executable).parent / "ray"), "start", "--head"]
    pairs = {cmd[i]: cmd[i + 1] for i in range(3, len(cmd) - 1) if cmd[i].startswith("--") and not cmd[i + 1].startswith("--")}
    assert pairs["--node-ip-address"] == "127.0.0.1" and pairs["--dashboard-host"] == "127.0.0.1"
    assert pairs["--port"] == "7000" and pairs["--dashboard-port"] == "7001"
    assert pairs["--ray-client-server-port"] == "7002" and pairs["--dashboard-agent-listen-port"] == "7003"
    assert pairs["--include-dashboard"] == "true" and pairs["--num-cpus"] == "4"
    assert pairs["--object-store-memory"] == str(GIB) and pairs["--temp-dir"] == "/tmp/x"
    assert "--disable-usage-stats" in cmd
    with pytest.raises(ValueError, match="num_cpus must be >= 1"):
        local.start_command(port=1, dashboard_port=2, client_port=3, agent_port=4, num_cpus=0,
                            object_store=GIB, temp_dir="/tmp/x")

    env = local.ray_env("disabled", {"PATH": "/usr/bin", "HOME": "/h"})
    assert env["RAY_AUTH_MODE"] == "disabled" and env["HOME"] == "/h"
    assert env["PATH"] == f"{Path(sys.executable).parent}{os.pathsep}/usr/bin"
    assert local.ray_env("token", env)["PATH"] == env["PATH"]  # not prepended twice
    with pytest.raises(ValueError, match="auth must be one of"):
        local.ray_env("none", {})
    hint = local.submit_hint(dashboard_port=8265, auth="disabled")
    assert hint.startswith("RAY_AUTH_MODE=disabled ray job submit --address http://127.0.0.1:8265 --working-dir .")
    assert '".venv"' in hint


def test_stop_targets_only_this_cluster(local):
    table = [
        (100, 1, "/venv/ray/core/src/ray/gcs/gcs_server --log_dir=/tmp/rh1/session_x/logs"),
        (101, 1, "/venv/python -m ray.util.client.server --address=10.0.0.5:6390 --port=7002"),
        (102, 1, "/venv/ray/raylet --raylet_socket_name=/tmp/rh1/session_x/sockets/raylet"),
        (103, 102, "ray::DashboardAgent"),  # child of our raylet
        (104, 103, "ray::IDLE"),  # grandchild
        (200, 1, "/venv/ray/raylet --raylet_socket_name=/tmp/rh10/session_y/sockets/raylet"),  # other head
        (201, 200, "ray::DashboardAgent"),
        (202, 1, "/venv/python -m ray.util.client.server --address=10.0.0.5:63900 --port=7009"),
        (300, 1, "vim /tmp/notes"),
    ]
    assert local.cluster_pids("/tmp/rh1", "10.0.0.5:6390", table) == [100, 101, 102, 103, 104]
    assert local.cluster_pids("/tmp/rh1/", None, table) == [100, 102, 103, 104]


def test_local_cli_parser(local):
    args = local.build_parser().parse_args(["start", "--num-cpus", "2", "--port", "0", "--auth", "token"])
    assert (args.command, args.num_cpus, args.port, args.dashboard_port, args.auth) == ("start", 2, 0, 8265, "token")
    with pytest.raises(SystemExit):
        local.build_parser().parse_args(["start", "--auth", "off"])
    with pytest.raises(FileNotFoundError, match="no local Ray head recorded"):
        local.read_state("/nonexistent/attrgan-ray")


# --- cluster/aws-gpu.yaml -----------------------------------------------------------------------

@pytest.fixture(scope="module")
def aws():
    return yaml.safe_load((CLUSTER / "aws-gpu.yaml").read_text())


def test_aws_config_validates_against_ray_schema(aws):
    import jsonschema

    schema = json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())
    jsonschema.validate(aws, schema)
    bad = dict(aws, max_wokers=3)  # a typo must be caught: the schema forbids unknown keys
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schema)


def test_aws_config_shape(aws):
    version = ray.__version__
    py = f"py{sys.version_info.major}{sys.version_info.minor}"
    docker = aws["docker"]
    assert docker["head_image"] == f"rayproject/ray:{version}-{py}-cpu"
    assert docker["worker_image"] == f"rayproject/ray:{version}-{py}-gpu"
    assert any(o.startswith("--shm-size=") for o in docker["worker_run_options"])
    assert any(o.startswith("--shm-size=") for o in docker["head_run_options"])
    types = aws["available_node_types"]
    assert aws["head_node_type"] in types and types[aws["head_node_type"]]["resources"] == {"CPU": 0}
    gpu = types["worker.gpu"]
    assert gpu["node_config"]["InstanceType"] == "g5.xlarge" and gpu["resources"]["GPU"] == 1
    assert gpu["min_workers"] == 0 and gpu["max_workers"] <= aws["max_workers"]
    for node in types.values():
        assert node["node_config"]["IamInstanceProfile"]["Arn"].startswith("arn:aws:iam::")
    assert ".venv" in aws["rsync_exclude"] and aws["file_mounts"] == {"/home/ray/attrgan": "."}
    assert any("pip install" in c and "/home/ray/attrgan" in c for c in aws["setup_commands"])
    start = " ".join(aws["head_start_ray_commands"] + aws["worker_start_ray_commands"])
    assert start.count("RAY_AUTH_MODE=token") == 2 and "--dashboard-host=127.0.0.1" in start


def test_no_credentials_in_configs():
    # Access-key ids, secret keys, tokens: credentials come from roles, Secrets or SSM, never files.
    pattern = re.compile(r"AKIA[0-9A-Z]{16}|(SECRET_ACCESS_KEY|SESSION_TOKEN|RAY_AUTH_TOKEN|auth_token)"
                         r"['\"]?\s*[:=]\s*['\"]?[A-Za-z0-9/+_-]{8,}", re.IGNORECASE)
    files = [CLUSTER / "aws-gpu.yaml", *sorted(KUBERAY.glob("*.yaml"))]
    assert len(files) >= 5
    for path in files:
        assert not pattern.search(path.read_text()), path
    assert pattern.search("aws_secret_access_key = wJalrXUtnFEMIK7MDENGbPxRfiCY") and not pattern.search(
        "--from-literal=AWS_SECRET_ACCESS_KEY=...")


# --- cluster/kuberay/ ---------------------------------------------------------------------------

def kuberay_docs() -> list[tuple[str, dict]]:
    return [(p.name, d) for p in sorted(KUBERAY.glob("*.yaml")) for d in yaml.safe_load_all(p.read_text()) if d]


def cluster_specs() -> list[tuple[str, dict]]:
    specs = []
    for name, doc in kuberay_docs():
        if doc["kind"] == "RayCluster":
            specs.append((name, doc["spec"]))
        elif doc["kind"] == "RayJob":
            specs.append((name, doc["spec"]["rayClusterSpec"]))
        elif doc["kind"] == "RayCronJob":
            specs.append((name, doc["spec"]["jobTemplate"]["rayClusterSpec"]))
    return specs


def job_specs() -> list[tuple[str, dict]]:
    out = []
    for name, doc in kuberay_docs():
        if doc["kind"] == "RayJob":
            out.append((name, doc["spec"]))
        elif doc["kind"] == "RayCronJob":
            out.append((name, doc["spec"]["jobTemplate"]))
    return out


def pod_templates(spec: dict) -> list[dict]:
    return [spec["headGroupSpec"]["template"]["spec"]] + [g["template"]["spec"] for g in spec["workerGroupSpecs"]]


def test_kuberay_files_hold_the_expected_objects():
    kinds = sorted((name, doc["kind"]) for name, doc in kuberay_docs())
    assert kinds == [("raycluster.yaml", "RayCluster"), ("raycronjob-extract.yaml", "RayCronJob"),
                     ("rayjob-extract.yaml", "RayJob"), ("rayjob-train.yaml", "RayJob"),
                     ("storage.yaml", "ConfigMap"), ("storage.yaml", "ServiceAccount")]
    assert all(doc["apiVersion"] == "ray.io/v1" for _, doc in kuberay_docs() if doc["kind"].startswith("Ray"))


def test_kuberay_clusters():
    specs = cluster_specs()
    assert len(specs) == 4
    for name, spec in specs:
        assert spec["rayVersion"] == ray.__version__, name
        assert spec["authOptions"] == {"mode": "token"}, name
        assert spec["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0", name
        gpu_containers = 0
        for pod in pod_templates(spec):
            assert pod["serviceAccountName"] == "attrgan-ray", name
            shm = {v["name"]: v for v in pod["volumes"]}["shm"]
            assert shm["emptyDir"]["medium"] == "Memory", name
            for c in pod["containers"]:
                assert c["image"] == cluster_image(), (name, c["image"])
                assert {"name": "shm", "mountPath": "/dev/shm"} in c["volumeMounts"], name
                assert {"configMapRef": {"name": "attrgan-storage"}} in c["envFrom"], name
                # Credentials only through a Secret reference (or IRSA), never inline env values.
                for env in c.get("env", []):
                    assert not re.search("SECRET|ACCESS_KEY|TOKEN", env["name"]) or "valueFrom" in env, name
                res = c["resources"]
                if "nvidia.com/gpu" in res.get("limits", {}) or "nvidia.com/gpu" in res.get("requests", {}):
                    gpu_containers += 1
                    assert res["requests"]["nvidia.com/gpu"] == res["limits"]["nvidia.com/gpu"], name
                    assert int(res["limits"]["nvidia.com/gpu"]) >= 1, name
                assert res["requests"] == res["limits"], name
        assert gpu_containers == 1, name  # one GPU worker group, CPU head


def entry_commands(entrypoint: str) -> list[list[str]]:
    """`attrgan train --a b && attrgan ...` → [["train", "--a", "b"], ...]."""
    commands = []
    for part in entrypoint.split("&&"):
        argv = shlex.split(part)
        assert argv[0] == "attrgan", f"entrypoint commands must be the image's attrgan command, got {part!r}"
        commands.append(argv[1:])
    return commands


def test_kuberay_entrypoints_match_the_jobs():
    from attrgan import cli

    commands = set()
    for name, spec in job_specs():
        for command, *argv in entry_commands(spec["entrypoint"]):
            commands.add(command)
            # Every flag (and value) the manifest passes parses with the command's own parser.
            cli.PARSERS[command]().parse_args(argv)
    assert commands == {"train", "extract"}
    train = [argv for _, s in job_specs() for argv in entry_commands(s["entrypoint"]) if argv[0] == "train"]
    assert sorted(a[a.index("--model") + 1] for a in train) == ["classifier", "reconstruction", "superres"]


def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def cluster_image() -> str:
    """The image cluster/Dockerfile builds, tagged with the project's version."""
    return f"registry.example.com/attrgan:{pyproject()['version']}"


def test_dockerfile_builds_the_image_from_pyproject():
    """The image, the manifests and pyproject.toml agree: the Ray pin and a Python that
    requires-python accepts in the base image, the project installed from pyproject.toml."""
    from packaging.specifiers import SpecifierSet

    text = (CLUSTER / "Dockerfile").read_text()
    (base,) = re.findall(r"^FROM (\S+)", text, re.M)
    deps = pyproject()["dependencies"]
    (ray_pin,) = [d.split("==")[1] for d in deps if d.startswith("ray[")]
    match = re.fullmatch(r"rayproject/ray:(?P<ray>[\d.]+)-py(?P<py>3)(?P<minor>\d+)-gpu", base)
    assert match and match["ray"] == ray_pin == ray.__version__, base
    assert f"3.{match['minor']}" in SpecifierSet(pyproject()["requires-python"]), base
    assert "COPY --chown=ray:users pyproject.toml" in text and "pip install --no-cache-dir ." in text
    assert f"-t {cluster_image()} " in text  # the build command names the tag the manifests run
    for name, spec in cluster_specs():
        assert spec["rayVersion"] == ray_pin, name


def test_kuberay_jobs_install_nothing_at_run_time():
    """No hand-copied pip list or code upload that could drift from pyproject.toml: all in the image."""
    for name, spec in job_specs():
        env = yaml.safe_load(spec["runtimeEnvYAML"]) or {}
        assert set(env) <= {"env_vars"}, (name, sorted(env))
        assert not any(re.search("SECRET|ACCESS_KEY|TOKEN", k) for k in env.get("env_vars", {})), name
        assert spec["shutdownAfterJobFinishes"] is True, name


def test_nightly_schedule():
    (doc,) = [d for _, d in kuberay_docs() if d["kind"] == "RayCronJob"]
    fields = doc["spec"]["schedule"].split()
    assert len(fields) == 5 and fields[2:] == ["*", "*", "*"]  # every day
    minute, hour = int(fields[0]), int(fields[1])
    assert 0 <= minute < 60 and 0 <= hour < 6  # at night
    assert entry_commands(doc["spec"]["jobTemplate"]["entrypoint"])[0][0] == "extract"


def test_storage_configmap_builds_a_storage_config():
    from attrgan.config import StorageConfig

    (cm,) = [d for _, d in kuberay_docs() if d["kind"] == "ConfigMap"]
    data = cm["data"]
    assert not any(re.search("SECRET|ACCESS_KEY|TOKEN", k) for k in data)
    cfg = StorageConfig.from_env(data)
    assert cfg.region == data["AWS_REGION"] and cfg.endpoint_url is None and not cfg.anonymous
    assert cfg.allowed_prefixes == tuple(data["ATTRGAN_ALLOWED_PREFIXES"].split(","))
    (sa,) = [d for _, d in kuberay_docs() if d["kind"] == "ServiceAccount"]
    assert sa["metadata"]["name"] == "attrgan-ray"
    assert "eks.amazonaws.com/role-arn" in sa["metadata"]["annotations"]

"""The extraction under faults: a flaky S3 endpoint, failures that outlast the retries, setup
mistakes, and a multi-node Ray that loses a worker node mid-run."""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys
import textwrap
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pandas as pd
import pytest

from attrgan.bundle import BundleError, save_bundle
from attrgan.config import StorageConfig
from attrgan.data.manifest import write_manifest
from attrgan.data.storage import list_dir, write_bytes
from attrgan.extract import ExtractConfig, IncompleteRun, SetupError, run_extract
from attrgan.pipeline import PipelineConfig
from attrgan.results import load_results, read_success, read_transient
from helpers import png, tiny_bundle

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class FlakyS3:
    """An HTTP proxy on 127.0.0.1 in front of an S3 endpoint that fails some requests: every
    `every`-th request gets a 503 SlowDown or has its connection dropped (alternately), at most
    `budget` of them; requests whose path contains `always` fail every time (while set)."""

    def __init__(self, upstream: str, *, every: int = 4, budget: int = 60, always: str | None = None) -> None:
        self.upstream = upstream.removeprefix("http://")
        self.every, self.budget, self.always = every, budget, always
        self.seen = self.failed = 0
        self.lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def _body(self) -> bytes:
                if "chunked" not in self.headers.get("Transfer-Encoding", "").lower():
                    return self.rfile.read(int(self.headers.get("Content-Length") or 0))
                parts = []
                while True:
                    size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                    if size == 0:
                        while self.rfile.readline().strip():  # trailers
                            pass
                        return b"".join(parts)
                    parts.append(self.rfile.read(size))
                    self.rfile.readline()

            def _forward(self):
                body = self._body()
                fail = proxy.decide(self.path)
                if fail == "drop":
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return
                if fail == "503":
                    payload = b"<Error><Code>SlowDown</Code><Message>Reduce your request rate.</Message></Error>"
                    self.send_response(503)
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                    return
                conn = http.client.HTTPConnection(proxy.upstream, timeout=30)
                headers = {k: v for k, v in self.headers.items()
                           if k.lower() not in ("connection", "transfer-encoding", "content-length", "expect")}
                headers["Content-Length"] = str(len(body))
                conn.request(self.command, self.path, body=body, headers=headers)
                reply = conn.getresponse()
                data = reply.read()
                self.send_response(reply.status)
                for k, v in reply.getheaders():
                    if k.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(k, v)
                # A HEAD reply has no body but tells the object's size.
                size = reply.getheader("Content-Length") if self.command == "HEAD" else None
                self.send_header("Content-Length", size or str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)
                conn.close()

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _forward

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def decide(self, path: str) -> str | None:
        with self.lock:
            self.seen += 1
            if self.always and self.always in path:
                return "503"
            if self.failed < self.budget and self.seen % self.every == 0:
                self.failed += 1
                return "drop" if self.failed % 2 else "503"
            return None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> "FlakyS3":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def s3_scene(s3_endpoint, s3_bucket):
    """A bundle and a 2-day manifest of 8 crops on the local S3 server (one image name holds 'flaky')."""
    storage = StorageConfig(endpoint_url=s3_endpoint, region="us-east-1")
    base = f"s3://{s3_bucket}"
    save_bundle(f"{base}/bundle", tiny_bundle(), storage=storage)
    rows = []
    for d, day in enumerate(("2026-11-24", "2026-11-25")):
        for k in range(4):
            name = f"{day}-{'flaky' if (d, k) == (1, 3) else k}"
            write_bytes(f"{base}/images/{name}.png", png(d * 10 + k), storage)
            rows.append({"crop_id": name, "image_uri": f"../images/{name}.png", "date": day})
    write_manifest(pd.DataFrame(rows), f"{base}/manifest", storage=storage, partition_cols=["date"])
    return {"base": base, "storage": storage, "ids": sorted(r["crop_id"] for r in rows)}


def config_for(scene, storage: StorageConfig, **overrides) -> ExtractConfig:
    base = scene["base"]
    values = {"manifest": f"{base}/manifest", "bundle": f"{base}/bundle", "out": f"{base}/results",
              "storage": storage, "actors": 1, "batch_size": 4, "pipeline": PipelineConfig(device="cpu")}
    return ExtractConfig(**(values | overrides))


@pytest.mark.ray
@pytest.mark.slow
def test_flaky_endpoint_gives_the_clean_results_and_lasting_failures_wait_for_the_next_run(ray_local, s3_scene):
    clean = StorageConfig(endpoint_url=s3_scene["storage"].endpoint_url, region="us-east-1", retry_backoff_s=0.05)
    with FlakyS3(clean.endpoint_url, every=4, budget=16) as proxy:
        flaky = StorageConfig(endpoint_url=proxy.url, region="us-east-1", retry_backoff_s=0.05)
        summary = run_extract(config_for(s3_scene, flaky))
    assert proxy.failed == 16  # the faults really happened: every 4th request, 16 in all
    assert summary.rows == 8 and summary.errors == {} and summary.incomplete == ()
    frame = load_results(f"{s3_scene['base']}/results", storage=clean)
    assert sorted(frame["crop_id"]) == s3_scene["ids"] and (frame["status"] == "ok").all()
    first = {p: read_success(f"{s3_scene['base']}/results/{p}", clean)["run"] for p in ("date=2026-11-24",
                                                                                        "date=2026-11-25")}

    # One object fails through every retry: its partition is not committed (its previous results
    # stay), the other partition is.
    always = {"every": 10**9, "always": "flaky"}
    with FlakyS3(clean.endpoint_url, **always) as proxy:
        flaky = StorageConfig(endpoint_url=proxy.url, region="us-east-1", retries=2, retry_backoff_s=0.01)
        with pytest.raises(IncompleteRun, match="1 partition") as failed:
            run_extract(config_for(s3_scene, flaky, incremental=False))
        summary = failed.value.summary
        assert [p for p, _ in summary.incomplete] == ["date=2026-11-25"] and "transient" in summary.incomplete[0][1]
        assert [p.partition for p in summary.processed] == ["date=2026-11-24"]
        after = {p: read_success(f"{s3_scene['base']}/results/{p}", clean)["run"] for p in first}
        assert after["date=2026-11-25"] == first["date=2026-11-25"] != after["date=2026-11-24"]

        # Into a new output: the partition stays undone until a run reads every row, or until the
        # run that fails the same crop for the max_transient_runs-th time in a row gives up on it.
        fresh = f"{s3_scene['base']}/fresh"
        with pytest.raises(IncompleteRun, match="held back: 1 row.* failed in 1 run.* given up after 2"):
            run_extract(config_for(s3_scene, flaky, out=fresh, max_transient_runs=2))
        assert read_success(f"{fresh}/date=2026-11-25", clean) is None
        assert read_transient(f"{fresh}/date=2026-11-25", clean) == {"2026-11-25-flaky": 1}
        gave_up = run_extract(config_for(s3_scene, flaky, out=fresh, max_transient_runs=2))
    assert [p.partition for p in gave_up.processed] == ["date=2026-11-25"] and gave_up.errors == {"gave up": 1}
    row = load_results(fresh, storage=clean).set_index("crop_id").loc["2026-11-25-flaky"]
    assert row["status"] == "error" and row["error"].startswith("gave up: its image read failed for a transient "
                                                                "reason in 2 runs in a row (transient: ")
    assert read_transient(f"{fresh}/date=2026-11-25", clean) == {}  # committed: the record is gone
    # An operator's full rerun of that partition (`--full --partition date=2026-11-25`) reads it again.
    rerun = run_extract(config_for(s3_scene, clean, out=fresh, incremental=False, partitions=("date=2026-11-25",)))
    assert rerun.errors == {} and [p.partition for p in rerun.processed] == ["date=2026-11-25"]
    frame = load_results(fresh, storage=clean)
    assert sorted(frame["crop_id"]) == s3_scene["ids"] and (frame["status"] == "ok").all()


@pytest.mark.ray
def test_setup_failures_stop_before_any_write(ray_local, s3_scene, s3_endpoint):
    storage = s3_scene["storage"]
    out = f"{s3_scene['base']}/results"
    closed = StorageConfig(endpoint_url="http://127.0.0.1:9", region="us-east-1", retries=1, retry_backoff_s=0.01,
                           connect_timeout_s=1.0)
    with pytest.raises(SetupError, match=r"storage.endpoint_url='http://127.0.0.1:9'"):
        run_extract(config_for(s3_scene, closed))
    with pytest.raises(SetupError, match=r"image bucket 'no-such-bucket-x' .* does not exist"):
        run_extract(config_for(s3_scene, StorageConfig(endpoint_url=s3_endpoint, region="us-east-1",
                                                       allowed_prefixes=("s3://no-such-bucket-x",))))
    with pytest.raises(SetupError, match=r"cannot write under the output out=s3://no-such-bucket-y"):
        run_extract(config_for(s3_scene, storage, out="s3://no-such-bucket-y/results"))
    with pytest.raises(SetupError, match="overlap"):  # committing would delete the manifest's files
        run_extract(config_for(s3_scene, storage, out=f"{s3_scene['base']}/manifest"))
    with pytest.raises(BundleError, match="no config.json at"):
        run_extract(config_for(s3_scene, storage, bundle=f"{s3_scene['base']}/nothing"))
    assert list_dir(out, storage) == []  # nothing was touched


# ---------------------------------------------------------------------------------------------
# a multi-node Ray on this machine: a head with no CPUs and two worker nodes


CLUSTER_DRIVER = textwrap.dedent("""
    import json, logging, os, sys, threading, time
    import ray
    from ray.cluster_utils import Cluster
    from attrgan.extract import ExtractConfig, run_extract
    from attrgan.pipeline import PipelineConfig

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    manifest, bundle, out = sys.argv[1:4]
    env = {"env_vars": {"RAY_AUTH_MODE": "disabled"}}
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
    workers = [cluster.add_node(num_cpus=2) for _ in range(2)]
    ray.init(address=cluster.address, log_to_driver=False, runtime_env=env)
    cluster.wait_for_nodes()
    # Two actors of 0.8 CPU: Ray Data spreads them over the two workers, and after losing one
    # the other worker holds both with a CPU share left for the read and write tasks.
    config = ExtractConfig(manifest=manifest, bundle=bundle, out=out, actors=2, min_actors=2, cpus_per_actor=0.8,
                           batch_size=4, rows_per_file=8, incremental=False, max_restarts=4,
                           progress_interval_s=2.0, pipeline=PipelineConfig(device="cpu"))

    # Remove a worker node that hosts a pipeline actor once the run's two actors are up and scored
    # rows are being staged (mid-stream, not while the first blocks are still being read).
    import glob
    from ray._private.state import actors  # the GCS table itself: the state API needs a dashboard
    def pool():
        return {key: a for key, a in actors().items() if "ScoringActor" in a["ActorClassName"]}
    seen, removed = {}, []
    def remove_when_staging():
        deadline = time.time() + 120
        while time.time() < deadline:
            alive = {key: a["Address"]["NodeID"] for key, a in pool().items() if a["State"] == "ALIVE"}
            if len(alive) == 2 and glob.glob(f"{out}/_staging/*/*/part-*.parquet"):
                seen.update(alive)
                hit = next(w for w in workers if w.node_id in alive.values())
                print(f"removing worker node {hit.node_id[:8]}", file=sys.stderr, flush=True)
                removed.append(hit)
                cluster.remove_node(hit)
                print(f"removed worker node {hit.node_id[:8]}", file=sys.stderr, flush=True)
                return
            time.sleep(0.2)
    thread = threading.Thread(target=remove_when_staging, daemon=True)
    thread.start()
    summary = run_extract(config)
    # The night is what is under test: a harness call still tearing the node down does not hold it.
    thread.join(timeout=60)
    print(json.dumps({"rows": summary.rows, "write_nodes": summary.write_nodes,
                      "workers": [w.node_id for w in workers], "head": cluster.head_node.node_id,
                      "partitions": [(p.partition, p.rows) for p in summary.processed],
                      "actor_nodes": sorted(seen.values()), "removed": [w.node_id for w in removed],
                      "restarts": sorted(a["NumRestarts"] for a in pool().values())}), flush=True)
    os._exit(0)  # tearing the cluster down is not under test (a removed node makes it noisy)
""")


@pytest.mark.ray
@pytest.mark.slow
def test_multi_node_writes_from_workers_and_survives_losing_one(tmp_path):
    root = tmp_path
    save_bundle(str(root / "bundle"), tiny_bundle())
    rows = []
    days = ("2026-11-22", "2026-11-23", "2026-11-24", "2026-11-25")
    for d, day in enumerate(days):  # enough rows that the pool is still busy when a node goes
        for k in range(64):
            (root / f"{day}-{k}.png").write_bytes(png(d * 100 + k))
            rows.append({"crop_id": f"{day}-{k}", "image_uri": str(root / f"{day}-{k}.png"), "date": day})
    write_manifest(pd.DataFrame(rows), str(root / "manifest"), partition_cols=["date"])
    out = str(root / "results")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1]), "RAY_AUTH_MODE": "disabled"}
    try:
        done = subprocess.run([sys.executable, "-c", CLUSTER_DRIVER, str(root / "manifest"), str(root / "bundle"), out],
                              env=env, capture_output=True, text=True, timeout=300)
    except subprocess.TimeoutExpired as hung:  # show where the night stopped, not only that it did
        log = hung.stderr.decode(errors="replace") if isinstance(hung.stderr, bytes) else hung.stderr or ""
        pytest.fail(f"the node-loss night did not end in 300 s; its log ends:\n{log[-4000:]}")
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["rows"] == 256
    # The head has no CPUs: every result file was written by a task on a worker node.
    assert report["write_nodes"] and set(report["write_nodes"]) <= set(report["workers"])
    # The pool ran on both workers, and one of them went away under a live actor, which restarted.
    assert sorted(report["actor_nodes"]) == sorted(report["workers"]) and len(report["removed"]) == 1
    assert max(report["restarts"]) >= 1, report
    assert "extract: progress " in done.stderr and done.stderr.count("extract: committed date=") == 4
    assert f"WARNING attrgan.extract: extract: node {report['removed'][0][:8]} left the cluster" in done.stderr
    # Every partition committed, each with its row count; every row once.
    assert sorted(report["partitions"]) == [[f"date={day}", 64] for day in days]
    for day in days:
        marker = read_success(f"{out}/date={day}")
        assert marker["rows"] == 64 and (Path(out) / f"date={day}" / "_SUCCESS").is_file()
    frame = load_results(out)
    assert len(frame) == 256 and frame["crop_id"].is_unique and (frame["status"] == "ok").all()
    assert sorted(frame["crop_id"]) == sorted(r["crop_id"] for r in rows)

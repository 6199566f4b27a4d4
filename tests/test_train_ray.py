"""Ray Train integration: 2 CPU workers on a tiny synthetic manifest in the local S3 server."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pytest
import torch

from attrgan.attributes import SYNTH_ATTRIBUTES, person_level
from attrgan.bundle import bundle_info, load_network
from attrgan.config import ConfigError, StorageConfig
from attrgan.data import storage as st
from attrgan.contracts import GAIN_KEY
from attrgan.fusion import Fusion
from attrgan.ray_setup import STATE_API_ENV
from attrgan.train.train_config import load_train_config
from attrgan.train.data import TrainDataError
from attrgan.faults import WORKER_EXIT_EPOCH_ENV, WORKER_EXIT_MARKER_ENV
from attrgan.train.gain import best_epoch
from attrgan.train.ray_train import RUN_FILE, _gain_meter, default_locations, train_network
from helpers import new_bucket

pytestmark = pytest.mark.ray
REPO = Path(__file__).resolve().parents[1]
# Tiny networks and images: each TorchTrainer run is dominated by Ray's own start-up.
TINY = {"epochs": 2, "batch_size": 4, "workers": 2, "cpus_per_worker": 0.5, "log_every": 1, "width": 0.0625}
SIZES = {"classifier": [40, 16], "reconstruction": [32, 16], "superres": [16, 8]}


def tiny_config(model: str, **extra):
    return load_train_config(model, overrides=TINY | {"input_size": SIZES[model]} | extra)


@pytest.fixture(scope="module")
def s3(s3_endpoint):
    """(storage, bucket) of a bucket holding a 40-crop synthetic training manifest."""
    from attrgan.data.synth import generate

    bucket = new_bucket(s3_endpoint)
    storage = StorageConfig(endpoint_url=s3_endpoint, region="us-east-1")
    generate(f"s3://{bucket}/synth", 40, seed=0, storage=storage, workers=1, splits=(0.7, 0.3, 0.0))
    return storage, bucket


@pytest.fixture
def s3_env(s3, monkeypatch):
    storage, _ = s3
    monkeypatch.setenv("AWS_ENDPOINT_URL", storage.endpoint_url)
    monkeypatch.setenv("ATTRGAN_S3_ENDPOINT_URL", storage.endpoint_url)
    return s3


def test_workers_reach_the_state_api_of_their_own_ray(ray_local):
    # Ray Train's placement-group cleaner asks the state API, from a worker, whether the controller
    # lives; where that query hangs, every training run ends 12 s late (ray_setup.start_local_ray).
    @ray_local.remote
    class Controller:
        def ping(self) -> bool:
            return True

    @ray_local.remote
    def state_of(actor_id: str) -> str:
        from ray.util.state import get_actor

        return get_actor(actor_id, timeout=5).state

    controller = Controller.remote()
    assert ray_local.get(controller.ping.remote())
    assert ray_local.get(state_of.remote(controller._actor_id.hex()), timeout=60) == "ALIVE"
    # Another job's workers (a `jobs/train.py` joining through RAY_ADDRESS) find it too: the raylet
    # that starts every worker carries the address, while this process's environment does not
    # (the variable would outrank the address of any other Ray it submits to).
    import psutil

    raylets = [p for p in psutil.Process().children(recursive=True) if p.name() == "raylet"]
    assert len(raylets) == 1 and raylets[0].environ()[STATE_API_ENV].startswith("http://127.0.0.1:")
    assert STATE_API_ENV not in os.environ


@pytest.mark.slow
def test_classifier_survives_a_worker_death_and_a_finished_run_is_not_retrained(ray_local, s3_env, tmp_path,
                                                                                   monkeypatch, agreement_bundle):
    storage, bucket = s3_env
    marker = tmp_path / "killed"
    monkeypatch.setenv(WORKER_EXIT_EPOCH_ENV, "1")
    monkeypatch.setenv(WORKER_EXIT_MARKER_ENV, str(marker))
    bundle = f"s3://{bucket}/models/fault"
    config = tiny_config("classifier", precision="fp32")  # as the agreement bundle's, its twin below
    result = train_network(config, manifest=f"s3://{bucket}/synth/manifest.parquet", bundle=bundle, storage=storage)

    assert marker.exists(), "the injected worker death did not happen"
    assert result.trained and result.run_uri == f"s3://{bucket}/models/runs/fault-classifier"
    epochs = pd.read_csv(io.BytesIO(st.read_bytes(st.join(result.run_uri, "epochs.csv"), storage)))
    assert epochs["epoch"].tolist() == [0, 1]  # epoch 0 from before the restart, epoch 1 after it
    assert epochs["step"].is_monotonic_increasing
    assert st.read_bytes(st.join(result.run_uri, "curves.png"), storage)[:4] == b"\x89PNG"

    net, meta = load_network(st.join(bundle, "classifier"), storage=storage)
    assert tuple(meta["attributes"]) == SYNTH_ATTRIBUTES and len(meta["thresholds"]) == len(SYNTH_ATTRIBUTES)
    assert meta["training"]["epochs"] == 2 and "val_ma" in meta["metrics"]
    with torch.no_grad():
        scores = torch.sigmoid(net(torch.zeros(2, 3, 40, 16)))
    assert scores.shape == (2, len(SYNTH_ATTRIBUTES)) and torch.isfinite(scores).all()
    # Resumed from its epoch-0 checkpoint, the run ends with the weights of the uninterrupted run
    # of the same seed and settings (the agreement bundle's classifier), bit for bit.
    uninterrupted = agreement_bundle[1]["classifier"]
    assert [k for k, v in net.state_dict().items() if not torch.equal(v, uninterrupted[k])] == []

    again = train_network(config, manifest=f"s3://{bucket}/synth/manifest.parquet", bundle=bundle, storage=storage)
    assert not again.trained and again.metrics == result.metrics
    assert load_network(st.join(bundle, "classifier"), storage=storage)[1]["version"] == meta["version"]

    # A finished run whose bundle folder was lost writes its last checkpoint again, untrained.
    st.delete_prefix(st.join(bundle, "classifier"), storage)
    restored = train_network(config, manifest=f"s3://{bucket}/synth/manifest.parquet", bundle=bundle,
                             storage=storage)
    assert not restored.trained
    assert load_network(st.join(bundle, "classifier"), storage=storage)[1]["version"] == meta["version"]


# G^R's settings in both of its runs, the job script's and the library call's: one worker, one
# epoch, the agreement loss against the bundle's classifier. G^S differs only in its network; the
# GANs on two workers are the demo's (tests/test_demo.py).
GR = {"workers": 1, "epochs": 1, "agreement_weight": 10.0}


def _train_reconstruction(storage: StorageConfig, bucket: str, bundle: str) -> None:
    """G^R against `bundle`'s classifier, by the library call."""
    train_network(tiny_config("reconstruction", **GR), manifest=f"s3://{bucket}/synth/manifest.parquet",
                  bundle=bundle, storage=storage)


def _train_reconstruction_job(bucket: str, bundle: str, address: str) -> subprocess.CompletedProcess:
    """G^R against `bundle`'s classifier, by the job script joining the Ray at `address` (RAY_ADDRESS)."""
    sets = [f"--set={k}={json.dumps(v)}" for k, v in (TINY | {"input_size": SIZES["reconstruction"]} | GR).items()
            if k not in ("workers", "epochs")]
    return subprocess.run([sys.executable, "jobs/train.py", "--model", "reconstruction", "--manifest",
                           f"s3://{bucket}/synth/manifest.parquet", "--bundle", bundle, "--workers", str(GR["workers"]),
                           "--epochs", str(GR["epochs"]), *sets], cwd=REPO, env=os.environ | {"RAY_ADDRESS": address},
                          capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def agreement_bundle(ray_local, s3):
    """(bundle URI, weights, the G^R job): the classifier trained from scratch on two workers, then
    G^R against it by the job script, once for the tests of this module. fp32: oneDNN's bf16 kernels
    are not bit-reproducible at every size (DESIGN.md "Reproducibility")."""
    storage, bucket = s3
    bundle = f"s3://{bucket}/models/agree"
    with pytest.MonkeyPatch.context() as env:
        env.setenv("AWS_ENDPOINT_URL", storage.endpoint_url)
        env.setenv("ATTRGAN_S3_ENDPOINT_URL", storage.endpoint_url)
        train_network(tiny_config("classifier", precision="fp32"), manifest=f"s3://{bucket}/synth/manifest.parquet",
                      bundle=bundle, storage=storage)
        job = _train_reconstruction_job(bucket, bundle, ray_local.get_runtime_context().gcs_address)
    assert job.returncode == 0, job.stderr[-3000:]
    return bundle, {m: load_network(st.join(bundle, m), storage=storage)[0].state_dict()
                    for m in ("classifier", "reconstruction")}, job


@pytest.mark.slow
def test_the_job_script_joins_this_ray_and_writes_a_network_into_the_bundle(s3_env, agreement_bundle):
    storage, _ = s3_env
    bundle, _, job = agreement_bundle
    assert "reconstruction: trained" in job.stdout
    net, meta = load_network(st.join(bundle, "reconstruction"), storage=storage)
    assert meta["architecture"] == "reconstruction" and meta["training"]["config"]["workers"] == GR["workers"]
    h, w = SIZES["reconstruction"]
    with torch.no_grad():
        assert net(torch.zeros(1, 3, h, w)).shape == (1, 3, h, w)


@pytest.mark.slow
def test_generators_train_against_the_bundle_classifier_with_the_agreement_loss(ray_local, s3_env, agreement_bundle):
    storage, bucket = s3_env
    manifest = f"s3://{bucket}/synth/manifest.parquet"
    bundle, _, _ = agreement_bundle
    run_uri = st.join(*default_locations(bundle, "reconstruction"))
    epochs = pd.read_csv(io.BytesIO(st.read_bytes(st.join(run_uri, "epochs.csv"), storage)))
    assert (epochs["train_l_g_agree"] > 0).all()
    assert np.allclose(epochs["train_l_g_total"], epochs["train_l_g_pix"] + 0.1 * epochs["train_l_g_adv"]
                       + 10.0 * epochs["train_l_g_agree"], rtol=1e-4)
    net, meta = load_network(st.join(bundle, "reconstruction"), storage=storage)
    assert meta["training"]["config"]["agreement_weight"] == 10.0 and np.isfinite(meta["metrics"]["val_psnr"])
    assert net(torch.zeros(1, 3, *SIZES["reconstruction"])).shape == (1, 3, *SIZES["reconstruction"])
    # Trained into a bundle with a classifier, the generator stores its measured validation gain.
    _, classifier_meta = load_network(st.join(bundle, "classifier"), storage=storage)
    proof = meta[GAIN_KEY]
    assert proof["crops"] == 12 and proof["split"] == "val" and proof["classifier_version"] == classifier_meta["version"]
    assert proof["low"] <= proof["gain_ma"] <= proof["high"]

    # G^S with the same loss: its output, resized to the classifier input, against the clean crop.
    # Its manifest carries tracks: 10 track ids over the 12 validation crops (a track is camera and track_id).
    from attrgan.data.manifest import read_manifest, write_manifest

    table = read_manifest(manifest, storage=storage)
    table = table.drop_columns([c for c in ("track_id", "frame_index") if c in table.column_names])
    is_val = np.asarray(table["split"].to_pylist()) == "val"
    val = np.cumsum(is_val) - 1  # the rank of a validation crop; other crops have no track
    table = table.append_column("track_id", pa.array([f"p{v % 10}" if k else None for v, k in zip(val, is_val)],
                                                     pa.string()))
    table = table.append_column("frame_index", pa.array([int(v // 10) if k else None for v, k in zip(val, is_val)],
                                                        pa.int64()))
    tracked = write_manifest(table, f"s3://{bucket}/synth/tracked.parquet", storage=storage)
    sr = train_network(tiny_config("superres", workers=1, epochs=1, agreement_weight=10.0), manifest=tracked,
                       bundle=bundle, storage=storage)
    epochs = pd.read_csv(io.BytesIO(st.read_bytes(st.join(sr.run_uri, "epochs.csv"), storage)))
    assert (epochs["train_l_g_agree"] > 0).all()
    _, sr_meta = load_network(st.join(bundle, "superres"), storage=storage)
    assert sr_meta[GAIN_KEY]["crops"] == 12 and np.isfinite(sr_meta["metrics"]["val_psnr"])
    # The bundle is complete: its track fusion was fitted on those tracks and stored with the classifier.
    info = bundle_info(bundle, storage)
    fusion = Fusion.from_bundle_info(info)
    rows = table.filter(pc.equal(table["split"], "val"))
    people = len(set(zip(rows["camera_id"].to_pylist(), rows["track_id"].to_pylist())))
    assert fusion.fitted["tracks"] == people >= 10 and fusion.fitted["crops"] == 12 and fusion.fitted["split"] == "val"
    assert fusion.rule == fusion.fitted["chosen"] and set(fusion.fitted["ma"]) == {"mean", "quality", "max", "best"}
    assert fusion.fitted["bundle_version"] == info.version and info.person_level == person_level(info.attributes)

    # Fine-tuned on restored crops (a copy of the complete bundle): a run of its own, the classifier
    # starts from the bundle's, and the generators' gains are measured again against the new one.
    tuned = f"s3://{bucket}/models/tuned"
    for name in ("classifier", "reconstruction", "superres"):
        st.copy_folder(st.join(bundle, name), st.join(tuned, name), storage)
    result = train_network(tiny_config("classifier", workers=1, epochs=1, train_on="restored"), manifest=tracked,
                           bundle=tuned, storage=storage)
    assert result.run_uri.endswith("/tuned-classifier-restored") and result.trained
    new = bundle_info(tuned, storage)
    assert new.classifier_version != info.classifier_version and new.attributes == info.attributes
    assert {new.gains[g]["classifier_version"] for g in ("reconstruction", "superres")} == {new.classifier_version}
    assert all("ma_before" in new.gains[g] for g in ("reconstruction", "superres"))
    assert Fusion.from_bundle_info(new).fitted["bundle_version"] == new.version


def test_bad_inputs_fail_before_any_worker_starts(ray_local, s3_env, tmp_path):
    from attrgan.data.manifest import read_manifest, write_manifest

    storage, bucket = s3_env
    manifest = f"s3://{bucket}/synth/manifest.parquet"
    table = read_manifest(manifest, storage=storage)
    unlabelled = str(tmp_path / "unlabelled.parquet")
    write_manifest(table.drop_columns(list(SYNTH_ATTRIBUTES)), unlabelled)
    with pytest.raises(TrainDataError, match="no attribute label columns"):
        train_network(tiny_config("classifier"), manifest=unlabelled, bundle=str(tmp_path / "b1"), storage=storage)
    assert not (tmp_path / "runs").exists()

    with pytest.raises(ConfigError, match="GPU"):
        train_network(tiny_config("superres", use_gpu=True), manifest=manifest, bundle=str(tmp_path / "b2"),
                      storage=storage)

    with pytest.raises(ConfigError, match="fine-tunes the classifier of a complete bundle"):
        train_network(tiny_config("classifier", train_on="restored"), manifest=manifest, bundle=str(tmp_path / "b5"),
                      storage=storage)

    with pytest.raises(ConfigError, match="train the classifier into this bundle first"):
        train_network(tiny_config("reconstruction", agreement_weight=10.0), manifest=manifest,
                      bundle=str(tmp_path / "b4"), storage=storage)
    with pytest.raises(ConfigError, match="select_epoch best_gain needs the bundle's trained classifier"):
        train_network(tiny_config("superres", select_epoch="best_gain"), manifest=manifest,
                      bundle=str(tmp_path / "b5"), storage=storage)

    # An interrupted run that trained other attributes must not be resumed with these.
    run = tmp_path / "runs" / "b3-classifier"
    run.mkdir(parents=True)
    (run / RUN_FILE).write_text(json.dumps({"model": "classifier", "attributes": ["female", "hat", "occlusion_down"]}))
    with pytest.raises(ConfigError, match="attributes"):
        train_network(tiny_config("classifier"), manifest=manifest, bundle=str(tmp_path / "b3"), storage=storage)


@pytest.mark.slow
def test_the_same_seed_trains_the_same_weights(ray_local, s3_env, agreement_bundle):
    # G^R again with the same seed, against the same classifier, by the library call instead of the
    # job script: equal weights, bit for bit (same machine, same worker and thread counts).
    # The classifier's twin is the worker-death test's run.
    storage, bucket = s3_env
    bundle, first, _ = agreement_bundle
    second = f"s3://{bucket}/models/same-seed"
    st.copy_folder(st.join(bundle, "classifier"), st.join(second, "classifier"), storage)
    _train_reconstruction(storage, bucket, second)
    state = load_network(st.join(second, "reconstruction"), storage=storage)[0].state_dict()
    assert state.keys() == first["reconstruction"].keys()
    assert [k for k, v in state.items() if not torch.equal(v, first["reconstruction"][k])] == []


@pytest.mark.slow
def test_best_gain_exports_the_epoch_whose_generator_helps_the_classifier_most(ray_local, s3_env, agreement_bundle):
    # G^S for two epochs, measured after each against the bundle's classifier. Both
    # epochs' checkpoints are kept (num_to_keep=2), so the export can be compared with either.
    storage, bucket = s3_env
    bundle = f"s3://{bucket}/models/best-gain"
    st.copy_folder(st.join(agreement_bundle[0], "classifier"), st.join(bundle, "classifier"), storage)
    manifest = f"s3://{bucket}/synth/manifest.parquet"
    config = tiny_config("superres", workers=1, select_epoch="best_gain")
    result = train_network(config, manifest=manifest, bundle=bundle, storage=storage)

    epochs = pd.read_csv(io.BytesIO(st.read_bytes(st.join(result.run_uri, "epochs.csv"), storage)))
    assert epochs["epoch"].tolist() == [0, 1]
    assert ((epochs["val_gain_low"] <= epochs["val_gain_ma"]) & (epochs["val_gain_ma"] <= epochs["val_gain_high"])).all()
    chosen = best_epoch(epochs["val_gain_ma"].tolist())
    net, meta = load_network(st.join(bundle, "superres"), storage=storage)
    record = meta[GAIN_KEY]
    assert record["epoch"] == chosen and record["selected_by"] == "best_gain" and record["crops"] == 12
    assert record["gain_ma"] == pytest.approx(epochs["val_gain_ma"][chosen], rel=1e-12, abs=1e-15)
    assert meta["metrics"]["val_psnr"] == pytest.approx(epochs["val_psnr"][chosen], rel=1e-12)

    def weights(epoch: int) -> dict[str, torch.Tensor]:
        data = st.read_bytes(st.join(result.run_uri, f"epoch_{epoch + 1:04d}", "state.pt"), storage)
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)

    kept, other = weights(chosen)["net_g"], weights(1 - chosen)["net_g"]
    assert [k for k, v in net.state_dict().items() if not torch.equal(v, kept[k])] == []
    assert any(not torch.equal(v, other[k]) for k, v in net.state_dict().items())
    # The last checkpoint holds the kept generator: a run resumed from it still exports that epoch.
    best = weights(1)["best"]
    assert best["epoch"] == chosen and best["gain"]["gain_ma"] == record["gain_ma"]
    assert [k for k, v in best["net_g"].items() if not torch.equal(v, kept[k])] == []

    # The record is what measuring the exported generator gives, and measuring draws nothing from
    # torch's random stream, so the worker that measured trained what one that did not would have.
    stream = torch.get_rng_state()
    measured = _gain_meter(config, st.join(bundle, "classifier"), manifest, storage, "cpu")(net.state_dict())
    assert torch.equal(torch.get_rng_state(), stream)
    assert measured == {k: v for k, v in record.items() if k not in ("epoch", "selected_by")}

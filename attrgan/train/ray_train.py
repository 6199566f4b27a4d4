"""Ray Train around the plain-PyTorch loops: the only module of `attrgan.train` that imports Ray.

Driver checks, the worker function and the bundle export stay together (it is long): they share
the run folder's layout and the checkpoint format.

`train_network` checks its inputs on the driver (before any worker starts), runs a TorchTrainer
(Ray 2.60, Train V2) with one loop per worker under DDP (gloo on CPU, NCCL on GPU), and writes
the trained network to `<bundle>/<model>/` (model.safetensors + config.json).

Runs live under `<storage_path>/<run_name>/`: Ray's per-epoch checkpoints, `attrgan_run.json`
(what the run trains), the curves (losses.csv, epochs.csv, curves.png) and, once the bundle is
written, `FINISHED.json`. Rerunning the same name resumes from the last checkpoint (Train V2
semantics) with no epoch lost or repeated; rerunning a finished run does nothing unless
`retrain=True`, which deletes the run folder and starts over.
"""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import math
import os
import posixpath
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from attrgan import faults
from attrgan.ray_setup import init_ray
from attrgan.attributes import OCCLUSION_DOWN
from attrgan.config import ConfigError, StorageConfig, to_dict
from attrgan.data import storage as st
from attrgan.precision import resolve_precision
from attrgan.contracts import GAIN_KEY, GENERATORS, NETWORKS, BundleInfo
from attrgan.train.train_config import TrainConfig
from attrgan.train.curves import Curves, write_curves
from attrgan.train.gain import keep_best
from attrgan.train.loop import LoopSpec, Report
from attrgan.train.data import (CropSet, TrainDataError, classifier_batch, classifier_validation, epoch_indices,
                                label_array, load_crops, read_split, reconstruction_batch, resolve_attributes,
                                superres_batch, validation_tracks)

log = logging.getLogger(__name__)

CHECKPOINT_FILE = "state.pt"
RUN_FILE = "attrgan_run.json"
FINISHED_FILE = "FINISHED.json"


@dataclasses.dataclass(frozen=True)
class TrainResult:
    """What a training call produced. `trained` is False when a finished run was found instead."""

    model: str
    network_uri: str  # <bundle>/<model>
    run_uri: str
    trained: bool
    metrics: dict[str, Any]


@dataclasses.dataclass(frozen=True)
class _WorkerJob:
    """Everything a training worker needs (pickled to each worker)."""

    config: TrainConfig
    manifest: str
    storage: StorageConfig
    run_uri: str
    attributes: tuple[str, ...] | None  # classifier only
    ratios: tuple[float, ...] | None  # classifier only: eq. (2)'s r_i over the whole training split
    # The bundle's classifier: for the agreement loss (agreement_weight > 0) and select_epoch best_gain.
    classifier_uri: str | None = None
    crop_size: tuple[int, int] | None = None  # training crops' (H, W); None: the network's target size
    bundle_uri: str | None = None  # classifier with train_on "restored": the bundle it fine-tunes
    kill_at_epoch: int | None = None
    kill_marker: str | None = None


def default_locations(bundle: str, model: str, *, run_name: str | None = None,
                      storage_path: str | None = None) -> tuple[str, str]:
    """(storage_path, run_name): by default runs live in `runs/` beside the bundle folder and are
    named `<bundle folder name>-<model>`, so checkpoints never end up inside a shipped bundle."""
    bundle = bundle.rstrip("/")
    storage_path = storage_path or st.join(st.parent(bundle), "runs")
    run_name = run_name or f"{posixpath.basename(bundle) or 'bundle'}-{model}"
    if "/" in run_name or not run_name.strip():
        raise ConfigError(f"run name must be a non-empty name without '/', got {run_name!r}")
    return storage_path, run_name


def _ray_storage(storage_path: str, storage: StorageConfig) -> tuple[str, Any]:
    """(storage_path, pyarrow filesystem or None) as RunConfig wants them; S3 goes through our own
    filesystem because pyarrow ignores AWS_ENDPOINT_URL."""
    if st.is_s3(storage_path):
        fs, path = st.filesystem(storage_path, storage)
        return path, fs
    path = storage_path[7:] if storage_path.startswith("file://") else storage_path
    return os.path.abspath(path), None


def _read_json(uri: str, storage: StorageConfig) -> dict[str, Any] | None:
    try:
        return json.loads(st.read_bytes(uri, storage))
    except FileNotFoundError:
        return None


def _write_json(uri: str, data: dict[str, Any], storage: StorageConfig) -> None:
    st.write_bytes(uri, json.dumps(data, indent=2, default=float).encode(), storage)


def _classifier_inputs(config: TrainConfig, manifest: str, storage: StorageConfig,
                       ) -> tuple[tuple[str, ...], tuple[float, ...]]:
    """(attributes, positive ratios) from the training split, or TrainDataError."""
    from attrgan.losses import positive_ratios

    table = read_split(manifest, split=config.train_split, storage=storage)
    attributes = resolve_attributes(table, config.attributes, uri=manifest)
    if table.num_rows == 0:
        raise TrainDataError(f"{manifest} has no rows with split {config.train_split!r}")
    ratios = positive_ratios(label_array(table, attributes))
    # Occluded crops are added on the fly with occlusion_down = 1: their share raises its ratio.
    i = attributes.index(OCCLUSION_DOWN)
    f = config.occluded_share
    ratios[i] = np.clip(f + (1 - f) * ratios[i], 1e-3, 1 - 1e-3)
    return attributes, tuple(float(r) for r in ratios)


def _check_gpus(config: TrainConfig) -> None:
    import ray

    if not config.use_gpu:
        return
    available = ray.cluster_resources().get("GPU", 0)
    needed = config.workers * config.gpus_per_worker
    if available < needed:
        raise ConfigError(f"use_gpu asks for {needed:g} GPU(s) ({config.workers} worker(s) × "
                          f"{config.gpus_per_worker:g}), but the Ray cluster has {available:g}; "
                          f"drop --gpu or connect to a cluster with GPUs")


def train_network(config: TrainConfig, *, manifest: str, bundle: str, run_name: str | None = None,
                  storage_path: str | None = None, storage: StorageConfig | None = None,
                  retrain: bool = False) -> TrainResult:
    """Train `config.model` on `manifest` with Ray Train and write `<bundle>/<model>/`.

    manifest: a training manifest (local or s3://) with a split column; the classifier also needs
    attribute label columns. Input problems raise before any worker starts: TrainDataError
    (manifest), ConfigError (GPUs asked for but absent; a resumed run trained on other attributes).
    """
    import ray
    import ray.train
    from ray.train.torch import TorchConfig, TorchTrainer

    storage = storage or StorageConfig.from_env()
    network_uri = st.join(bundle, config.model)
    if config.train_on == "restored" and run_name is None:  # a run of its own beside the classifier's first
        run_name = default_locations(bundle, config.model)[1] + "-restored"
    storage_path, run_name = default_locations(bundle, config.model, run_name=run_name, storage_path=storage_path)
    run_uri = st.join(storage_path, run_name)

    finished = _read_json(st.join(run_uri, FINISHED_FILE), storage)
    if finished is not None and not retrain:
        if not st.exists(st.join(network_uri, "config.json"), storage):
            state = _latest_checkpoint(run_uri, storage)
            if state is None:
                raise ConfigError(f"run {run_uri} finished but has no checkpoint left and {network_uri} is "
                                  f"missing; pass --retrain to train again")
            log.info("run %s already finished; writing its last checkpoint to %s", run_uri, network_uri)
            meta = export_network(state, config, network_uri, manifest=manifest, run_uri=run_uri, storage=storage)
            return TrainResult(config.model, network_uri, run_uri, trained=False, metrics=meta.get("metrics", {}))
        log.info("run %s already finished (bundle %s); pass --retrain to train again", run_uri, finished["bundle"])
        return TrainResult(config.model, network_uri, run_uri, trained=False, metrics=finished.get("metrics", {}))
    if retrain:
        st.delete_prefix(run_uri, storage)

    attributes = ratios = None
    if config.model == "classifier":
        attributes, ratios = _classifier_inputs(config, manifest, storage)
    elif read_split(manifest, split=config.train_split, storage=storage).num_rows == 0:
        raise TrainDataError(f"{manifest} has no rows with split {config.train_split!r}")
    classifier_uri = crop_size = None
    if config.train_on == "restored":
        _check_restored_bundle(bundle, attributes, storage)
    needs = [need for need, asked in ((f"agreement_weight {config.agreement_weight:g}", config.agreement_weight > 0),
                                      ("select_epoch best_gain", config.select_epoch == "best_gain")) if asked]
    if needs:
        classifier_uri = st.join(bundle, "classifier")
        if not st.exists(st.join(classifier_uri, "config.json"), storage):
            raise ConfigError(f"{' and '.join(needs)} needs the bundle's trained classifier "
                              f"at {classifier_uri}: train the classifier into this bundle first")
    if config.agreement_weight > 0:
        # The agreement loss classifies crops at the classifier's size; G^R gets them shrunk.
        from attrgan.bundle import check_network

        crop_size = BundleInfo.from_metas({"classifier": check_network(classifier_uri, storage).meta}).input_size

    run_info = {"model": config.model, "attributes": list(attributes) if attributes else None,
                "manifest": manifest, "bundle": network_uri}
    previous = _read_json(st.join(run_uri, RUN_FILE), storage)
    if previous is not None:
        for key in ("model", "attributes"):
            if previous.get(key) != run_info[key]:
                raise ConfigError(f"run {run_uri} was started with {key} {previous.get(key)}, but this call "
                                  f"gives {run_info[key]}; resuming would mix them. Use another --run-name "
                                  f"or --retrain")

    init_ray()  # RAY_ADDRESS (or a submitted job) names a cluster to join; otherwise a local Ray
    _check_gpus(config)
    _write_json(st.join(run_uri, RUN_FILE), run_info, storage)

    kill_at, kill_marker = faults.worker_exit()
    job = _WorkerJob(config=config, manifest=manifest, storage=storage, run_uri=run_uri, attributes=attributes,
                     ratios=ratios, classifier_uri=classifier_uri, crop_size=crop_size,
                     bundle_uri=bundle if config.train_on == "restored" else None,
                     kill_at_epoch=kill_at, kill_marker=kill_marker)
    ray_path, ray_fs = _ray_storage(storage_path, storage)
    trainer = TorchTrainer(
        _train_worker,
        train_loop_config={"job": job},
        torch_config=TorchConfig(backend="nccl" if config.use_gpu else "gloo"),
        scaling_config=ray.train.ScalingConfig(num_workers=config.workers, use_gpu=config.use_gpu,
                                               resources_per_worker=config.resources_per_worker),
        run_config=ray.train.RunConfig(name=run_name, storage_path=ray_path, storage_filesystem=ray_fs,
                                       failure_config=ray.train.FailureConfig(max_failures=config.max_failures),
                                       checkpoint_config=ray.train.CheckpointConfig(num_to_keep=2)),
    )
    log.info("training %s on %s with %d worker(s); run %s", config.model, manifest, config.workers, run_uri)
    result = trainer.fit()
    if result.checkpoint is None:
        raise RuntimeError(f"run {run_uri} ended without a checkpoint")
    with result.checkpoint.as_directory() as folder:
        state = torch.load(Path(folder) / CHECKPOINT_FILE, map_location="cpu", weights_only=True)
    gain = None
    if config.select_epoch == "last":
        gain = _validation_gain(state, config, bundle=bundle, manifest=manifest, storage=storage)
    elif state.get("best") is not None:  # measured every epoch: export_network stores the kept epoch's record
        best = state["best"]
        log.info("%s: select_epoch best_gain keeps epoch %d (0-based, as in epochs.csv) of %d: validation gain "
                 "%+.2f mA", config.model, best["epoch"], state["epoch"],
                 100 * (best["gain"]["gain_ma"] if best["gain"] else math.nan))
    meta = export_network(state, config, network_uri, manifest=manifest, run_uri=run_uri, storage=storage,
                          extra={GAIN_KEY: gain} if gain else None)
    if config.train_on == "restored":
        _regate(config, bundle=bundle, manifest=manifest, storage=storage)
    _track_fusion(config, bundle=bundle, manifest=manifest, storage=storage)
    _write_json(st.join(run_uri, FINISHED_FILE), {"bundle": network_uri, "metrics": meta.get("metrics", {}),
                                                  "version": meta.get("version")}, storage)
    return TrainResult(config.model, network_uri, run_uri, trained=True, metrics=meta.get("metrics", {}))


def _check_restored_bundle(bundle: str, attributes: tuple[str, ...] | None, storage: StorageConfig) -> None:
    """ConfigError unless `bundle` holds the three networks and its classifier predicts `attributes`:
    fine-tuning on restored crops starts from that classifier and restores with those generators."""
    from attrgan.bundle import check_network

    missing = [n for n in NETWORKS if not st.exists(st.join(bundle, n, "config.json"), storage)]
    if missing:
        raise ConfigError(f"train_on 'restored' fine-tunes the classifier of a complete bundle, but {bundle} has no "
                          f"{' or '.join(missing)}: train the three networks into it first")
    trained = tuple(check_network(st.join(bundle, "classifier"), storage).meta.get("attributes") or ())
    if attributes is not None and trained != tuple(attributes):
        raise ConfigError(f"train_on 'restored' fine-tunes the bundle's classifier of attributes {list(trained)}, "
                          f"but this training asks for {list(attributes)}")


def _regate(config: TrainConfig, *, bundle: str, manifest: str, storage: StorageConfig) -> None:
    """Measure the bundle's generators again against its new classifier (`attrgan.train.gain.regate`)
    in a Ray task with one training worker's resources: their stored gains were the old one's."""
    import ray

    if config.val_split is None:
        return
    task = ray.remote(_measure_again).options(num_cpus=config.cpus_per_worker, num_gpus=1 if config.use_gpu else 0)
    for name, gain in ray.get(task.remote(bundle, manifest, config, storage)).items():
        log.info("%s against the fine-tuned classifier: validation gain %+.2f mA (%+.2f to %+.2f)", name,
                 100 * gain["gain_ma"], 100 * gain["low"], 100 * gain["high"])


def _measure_again(bundle: str, manifest: str, config: TrainConfig, storage: StorageConfig) -> dict[str, Any]:
    from attrgan.pipeline import PipelineConfig
    from attrgan.train.gain import regate

    torch.set_num_threads(config.torch_threads)
    return regate(bundle, manifest, storage=storage, split=config.val_split, seed=config.seed,
                  config=PipelineConfig(device="cuda" if config.use_gpu else "cpu", precision=config.precision))


def _latest_checkpoint(run_uri: str, storage: StorageConfig) -> dict[str, Any] | None:
    """The state of the run's newest `epoch_NNNN` checkpoint, or None."""
    folders = [u for u in st.list_dir(run_uri, storage) if posixpath.basename(u).startswith("epoch_")]
    if not folders:
        return None
    data = st.read_bytes(st.join(max(folders), CHECKPOINT_FILE), storage)  # zero-padded: max = newest
    return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)


def export_network(state: dict[str, Any], config: TrainConfig, network_uri: str, *, manifest: str,
                   run_uri: str, storage: StorageConfig | None = None,
                   extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write a checkpoint's network to `network_uri` with attrgan.bundle; returns the stored meta.

    The classifier's meta carries the calibrated per-attribute thresholds (0.5 without a val
    split) and the last validation metrics; `extra` is added to the meta as given. A generator
    trained with select_epoch best_gain is the kept epoch's (`state["best"]`, `keep_best`), with
    that epoch's validation metrics and gain record (GAIN_KEY, plus "epoch" and "selected_by").
    """
    from attrgan.bundle import save_network
    from attrgan.train.classifier import build_classifier
    from attrgan.train.gan import build_gan

    # The checkpoint's weights replace any initial trunk weights, which need not be fetched again.
    config = dataclasses.replace(config, weights=None)
    epochs = Curves.from_state(state.get("curves")).epochs
    best = state.get("best") if config.select_epoch == "best_gain" else None
    if best is not None:
        if best["gain"] is not None:
            extra = {GAIN_KEY: best["gain"] | {"epoch": best["epoch"], "selected_by": "best_gain"}} | dict(extra or {})
        epochs = [e for e in epochs if e["epoch"] == best["epoch"]]
    last = epochs[-1] if epochs else {}
    metrics = {k: v for k, v in last.items() if k.startswith("val_")}
    training = {"manifest": manifest, "run": run_uri, "epochs": state.get("epoch"), "steps": state.get("step"),
                "config": to_dict(config)}
    if config.model == "classifier":
        attributes = tuple(state["attributes"])
        net = build_classifier(config, attributes)
        net.load_state_dict(state["net"])
        thresholds = state.get("thresholds") or [0.5] * len(attributes)
        meta = {"thresholds": list(thresholds), "metrics": metrics, "training": training}
    else:
        net, _ = build_gan(config)
        net.load_state_dict(state["net_g"] if best is None else best["net_g"])
        meta = {"metrics": metrics, "training": training}
    return save_network(network_uri, net, meta | dict(extra or {}), storage=storage)


def _validation_gain(state: dict[str, Any], config: TrainConfig, *, bundle: str, manifest: str,
                     storage: StorageConfig) -> dict[str, Any] | None:
    """A trained generator's `attrgan.train.gain` record, measured in a Ray task with one training
    worker's resources; None for the classifier, without a validation split or without the
    bundle's classifier to measure against."""
    import ray

    classifier_uri = st.join(bundle, "classifier")
    if config.model not in GENERATORS or config.val_split is None:
        return None
    if not st.exists(st.join(classifier_uri, "config.json"), storage):
        log.warning("%s: no classifier in %s, so its validation gain is not measured", config.model, bundle)
        return None
    task = ray.remote(_measure_gain).options(num_cpus=config.cpus_per_worker, num_gpus=1 if config.use_gpu else 0)
    gain = ray.get(task.remote(state["net_g"], config, classifier_uri, manifest, storage))
    if gain is not None:
        log.info("%s: validation gain %+.2f mA (%+.2f to %+.2f) over %d crops", config.model,
                 100 * gain["gain_ma"], 100 * gain["low"], 100 * gain["high"], gain["crops"])
    return gain


def _measure_gain(net_state: dict[str, torch.Tensor], config: TrainConfig, classifier_uri: str, manifest: str,
                  storage: StorageConfig) -> dict[str, Any] | None:
    torch.set_num_threads(config.torch_threads)
    device = "cuda" if config.use_gpu else "cpu"
    return _gain_meter(config, classifier_uri, manifest, storage, device)(net_state)


def _gain_meter(config: TrainConfig, classifier_uri: str, manifest: str, storage: StorageConfig,
                device: str) -> Callable[[dict[str, torch.Tensor]], dict[str, Any] | None]:
    """measure(net_state): the `attrgan.train.gain` record of a `config.model` generator with these
    weights against the classifier at `classifier_uri` on the validation split (with its tracks),
    or None with fewer than 2 validation crops or no labelled attribute. The classifier and the
    crops are loaded once, here: training measures every epoch with one meter. Neither draws from
    torch's random stream (building a network does), so a training process that measures trains
    the same weights as one that does not."""
    from attrgan.bundle import Bundle, load_network
    from attrgan.pipeline import PipelineConfig
    from attrgan.fusion import track_groups
    from attrgan.train.gain import measure_gain
    from attrgan.train.gan import build_gan

    with torch.random.fork_rng(devices=[]):  # networks are built on the CPU, the only stream they draw from
        classifier, classifier_meta = load_network(classifier_uri, storage=storage)
        net_g, _ = build_gan(dataclasses.replace(config, weights=None))
    rows = read_split(manifest, split=config.val_split, storage=storage)
    attributes = tuple(a for a in classifier.config.attributes if a in rows.column_names and a != OCCLUSION_DOWN)
    if rows.num_rows < 2 or not attributes:
        return lambda net_state: None
    crops = load_crops(rows, size=tuple(classifier.config.input_size), attributes=attributes, storage=storage)
    bundle = Bundle(classifier=classifier, reconstruction=None, superres=None,  # type: ignore[arg-type]
                    metas={"classifier": classifier_meta})
    setattr(bundle, config.model, net_g)
    tracks, _ = validation_tracks(rows.take(crops.rows))
    groups = track_groups(tracks)

    def measure(net_state: dict[str, torch.Tensor]) -> dict[str, Any] | None:
        net_g.load_state_dict(net_state)
        with torch.random.fork_rng(devices=[]):
            gain = measure_gain(bundle, config.model, crops.images, crops.labels, crops.crop_sizes,
                                attributes=attributes, config=PipelineConfig(device=device, precision=config.precision),
                                seed=config.seed, groups=groups)
        # Plain Python numbers: the record goes into checkpoints, which load with weights_only.
        return {k: v.item() if isinstance(v, np.generic) else v for k, v in gain.items()}

    return measure


def _track_fusion(config: TrainConfig, *, bundle: str, manifest: str, storage: StorageConfig) -> None:
    """Once the bundle holds all three networks, fit its track fusion on the validation split
    (`attrgan.train.fusion`) in a Ray task with one training worker's resources and store it in the
    classifier's config.json (`attrgan.bundle.store_fusion`). Each network trained into a complete
    bundle refits it: the fusion is fitted on the pipeline the bundle runs now."""
    import ray

    from attrgan.bundle import store_fusion

    if config.val_split is None:
        return
    missing = [n for n in NETWORKS if not st.exists(st.join(bundle, n, "config.json"), storage)]
    if missing:
        log.info("track fusion not fitted yet: %s has no %s", bundle, " or ".join(missing))
        return
    task = ray.remote(_fit_fusion).options(num_cpus=config.cpus_per_worker, num_gpus=1 if config.use_gpu else 0)
    fitted = ray.get(task.remote(bundle, manifest, config, storage))
    if fitted is None:
        return
    fusion, person_level, version = fitted
    if "reason" in fusion.fitted:
        log.info("track fusion: mean (nothing fitted: %s)", fusion.fitted["reason"])
    else:
        shown = ", ".join(f"{rule} {100 * ma:.2f}" for rule, ma in fusion.fitted["ma"].items())
        log.info("track fusion: %s chosen; validation mA per track: %s (%d tracks, %d crops)", fusion.rule, shown,
                 fusion.fitted["tracks"], fusion.fitted["crops"])
    if not store_fusion(bundle, fusion, person_level, bundle_version=version, storage=storage):
        log.info("track fusion not stored: %s changed while it was fitted (its new network fits its own)", bundle)


def _fit_fusion(bundle_uri: str, manifest: str, config: TrainConfig, storage: StorageConfig,
                ) -> tuple[Any, tuple[str, ...], str] | None:
    """(Fusion, the person-level attributes, the bundle version it was fitted on); None without
    validation crops or labels."""
    from attrgan.bundle import load_bundle
    from attrgan.pipeline import PipelineConfig
    from attrgan.train.fusion import fit_fusion

    torch.set_num_threads(config.torch_threads)
    bundle = load_bundle(bundle_uri, storage=storage)
    rows = read_split(manifest, split=config.val_split, storage=storage)
    attributes = tuple(a for a in bundle.attributes if a in rows.column_names)
    if rows.num_rows == 0 or not attributes:
        return None
    crops = load_crops(rows, size=bundle.info.input_size, attributes=attributes, storage=storage)
    tracks, frames = validation_tracks(rows.take(crops.rows))
    fusion = fit_fusion(bundle, crops.images, crops.labels, crops.crop_sizes, tracks, frames, attributes=attributes,
                        config=PipelineConfig(device="cuda" if config.use_gpu else "cpu", precision=config.precision),
                        seed=config.seed)
    return fusion, bundle.info.person_level, bundle.version


# ---- inside a training worker ------------------------------------------------------------------

def _load_state(checkpoint: Any) -> dict[str, Any] | None:
    if checkpoint is None:
        return None
    with checkpoint.as_directory() as folder:
        return torch.load(Path(folder) / CHECKPOINT_FILE, map_location="cpu", weights_only=True)


def _min_across_workers(value: int) -> int:
    """The smallest `value` over all workers, so every rank runs the same number of steps (DDP
    hangs if one rank stops early)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return value
    t = torch.tensor([value], dtype=torch.int64)
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return int(t.item())


def _train_worker(loop_config: dict[str, Any]) -> None:
    import ray.train
    import ray.train.torch

    job: _WorkerJob = loop_config["job"]
    cfg = job.config
    context = ray.train.get_context()
    rank, world_size = context.get_world_rank(), context.get_world_size()
    torch.set_num_threads(cfg.torch_threads)
    torch.manual_seed(cfg.seed + rank)
    device = ray.train.torch.get_device()
    amp = resolve_precision(cfg.precision, device) == "bf16"
    state = _load_state(ray.train.get_checkpoint()) or {}
    if state and job.attributes is not None and tuple(state["attributes"]) != job.attributes:
        raise ConfigError(f"checkpoint attributes {state['attributes']} differ from {list(job.attributes)}")

    crop_size = job.crop_size or cfg.target_size
    train = load_crops(read_split(job.manifest, split=cfg.train_split, storage=job.storage),
                       size=crop_size, attributes=job.attributes, storage=job.storage,
                       rank=rank, world_size=world_size, limit=cfg.max_train_crops)
    shortest = _min_across_workers(len(train))
    if shortest == 0:
        raise TrainDataError(f"a worker got no decodable training crops from {job.manifest}")
    steps = max(1, shortest // cfg.batch_size)
    if cfg.max_steps_per_epoch is not None:
        steps = min(steps, cfg.max_steps_per_epoch)
    val: CropSet | None = None
    if rank == 0 and cfg.val_split is not None:
        val_rows = read_split(job.manifest, split=cfg.val_split, storage=job.storage)
        if val_rows.num_rows:
            val = load_crops(val_rows, size=crop_size, attributes=job.attributes, storage=job.storage)
    if rank == 0:
        print(f"[attrgan] {cfg.model}: {len(train)} training crops per worker × {world_size} "
              f"({train.dropped} undecodable dropped), {len(val) if val else 0} val crops, {steps} steps/epoch, "
              f"starting at epoch {state.get('epoch', 0)} of {cfg.epochs}", flush=True)

    curves = Curves.from_state(state.get("curves"))
    # select_epoch best_gain: rank 0 measures each epoch's generator and keeps the best one so far
    # in the checkpoint, so a resumed run still has it.
    measure, best = None, state.get("best")
    if cfg.select_epoch == "best_gain" and rank == 0:
        measure = _gain_meter(cfg, job.classifier_uri, job.manifest, job.storage, str(device))

    def report(metrics: dict[str, Any], checkpoint_state: dict[str, Any] | None) -> None:
        nonlocal best
        flat = {k: v for k, v in metrics.items() if k != "step_log"}
        if measure is not None and checkpoint_state is not None:
            gain = measure(checkpoint_state["net_g"])
            flat |= {f"val_{k}": math.nan if gain is None else gain[v]
                     for k, v in (("gain_ma", "gain_ma"), ("gain_low", "low"), ("gain_high", "high"))}
            best = keep_best(best, metrics["epoch"], gain, checkpoint_state["net_g"])
            checkpoint_state = checkpoint_state | {"best": best}
        flat["images_per_s"] = flat["images_per_s"] * world_size  # every rank trains as fast
        flat.setdefault("lr", cfg.lr)  # for the curves and TensorBoard; constant (no schedule)
        curves.add_epoch(flat | {"step_log": metrics["step_log"]})
        if rank != 0 or checkpoint_state is None:
            ray.train.report(flat)
            return
        with tempfile.TemporaryDirectory() as folder:
            extra = {"curves": curves.state(), "attributes": list(job.attributes or ())}
            torch.save(checkpoint_state | extra, Path(folder) / CHECKPOINT_FILE)
            write_curves(job.run_uri, curves, storage=job.storage)
            shown = " ".join(f"{k}={v:.4g}" for k, v in flat.items() if k.startswith(("train_", "val_")))
            print(f"[attrgan] {cfg.model} epoch {metrics['epoch'] + 1}/{cfg.epochs} step {metrics['step']} "
                  f"{flat['images_per_s']:.1f} img/s {shown}", flush=True)
            ray.train.report(flat, checkpoint=ray.train.Checkpoint.from_directory(folder),
                             checkpoint_dir_name=f"epoch_{metrics['epoch'] + 1:04d}")

    def indices(epoch: int):
        faults.exit_worker_once(job.kill_at_epoch, job.kill_marker, epoch=epoch, rank=rank, world_size=world_size)
        rng = np.random.default_rng([cfg.seed, rank, epoch])  # per epoch: a resumed epoch sees the same batches
        return rng, epoch_indices(len(train), cfg.batch_size, rng=rng)

    loop = LoopSpec(epochs=cfg.epochs, start_epoch=state.get("epoch", 0), start_step=state.get("step", 0),
                    max_steps_per_epoch=steps, device=device, amp=amp, log_every=cfg.log_every)
    if cfg.model == "classifier":
        _run_classifier(job, train, val, state, loop, report, indices)
    else:
        _run_gan(job, train, val, state, loop, report, indices)


def _run_classifier(job: _WorkerJob, train: CropSet, val: CropSet | None, state: dict[str, Any], loop: LoopSpec,
                    report: Report, indices: Any) -> None:
    import ray.train.torch

    from attrgan.train.classifier import build_classifier, build_optimizer, train_classifier

    cfg = job.config
    net = build_classifier(cfg, job.attributes)
    occlusion_index = job.attributes.index(OCCLUSION_DOWN)
    train_on, occluded_fraction = cfg.train_on, cfg.occluded_fraction
    if cfg.train_on == "restored":
        net, train, val = _restored_start(job, net, train, val, occlusion_index, device=loop.device)
        train_on, occluded_fraction = "clean", 0.0  # the crops come mixed and restored already
    if state:
        net.load_state_dict(state["net"])
    net = ray.train.torch.prepare_model(net)
    opt = build_optimizer(cfg, net.parameters())
    if state:
        opt.load_state_dict(state["opt"])
    if val is not None and cfg.train_on != "restored":
        val = classifier_validation(val, train_on=cfg.train_on, occluded_fraction=cfg.occluded_fraction,
                                    occlusion_index=occlusion_index, occlusion_range=cfg.occlusion_range,
                                    occluded_attribute_labels=cfg.occluded_attribute_labels, seed=cfg.seed,
                                    augment_shares=cfg.augment_shares)

    def batches(epoch: int):
        rng, order = indices(epoch)
        for idx in order:
            yield classifier_batch(train.images[idx], train.labels[idx], rng=rng,
                                   occluded_fraction=occluded_fraction, occlusion_index=occlusion_index,
                                   occlusion_range=cfg.occlusion_range,
                                   occluded_attribute_labels=cfg.occluded_attribute_labels, train_on=train_on,
                                   crop_sizes=train.crop_sizes[idx] if train.crop_sizes is not None else None,
                                   augment_shares=cfg.augment_shares)

    train_classifier(net, opt, batches, loop, ratios=np.asarray(job.ratios, np.float32), report=report,
                     val_images=val.images if val else None, val_labels=val.labels if val else None,
                     threshold_objective=cfg.threshold_objective)


def _restored_start(job: _WorkerJob, net: torch.nn.Module, train: CropSet, val: CropSet | None,
                    occlusion_index: int, *, device: Any) -> tuple[torch.nn.Module, CropSet, CropSet | None]:
    """train_on "restored": the bundle's classifier weights in `net`, and this worker's training
    crops and the validation crops mixed with restored ones (`attrgan.train.restored`), made once."""
    import ray.train

    from attrgan.bundle import load_bundle
    from attrgan.pipeline import PipelineConfig
    from attrgan.train.restored import restored_crops

    cfg = job.config
    bundle = load_bundle(job.bundle_uri, storage=job.storage)
    net.load_state_dict(bundle.classifier.state_dict())
    pipeline = PipelineConfig(device=str(device), precision=cfg.precision)
    rank = ray.train.get_context().get_world_rank()

    def mix(crops: CropSet, seed: list[int]) -> CropSet:
        images, labels, _ = restored_crops(bundle, crops.images, crops.labels, crops.crop_sizes,
                                           shares=cfg.augment_shares, occlusion_index=occlusion_index, seed=seed,
                                           config=pipeline)
        return dataclasses.replace(crops, images=images, labels=labels)

    return net, mix(train, [cfg.seed, rank]), None if val is None else mix(val, [cfg.seed, 1_000_000])


def _gan_pairs(cfg: TrainConfig, crops: CropSet, idx: Any, rng: np.random.Generator, *,
               with_classifier: bool = False, training: bool = True) -> tuple[torch.Tensor, ...]:
    """(lq, gt) at the generator's sizes; for the agreement loss (crops loaded at the classifier's
    input size) (lq, gt, corrupted, clean) with lq and gt shrunk from the last two as the pipeline
    shrinks (G^S: the corrupted crop is not needed, the clean one stands in). Validation pairs
    (`training=False`) are all occluded: unoccluded ones would measure nothing."""
    from attrgan.models.ops import resize_batch

    images = crops.images[idx]
    if cfg.model == "reconstruction":
        occluded, clean = reconstruction_batch(images, rng=rng, occlusion_range=cfg.occlusion_range,
                                              clean_share=cfg.clean_share if training else 0.0)
        size = cfg.network_input_size
        if tuple(occluded.shape[-2:]) == size:
            return occluded, clean
        return resize_batch(occluded, size), resize_batch(clean, size), occluded, clean
    low, clean = superres_batch(images, crops.crop_sizes[idx] if crops.crop_sizes is not None else None)
    if not with_classifier:
        return low, clean
    # G^S trains at its own sizes; the classifier reads the crop at its input size (loaded so).
    return resize_batch(low, cfg.network_input_size), resize_batch(clean, cfg.target_size), clean, clean


def _run_gan(job: _WorkerJob, train: CropSet, val: CropSet | None, state: dict[str, Any], loop: LoopSpec,
             report: Report, indices: Any) -> None:
    import ray.train.torch

    from attrgan.bundle import load_network
    from attrgan.train.gan import AgreementLoss, build_gan, build_gan_optimizers, train_gan

    cfg = job.config
    agreement = None
    if cfg.agreement_weight > 0:
        classifier, _ = load_network(job.classifier_uri, storage=job.storage, device=loop.device)
        agreement = AgreementLoss(classifier, cfg.agreement_weight, as_correction=cfg.model == "reconstruction")
    net_g, net_d = build_gan(cfg)
    if state:
        net_g.load_state_dict(state["net_g"])
        net_d.load_state_dict(state["net_d"])
    net_g, net_d = ray.train.torch.prepare_model(net_g), ray.train.torch.prepare_model(net_d)
    opt_g, opt_d = build_gan_optimizers(cfg, net_g, net_d)
    if state:
        opt_g.load_state_dict(state["opt_g"])
        opt_d.load_state_dict(state["opt_d"])
    # Fixed validation pairs (seeded occlusions) so epochs are compared on the same inputs.
    val_pairs = (_gan_pairs(cfg, val, slice(None), np.random.default_rng(cfg.seed), with_classifier=agreement is not None,
                            training=False)[:2]
                 if val is not None else None)

    def batches(epoch: int):
        rng, order = indices(epoch)
        for idx in order:
            yield _gan_pairs(cfg, train, idx, rng, with_classifier=agreement is not None)

    train_gan(net_g, net_d, opt_g, opt_d, batches, cfg.gan, loop, report=report, val=val_pairs, agreement=agreement)

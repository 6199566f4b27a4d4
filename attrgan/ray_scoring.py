"""How crops are scored on a Ray cluster: shared by the extraction and the evaluation jobs.

    rows ──► decode (`attrgan.data.images.decode_batch`): CPU tasks beside actors that hold GPUs
             or custom resources, or inside the actors when they run on CPUs (every CPU then
             decodes and infers in turn, with no hop through the object store)
         ──► one actor pool, each actor loading the bundle once (`load_actor_bundle`)

`plan_actors` sizes the pool (pure, tested) from the settings and `cluster_offer`; `score_stream`
builds the Ray Data stage. Read and
write tasks around the stream always find a CPU share (`IO_CPUS`): Ray Data hangs when actors
hold every CPU.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from attrgan.config import StorageConfig
from attrgan.data.manifest import PARTITION_INDEX, ROW_ERROR
from attrgan.contracts import TRANSIENT, TransientHistory, error_kind, gave_up_error

if TYPE_CHECKING:  # torch: only the actors import the pipeline (the write tasks import this module)
    from attrgan.pipeline import PipelineConfig

# Logical CPUs kept free of actors for the tasks that read manifests and write results (they
# spend their time waiting on storage), and the share each such task asks for.
IO_CPUS = 0.2
IO_TASK_CPUS = 0.05


class Unschedulable(ValueError):
    """No node the cluster has, or its autoscaler can add, offers what one pipeline actor asks for."""


@dataclasses.dataclass(frozen=True)
class ActorPlan:
    """Resources of the pipeline actors and of the decode tasks (none when the actors decode).

    The pool runs `min_actors` to `actors` actors; each asks for `num_cpus`, `num_gpus` and the
    custom Ray `resources`."""

    actors: int
    min_actors: int
    num_cpus: float
    num_gpus: float
    decode_cpus: float
    torch_threads: int
    decode_in_actors: bool = False
    resources: Mapping[str, float] = dataclasses.field(default_factory=dict)

    def asks(self) -> dict[str, float]:
        """What one actor asks of a node, in Ray's resource names."""
        asked = {"CPU": self.num_cpus, "GPU": self.num_gpus, **self.resources}
        return {k: v for k, v in asked.items() if v > 0}


def plan_actors(*, cluster_cpus: float, cluster_gpus: float, actors: int, min_actors: int = 1,
                gpus_per_actor: float = 1.0, cpus_per_actor: float | None = None,
                torch_threads: int | None = None, decode_in_actors: bool | None = None,
                device: str = "auto", actor_resources: Mapping[str, float] | None = None,
                node_types: Sequence[Mapping[str, float]] | None = None) -> ActorPlan:
    """Size the actor pool so it cannot starve the decode, read and write tasks of CPUs.

    cluster_cpus, cluster_gpus: what the cluster has now. node_types: the resources of each kind
    of node it has or its autoscaler can add (`cluster_offer`); None = not known.

    GPU actors (`gpus_per_actor` GPU each) when `device` is "cuda", or "auto" with GPUs now or in
    a node type; never with "cpu" or gpus_per_actor=0. Actors that hold GPUs the cluster has now
    ("auto") are capped by those GPUs, as are their CPU shares by its CPUs. Actors that ask for
    more than is up now ("cuda", GPUs only in node types, or any `actor_resources`) are sized from
    the settings alone: up to `actors` of them, `cpus_per_actor` (default 1) CPU each, and the
    autoscaler adds the nodes they need; Unschedulable when `node_types` is known and no node type
    offers one actor's resources.

    CPU actors share the cluster's CPUs: decode tasks take one CPU (half the machine on a
    single-CPU cluster); read/write tasks share `IO_CPUS`. Actors share what is left,
    `min(1, (cpus - decode - IO_CPUS) / actors)` each unless `cpus_per_actor` is given: 0.9 CPU
    each for 2 actors on 2 CPUs decoding in the actors. A pool that would not fit is shrunk.
    torch_threads: each actor's intra-op threads; None = its CPU share rounded, at least 1.
    decode_in_actors: None = True exactly when the actors run on CPUs and ask for nothing else.
    """
    extra = {k: float(v) for k, v in (actor_resources or {}).items() if v > 0}
    offers_gpus = cluster_gpus > 0 or any(t.get("GPU", 0) > 0 for t in node_types or ())
    use_gpu = gpus_per_actor > 0 and device != "cpu" and (device != "auto" or offers_gpus)
    # Actors placed by what nodes may come: not sized by (nor capped at) what is up now.
    ahead = bool(extra) or use_gpu and (device != "auto" or cluster_gpus <= 0)
    in_actors = not (use_gpu or extra) if decode_in_actors is None else decode_in_actors
    if ahead:
        num_cpus = cpus_per_actor if cpus_per_actor is not None else 1.0
        plan = ActorPlan(actors=actors, min_actors=min(min_actors, actors), num_cpus=num_cpus,
                         num_gpus=gpus_per_actor if use_gpu else 0.0, decode_cpus=0.0 if in_actors else 1.0,
                         torch_threads=torch_threads if torch_threads is not None else max(1, round(num_cpus)),
                         decode_in_actors=in_actors, resources=extra)
        if node_types is not None and not any(_fits(plan.asks(), t) for t in node_types):
            raise Unschedulable(f"no node the cluster has or can add offers what each pipeline actor asks for, "
                                f"{resources_text(plan.asks())}; its nodes and node types offer {_offer(node_types)}; "
                                "check actor_resources, gpus_per_actor, cpus_per_actor and pipeline.device against "
                                "the worker groups' resources")
        return plan
    if cluster_cpus <= 0:
        raise ValueError(f"the Ray cluster has no CPUs to decode on, got {cluster_cpus}")
    decode_cpus = 0.0 if in_actors else 1.0 if cluster_cpus >= 2 else cluster_cpus / 2
    spare = cluster_cpus - decode_cpus - min(IO_CPUS, cluster_cpus / 4)
    if use_gpu:
        actors = max(1, min(actors, math.floor(cluster_gpus / gpus_per_actor + 1e-9)))
    num_cpus = cpus_per_actor if cpus_per_actor is not None else min(1.0, spare / actors)
    if num_cpus * actors > spare + 1e-9:
        fitting = math.floor(spare / num_cpus + 1e-9)
        if fitting < 1:
            raise ValueError(f"cpus_per_actor={num_cpus} does not fit a cluster of {cluster_cpus} CPUs"
                             f"{'' if in_actors else ' with a CPU left for decoding'}; use at most {spare:g}")
        actors = fitting
    return ActorPlan(actors=actors, min_actors=min(min_actors, actors), num_cpus=num_cpus,
                     num_gpus=gpus_per_actor if use_gpu else 0.0, decode_cpus=decode_cpus,
                     torch_threads=torch_threads if torch_threads is not None else max(1, round(num_cpus)),
                     decode_in_actors=in_actors)


def _fits(asked: Mapping[str, float], offered: Mapping[str, float]) -> bool:
    return all(offered.get(k, 0.0) >= v - 1e-9 for k, v in asked.items())


def resources_text(resources: Mapping[str, float]) -> str:
    """{"CPU": 1.0, "GPU": 1.0} → "{CPU: 1, GPU: 1}" (Ray's bookkeeping entries left out)."""
    shown = (f"{k}: {v:g}" for k, v in sorted(resources.items())
             if k not in ("memory", "object_store_memory") and not k.startswith("node:"))
    return "{" + ", ".join(shown) + "}"


def _offer(node_types: Sequence[Mapping[str, float]]) -> str:
    kinds = sorted({resources_text(t) for t in node_types})
    return ", ".join(kinds[:10]) + (" …" if len(kinds) > 10 else "") if kinds else "no nodes at all"


def cluster_offer() -> tuple[dict[str, float], tuple[dict[str, float], ...] | None]:
    """(what the running Ray cluster has now, the resources of each kind of node it has or can add).

    The second is None when the cluster's autoscaler does not tell the job its node types: Ray 2.60
    keeps them in the GCS (`get_cluster_config`, node group configs) only when an autoscaler reports
    them, which neither of its autoscalers does yet, so on an autoscaling cluster the run instead
    waits a bounded time for its first actors (`actor_start_timeout_s`). A cluster with no
    autoscaler can offer only the nodes it has.
    """
    import ray
    from ray._private import state
    from ray.autoscaler.v2.utils import is_autoscaler_v2
    from ray.experimental.internal_kv import _internal_kv_get

    now = {k: float(v) for k, v in ray.cluster_resources().items()}
    nodes = [{k: float(v) for k, v in n["Resources"].items()} for n in ray.nodes() if n.get("Alive")]
    config = state.state.get_cluster_config()
    if config is not None and config.node_group_configs:
        groups = [{k: float(v) for k, v in g.resources.items()} for g in config.node_group_configs if g.max_count != 0]
        return now, tuple(nodes + groups)
    # The v1 autoscaler writes its status under this key every few seconds (from its first update
    # on, so a job must not start within a new head's first seconds); v2 is flagged in the KV.
    autoscaled = _internal_kv_get("__autoscaling_status") is not None or is_autoscaler_v2(fetch_from_server=True)
    return now, None if autoscaled else tuple(nodes)


def wait_for_one_actor(asks: Mapping[str, float], timeout_s: float) -> None:
    """Wait until the cluster can place one pipeline actor: a placement group of its resources,
    which the autoscaler adds a node for if it must. Unschedulable after `timeout_s`: a pool that
    no node will ever take fails instead of hanging. (Ray Data's own wait for a pool's first actors,
    `wait_for_min_actors_s`, kept a pool that lost a node mid-run from recovering.)"""
    import ray
    from ray.util.placement_group import placement_group, remove_placement_group

    group = placement_group([dict(asks)])
    try:
        ray.get(group.ready(), timeout=timeout_s)
    except ray.exceptions.GetTimeoutError:
        raise Unschedulable(
            f"no pipeline actor could start within actor_start_timeout_s={timeout_s:g} s; each asks for "
            f"{resources_text(asks)} and the cluster has {resources_text(ray.cluster_resources())} now; check "
            "actor_resources, gpus_per_actor and pipeline.device against the worker groups' resources and that "
            "the autoscaler is on (or give a slow node start a longer actor_start_timeout_s)") from None
    finally:
        remove_placement_group(group)


def load_actor_bundle(bundle_uri: str, storage: StorageConfig, pipeline_config: PipelineConfig,
                      torch_threads: int) -> tuple[Any, PipelineConfig]:
    """What every model actor does first: set its torch threads, load the bundle, and pin the
    pipeline's device. Returns (bundle, pipeline config)."""
    import torch

    from attrgan.bundle import load_bundle

    torch.set_num_threads(torch_threads)
    # Ray hides GPUs this actor was not given, so "auto" means "the GPU Ray assigned, if any".
    device = "cuda" if pipeline_config.device == "auto" and torch.cuda.is_available() else pipeline_config.device
    bundle = load_bundle(bundle_uri, storage=storage, device="cpu")
    return bundle, dataclasses.replace(pipeline_config, device=device)


class ScoringActor:
    """The Ray Data actor of the extraction and the evaluation: loads the bundle once and builds its
    job's scorer from it (`make_scorer(bundle, pipeline_config)`: `attrgan.extract.ResultsScorer`,
    `attrgan.evaluate.VariantScorer`), then scores each batch under inference mode.

    decode: `decode_rows` keyword arguments when the actor decodes its batches itself (its input is
    then manifest rows); None when decode tasks did it before. counter: a `RowCounter` told each
    batch's rows (the extraction's progress line), or None.
    """

    def __init__(self, *, make_scorer: Callable[[Any, PipelineConfig], Callable[[dict[str, np.ndarray]], Any]],
                 bundle_uri: str, storage: StorageConfig, pipeline_config: PipelineConfig, torch_threads: int,
                 decode: Mapping[str, Any] | None = None, counter: Any = None) -> None:
        self.decode = dict(decode) if decode is not None else None
        self.scorer = make_scorer(*load_actor_bundle(bundle_uri, storage, pipeline_config, torch_threads))
        self.counter = counter

    def __call__(self, batch: dict[str, np.ndarray]) -> Any:
        import torch

        batch = decode_rows(batch, **self.decode) if self.decode is not None else batch
        with torch.inference_mode():
            out = self.scorer(batch)
        if self.counter is not None:
            self.counter.add.remote(len(batch["crop_id"]))  # fire and forget: one tiny call per batch
        return out


def decode_rows(batch: dict[str, np.ndarray], *, transient: TransientHistory | None = None,
                **decode: Any) -> dict[str, np.ndarray]:
    """`decode_batch`, except that rows with a ROW_ERROR are not fetched and keep that error, and
    that a crop `transient` gives up on gets a permanent error instead of a transient one."""
    from attrgan.data.images import decode_batch

    problems = batch.get(ROW_ERROR)
    failed = None if problems is None else np.array([p is not None and p == p for p in problems], dtype=bool)
    if failed is None or not failed.any():  # (None or NaN: no problem)
        out = decode_batch(batch, **decode)
    else:
        given = np.asarray(batch["image_uri"], dtype=object)
        out = decode_batch({**batch, "image_uri": np.where(failed, "", given)}, **decode)
        out["image_uri"] = given
        out["status"] = np.where(failed, "error", np.asarray(out["status"], dtype=object)).astype(object)
        out["error"] = np.where(failed, np.asarray(problems, dtype=object), np.asarray(out["error"], dtype=object))
    if transient is not None and PARTITION_INDEX in out:
        out["error"] = give_up(out["error"], out["crop_id"], out[PARTITION_INDEX], transient)
    return out


def give_up(errors: Any, crop_ids: Any, partitions: Any, transient: TransientHistory) -> np.ndarray:
    """`errors` with each transient one that `transient` gives up on made permanent."""
    errors = np.asarray(errors, dtype=object).copy()
    for i, error in enumerate(errors):
        if isinstance(error, str) and error_kind(error) == TRANSIENT:
            runs = transient.gives_up(int(partitions[i]), str(crop_ids[i]))
            if runs is not None:
                errors[i] = gave_up_error(error, runs)
    return errors


def let_pools_grow() -> None:
    """Make the actor pools of datasets created from now on grow while every actor has a task.
    Ray Data's default (1.75 tasks per actor slot) is out of reach of actors that take one task at
    a time (`score_stream`, decoding in the actors): such a pool would never grow past min_actors.
    A dataset keeps the context it was created with, so call this before creating it."""
    import ray.data

    ray.data.DataContext.get_current().autoscaling_config.actor_pool_util_upscaling_threshold = 1.0


def score_stream(ds: Any, make_scorer: Callable[..., Any], *, plan: ActorPlan, batch_size: int,
                 decode: Mapping[str, Any], bundle_uri: str, storage: StorageConfig,
                 pipeline_config: PipelineConfig, counter: Any = None, **ray_remote_args: Any) -> Any:
    """`ds` (manifest rows) → decode (tasks, or inside the actors as `plan` says) → a pool of
    `ScoringActor`s running `make_scorer(bundle, pipeline_config)`. Extra `ray_remote_args`
    (max_restarts, runtime_env, ...) go to the actors.
    """
    import ray.data

    if not plan.decode_in_actors:
        ds = ds.map_batches(decode_rows, batch_format="numpy", batch_size=batch_size, fn_kwargs=dict(decode),
                            num_cpus=plan.decode_cpus, udf_modifying_row_count=False)
    with warnings.catch_warnings():
        # Ray 2.60 flags every extra remote kwarg as deprecated, but max_restarts and
        # max_task_retries have no named parameter yet.
        warnings.filterwarnings("ignore", message="`ray_remote_args` is deprecated")
        return ds.map_batches(
            ScoringActor, batch_format="numpy", batch_size=batch_size,
            fn_constructor_kwargs={"make_scorer": make_scorer, "bundle_uri": bundle_uri, "storage": storage,
                                   "pipeline_config": pipeline_config, "torch_threads": plan.torch_threads,
                                   "decode": dict(decode) if plan.decode_in_actors else None, "counter": counter},
            # CPU actors that decode take one block at a time, so the first actor up cannot queue
            # the blocks of a small run that the others should share (Ray's default pipelines
            # blocks into GPU actors, whose input was decoded beforehand).
            compute=ray.data.ActorPoolStrategy(min_size=plan.min_actors, max_size=plan.actors,
                                               max_tasks_in_flight_per_actor=1 if plan.decode_in_actors else None),
            num_cpus=plan.num_cpus, num_gpus=plan.num_gpus, resources=dict(plan.resources) or None,
            udf_modifying_row_count=False, **ray_remote_args)

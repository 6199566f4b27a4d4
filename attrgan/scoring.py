"""How crops are scored on a Ray cluster: shared by the extraction and the evaluation jobs.

    rows ──► decode (`attrgan.data.images.decode_batch`): CPU tasks beside GPU actors, or inside
             the actors when they run on CPUs (every CPU then decodes and infers in turn, with no
             hop through the object store)
         ──► one actor pool, each actor loading the bundle once (`load_actor_bundle`)

`plan_actors` sizes the pool (pure, tested); `score_stream` builds the Ray Data stage. Read and
write tasks around the stream always find a CPU share (`IO_CPUS`): Ray Data hangs when actors
hold every CPU.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Mapping
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


@dataclasses.dataclass(frozen=True)
class ActorPlan:
    """Resources of the pipeline actors and of the decode tasks (none when the actors decode)."""

    actors: int
    min_actors: int
    num_cpus: float
    num_gpus: float
    decode_cpus: float
    torch_threads: int
    decode_in_actors: bool = False


def plan_actors(*, cluster_cpus: float, cluster_gpus: float, actors: int, min_actors: int = 1,
                gpus_per_actor: float = 1.0, cpus_per_actor: float | None = None,
                torch_threads: int | None = None, decode_in_actors: bool | None = None) -> ActorPlan:
    """Size the actor pool so it cannot starve the decode, read and write tasks of CPUs.

    Decode tasks take one CPU (half the machine on a single-CPU cluster); read/write tasks share
    `IO_CPUS`. Actors share what is left, `min(1, (cpus - decode - IO_CPUS) / actors)` each unless
    `cpus_per_actor` is given: 0.9 CPU each for 2 actors on 2 CPUs decoding in the actors. On a
    GPU cluster each actor also takes `gpus_per_actor` GPU and the pool is capped by the GPUs, so
    decode tasks run on the remaining CPUs while the GPUs infer. A pool that would not fit is shrunk.
    torch_threads: each actor's intra-op threads; None = its CPU share rounded, at least 1.
    decode_in_actors: None = True exactly when the actors run on CPUs.
    """
    if cluster_cpus <= 0:
        raise ValueError(f"the Ray cluster has no CPUs to decode on, got {cluster_cpus}")
    use_gpu = cluster_gpus > 0 and gpus_per_actor > 0
    in_actors = not use_gpu if decode_in_actors is None else decode_in_actors
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


class DecodingActor:
    """Base of the scoring actors: decodes manifest rows itself when `decode` (the keyword
    arguments of `decode_batch`) is given; otherwise its input was decoded by tasks before it."""

    def __init__(self, decode: Mapping[str, Any] | None) -> None:
        self.decode = dict(decode) if decode is not None else None

    def decoded(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return decode_rows(batch, **self.decode) if self.decode is not None else batch


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


def score_stream(ds: Any, actor: type[DecodingActor], *, plan: ActorPlan, batch_size: int,
                 decode: Mapping[str, Any], actor_kwargs: Mapping[str, Any], **ray_remote_args: Any) -> Any:
    """`ds` (manifest rows) → decode (tasks, or inside the actors as `plan` says) → `actor` pool.

    `actor` is built with `actor_kwargs` plus `decode` (None when decode tasks did it) and
    `torch_threads`. Extra `ray_remote_args` (max_restarts, runtime_env, ...) go to the actors.
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
            actor, batch_format="numpy", batch_size=batch_size,
            fn_constructor_kwargs={**actor_kwargs, "torch_threads": plan.torch_threads,
                                   "decode": dict(decode) if plan.decode_in_actors else None},
            # CPU actors that decode take one block at a time, so the first actor up cannot queue
            # the blocks of a small run that the others should share (Ray's default pipelines
            # blocks into GPU actors, whose input was decoded beforehand).
            compute=ray.data.ActorPoolStrategy(min_size=plan.min_actors, max_size=plan.actors,
                                               max_tasks_in_flight_per_actor=1 if plan.decode_in_actors else None),
            num_cpus=plan.num_cpus, num_gpus=plan.num_gpus, udf_modifying_row_count=False, **ray_remote_args)

"""The nightly extraction job: manifest → restore-and-classify → results Parquet, on Ray Data.

One Ray Data stream over the rows of every input partition to process (DESIGN.md "Manifest"),
each row tagged with its partition:

    rows ──► decode (attrgan.data.images.decode_batch; a bad row stays, status=error; an
             image_uri outside `manifest.allowed_prefixes` is refused, never fetched): CPU tasks
             beside GPU actors, so decoding scales over the CPUs while the GPUs infer; inside
             the actors when they run on CPUs, where every CPU then decodes and infers in turn
             with no hop through the object store
         ──► one actor pool for the whole run, each actor holding the whole `Pipeline` (SR →
             classify → reconstruct → classify), loaded once per actor (a GPU each on GPU clusters)
         ──► results rows (DESIGN.md "Results": exactly one per manifest row)
         ──► the driver sorts them by partition: `<out>/<partition path>/part-*.parquet`, then
             `<out>/<partition path>/_SUCCESS` as soon as that partition is complete

Each partition is written under its own prefix, which is emptied just before its first file, so
a rerun replaces that partition only (never `mode="overwrite"` on the base path: it deletes every
partition). Ray's `write_parquet(partition_cols=...)` is not used: it drops the key columns from
the files (a manifest partitioned by camera_id would lose that results column), re-encodes the
values of the folder names and writes files per task and partition. The output is read back and
checked to hold exactly the manifest's crop_ids, each once, before `_SUCCESS` (JSON:
model_version, rows, errors, ...) is written. An incremental run skips the partitions whose
`_SUCCESS` names the same bundle version.

Resource sizing follows "Facts learned the hard way": decode tasks, where there are any, always
find a CPU (actors take a fractional share on small machines), and killed actors are restarted
with their batch redone.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import math
import os
import sys
import time
import warnings
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from attrgan.config import StorageConfig
from attrgan.data.manifest import ManifestError, allowed_prefixes, list_partitions, read_manifest
from attrgan.data.storage import delete_prefix, filesystem, join, read_bytes, write_bytes
from attrgan.pipeline import Pipeline, PipelineConfig

log = logging.getLogger(__name__)

SUCCESS_FILE = "_SUCCESS"
# Manifest columns the job reads; the last four are carried to the results.
INPUT_COLUMNS = ("crop_id", "image_uri", "bbox_x", "bbox_y", "bbox_w", "bbox_h", "camera_id", "captured_at")
FIXED_RESULT_FIELDS = (
    pa.field("crop_id", pa.string(), nullable=False),
    pa.field("image_uri", pa.string(), nullable=False),
    pa.field("camera_id", pa.string()),
    pa.field("captured_at", pa.timestamp("us", tz="UTC")),
    pa.field("status", pa.string(), nullable=False),
    pa.field("error", pa.string()),
    pa.field("super_resolved", pa.bool_(), nullable=False),
    pa.field("reconstructed", pa.bool_(), nullable=False),
    pa.field("occlusion_score", pa.float32()),
)
TRAILING_RESULT_FIELDS = (
    pa.field("model_version", pa.string(), nullable=False),
    pa.field("processed_at", pa.timestamp("us", tz="UTC"), nullable=False),
)
# Fault drill: set to a local file path and the first actor to reach its second batch creates the
# file and exits abruptly, so actor restarts can be exercised end to end (single-node runs).
FAULT_ENV = "ATTRGAN_EXTRACT_FAULT_MARKER"
# Index (into the run's list of partitions) that each row carries through the stream.
PARTITION_INDEX = "_partition_index"


class ExtractError(RuntimeError):
    """A partition's output failed its checks; its `_SUCCESS` marker was not written."""


@dataclasses.dataclass(frozen=True)
class ExtractConfig:
    """One extraction run.

    manifest: manifest URI (file, folder or hive-partitioned prefix; s3:// or local).
    bundle: model bundle URI (attrgan.bundle).
    out: results base URI; each manifest partition is written to `<out>/<partition path>/`.
    partitions: partitions to process ("date=2026-11-25", or a leading part of a deeper path);
        empty = all of them.
    actors: most pipeline actors; min_actors: actors kept up from the start.
    gpus_per_actor: GPU share of each actor when the cluster has GPUs (0 = run on CPU anyway).
    cpus_per_actor: CPU share of each actor; None = 1 on a GPU cluster, otherwise what leaves a
        whole CPU to decoding (at most 1 per actor).
    torch_threads: intra-op threads of each actor's torch; None = its whole CPUs (at least 1).
    decode_in_actors: decode inside the pipeline actors instead of in separate CPU tasks; None =
        inside when the actors run on CPUs, in separate tasks when they hold GPUs.
    batch_size: rows per decode and inference batch.
    incremental: skip partitions whose _SUCCESS names the same bundle version.
    max_restarts: restarts of a dead actor (and retries of its batch) before the job fails.
    rows_per_file: fewest rows per output Parquet file (fewer only for a partition's last file).
    """

    manifest: str
    bundle: str
    out: str
    partitions: tuple[str, ...] = ()
    actors: int = 2
    min_actors: int = 1
    gpus_per_actor: float = 1.0
    cpus_per_actor: float | None = None
    torch_threads: int | None = None
    decode_in_actors: bool | None = None
    batch_size: int = 64
    incremental: bool = True
    max_restarts: int = 3
    rows_per_file: int = 100_000
    pipeline: PipelineConfig = dataclasses.field(default_factory=PipelineConfig)
    storage: StorageConfig = dataclasses.field(default_factory=StorageConfig)

    def __post_init__(self) -> None:
        object.__setattr__(self, "partitions", tuple(self.partitions))
        for name in ("manifest", "bundle", "out"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise ValueError(f"ExtractConfig.{name} must be a URI, got {getattr(self, name)!r}")
        for name in ("actors", "min_actors", "batch_size", "rows_per_file"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"ExtractConfig.{name} must be an integer >= 1, got {value!r}")
        if self.min_actors > self.actors:
            raise ValueError(f"ExtractConfig.min_actors must be <= actors ({self.actors}), got {self.min_actors}")
        if not self.gpus_per_actor >= 0:
            raise ValueError(f"ExtractConfig.gpus_per_actor must be >= 0, got {self.gpus_per_actor!r}")
        if self.cpus_per_actor is not None and not self.cpus_per_actor > 0:
            raise ValueError(f"ExtractConfig.cpus_per_actor must be > 0 or None, got {self.cpus_per_actor!r}")
        if self.torch_threads is not None and (not isinstance(self.torch_threads, int) or self.torch_threads < 1):
            raise ValueError(f"ExtractConfig.torch_threads must be an integer >= 1 or None, got {self.torch_threads!r}")
        if not isinstance(self.max_restarts, int) or self.max_restarts < 0:
            raise ValueError(f"ExtractConfig.max_restarts must be an integer >= 0, got {self.max_restarts!r}")


@dataclasses.dataclass(frozen=True)
class PartitionSummary:
    partition: str  # "" for an unpartitioned manifest
    rows: int
    errors: dict[str, int]  # error kind (the message up to its first ':') → rows
    super_resolved: int
    reconstructed: int
    seconds: float  # from the start of the run until its _SUCCESS was written


@dataclasses.dataclass(frozen=True)
class Summary:
    """What a run did. `rows` etc. count the partitions processed in this run, not skipped ones."""

    model_version: str
    processed: tuple[PartitionSummary, ...]
    skipped: tuple[str, ...]
    seconds: float

    @property
    def rows(self) -> int:
        return sum(p.rows for p in self.processed)

    @property
    def errors(self) -> dict[str, int]:
        total: Counter[str] = Counter()
        for p in self.processed:
            total.update(p.errors)
        return dict(total.most_common())

    @property
    def super_resolved(self) -> int:
        return sum(p.super_resolved for p in self.processed)

    @property
    def reconstructed(self) -> int:
        return sum(p.reconstructed for p in self.processed)

    @property
    def crops_per_s(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else 0.0

    def format(self) -> str:
        errors = sum(self.errors.values())
        lines = [f"extract: {len(self.processed)} partition(s) processed, {len(self.skipped)} skipped "
                 f"(up to date), bundle {self.model_version}",
                 f"  rows {self.rows}, errors {errors}, super-resolved {self.super_resolved}, "
                 f"reconstructed {self.reconstructed}, {self.crops_per_s:.1f} crops/s over {self.seconds:.1f} s"]
        lines += [f"  error {kind!r}: {count}" for kind, count in self.errors.items()]
        return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# results schema and rows (pure functions, no Ray)


def results_schema(attributes: Sequence[str]) -> pa.Schema:
    """The results table of DESIGN.md: fixed columns, `<attr>` bool and `<attr>_score` float32 per
    attribute (in model order), then model_version and processed_at."""
    fixed = {f.name for f in FIXED_RESULT_FIELDS + TRAILING_RESULT_FIELDS}
    attr_fields = []
    for a in attributes:
        for field in (pa.field(a, pa.bool_()), pa.field(f"{a}_score", pa.float32())):
            if field.name in fixed:
                raise ValueError(f"attribute {a!r} collides with the results column {field.name!r}")
            attr_fields.append(field)
    return pa.schema([*FIXED_RESULT_FIELDS, *attr_fields, *TRAILING_RESULT_FIELDS])


def error_kind(message: str) -> str:
    """The kind of an error message: its text up to the first ':' ("missing object: s3://…")."""
    return message.split(":", 1)[0].strip() or "error"


def results_batch(batch: Mapping[str, np.ndarray], pipeline: Pipeline, *, model_version: str,
                  processed_at: dt.datetime) -> pa.Table:
    """Run `pipeline` on a decoded batch and build its results rows (one per input row).

    Input columns: crop_id, image_uri, camera_id, captured_at (datetime64 or objects, UTC),
    image (N, H, W, 3) uint8, crop_height int, status ("ok" / "error"), error (str or None).
    Rows with status "error" skip the models: they keep their row with null scores and decisions.
    Output: a table with `results_schema(pipeline.attributes)`.
    """
    n = len(batch["crop_id"])
    attributes = pipeline.attributes
    status = np.asarray(batch["status"]).astype(str)
    ok = status == "ok"
    a = len(attributes)
    scores = np.zeros((n, a), np.float32)
    decisions = np.zeros((n, a), bool)
    sr = np.zeros(n, bool)
    rec = np.zeros(n, bool)
    occlusion = np.zeros(n, np.float32)
    if ok.any():
        rows = np.flatnonzero(ok)
        out = pipeline(np.asarray(batch["image"])[rows], np.asarray(batch["crop_height"])[rows].astype(np.int64))
        scores[rows], decisions[rows] = out["scores"], out["decisions"]
        sr[rows], rec[rows], occlusion[rows] = out["super_resolved"], out["reconstructed"], out["occlusion_score"]
    null = ~ok  # error rows: no scores, no decisions (unknown, not negative)
    columns: dict[str, pa.Array] = {
        "crop_id": _strings(batch["crop_id"]),
        "image_uri": _strings(batch["image_uri"]),
        "camera_id": _strings(batch["camera_id"]),
        "captured_at": _timestamps(batch["captured_at"]),
        "status": pa.array(status.tolist(), pa.string()),
        "error": pa.array([None if k else str(e) for k, e in zip(ok, batch["error"])], pa.string()),
        "super_resolved": pa.array(sr),
        "reconstructed": pa.array(rec),
        "occlusion_score": pa.array(occlusion, pa.float32(), mask=null | np.isnan(occlusion)),
    }
    for i, name in enumerate(attributes):
        columns[name] = pa.array(decisions[:, i], pa.bool_(), mask=null)
        columns[f"{name}_score"] = pa.array(scores[:, i], pa.float32(), mask=null)
    columns["model_version"] = pa.array([model_version] * n, pa.string())
    columns["processed_at"] = pa.array([processed_at] * n, pa.timestamp("us", tz="UTC"))
    return pa.Table.from_arrays(list(columns.values()), schema=results_schema(attributes))


def _is_null(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _strings(values: Any) -> pa.Array:
    """A string column from a batch. A column that was all null on its way through Ray Data can
    come back as float NaN (Arrow's null type), so NaN is null here too."""
    return pa.array([None if _is_null(v) else str(v) for v in np.asarray(values).tolist()], pa.string())


def _timestamps(values: Any) -> pa.Array:
    """captured_at as timestamp[us, UTC]. Ray Data hands tz-aware timestamps over as naive
    datetime64 holding the UTC instant; casting a naive timestamp to UTC keeps that instant.
    An all-null column may arrive as None objects or float NaN."""
    values = np.asarray(values)
    if values.dtype.kind == "M":
        return pa.array(values).cast(pa.timestamp("us", tz="UTC"), safe=False)
    items = [None if _is_null(v) else v for v in values.tolist()]
    return pa.array(items, pa.timestamp("us", tz="UTC")) if items else pa.nulls(0, pa.timestamp("us", tz="UTC"))


# ---------------------------------------------------------------------------------------------
# resource sizing


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
    """Size the actor pool so it cannot starve the decode tasks of CPUs (Ray Data then hangs).

    Decode tasks take one CPU (half the machine on a single-CPU cluster). Actors share what one
    decode task leaves, `min(1, (cpus - decode) / actors)` each unless `cpus_per_actor` is given:
    1 CPU each for 2 actors on 4 CPUs, 0.5 for 2 actors on 2 CPUs. On a GPU cluster each actor
    also takes `gpus_per_actor` GPU and the pool is capped by the GPUs, so decode tasks run on the
    remaining CPUs while the GPUs infer. A pool that would leave no CPU to decode is shrunk.
    torch_threads: each actor's intra-op threads; None = its CPU share rounded down, at least 1.
    decode_in_actors: None = True exactly when the actors run on CPUs. Then there are no decode
    tasks to starve and the actors share every CPU (`min(1, cpus / actors)` each by default).
    """
    if cluster_cpus <= 0:
        raise ValueError(f"the Ray cluster has no CPUs to decode on, got {cluster_cpus}")
    use_gpu = cluster_gpus > 0 and gpus_per_actor > 0
    in_actors = not use_gpu if decode_in_actors is None else decode_in_actors
    decode_cpus = 0.0 if in_actors else 1.0 if cluster_cpus >= 2 else cluster_cpus / 2
    spare = cluster_cpus - decode_cpus
    if use_gpu:
        actors = max(1, min(actors, math.floor(cluster_gpus / gpus_per_actor + 1e-9)))
    num_cpus = cpus_per_actor if cpus_per_actor is not None else min(1.0, spare / actors)
    if num_cpus * actors > spare + 1e-9:
        fitting = math.floor(spare / num_cpus + 1e-9)
        if fitting < 1:
            raise ValueError(f"cpus_per_actor={num_cpus} does not fit a cluster of {cluster_cpus} CPUs"
                             f"{'' if in_actors else ' with a CPU left for decoding'}; use at most {spare}")
        actors = fitting
    return ActorPlan(actors=actors, min_actors=min(min_actors, actors), num_cpus=num_cpus,
                     num_gpus=gpus_per_actor if use_gpu else 0.0, decode_cpus=decode_cpus,
                     torch_threads=torch_threads if torch_threads is not None else max(1, int(num_cpus)),
                     decode_in_actors=in_actors)


# ---------------------------------------------------------------------------------------------
# the actor


def load_actor_bundle(bundle_uri: str, storage: StorageConfig, pipeline_config: PipelineConfig,
                      torch_threads: int) -> tuple[Any, PipelineConfig]:
    """What every model actor (extraction's, the evaluation's) does first: set its torch threads,
    load the bundle, and pin the pipeline's device. Returns (bundle, pipeline config)."""
    import torch

    from attrgan.bundle import load_bundle

    torch.set_num_threads(torch_threads)
    # Ray hides GPUs this actor was not given, so "auto" means "the GPU Ray assigned, if any".
    device = "cuda" if pipeline_config.device == "auto" and torch.cuda.is_available() else pipeline_config.device
    bundle = load_bundle(bundle_uri, storage=storage, device="cpu")
    return bundle, dataclasses.replace(pipeline_config, device=device)


class PipelineActor:
    """Ray Data actor: loads the bundle once, then turns decoded batches into results tables.

    decode: `decode_batch` keyword arguments when the actor decodes its batches itself (its input
    is then manifest rows); None when decode tasks did it before.
    """

    def __init__(self, *, bundle_uri: str, storage: StorageConfig, pipeline_config: PipelineConfig,
                 model_version: str, torch_threads: int, decode: Mapping[str, Any] | None = None) -> None:
        bundle, config = load_actor_bundle(bundle_uri, storage, pipeline_config, torch_threads)
        if bundle.version != model_version:
            raise RuntimeError(f"bundle {bundle_uri} changed during the run: version {bundle.version}, "
                               f"the job started with {model_version}")
        self.pipeline = Pipeline(bundle, config)
        self.model_version = model_version
        self.decode = dict(decode) if decode is not None else None
        self.calls = 0

    def __call__(self, batch: dict[str, np.ndarray]) -> pa.Table:
        """Decoded rows (`results_batch`'s input columns), or manifest rows when the actor decodes,
        → results rows; a PARTITION_INDEX column in the input is carried over as the last column."""
        import torch

        from attrgan.data.images import decode_batch

        self._fault_drill()
        self.calls += 1
        if self.decode is not None:
            batch = decode_batch(batch, **self.decode)
        with torch.inference_mode():
            table = results_batch(batch, self.pipeline, model_version=self.model_version,
                                  processed_at=dt.datetime.now(dt.timezone.utc))
        if PARTITION_INDEX in batch:
            table = table.append_column(PARTITION_INDEX, pa.array(np.asarray(batch[PARTITION_INDEX]), pa.int32()))
        return table

    def _fault_drill(self) -> None:
        marker = os.environ.get(FAULT_ENV)
        if marker and self.calls >= 1 and not os.path.exists(marker):
            with open(marker, "w") as f:
                f.write(f"actor pid {os.getpid()} exited on its batch {self.calls + 1}\n")
            os._exit(1)


# ---------------------------------------------------------------------------------------------
# the job


def bundle_info(uri: str, storage: StorageConfig | None = None) -> tuple[str, dict[str, Any]]:
    """(bundle version, classifier meta) from the bundle's config.json files, without the weights."""
    from attrgan.bundle import NETWORKS, BundleError, bundle_version

    metas = {}
    for name in NETWORKS:
        config_uri = join(uri, name, "config.json")
        try:
            metas[name] = json.loads(read_bytes(config_uri, storage=storage))
        except FileNotFoundError:
            raise BundleError(f"no model bundle at {uri}: {config_uri} not found") from None
        except json.JSONDecodeError as exc:
            raise BundleError(f"{config_uri} is not valid JSON: {exc}") from None
        if "weights_sha256" not in metas[name]:
            raise BundleError(f"{config_uri} has no weights_sha256: not written by attrgan.bundle.save_network")
    return bundle_version(metas), metas["classifier"]


def read_success(uri: str, storage: StorageConfig | None = None) -> dict[str, Any] | None:
    """The parsed `_SUCCESS` marker of an output partition, or None when absent or unreadable."""
    try:
        return json.loads(read_bytes(join(uri, SUCCESS_FILE), storage=storage))
    except FileNotFoundError:
        return None
    except (json.JSONDecodeError, UnicodeDecodeError):
        log.warning("%s is not valid JSON: treating the partition as not done", join(uri, SUCCESS_FILE))
        return None


def select_partitions(available: Sequence[str], requested: Sequence[str]) -> list[str]:
    """The manifest partitions to process: all when `requested` is empty, else those equal to or
    under a requested path ("date=1" selects "date=1/camera=a" and "date=1/camera=b")."""
    if not requested:
        return list(available)
    chosen: list[str] = []
    for want in requested:
        want = want.strip("/")
        hits = [p for p in available if p == want or p.startswith(want + "/")]
        if not hits:
            raise ManifestError(f"partition {want!r} is not in the manifest; it has {list(available)[:10]}"
                                f"{' …' if len(available) > 10 else ''}")
        chosen += [p for p in hits if p not in chosen]
    return chosen


def _input_table(table: pa.Table) -> pa.Table:
    """The columns the job needs, with absent optional ones as nulls."""
    columns, fields = [], []
    for name in INPUT_COLUMNS:
        if name in table.column_names:
            columns.append(table[name])
            fields.append(pa.field(name, table[name].type))
        else:
            tp = {"camera_id": pa.string(), "captured_at": pa.timestamp("us", tz="UTC")}.get(name, pa.int32())
            columns.append(pa.nulls(table.num_rows, tp))
            fields.append(pa.field(name, tp))
    return pa.Table.from_arrays(columns, schema=pa.schema(fields))


def run_extract(config: ExtractConfig) -> Summary:
    """Run the extraction described by `config`; returns (and logs) a `Summary`.

    Uses the current Ray runtime, starting a local one if none is up. Every selected partition's
    manifest is read and validated before any work starts, so a schema problem (ManifestError
    naming the column) stops the job with nothing written. All partitions to process then go
    through ONE Ray Data stream (one actor pool, each actor loading the bundle once); the driver
    sorts the results rows back into their partitions (`PartitionWriter`), and each partition
    gets its `_SUCCESS` as soon as its rows are written and verified.
    """
    import ray
    import ray.data

    start = time.perf_counter()
    storage = config.storage
    model_version, classifier_meta = bundle_info(config.bundle, storage)
    input_size = tuple(classifier_meta["config"]["input_size"])

    partitions = select_partitions(list_partitions(config.manifest, storage), config.partitions)
    todo, skipped = [], []
    for p in partitions:
        marker = read_success(join(config.out, p), storage) if config.incremental else None
        (skipped if marker and marker.get("model_version") == model_version else todo).append(p)
    # Validate everything first: nothing is written for a broken manifest.
    tables = [_input_table(read_manifest(config.manifest, storage, partition=p or None)) for p in todo]

    if not ray.is_initialized():
        ray.init()
    resources = ray.cluster_resources()
    plan = plan_actors(cluster_cpus=resources.get("CPU", 0.0), cluster_gpus=resources.get("GPU", 0.0),
                       actors=config.actors, min_actors=config.min_actors, gpus_per_actor=config.gpus_per_actor,
                       cpus_per_actor=config.cpus_per_actor, torch_threads=config.torch_threads,
                       decode_in_actors=config.decode_in_actors)
    log.info("extract: %d partition(s) to process (%d rows), %d up to date; bundle %s; %s", len(todo),
             sum(t.num_rows for t in tables), len(skipped), model_version, plan)
    ctx = ray.data.DataContext.get_current()
    if not sys.stdout.isatty():
        ctx.enable_progress_bars = False

    schema = results_schema(classifier_meta["attributes"])
    writers = [PartitionWriter(partition=p, uri=join(config.out, p), crop_ids=t["crop_id"], schema=schema,
                               storage=storage,
                               rows_per_file=config.rows_per_file,
                               marker={"model_version": model_version, "manifest": config.manifest})
               for p, t in zip(todo, tables)]
    for writer in writers:  # an empty partition is done before anything runs
        if writer.done:
            writer.finish(seconds=time.perf_counter() - start)
    if any(not w.done for w in writers):
        prefixes = allowed_prefixes(config.manifest, storage)
        stream = _results_stream(config, tables, plan=plan, model_version=model_version, input_size=input_size,
                                 allowed=prefixes)
        for block in stream.iter_batches(batch_size=None, batch_format="pyarrow"):
            index = block[PARTITION_INDEX]
            for i in pc.unique(index).to_pylist():
                writer = writers[i]
                writer.add(block.filter(pc.equal(index, i)).drop_columns([PARTITION_INDEX]))
                if writer.done:
                    writer.finish(seconds=time.perf_counter() - start)
    unfinished = [w.partition for w in writers if w.summary is None]
    if unfinished:
        raise ExtractError(f"the stream ended before partition(s) {unfinished[:10]} got all their rows; "
                           f"their {SUCCESS_FILE} markers were not written")
    summary = Summary(model_version=model_version, processed=tuple(w.summary for w in writers),
                      skipped=tuple(skipped), seconds=time.perf_counter() - start)
    log.info("%s", summary.format())
    return summary


def _results_stream(config: ExtractConfig, tables: Sequence[pa.Table], *, plan: ActorPlan, model_version: str,
                    input_size: tuple[int, int], allowed: tuple[str, ...] | None) -> Any:
    """One Ray Data dataset over every partition's rows: decode (tasks, or inside the actors as
    `plan` says) → the pipeline actor pool.

    Each row carries the index of its partition (PARTITION_INDEX) through to the results rows.
    """
    import ray
    import ray.data

    from attrgan.data.images import decode_batch

    rows = pa.concat_tables([t.append_column(PARTITION_INDEX, pa.array(np.full(t.num_rows, i, np.int32)))
                             for i, t in enumerate(tables)], promote_options="default")
    # One block per batch: decode tasks spread over the CPUs and a killed actor redoes one batch.
    # Blocks may span two partitions; the partition index sorts their rows out at the end.
    blocks = [rows.slice(i, config.batch_size) for i in range(0, rows.num_rows, config.batch_size)]
    ds = ray.data.from_arrow(blocks)
    decode = {"size": input_size, "storage": config.storage, "allowed_prefixes": allowed}
    if not plan.decode_in_actors:
        ds = ds.map_batches(decode_batch, batch_format="numpy", batch_size=config.batch_size, fn_kwargs=decode,
                            num_cpus=plan.decode_cpus, udf_modifying_row_count=False)
    env = {FAULT_ENV: os.environ[FAULT_ENV]} if os.environ.get(FAULT_ENV) else {}
    with warnings.catch_warnings():
        # Ray 2.60 flags every extra remote kwarg as deprecated, but max_restarts and
        # max_task_retries have no named parameter yet.
        warnings.filterwarnings("ignore", message="`ray_remote_args` is deprecated")
        return ds.map_batches(
            PipelineActor, batch_format="numpy", batch_size=config.batch_size,
            fn_constructor_kwargs={"bundle_uri": config.bundle, "storage": config.storage,
                                   "pipeline_config": config.pipeline, "model_version": model_version,
                                   "torch_threads": plan.torch_threads,
                                   "decode": decode if plan.decode_in_actors else None},
            compute=ray.data.ActorPoolStrategy(min_size=plan.min_actors, max_size=plan.actors),
            num_cpus=plan.num_cpus, num_gpus=plan.num_gpus, udf_modifying_row_count=False,
            runtime_env={"env_vars": env} if env else None,
            # A dead actor is restarted and its in-flight batches retried (bounded, so a
            # crashing model fails the job instead of looping); a batch's output only exists
            # once its task returns, so a retry cannot duplicate rows.
            max_restarts=config.max_restarts, max_task_retries=config.max_restarts)


class PartitionWriter:
    """Collects one partition's results rows and writes them under the partition's own prefix.

    Files are `<uri>/part-00000.parquet`, ... of at least `rows_per_file` rows (fewer for the last).
    The prefix is emptied just before the first file lands, so the previous results stay readable
    until this run replaces them, and a rerun never adds to them. `finish` reads the files back,
    checks they hold exactly `crop_ids`, each once, and only then writes `_SUCCESS`.
    """

    def __init__(self, *, partition: str, uri: str, crop_ids: pa.ChunkedArray, schema: pa.Schema,
                 storage: StorageConfig, rows_per_file: int, marker: Mapping[str, Any]) -> None:
        if rows_per_file < 1:
            raise ValueError(f"rows_per_file must be >= 1, got {rows_per_file}")
        self.partition, self.uri, self.crop_ids, self.schema, self.storage = partition, uri, crop_ids, schema, storage
        self.rows_per_file, self.marker = rows_per_file, dict(marker)
        self.expected = len(crop_ids)
        self.received = 0
        self.files = 0
        self.summary: PartitionSummary | None = None
        self._buffer: list[pa.Table] = []
        self._buffered = 0
        self._cleared = False

    @property
    def done(self) -> bool:
        """Every row of the partition has arrived."""
        return self.received == self.expected

    def add(self, table: pa.Table) -> None:
        """Take results rows (`results_schema` columns) of this partition; writes full files."""
        if self.summary is not None:
            raise ExtractError(f"partition {self.partition!r}: {table.num_rows} more rows after it was finished")
        self.received += table.num_rows
        if self.received > self.expected:
            raise ExtractError(f"partition {self.partition!r}: received {self.received} results rows for "
                               f"{self.expected} manifest rows; {SUCCESS_FILE} not written")
        self._buffer.append(table)
        self._buffered += table.num_rows
        if self._buffered >= self.rows_per_file:
            self._flush()

    def finish(self, *, seconds: float) -> PartitionSummary:
        """Write the remaining rows, verify the partition's files, then write `_SUCCESS`."""
        if not self.done:
            raise ExtractError(f"partition {self.partition!r}: {self.received} of {self.expected} rows arrived")
        self._flush()
        if not self._cleared:  # an empty partition: still replace what an earlier run left
            delete_prefix(self.uri, self.storage)
            self._cleared = True
        counts = _check_output(self.uri, self.crop_ids, self.storage, self.partition)
        self.summary = PartitionSummary(partition=self.partition, seconds=seconds, **counts)
        marker = {**self.marker, "rows": self.expected, "errors": self.summary.errors,
                  "super_resolved": self.summary.super_resolved, "reconstructed": self.summary.reconstructed,
                  "seconds": round(seconds, 3), "finished_at": dt.datetime.now(dt.timezone.utc).isoformat(),
                  "partition": self.partition}
        write_bytes(join(self.uri, SUCCESS_FILE), json.dumps(marker, indent=2).encode(), storage=self.storage)
        return self.summary

    def _flush(self) -> None:
        if not self._buffer:
            return
        if not self._cleared:
            delete_prefix(self.uri, self.storage)  # a rerun replaces this partition, and only it
            self._cleared = True
        table = pa.concat_tables(self._buffer)
        # Ray Data may hand columns back with relaxed nullability; the files keep the contract's.
        table = table.cast(self.schema)
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink)
        write_bytes(join(self.uri, f"part-{self.files:05d}.parquet"), sink.getvalue().to_pybytes(), self.storage)
        self.files += 1
        self._buffer, self._buffered = [], 0


def _check_output(out_uri: str, crop_ids: pa.ChunkedArray, storage: StorageConfig,
                  partition: str) -> dict[str, Any]:
    """Read the written partition back: exactly the manifest's crop_ids, each once. Returns counts."""
    n = len(crop_ids)
    columns = ["crop_id", "error", "super_resolved", "reconstructed"]
    if n == 0:
        out = pa.table({c: pa.array([], pa.string() if c in ("crop_id", "error") else pa.bool_()) for c in columns})
    else:
        fs, path = filesystem(out_uri, storage)
        out = pads.dataset(path, filesystem=fs, format="parquet").to_table(columns=columns)
    ids = out["crop_id"]
    distinct = pc.count_distinct(ids).as_py() if len(ids) else 0
    unknown = pc.sum(pc.invert(pc.is_in(ids, value_set=crop_ids.combine_chunks()))).as_py() if len(ids) else 0
    if out.num_rows != n or distinct != n or unknown:
        raise ExtractError(f"partition {partition!r}: wrote {out.num_rows} rows ({distinct} distinct crop_ids, "
                           f"{unknown} not in the manifest) for {n} manifest rows; {SUCCESS_FILE} not written")
    errors = Counter(error_kind(e) for e in out["error"].drop_null().to_pylist())
    return {"rows": n, "errors": dict(errors.most_common()),
            "super_resolved": pc.sum(out["super_resolved"]).as_py() or 0,
            "reconstructed": pc.sum(out["reconstructed"]).as_py() or 0}

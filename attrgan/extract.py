"""The nightly extraction job: manifest → restore-and-classify → results Parquet, on Ray Data.

Long because it is the job's whole driver (settings, checks, planning, the commit groups, the
summary); its write side is `attrgan.sink`, its scoring stream `attrgan.ray_scoring`.

The driver handles metadata only; rows never pass through it:

    driver   the bundle's config, the manifest's file list and footers (schemas, row counts),
             storage checks, then per-partition crop_id checks run as cluster tasks; all before
             any partition is touched
    cluster  read tasks over the manifest files (`read_manifest_files`, ~ROWS_PER_READ rows each;
             each row tagged with its partition)
         ──► attrgan.ray_scoring: decode (a bad row stays, status=error) → the pipeline actor pool
             (SR → classify → reconstruct → classify, loaded once per actor)
         ──► `ResultsSink.write` tasks: each partition's rows to Parquet files under
             `<out>/_staging/<run>/<partition>/`, returning file names and counts
    driver   `ResultsSink.on_write_complete`: for each partition whose rows all arrived with no
             transient failure, a cluster task verifies its staged files (one row per manifest row,
             no duplicate crop_id), then `attrgan.results.promote` commits it (DESIGN.md "Results":
             the `_SUCCESS` marker names the committed files; a partition's previous results stay
             readable and complete until the new ones are)

Partitions go newest first (`date=` folders, `since` to stop at a day) in commit groups of at
most `rows_per_commit` rows: each group is one Ray Data run that commits when it ends, so a
failure costs at most one group's work. An incremental run skips the partitions whose `_SUCCESS`
names the same bundle version. A row whose image read failed for a transient reason (timeouts,
throttling, 5xx, after the storage retries) leaves its partition uncommitted: the next run redoes
it, and this run ends with `IncompleteRun`; the run that fails the same crop for the
`max_transient_runs`-th time in a row gives up on it (a "gave up" error row) and commits. A setup problem (unreachable endpoint, credentials,
missing bucket, unreadable bundle, unwritable output) stops the job with a `SetupError` naming
the setting before any partition is touched.

Resource sizing follows "Facts learned the hard way" (`attrgan.ray_scoring.plan_actors`); killed
actors are restarted with their batch redone, and a write task that is retried writes new files
(only the files its successful attempt returned are ever promoted).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import logging
import math
import sys
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import ray
import ray.data

from attrgan import faults
from attrgan.config import SetupError, StorageConfig, to_dict
from attrgan.data.manifest import (PARTITION_INDEX, ManifestError, ManifestScan, allowed_prefixes, read_manifest_files,
                                   scan_manifest)
from attrgan.data.storage import absolute, filesystem, is_s3, join, redact, split_s3, write_bytes
from attrgan.lease import DEFAULT_TTL_S, Lease
from attrgan.pipeline import Pipeline, PipelineConfig
from attrgan.attributes import OCCLUSION_DOWN
from attrgan.contracts import BundleInfo, TransientHistory, results_schema
from attrgan.fusion import Fusion
from attrgan.results import clean_partition, clean_staging, new_run_id, read_success, read_transient, staging_uri
from attrgan.progress import ProgressLog, start_counter
from attrgan.ray_setup import init_ray, quiet_actor_args_notice
from attrgan.ray_scoring import (IO_TASK_CPUS, Unschedulable, cluster_offer, let_pools_grow, plan_actors, score_stream,
                             wait_for_one_actor)
from attrgan.sink import (PRECISION, CommitGroup, TrackPlan, ExtractError, PartitionSummary, ResultsSink, check_ids, commit_groups,
                          short_reason)

log = logging.getLogger(__name__)

# Rows of a stream block, in batches.
BATCHES_PER_BLOCK = 4
# Manifest rows each read task reads (a manifest row is a few hundred bytes).
ROWS_PER_READ = 100_000


class IncompleteRun(ExtractError):
    """Some partitions were left uncommitted (transient failures); `summary` says which and why.
    Everything else was committed; the next run redoes what is missing."""

    def __init__(self, summary: "Summary") -> None:
        self.summary = summary
        shown = "; ".join(f"{p}: {why}" for p, why in summary.incomplete[:5])
        super().__init__(f"{len(summary.incomplete)} partition(s) not committed, rerun to finish them ({shown})")


@dataclasses.dataclass(frozen=True)
class ExtractConfig:
    """One extraction run.

    manifest: manifest URI (file, folder or hive-partitioned prefix; s3:// or local).
    bundle: model bundle URI (attrgan.bundle).
    out: results base URI; each manifest partition is written to `<out>/<partition path>/`.
    partitions: partitions to process ("date=2026-11-25", or a leading part of a deeper path);
        empty = all of them.
    min_actors, actors: the range of the pipeline actor pool: it starts with `min_actors` (the run
        waits for them, at most `actor_start_timeout_s`) and grows to `actors` while work queues,
        the autoscaler adding nodes for them (`attrgan.ray_scoring.plan_actors`; docs/cluster.md).
    gpus_per_actor: GPU share of each actor when it runs on GPUs (0 = run on CPU anyway): with
        pipeline.device "cuda" always, even before a GPU node is up; with "auto" when the cluster
        has GPUs now (the pool is then capped by them) or its autoscaler's node types offer some.
    cpus_per_actor: CPU share of each actor; None = 1 for actors on GPUs or custom resources,
        otherwise what leaves a whole CPU to decoding (at most 1 per actor).
    actor_resources: custom Ray resources each actor asks for (e.g. {"nvidia_h100": 1}, the
        resource a worker group declares in its rayStartParams), so the actors run only on, and the
        autoscaler adds only, nodes that offer them.
    actor_start_timeout_s: how long the first `min_actors` actors may take to start (a GPU node to
        come up) before the run fails with an error naming what they ask for; 0 = no limit.
    torch_threads: intra-op threads of each actor's torch; None = its whole CPUs (at least 1).
    decode_in_actors: decode inside the pipeline actors instead of in separate CPU tasks; None =
        inside when the actors run on CPUs, in separate tasks when they hold GPUs or custom resources.
    batch_size: rows per decode and inference batch.
    incremental: skip partitions whose _SUCCESS names the same bundle version.
    max_restarts: restarts of a dead actor (and retries of its batch) before the job fails.
    rows_per_file: rows each write task gathers before writing (a file per partition it holds).
    rows_per_commit: most rows per commit group (a single larger partition is a group of its own).
    since: ISO date; only `date=` partitions from that day on (needs a `date=`-partitioned manifest).
    max_transient_runs: runs in a row a crop may fail for a transient reason, holding its partition
        back, before the run that fails it again gives up on it (a permanent "gave up" error row)
        and commits the partition (`attrgan.results`' transient record).
    lease_ttl_s: how long after this run's last heartbeat another run may take its output's lease
        over (`attrgan.lease`; it renews every third of that).
    break_lease: remove the output's lease first, whoever holds it (for an operator who knows that
        run is dead; two live runs on one output race).
    progress_interval_s: seconds between the driver's progress lines (rows done / total, rows/s, ETA).
    tracks: write each partition's per-track table with its crops (docs/DESIGN.md "Tracks");
        false writes crops only.
    """

    manifest: str
    bundle: str
    out: str
    partitions: tuple[str, ...] = ()
    actors: int = 2
    min_actors: int = 1
    gpus_per_actor: float = 1.0
    cpus_per_actor: float | None = None
    actor_resources: Mapping[str, float] = dataclasses.field(default_factory=dict)
    actor_start_timeout_s: float = 1800.0
    torch_threads: int | None = None
    decode_in_actors: bool | None = None
    batch_size: int = 64
    incremental: bool = True
    max_restarts: int = 3
    rows_per_file: int = 100_000
    rows_per_commit: int = 2_000_000
    since: str | None = None
    max_transient_runs: int = 3
    lease_ttl_s: float = DEFAULT_TTL_S
    break_lease: bool = False
    progress_interval_s: float = 30.0
    tracks: bool = True
    pipeline: PipelineConfig = dataclasses.field(default_factory=PipelineConfig)
    storage: StorageConfig = dataclasses.field(default_factory=StorageConfig)

    def __post_init__(self) -> None:
        object.__setattr__(self, "partitions", tuple(self.partitions))
        for name in ("manifest", "bundle", "out"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise ValueError(f"ExtractConfig.{name} must be a URI, got {getattr(self, name)!r}")
        for name in ("actors", "min_actors", "batch_size", "rows_per_file", "rows_per_commit", "max_transient_runs"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"ExtractConfig.{name} must be an integer >= 1, got {value!r}")
        if self.min_actors > self.actors:
            raise ValueError(f"ExtractConfig.min_actors must be <= actors ({self.actors}), got {self.min_actors}")
        if not self.gpus_per_actor >= 0:
            raise ValueError(f"ExtractConfig.gpus_per_actor must be >= 0, got {self.gpus_per_actor!r}")
        if self.cpus_per_actor is not None and not self.cpus_per_actor > 0:
            raise ValueError(f"ExtractConfig.cpus_per_actor must be > 0 or None, got {self.cpus_per_actor!r}")
        object.__setattr__(self, "actor_resources", actor_resources(self.actor_resources))
        if not 0 <= self.actor_start_timeout_s < math.inf:
            raise ValueError(f"ExtractConfig.actor_start_timeout_s must be >= 0 seconds, got {self.actor_start_timeout_s!r}")
        if self.torch_threads is not None and (not isinstance(self.torch_threads, int) or self.torch_threads < 1):
            raise ValueError(f"ExtractConfig.torch_threads must be an integer >= 1 or None, got {self.torch_threads!r}")
        if self.since is not None:
            try:
                dt.date.fromisoformat(str(self.since))
            except ValueError:
                raise ValueError(f"ExtractConfig.since must be a date YYYY-MM-DD, got {self.since!r}") from None
        ttl = self.lease_ttl_s
        if isinstance(ttl, bool) or not isinstance(ttl, (int, float)) or not 1 <= ttl <= 86_400:
            raise ValueError(f"ExtractConfig.lease_ttl_s must be seconds in [1, 86400], got {self.lease_ttl_s!r}")
        if not isinstance(self.progress_interval_s, (int, float)) or not self.progress_interval_s > 0:
            raise ValueError(f"ExtractConfig.progress_interval_s must be a number of seconds > 0, "
                             f"got {self.progress_interval_s!r}")
        if not isinstance(self.tracks, bool):
            raise ValueError(f"ExtractConfig.tracks must be true or false, got {self.tracks!r}")
        if not isinstance(self.max_restarts, int) or self.max_restarts < 0:
            raise ValueError(f"ExtractConfig.max_restarts must be an integer >= 0, got {self.max_restarts!r}")


def actor_resources(values: Any) -> dict[str, float]:
    """Checked custom resources of an actor: names of Ray resources other than CPU and GPU (they
    have their own settings), amounts finite and >= 0."""
    if not isinstance(values, Mapping):
        raise ValueError(f"ExtractConfig.actor_resources must be a mapping of resource name to amount, got {values!r}"[:200])
    out = {}
    for name, amount in values.items():
        if not isinstance(name, str) or not name or name in ("CPU", "GPU", "memory", "object_store_memory"):
            raise ValueError(f"ExtractConfig.actor_resources: {name!r} is not a custom resource name"
                             f"{' (use cpus_per_actor / gpus_per_actor)' if name in ('CPU', 'GPU') else ''}"[:200])
        if isinstance(amount, bool) or not isinstance(amount, (int, float)) or not 0 <= amount < math.inf:
            raise ValueError(f"ExtractConfig.actor_resources[{name!r}] must be a number >= 0, got {amount!r}"[:200])
        out[name] = float(amount)
    return out


@dataclasses.dataclass(frozen=True)
class Summary:
    """What a run did. `rows` etc. count the partitions committed in this run, not skipped ones.
    incomplete: (partition, why) of those left uncommitted for the next run."""

    model_version: str
    processed: tuple[PartitionSummary, ...]
    skipped: tuple[str, ...]
    seconds: float
    incomplete: tuple[tuple[str, str], ...] = ()
    write_nodes: tuple[str, ...] = ()  # the Ray nodes whose tasks wrote result files
    precision: str = ""  # what the actors computed in: "fp32", "bf16" (or "bf16+fp32" on mixed nodes)
    # Per generator: {"runs": bool, "reason": str} (`attrgan.contracts.BundleInfo.restorations`).
    restorations: Mapping[str, Mapping[str, Any]] = dataclasses.field(default_factory=dict)

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

    def to_dict(self) -> dict[str, Any]:
        """The summary as JSON-ready values: totals, then each committed partition's rows, errors by
        kind, restorations run and seconds."""
        return {"model_version": self.model_version, "seconds": round(self.seconds, 3), "rows": self.rows,
                "errors": self.errors, "super_resolved": self.super_resolved, "reconstructed": self.reconstructed,
                "precision": self.precision, "restorations": {k: dict(v) for k, v in self.restorations.items()},
                "partitions": [dataclasses.asdict(p) | {"seconds": round(p.seconds, 3)} for p in self.processed],
                "skipped": list(self.skipped),
                "incomplete": [{"partition": p, "why": why} for p, why in self.incomplete],
                "write_nodes": list(self.write_nodes)}

    def format(self) -> str:
        errors = sum(self.errors.values())
        lines = [f"extract: {len(self.processed)} partition(s) processed, {len(self.skipped)} skipped "
                 f"(up to date), {len(self.incomplete)} left for the next run, bundle {self.model_version}",
                 f"  rows {self.rows}, errors {errors}, super-resolved {self.super_resolved}, "
                 f"reconstructed {self.reconstructed}, {self.crops_per_s:.1f} crops/s over {self.seconds:.1f} s"
                 + (f", precision {self.precision}" if self.precision else "")]
        lines += [f"  {name} {'ran' if r['runs'] else 'skipped'}: {r['reason']}" for name, r in self.restorations.items()]
        lines += [f"  error {kind!r}: {count}" for kind, count in self.errors.items()]
        lines += [f"  not committed {partition!r}: {why}" for partition, why in self.incomplete]
        return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# results rows (pure functions, no Ray)


def results_batch(batch: Mapping[str, np.ndarray], pipeline: Pipeline, *, model_version: str,
                  processed_at: dt.datetime) -> pa.Table:
    """Run `pipeline` on a decoded batch and build its results rows (one per input row).

    Input columns: crop_id, image_uri, camera_id, captured_at (datetime64 or objects, UTC),
    track_id and frame_index (optional: null when absent), image (N, H, W, 3) uint8, crop_height int, status ("ok" / "error"), error (str or None).
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
        "track_id": _strings(batch["track_id"]) if "track_id" in batch else pa.nulls(n, pa.string()),
        "frame_index": _integers(batch["frame_index"]) if "frame_index" in batch else pa.nulls(n, pa.int64()),
        "status": pa.array(status.tolist(), pa.string()),
        "error": pa.array([None if k else str(e) for k, e in zip(ok, batch["error"])], pa.string()),
        "super_resolved": pa.array(sr),
        "reconstructed": pa.array(rec),
        "occlusion_score": pa.array(occlusion, pa.float32(), mask=null | np.isnan(occlusion)),
        "crop_height": _integers(batch["crop_height"], pa.int32(), mask=null),
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


def _integers(values: Any, type: pa.DataType = pa.int64(), mask: np.ndarray | None = None) -> pa.Array:
    """An integer column from a batch; None / NaN (a null on its way through Ray Data) is null."""
    items = [None if _is_null(v) else int(v) for v in np.asarray(values).tolist()]
    if mask is not None:
        items = [None if m else v for v, m in zip(items, mask)]
    return pa.array(items, type)


def _timestamps(values: Any) -> pa.Array:
    """captured_at as timestamp[us, UTC]. Ray Data hands tz-aware timestamps over as naive
    datetime64 holding the UTC instant; casting a naive timestamp to UTC keeps that instant.
    An all-null column may arrive as None objects or float NaN."""
    values = np.asarray(values)
    if values.dtype.kind == "M":
        return pa.array(values).cast(pa.timestamp("us", tz="UTC"), safe=False)
    items = [None if _is_null(v) else v for v in values.tolist()]
    return pa.array(items, pa.timestamp("us", tz="UTC")) if items else pa.nulls(0, pa.timestamp("us", tz="UTC"))


class ResultsScorer:
    """What each extraction actor runs on a batch: the pipeline, then the results rows
    (`results_batch`); a PARTITION_INDEX column in the input is carried over, with the precision
    the rows were computed in. Built once per actor from its bundle (`attrgan.ray_scoring.ScoringActor`).
    """

    def __init__(self, bundle: Any, config: PipelineConfig, *, model_version: str) -> None:
        if bundle.version != model_version:
            raise RuntimeError(f"the bundle changed during the run: version {bundle.version}, "
                               f"the job started with {model_version}")
        self.pipeline = Pipeline(bundle, config)
        self.model_version = model_version
        self.calls = 0

    def __call__(self, batch: dict[str, np.ndarray]) -> pa.Table:
        faults.exit_actor_once(self.calls)
        self.calls += 1
        table = results_batch(batch, self.pipeline, model_version=self.model_version,
                              processed_at=dt.datetime.now(dt.timezone.utc))
        if PARTITION_INDEX in batch:
            table = table.append_column(PARTITION_INDEX, pa.array(np.asarray(batch[PARTITION_INDEX]), pa.int32()))
            table = table.append_column(PRECISION, pa.array([self.pipeline.precision] * table.num_rows, pa.string()))
        return table


# ---------------------------------------------------------------------------------------------
# the job


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


def newest_first(partitions: Sequence[str], *, since: str | None = None) -> list[str]:
    """Partitions with a `date=YYYY-MM-DD` folder newest day first (after a bundle change, last
    night's crops are redone before older ones), the rest after them in their own order; `since`
    keeps only the days from that date on (ManifestError when no partition has a date)."""
    def day(partition: str) -> dt.date | None:
        for segment in partition.split("/"):
            key, _, value = segment.partition("=")
            if key == "date":
                try:
                    return dt.date.fromisoformat(value)
                except ValueError:
                    return None
        return None

    days = {p: day(p) for p in partitions}
    if since is not None:
        if not any(days.values()):
            raise ManifestError(f"since={since} needs a manifest partitioned by date=YYYY-MM-DD folders; "
                                f"its partitions are {list(partitions)[:5]}")
        start = dt.date.fromisoformat(str(since))
        partitions = [p for p in partitions if days[p] is not None and days[p] >= start]
    dated = sorted((p for p in partitions if days[p] is not None), key=lambda p: days[p], reverse=True)
    return dated + [p for p in partitions if days[p] is None]


def _setup(config: ExtractConfig) -> tuple[BundleInfo, ManifestScan, tuple[str, ...] | None]:
    """Everything checked before anything is written. Returns (the bundle's metadata, manifest scan,
    allowed image prefixes)."""
    from attrgan.bundle import bundle_info

    storage = config.storage
    out, manifest = (filesystem(u, storage)[1].rstrip("/") + "/" for u in (config.out, config.manifest))
    if is_s3(config.out) == is_s3(config.manifest) and (out.startswith(manifest) or manifest.startswith(out)):
        raise SetupError(f"out={config.out} and manifest={config.manifest} overlap: committing results "
                         "deletes files the results prefix does not list; give them separate prefixes")
    endpoint = (f"storage.endpoint_url={redact(storage.endpoint_url)!r}" if storage.endpoint_url
                else "the default S3 endpoint")
    try:
        info = bundle_info(config.bundle, storage)  # the actors' own check: BundleError here, not there
    except OSError as exc:
        raise SetupError(f"cannot read the bundle {config.bundle} ({short_reason(exc)}); check {endpoint} and the "
                         "credentials") from None
    try:
        scan = scan_manifest(config.manifest, storage)
    except OSError as exc:
        raise SetupError(f"cannot list the manifest {config.manifest} ({short_reason(exc)}); check {endpoint} and the "
                         "credentials") from None
    prefixes = allowed_prefixes(config.manifest, storage)
    for prefix in prefixes or ():
        if is_s3(prefix):
            bucket = split_s3(prefix)[0]
            fs, _ = filesystem(prefix, storage)
            try:
                missing = fs.get_file_info(bucket).type.name == "NotFound"
            except OSError as exc:
                raise SetupError(f"cannot reach the image bucket {bucket!r} ({short_reason(exc)}); check {endpoint}") from None
            if missing:
                raise SetupError(f"the image bucket {bucket!r} of the allowed prefix {prefix} does not exist; "
                                 "check storage.allowed_prefixes and the manifest's image_uri values")
    return info, scan, prefixes


def _take_lease(config: ExtractConfig, run_id: str) -> Lease:
    """The output's lease (`attrgan.lease`), the run's first write under `out`: LeaseHeld, naming
    the holder, when another live run holds it."""
    try:
        return Lease(config.out, config.storage, run_id=run_id, ttl_s=config.lease_ttl_s).acquire(
            break_lease=config.break_lease)
    except OSError as exc:
        raise SetupError(f"cannot write under the output out={config.out} ({short_reason(exc)})") from None


def _probe_output(config: ExtractConfig, run_id: str) -> None:
    """That this run can write its staging folder: an object written and deleted there."""
    storage = config.storage
    probe = staging_uri(config.out, run_id, "") + "/_probe"
    try:
        write_bytes(probe, b"", storage)
        fs, path = filesystem(probe, storage)
        fs.delete_dir(path.rsplit("/", 1)[0])
    except (OSError, ValueError) as exc:
        raise SetupError(f"cannot write under the output out={config.out} ({short_reason(exc)})") from None


def run_extract(config: ExtractConfig) -> Summary:
    """Run the extraction described by `config`; returns (and logs) a `Summary`.

    Uses the current Ray runtime, starting a local one if none is up. Raises SetupError (LeaseHeld
    when another run holds the output's lease) or BundleError / ManifestError (a schema problem, or
    crop_ids null or repeated in a partition) before any partition is touched; IncompleteRun (with
    the summary) when partitions were left for the next run; ExtractError when staged results fail
    their checks or the output's lease was lost to another run.
    """
    start = time.perf_counter()
    run_id = new_run_id()
    config = dataclasses.replace(config, manifest=absolute(config.manifest), bundle=absolute(config.bundle),
                                 out=absolute(config.out))  # the same places for the cluster's workers
    setup = _setup(config)
    with _take_lease(config, run_id) as lease:  # given back however the run ends
        _probe_output(config, run_id)
        return _extract(config, run_id, start, lease, *setup)


def _extract(config: ExtractConfig, run_id: str, start: float, lease: Lease, info: BundleInfo, scan: ManifestScan,
             prefixes: tuple[str, ...] | None) -> Summary:
    """The run once its checks passed and it holds the output's lease."""
    storage = config.storage
    model_version, input_size = info.version, info.input_size
    restorations = {name: r.to_dict() for name, r in info.restorations(
        use_superres=config.pipeline.use_superres, use_reconstruction=config.pipeline.use_reconstruction,
        require_proven=config.pipeline.require_proven, rule=config.pipeline.gate).items()}
    partitions = newest_first(select_partitions(scan.partitions, config.partitions), since=config.since)
    todo, skipped = [], []
    for p in partitions:
        # Done = committed with this bundle for as many rows as the manifest holds now (crops
        # added to a partition later make it due again).
        marker = read_success(join(config.out, p), storage) if config.incremental else None
        done = marker and marker.get("model_version") == model_version and marker.get("rows") == scan.rows(p)
        (skipped if done else todo).append(p)

    init_ray()
    now, node_types = cluster_offer()
    plan = plan_actors(cluster_cpus=now.get("CPU", 0.0), cluster_gpus=now.get("GPU", 0.0), actors=config.actors,
                       min_actors=config.min_actors, gpus_per_actor=config.gpus_per_actor,
                       cpus_per_actor=config.cpus_per_actor, torch_threads=config.torch_threads,
                       decode_in_actors=config.decode_in_actors, device=config.pipeline.device,
                       actor_resources=config.actor_resources, node_types=node_types)
    if node_types is None:  # an autoscaling cluster that does not tell its node types: ask it for one actor
        wait_for_one_actor(plan.asks(), config.actor_start_timeout_s)
    # Nulls and repeats in crop_id stop the job before any work; each partition is checked by a
    # cluster task, so the driver never holds the ids.
    checks = [check_ids.remote([f for f, _ in scan.files[p]], config.manifest, storage) for p in todo]
    for p, problem in zip(todo, ray.get(checks)):
        if problem:
            raise ManifestError(f"{config.manifest}: partition {p or '(all)'}: {problem}")
    clean_staging(config.out, storage, keep=run_id)
    for p in partitions:  # skipped ones too: a run killed after its switch left superseded files
        clean_partition(join(config.out, p), storage)

    groups = commit_groups(todo, {p: scan.rows(p) for p in todo}, config.rows_per_commit)
    total = sum(scan.rows(p) for p in todo)
    log.info("extract: run %s, %d partition(s) to process (%d rows) in %d commit group(s), %d up to date; "
             "bundle %s; %s", run_id, len(todo), total, len(groups), len(skipped),
             model_version, plan)
    ctx = ray.data.DataContext.get_current()
    if not sys.stdout.isatty():
        ctx.enable_progress_bars = False
    let_pools_grow()

    schema = results_schema(info.attributes)
    tracks = track_plan(info, config.pipeline) if config.tracks else None
    marker = {"model_version": model_version, "manifest": config.manifest, "run": run_id,
              "pipeline": to_dict(config.pipeline), "restorations": restorations}
    committed, incomplete, nodes, precisions = [], [], set(), set()
    counter = start_counter()
    try:
        with ProgressLog(counter, total, config.progress_interval_s), quiet_actor_args_notice():
            for group in groups:
                transient = TransientHistory(max_runs=config.max_transient_runs, runs={
                    i: runs for i, p in enumerate(group.partitions)
                    if (runs := read_transient(join(config.out, p), storage))})
                sink = ResultsSink(out=config.out, storage=config.storage, rows_per_file=config.rows_per_file,
                                   group=group, run_id=run_id, schema=schema, marker=marker, start=start,
                                   tracks=tracks, transient=transient, lease=lease)
                if sum(group.rows) == 0:  # nothing to score: commit the empty partitions directly
                    sink.commit([])
                else:
                    stream = _results_stream(config, scan, group, plan=plan, model_version=model_version,
                                             input_size=input_size, allowed=prefixes, transient=transient,
                                             counter=counter)
                    stream.write_datasink(sink, ray_remote_args={"num_cpus": IO_TASK_CPUS})
                committed += sink.committed
                incomplete += sink.incomplete
                nodes |= sink.nodes
                precisions |= sink.precisions
    finally:
        ray.kill(counter)
    clean_staging(config.out, storage)
    summary = Summary(model_version=model_version, processed=tuple(committed), skipped=tuple(skipped),
                      seconds=time.perf_counter() - start, incomplete=tuple(incomplete),
                      write_nodes=tuple(sorted(nodes)), precision="+".join(sorted(precisions)),
                      restorations=restorations)
    log.info("%s", summary.format())
    if incomplete:
        raise IncompleteRun(summary)
    return summary


def track_plan(info: BundleInfo, pipeline: PipelineConfig) -> TrackPlan:
    """How this bundle's tracks are fused: its person-level attributes and thresholds, its fusion,
    and the occlusion threshold its pipeline reconstructs from."""
    thresholds = dict(zip(info.attributes, info.thresholds or (0.5,) * len(info.attributes)))
    occlusion = pipeline.occlusion_threshold
    if occlusion is None:
        occlusion = thresholds.get(OCCLUSION_DOWN, 0.5)
    return TrackPlan(person_attributes=info.person_level, thresholds=thresholds, fusion=Fusion.from_bundle_info(info),
                     occlusion_threshold=float(occlusion))


def rows_per_block(rows: int, *, batch_size: int, actors: int) -> int:
    """Rows of each block the actors take. A manifest file reads as one block and an actor takes a
    whole block: blocks of a few batches keep every actor of the pool busy (and a restarted actor
    redoes little), and a run smaller than that is split so that every actor gets a share."""
    return max(1, min(batch_size * BATCHES_PER_BLOCK, math.ceil(rows / actors)))


def _results_stream(config: ExtractConfig, scan: ManifestScan, group: CommitGroup, *, plan: Any, model_version: str,
                    input_size: tuple[int, int], allowed: tuple[str, ...] | None,
                    transient: TransientHistory, counter: Any) -> Any:
    """One Ray Data dataset over a commit group's manifest files: read and prepare the rows
    (`read_manifest_files`, cluster tasks) → `attrgan.ray_scoring.score_stream` with the pipeline actors."""
    partition_of = {f: i for i, p in enumerate(group.partitions) for f, _ in scan.files[p]}
    # The driver names the files (scan_manifest read their footers); each read task takes a share
    # of them, about ROWS_PER_READ rows (one task for a small run: every task is a worker to start).
    reads = max(1, min(len(partition_of), math.ceil(sum(group.rows) / ROWS_PER_READ)))
    ds = ray.data.from_items([{"path": f} for f in partition_of], override_num_blocks=reads)
    ds = ds.map_batches(read_manifest_files, batch_format="pyarrow", batch_size=None, zero_copy_batch=True,
                        fn_kwargs={"manifest": config.manifest, "storage": config.storage, "base": scan.base,
                                   "partition_of": partition_of}, num_cpus=IO_TASK_CPUS)
    ds = ds.repartition(target_num_rows_per_block=rows_per_block(sum(group.rows), batch_size=config.batch_size,
                                                                 actors=plan.actors))
    env = faults.actor_env()
    return score_stream(
        ds, functools.partial(ResultsScorer, model_version=model_version), plan=plan, batch_size=config.batch_size,
        decode={"size": input_size, "storage": config.storage, "allowed_prefixes": allowed, "transient": transient},
        bundle_uri=config.bundle, storage=config.storage, pipeline_config=config.pipeline, counter=counter,
        runtime_env={"env_vars": env} if env else None,
        # A dead actor is restarted and its in-flight batches retried (bounded, so a crashing
        # model fails the job instead of looping); a batch's output only exists once its task
        # returns, so a retry cannot duplicate rows.
        max_restarts=config.max_restarts, max_task_retries=config.max_restarts)

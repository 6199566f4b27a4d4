"""The extraction's write side: the Ray Data datasink that stages each partition's results and
commits them, and the cluster tasks that check crop_ids and staged files (`attrgan.extract` runs
them; its module docstring tells the whole flow).

Free of torch on purpose: write and check tasks run in plain Ray task workers, and a worker
imports the module of the code it runs. This module costs ~2 s of a worker's start-up; the
extraction module, which imports the models, ~5.5 s.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import time
import uuid
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import ray
import ray.data

from attrgan.config import StorageConfig
from attrgan.data.manifest import PARTITION_INDEX, crop_id_problem, read_blocks, text_column
from attrgan.data.storage import filesystem, join, redact, write_bytes
from attrgan.contracts import TRANSIENT, TRACKS_DIR, TransientHistory, error_kind
from attrgan.fusion import Fusion, fuse_tracks
from attrgan.lease import Lease
from attrgan import faults
from attrgan.results import MAX_TRACKED_CROPS, forget_transient, promote, staging_uri, write_transient
from attrgan.ray_scoring import IO_TASK_CPUS

log = logging.getLogger(__name__)

# The precision ("fp32" / "bf16") of the actor that scored a row, for the run's records.
PRECISION = "_precision"


class ExtractError(RuntimeError):
    """The run could not complete: the stream lost rows, or staged files failed their checks."""


@dataclasses.dataclass(frozen=True)
class PartitionSummary:
    partition: str  # "" for an unpartitioned manifest
    rows: int
    errors: dict[str, int]  # error kind (the message up to its first ':') → rows
    super_resolved: int
    reconstructed: int
    seconds: float  # from the start of the run until its _SUCCESS was written
    tracks: int = 0  # rows of its track table

    def format(self) -> str:
        """The partition's line in the run's log, written when it commits."""
        errors = ", ".join(f"{kind} {n}" for kind, n in self.errors.items()) or "none"
        return (f"extract: committed {self.partition or '(unpartitioned)'}: {self.rows} rows in {self.tracks} "
                f"tracks, errors: {errors}; "
                f"super-resolved {self.super_resolved}, reconstructed {self.reconstructed}; "
                f"at {self.seconds:.1f} s")


@dataclasses.dataclass(frozen=True)
class CommitGroup:
    """One commit group: its partitions (index = PARTITION_INDEX) and their manifest row counts."""

    partitions: tuple[str, ...]
    rows: tuple[int, ...]


@dataclasses.dataclass(frozen=True)
class TrackPlan:
    """How a partition's track table is made (`attrgan.fusion.fuse_tracks`), from the bundle:
    its person-level attributes, their thresholds, its fusion, and the occlusion threshold the
    pipeline reconstructs from."""

    person_attributes: tuple[str, ...]
    thresholds: Mapping[str, float]
    fusion: Fusion
    occlusion_threshold: float

    def record(self) -> dict[str, Any]:
        """What `_SUCCESS` says of the partition's tracks (besides their row count): what a reader
        needs to merge a track's rows across partitions."""
        return {"person_attributes": list(self.person_attributes),
                "thresholds": {a: self.thresholds[a] for a in self.person_attributes},
                "fusion": self.fusion.to_dict()}


class ResultsSink(ray.data.Datasink):
    """Ray Data datasink of one commit group (the flow: `attrgan.extract`'s module docstring).

    `write` runs in cluster tasks: it stages one Parquet file per partition present in its rows
    and returns [{partition, file, rows, errors, super_resolved, reconstructed, node, precision}].
    `on_write_complete` runs on the driver with every task's return value (metadata only).
    """

    def __init__(self, *, out: str, storage: StorageConfig, rows_per_file: int, group: CommitGroup, run_id: str,
                 schema: pa.Schema, marker: Mapping[str, Any], start: float,
                 tracks: TrackPlan | None, transient: TransientHistory | None = None, lease: Lease | None = None) -> None:
        # Plain values, not the ExtractConfig: the sink is pickled into every write task, and the
        # config's module would bring torch along.
        self.out, self.storage, self.rows_per_file = out, storage, rows_per_file
        self.group, self.run_id, self.schema = group, run_id, schema
        self.marker, self.start, self.tracks = dict(marker), start, tracks
        # The group's crops that failed for a transient reason in earlier runs (`read_transient`).
        self.transient = transient or TransientHistory(max_runs=1, runs={})
        self.lease = lease  # the output's lease (`attrgan.lease`): checked before each partition's switch
        self.committed: list[PartitionSummary] = []
        self.incomplete: list[tuple[str, str]] = []
        self.nodes: set[str] = set()
        self.precisions: set[str] = set()

    @property
    def min_rows_per_write(self) -> int:
        return self.rows_per_file

    def write(self, blocks: Iterable[Any], ctx: Any) -> list[dict[str, Any]]:
        from ray.data.block import BlockAccessor

        tables = [BlockAccessor.for_block(b).to_arrow() for b in blocks]
        tables = [t for t in tables if t.num_rows]
        if not tables:
            return []
        table = pa.concat_tables(tables, promote_options="default")
        node = ray.get_runtime_context().get_node_id()
        out = []
        index = table[PARTITION_INDEX]
        for i in pc.unique(index).to_pylist():
            part = table.filter(pc.equal(index, i))
            precisions = sorted(pc.unique(part[PRECISION]).to_pylist())
            part = part.drop_columns([PARTITION_INDEX, PRECISION])
            # Ray Data may hand columns back with relaxed nullability; the files keep the contract's.
            part = part.select(self.schema.names).cast(self.schema)
            sink = pa.BufferOutputStream()
            pq.write_table(part, sink)
            uri = f"{staging_uri(self.out, self.run_id, self.group.partitions[i])}/part-{uuid.uuid4().hex}.parquet"
            write_bytes(uri, sink.getvalue().to_pybytes(), self.storage)
            errors = Counter(error_kind(e) for e in part["error"].drop_null().to_pylist())
            transient = part.filter(pc.starts_with(part["error"], f"{TRANSIENT}:"))["crop_id"]
            out.append({"partition": i, "file": uri, "rows": part.num_rows, "errors": dict(errors),
                        "transient_ids": transient.slice(0, MAX_TRACKED_CROPS).to_pylist(),
                        "super_resolved": pc.sum(part["super_resolved"]).as_py() or 0,
                        "reconstructed": pc.sum(part["reconstructed"]).as_py() or 0, "node": node,
                        "precision": precisions})
        return out

    def on_write_failed(self, error: Exception) -> None:
        log.error("extract: writing results failed (%s); this commit group's partitions keep their "
                  "previous results", type(error).__name__)

    def on_write_complete(self, write_result: Any) -> None:
        returns = [r for task in write_result.write_returns for r in task]
        self.commit(returns)

    # -- the commit
    def commit(self, returns: Sequence[Mapping[str, Any]]) -> None:
        """Verify and promote every partition of the group whose rows all arrived without a
        transient failure; record the others as incomplete (their staged files stay until the
        next run cleans them)."""

        files: dict[int, list[str]] = {i: [] for i in range(len(self.group.partitions))}
        precisions: dict[int, set[str]] = {i: set() for i in files}
        counts: dict[int, Counter[str]] = {i: Counter() for i in files}
        transient_ids: dict[int, list[str]] = {i: [] for i in files}
        for r in returns:
            files[r["partition"]].append(r["file"])
            transient_ids[r["partition"]] += r["transient_ids"]
            precisions[r["partition"]].update(r["precision"])
            counts[r["partition"]].update({"rows": r["rows"], "super_resolved": r["super_resolved"],
                                           "reconstructed": r["reconstructed"]})
            counts[r["partition"]].update({f"error:{k}": v for k, v in r["errors"].items()})
            self.nodes.add(r["node"])
            self.precisions.update(r["precision"])
        ready = []
        for i, partition in enumerate(self.group.partitions):
            rows, expected = counts[i]["rows"], self.group.rows[i]
            transient = counts[i][f"error:{TRANSIENT}"]
            if rows != expected:
                self.incomplete.append((partition, f"{rows} results rows for {expected} manifest rows"))
            elif transient:
                runs = self._count_transient(i, transient_ids[i])
                self.incomplete.append((partition, f"held back: {transient} row(s) failed for a transient reason "
                                                   "(storage timeouts, throttling or 5xx); the most tried has "
                                                   f"failed in {runs} run(s) in a row, "
                                                   f"given up after {self.transient.max_runs}"))
            else:
                ready.append(i)
        # One task per partition reads its staged files back, checks them and builds its track
        # table from them: the crops never pass through the driver.
        checks = [check_staged.remote(files[i], self.group.rows[i], self.storage,
                                      staging_uri(self.out, self.run_id, self.group.partitions[i]), self.tracks)
                  for i in ready]
        fault = faults.commit_step()
        for i, check in zip(ready, checks):
            partition = self.group.partitions[i]
            try:
                problem, staged_tracks, tracks = ray.get(check)
            except Exception as exc:  # noqa: BLE001 - a failed task: the partition waits for the next run
                self.incomplete.append((partition, f"checking its staged files or building its track table failed "
                                                   f"({short_reason(exc)}); its previous results and tracks stay"))
                continue
            faults.kill_at(fault, "staged")
            if problem:
                raise ExtractError(f"partition {partition!r}: {problem}; its previous results stay committed")
            c = counts[i]
            errors = dict(Counter({k[6:]: v for k, v in c.items() if k.startswith("error:")}).most_common())
            marker = {**self.marker, "partition": partition, "precision": "+".join(sorted(precisions[i])),
                      "rows": c["rows"], "errors": errors,
                      "super_resolved": c["super_resolved"], "reconstructed": c["reconstructed"],
                      "seconds": round(time.perf_counter() - self.start, 3),
                      "finished_at": dt.datetime.now(dt.timezone.utc).isoformat()}
            if self.tracks is not None:
                marker["tracks"] = {"rows": tracks, **self.tracks.record()}
            if self.lease is not None and (lost := self.lease.lost()):
                raise ExtractError(f"{lost}: partition {partition!r} not committed, its previous results stay")
            try:
                promote(join(self.out, partition), sorted(files[i]), marker, run_id=self.run_id,
                        storage=self.storage, fault=fault, staged_tracks=staged_tracks)
            except OSError as exc:  # its previous results stay committed; the next run redoes it
                self.incomplete.append((partition, f"commit failed ({short_reason(exc)})"))
                continue
            if self.transient.runs.get(i):
                try:
                    forget_transient(join(self.out, partition), self.storage)
                except OSError as exc:  # committed already; a stale count only gives up a run early
                    log.warning("extract: %s: deleting its transient record failed (%s)", partition,
                                short_reason(exc))
            summary = PartitionSummary(partition=partition, rows=c["rows"], errors=errors,
                                       super_resolved=c["super_resolved"], reconstructed=c["reconstructed"],
                                       seconds=time.perf_counter() - self.start, tracks=tracks)
            self.committed.append(summary)
            log.info("%s", summary.format())


    def _count_transient(self, index: int, failing: Sequence[str]) -> int:
        """Record the partition's transient failures for the next run; the most runs in a row."""
        partition = self.group.partitions[index]
        try:
            runs = write_transient(join(self.out, partition), failing, self.transient.runs.get(index, {}),
                                   run_id=self.run_id, storage=self.storage)
        except OSError as exc:  # the next run counts from its last record: it gives up a run later
            log.warning("extract: %s: recording its transient failures failed (%s)", partition, short_reason(exc))
            return 0
        return max(runs.values(), default=0)


# What a track table reads of the crops (besides the person-level attributes' scores).
TRACK_INPUT_COLUMNS = ("crop_id", "image_uri", "camera_id", "captured_at", "track_id", "frame_index", "status",
                       "super_resolved", "reconstructed", "occlusion_score", "crop_height", "model_version",
                       "processed_at")


@ray.remote(num_cpus=IO_TASK_CPUS)
def check_staged(files: Sequence[str], expected: int, storage: StorageConfig, staging: str,
                 tracks: TrackPlan | None) -> tuple[str | None, list[str], int]:
    """Read one partition's staged files back: exactly `expected` rows, each crop_id once (the
    manifest's ids were checked unique and every results row carries one); then, with a plan,
    stage its track table under `staging`'s TRACKS_DIR. Returns (what is wrong or None, [the
    track file's URI], its rows). Reads only the columns these need, and holds them for the whole
    partition (tracks are grouped within it)."""
    if not files:
        return (None if expected == 0 else f"no staged files for {expected} rows"), [], 0
    columns = ["crop_id"] if tracks is None else [*TRACK_INPUT_COLUMNS,
                                                  *(f"{a}_score" for a in tracks.person_attributes)]
    fs, _ = filesystem(files[0], storage)
    crops = pads.dataset([filesystem(f, storage)[1] for f in files], filesystem=fs,
                         format="parquet").to_table(columns=columns)
    ids = crops["crop_id"]
    distinct = pc.count_distinct(ids).as_py() if len(ids) else 0
    if len(ids) != expected or distinct != expected:
        return f"staged {len(ids)} rows ({distinct} distinct crop_ids) for {expected} manifest rows", [], 0
    if tracks is None:
        return None, [], 0
    table = fuse_tracks(crops, tracks.fusion, person_attributes=tracks.person_attributes,
                        thresholds=tracks.thresholds, occlusion_threshold=tracks.occlusion_threshold)
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    uri = f"{staging}/{TRACKS_DIR}/part-{uuid.uuid4().hex}.parquet"
    write_bytes(uri, sink.getvalue().to_pybytes(), storage)
    return None, [uri], table.num_rows


@ray.remote(num_cpus=IO_TASK_CPUS)
def check_ids(files: Sequence[str], manifest: str, storage: StorageConfig) -> str | None:
    """A partition's crop_ids: no nulls, no repeated keys (`crop_id_problem`). None when fine, else
    what is wrong."""
    fs, _ = filesystem(manifest, storage, sdk_retries=False)  # `read_blocks` retries: the one retry loop
    keys = [text_column(block["crop_id"], "crop_id")[0]
            for f in files for block in read_blocks(fs, f, ["crop_id"], storage)]
    return crop_id_problem(pa.chunked_array(keys, pa.string()))


def commit_groups(partitions: Sequence[str], rows: Mapping[str, int], limit: int) -> list[CommitGroup]:
    """Consecutive partitions gathered into groups of at most `limit` rows (a larger partition
    alone), in order."""
    groups: list[list[str]] = []
    total = 0
    for p in partitions:
        if not groups or total + rows[p] > limit:
            groups.append([])
            total = 0
        groups[-1].append(p)
        total += rows[p]
    return [CommitGroup(tuple(g), tuple(rows[p] for p in g)) for g in groups]


def short_reason(exc: BaseException) -> str:
    """An exception in a few words: its type and its first line, redacted and cut short (no
    payloads, no credentials)."""
    text = redact(str(exc), 160).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__

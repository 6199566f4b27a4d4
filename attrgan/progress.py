"""The extraction's progress line: rows done / total, rows/s and ETA, logged by the driver.

Rows never pass through the driver: the pipeline actors add each batch's row count to a
`RowCounter` (a zero-CPU actor on the driver's node, called fire-and-forget), and `ProgressLog`
reads that one number at a steady interval. A batch redone after a failure counts again, so the
count may run ahead of the rows written; the line shows it capped at the total. A node that
leaves the cluster mid-run gets a warning line of its own.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import ray

log = logging.getLogger("attrgan.extract")

# The first progress line comes this soon after the start (or after the interval, if shorter).
FIRST_PROGRESS_S = 10.0


@ray.remote(num_cpus=0)
class RowCounter:
    """Rows scored so far, from every pipeline actor."""

    def __init__(self) -> None:
        self.rows = 0

    def add(self, rows: int) -> None:
        self.rows += rows

    def total(self) -> int:
        return self.rows


def start_counter() -> Any:
    """A RowCounter pinned to the driver's node: it lives as long as the driver, whichever worker
    node goes away."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    node = ray.get_runtime_context().get_node_id()
    return RowCounter.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False)).remote()


def duration(seconds: float) -> str:
    """A duration the way an operator reads it: "45 s", "12 min", "3.2 h"."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def format_progress(done: int, total: int, seconds: float) -> str:
    """The progress line for `done` of `total` rows `seconds` after the start."""
    done = min(max(done, 0), total)
    share = f" ({100 * done / total:.0f}%)" if total else ""
    rate = done / seconds if seconds > 0 else 0.0
    eta = duration((total - done) / rate) if rate > 0 else "unknown"
    return f"extract: progress {done:,}/{total:,} rows{share}, {rate:.1f} rows/s, ETA {eta}"


def alive_nodes() -> set[str]:
    return {n["NodeID"] for n in ray.nodes() if n["Alive"]}


class ProgressLog:
    """Logs `format_progress` from `counter` every `interval_s` seconds (the first line after
    FIRST_PROGRESS_S at most) in a daemon thread, between `with` and its end; and a warning when
    a node of the cluster goes away meanwhile (Ray restarts its actors elsewhere)."""

    def __init__(self, counter: Any, total: int, interval_s: float) -> None:
        self.counter, self.total, self.interval_s = counter, total, interval_s
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="extract-progress", daemon=True)

    def __enter__(self) -> "ProgressLog":
        self.start = time.perf_counter()
        self.nodes = alive_nodes()
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop.set()
        self.thread.join(timeout=30)

    def _run(self) -> None:
        wait = min(FIRST_PROGRESS_S, self.interval_s)
        while not self.stop.wait(wait):
            wait = self.interval_s
            try:
                done = ray.get(self.counter.total.remote(), timeout=10)
                nodes = alive_nodes()
            except Exception as exc:  # a slow or lost counter costs a line, never the run
                log.debug("extract: no progress count (%s)", type(exc).__name__)
                continue
            log.info("%s", format_progress(done, self.total, time.perf_counter() - self.start))
            for lost in sorted(self.nodes - nodes):
                log.warning("extract: node %s left the cluster; Ray restarts its actors on the other nodes "
                            "and redoes their batches (%d node(s) left)", lost[:8], len(nodes))
            self.nodes = nodes

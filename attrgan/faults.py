"""Fault drills: environment variables that make a running job fail at a chosen moment, so the
tests can show that a failure there loses nothing. Nothing here does anything unless its
variable is set; each drill is called where its failure happens.

    ATTRGAN_EXTRACT_FAULT_MARKER   a local file path: the first scoring actor to reach its second
                                   batch creates the file and exits abruptly (`exit_actor_once`)
    ATTRGAN_COMMIT_FAULT           a commit step, "staged", "promoting", "before_success" or
                                   "after_success": the driver kills itself with SIGKILL there
                                   (`kill_at`)
    ATTRGAN_TEST_KILL_WORKER_AT_EPOCH, ATTRGAN_TEST_KILL_MARKER
                                   the training worker of rank 1 (rank 0 when alone) exits at the
                                   start of that epoch, once: the marker file records that it did
                                   (`exit_worker_once`)
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

ACTOR_EXIT_ENV = "ATTRGAN_EXTRACT_FAULT_MARKER"
COMMIT_STEP_ENV = "ATTRGAN_COMMIT_FAULT"
WORKER_EXIT_EPOCH_ENV = "ATTRGAN_TEST_KILL_WORKER_AT_EPOCH"
WORKER_EXIT_MARKER_ENV = "ATTRGAN_TEST_KILL_MARKER"


def actor_env() -> dict[str, str]:
    """The drill variables the scoring actors need in their runtime env (they may start on
    another process tree than the driver's)."""
    return {ACTOR_EXIT_ENV: os.environ[ACTOR_EXIT_ENV]} if os.environ.get(ACTOR_EXIT_ENV) else {}


def exit_actor_once(batches_done: int) -> None:
    """In a scoring actor: exit abruptly on its second batch if the drill is set and no actor did yet."""
    marker = os.environ.get(ACTOR_EXIT_ENV)
    if marker and batches_done >= 1 and not os.path.exists(marker):
        with open(marker, "w") as f:
            f.write(f"actor pid {os.getpid()} exited on its batch {batches_done + 1}\n")
        os._exit(1)


def commit_step() -> str | None:
    """The commit step the drill kills the driver at, or None."""
    return os.environ.get(COMMIT_STEP_ENV) or None


def kill_at(fault: str | None, step: str) -> None:
    """Kill this process with SIGKILL when `fault` (`commit_step()`) names `step`."""
    if fault == step:
        os.kill(os.getpid(), signal.SIGKILL)


def worker_exit() -> tuple[int | None, str | None]:
    """(epoch, marker file) of the training worker drill, read on the driver; (None, None) when unset."""
    epoch = os.environ.get(WORKER_EXIT_EPOCH_ENV)
    return (int(epoch) if epoch else None), os.environ.get(WORKER_EXIT_MARKER_ENV)


def exit_worker_once(at_epoch: int | None, marker: str | None, *, epoch: int, rank: int, world_size: int) -> None:
    """In a training worker: exit at the start of epoch `at_epoch` if this is rank 1 (rank 0 when
    alone) and the marker file says no worker did yet."""
    if at_epoch != epoch or rank != min(1, world_size - 1) or not marker:
        return
    path = Path(marker)
    if path.exists():
        return
    path.write_text(f"rank {rank} exited at the start of epoch {epoch}\n")
    print(f"[attrgan] fault injection: rank {rank} exits at epoch {epoch}", flush=True)
    os._exit(1)

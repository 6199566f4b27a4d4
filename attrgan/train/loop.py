"""The epoch loop the three networks share, in plain PyTorch.

A loop is driven by callables so that unit tests run it on a list of tensors and Ray Train runs it
per worker: `batches(epoch)` yields the epoch's batches, `step(batch)` trains on one and returns
its named losses, `report(metrics, checkpoint_state)` is called once per epoch.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

from attrgan.precision import autocast as precision_autocast

# report(metrics, checkpoint_state): metrics are flat numbers plus "step_log", a list of
# {"epoch", "step", <loss>: float} points for the loss curve; checkpoint_state is what resuming
# needs (state dicts, "epoch" = the next epoch to run, "step"), or None.
Report = Callable[[dict[str, Any], dict[str, Any] | None], None]


def unwrap(net: nn.Module) -> nn.Module:
    """The network inside a DistributedDataParallel wrapper (or the network itself)."""
    return net.module if isinstance(net, nn.parallel.DistributedDataParallel) else net


def autocast(device: torch.device | str, enabled: bool) -> contextlib.AbstractContextManager:
    """bf16 autocast on `device` when enabled (the training loops' `amp`; see attrgan.precision)."""
    return precision_autocast(device, "bf16" if enabled else "fp32")


@dataclasses.dataclass(frozen=True)
class LoopSpec:
    """How a network's epochs run, the same for the three loops.

    epochs: the last epoch + 1; start_epoch / start_step: where a resumed run goes on;
    max_steps_per_epoch: cut an epoch short (None: every batch); device and amp (bf16 autocast)
    for the steps; log_every: steps between points of the loss curve; should_stop() is asked
    after each epoch.
    """

    epochs: int
    start_epoch: int = 0
    start_step: int = 0
    max_steps_per_epoch: int | None = None
    device: torch.device | str = "cpu"
    amp: bool = False
    log_every: int = 10
    should_stop: Callable[[], bool] | None = None

    def __post_init__(self) -> None:
        if self.epochs < 1 or not 0 <= self.start_epoch <= self.epochs:
            raise ValueError(f"need 0 <= start_epoch <= epochs and epochs >= 1, got {self.start_epoch} and {self.epochs}")
        if self.log_every < 1:
            raise ValueError(f"log_every must be >= 1, got {self.log_every}")


def run_epochs(loop: LoopSpec, *, step: Callable[[Any], dict[str, float]], batches: Callable[[int], Iterable[Any]],
               batch_images: Callable[[Any], int], report: Report, state: Callable[[int, int], dict[str, Any]],
               validate: Callable[[int], dict[str, Any]] | None = None) -> dict[str, Any]:
    """Train epochs `loop.start_epoch .. loop.epochs-1`; returns the last epoch's metrics ({} if none ran).

    Per epoch, report() gets epoch, step (global, after the epoch), images, images_per_s,
    train_<loss> (mean over the epoch), the validation metrics and step_log; and
    state(next_epoch, step) as the checkpoint state.
    """
    global_step = loop.start_step
    metrics: dict[str, Any] = {}
    for epoch in range(loop.start_epoch, loop.epochs):
        sums: dict[str, float] = {}
        step_log: list[dict[str, float]] = []
        images = steps = 0
        start = time.perf_counter()
        for batch in batches(epoch):
            if loop.max_steps_per_epoch is not None and steps >= loop.max_steps_per_epoch:
                break
            losses = step(batch)
            steps += 1
            global_step += 1
            images += batch_images(batch)
            for name, value in losses.items():
                sums[name] = sums.get(name, 0.0) + value
            if steps == 1 or global_step % loop.log_every == 0:
                step_log.append({"epoch": epoch, "step": global_step, **losses})
        elapsed = time.perf_counter() - start
        if steps == 0:
            raise ValueError(f"epoch {epoch} had no batches: the training split is empty or smaller than a batch")
        metrics = {"epoch": epoch, "step": global_step, "images": images,
                   "images_per_s": images / max(elapsed, 1e-9), "epoch_s": elapsed}
        metrics |= {f"train_{name}": total / steps for name, total in sums.items()}
        if validate is not None:
            metrics |= validate(epoch)
        report(metrics | {"step_log": step_log}, state(epoch + 1, global_step))
        if loop.should_stop is not None and loop.should_stop():
            break
    return metrics

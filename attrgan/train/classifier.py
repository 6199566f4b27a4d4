"""Training loop of the attribute classifier (paper §3.1), plain PyTorch.

The loss is eq. (2)'s weighted BCE with the training set's positive ratios. Each epoch ends
with validation on the val split: mA / accuracy / precision / recall / F1 at 0.5 and at
per-attribute thresholds calibrated on that split, which the final checkpoint carries into the
bundle's config.json.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from attrgan.data.images import to_tensor
from attrgan.losses import weighted_bce
from attrgan.metrics import attribute_metrics, calibrate_thresholds
from attrgan.models import build_network
from attrgan.train.train_config import TrainConfig
from attrgan.train.loop import LoopSpec, Report, autocast, run_epochs, unwrap

SUMMARY_METRICS = ("ma", "accuracy", "precision", "recall", "f1")


def build_classifier(config: TrainConfig, attributes: Sequence[str]) -> nn.Module:
    """A fresh AttributeClassifier for `config` predicting `attributes`."""
    return build_network("classifier", {"attributes": tuple(attributes), "backbone": config.backbone,
                                        "width": config.width if config.backbone == "small" else 1.0,
                                        "input_size": config.network_input_size, "weights": config.weights})


def build_optimizer(config: TrainConfig, params: Iterable[nn.Parameter]) -> torch.optim.Optimizer:
    """SGD (momentum, weight decay) or Adam (betas, weight decay) as `config` says."""
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    return torch.optim.Adam(params, lr=config.lr, betas=config.betas, weight_decay=config.weight_decay)


def classifier_step(net: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
                    ratios: torch.Tensor, *, amp: bool = False) -> dict[str, float]:
    """One SGD step on x (B, 3, H, W) float32 in [-1, 1] with labels y (B, A) in {1, 0, -1}."""
    net.train()
    opt.zero_grad(set_to_none=True)
    # NCHW: oneDNN's stride-2 1x1 conv weight gradient corrupts memory on to_tensor's channels-last strides.
    x = x.contiguous()
    with autocast(x.device, amp):
        logits = net(x)
    loss = weighted_bce(logits.float(), y, ratios)
    loss.backward()
    opt.step()
    return {"loss": loss.item()}


@torch.no_grad()
def predict_scores(net: nn.Module, images: np.ndarray, *, batch_size: int = 64,
                   device: torch.device | str = "cpu", amp: bool = False) -> np.ndarray:
    """Probabilities (N, A) float32 for images (N, H, W, 3) uint8, in eval mode."""
    net = unwrap(net)
    was_training = net.training
    net.eval()
    out = []
    for start in range(0, len(images), batch_size):
        x = to_tensor(images[start:start + batch_size]).to(device)
        with autocast(x.device, amp):
            out.append(torch.sigmoid(net(x).float()).cpu())
    net.train(was_training)
    return torch.cat(out).numpy() if out else np.zeros((0, len(net.config.attributes)), np.float32)


def validation_metrics(labels: np.ndarray, scores: np.ndarray, *, attributes: Sequence[str],
                       objective: str = "ma") -> tuple[dict[str, float], np.ndarray]:
    """(metrics, thresholds): val_<metric> at 0.5 and val_<metric>_cal at thresholds calibrated
    on these very scores (objective "ma" or "f1"); thresholds (A,) float64."""
    thresholds = calibrate_thresholds(labels, scores, objective=objective)
    plain = attribute_metrics(labels, scores, attributes=attributes)
    calibrated = attribute_metrics(labels, scores, attributes=attributes, thresholds=thresholds)
    metrics = {f"val_{k}": float(getattr(plain, k)) for k in SUMMARY_METRICS}
    metrics |= {f"val_{k}_cal": float(getattr(calibrated, k)) for k in SUMMARY_METRICS}
    return metrics, thresholds


def train_classifier(net: nn.Module, opt: torch.optim.Optimizer,
                     batches: Callable[[int], Iterable[tuple[torch.Tensor, torch.Tensor]]], loop: LoopSpec, *,
                     ratios: np.ndarray | torch.Tensor, report: Report,
                     val_images: np.ndarray | None = None, val_labels: np.ndarray | None = None,
                     threshold_objective: str = "ma") -> dict[str, Any]:
    """Train `net` (possibly DDP-wrapped) for the epochs `loop` gives.

    batches(epoch) yields (x (B,3,H,W) float32 in [-1,1], y (B,A) int8) on the CPU; ratios (A,)
    are eq. (2)'s positive ratios. With val_images (N,H,W,3) uint8 and val_labels (N,A), every
    epoch is validated and the checkpoint state carries the calibrated "thresholds" (A,) and the
    "val_metrics". Checkpoint state: epoch (next to run), step, net, opt, thresholds, val_metrics.
    Returns the last epoch's metrics.
    """
    device, amp = torch.device(loop.device), loop.amp
    ratios_t = torch.as_tensor(np.asarray(ratios), dtype=torch.float32, device=device)
    attributes = unwrap(net).config.attributes
    latest: dict[str, Any] = {"thresholds": None, "val_metrics": {}}

    def step(batch: tuple[torch.Tensor, torch.Tensor]) -> dict[str, float]:
        x, y = batch
        return classifier_step(net, opt, x.to(device, non_blocking=True), y.to(device), ratios_t, amp=amp)

    def validate(epoch: int) -> dict[str, Any]:
        scores = predict_scores(net, val_images, device=device, amp=amp)
        metrics, thresholds = validation_metrics(val_labels, scores, attributes=attributes,
                                                 objective=threshold_objective)
        latest["thresholds"] = [float(t) for t in thresholds]
        latest["val_metrics"] = metrics
        return metrics

    def state(next_epoch: int, step_count: int) -> dict[str, Any]:
        return {"epoch": next_epoch, "step": step_count, "net": unwrap(net).state_dict(),
                "opt": opt.state_dict(), **latest}

    has_val = val_images is not None and val_labels is not None and len(val_images) > 0
    return run_epochs(loop, step=step, batches=batches, batch_images=lambda b: len(b[0]), report=report,
                      state=state, validate=validate if has_val else None)

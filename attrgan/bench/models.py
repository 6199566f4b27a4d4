"""Forward throughput and size of each network, at the paper's width and at the `cpu-small` preset's,
in fp32 and in the precision the pipeline picks ("auto"), side by side.

fp32 is the networks as plain modules (float32, NCHW); auto is what `attrgan.pipeline` runs:
channels_last memory and bf16 autocast where `attrgan.precision` resolves "auto" to bf16.
Random weights, eval mode, `torch.inference_mode()`, on CUDA when there is one (else CPU); batch
16 at the paper's widths, 64 at the small ones (the extraction's batch). The two settings
alternate `repeats` times on the same module and input, so load from other processes hits both
alike; images/s is from the median timed iteration of each.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch
from torch import nn

from attrgan.models import (
    AttributeClassifier,
    ClassifierConfig,
    ReconstructionConfig,
    ReconstructionDiscriminator,
    ReconstructionGenerator,
    SuperResConfig,
    SuperResDiscriminator,
    SuperResGenerator,
)
from attrgan.precision import autocast, resolve_precision
from attrgan.train.config import preset

PAPER_BATCH, SMALL_BATCH = 16, 64
# The cpu-small preset's widths (the demo's networks).
SMALL_CLASSIFIER_WIDTH = preset("cpu-small", "classifier")["width"]
SMALL_REC_WIDTH = preset("cpu-small", "reconstruction")["width"]
SMALL_SR_WIDTH = preset("cpu-small", "superres")["width"]

# (network, setting, batch, builder)
NETWORKS: list[tuple[str, str, int, Callable[[], nn.Module]]] = [
    ("classifier", "paper resnet50", PAPER_BATCH, lambda: AttributeClassifier(ClassifierConfig())),
    ("classifier", f"small w={SMALL_CLASSIFIER_WIDTH}", SMALL_BATCH,
     lambda: AttributeClassifier(ClassifierConfig(backbone="small", width=SMALL_CLASSIFIER_WIDTH))),
    ("G^R reconstruction", "paper w=1", PAPER_BATCH, lambda: ReconstructionGenerator(ReconstructionConfig())),
    ("G^R reconstruction", f"small w={SMALL_REC_WIDTH}", SMALL_BATCH,
     lambda: ReconstructionGenerator(ReconstructionConfig(width=SMALL_REC_WIDTH, residual=True, skips=True))),
    ("D^R", "paper w=1", PAPER_BATCH, lambda: ReconstructionDiscriminator()),
    ("D^R", f"small w={SMALL_REC_WIDTH}", SMALL_BATCH, lambda: ReconstructionDiscriminator(width=SMALL_REC_WIDTH)),
    ("G^S super-resolution", "paper w=1", PAPER_BATCH, lambda: SuperResGenerator(SuperResConfig())),
    ("G^S super-resolution", f"small w={SMALL_SR_WIDTH}", SMALL_BATCH,
     lambda: SuperResGenerator(SuperResConfig(width=SMALL_SR_WIDTH, residual=True, skips=True))),
    ("D^S", "paper w=1", PAPER_BATCH, lambda: SuperResDiscriminator()),
    ("D^S", f"small w={SMALL_SR_WIDTH}", SMALL_BATCH, lambda: SuperResDiscriminator(width=SMALL_SR_WIDTH)),
]


def _input_size(model: nn.Module) -> tuple[int, int]:
    config = getattr(model, "config", None)
    return tuple(config.input_size) if config is not None else tuple(model.input_size)


def _timed(model: nn.Module, x: torch.Tensor, *, precision: str, iters: int) -> list[float]:
    """Seconds of `iters` forward passes after one warm-up, in `precision` ("fp32" | "bf16")."""
    seconds = []
    with torch.inference_mode(), autocast(x.device, precision):
        for i in range(iters + 1):
            start = time.perf_counter()
            model(x)
            if x.device.type == "cuda":
                torch.cuda.synchronize(x.device)
            if i:
                seconds.append(time.perf_counter() - start)
    return seconds


def measure_side_by_side(model: nn.Module, *, batch: int, device: torch.device, iters: int,
                         repeats: int) -> tuple[float, float, str]:
    """(fp32 images/s, auto images/s, auto's resolved precision) of `model` on a random batch,
    the two settings alternating `repeats` times."""
    precision = resolve_precision("auto", device)
    x = torch.rand(batch, 3, *_input_size(model), device=device) * 2 - 1
    x_last = x.contiguous(memory_format=torch.channels_last)
    fp32: list[float] = []
    auto: list[float] = []
    for _ in range(repeats):
        fp32 += _timed(model.to(memory_format=torch.contiguous_format), x, precision="fp32", iters=iters)
        auto += _timed(model.to(memory_format=torch.channels_last), x_last, precision=precision, iters=iters)
    return batch / statistics.median(fp32), batch / statistics.median(auto), precision


def run(quick: bool = False) -> None:
    """Print one row per network and width: parameters, input size, fp32 and auto images/s."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    iters, repeats = (1, 1) if quick else (2, 2)
    precision = resolve_precision("auto", device)
    print(f"device {device}, auto = channels_last + {precision}; batch {PAPER_BATCH} (paper widths) / "
          f"{SMALL_BATCH} (small); {repeats} x (1 warm-up + {iters} timed) iterations per setting, alternating",
          flush=True)
    header = ("network", "setting", "params", "input HxW", "fp32 img/s", "auto img/s", "auto/fp32")
    rows = []
    for name, setting, batch, build in NETWORKS:
        model = build().to(device).eval()
        params = sum(p.numel() for p in model.parameters())
        fp32, auto, _ = measure_side_by_side(model, batch=batch, device=device, iters=iters, repeats=repeats)
        h, w = _input_size(model)
        rows.append((name, setting, f"{params / 1e6:.2f}M", f"{h}x{w}", f"{fp32:.1f}", f"{auto:.1f}",
                     f"{auto / fp32:.2f}x"))
        print("  " + "  ".join(rows[-1]), flush=True)  # progress: the paper-width rows take a while
        del model
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for r in [header, *rows]:
        # text columns left-aligned, numbers right-aligned
        print("  ".join(c.ljust(wd) if i < 2 else c.rjust(wd) for i, (c, wd) in enumerate(zip(r, widths))))

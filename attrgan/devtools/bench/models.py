"""Forward throughput and size of each network, at the paper's width and at the `cpu-small` preset's,
as plain fp32 modules and as `attrgan.pipeline` runs them, side by side.

fp32 is the networks as plain modules (float32, NCHW). prepared is the copy the pipeline runs
(`attrgan.models.inference`: BatchNorm folded, channels_last) still in fp32; auto adds the
precision the pipeline picks (bf16 autocast where `attrgan.precision` resolves "auto" to bf16;
where it resolves to fp32, auto is the prepared figure). Random weights, eval mode, `torch.inference_mode()`, on CUDA when there is one (else CPU);
batch 16 at the paper's widths, 64 at the small ones (the extraction's batch). The settings
alternate `repeats` times on the same input, so load from other processes hits all alike;
images/s is from the median timed iteration of each.
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
from attrgan.models.inference import inference_copy
from attrgan.precision import autocast, resolve_precision
from attrgan.train.train_config import preset

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
                         repeats: int) -> tuple[dict[str, float], str]:
    """({"fp32", "prepared", "auto"}: images/s, auto's resolved precision) of `model` on a random
    batch, the settings alternating `repeats` times."""
    precision = resolve_precision("auto", device)
    x = torch.rand(batch, 3, *_input_size(model), device=device) * 2 - 1
    x_last = x.contiguous(memory_format=torch.channels_last)
    prepared = inference_copy(model, device=device, memory_format=torch.channels_last)
    settings = {"fp32": (model, x, "fp32"), "prepared": (prepared, x_last, "fp32")}
    if precision != "fp32":
        settings["auto"] = (prepared, x_last, precision)
    seconds: dict[str, list[float]] = {name: [] for name in settings}
    for _ in range(repeats):
        for name, (net, inputs, setting) in settings.items():
            seconds[name] += _timed(net, inputs, precision=setting, iters=iters)
    rates = {name: batch / statistics.median(s) for name, s in seconds.items()}
    rates.setdefault("auto", rates["prepared"])
    return rates, precision


def run(quick: bool = False) -> None:
    """Print one row per network and width: parameters, input size, fp32 and auto images/s."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    iters, repeats = (1, 1) if quick else (2, 2)
    precision = resolve_precision("auto", device)
    print(f"device {device}, prepared = BatchNorm folded + channels_last, auto = prepared + {precision}; "
          f"batch {PAPER_BATCH} (paper widths) / "
          f"{SMALL_BATCH} (small); {repeats} x (1 warm-up + {iters} timed) iterations per setting, alternating",
          flush=True)
    header = ("network", "setting", "params", "input HxW", "fp32 img/s", "prepared", "auto img/s", "auto/fp32")
    rows = []
    for name, setting, batch, build in NETWORKS:
        model = build().to(device).eval()
        params = sum(p.numel() for p in model.parameters())
        rates, _ = measure_side_by_side(model, batch=batch, device=device, iters=iters, repeats=repeats)
        h, w = _input_size(model)
        rows.append((name, setting, f"{params / 1e6:.2f}M", f"{h}x{w}", f"{rates['fp32']:.1f}",
                     f"{rates['prepared']:.1f}", f"{rates['auto']:.1f}", f"{rates['auto'] / rates['fp32']:.2f}x"))
        print("  " + "  ".join(rows[-1]), flush=True)  # progress: the paper-width rows take a while
        del model
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for r in [header, *rows]:
        # text columns left-aligned, numbers right-aligned
        print("  ".join(c.ljust(wd) if i < 2 else c.rjust(wd) for i, (c, wd) in enumerate(zip(r, widths))))

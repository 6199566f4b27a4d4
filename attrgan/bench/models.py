"""Forward throughput and size of each network, at the paper's width and at the small CPU width.

Batch 8 under `torch.inference_mode()`, eval mode, on CUDA when there is one (else CPU);
images/s is the median over the timed iterations after warm-up.
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

BATCH = 8
SMALL_CLASSIFIER_WIDTH = 0.25  # "small" backbone: 16 → 128 channels
SMALL_GAN_WIDTH = 0.125  # GANs at 1/8 of the paper's filters

# (network, setting, builder)
NETWORKS: list[tuple[str, str, Callable[[], nn.Module]]] = [
    ("classifier", "paper resnet50", lambda: AttributeClassifier(ClassifierConfig())),
    ("classifier", f"small w={SMALL_CLASSIFIER_WIDTH}",
     lambda: AttributeClassifier(ClassifierConfig(backbone="small", width=SMALL_CLASSIFIER_WIDTH))),
    ("G^R reconstruction", "paper w=1", lambda: ReconstructionGenerator(ReconstructionConfig())),
    ("G^R reconstruction", f"small w={SMALL_GAN_WIDTH}",
     lambda: ReconstructionGenerator(ReconstructionConfig(width=SMALL_GAN_WIDTH))),
    ("D^R", "paper w=1", lambda: ReconstructionDiscriminator()),
    ("D^R", f"small w={SMALL_GAN_WIDTH}", lambda: ReconstructionDiscriminator(width=SMALL_GAN_WIDTH)),
    ("G^S super-resolution", "paper w=1", lambda: SuperResGenerator(SuperResConfig())),
    ("G^S super-resolution", f"small w={SMALL_GAN_WIDTH}",
     lambda: SuperResGenerator(SuperResConfig(width=SMALL_GAN_WIDTH))),
    ("D^S", "paper w=1", lambda: SuperResDiscriminator()),
    ("D^S", f"small w={SMALL_GAN_WIDTH}", lambda: SuperResDiscriminator(width=SMALL_GAN_WIDTH)),
]


def _input_size(model: nn.Module) -> tuple[int, int]:
    config = getattr(model, "config", None)
    return tuple(config.input_size) if config is not None else tuple(model.input_size)


def measure(model: nn.Module, *, device: torch.device, warmup: int, iters: int) -> float:
    """Median forward throughput in images/s of `model` on a random (BATCH, 3, H, W) batch."""
    x = torch.rand(BATCH, 3, *_input_size(model), device=device) * 2 - 1
    seconds = []
    with torch.inference_mode():
        for i in range(warmup + iters):
            start = time.perf_counter()
            model(x)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            if i >= warmup:
                seconds.append(time.perf_counter() - start)
    return BATCH / statistics.median(seconds)


def run(quick: bool = False) -> None:
    """Print one row per network and width: parameters, input size, images/s, ms per batch."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    warmup, iters = (1, 2) if quick else (2, 5)
    header = ("network", "setting", "params", "input HxW", "images/s", f"ms/batch{BATCH}")
    rows = []
    print(f"device {device}, batch {BATCH}, {warmup} warm-up + {iters} timed iterations", flush=True)
    for name, setting, build in NETWORKS:
        model = build().to(device).eval()
        params = sum(p.numel() for p in model.parameters())
        rate = measure(model, device=device, warmup=warmup, iters=iters)
        h, w = _input_size(model)
        rows.append((name, setting, f"{params / 1e6:.2f}M", f"{h}x{w}", f"{rate:.1f}", f"{1000 * BATCH / rate:.1f}"))
        del model
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for r in [header, *rows]:
        # text columns left-aligned, numbers right-aligned
        print("  ".join(c.ljust(wd) if i < 2 else c.rjust(wd) for i, (c, wd) in enumerate(zip(r, widths))))

"""Which number format the networks run in: bfloat16 where the hardware computes it natively.

`resolve_precision` is the one place that decides. "auto" means bf16 on CUDA and on CPUs with
AMX-BF16 or AVX512-BF16 (where oneDNN runs bf16 convolutions natively, 2-4x faster than fp32),
fp32 elsewhere: without those instructions bf16 is emulated and slower than fp32.
bf16 runs under autocast, so weights stay float32 and outputs are cast back to float32.

The environment variable ATTRGAN_CPU_BF16 overrides the CPU detection ("0": no bf16 support,
"1": support); tests use it to check the fp32 fallback on any machine. It travels to Ray actors
with the job's environment.
"""

from __future__ import annotations

import contextlib
import functools
import os
from typing import Literal

import torch

PRECISIONS = ("auto", "fp32", "bf16")
Precision = Literal["auto", "fp32", "bf16"]
CPU_BF16_ENV = "ATTRGAN_CPU_BF16"
# /proc/cpuinfo flags of the instructions that compute bf16 natively.
BF16_CPU_FLAGS = frozenset({"amx_bf16", "avx512_bf16"})


@functools.cache
def _cpuinfo_flags() -> frozenset[str]:
    """The CPU's feature flags from /proc/cpuinfo (empty where there is none, e.g. macOS)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def cpu_has_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AMX-BF16 or AVX512-BF16); ATTRGAN_CPU_BF16 overrides."""
    forced = os.environ.get(CPU_BF16_ENV, "").strip()
    if forced in ("0", "1"):
        return forced == "1"
    if forced:
        raise ValueError(f"{CPU_BF16_ENV} must be '0' or '1' (or unset), got {forced!r}")
    # torch reports AMX through its dispatch level; the flags cover AVX512-BF16 (and AMX) too.
    return (torch.backends.cpu.get_cpu_capability() == "AMX"
            or bool(_cpuinfo_flags() & BF16_CPU_FLAGS))


def resolve_precision(precision: str, device: torch.device | str) -> Literal["fp32", "bf16"]:
    """"auto" → "bf16" on CUDA and on CPUs with native bf16, else "fp32"; "fp32"/"bf16" as given."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision != "auto":
        return precision  # type: ignore[return-value]
    device = torch.device(device)
    if device.type == "cuda":
        return "bf16"
    return "bf16" if device.type == "cpu" and cpu_has_bf16() else "fp32"


def autocast(device: torch.device | str, precision: str) -> contextlib.AbstractContextManager:
    """bf16 autocast on `device` when `precision` ("fp32" | "bf16", already resolved) is bf16."""
    if precision not in ("fp32", "bf16"):
        raise ValueError(f"autocast needs a resolved precision ('fp32' or 'bf16'), got {precision!r}")
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16)

"""What the networks, the pipeline and the training loops share: the GANs' conv blocks and checks,
and the batch operations of restoring a crop (resizing, compositing a generator's output).

Plain PyTorch, no I/O. BasicSR keeps the same kind of helpers in its `arch_util.py`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

KERNEL = 5
# padding 2 with stride 2 halves an even size exactly; output_padding 1 makes the transposed
# conv double it exactly, so encoder and decoder sizes mirror each other.
PADDING = KERNEL // 2
LEAKY_SLOPE = 0.2


def scaled(channels: int, width: float) -> int:
    """The paper's channel count `channels` under width multiplier `width` (at least 1)."""
    return max(1, round(channels * width))


def check_size(input_size: Sequence[int], *, divisor: int, name: str) -> tuple[int, int]:
    """Validate an (H, W) size whose sides must be positive multiples of `divisor`."""
    size = tuple(input_size)
    if len(size) != 2 or any(not isinstance(s, int) or s <= 0 or s % divisor for s in size):
        raise ValueError(f"{name}: input_size must be two positive multiples of {divisor} (H, W), "
                         f"got {input_size!r}")
    return size  # type: ignore[return-value]


def check_images(x: torch.Tensor, size: tuple[int, int], *, name: str) -> None:
    """Raise ValueError unless `x` is a (B, 3, H, W) float batch with (H, W) == `size`."""
    if x.ndim != 4 or x.shape[1] != 3 or tuple(x.shape[2:]) != size or not x.is_floating_point():
        raise ValueError(f"{name} expects a (B, 3, {size[0]}, {size[1]}) float tensor in [-1, 1], "
                         f"got {tuple(x.shape)} {x.dtype}")


def conv_block(in_channels: int, out_channels: int, *, transposed: bool = False,
               norm: bool = True, activation: nn.Module) -> nn.Sequential:
    """5×5 stride-2 (transposed) conv → optional BatchNorm → activation.

    A conv followed by BatchNorm carries no bias: BatchNorm's shift makes it redundant.
    """
    if transposed:
        conv: nn.Module = nn.ConvTranspose2d(in_channels, out_channels, KERNEL, stride=2, padding=PADDING,
                                             output_padding=1, bias=not norm)
    else:
        conv = nn.Conv2d(in_channels, out_channels, KERNEL, stride=2, padding=PADDING, bias=not norm)
    layers = [conv] + ([nn.BatchNorm2d(out_channels)] if norm else []) + [activation]
    return nn.Sequential(*layers)


class Layers(NamedTuple):
    """What a masked generator composites: paint (B, 3, h, w) in [-1, 1] and weight α (B, 1, h, w)
    in (0, 1); its output is x + α·(paint − x)."""

    paint: torch.Tensor
    weight: torch.Tensor


def check_flag(value: object, *, name: str) -> None:
    """Raise ValueError unless `value` is a bool (config.json could hold 0/1 or strings)."""
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be true or false, got {value!r}")


def resize_batch(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Resize a (B, 3, H, W) float batch: area filter when shrinking (no aliasing), bilinear otherwise."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    if x.shape[-2] >= size[0] and x.shape[-1] >= size[1]:
        return F.interpolate(x, size=size, mode="area")
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)


def full_size(original: torch.Tensor, small: torch.Tensor, out: torch.Tensor,
              layers: Layers | None = None) -> torch.Tensor:
    """A same-size generator's (G^R's) restoration of `original` at its full size, where `small` is
    `original` shrunk to the generator's input and `out` the generator's output for it.

    With a masked generator's `layers`, its paint and weight are resized up and composited over
    `original`: where α ≈ 1 nothing of the original (the occluder's edges included) survives, where
    α ≈ 0 the crop keeps its full detail. Otherwise what the generator changed (`out - small`) is
    resized up and added to `original`. (B, 3, H, W) and (B, 3, h, w) batches in [-1, 1] → (B, 3, H, W).
    """
    size = tuple(original.shape[-2:])
    if layers is not None:  # float32, whatever precision the generator ran in
        weight = resize_batch(layers.weight.float(), size)
        return (original + weight * (resize_batch(layers.paint.float(), size) - original)).clamp(-1, 1)
    return (original + resize_batch(out.float() - small, size)).clamp(-1, 1)

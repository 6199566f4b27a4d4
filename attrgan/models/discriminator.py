"""Discriminators D^R (paper §3.2) and D^S (§3.3).

Both are a stack of 5×5 stride-2 convs whose filters double from 128 (D^R: 128 → 1024 over four
layers on (160, 64); D^S: 128 → 2048 over five layers on (320, 128)), LeakyReLU(0.2) after each,
BatchNorm before every LeakyReLU except the first, then one linear layer to a single logit.

They return LOGITS of shape (B,): the paper's sigmoid is applied inside `attrgan.losses`
(`binary_cross_entropy_with_logits`, softplus), which is the numerically stable form.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from attrgan.models.ops import LEAKY_SLOPE, check_images, check_size, conv_block, scaled


class _ConvDiscriminator(nn.Module):
    def __init__(self, *, channels: Sequence[int], width: float, input_size: tuple[int, int], name: str) -> None:
        super().__init__()
        if not width > 0:
            raise ValueError(f"{name}: width must be > 0, got {width!r}")
        self.name = name
        self.width = width
        self.input_size = check_size(input_size, divisor=2 ** len(channels), name=name)
        blocks: list[nn.Module] = []
        prev = 3
        for i, c in enumerate(channels):
            blocks.append(conv_block(prev, scaled(c, width), norm=i > 0, activation=nn.LeakyReLU(LEAKY_SLOPE)))
            prev = scaled(c, width)
        self.features = nn.Sequential(*blocks)
        h, w = (s // 2 ** len(channels) for s in self.input_size)
        self.classifier = nn.Linear(prev * h * w, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) float32 in [-1, 1] → (B,) logits; sigmoid(logit) = P(real)."""
        check_images(x, self.input_size, name=self.name)
        return self.classifier(self.features(x).flatten(1)).squeeze(1)


class ReconstructionDiscriminator(_ConvDiscriminator):
    """D^R: four stride-2 convs, 128 → 256 → 512 → 1024 filters (times `width`)."""

    CHANNELS = (128, 256, 512, 1024)

    def __init__(self, *, width: float = 1.0, input_size: tuple[int, int] = (160, 64)) -> None:
        super().__init__(channels=self.CHANNELS, width=width, input_size=input_size,
                         name="ReconstructionDiscriminator")


class SuperResDiscriminator(_ConvDiscriminator):
    """D^S: five stride-2 convs, 128 → 256 → 512 → 1024 → 2048 filters (times `width`)."""

    CHANNELS = (128, 256, 512, 1024, 2048)

    def __init__(self, *, width: float = 1.0, input_size: tuple[int, int] = (320, 128)) -> None:
        super().__init__(channels=self.CHANNELS, width=width, input_size=input_size,
                         name="SuperResDiscriminator")

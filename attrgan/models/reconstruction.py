"""Reconstruction generator G^R (paper §3.2) and the conv building blocks the GANs share.

G^R maps an occluded crop to a restored one at the same size, (160, 64) by default:

    encoder  four 5×5 stride-2 convs, 64 → 128 → 256 → 512 features, BatchNorm + LeakyReLU(0.2)
    decoder  four 5×5 stride-2 transposed convs, 256 → 128 → 64 → 32 features, BatchNorm + ReLU
    output   5×5 conv to 3 channels, tanh (no BatchNorm: "except for the last Conv")

The super-resolution generator and both discriminators are built from the same blocks
(`conv_block`, `EncoderDecoderGenerator`), as the paper defines them "in the same way".
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import torch
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


class EncoderDecoderGenerator(nn.Module):
    """Strided-conv encoder, transposed-conv decoder, final 5×5 conv + tanh.

    Every conv except the final one is followed by BatchNorm; LeakyReLU(0.2) in the encoder,
    ReLU in the decoder. Maps (B, 3, H, W) float32 in [-1, 1] to
    (B, 3, H·2^(d-e), W·2^(d-e)) float32 in [-1, 1], with e encoder and d decoder layers.
    """

    def __init__(self, *, encoder_channels: Sequence[int], decoder_channels: Sequence[int], width: float,
                 input_size: tuple[int, int], name: str) -> None:
        super().__init__()
        if not width > 0:
            raise ValueError(f"{name}: width must be > 0, got {width!r}")
        self.name = name
        self.input_size = check_size(input_size, divisor=2 ** len(encoder_channels), name=name)
        factor = 2 ** (len(decoder_channels) - len(encoder_channels))
        self.output_size = (int(self.input_size[0] * factor), int(self.input_size[1] * factor))

        blocks: list[nn.Module] = []
        prev = 3
        for c in encoder_channels:
            blocks.append(conv_block(prev, scaled(c, width), activation=nn.LeakyReLU(LEAKY_SLOPE)))
            prev = scaled(c, width)
        self.encoder = nn.Sequential(*blocks)
        blocks = []
        for c in decoder_channels:
            blocks.append(conv_block(prev, scaled(c, width), transposed=True, activation=nn.ReLU()))
            prev = scaled(c, width)
        self.decoder = nn.Sequential(*blocks)
        self.head = nn.Sequential(nn.Conv2d(prev, 3, KERNEL, padding=PADDING), nn.Tanh())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_images(x, self.input_size, name=self.name)
        return self.head(self.decoder(self.encoder(x)))


@dataclasses.dataclass(frozen=True)
class ReconstructionConfig:
    """G^R settings. `width` scales every layer's channel count (1.0 = the paper)."""

    width: float = 1.0
    input_size: tuple[int, int] = (160, 64)  # (H, W); multiples of 16 (four stride-2 convs)

    def __post_init__(self) -> None:
        object.__setattr__(self, "input_size", tuple(self.input_size))
        if not self.width > 0:
            raise ValueError(f"ReconstructionConfig.width must be > 0, got {self.width!r}")
        check_size(self.input_size, divisor=16, name="ReconstructionConfig")


class ReconstructionGenerator(EncoderDecoderGenerator):
    """G^R: (B, 3, H, W) float32 in [-1, 1] occluded crop → (B, 3, H, W) restored crop in [-1, 1]."""

    ENCODER = (64, 128, 256, 512)
    DECODER = (256, 128, 64, 32)

    def __init__(self, config: ReconstructionConfig | None = None) -> None:
        config = config or ReconstructionConfig()
        super().__init__(encoder_channels=self.ENCODER, decoder_channels=self.DECODER, width=config.width,
                         input_size=config.input_size, name="ReconstructionGenerator")
        self.config = config

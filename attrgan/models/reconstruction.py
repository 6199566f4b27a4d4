"""Reconstruction generator G^R (paper §3.2) and the conv building blocks the GANs share.

G^R maps an occluded crop to a restored one at the same size, (160, 64) by default:

    encoder  four 5×5 stride-2 convs, 64 → 128 → 256 → 512 features, BatchNorm + LeakyReLU(0.2)
    decoder  four 5×5 stride-2 transposed convs, 256 → 128 → 64 → 32 features, BatchNorm + ReLU
    output   5×5 conv to 3 channels, tanh (no BatchNorm: "except for the last Conv")

`residual=True` (not in the paper) keeps those layers but adds the input to their output,
G^R(x) = clamp(x + 2·net(x), -1, 1): at small widths everything, visible parts included, would
otherwise pass through the 16×-downsampled bottleneck and come out blurred. `skips=True` (not in
the paper either) adds U-Net skip connections: each decoder level also sees the encoder feature
map of its resolution (and the input), so the output can place edges at pixel precision.
`masked=True` (not in the paper) makes G^R a compositor: the head also predicts a per-pixel weight
α in (0, 1), and G^R(x) = x + α·(paint − x), so the visible body stays as it is where α ≈ 0 and
the occluder is painted over where α ≈ 1.

The super-resolution generator is the same `EncoderDecoderGenerator`, and both discriminators use
the same blocks (`attrgan.models.ops`), as the paper defines them "in the same way".
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from attrgan.models.ops import (KERNEL, LEAKY_SLOPE, PADDING, Layers, check_flag, check_images, check_size, conv_block,
                                scaled)

# Residual generators: the tanh head's output times the value range 2, so the correction can move
# any pixel anywhere in [-1, 1]; the final conv starts at this scale of its default init (near zero).
RESIDUAL_SCALE = 2.0
RESIDUAL_INIT_GAIN = 1e-2
# Masked generators start with α = sigmoid(-3) ≈ 0.05 everywhere: almost the identity, like a residual one.
MASK_INIT_BIAS = -3.0


class EncoderDecoderGenerator(nn.Module):
    """Strided-conv encoder, transposed-conv decoder, final 5×5 conv + tanh.

    Every conv except the final one is followed by BatchNorm; LeakyReLU(0.2) in the encoder,
    ReLU in the decoder. Maps (B, 3, H, W) float32 in [-1, 1] to
    (B, 3, H·2^(d-e), W·2^(d-e)) float32 in [-1, 1], with e encoder and d decoder layers.

    residual: the output is clamp(base(x) + RESIDUAL_SCALE·net(x), -1, 1), where base(x) is x
    itself or, when the output is larger, its bilinear upsampling, and net is the layers above.
    The final conv starts near zero, so an untrained generator is (almost exactly) that baseline
    and training can only add what the bottleneck carries. The sum is clamped rather than put
    through another tanh: tanh would compress the baseline's contrast (tanh(1) = 0.76), so the
    starting point would no longer be the identity / bilinear upsampling.

    skips: U-Net skip connections. The input and every encoder output are kept; a decoder layer
    whose output has the resolution of one of them gets it concatenated on the channel axis
    before the next layer (the head, after the last decoder layer). Decoder layers beyond the
    input's resolution (super-resolution) have nothing to concatenate. The layers and their
    widths stay the paper's; only the input channel counts of the layers after a skip grow.

    masked (same-size generators only, instead of residual): the head has a fourth channel, the
    compositing weight α = sigmoid(·); the output is x + α·(tanh(paint) − x).
    """

    def __init__(self, *, encoder_channels: Sequence[int], decoder_channels: Sequence[int], width: float,
                 input_size: tuple[int, int], name: str, residual: bool = False, skips: bool = False,
                 masked: bool = False) -> None:
        super().__init__()
        if not width > 0:
            raise ValueError(f"{name}: width must be > 0, got {width!r}")
        self.name = name
        self.input_size = check_size(input_size, divisor=2 ** len(encoder_channels), name=name)
        factor = 2 ** (len(decoder_channels) - len(encoder_channels))
        self.output_size = (int(self.input_size[0] * factor), int(self.input_size[1] * factor))

        # Channels of the feature maps a skip can reuse, by downsampling level: 0 = the input.
        level_channels = [3]
        blocks: list[nn.Module] = []
        prev = 3
        for c in encoder_channels:
            blocks.append(conv_block(prev, scaled(c, width), activation=nn.LeakyReLU(LEAKY_SLOPE)))
            prev = scaled(c, width)
            level_channels.append(prev)
        self.encoder = nn.Sequential(*blocks)
        # Decoder layer i outputs level e-1-i (negative: above the input's resolution); with skips
        # the encoder map of that level joins it. The bottleneck itself is not repeated.
        self.skip_levels: tuple[int | None, ...] = tuple(
            (len(encoder_channels) - 1 - i) if skips and len(encoder_channels) - 1 - i >= 0 else None
            for i in range(len(decoder_channels)))
        blocks = []
        for c, level in zip(decoder_channels, self.skip_levels):
            blocks.append(conv_block(prev, scaled(c, width), transposed=True, activation=nn.ReLU()))
            prev = scaled(c, width) + (level_channels[level] if level is not None else 0)
        self.decoder = nn.Sequential(*blocks)
        if masked and (residual or self.output_size != self.input_size):
            raise ValueError(f"{name}: masked composites an output of the input's size and replaces residual")
        self.masked = masked
        self.head = nn.Sequential(nn.Conv2d(prev, 4 if masked else 3, KERNEL, padding=PADDING),
                                  nn.Identity() if masked else nn.Tanh())
        if masked:
            with torch.no_grad():
                self.head[0].weight[3].mul_(RESIDUAL_INIT_GAIN)
                self.head[0].bias[3].fill_(MASK_INIT_BIAS)
        self.residual = residual
        self.skips = skips
        if residual:
            with torch.no_grad():
                self.head[0].weight.mul_(RESIDUAL_INIT_GAIN)
                self.head[0].bias.zero_()

    def base(self, x: torch.Tensor) -> torch.Tensor:
        """What a residual generator adds its correction to: x, or x bilinearly upsampled to the output size."""
        if tuple(x.shape[-2:]) == self.output_size:
            return x
        return F.interpolate(x, size=self.output_size, mode="bilinear", align_corners=False)

    def forward(self, x: torch.Tensor, *, with_layers: bool = False) -> torch.Tensor | tuple[torch.Tensor, Layers]:
        """The restored batch; with `with_layers` (masked generators) also its Layers, so a caller
        can composite the painting over a larger original (`attrgan.pipeline.full_size`)."""
        check_images(x, self.input_size, name=self.name)
        if with_layers and not self.masked:
            raise ValueError(f"{self.name}: only a masked generator has layers to return")
        if self.skips:
            out = self._unet(x)
        else:
            out = self.head(self.decoder(self.encoder(x)))
        if self.masked:
            layers = Layers(paint=torch.tanh(out[:, :3]), weight=torch.sigmoid(out[:, 3:]))
            restored = x + layers.weight * (layers.paint - x)
            return (restored, layers) if with_layers else restored
        if self.residual:
            out = (self.base(x) + RESIDUAL_SCALE * out).clamp(-1.0, 1.0)
        return out

    def _unet(self, x: torch.Tensor) -> torch.Tensor:
        levels = [x]
        h = x
        for block in self.encoder:
            h = block(h)
            levels.append(h)
        for block, level in zip(self.decoder, self.skip_levels):
            h = block(h)
            if level is not None:
                h = torch.cat([h, levels[level]], dim=1)
        return self.head(h)


@dataclasses.dataclass(frozen=True)
class ReconstructionConfig:
    """G^R settings. `width` scales every layer's channel count (1.0 = the paper); `residual`
    adds the input to the output (G^R(x) = x + net(x)); `skips` adds U-Net skip connections
    (False = the paper for both); `masked` composites a painted image with a predicted weight
    instead (G^R(x) = x + α·(paint − x); not in the paper, excludes `residual`)."""

    width: float = 1.0
    input_size: tuple[int, int] = (160, 64)  # (H, W); multiples of 16 (four stride-2 convs)
    residual: bool = False
    skips: bool = False
    masked: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "input_size", tuple(self.input_size))
        if not self.width > 0:
            raise ValueError(f"ReconstructionConfig.width must be > 0, got {self.width!r}")
        check_size(self.input_size, divisor=16, name="ReconstructionConfig")
        check_flag(self.residual, name="ReconstructionConfig.residual")
        check_flag(self.skips, name="ReconstructionConfig.skips")
        check_flag(self.masked, name="ReconstructionConfig.masked")
        if self.masked and self.residual:
            raise ValueError("ReconstructionConfig: masked replaces residual; set one of them")


class ReconstructionGenerator(EncoderDecoderGenerator):
    """G^R: (B, 3, H, W) float32 in [-1, 1] occluded crop → (B, 3, H, W) restored crop in [-1, 1]."""

    ENCODER = (64, 128, 256, 512)
    DECODER = (256, 128, 64, 32)

    def __init__(self, config: ReconstructionConfig | None = None) -> None:
        config = config or ReconstructionConfig()
        super().__init__(encoder_channels=self.ENCODER, decoder_channels=self.DECODER, width=config.width,
                         input_size=config.input_size, name="ReconstructionGenerator", residual=config.residual,
                         skips=config.skips, masked=config.masked)
        self.config = config

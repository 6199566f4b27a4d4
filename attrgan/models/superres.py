"""Super-resolution generator G^S (paper §3.3): (80, 32) → (320, 128), i.e. ×4.

Built like G^R (same blocks, activations and BatchNorm rule) with the paper's layer counts:

    encoder  three 5×5 stride-2 convs, 256 → 512 → 1024 features, BatchNorm + LeakyReLU(0.2)
    decoder  five 5×5 stride-2 transposed convs, 512 → 256 → 256 → 128 → 128, BatchNorm + ReLU
    output   5×5 conv to 3 channels, tanh

Two more upsampling layers than downsampling ones give the ×4 scale, so `scale` is fixed at 4.
`residual=True` (not in the paper) adds the bilinear ×4 upsampling of the input to the output:
G^S(x) = clamp(bilinear(x) + 2·net(x), -1, 1), so the network only has to supply the detail.
`skips=True` (not in the paper) adds U-Net skip connections at the levels the encoder and the
decoder share: 10×4 → 20×8, 40×16 and the 80×32 input (for the default input size).
"""

from __future__ import annotations

import dataclasses

from attrgan.models.ops import check_flag, check_size
from attrgan.models.reconstruction import EncoderDecoderGenerator

SCALE = 4


@dataclasses.dataclass(frozen=True)
class SuperResConfig:
    """G^S settings. `width` scales every layer's channel count (1.0 = the paper); `residual`
    adds the bilinear upsampling of the input to the output; `skips` adds U-Net skip
    connections (False = the paper for both)."""

    width: float = 1.0
    input_size: tuple[int, int] = (80, 32)  # (H, W) of the low-resolution input; multiples of 8
    scale: int = SCALE  # fixed by the architecture; stored so a bundle states it
    residual: bool = False
    skips: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "input_size", tuple(self.input_size))
        if not self.width > 0:
            raise ValueError(f"SuperResConfig.width must be > 0, got {self.width!r}")
        if self.scale != SCALE:
            raise ValueError(f"SuperResConfig.scale: the paper's G^S upsamples by {SCALE}, got {self.scale!r}")
        check_size(self.input_size, divisor=8, name="SuperResConfig")
        check_flag(self.residual, name="SuperResConfig.residual")
        check_flag(self.skips, name="SuperResConfig.skips")

    @property
    def output_size(self) -> tuple[int, int]:
        return (self.input_size[0] * self.scale, self.input_size[1] * self.scale)


class SuperResGenerator(EncoderDecoderGenerator):
    """G^S: (B, 3, h, w) float32 in [-1, 1] → (B, 3, 4h, 4w) float32 in [-1, 1]."""

    ENCODER = (256, 512, 1024)
    DECODER = (512, 256, 256, 128, 128)

    def __init__(self, config: SuperResConfig | None = None) -> None:
        config = config or SuperResConfig()
        super().__init__(encoder_channels=self.ENCODER, decoder_channels=self.DECODER, width=config.width,
                         input_size=config.input_size, name="SuperResGenerator", residual=config.residual,
                         skips=config.skips)
        self.config = config

"""Training loop of the reconstruction and super-resolution GANs (paper §3.2, §3.3), plain PyTorch.

One step follows BasicSR's `SRGANModel.optimize_parameters`: freeze D, step G on the pooled SSE
plus λ·adversarial loss (plus μ·attribute agreement, `AgreementLoss`), unfreeze D, step D on the
real batch and on `fake.detach()`.
Validation reports the generator's PSNR next to the trivial baseline (the occluded input itself
for reconstruction, bilinear upsampling for super-resolution), so a curve shows whether G beats it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from attrgan.losses import attribute_agreement_loss, discriminator_loss, generator_loss, mask_loss, occluder_mask
from attrgan.models import build_network
from attrgan.models.discriminator import ReconstructionDiscriminator, SuperResDiscriminator
from attrgan.models.ops import Layers, full_size, resize_batch
from attrgan.train.train_config import GanConfig, TrainConfig
from attrgan.train.loop import LoopSpec, Report, autocast, run_epochs, unwrap


def build_gan(config: TrainConfig) -> tuple[nn.Module, nn.Module]:
    """(net_g, net_d) for config.model "reconstruction" or "superres" at config.width (generator
    with config.residual and config.skips; G^R with config.masked, which replaces residual)."""
    size = config.network_input_size
    generator = {"width": config.width, "input_size": size, "residual": config.residual, "skips": config.skips}
    if config.model == "reconstruction":
        net_g = build_network("reconstruction", generator | {"masked": config.masked,
                                                             "residual": config.residual and not config.masked})
        return net_g, ReconstructionDiscriminator(width=config.width, input_size=size)
    if config.model == "superres":
        net_g = build_network("superres", generator)
        return net_g, SuperResDiscriminator(width=config.width, input_size=config.target_size)
    raise ValueError(f"build_gan trains 'reconstruction' or 'superres', got {config.model!r}")


def build_gan_optimizers(config: TrainConfig, net_g: nn.Module, net_d: nn.Module,
                         ) -> tuple[torch.optim.Optimizer, torch.optim.Optimizer]:
    """(opt_g, opt_d): Adam with the paper's β1 (SGD if the config asks for it)."""
    def make(params: Iterable[nn.Parameter]) -> torch.optim.Optimizer:
        if config.optimizer == "sgd":
            return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
        return torch.optim.Adam(params, lr=config.lr, betas=config.betas, weight_decay=config.weight_decay)

    return make(net_g.parameters()), make(net_d.parameters())


def _set_requires_grad(net: nn.Module, flag: bool) -> None:
    for p in net.parameters():
        p.requires_grad_(flag)


class AgreementLoss:
    """Not in the paper: a generator also learns to make the attribute classifier read, after its
    restoration, what it reads on the clean crop (`attrgan.losses.attribute_agreement_loss`).

    Why: the pixel and adversarial losses reward a plausible lower body (or sharp image), not one
    the classifier reads the right attributes from; on the demo's synthetic set a G^R trained on
    them alone did not raise the occluded mA (docs/demo.md). `classifier` is the trained, frozen
    attribute network. It reads what the pipeline gives it: for G^R (`as_correction`) the
    corrupted crop restored at full size (`attrgan.pipeline.full_size`), for G^S its output resized
    to the classifier's input; so the training batch comes at the classifier's input size too.
    """

    def __init__(self, classifier: nn.Module, weight: float, *, as_correction: bool = True) -> None:
        self.classifier = classifier.eval()
        for p in self.classifier.parameters():
            p.requires_grad_(False)
        self.weight = weight
        self.as_correction = as_correction
        self.input_size = tuple(classifier.config.input_size)

    def __call__(self, fake: torch.Tensor, lq: torch.Tensor, corrupted: torch.Tensor,
                 clean: torch.Tensor, layers: Layers | None = None) -> torch.Tensor:
        """The unweighted loss of `fake` = G(lq), where lq is `corrupted` shrunk to G's input;
        corrupted and clean: (B, 3, H, W) at the classifier's input size; layers: a masked G^R's."""
        for name, x in (("corrupted", corrupted), ("clean", clean)):
            if tuple(x.shape[-2:]) != self.input_size:
                raise ValueError(f"AgreementLoss needs {name} crops at the classifier's input size "
                                 f"{self.input_size}, got {tuple(x.shape[-2:])}")
        with torch.no_grad():
            target = self.classifier(clean)
        restored = full_size(corrupted, lq, fake, layers) if self.as_correction else resize_batch(fake, self.input_size)
        return attribute_agreement_loss(self.classifier(restored), target)


def gan_step(net_g: nn.Module, net_d: nn.Module, opt_g: torch.optim.Optimizer, opt_d: torch.optim.Optimizer,
             lq: torch.Tensor, gt: torch.Tensor, gan: GanConfig, *, amp: bool = False,
             agreement: AgreementLoss | None = None,
             full: tuple[torch.Tensor, torch.Tensor] | None = None) -> dict[str, float]:
    """One generator update, then `gan.d_steps` discriminator updates (the paper's K) on the same batch.

    lq: generator input (B, 3, h, w), gt: target (B, 3, H, W), float32 in [-1, 1] on the nets'
    device. With `agreement`, `full` holds the (occluded, clean) batch at the classifier's input
    size. Returns l_g_pix, l_g_adv, l_g_total, l_d_real, l_d_fake, l_d_total as floats (and
    l_g_agree with `agreement`, l_g_mask with `gan.mask_weight` on a masked G^R, whose weighted
    values l_g_total includes). The mask loss reads where the occluder is from lq against gt:
    they differ exactly on the occluded pixels (G^R's input and target share one size).
    net_g / net_d may be DDP-wrapped; D is called unwrapped in the G step, where its parameters
    are frozen (DDP would otherwise wait for gradients that never come).
    """
    if agreement is not None and full is None:
        raise ValueError("gan_step with an agreement loss needs `full`: the batch at the classifier's input size")
    net_g.train()
    net_d.train()
    # Optimise G with D frozen.
    _set_requires_grad(net_d, False)
    opt_g.zero_grad(set_to_none=True)
    # A masked G^R's layers let the agreement loss composite at full size, as the pipeline does,
    # and the mask loss supervise its weight.
    masked = getattr(unwrap(net_g), "masked", False)
    with_layers = masked and (gan.mask_weight > 0 or (agreement is not None and agreement.as_correction))
    with autocast(lq.device, amp):
        fake, layers = net_g(lq, with_layers=True) if with_layers else (net_g(lq), None)
        d_fake = unwrap(net_d)(fake)
        l_agree = agreement(fake, lq, *full, layers=layers) if agreement is not None else None
    g_losses = generator_loss(fake.float(), gt, d_fake.float(), lam=gan.lam, pool=gan.pool, adversarial=gan.adversarial)
    if l_agree is not None:
        g_losses["l_g_agree"] = l_agree
        g_losses["l_g_total"] = g_losses["l_g_total"] + agreement.weight * l_agree
    if gan.mask_weight > 0 and layers is not None:
        g_losses["l_g_mask"] = mask_loss(layers.weight, occluder_mask(lq, gt))
        g_losses["l_g_total"] = g_losses["l_g_total"] + gan.mask_weight * g_losses["l_g_mask"]
    g_losses["l_g_total"].backward()
    opt_g.step()

    # Optimise D on the real batch and the detached fake.
    _set_requires_grad(net_d, True)
    fake = fake.detach()
    for _ in range(gan.d_steps):
        opt_d.zero_grad(set_to_none=True)
        with autocast(lq.device, amp):
            d_real, d_fake = net_d(gt), net_d(fake)
        d_losses = discriminator_loss(d_real.float(), d_fake.float())
        d_losses["l_d_total"].backward()
        opt_d.step()
    out = {k: v.item() for k, v in g_losses.items()}
    out |= {k: v.item() for k, v in d_losses.items()}
    return out


def psnr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR in dB of (B, 3, H, W) batches in [-1, 1] (peak = the range 2): (B,)."""
    if a.shape != b.shape:
        raise ValueError(f"psnr needs equal shapes, got {tuple(a.shape)} and {tuple(b.shape)}")
    mse = (a.float() - b.float()).pow(2).mean(dim=(1, 2, 3)).clamp_min(1e-10)
    return 10 * torch.log10(4.0 / mse)


def baseline(lq: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """What a GAN must beat: the input itself at `size` (identity), or its bilinear upsampling."""
    if tuple(lq.shape[-2:]) == tuple(size):
        return lq
    return F.interpolate(lq, size=size, mode="bilinear", align_corners=False)


@torch.no_grad()
def validate_gan(net_g: nn.Module, lq: torch.Tensor, gt: torch.Tensor, *, batch_size: int = 64,
                 device: torch.device | str = "cpu", amp: bool = False) -> dict[str, float]:
    """val_psnr of G(lq) against gt and val_psnr_baseline of `baseline(lq)`, means over images (dB)."""
    net = unwrap(net_g)
    was_training = net.training
    net.eval()
    ours, base = [], []
    for start in range(0, len(lq), batch_size):
        x = lq[start:start + batch_size].to(device)
        y = gt[start:start + batch_size].to(device)
        with autocast(x.device, amp):
            fake = net(x).float()
        ours.append(psnr(fake, y).cpu())
        base.append(psnr(baseline(x, tuple(y.shape[-2:])), y).cpu())
    net.train(was_training)
    return {"val_psnr": torch.cat(ours).mean().item() if ours else math.nan,
            "val_psnr_baseline": torch.cat(base).mean().item() if base else math.nan}


def train_gan(net_g: nn.Module, net_d: nn.Module, opt_g: torch.optim.Optimizer, opt_d: torch.optim.Optimizer,
              batches: Callable[[int], Iterable[tuple[torch.Tensor, torch.Tensor]]], gan: GanConfig, loop: LoopSpec, *,
              report: Report, val: tuple[torch.Tensor, torch.Tensor] | None = None,
              agreement: AgreementLoss | None = None) -> dict[str, Any]:
    """Train a GAN for the epochs `loop` gives.

    batches(epoch) yields (lq, gt) float32 in [-1, 1] on the CPU (occluded/clean or low/high
    resolution), or (lq, gt, occluded, clean) with the last two at the classifier's input size for
    `agreement`; `val` is a fixed (lq, gt) pair of tensors scored every epoch. Checkpoint state:
    epoch (next to run), step, net_g, net_d, opt_g, opt_d. Returns the last epoch's metrics.
    """
    device, amp = torch.device(loop.device), loop.amp

    def step(batch: tuple[torch.Tensor, ...]) -> dict[str, float]:
        lq, gt, *full = (t.to(device, non_blocking=True) for t in batch)
        return gan_step(net_g, net_d, opt_g, opt_d, lq, gt, gan, amp=amp, agreement=agreement, full=tuple(full) or None)

    def validate(epoch: int) -> dict[str, float]:
        return validate_gan(net_g, val[0], val[1], device=device, amp=amp)

    def state(next_epoch: int, step_count: int) -> dict[str, Any]:
        return {"epoch": next_epoch, "step": step_count, "net_g": unwrap(net_g).state_dict(),
                "net_d": unwrap(net_d).state_dict(), "opt_g": opt_g.state_dict(), "opt_d": opt_d.state_dict()}

    return run_epochs(loop, step=step, batches=batches, batch_images=lambda b: len(b[0]), report=report,
                      state=state, validate=validate if val is not None else None)

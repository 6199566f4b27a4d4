"""Losses of the paper: weighted BCE for the classifier (eq. 2), the GAN losses (eqs. 4–6), plus
the attribute-agreement loss that ties the reconstruction GAN to the classifier (not in the paper).

Everything works on logits; sigmoids are folded into softplus terms, which stay finite where
log(sigmoid(z)) would underflow:

    log σ(z) = −softplus(−z),    log(1 − σ(z)) = −softplus(z)

Reductions: sums over attributes / pixels as the paper writes them, means over the batch
(eq. 3 averages Loss_R over the N training images), so values do not grow with batch size.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

UNKNOWN = -1


def positive_ratios(labels: np.ndarray | torch.Tensor, *, eps: float = 1e-3) -> np.ndarray:
    """r_i of eq. (2): the fraction of positives of each attribute among its KNOWN labels.

    labels: (N, A) int with 1 positive, 0 negative, -1 unknown (excluded from the count).
    Returns (A,) float32 clamped to [eps, 1 − eps] so that the weights 1/(2r) and 1/(2(1−r))
    stay finite; an attribute with no known label gets 0.5 (equal weights).
    """
    y = labels.detach().cpu().numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
    if y.ndim != 2:
        raise ValueError(f"positive_ratios expects labels of shape (N, A), got {y.shape}")
    if not 0 < eps < 0.5:
        raise ValueError(f"positive_ratios: eps must be in (0, 0.5), got {eps!r}")
    known = (y != UNKNOWN).sum(axis=0)
    positives = (y == 1).sum(axis=0)
    ratios = np.divide(positives, known, out=np.full(y.shape[1], 0.5), where=known > 0)
    return np.clip(ratios, eps, 1 - eps).astype(np.float32)


def weighted_bce(logits: torch.Tensor, labels: torch.Tensor, ratios: np.ndarray | torch.Tensor) -> torch.Tensor:
    """Eq. (2): −Σ_i [ y_i log ŷ_i / (2 r_i) + (1 − y_i) log(1 − ŷ_i) / (2 (1 − r_i)) ], ŷ = σ(logits).

    logits: (B, A) float; labels: (B, A) with 1 / 0 / -1 (unknown terms are dropped);
    ratios: (A,) positive ratios from `positive_ratios`.
    Reduction: summed over attributes (as eq. 2), averaged over the B samples. Returns a scalar.
    """
    if logits.ndim != 2 or tuple(labels.shape) != tuple(logits.shape):
        raise ValueError(f"weighted_bce expects logits and labels of the same (B, A) shape, "
                         f"got {tuple(logits.shape)} and {tuple(labels.shape)}")
    r = torch.as_tensor(ratios, dtype=logits.dtype, device=logits.device)
    if tuple(r.shape) != (logits.shape[1],):
        raise ValueError(f"weighted_bce expects ratios of shape ({logits.shape[1]},), got {tuple(r.shape)}")
    y = labels.to(device=logits.device)
    pos = (y == 1).to(logits.dtype)
    neg = (y == 0).to(logits.dtype)  # unknown (-1) is neither
    loss = pos * F.softplus(-logits) / (2 * r) + neg * F.softplus(logits) / (2 * (1 - r))
    return loss.sum(dim=1).mean()


def generator_loss(fake: torch.Tensor, target: torch.Tensor, d_fake_logits: torch.Tensor, *, lam: float,
                   pool: int = 4, adversarial: Literal["paper", "non_saturating"] = "paper",
                   ) -> dict[str, torch.Tensor]:
    """Loss_R / Loss_S of eq. (5): pooled SSE + λ · adversarial term.

    fake, target: (B, 3, H, W) in [-1, 1]; d_fake_logits: (B,) discriminator logits on `fake`.
    l_g_pix: SSE between `avg_pool2d(·, pool)` of fake and target (the paper compares downsized
        images to avoid blur), summed over pixels and channels, averaged over the batch.
    l_g_adv: "paper" = eq. (6), mean of log(1 − D(G(x))) (minimising it fools D);
        "non_saturating" = mean of −log D(G(x)), the usual variant with stronger early gradients.
    l_g_total = l_g_pix + lam · l_g_adv.
    """
    if fake.shape != target.shape or fake.ndim != 4:
        raise ValueError(f"generator_loss expects fake and target of the same (B, C, H, W) shape, "
                         f"got {tuple(fake.shape)} and {tuple(target.shape)}")
    if tuple(d_fake_logits.shape) != (fake.shape[0],):
        raise ValueError(f"generator_loss expects d_fake_logits of shape ({fake.shape[0]},), "
                         f"got {tuple(d_fake_logits.shape)}")
    if not isinstance(pool, int) or pool < 1:
        raise ValueError(f"generator_loss: pool must be a positive integer, got {pool!r}")
    if pool > 1:
        fake, target = F.avg_pool2d(fake, pool), F.avg_pool2d(target, pool)
    l_pix = (fake - target).pow(2).sum(dim=(1, 2, 3)).mean()
    if adversarial == "paper":
        l_adv = -F.softplus(d_fake_logits).mean()  # log(1 − σ(z))
    elif adversarial == "non_saturating":
        l_adv = F.softplus(-d_fake_logits).mean()  # −log σ(z)
    else:
        raise ValueError(f"generator_loss: adversarial must be 'paper' or 'non_saturating', got {adversarial!r}")
    return {"l_g_pix": l_pix, "l_g_adv": l_adv, "l_g_total": l_pix + lam * l_adv}


def attribute_agreement_loss(logits: torch.Tensor, target_logits: torch.Tensor) -> torch.Tensor:
    """Not in the paper: how far a classifier's attribute probabilities on a restored crop are from
    its probabilities on the clean crop, as BCE with the clean probabilities as soft targets.

    logits, target_logits: (B, A) classifier logits on G(x) and on the clean crop (the target is
    detached). Summed over attributes like eq. (2), averaged over the batch. Its minimum is the
    entropy of the targets, reached when the two probability vectors agree; the gradient is
    σ(logits) − σ(target_logits).
    """
    if logits.ndim != 2 or logits.shape != target_logits.shape:
        raise ValueError(f"attribute_agreement_loss expects two (B, A) logit tensors of one shape, "
                         f"got {tuple(logits.shape)} and {tuple(target_logits.shape)}")
    target = torch.sigmoid(target_logits.detach().float())
    return F.binary_cross_entropy_with_logits(logits.float(), target, reduction="none").sum(dim=1).mean()


def occluder_mask(occluded: torch.Tensor, clean: torch.Tensor) -> torch.Tensor:
    """Where a training occlusion changed the crop: (B, 1, H, W) float, 1 on every pixel that
    differs in any channel between `occluded` and `clean` ((B, 3, H, W), same size), else 0. A crop
    left unoccluded gets all zeros."""
    if occluded.shape != clean.shape or occluded.ndim != 4:
        raise ValueError(f"occluder_mask expects two (B, C, H, W) batches of one shape, "
                         f"got {tuple(occluded.shape)} and {tuple(clean.shape)}")
    return (occluded != clean).any(dim=1, keepdim=True).to(torch.float32)


def mask_loss(weight: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Not in the paper: BCE between a masked G^R's compositing weight α ((B, 1, H, W) in (0, 1))
    and where the occluder is (`occluder_mask`). Summed over pixels like the pixel loss, averaged
    over the batch."""
    if weight.shape != target.shape:
        raise ValueError(f"mask_loss expects weight and target of one shape, got {tuple(weight.shape)} "
                         f"and {tuple(target.shape)}")
    eps = 1e-6  # α is a sigmoid already; clamping keeps log finite where it saturates in float32
    loss = F.binary_cross_entropy(weight.float().clamp(eps, 1 - eps), target.float(), reduction="none")
    return loss.sum(dim=(1, 2, 3)).mean()


def discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> dict[str, torch.Tensor]:
    """Eq. (4) for D as a minimisation: −E[log D(x)] − E[log(1 − D(G(z)))], i.e. BCE with logits.

    real_logits, fake_logits: (B,) discriminator logits on real and generated images (pass the
    generated batch detached when stepping D). l_d_total = l_d_real + l_d_fake.
    """
    if real_logits.ndim != 1 or fake_logits.ndim != 1:
        raise ValueError(f"discriminator_loss expects (B,) logits, got {tuple(real_logits.shape)} "
                         f"and {tuple(fake_logits.shape)}")
    l_real = F.binary_cross_entropy_with_logits(real_logits, torch.ones_like(real_logits))
    l_fake = F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits))
    return {"l_d_real": l_real, "l_d_fake": l_fake, "l_d_total": l_real + l_fake}

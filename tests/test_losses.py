"""Losses against hand-computed values: eq. (2) weighted BCE, eqs. (4)–(6) GAN losses."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from attrgan.losses import (attribute_agreement_loss, discriminator_loss, generator_loss, mask_loss, positive_ratios,
                            weighted_bce)

LN2 = math.log(2)


def test_positive_ratios_exclude_unknown_and_clamp():
    labels = np.array([[1, 0, -1, 1],
                       [1, 1, -1, 1],
                       [0, -1, -1, 1]], dtype=np.int8)
    r = positive_ratios(labels, eps=0.01)
    # 2 of 3 known; 1 of 2 known; nothing known → 0.5; all positive → clamped to 1 − eps
    np.testing.assert_allclose(r, [2 / 3, 0.5, 0.5, 0.99], rtol=1e-6)
    assert r.dtype == np.float32
    np.testing.assert_allclose(positive_ratios(torch.from_numpy(labels), eps=0.01), r)
    with pytest.raises(ValueError, match=r"\(N, A\)"):
        positive_ratios(np.zeros(3, dtype=np.int8))


def test_weighted_bce_matches_eq2_by_hand():
    logits = torch.tensor([[0.0, math.log(3)],
                           [math.log(3), 0.0]])
    labels = torch.tensor([[1, 0],
                           [0, -1]], dtype=torch.int8)
    ratios = np.array([0.25, 0.5], dtype=np.float32)
    # sample 0: attr 0 positive, ŷ = 0.5 → −log(0.5) / (2·0.25) = 2 ln2;
    #           attr 1 negative, ŷ = 3/4 → −log(1/4) / (2·0.5) = ln4
    # sample 1: attr 0 negative, ŷ = 3/4 → −log(1/4) / (2·0.75) = ln4 / 1.5; attr 1 unknown → 0
    expected = ((2 * LN2 + math.log(4)) + math.log(4) / 1.5) / 2  # sum over attributes, mean over samples
    loss = weighted_bce(logits, labels, ratios)
    assert loss.shape == ()
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_weighted_bce_equals_the_sigmoid_formula_and_is_stable():
    torch.manual_seed(0)
    logits = torch.randn(6, 4)
    labels = torch.randint(-1, 2, (6, 4))
    r = torch.tensor([0.1, 0.3, 0.5, 0.9])
    p = torch.sigmoid(logits)
    terms = -(labels.eq(1) * torch.log(p) / (2 * r) + labels.eq(0) * torch.log(1 - p) / (2 * (1 - r)))
    torch.testing.assert_close(weighted_bce(logits, labels, r), terms.sum(1).mean())
    # Saturated logits: the naive formula gives inf, the loss stays finite and exact.
    big = weighted_bce(torch.tensor([[-200.0]]), torch.tensor([[1]]), torch.tensor([0.5]))
    assert big.item() == pytest.approx(200.0)
    with pytest.raises(ValueError, match="same"):
        weighted_bce(torch.zeros(2, 3), torch.zeros(2, 4), r[:3])
    with pytest.raises(ValueError, match=r"ratios of shape \(3,\)"):
        weighted_bce(torch.zeros(2, 3), torch.zeros(2, 3), r)


def test_weighted_bce_all_unknown_is_zero_and_has_gradient():
    logits = torch.zeros(2, 3, requires_grad=True)
    loss = weighted_bce(logits, torch.full((2, 3), -1), torch.full((3,), 0.5))
    loss.backward()
    assert loss.item() == 0.0 and torch.equal(logits.grad, torch.zeros(2, 3))


def test_generator_loss_pooled_sse_plus_adversarial():
    target = torch.zeros(2, 1, 4, 4)
    fake = torch.zeros(2, 1, 4, 4)
    fake[0, 0, :2, :2] = 1.0  # one 2×2 pooling cell of sample 0 averages to 1
    fake[1, 0] = torch.tensor([[1.0, -1.0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]])  # averages to 0
    d_logits = torch.tensor([0.0, math.log(3)])  # D = 1/2 and 3/4
    out = generator_loss(fake, target, d_logits, lam=0.1, pool=2)
    # SSE per sample after 2×2 average pooling: 1 and 0 → mean 0.5
    assert out["l_g_pix"].item() == pytest.approx(0.5)
    # eq. (6): mean of log(1 − D) = (log 1/2 + log 1/4) / 2
    assert out["l_g_adv"].item() == pytest.approx((math.log(0.5) + math.log(0.25)) / 2)
    assert out["l_g_total"].item() == pytest.approx(0.5 + 0.1 * out["l_g_adv"].item())
    # without pooling the SSE counts every pixel: 4 and 2 → mean 3
    assert generator_loss(fake, target, d_logits, lam=0.1, pool=1)["l_g_pix"].item() == pytest.approx(3.0)
    ns = generator_loss(fake, target, d_logits, lam=1.0, pool=2, adversarial="non_saturating")
    assert ns["l_g_adv"].item() == pytest.approx(-(math.log(0.5) + math.log(0.75)) / 2)
    assert set(out) == {"l_g_pix", "l_g_adv", "l_g_total"}


def test_generator_loss_checks_arguments():
    x = torch.zeros(2, 3, 8, 8)
    with pytest.raises(ValueError, match="same"):
        generator_loss(x, torch.zeros(2, 3, 8, 4), torch.zeros(2), lam=1.0)
    with pytest.raises(ValueError, match=r"d_fake_logits of shape \(2,\)"):
        generator_loss(x, x, torch.zeros(2, 1), lam=1.0)
    with pytest.raises(ValueError, match="adversarial must be"):
        generator_loss(x, x, torch.zeros(2), lam=1.0, adversarial="wgan")
    with pytest.raises(ValueError, match="pool must be"):
        generator_loss(x, x, torch.zeros(2), lam=1.0, pool=0)


def test_discriminator_loss_is_eq4_minimised():
    real = torch.tensor([0.0, math.log(3)])  # D = 1/2, 3/4
    fake = torch.tensor([math.log(3), -1000.0])  # D = 3/4, ~0
    out = discriminator_loss(real, fake)
    assert out["l_d_real"].item() == pytest.approx(-(math.log(0.5) + math.log(0.75)) / 2)
    assert out["l_d_fake"].item() == pytest.approx(-math.log(0.25) / 2)
    assert out["l_d_total"].item() == pytest.approx(out["l_d_real"].item() + out["l_d_fake"].item())
    with pytest.raises(ValueError, match=r"\(B,\) logits"):
        discriminator_loss(real[:, None], fake)


def test_attribute_agreement_loss_is_soft_bce_minimal_where_probabilities_agree():
    target = torch.tensor([[0.0, 2.0, -1.0]])
    q = torch.sigmoid(target)
    entropy = -(q * q.log() + (1 - q) * (1 - q).log()).sum()
    assert torch.isclose(attribute_agreement_loss(target.clone(), target), entropy)
    logits = torch.tensor([[1.0, -1.0, 0.5]], requires_grad=True)
    p = torch.sigmoid(logits.detach())
    by_hand = -(q * p.log() + (1 - q) * (1 - p).log()).sum()
    loss = attribute_agreement_loss(logits, target)
    assert torch.isclose(loss, by_hand) and loss > entropy
    loss.backward()
    assert torch.allclose(logits.grad, p - q)  # pulls each probability towards the clean one
    with pytest.raises(ValueError, match="same|one shape"):
        attribute_agreement_loss(torch.zeros(2, 3), torch.zeros(2, 4))


def test_mask_loss_is_bce_of_the_weight_summed_over_pixels():
    weight = torch.tensor([[[[0.9, 0.2]]], [[[0.5, 0.5]]]])
    target = torch.tensor([[[[1.0, 0.0]]], [[[1.0, 1.0]]]])
    by_hand = (-(math.log(0.9) + math.log(0.8)) - 2 * math.log(0.5)) / 2
    assert mask_loss(weight, target).item() == pytest.approx(by_hand, rel=1e-5)
    assert torch.isfinite(mask_loss(torch.tensor([[[[0.0, 1.0]]]]), torch.tensor([[[[1.0, 0.0]]]])))
    with pytest.raises(ValueError, match="one shape"):
        mask_loss(weight, target[:1])

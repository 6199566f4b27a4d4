"""Training loops, batches, curves and config without Ray: tiny networks on fixed tensors."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import torch

from attrgan.attributes import OCCLUSION_DOWN
from attrgan.config import ConfigError
from attrgan.corrupt import lowres_input, lowres_view
from attrgan.losses import attribute_agreement_loss, occluder_mask
from attrgan.models.ops import full_size, resize_batch
from attrgan.train import data as tdata
from attrgan.train.classifier import build_classifier, build_optimizer, train_classifier
from attrgan.train.train_config import GanConfig, TrainConfig, load_train_config, preset
from attrgan.train.curves import Curves, write_curves
from attrgan.train.gan import (AgreementLoss, build_gan, build_gan_optimizers, gan_step, psnr, train_gan,
                               validate_gan)
from attrgan.train.loop import LoopSpec, run_epochs

ATTRS = ("female", "hat", OCCLUSION_DOWN)


@pytest.fixture(autouse=True)
def _few_threads():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    yield
    torch.set_num_threads(threads)


class Recorder:
    """A report callback that keeps what it was given."""

    def __init__(self):
        self.metrics, self.states = [], []

    def __call__(self, metrics, state):
        self.metrics.append(metrics)
        self.states.append(state)


def test_classifier_loop_learns_a_fixed_batch_and_reports_each_epoch():
    cfg = TrainConfig(model="classifier", backbone="small", width=0.125, input_size=(40, 16), lr=3e-3,
                      betas=(0.9, 0.999))
    net = build_classifier(cfg, ATTRS)
    opt = build_optimizer(cfg, net.parameters())
    x = torch.rand(8, 3, 40, 16) * 2 - 1
    y = torch.tensor([[1, 0, 0], [0, 1, 1], [1, 1, 0], [0, 0, 1]] * 2, dtype=torch.int8)
    report = Recorder()
    val_images = np.random.default_rng(0).integers(0, 256, (6, 40, 16, 3), dtype=np.uint8)
    val_labels = np.array([[1, 0, 0], [0, 1, 1], [1, -1, 0]] * 2, dtype=np.int8)
    train_classifier(net, opt, lambda epoch: [(x, y)] * 5, LoopSpec(epochs=3, log_every=2),
                     ratios=np.full(3, 0.5, np.float32), report=report, val_images=val_images, val_labels=val_labels)

    assert [m["epoch"] for m in report.metrics] == [0, 1, 2]
    assert [m["step"] for m in report.metrics] == [5, 10, 15]
    losses = [p["loss"] for m in report.metrics for p in m["step_log"]]
    assert losses[-1] < 0.5 * losses[0]
    assert report.metrics[-1]["train_loss"] < report.metrics[0]["train_loss"]
    last = report.states[-1]
    assert last["epoch"] == 3 and last["step"] == 15
    assert len(last["thresholds"]) == 3 and all(0 < t < 1 for t in last["thresholds"])
    assert 0 <= report.metrics[-1]["val_ma"] <= 1 and "val_ma_cal" in report.metrics[-1]
    assert set(last["net"]) == set(net.state_dict())


@pytest.mark.parametrize("residual, skips", [(False, False), (True, False), (True, True)])
@pytest.mark.parametrize("model, size", [("reconstruction", (32, 16)), ("superres", (16, 8))])
def test_gan_loop_lowers_pixel_loss_on_a_fixed_batch(model, size, residual, skips):
    cfg = TrainConfig(model=model, width=0.0625, input_size=size, lr=2e-3, lam=0.01, residual=residual,
                      skips=skips)
    net_g, net_d = build_gan(cfg)
    opt_g, opt_d = build_gan_optimizers(cfg, net_g, net_d)
    gt = torch.rand(4, 3, *cfg.target_size) * 2 - 1
    lq = torch.nn.functional.avg_pool2d(gt, 4) if model == "superres" else gt * torch.tensor([1.0, 0.0]).repeat_interleave(size[0] // 2).view(1, 1, -1, 1)
    report = Recorder()
    train_gan(net_g, net_d, opt_g, opt_d, lambda epoch: [(lq, gt)] * 10, cfg.gan, LoopSpec(epochs=2, log_every=1),
              report=report, val=(lq, gt))

    log = [p for m in report.metrics for p in m["step_log"]]
    assert len(log) == 20 and log[-1]["step"] == 20
    assert set(log[0]) >= {"l_g_pix", "l_g_adv", "l_d_real", "l_d_fake"}
    assert np.mean([p["l_g_pix"] for p in log[-3:]]) < 0.8 * np.mean([p["l_g_pix"] for p in log[:3]])
    assert math.isfinite(report.metrics[-1]["val_psnr"]) and math.isfinite(report.metrics[-1]["val_psnr_baseline"])
    assert set(report.states[-1]) == {"epoch", "step", "net_g", "net_d", "opt_g", "opt_d"}


def test_gan_step_updates_both_nets_and_leaves_d_trainable():
    cfg = TrainConfig(model="reconstruction", width=0.0625, input_size=(32, 16))
    net_g, net_d = build_gan(cfg)
    opt_g, opt_d = build_gan_optimizers(cfg, net_g, net_d)
    g0 = [p.detach().clone() for p in net_g.parameters()]
    d0 = [p.detach().clone() for p in net_d.parameters()]
    x = torch.rand(4, 3, 32, 16) * 2 - 1
    losses = gan_step(net_g, net_d, opt_g, opt_d, x, x.flip(0), GanConfig(lam=0.1, d_steps=2))

    assert math.isclose(losses["l_d_total"], losses["l_d_real"] + losses["l_d_fake"], rel_tol=1e-5)
    assert math.isclose(losses["l_g_total"], losses["l_g_pix"] + 0.1 * losses["l_g_adv"], rel_tol=1e-5)
    assert all(not torch.equal(a, b) for a, b in zip(g0, net_g.parameters()) if a.ndim > 1)
    assert all(not torch.equal(a, b) for a, b in zip(d0, net_d.parameters()) if a.ndim > 1)
    assert all(p.requires_grad for p in net_d.parameters())


def test_agreement_loss_adds_to_the_generator_step_and_leaves_the_classifier_alone():
    clf_cfg = TrainConfig(model="classifier", backbone="small", width=0.125, input_size=(64, 32))
    classifier = build_classifier(clf_cfg, ATTRS)
    before = {k: v.clone() for k, v in classifier.state_dict().items()}
    agreement = AgreementLoss(classifier, weight=5.0)
    cfg = TrainConfig(model="reconstruction", width=0.0625, input_size=(32, 16), agreement_weight=5.0)
    net_g, net_d = build_gan(cfg)
    opt_g, opt_d = build_gan_optimizers(cfg, net_g, net_d)
    occluded = torch.rand(4, 3, 64, 32) * 2 - 1
    clean = occluded.flip(0)
    lq, gt = resize_batch(occluded, (32, 16)), resize_batch(clean, (32, 16))

    # What the classifier reads is the pipeline's restoration: a generator output equal to the
    # clean crop brings back (nearly) the clean crop, which agrees better than the occluded one.
    assert float(agreement(gt, lq, occluded, clean)) < float(agreement(lq, lq, occluded, clean))
    with pytest.raises(ValueError, match="classifier's input size"):
        agreement(lq, lq, lq, gt)
    with pytest.raises(ValueError, match="needs `full`"):
        gan_step(net_g, net_d, opt_g, opt_d, lq, gt, GanConfig(lam=0.1), agreement=agreement)
    losses = gan_step(net_g, net_d, opt_g, opt_d, lq, gt, GanConfig(lam=0.1), agreement=agreement, full=(occluded, clean))
    assert losses["l_g_agree"] > 0
    assert math.isclose(losses["l_g_total"], losses["l_g_pix"] + 0.1 * losses["l_g_adv"] + 5.0 * losses["l_g_agree"],
                        rel_tol=1e-5)
    assert not classifier.training and all(not p.requires_grad for p in classifier.parameters())
    assert all(torch.equal(v, classifier.state_dict()[k]) for k, v in before.items())  # BN stats too


def test_agreement_for_a_masked_generator_reads_its_full_size_composite():
    classifier = build_classifier(TrainConfig(model="classifier", backbone="small", width=0.125, input_size=(64, 32)),
                                  ATTRS)
    agreement = AgreementLoss(classifier, weight=5.0)
    cfg = TrainConfig(model="reconstruction", width=0.0625, input_size=(32, 16), agreement_weight=5.0, masked=True)
    net_g, net_d = build_gan(cfg)
    opt_g, opt_d = build_gan_optimizers(cfg, net_g, net_d)
    occluded = torch.rand(4, 3, 64, 32) * 2 - 1
    clean = occluded.flip(0)
    lq, gt = resize_batch(occluded, (32, 16)), resize_batch(clean, (32, 16))
    fake, layers = net_g(lq, with_layers=True)
    # The loss of the layers is the classifier reading the pipeline's full-size composite.
    expected = attribute_agreement_loss(classifier(full_size(occluded, lq, fake, layers)), classifier(clean))
    assert torch.allclose(agreement(fake, lq, occluded, clean, layers=layers), expected)
    losses = gan_step(net_g, net_d, opt_g, opt_d, lq, gt, GanConfig(lam=0.1), agreement=agreement, full=(occluded, clean))
    assert losses["l_g_agree"] > 0 and all(p.grad is not None for p in net_g.parameters())


def test_mask_loss_teaches_a_masked_generator_where_the_occluder_is():
    cfg = TrainConfig(model="reconstruction", width=0.0625, input_size=(32, 16), masked=True, mask_weight=0.5)
    net_g, net_d = build_gan(cfg)
    opt_g, opt_d = build_gan_optimizers(cfg, net_g, net_d)
    gt = torch.rand(4, 3, 32, 16) * 2 - 1
    lq = gt.clone()
    lq[:3, :, 20:] = gt.flip(0)[:3, :, 20:]  # three crops occluded below row 20, the last left clean
    target = occluder_mask(lq, gt)
    assert target[:3, :, 20:].all() and not target[:3, :, :20].any() and not target[3].any()
    losses = gan_step(net_g, net_d, opt_g, opt_d, lq, gt, cfg.gan)
    assert math.isclose(losses["l_g_total"], losses["l_g_pix"] + 0.1 * losses["l_g_adv"] + 0.5 * losses["l_g_mask"],
                        rel_tol=1e-5)
    # Trained so, α rises where the occluder is and stays low elsewhere.
    for _ in range(60):
        last = gan_step(net_g, net_d, opt_g, opt_d, lq, gt, GanConfig(lam=0.0, mask_weight=1.0))
    assert last["l_g_mask"] < losses["l_g_mask"] / 2
    with torch.no_grad():
        _, layers = net_g.eval()(lq, with_layers=True)
    alpha = layers.weight
    assert alpha[:3, :, 22:].mean() > 0.7 and alpha[:3, :, :18].mean() < 0.3 and alpha[3].mean() < 0.3


def test_mask_weight_needs_a_masked_generator():
    with pytest.raises(ConfigError, match="mask_weight supervises a masked G"):
        TrainConfig(model="reconstruction", mask_weight=1.0)
    with pytest.raises(ConfigError, match="mask_weight must be >= 0"):
        TrainConfig(model="reconstruction", masked=True, mask_weight=-1.0)


def test_agreement_for_super_resolution_reads_the_output_at_the_classifier_size():
    classifier = build_classifier(TrainConfig(model="classifier", backbone="small", width=0.125, input_size=(64, 32)),
                                  ATTRS)
    agreement = AgreementLoss(classifier, weight=5.0, as_correction=False)
    clean = torch.rand(4, 3, 64, 32) * 2 - 1
    low = resize_batch(clean, (16, 8))
    # G^S's output replaces the crop: the clean crop itself agrees better than its blurred upsampling.
    assert float(agreement(clean, low, clean, clean)) < float(agreement(resize_batch(low, (64, 32)), low, clean, clean))
    assert torch.isfinite(agreement(resize_batch(clean, (32, 16)), low, clean, clean))  # resized to the classifier input


def test_agreement_weight_is_for_the_gans_only_and_non_negative():
    assert TrainConfig(model="reconstruction", agreement_weight=100.0).agreement_weight == 100.0
    assert TrainConfig(model="superres", agreement_weight=10.0).agreement_weight == 10.0
    with pytest.raises(ConfigError, match="agreement_weight applies to the GANs"):
        TrainConfig(model="classifier", agreement_weight=1.0)
    with pytest.raises(ConfigError, match="agreement_weight must be >= 0"):
        TrainConfig(model="reconstruction", agreement_weight=-1.0)


def test_select_epoch_is_for_the_gans_only_and_needs_a_validation_split():
    assert TrainConfig(model="superres").select_epoch == "last"
    assert TrainConfig(model="reconstruction", select_epoch="best_gain").select_epoch == "best_gain"
    with pytest.raises(ConfigError, match="select_epoch applies to the GANs"):
        TrainConfig(model="classifier", select_epoch="best_gain")
    with pytest.raises(ConfigError, match="select_epoch must be last or best_gain, got 'best_psnr'"):
        TrainConfig(model="superres", select_epoch="best_psnr")
    with pytest.raises(ConfigError, match="val_split is null"):
        TrainConfig(model="superres", select_epoch="best_gain", val_split=None)
    assert load_train_config("superres", overrides={"select_epoch": "best_gain"}).select_epoch == "best_gain"


def test_psnr_matches_hand_computation_and_baseline_is_identity_for_reconstruction():
    a = torch.zeros(2, 3, 4, 4)
    b = torch.full((2, 3, 4, 4), 0.1)  # mse 0.01, peak-to-peak 2 → 10·log10(4 / 0.01)
    assert torch.allclose(psnr(a, b), torch.full((2,), 10 * math.log10(400)))
    cfg = TrainConfig(model="reconstruction", width=0.0625, input_size=(32, 16))
    net_g, _ = build_gan(cfg)
    lq, gt = torch.zeros(3, 3, 32, 16), torch.full((3, 3, 32, 16), 0.1)
    out = validate_gan(net_g, lq, gt, batch_size=2)
    assert out["val_psnr_baseline"] == pytest.approx(10 * math.log10(400), rel=1e-5)


@pytest.mark.parametrize("model, size", [("reconstruction", (32, 16)), ("superres", (16, 8))])
def test_residual_gan_starts_at_its_baseline_psnr(model, size):
    cfg = TrainConfig(model=model, width=0.0625, input_size=size, residual=True, skips=True)
    net_g, _ = build_gan(cfg)
    assert net_g.config.residual and net_g.config.skips
    # An even batch: flipping it leaves no image equal to its target (whose PSNR would be unbounded).
    gt = torch.rand(4, 3, *cfg.target_size) * 2 - 1
    lq = torch.nn.functional.avg_pool2d(gt, 4) if model == "superres" else gt.flip(0)
    out = validate_gan(net_g, lq, gt, batch_size=2)
    assert out["val_psnr"] == pytest.approx(out["val_psnr_baseline"], abs=0.01)


def test_run_epochs_resumes_without_repeating_and_honours_step_budget():
    report = Recorder()
    seen = []

    def step(batch):
        seen.append(batch)
        return {"loss": float(batch)}

    run_epochs(LoopSpec(epochs=4, start_epoch=2, start_step=6, max_steps_per_epoch=3, log_every=2), step=step,
               batches=lambda e: range(10 * e, 10 * e + 10), batch_images=lambda b: 2, report=report,
               state=lambda nxt, s: {"epoch": nxt, "step": s})
    assert seen == [20, 21, 22, 30, 31, 32]
    assert [m["epoch"] for m in report.metrics] == [2, 3]
    assert report.states == [{"epoch": 3, "step": 9}, {"epoch": 4, "step": 12}]
    assert report.metrics[0]["train_loss"] == pytest.approx(21.0) and report.metrics[0]["images"] == 6
    assert [p["step"] for p in report.metrics[1]["step_log"]] == [10, 12]


def test_classifier_batch_occludes_the_bottom_and_labels_occlusion_down():
    rng = np.random.default_rng(0)
    images = np.stack([np.full((40, 16, 3), 40 * (i + 1), np.uint8) for i in range(4)])
    labels = np.zeros((4, 3), np.int8)
    x, y = tdata.classifier_batch(images, labels, rng=rng, occluded_fraction=1.0, occlusion_index=2)
    assert x.shape == (4, 3, 40, 16) and x.dtype == torch.float32
    # An occluded crop teaches occlusion_down only; the other attributes become unknown ...
    assert y[:, 2].tolist() == [1, 1, 1, 1] and (y[:, :2] == -1).all()
    # ... unless it is asked to keep them.
    _, y_all = tdata.classifier_batch(images, labels, rng=rng, occluded_fraction=1.0, occlusion_index=2,
                                      occluded_attribute_labels=True)
    assert y_all[:, 2].tolist() == [1, 1, 1, 1] and y_all[:, :2].abs().sum() == 0
    top = images[:, :8].astype(np.float32) / 127.5 - 1
    assert torch.allclose(x[:, :, :8], torch.from_numpy(top).permute(0, 3, 1, 2))  # top 20 % untouched
    assert not torch.allclose(x[:, :, -8:], torch.from_numpy(images[:, -8:] / 127.5 - 1).permute(0, 3, 1, 2).float())
    _, y_clean = tdata.classifier_batch(images, labels, rng=rng, occluded_fraction=0.0, occlusion_index=2)
    assert y_clean.abs().sum() == 0


def test_information_ceilings_train_on_corrupted_crops_with_every_label():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (8, 64, 32, 3), dtype=np.uint8)
    labels = rng.integers(0, 2, (8, 3)).astype(np.int8)
    labels[:, 2] = 0
    sizes = np.tile([[64, 32]], (8, 1)).astype(np.int32)

    occluded, y = tdata.corrupted_crops(images, labels, sizes, rng=rng, train_on="occluded", occlusion_index=2)
    assert (y[:, :2] == labels[:, :2]).all() and (y[:, 2] == 1).all()  # every label kept
    assert (occluded[:, :12] == images[:, :12]).all() and not (occluded[:, -12:] == images[:, -12:]).all()

    low, y = tdata.corrupted_crops(images, labels, sizes, rng=rng, train_on="lowres", occlusion_index=2)
    assert (y == labels).all() and low.shape == images.shape
    assert all(np.array_equal(a, lowres_view(b, s)) for a, b, s in zip(low, images, sizes))

    mixed, y = tdata.corrupted_crops(images, labels, sizes, rng=np.random.default_rng(3), train_on="corrupted",
                                     occlusion_index=2)
    assert 0 < y[:, 2].sum() < 8  # some occluded, the rest low-res
    x, y_batch = tdata.classifier_batch(images, labels, rng=np.random.default_rng(3), occluded_fraction=0.3,
                                        occlusion_index=2, train_on="corrupted", crop_sizes=sizes)
    assert torch.equal(x, tdata.to_tensor(mixed)) and (y_batch.numpy() == y).all()
    with pytest.raises(ValueError, match="train_on must be one of"):
        tdata.corrupted_crops(images, labels, sizes, rng=rng, train_on="blurred", occlusion_index=2)
    with pytest.raises(ConfigError, match="train_on"):
        TrainConfig(train_on="blurred")


def test_the_augmented_recipe_mixes_clean_occluded_and_lowres_crops_at_its_shares_with_every_label():
    rng = np.random.default_rng(0)
    n = 2000
    images = rng.integers(0, 256, (n, 16, 8, 3), dtype=np.uint8)
    labels = rng.integers(0, 2, (n, 3)).astype(np.int8)
    labels[:, 2] = 0
    sizes = np.tile([[16, 8]], (n, 1)).astype(np.int32)
    mixed, y = tdata.corrupted_crops(images, labels, sizes, rng=np.random.default_rng(1), train_on="augmented",
                                     occlusion_index=2, augment_shares=(0.2, 0.3))
    occluded = y[:, 2] == 1
    untouched = np.array([np.array_equal(a, b) for a, b in zip(mixed, images)])
    lowres = np.array([np.array_equal(a, lowres_view(b, s)) for a, b, s in zip(mixed, images, sizes)]) & ~occluded
    # Each crop is exactly one of clean, occluded, low-res, at the configured shares (binomial 3 sd: ~0.03).
    assert (occluded.astype(int) + untouched + lowres == 1).all()
    assert abs(occluded.mean() - 0.2) < 0.03 and abs(lowres.mean() - 0.3) < 0.035 and abs(untouched.mean() - 0.5) < 0.035
    assert (y[:, :2] == labels[:, :2]).all()  # every attribute label kept, occluded crops too
    assert (mixed[occluded, :3] == images[occluded, :3]).all()  # the top of an occluded crop stays
    # The training batch and the validation crops use the same mix.
    x, y_batch = tdata.classifier_batch(images, labels, rng=np.random.default_rng(1), occluded_fraction=0.9,
                                        occlusion_index=2, train_on="augmented", crop_sizes=sizes,
                                        augment_shares=(0.2, 0.3))
    assert torch.equal(x, tdata.to_tensor(mixed)) and (y_batch.numpy() == y).all()
    val = tdata.CropSet(images=images, labels=labels, attributes=("female", "hat", OCCLUSION_DOWN), crop_sizes=sizes)
    checked = tdata.classifier_validation(val, train_on="augmented", occluded_fraction=0.9, occlusion_index=2,
                                          occlusion_range=(0.5, 0.8), occluded_attribute_labels=False, seed=1,
                                          augment_shares=(0.2, 0.3))
    assert np.array_equal(checked.images, mixed) and np.array_equal(checked.labels, y)
    assert TrainConfig(train_on="augmented", augment_shares=(0.2, 0.3)).occluded_share == 0.2
    for bad in ((0.7, 0.4), (-0.1, 0.2), (0.5,)):
        with pytest.raises(ConfigError, match="augment_shares"):
            TrainConfig(train_on="augmented", augment_shares=bad)


def test_the_classifier_is_validated_on_occluded_copies_too():
    rng = np.random.default_rng(0)
    val = tdata.CropSet(images=rng.integers(0, 256, (6, 64, 32, 3), dtype=np.uint8),
                        labels=rng.integers(0, 2, (6, 3)).astype(np.int8) * np.array([1, 1, 0], np.int8),
                        attributes=("female", "hat", OCCLUSION_DOWN), crop_sizes=np.tile([[64, 32]], (6, 1)))
    common = dict(occlusion_index=2, occlusion_range=(0.5, 0.8), occluded_attribute_labels=False, seed=0)
    both = tdata.classifier_validation(val, train_on="clean", occluded_fraction=0.3, **common)
    # Every clean crop, then an occluded copy of each: occlusion_down 1, its other labels unknown.
    assert len(both) == 12 and np.array_equal(both.images[:6], val.images) and np.array_equal(both.labels[:6], val.labels)
    assert (both.labels[6:, 2] == 1).all() and (both.labels[6:, :2] == -1).all()
    assert np.array_equal(both.images[6:, :12], val.images[:, :12]) and not np.array_equal(both.images[6:], val.images)
    assert tdata.classifier_validation(val, train_on="clean", occluded_fraction=0.0, **common) is val
    ceiling = tdata.classifier_validation(val, train_on="occluded", occluded_fraction=0.3, **common)
    assert len(ceiling) == 6 and (ceiling.labels[:, 2] == 1).all() and (ceiling.labels[:, :2] == val.labels[:, :2]).all()


def test_gan_batches_have_the_network_shapes():
    images = np.random.default_rng(0).integers(0, 256, (3, 64, 32, 3), dtype=np.uint8)
    low, clean = tdata.superres_batch(images)
    assert low.shape == (3, 3, 16, 8) and clean.shape == (3, 3, 64, 32)
    occluded, clean = tdata.reconstruction_batch(images, rng=np.random.default_rng(0))
    assert occluded.shape == clean.shape == (3, 3, 64, 32)
    assert torch.equal(occluded[:, :, :6], clean[:, :, :6]) and not torch.equal(occluded, clean)


def test_reconstruction_batches_leave_a_clean_share_unoccluded():
    images = np.random.default_rng(0).integers(0, 256, (400, 16, 8, 3), dtype=np.uint8)
    occluded, clean = tdata.reconstruction_batch(images, rng=np.random.default_rng(0), clean_share=0.25)
    untouched = (occluded == clean).flatten(1).all(1).float().mean().item()
    assert 0.18 < untouched < 0.32  # 100 ± 3 sd of 400 draws at 0.25
    plain, _ = tdata.reconstruction_batch(images, rng=np.random.default_rng(0))
    zero, _ = tdata.reconstruction_batch(images, rng=np.random.default_rng(0), clean_share=0.0)
    assert torch.equal(plain, zero)  # no share, no extra draw: earlier runs keep their stream
    with pytest.raises(ConfigError, match="clean_share applies to the reconstruction GAN"):
        TrainConfig(model="superres", clean_share=0.2)
    with pytest.raises(ConfigError, match="clean_share must be in"):
        TrainConfig(model="reconstruction", clean_share=1.0)


def test_superres_input_holds_only_the_pixels_a_low_res_crop_has():
    from attrgan.corrupt import downsample
    from attrgan.data.images import resize

    image = np.random.default_rng(0).integers(0, 256, (64, 32, 3), dtype=np.uint8)
    # Stored at the training size or larger: the plain x4 downsample.
    assert np.array_equal(lowres_input(image, (64, 32)), downsample(image, 4))
    assert np.array_equal(lowres_input(image, (300, 120)), downsample(image, 4))
    assert np.array_equal(lowres_input(image, None), downsample(image, 4))
    # Stored at half the training size: a x4 low-res copy has 8x4 pixels, brought up to 16x8.
    low = lowres_input(image, (32, 16))
    assert low.shape == (16, 8, 3) and np.array_equal(low, resize(resize(image, (8, 4)), (16, 8)))
    assert np.abs(low.astype(int) - downsample(image, 4)).mean() > 5  # less detail than the plain one
    batch, _ = tdata.superres_batch(np.stack([image, image]), np.array([[64, 32], [32, 16]], np.int32))
    assert batch.shape == (2, 3, 16, 8) and not torch.equal(batch[0], batch[1])


def test_epoch_indices_drop_the_partial_batch_unless_it_is_all():
    batches = list(tdata.epoch_indices(10, 4, rng=np.random.default_rng(1)))
    assert [len(b) for b in batches] == [4, 4] and len(set(np.concatenate(batches))) == 8
    assert sorted(next(tdata.epoch_indices(3, 8, rng=np.random.default_rng(1)))) == [0, 1, 2]


def test_labels_and_attributes_from_a_manifest_table():
    table = pa.table({"crop_id": ["a", "b"], "image_uri": ["x.jpg", "y.jpg"],
                      "female": pa.array([1, None], pa.int8()), "hat": pa.array([0, 1], pa.int8())})
    assert tdata.resolve_attributes(table, None) == ("female", "hat", OCCLUSION_DOWN)
    np.testing.assert_array_equal(tdata.label_array(table, ("female", "hat", OCCLUSION_DOWN)),
                                  [[1, 0, 0], [-1, 1, 0]])
    with pytest.raises(tdata.TrainDataError, match="glasses"):
        tdata.resolve_attributes(table, ("female", "glasses"))
    with pytest.raises(tdata.TrainDataError, match="no attribute label columns"):
        tdata.resolve_attributes(table.select(["crop_id", "image_uri"]), None)


def test_curves_keep_each_epoch_once_and_write_csv_and_png(tmp_path):
    curves = Curves()
    curves.add_epoch({"epoch": 0, "step": 2, "val_ma": 0.5, "step_log": [{"epoch": 0, "step": 1, "loss": 2.0}]})
    curves.add_epoch({"epoch": 1, "step": 4, "val_ma": 0.6, "step_log": [{"epoch": 1, "step": 3, "loss": 1.5}]})
    # A retried epoch 1 (after a restart) replaces the first attempt.
    curves = Curves.from_state(curves.state())
    curves.add_epoch({"epoch": 1, "step": 4, "val_ma": 0.7, "step_log": [{"epoch": 1, "step": 3, "loss": 1.0}]})
    write_curves(str(tmp_path), curves)
    epochs = pd.read_csv(tmp_path / "epochs.csv")
    assert epochs["epoch"].tolist() == [0, 1] and epochs["val_ma"].tolist() == [0.5, 0.7]
    assert pd.read_csv(tmp_path / "losses.csv")["loss"].tolist() == [2.0, 1.0]
    assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_presets_overrides_and_yaml(tmp_path):
    paper = load_train_config("classifier", preset_name="paper")
    assert (paper.optimizer, paper.lr, paper.momentum, paper.weight_decay, paper.batch_size) == ("sgd", 1e-5, 0.9, 1e-6, 8)
    assert paper.backbone == "resnet50" and paper.network_input_size == (320, 128)
    rec = load_train_config("reconstruction", preset_name="paper")
    assert (rec.optimizer, rec.lr, rec.betas[0], rec.d_steps, rec.adversarial_weight, rec.width) == ("adam", 2e-3, 0.5, 1, 0.1, 1.0)
    sr = load_train_config("superres", preset_name="paper")
    assert sr.adversarial_weight == 1.0 and sr.target_size == (320, 128)
    assert not rec.residual and not sr.residual and not rec.skips and not sr.skips  # the paper's generators
    for name in ("reconstruction", "superres"):
        small_gan = load_train_config(name)
        assert small_gan.residual and small_gan.skips
    g_s = build_gan(load_train_config("superres", overrides={"input_size": [16, 8]}))[0]
    assert g_s.residual and g_s.skips
    assert not build_gan(load_train_config("superres", overrides={"input_size": [16, 8], "skips": False}))[0].skips
    small = load_train_config("classifier", overrides={"epochs": 2, "input_size": [40, 16]})
    assert small.backbone == "small" and small.epochs == 2 and small.network_input_size == (40, 16)
    (tmp_path / "c.yaml").write_text("epochs: 7\nworkers: 2\ncpus_per_worker: 0.5\n")
    cfg = load_train_config("superres", path=tmp_path / "c.yaml", overrides={"workers": 3})
    assert (cfg.epochs, cfg.workers, cfg.resources_per_worker) == (7, 3, {"CPU": 0.5})
    with pytest.raises(ConfigError, match="learning_rate"):
        load_train_config("classifier", overrides={"learning_rate": 0.1})
    with pytest.raises(ConfigError, match="occluded_fraction"):
        load_train_config("classifier", overrides={"occluded_fraction": 1.5})
    with pytest.raises(ConfigError, match="preset"):
        preset("huge", "classifier")
    with pytest.raises(ConfigError, match="trains 'superres'"):
        load_train_config("classifier", overrides={"model": "superres"})


def test_load_crops_keeps_each_crops_stored_size_and_drops_undecodable_rows(tmp_path):
    from PIL import Image

    Image.fromarray(np.zeros((90, 40, 3), np.uint8)).save(tmp_path / "a.png")
    (tmp_path / "broken.png").write_bytes(b"not an image")
    table = pa.table({"image_uri": [str(tmp_path / "a.png"), str(tmp_path / "broken.png"), str(tmp_path / "a.png")],
                      "bbox_x": pa.array([None, None, 5], pa.int32()), "bbox_y": pa.array([None, None, 10], pa.int32()),
                      "bbox_w": pa.array([None, None, 20], pa.int32()), "bbox_h": pa.array([None, None, 44], pa.int32())})
    crops = tdata.load_crops(table, size=(64, 32))
    assert crops.images.shape == (2, 64, 32, 3) and crops.dropped == 1
    assert crops.crop_sizes.tolist() == [[90, 40], [44, 20]]

"""bf16 where the hardware has it: the precision resolver, its fp32 fallback, and bf16 vs fp32
decisions of a trained classifier."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from attrgan.attributes import SYNTH_ATTRIBUTES
from attrgan.bundle import Bundle
from attrgan.data.synth import render_person, sample_attributes
from attrgan.losses import positive_ratios
from attrgan.metrics import attribute_metrics
from attrgan.models import ReconstructionConfig, ReconstructionGenerator, SuperResConfig, SuperResGenerator
from attrgan.pipeline import Pipeline, PipelineConfig
from attrgan.precision import CPU_BF16_ENV, autocast, cpu_has_bf16, resolve_precision
from attrgan.train.classifier import build_classifier, build_optimizer, train_classifier
from attrgan.train.train_config import TrainConfig
from attrgan.train.loop import LoopSpec

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SIZE = (80, 32)  # small classifier input: trains in seconds
ATTRS = SYNTH_ATTRIBUTES


@pytest.mark.parametrize("forced, expected", [("0", "fp32"), ("1", "bf16")])
def test_auto_follows_the_cpu_detection_and_forcing_it(monkeypatch, forced, expected):
    monkeypatch.setenv(CPU_BF16_ENV, forced)
    assert cpu_has_bf16() is (forced == "1")
    assert resolve_precision("auto", "cpu") == expected
    # Explicit choices and CUDA do not depend on the CPU.
    assert resolve_precision("fp32", "cpu") == "fp32" and resolve_precision("bf16", "cpu") == "bf16"
    assert resolve_precision("auto", "cuda") == "bf16" and resolve_precision("fp32", "cuda:0") == "fp32"


def test_bad_precision_values_are_refused(monkeypatch):
    with pytest.raises(ValueError, match="precision must be one of"):
        resolve_precision("fp16", "cpu")
    with pytest.raises(ValueError, match="precision must be one of"):
        PipelineConfig(precision="half")
    with pytest.raises(ValueError, match="resolved precision"):
        autocast("cpu", "auto")
    monkeypatch.setenv(CPU_BF16_ENV, "yes")
    with pytest.raises(ValueError, match=CPU_BF16_ENV):
        cpu_has_bf16()


def test_autocast_runs_convolutions_in_bf16_only_when_asked():
    conv = torch.nn.Conv2d(3, 4, 3)
    x = torch.rand(1, 3, 8, 8)
    with torch.inference_mode():
        with autocast("cpu", "bf16"):
            assert conv(x).dtype == torch.bfloat16
        with autocast("cpu", "fp32"):
            assert conv(x).dtype == torch.float32


def render(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """n synthetic crops (n, H, W, 3) uint8 at SIZE and their labels (n, A) int8 (occlusion_down 0)."""
    rng = np.random.default_rng(seed)
    images, labels = [], []
    for _ in range(n):
        attrs = sample_attributes(rng)
        images.append(np.asarray(render_person(rng, attrs, size=SIZE)))
        labels.append([attrs.get(a, 0) for a in ATTRS])
    return np.stack(images), np.asarray(labels, np.int8)


@pytest.fixture(scope="module")
def trained_bundle() -> tuple[Bundle, np.ndarray, np.ndarray]:
    """A small classifier trained a few epochs on synthetic crops (fp32), and test crops + labels."""
    torch.manual_seed(0)
    train_x, train_y = render(192, seed=1)
    cfg = TrainConfig(model="classifier", backbone="small", width=0.25, input_size=SIZE, lr=3e-3,
                      betas=(0.9, 0.999), weight_decay=1e-4)
    net = build_classifier(cfg, ATTRS)
    opt = build_optimizer(cfg, net.parameters())
    x = torch.from_numpy(train_x).permute(0, 3, 1, 2).float() / 127.5 - 1
    y = torch.from_numpy(train_y)

    def batches(epoch: int):
        order = torch.randperm(len(x), generator=torch.Generator().manual_seed(epoch))
        return [(x[order[i:i + 32]], y[order[i:i + 32]]) for i in range(0, len(x), 32)]

    train_classifier(net, opt, batches, LoopSpec(epochs=6), ratios=positive_ratios(train_y), report=lambda m, s: None)
    bundle = Bundle(classifier=net.eval(),
                    reconstruction=ReconstructionGenerator(ReconstructionConfig(width=1 / 32, input_size=(32, 16))),
                    superres=SuperResGenerator(SuperResConfig(width=1 / 64, input_size=(16, 8))), version="t")
    test_x, test_y = render(128, seed=2)
    return bundle, test_x, test_y


def classify(bundle: Bundle, images: np.ndarray, precision: str) -> tuple[Pipeline, dict[str, np.ndarray]]:
    pipe = Pipeline(bundle, PipelineConfig(device="cpu", precision=precision, use_superres=False,
                                           use_reconstruction=False))
    return pipe, pipe(images, np.full(len(images), SIZE[0]))


def test_bf16_decisions_agree_with_fp32_on_a_trained_classifier(trained_bundle):
    bundle, images, labels = trained_bundle
    fp32_pipe, fp32 = classify(bundle, images, "fp32")
    bf16_pipe, bf16 = classify(bundle, images, "bf16")
    assert (fp32_pipe.precision, bf16_pipe.precision) == ("fp32", "bf16")
    assert bf16["scores"].dtype == np.float32 and bf16["occlusion_score"].dtype == np.float32
    agreement = (fp32["decisions"] == bf16["decisions"]).mean()
    ma_fp32 = attribute_metrics(labels, fp32["scores"], attributes=ATTRS).ma
    ma_bf16 = attribute_metrics(labels, bf16["scores"], attributes=ATTRS).ma
    # Above chance (0.5), so its scores are spread as a trained model's are, not all near 0.5.
    assert ma_fp32 > 0.53, f"the classifier learned too little for the comparison to mean much: {ma_fp32:.3f}"
    assert agreement >= 0.995, f"bf16 changed {100 * (1 - agreement):.2f} % of the decisions"
    assert abs(ma_fp32 - ma_bf16) * 100 <= 0.3, f"mA fp32 {ma_fp32:.4f} vs bf16 {ma_bf16:.4f}"


def test_auto_falls_back_to_fp32_without_cpu_bf16(trained_bundle, monkeypatch):
    bundle, images, _ = trained_bundle
    monkeypatch.setenv(CPU_BF16_ENV, "0")
    auto_pipe, auto = classify(bundle, images[:16], "auto")
    _, fp32 = classify(bundle, images[:16], "fp32")
    assert auto_pipe.precision == "fp32"
    np.testing.assert_array_equal(auto["scores"], fp32["scores"])
    monkeypatch.setenv(CPU_BF16_ENV, "1")
    assert classify(bundle, images[:1], "auto")[0].precision == "bf16"


def tiny_training_setup(model: str, device: str = "cpu"):
    """A fresh small network of `model`, its optimiser(s) and one fixed batch on `device`; returns
    step(amp) -> losses, which runs one training step from the same initial weights each time."""
    from attrgan.train.classifier import classifier_step
    from attrgan.train.gan import build_gan, build_gan_optimizers, gan_step

    size = {"classifier": SIZE, "reconstruction": (32, 16), "superres": (16, 8)}[model]
    cfg = TrainConfig(model=model, backbone="small", width=0.25 if model == "classifier" else 1 / 32,
                      input_size=size, lr=1e-3, betas=(0.9, 0.999))
    gen = torch.Generator().manual_seed(0)
    if model == "classifier":
        x = (torch.rand(8, 3, *size, generator=gen) * 2 - 1).to(device)
        y = torch.randint(0, 2, (8, len(ATTRS)), generator=gen, dtype=torch.int8).to(device)

        def step(amp: bool) -> dict[str, float]:
            torch.manual_seed(0)
            net = build_classifier(cfg, ATTRS).to(device)
            losses = classifier_step(net, build_optimizer(cfg, net.parameters()), x, y,
                                     torch.full((len(ATTRS),), 0.3, device=device), amp=amp)
            return losses | {"grads_finite": all(p.grad is None or bool(p.grad.isfinite().all())
                                                 for p in net.parameters())}
        return step
    h, w = cfg.network_input_size
    lq = (torch.rand(8, 3, h, w, generator=gen) * 2 - 1).to(device)
    gt = (torch.rand(8, 3, *cfg.target_size, generator=gen) * 2 - 1).to(device)

    def step(amp: bool) -> dict[str, float]:
        torch.manual_seed(0)
        net_g, net_d = (n.to(device) for n in build_gan(cfg))
        opt_g, opt_d = build_gan_optimizers(cfg, net_g, net_d)
        losses = gan_step(net_g, net_d, opt_g, opt_d, lq, gt, cfg.gan, amp=amp)
        return losses | {"grads_finite": all(p.grad is None or bool(p.grad.isfinite().all())
                                             for n in (net_g, net_d) for p in n.parameters())}
    return step


@pytest.mark.parametrize("model", ["classifier", "reconstruction", "superres"])
def test_bf16_training_step_matches_fp32_with_finite_gradients(model):
    step = tiny_training_setup(model)
    fp32, bf16 = step(False), step(True)
    assert fp32["grads_finite"] and bf16["grads_finite"]
    for name, value in fp32.items():
        if name != "grads_finite":
            assert bf16[name] == pytest.approx(value, rel=0.05, abs=1e-3), name


def test_train_config_precision_is_checked():
    from attrgan.config import ConfigError
    from attrgan.train.train_config import load_train_config

    assert load_train_config("classifier").precision == "auto"
    assert load_train_config("superres", overrides={"precision": "fp32"}).precision == "fp32"
    with pytest.raises(ConfigError, match="precision"):
        TrainConfig(precision="fp16")


@pytest.mark.gpu
def test_pipeline_runs_bf16_on_cuda_with_float32_outputs(trained_bundle):
    bundle, images, _ = trained_bundle
    # Each pipeline moves its bundle's networks to its device: copies keep CPU and GPU apart.
    pipe = Pipeline(copy.deepcopy(bundle), PipelineConfig(device="cuda", precision="auto"))
    out = pipe(images, np.r_[np.full(len(images) // 2, 12), np.full(len(images) - len(images) // 2, SIZE[0])])
    assert pipe.precision == "bf16" and out["scores"].dtype == np.float32
    assert out["super_resolved"].sum() == len(images) // 2
    cpu = Pipeline(copy.deepcopy(bundle), PipelineConfig(device="cpu", precision="fp32", use_superres=False,
                                          use_reconstruction=False))
    gpu = Pipeline(copy.deepcopy(bundle), PipelineConfig(device="cuda", precision="bf16", use_superres=False,
                                          use_reconstruction=False))
    heights = np.full(len(images), SIZE[0])
    agreement = (cpu(images, heights)["decisions"] == gpu(images, heights)["decisions"]).mean()
    assert agreement >= 0.99


@pytest.mark.gpu
@pytest.mark.parametrize("model", ["classifier", "reconstruction", "superres"])
def test_bf16_training_step_on_cuda(model):
    step = tiny_training_setup(model, device="cuda")
    fp32, bf16 = step(False), step(True)
    assert fp32["grads_finite"] and bf16["grads_finite"]
    assert bf16["l_g_total" if model != "classifier" else "loss"] == pytest.approx(
        fp32["l_g_total" if model != "classifier" else "loss"], rel=0.05, abs=1e-3)

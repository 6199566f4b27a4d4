"""The paper's networks: shapes, layer structure (§3.1–3.3), eq. (1), gradients, input checks."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from attrgan.config import ConfigError
from attrgan.models import (
    AttributeClassifier,
    ClassifierConfig,
    ReconstructionConfig,
    ReconstructionDiscriminator,
    ReconstructionGenerator,
    SuperResConfig,
    SuperResDiscriminator,
    SuperResGenerator,
    build_network,
    config_class,
    part_rows,
)

ATTRS = ("female", "hat", "skirt", "backpack", "occlusion_down")
SMALL = dict(attributes=ATTRS, backbone="small", width=0.125, input_size=(80, 32))


@pytest.fixture(autouse=True)
def _seed_and_threads():
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(threads)


def images(batch: int, size: tuple[int, int]) -> torch.Tensor:
    return torch.rand(batch, 3, *size) * 2 - 1


def leaves(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if not list(m.children())]


# --- classifier -------------------------------------------------------------------------------

def test_part_rows_follow_the_10_block_rule():
    assert part_rows(320) == {"head_shoulder": (0, 128), "upper": (64, 224), "lower": (160, 320)}
    assert part_rows(100) == {"head_shoulder": (0, 40), "upper": (20, 70), "lower": (50, 100)}
    assert AttributeClassifier.part_rows(80) == {"head_shoulder": (0, 32), "upper": (16, 56), "lower": (40, 80)}
    with pytest.raises(ValueError, match="height must be an integer >= 10"):
        part_rows(9)


def test_small_classifier_shapes_and_features():
    model = AttributeClassifier(ClassifierConfig(**SMALL)).eval()
    x = images(3, (80, 32))
    feats = model.forward_features(x)
    assert list(feats) == ["body", "head_shoulder", "upper", "lower"]
    assert all(f.shape == (3, model.num_features) for f in feats.values())
    assert model.num_features == 64  # 512 × 0.125
    logits = model(x)
    assert logits.shape == (3, len(ATTRS)) and logits.dtype == torch.float32
    assert torch.equal(logits, model.forward_head(feats))


def test_views_are_crops_through_one_shared_trunk_batched_by_height():
    model = AttributeClassifier(ClassifierConfig(**SMALL)).eval()
    calls = []
    model.trunk.register_forward_hook(lambda mod, inp, out: calls.append(tuple(inp[0].shape)))
    x = images(2, (80, 32))
    with torch.no_grad():
        feats = model.forward_features(x)
    # body (80 rows), head-shoulder (32 rows), upper + lower (40 rows each) batched together.
    assert sorted(calls) == sorted([(2, 3, 80, 32), (2, 3, 32, 32), (4, 3, 40, 32)])
    normalised = ((x + 1) / 2 - model.mean) / model.std
    with torch.no_grad():
        for view, (top, bottom) in part_rows(80).items():
            torch.testing.assert_close(feats[view], model.trunk(normalised[:, :, top:bottom]))
        torch.testing.assert_close(feats["body"], model.trunk(normalised))


def test_eq1_score_is_body_plus_best_part():
    model = AttributeClassifier(ClassifierConfig(attributes=("hat", "skirt"), backbone="small", width=0.125,
                                                 input_size=(80, 32)))
    f = model.num_features
    with torch.no_grad():
        for head in [model.body_head, *model.part_heads.values()]:
            head.weight.zero_()
        # body: hat reads feature 0, skirt feature 1; each part reads feature 0 with its own scale.
        model.body_head.weight[0, 0] = 1.0
        model.body_head.weight[1, 1] = 1.0
        model.body_head.bias.copy_(torch.tensor([0.5, -1.0]))
        for part, scale in {"head_shoulder": 3.0, "upper": 1.0, "lower": -2.0}.items():
            model.part_heads[part].weight[:, 0] = scale
            model.part_heads[part].bias.zero_()
    features = {view: torch.zeros(1, f) for view in ("body", "head_shoulder", "upper", "lower")}
    features["body"][0, :2] = torch.tensor([2.0, 4.0])
    features["head_shoulder"][0, 0] = 1.0  # part scores 3, 3
    features["upper"][0, 0] = 2.0  # 2, 2
    features["lower"][0, 0] = -1.0  # 2, 2
    # hat: 2 + 0.5 + max(3, 2, 2) = 5.5; skirt: 4 - 1 + 3 = 6
    torch.testing.assert_close(model.forward_head(features), torch.tensor([[5.5, 6.0]]))
    features["lower"][0, 0] = -4.0  # lower now scores 8: the max switches part
    torch.testing.assert_close(model.forward_head(features), torch.tensor([[10.5, 11.0]]))


def test_classifier_rejects_wrong_input():
    model = AttributeClassifier(ClassifierConfig(**SMALL))
    with pytest.raises(ValueError, match=r"\(B, 3, 80, 32\).*got \(1, 3, 64, 32\)"):
        model(images(1, (64, 32)))
    with pytest.raises(ValueError, match=r"\(B, 3, 80, 32\).*got \(1, 1, 80, 32\)"):
        model(torch.zeros(1, 1, 80, 32))
    with pytest.raises(ValueError, match=r"\(B, 3, 80, 32\)"):
        model(torch.zeros(3, 80, 32))


def test_classifier_config_checks():
    with pytest.raises(ValueError, match="backbone must be one of"):
        ClassifierConfig(backbone="vgg16")
    with pytest.raises(ValueError, match="'small' backbone only"):
        ClassifierConfig(backbone="resnet50", width=0.5)
    with pytest.raises(ValueError, match="input_size"):
        ClassifierConfig(input_size=(8, 8))
    with pytest.raises(ValueError, match="duplicates"):
        ClassifierConfig(attributes=("hat", "hat"))
    with pytest.raises(ValueError, match="unknown ResNet18_Weights 'IMAGENET9K'"):
        AttributeClassifier(ClassifierConfig(backbone="resnet18", weights="IMAGENET9K"))
    with pytest.raises(ValueError, match="no such file"):
        AttributeClassifier(ClassifierConfig(backbone="small", weights="/nonexistent/trunk.pth"))


def test_trunk_weights_from_local_files(tmp_path):
    # A torchvision ResNet18 state dict (with its ImageNet fc, which the classifier drops).
    reference = torchvision.models.resnet18()
    torch.save(reference.state_dict(), tmp_path / "r18.pth")
    model = AttributeClassifier(ClassifierConfig(attributes=ATTRS, backbone="resnet18", input_size=(64, 32),
                                                 weights=str(tmp_path / "r18.pth")))
    assert torch.equal(model.trunk.conv1.weight, reference.conv1.weight)
    assert torch.equal(model.trunk.layer4[1].bn2.running_var, reference.layer4[1].bn2.running_var)

    from safetensors.torch import save_file

    small = AttributeClassifier(ClassifierConfig(**SMALL))
    save_file(small.trunk.state_dict(), tmp_path / "small.safetensors")
    again = AttributeClassifier(ClassifierConfig(**SMALL, weights=str(tmp_path / "small.safetensors")))
    for (k, a), b in zip(small.trunk.state_dict().items(), again.trunk.state_dict().values()):
        assert torch.equal(a, b), k
    with pytest.raises(ValueError, match="do not fit the resnet18 trunk"):
        AttributeClassifier(ClassifierConfig(backbone="resnet18", weights=str(tmp_path / "small.safetensors")))


def test_resnet50_classifier_at_paper_size():
    model = AttributeClassifier(ClassifierConfig()).eval()
    assert model.num_features == 2048
    with torch.inference_mode():
        logits = model(images(1, (320, 128)))
    assert logits.shape == (1, 52) and torch.isfinite(logits).all()


# --- GAN layer structure at width 1 (§3.2 / §3.3) ----------------------------------------------

def conv_layout(model: nn.Module) -> list[tuple[str, int, int, bool, str]]:
    """(kind, out channels, stride, followed by BatchNorm, activation) per conv in order."""
    seq = leaves(model)
    out = []
    for i, m in enumerate(seq):
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            assert m.kernel_size == (5, 5)
            kind = "tconv" if isinstance(m, nn.ConvTranspose2d) else "conv"
            has_bn = isinstance(seq[i + 1], nn.BatchNorm2d)
            act = seq[i + 1 + has_bn]
            out.append((kind, m.out_channels, m.stride[0], has_bn, type(act).__name__))
    return out


def test_reconstruction_generator_structure():
    model = ReconstructionGenerator()
    enc = [("conv", c, 2, True, "LeakyReLU") for c in (64, 128, 256, 512)]
    dec = [("tconv", c, 2, True, "ReLU") for c in (256, 128, 64, 32)]
    assert conv_layout(model) == enc + dec + [("conv", 3, 1, False, "Tanh")]
    assert all(m.negative_slope == 0.2 for m in model.modules() if isinstance(m, nn.LeakyReLU))


def test_superres_generator_structure():
    model = SuperResGenerator()
    enc = [("conv", c, 2, True, "LeakyReLU") for c in (256, 512, 1024)]
    dec = [("tconv", c, 2, True, "ReLU") for c in (512, 256, 256, 128, 128)]
    assert conv_layout(model) == enc + dec + [("conv", 3, 1, False, "Tanh")]
    assert model.config.output_size == (320, 128)


@pytest.mark.parametrize("cls, channels, size", [
    (ReconstructionDiscriminator, (128, 256, 512, 1024), (160, 64)),
    (SuperResDiscriminator, (128, 256, 512, 1024, 2048), (320, 128)),
])
def test_discriminator_structure(cls, channels, size):
    model = cls()
    expected = [("conv", c, 2, i > 0, "LeakyReLU") for i, c in enumerate(channels)]
    assert conv_layout(model) == expected
    assert model.input_size == size
    assert model.classifier.in_features == channels[-1] * (size[0] // 2 ** len(channels)) * (size[1] // 2 ** len(channels))
    assert model.classifier.out_features == 1


# --- GAN shapes ---------------------------------------------------------------------------------

def test_paper_width_shapes():
    with torch.inference_mode():
        assert ReconstructionGenerator().eval()(images(1, (160, 64))).shape == (1, 3, 160, 64)
        assert SuperResGenerator().eval()(images(1, (80, 32))).shape == (1, 3, 320, 128)
        assert ReconstructionDiscriminator().eval()(images(2, (160, 64))).shape == (2,)
        assert SuperResDiscriminator().eval()(images(1, (320, 128))).shape == (1,)


@pytest.mark.parametrize("batch", [1, 3])
def test_small_width_shapes_and_range(batch):
    g_r = ReconstructionGenerator(ReconstructionConfig(width=0.125))
    g_s = SuperResGenerator(SuperResConfig(width=0.125))
    out_r = g_r(images(batch, (160, 64)))
    out_s = g_s(images(batch, (80, 32)))
    assert out_r.shape == (batch, 3, 160, 64) and out_s.shape == (batch, 3, 320, 128)
    assert out_r.abs().max() <= 1 and out_s.abs().max() <= 1  # tanh
    assert ReconstructionDiscriminator(width=0.125)(out_r).shape == (batch,)
    assert SuperResDiscriminator(width=0.125)(out_s).shape == (batch,)
    # channels = max(1, round(c · width)); a tiny width keeps at least one channel
    assert conv_layout(ReconstructionGenerator(ReconstructionConfig(width=0.01)))[0][1] == 1
    assert conv_layout(ReconstructionGenerator(ReconstructionConfig(width=0.125)))[0][1] == 8


def test_gans_reject_wrong_input():
    with pytest.raises(ValueError, match=r"ReconstructionGenerator expects a \(B, 3, 160, 64\)"):
        ReconstructionGenerator(ReconstructionConfig(width=0.125))(images(1, (80, 32)))
    with pytest.raises(ValueError, match=r"SuperResGenerator expects a \(B, 3, 80, 32\).*got \(1, 4, 80, 32\)"):
        SuperResGenerator(SuperResConfig(width=0.125))(torch.zeros(1, 4, 80, 32))
    with pytest.raises(ValueError, match=r"SuperResDiscriminator expects a \(B, 3, 320, 128\)"):
        SuperResDiscriminator(width=0.125)(images(1, (160, 64)))
    with pytest.raises(ValueError, match="multiples of 16"):
        ReconstructionConfig(input_size=(100, 64))
    with pytest.raises(ValueError, match="upsamples by 4"):
        SuperResConfig(scale=2)
    with pytest.raises(ValueError, match="width must be > 0"):
        ReconstructionDiscriminator(width=0)


# --- residual generators (not in the paper; the cpu-small preset) ---------------------------------

@pytest.mark.parametrize("cls, config", [
    (ReconstructionGenerator, ReconstructionConfig), (SuperResGenerator, SuperResConfig)])
def test_residual_generators_keep_the_paper_layers(cls, config):
    assert conv_layout(cls(config(residual=True))) == conv_layout(cls())
    assert cls().residual is False and config().residual is False  # the paper by default


def test_residual_generators_start_at_identity_and_bilinear_upsampling():
    x = images(2, (160, 64))
    g_r = ReconstructionGenerator(ReconstructionConfig(width=0.125, residual=True)).eval()
    assert torch.allclose(g_r(x), x, atol=1e-3)
    low = images(2, (80, 32))
    g_s = SuperResGenerator(SuperResConfig(width=0.0625, residual=True)).eval()
    bilinear = nn.functional.interpolate(low, size=(320, 128), mode="bilinear", align_corners=False)
    assert torch.allclose(g_s(low), bilinear, atol=1e-3)
    # A constant image upsamples to itself: the generator's base adds nothing of its own.
    assert torch.allclose(g_s.base(torch.full((1, 3, 80, 32), 0.25)), torch.full((1, 3, 320, 128), 0.25))


def test_residual_output_is_input_plus_twice_the_head_clamped_to_the_image_range():
    g = ReconstructionGenerator(ReconstructionConfig(width=0.125, residual=True)).eval()
    with torch.no_grad():
        g.head[0].weight.zero_()
        g.head[0].bias.fill_(0.25)  # head = tanh(0.25) everywhere
    x = torch.linspace(-1, 1, 160 * 64 * 3).reshape(1, 3, 160, 64)
    expected = (x + 2 * torch.tanh(torch.tensor(0.25))).clamp(-1, 1)
    out = g(x)
    assert torch.allclose(out, expected, atol=1e-6)
    assert out.max() == 1.0 and out.min() > -1.0  # clamped at the top, shifted at the bottom


def test_residual_setting_is_checked_and_survives_a_bundle_round_trip(tmp_path):
    from attrgan.bundle import load_network, save_network

    with pytest.raises(ValueError, match="residual must be true or false, got 'yes'"):
        ReconstructionConfig(residual="yes")
    with pytest.raises(ValueError, match="SuperResConfig.residual"):
        SuperResConfig(residual=1)
    g = build_network("superres", {"width": 0.0625, "input_size": [16, 8], "residual": True})
    meta = save_network(tmp_path / "sr", g)
    assert meta["config"]["residual"] is True
    loaded, _ = load_network(tmp_path / "sr")
    assert loaded.residual and loaded.config == g.config
    x = images(2, (16, 8))
    assert torch.equal(loaded(x), g.eval()(x))


# --- U-Net skip connections (not in the paper; the cpu-small preset) -------------------------------

def conv_inputs(model: nn.Module) -> list[int]:
    return [m.in_channels for m in model.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]


@pytest.mark.parametrize("cls, config", [
    (ReconstructionGenerator, ReconstructionConfig), (SuperResGenerator, SuperResConfig)])
def test_skips_are_off_by_default_and_keep_the_paper_output_channels(cls, config):
    assert cls().skips is False and config().skips is False
    assert all(level is None for level in cls().skip_levels)
    assert conv_layout(cls(config(width=0.125, skips=True))) == conv_layout(cls(config(width=0.125)))


def test_skips_concatenate_the_encoder_map_of_each_decoder_resolution():
    # G^R at width 0.125: encoder 8, 16, 32, 64; decoder 32, 16, 8, 4 joined by 32, 16, 8 and the input's 3.
    g_r = ReconstructionGenerator(ReconstructionConfig(width=0.125, skips=True))
    assert g_r.skip_levels == (3, 2, 1, 0)
    assert conv_inputs(g_r) == [3, 8, 16, 32, 64, 32 + 32, 16 + 16, 8 + 8, 4 + 3]
    # G^S at width 0.0625: encoder 16, 32, 64 (40×16, 20×8, 10×4); decoder 32 (20×8) + 32,
    # 16 (40×16) + 16, 16 (80×32) + the input's 3, then 8 and 8 above the input's resolution.
    g_s = SuperResGenerator(SuperResConfig(width=0.0625, skips=True))
    assert g_s.skip_levels == (2, 1, 0, None, None)
    assert conv_inputs(g_s) == [3, 16, 32, 64, 32 + 32, 16 + 16, 16 + 3, 8, 8]


@pytest.mark.parametrize("residual", [False, True])
def test_skip_generators_small_width_shapes_and_range(residual):
    g_r = ReconstructionGenerator(ReconstructionConfig(width=0.125, residual=residual, skips=True))
    g_s = SuperResGenerator(SuperResConfig(width=0.0625, input_size=(40, 16), residual=residual, skips=True))
    out_r, out_s = g_r(images(3, (160, 64))), g_s(images(2, (40, 16)))
    assert out_r.shape == (3, 3, 160, 64) and out_s.shape == (2, 3, 160, 64)
    assert out_r.abs().max() <= 1 and out_s.abs().max() <= 1


def test_skip_path_carries_pixel_detail_the_bottleneck_cannot():
    # The 3 input channels reach the head directly: moving one input pixel changes the output
    # there even with every encoder weight zeroed (no path through the bottleneck then).
    g = ReconstructionGenerator(ReconstructionConfig(width=0.125, skips=True)).eval()
    with torch.no_grad():
        for m in g.encoder.modules():
            if isinstance(m, nn.Conv2d):
                m.weight.zero_()
    x = images(1, (160, 64))
    y = x.clone()
    y[0, :, 80, 32] = -x[0, :, 80, 32]
    diff = (g(y) - g(x)).abs().sum(dim=(0, 1))
    assert diff[80, 32] > 0
    assert diff[:70].sum() == 0  # the 5×5 head and last tconv reach only nearby rows


def test_skips_setting_is_checked_and_survives_a_bundle_round_trip(tmp_path):
    from attrgan.bundle import load_network, save_network

    with pytest.raises(ValueError, match="skips must be true or false, got 'no'"):
        ReconstructionConfig(skips="no")
    with pytest.raises(ValueError, match="SuperResConfig.skips"):
        SuperResConfig(skips=0)
    for name, size in (("reconstruction", (32, 16)), ("superres", (16, 8))):
        g = build_network(name, {"width": 0.0625, "input_size": list(size), "residual": True, "skips": True})
        meta = save_network(tmp_path / name, g)
        assert meta["config"]["skips"] is True
        loaded, _ = load_network(tmp_path / name)
        assert loaded.skips and loaded.config == g.config
        x = images(2, size)
        assert torch.equal(loaded(x), g.eval()(x))


def test_configs_without_the_skips_field_load_as_the_paper():
    # config.json written before the field existed: same layers, skips off.
    g = build_network("reconstruction", {"width": 0.125, "input_size": [32, 16], "residual": True})
    assert g.skips is False and g.config == ReconstructionConfig(width=0.125, input_size=(32, 16), residual=True)


# --- gradients ----------------------------------------------------------------------------------

@pytest.mark.parametrize("build, size", [
    (lambda: AttributeClassifier(ClassifierConfig(**SMALL)), (80, 32)),
    (lambda: ReconstructionGenerator(ReconstructionConfig(width=0.125)), (160, 64)),
    (lambda: SuperResGenerator(SuperResConfig(width=0.125)), (80, 32)),
    (lambda: SuperResGenerator(SuperResConfig(width=0.125, residual=True)), (80, 32)),
    (lambda: ReconstructionGenerator(ReconstructionConfig(width=0.125, residual=True, skips=True)), (160, 64)),
    (lambda: SuperResGenerator(SuperResConfig(width=0.0625, residual=True, skips=True)), (80, 32)),
    (lambda: ReconstructionDiscriminator(width=0.125), (160, 64)),
    (lambda: SuperResDiscriminator(width=0.125), (320, 128)),
], ids=["classifier", "g_r", "g_s", "g_s_residual", "g_r_skips", "g_s_skips", "d_r", "d_s"])
def test_every_parameter_gets_a_finite_gradient(build, size):
    model = build().train()
    out = model(images(4, size))
    # A random projection so every output element matters (a plain sum would cancel through BN).
    (out * torch.randn_like(out)).sum().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


# --- registry -----------------------------------------------------------------------------------

def test_build_network_from_config_dict():
    model = build_network("superres", {"width": 0.125, "input_size": [40, 16]})
    assert isinstance(model, SuperResGenerator) and model.config.input_size == (40, 16)
    clf = build_network("classifier", {"attributes": list(ATTRS), "backbone": "small", "width": 0.125})
    assert clf.config.attributes == ATTRS
    assert config_class("reconstruction") is ReconstructionConfig
    with pytest.raises(ValueError, match="architecture must be one of"):
        build_network("detector", {})
    with pytest.raises(ConfigError, match="unknown setting"):
        build_network("reconstruction", {"depth": 3})


# --- masked G^R (not in the paper) -----------------------------------------------------------------

def test_masked_reconstruction_composites_its_painting_with_a_predicted_weight(tmp_path):
    from attrgan.bundle import load_network, save_network

    g = ReconstructionGenerator(ReconstructionConfig(width=0.125, skips=True, masked=True)).eval()
    x = images(2, (160, 64))
    with torch.no_grad():
        start = g(x)
    assert (start - x).abs().max() < 0.1  # α starts at sigmoid(-3): almost the identity
    with torch.no_grad():
        g.head[0].weight.zero_()
        g.head[0].bias.copy_(torch.tensor([0.5, 0.5, 0.5, 0.0]))  # paint tanh(0.5), α = 0.5 everywhere
        out = g(x)
    assert torch.allclose(out, x + 0.5 * (torch.tanh(torch.tensor(0.5)) - x), atol=1e-6)
    assert out.abs().max() <= 1.0

    with pytest.raises(ValueError, match="masked replaces residual"):
        ReconstructionConfig(masked=True, residual=True)
    meta = save_network(tmp_path / "rec", g)
    loaded, _ = load_network(tmp_path / "rec")
    assert meta["config"]["masked"] is True and loaded.masked and torch.equal(loaded(x), out)
    old = {k: v for k, v in meta["config"].items() if k != "masked"}  # a bundle from before the option
    assert build_network("reconstruction", old).masked is False


def test_masked_reconstruction_composites_at_full_size_without_the_occluders_edges():
    from attrgan.models.ops import full_size, resize_batch

    g = ReconstructionGenerator(ReconstructionConfig(width=0.125, masked=True, input_size=(32, 16))).eval()
    with torch.no_grad():
        g.head[0].weight.zero_()
        g.head[0].bias.copy_(torch.tensor([0.5, 0.5, 0.5, 20.0]))  # paint tanh(0.5) with α ≈ 1
        original = images(2, (64, 32))
        small = resize_batch(original, (32, 16))
        out, layers = g(small, with_layers=True)
        assert torch.equal(out, g(small)) and layers.weight.shape == (2, 1, 32, 16)
        painted = full_size(original, small, out, layers)
        added = full_size(original, small, out)  # adding the change keeps the original's fine detail
    assert torch.allclose(painted, torch.full_like(painted, float(torch.tanh(torch.tensor(0.5)))), atol=1e-5)
    assert (added - painted).abs().max() > 0.1
    with pytest.raises(ValueError, match="only a masked generator"):
        ReconstructionGenerator(ReconstructionConfig(width=0.125, input_size=(32, 16)))(small, with_layers=True)


def _randomise_batchnorm(net: nn.Module) -> nn.Module:
    """Trained-looking BatchNorm statistics and affines, so folding them is not the identity."""
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.3, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.3, 0.3)
    return net.eval()


@pytest.mark.parametrize("build, size", [
    (lambda: AttributeClassifier(ClassifierConfig(**SMALL)), (80, 32)),
    (lambda: AttributeClassifier(ClassifierConfig(attributes=ATTRS, backbone="resnet18", input_size=(40, 16))),
     (40, 16)),
    (lambda: ReconstructionGenerator(ReconstructionConfig(width=1 / 16, input_size=(32, 16))), (32, 16)),
    (lambda: ReconstructionGenerator(ReconstructionConfig(width=1 / 16, input_size=(32, 16), masked=True,
                                                          skips=True)), (32, 16)),
    (lambda: SuperResGenerator(SuperResConfig(width=1 / 32, input_size=(16, 8), residual=True, skips=True)),
     (16, 8)),
], ids=["small-classifier", "resnet18-classifier", "reconstruction", "masked-reconstruction", "superres"])
def test_folding_batchnorm_keeps_the_function_and_removes_every_batchnorm(build, size):
    from attrgan.models.inference import inference_copy

    net = _randomise_batchnorm(build())
    before = {k: v.clone() for k, v in net.state_dict().items()}
    x = images(3, size)
    folded = inference_copy(net, device="cpu", memory_format=torch.channels_last)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    assert any(isinstance(m, nn.BatchNorm2d) for m in net.modules())  # the original is untouched
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in before.items())
    with torch.inference_mode():
        expected, got = net(x), folded(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
    with torch.inference_mode():  # without folding, the copy is the same network
        unfolded = inference_copy(net, device="cpu", memory_format=torch.contiguous_format, fold=False)
        assert sum(isinstance(m, nn.BatchNorm2d) for m in unfolded.modules()) == \
            sum(isinstance(m, nn.BatchNorm2d) for m in net.modules())
        torch.testing.assert_close(unfolded(x), expected, rtol=0, atol=0)


def test_grouped_transposed_convs_keep_their_batchnorm():
    from attrgan.models.inference import fold_batchnorm

    net = _randomise_batchnorm(nn.Sequential(nn.ConvTranspose2d(4, 4, 3, groups=2), nn.BatchNorm2d(4)))
    x = torch.randn(2, 4, 5, 5)
    expected = net(x)
    fold_batchnorm(net)
    assert isinstance(net[1], nn.BatchNorm2d)
    torch.testing.assert_close(net(x), expected)


def test_folding_needs_eval_mode_and_leaves_a_training_network_training():
    from attrgan.models.inference import fold_batchnorm, inference_copy

    net = AttributeClassifier(ClassifierConfig(**SMALL)).train()
    with pytest.raises(ValueError, match="eval-mode"):
        fold_batchnorm(net)
    copy = inference_copy(net, device="cpu", memory_format=torch.contiguous_format)
    assert net.training and not copy.training
    assert any(isinstance(m, nn.BatchNorm2d) for m in net.modules())


@pytest.mark.parametrize("downsample", [False, True])
def test_small_trunk_block_is_torchvisions_basic_block(downsample):
    """Same initialisation from the same seed, same state dict and same function: small-trunk
    bundles and training runs are those of torchvision's block."""
    from torchvision.models.resnet import BasicBlock as TorchvisionBlock

    from attrgan.models.classifier import BasicBlock

    def build(cls):
        torch.manual_seed(3)
        shortcut = nn.Sequential(nn.Conv2d(8, 16, 1, stride=2, bias=False), nn.BatchNorm2d(16)) if downsample else None
        return cls(8, 16 if downsample else 8, stride=2 if downsample else 1, downsample=shortcut)

    ours, theirs = build(BasicBlock), build(TorchvisionBlock)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    assert all(torch.equal(v, theirs.state_dict()[k]) for k, v in ours.state_dict().items())
    x = torch.randn(2, 8, 12, 6)
    torch.testing.assert_close(ours(x), theirs(x), rtol=0, atol=0)
    ours.eval(), theirs.eval()
    torch.testing.assert_close(ours(x), theirs(x), rtol=0, atol=0)

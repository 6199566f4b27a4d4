"""The conditional restore-and-classify pipeline on tiny random networks (plain PyTorch, no Ray)."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from attrgan.bundle import Bundle
from attrgan.models.ops import resize_batch
from attrgan.pipeline import Pipeline, PipelineConfig
from helpers import INPUT, random_images, tiny_bundle

# One torch thread: these tests run beside Ray workers on a 2-core machine.
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def as_input(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1


@torch.inference_mode()
def probabilities(bundle: Bundle, x: torch.Tensor) -> np.ndarray:
    return torch.sigmoid(bundle.classifier(x)).numpy()


@torch.inference_mode()
def super_resolve(bundle: Bundle, x: torch.Tensor) -> torch.Tensor:
    """The SR rule by hand: area-downsample to G^S's input, G^S, resize to the classifier input."""
    low = torch.nn.functional.interpolate(x, size=(16, 8), mode="area")
    return resize_batch(bundle.superres(low), INPUT).clamp(-1, 1)


@torch.inference_mode()
def reconstruct(bundle: Bundle, x: torch.Tensor) -> torch.Tensor:
    """G^R's change at its input size (32x16), added to the crop at the classifier's size."""
    half = torch.nn.functional.interpolate(x, size=(32, 16), mode="area")
    return (x + resize_batch(bundle.reconstruction(half) - half, INPUT)).clamp(-1, 1)


def count_rows(module: torch.nn.Module) -> list[int]:
    """Record the batch size of every call to `module`."""
    seen: list[int] = []
    module.register_forward_hook(lambda _m, args, _out: seen.append(args[0].shape[0]))
    return seen


def test_outputs_shapes_dtypes_and_plain_scores():
    bundle = tiny_bundle()
    pipe = Pipeline(bundle, PipelineConfig(device="cpu", use_reconstruction=False))
    images = random_images(5)
    out = pipe(images, np.full(5, 200))
    assert out["scores"].shape == (5, 3) and out["scores"].dtype == np.float32
    assert out["decisions"].shape == (5, 3) and out["decisions"].dtype == bool
    for key in ("super_resolved", "reconstructed"):
        assert out[key].shape == (5,) and out[key].dtype == bool and not out[key].any()
    assert out["occlusion_score"].shape == (5,) and out["occlusion_score"].dtype == np.float32
    expected = probabilities(bundle, as_input(images))
    np.testing.assert_allclose(out["scores"], expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out["occlusion_score"], expected[:, 2], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(out["decisions"], expected >= 0.5)


def test_superres_only_for_small_crops():
    bundle = tiny_bundle()
    sr_rows = count_rows(bundle.superres)
    pipe = Pipeline(bundle, PipelineConfig(device="cpu", use_reconstruction=False))
    # the default rule: no taller than G^S's input (16 here), so G^S never shrinks a crop first
    assert pipe.sr_max_height == bundle.superres.config.input_size[0] == 16
    images = random_images(4)
    heights = np.array([10, 40, 16, 17])  # ≤ 16 → super-resolved
    out = pipe(images, heights)
    np.testing.assert_array_equal(out["super_resolved"], [True, False, True, False])
    assert sr_rows == [2]  # one G^S call on exactly the two small crops
    x = as_input(images)
    restored = super_resolve(bundle, x[[0, 2]])
    np.testing.assert_allclose(out["scores"][[0, 2]], probabilities(bundle, restored), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(out["scores"][[1, 3]], probabilities(bundle, x[[1, 3]]), rtol=1e-4, atol=1e-5)

    custom = Pipeline(bundle, PipelineConfig(device="cpu", use_reconstruction=False, sr_max_height=10))
    np.testing.assert_array_equal(custom(images, heights)["super_resolved"], [True, False, False, False])
    off = Pipeline(bundle, PipelineConfig(device="cpu", use_reconstruction=False, use_superres=False))
    assert not off(images, heights)["super_resolved"].any()


def test_only_rows_over_the_occlusion_threshold_are_reconstructed():
    bundle = tiny_bundle()
    images = random_images(6)
    first = probabilities(bundle, as_input(images))[:, 2]
    order = np.argsort(first)
    chosen = np.sort(order[-2:])  # the two most "occluded" rows
    threshold = float((first[order[-3]] + first[order[-2]]) / 2)

    rec_rows = count_rows(bundle.reconstruction)
    pipe = Pipeline(bundle, PipelineConfig(device="cpu", occlusion_threshold=threshold))
    out = pipe(images, np.full(6, 64))
    expected_mask = np.zeros(6, bool)
    expected_mask[chosen] = True
    np.testing.assert_array_equal(out["reconstructed"], expected_mask)
    assert rec_rows == [2]
    # occlusion_score is the first pass; the final scores of reconstructed rows are the second pass.
    np.testing.assert_allclose(out["occlusion_score"], first, rtol=1e-5, atol=1e-6)
    x = as_input(images)
    second = probabilities(bundle, reconstruct(bundle, x[chosen]))
    np.testing.assert_allclose(out["scores"][chosen], second, rtol=1e-4, atol=1e-5)
    rest = ~expected_mask
    np.testing.assert_allclose(out["scores"][rest], probabilities(bundle, x[rest]), rtol=1e-5, atol=1e-6)


def test_bundle_threshold_drives_reconstruction_and_decisions():
    # A large occlusion_down bias makes the classifier flag every crop; the bundle threshold decides.
    bundle = tiny_bundle(thresholds=[0.0, 1.0, 0.5])
    with torch.no_grad():
        bundle.classifier.body_head.bias[2] = 20.0
    images = random_images(3)
    out = Pipeline(bundle, PipelineConfig(device="cpu"))(images, np.array([64, 64, 12]))
    assert out["reconstructed"].all() and (out["occlusion_score"] > 0.99).all()
    np.testing.assert_array_equal(out["super_resolved"], [False, False, True])
    assert out["decisions"][:, 0].all()  # threshold 0 → always positive
    assert not out["decisions"][:, 1].any()  # threshold 1 → never (sigmoid < 1 at these logits)

    with torch.no_grad():
        bundle.classifier.body_head.bias[2] = -20.0
    out = Pipeline(bundle, PipelineConfig(device="cpu"))(images, np.array([64, 64, 12]))
    assert not out["reconstructed"].any()


def test_classifier_without_occlusion_down_disables_reconstruction(caplog):
    bundle = tiny_bundle(attributes=("female", "hat"))
    rec_rows = count_rows(bundle.reconstruction)
    with caplog.at_level(logging.WARNING, logger="attrgan.pipeline"):
        pipe = Pipeline(bundle, PipelineConfig(device="cpu"))
    assert "occlusion_down" in caplog.text and not pipe.use_reconstruction
    out = pipe(random_images(2), np.array([64, 64]))
    assert not out["reconstructed"].any() and np.isnan(out["occlusion_score"]).all()
    assert out["scores"].shape == (2, 2) and rec_rows == []


def test_paper_sizes_at_tiny_width():
    # The paper's geometry: classifier 320×128, G^S 80×32 → 320×128, G^R at 160×64.
    bundle = tiny_bundle(input_size=(320, 128), sr_input=(80, 32), rec_input=(160, 64), thresholds=[0.5, 0.5, 0.0])
    out = Pipeline(bundle, PipelineConfig(device="cpu"))(random_images(2, (320, 128)), np.array([70, 161]),
                                                         return_images=True)
    np.testing.assert_array_equal(out["super_resolved"], [True, False])
    assert out["reconstructed"].all()  # occlusion threshold 0
    assert out["images"].shape == (2, 320, 128, 3) and out["images"].dtype == np.uint8


def test_empty_batch_and_bad_input():
    pipe = Pipeline(tiny_bundle(), PipelineConfig(device="cpu"))
    out = pipe(random_images(0), np.zeros(0, np.int32))
    assert out["scores"].shape == (0, 3) and out["reconstructed"].shape == (0,)
    with pytest.raises(ValueError, match=r"\(N, 64, 32, 3\) uint8"):
        pipe(random_images(2, (32, 32)), np.array([10, 10]))
    with pytest.raises(ValueError, match="uint8"):
        pipe(random_images(2).astype(np.float32), np.array([10, 10]))
    with pytest.raises(ValueError, match="crop_heights"):
        pipe(random_images(2), np.array([10]))
    with pytest.raises(ValueError, match=">= 1"):
        pipe(random_images(2), np.array([10, 0]))


def test_config_validation():
    with pytest.raises(ValueError, match="occlusion_threshold"):
        PipelineConfig(occlusion_threshold=1.5)
    with pytest.raises(ValueError, match="sr_max_height"):
        PipelineConfig(sr_max_height=-1)
    with pytest.raises(ValueError, match="device"):
        Pipeline(tiny_bundle(), PipelineConfig(device="tpu"))
    with pytest.raises(ValueError, match="one per classifier attribute"):
        Pipeline(tiny_bundle(thresholds=[0.5, 0.5]), PipelineConfig(device="cpu"))


def test_resize_filters():
    x = torch.arange(16, dtype=torch.float32).view(1, 1, 4, 4).expand(1, 3, 4, 4)
    down = resize_batch(x, (2, 2))
    # area filter: each output pixel is the mean of a 2×2 block
    np.testing.assert_allclose(down[0, 0].numpy(), [[2.5, 4.5], [10.5, 12.5]])
    assert resize_batch(x, (4, 4)) is x
    assert resize_batch(x, (8, 8)).shape == (1, 3, 8, 8)


def test_a_reconstruction_that_changes_nothing_keeps_the_full_resolution_crop():
    # G^R works at half the classifier's size; only what it changes comes back, so a generator
    # that returns its input leaves the crop exactly as it was (no blur from the round trip).
    class Unchanged(torch.nn.Module):
        input_size = (32, 16)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x

    bundle = tiny_bundle()
    bundle.reconstruction = Unchanged()
    images = random_images(3)
    out = Pipeline(bundle, PipelineConfig(device="cpu", occlusion_threshold=0.0, use_superres=False))(
        images, np.full(3, 64), return_images=True)
    assert out["reconstructed"].all()
    assert np.abs(out["images"].astype(int) - images.astype(int)).max() <= 1  # float round trip only


def test_folded_batchnorm_scores_as_the_bundles_networks_and_leaves_them_as_they_were():
    bundle = tiny_bundle()
    with torch.no_grad():  # trained-looking statistics, so folding them changes the weights
        for net in (bundle.classifier, bundle.superres, bundle.reconstruction):
            for m in net.modules():
                if isinstance(m, torch.nn.BatchNorm2d):
                    m.running_mean.uniform_(-0.5, 0.5)
                    m.running_var.uniform_(0.3, 2.0)
    bundle.reconstruction.train()  # e.g. a network measured while it trains
    images = random_images(8, seed=3)
    heights = np.array([12, 200, 10, 200, 200, 16, 200, 200])  # SR for three of them (<= 16 rows)
    outs = {fold: Pipeline(bundle, PipelineConfig(device="cpu", occlusion_threshold=0.0, fold_batchnorm=fold))(
        images, heights) for fold in (True, False)}
    np.testing.assert_allclose(outs[True]["scores"], outs[False]["scores"], rtol=1e-4, atol=1e-5)
    assert outs[True]["super_resolved"].sum() == 3 and outs[True]["reconstructed"].all()
    assert bundle.reconstruction.training  # the pipeline ran copies
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in bundle.classifier.modules())

"""Training crops as the pipeline restores them: the recipe that fine-tunes a bundle's classifier
on what its generators paint (`TrainConfig.train_on: restored`).

The paper trains the classifier on clean crops and restores corrupted ones for it only at test
time, so the classifier first meets G^R's painting, haze and ghosts included, in production. This
recipe starts from the bundle's trained classifier and trains it further on clean crops mixed with
occluded crops restored by G^R and ×4 low-res crops restored by G^S (at `augment_shares`), every
label kept: the classifier learns to read what the generators paint. The corruptions are those the
generators' gains are measured on (`attrgan.train.gain.corrupted_inputs`) and the restorations the
pipeline's own, forced on (`attrgan.pipeline.forced_configs`).

Plain PyTorch and numpy, no Ray.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from attrgan.train.gain import corrupted_inputs, pipeline_outputs

if TYPE_CHECKING:
    from attrgan.bundle import Bundle
    from attrgan.pipeline import PipelineConfig


def restored_crops(bundle: Bundle, images: np.ndarray, labels: np.ndarray, crop_sizes: np.ndarray, *,
                   shares: tuple[float, float], occlusion_index: int | None, seed: int | list[int],
                   config: PipelineConfig | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each crop left clean, or corrupted and restored by the bundle's generators.

    images (N, H, W, 3) uint8 at the classifier's input size, labels (N, A) int8, crop_sizes (N, 2)
    as in `attrgan.train.data.CropSet`. A crop is occluded and reconstructed with probability
    shares[0], made ×4 low-res and super-resolved with probability shares[1], else kept; its
    labels stay, and an occluded crop's occlusion_down (column `occlusion_index`) is 1. Seeded.
    Returns (images, labels, kind (N,) int8: 0 clean, 1 reconstructed, 2 super-resolved), new arrays.
    """
    from attrgan.pipeline import Pipeline, PipelineConfig, forced_configs

    rng = np.random.default_rng(seed)
    draw = rng.random(len(images))
    kind = np.where(draw < shares[0], 1, np.where(draw < shares[0] + shares[1], 2, 0)).astype(np.int8)
    images, labels = images.copy(), labels.copy()
    configs = forced_configs(config or PipelineConfig(device="cpu"))
    for code, generator in ((1, "reconstruction"), (2, "superres")):
        chosen = np.flatnonzero(kind == code)
        if len(chosen) == 0:
            continue
        corrupted, heights = corrupted_inputs(generator, images[chosen], crop_sizes[chosen], rng)
        images[chosen] = pipeline_outputs(Pipeline(bundle, configs[generator]), corrupted, heights,
                                          return_images=True)["images"]
    if occlusion_index is not None:
        labels[kind == 1, occlusion_index] = 1
    return images, labels, kind

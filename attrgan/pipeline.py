"""The conditional restore-and-classify step of the paper's "Complete Model" (§4), on one batch.

For a batch of crops already resized to the classifier's input size:

1. crops whose ORIGINAL height is at most `sr_max_height` (default: G^S's input height, 80 —
   the paper's "only if the input image is smaller than the network input") are
   super-resolved: resized to G^S's input (80×32), G^S (→ 320×128), resized to the classifier
   input if that differs;
2. the classifier scores every crop;
3. crops whose `occlusion_down` score reaches its threshold are reconstructed: resized to G^R's
   input (160×64), G^R, and what G^R changed is resized back and added to the crop at the
   classifier's resolution (so the unoccluded upper body keeps its detail); classified again.
   The second scores are final.

Only the rows that need a GAN go through it. Plain PyTorch: no Ray, no I/O; `attrgan.extract`
wraps this in a Ray Data actor.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from attrgan.attributes import OCCLUSION_DOWN
from attrgan.contracts import GATE_RULES
from attrgan.models.inference import inference_copy
from attrgan.models.ops import full_size, resize_batch
from attrgan.precision import PRECISIONS, Precision, autocast, resolve_precision

if TYPE_CHECKING:
    from attrgan.bundle import Bundle

log = logging.getLogger(__name__)



@dataclasses.dataclass(frozen=True)
class PipelineConfig:
    """How the pipeline decides which crops to restore, and where it runs.

    sr_max_height: crops whose original height is <= this are super-resolved; None = G^S's input
        height (80 at every preset): a taller crop would be shrunk to G^S's input, losing pixels it
        has, and on the synthetic archive super-resolving clean 81-160 px crops cost 0.3 mA
        (docs/demo.md). Which crops count as low-resolution depends on the crop, not on the
        classifier's size.
    occlusion_threshold: `occlusion_down` score from which a crop is reconstructed; None = the
        bundle's (`attrgan.contracts.BundleInfo.occlusion_threshold`).
    calibrated_occlusion: with occlusion_threshold None, reconstruct from the threshold calibrated
        on the complete pipeline's validation mA (stored with G^R's gain) instead of the
        classifier's own occlusion_down threshold. Off by default: on the demo's test crops it
        read worse (docs/demo.md "The occlusion threshold").
    use_superres / use_reconstruction: switch either restoration off (e.g. for ablations).
    device: "auto" (CUDA when available), "cpu", "cuda", "cuda:1", ...
    precision: "auto" (bf16 on CUDA and on CPUs with AMX / AVX512-BF16, else fp32), "fp32" or
        "bf16" (autocast; attrgan.precision). Outputs stay float32 either way.
    channels_last: run the networks on NHWC memory (1.2-1.6x faster convolutions on oneDNN and
        what tensor cores want); False keeps NCHW.
    fold_batchnorm: run copies of the networks with each BatchNorm folded into its convolution
        (`attrgan.models.inference`: the same function, one pass over the activations fewer).
    require_proven: run a restoration only where the gain its config.json stores (measured on the
        validation split when it was trained, `attrgan.train.gain`) passes the gate; bundles without a
        stored gain run it as before. False runs every switched-on restoration.
    gate: the gate's rule (`attrgan.contracts.passes_gate`): "proven" runs a restoration only
        where its gain's 95 % interval lies above 0; "not_harmful" unless it lies below 0.
    """

    sr_max_height: int | None = None
    occlusion_threshold: float | None = None
    calibrated_occlusion: bool = False
    use_superres: bool = True
    use_reconstruction: bool = True
    device: str = "auto"
    precision: Precision = "auto"
    channels_last: bool = True
    fold_batchnorm: bool = True
    require_proven: bool = True
    # "proven": the default classifier (augmented) already reads corrupted crops near what their
    # pixels carry, so a restoration on top of it must show it helps; "not_harmful" let through two
    # that cost the demo 1.42 mA (docs/demo.md "The gate").
    gate: str = "proven"

    def __post_init__(self) -> None:
        if self.sr_max_height is not None and (not isinstance(self.sr_max_height, int) or self.sr_max_height < 0):
            raise ValueError(f"PipelineConfig.sr_max_height must be a non-negative integer or None, "
                             f"got {self.sr_max_height!r}")
        if self.occlusion_threshold is not None and not 0.0 <= self.occlusion_threshold <= 1.0:
            raise ValueError(f"PipelineConfig.occlusion_threshold must be a probability in [0, 1] or None, "
                             f"got {self.occlusion_threshold!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"PipelineConfig.precision must be one of {PRECISIONS}, got {self.precision!r}")
        if self.gate not in GATE_RULES:
            raise ValueError(f"PipelineConfig.gate must be one of {sorted(GATE_RULES)}, got {self.gate!r}")


def forced_configs(base: PipelineConfig) -> dict[str, PipelineConfig]:
    """Settings that run one restoration on every crop, derived from `base` (its device, precision).

    plain: no restoration. reconstruction: every crop reconstructed (occlusion threshold 0).
    superres: every crop super-resolved (no height limit). The gate (`require_proven`) is off:
    these settings measure a network, proven or not.
    """
    base = dataclasses.replace(base, require_proven=False)
    return {
        "plain": dataclasses.replace(base, use_superres=False, use_reconstruction=False),
        "reconstruction": dataclasses.replace(base, use_superres=False, use_reconstruction=True,
                                              occlusion_threshold=0.0),
        "superres": dataclasses.replace(base, use_superres=True, use_reconstruction=False,
                                        sr_max_height=2 ** 31 - 1),
    }


def resolve_device(device: str) -> torch.device:
    """"auto" → the first CUDA device when there is one, else CPU; anything else as given."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(device)
    except RuntimeError:
        raise ValueError(f"PipelineConfig.device must be 'auto', 'cpu' or 'cuda[:N]', got {device!r}") from None


def _generator_input(net: nn.Module, name: str) -> tuple[int, int]:
    """The (H, W) a generator takes; its output is resized to the classifier input afterwards."""
    size = getattr(net, "input_size", None)
    if size is None or len(size) != 2:
        raise ValueError(f"bundle {name} network must expose its (H, W) input_size, got {type(net).__name__}")
    return tuple(size)  # type: ignore[return-value]


def _bundle_generator(bundle: Bundle, name: str) -> nn.Module:
    """Bundle network `name` ("superres" | "reconstruction"); ValueError when the bundle has none."""
    net = getattr(bundle, name, None)
    if net is None:
        flag = "use_superres" if name == "superres" else "use_reconstruction"
        raise ValueError(f"PipelineConfig.{flag} is on but the bundle has no {name} network")
    return net


class Pipeline:
    """Super-resolve small crops, classify, reconstruct occluded crops, classify again.

    `bundle` is an `attrgan.bundle.Bundle` (classifier, superres, reconstruction, per-attribute
    `thresholds`, `version`). It runs copies of the networks, in eval mode on the configured device
    (`PipelineConfig.channels_last`, `fold_batchnorm`); the bundle's own are left untouched.

    A classifier without `occlusion_down` (e.g. one trained on PETA) cannot trigger reconstruction:
    the pipeline then runs with reconstruction off, logs a warning, and reports NaN occlusion scores.
    """

    def __init__(self, bundle: Bundle, config: PipelineConfig | None = None) -> None:
        self.config = config or PipelineConfig()
        self.device = resolve_device(self.config.device)
        self.version = str(getattr(bundle, "version", "") or "")
        self.memory_format = torch.channels_last if self.config.channels_last else torch.contiguous_format
        self.classifier = self._for_inference(bundle.classifier)
        self.attributes: tuple[str, ...] = tuple(self.classifier.config.attributes)
        self.input_size: tuple[int, int] = tuple(self.classifier.config.input_size)  # type: ignore[assignment]
        self.thresholds = np.asarray(bundle.thresholds, dtype=np.float32)  # (A,)
        if self.thresholds.shape != (len(self.attributes),):
            raise ValueError(f"bundle thresholds must be one per classifier attribute ({len(self.attributes)}), "
                             f"got shape {self.thresholds.shape}")

        # Which restorations run: switched on and, with require_proven, passing the gate on validation data.
        self.restorations = bundle.info.restorations(use_superres=self.config.use_superres,
                                                     use_reconstruction=self.config.use_reconstruction,
                                                     require_proven=self.config.require_proven,
                                                     rule=self.config.gate)
        for name, plan in self.restorations.items():
            if self.config.use_superres if name == "superres" else self.config.use_reconstruction:
                # A classifier that cannot trigger reconstruction is a warning; the gate's choices are not.
                blind = name == "reconstruction" and OCCLUSION_DOWN not in self.attributes
                level = logging.WARNING if blind else logging.INFO
                log.log(level, "%s %s: %s", name, "runs" if plan.runs else "is skipped", plan.reason)
        self.use_superres = self.restorations["superres"].runs
        self.superres: nn.Module | None = None
        if self.use_superres:
            self.superres = self._for_inference(_bundle_generator(bundle, "superres"))
            self.sr_input = _generator_input(self.superres, "superres")
        sr_input_height = (bundle.superres.config.input_size[0] if bundle.superres is not None
                           else self.input_size[0] // 4)
        self.sr_max_height = sr_input_height if self.config.sr_max_height is None else self.config.sr_max_height

        self.occlusion_index: int | None = (self.attributes.index(OCCLUSION_DOWN)
                                            if OCCLUSION_DOWN in self.attributes else None)
        self.use_reconstruction = self.restorations["reconstruction"].runs
        self.reconstruction: nn.Module | None = None
        if self.use_reconstruction:
            self.reconstruction = self._for_inference(_bundle_generator(bundle, "reconstruction"))
            self.rec_input = _generator_input(self.reconstruction, "reconstruction")
        self.occlusion_threshold = bundle.info.occlusion_threshold(self.config.occlusion_threshold,
                                                                   calibrated=self.config.calibrated_occlusion)
        # The precision actually used ("fp32" | "bf16"): run summaries record it.
        self.precision = resolve_precision(self.config.precision, self.device)

    def _for_inference(self, net: nn.Module) -> nn.Module:
        """The copy of a bundle network this pipeline runs (the bundle's own is left as it is)."""
        return inference_copy(net, device=self.device, memory_format=self.memory_format,
                              fold=self.config.fold_batchnorm)

    def __call__(self, images: np.ndarray, crop_heights: np.ndarray, *,
                 return_images: bool = False) -> dict[str, np.ndarray]:
        """Run the pipeline on one batch.

        images: (N, H, W, 3) uint8 RGB at the classifier input size (H, W).
        crop_heights: (N,) int, each crop's height in its source image before resizing (>= 1).
        Returns numpy arrays:
            scores (N, A) float32 final probabilities; decisions (N, A) bool (`scores >= threshold`);
            super_resolved (N,) bool; reconstructed (N,) bool;
            occlusion_score (N,) float32, the first-pass `occlusion_down` probability (NaN when the
            classifier has no such attribute);
            with `return_images`, also images (N, H, W, 3) uint8: what the final pass classified.
        """
        images = np.asarray(images)
        crop_heights = np.asarray(crop_heights)
        h, w = self.input_size
        if images.ndim != 4 or images.shape[1:] != (h, w, 3) or images.dtype != np.uint8:
            raise ValueError(f"Pipeline expects images as (N, {h}, {w}, 3) uint8, "
                             f"got {images.shape} {images.dtype}")
        n = images.shape[0]
        if crop_heights.shape != (n,) or not np.issubdtype(crop_heights.dtype, np.integer):
            raise ValueError(f"Pipeline expects crop_heights as ({n},) integers, "
                             f"got {crop_heights.shape} {crop_heights.dtype}")
        if n and crop_heights.min() < 1:
            raise ValueError(f"crop_heights must be >= 1 (decode errors are not for the pipeline), "
                             f"got {int(crop_heights.min())}")
        with torch.inference_mode(), autocast(self.device, self.precision):
            return self._run(images, crop_heights, return_images=return_images)

    def _run(self, images: np.ndarray, crop_heights: np.ndarray, *, return_images: bool) -> dict[str, np.ndarray]:
        n = images.shape[0]
        if n == 0:
            a = len(self.attributes)
            out = {"scores": np.zeros((0, a), np.float32), "decisions": np.zeros((0, a), bool),
                   "super_resolved": np.zeros(0, bool), "reconstructed": np.zeros(0, bool),
                   "occlusion_score": np.zeros(0, np.float32)}
            return out | ({"images": images.copy()} if return_images else {})
        # uint8 crosses to the device (4× less traffic than float), then (N, 3, H, W) float32 in [-1, 1].
        x = torch.from_numpy(np.ascontiguousarray(images)).to(self.device, non_blocking=True)
        x = x.permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0).contiguous(memory_format=self.memory_format)

        sr_mask = np.zeros(n, dtype=bool)
        if self.superres is not None:
            sr_mask = crop_heights <= self.sr_max_height
            if sr_mask.any():
                x = self._restore(x, sr_mask, self.superres, self.sr_input)

        scores = self._classify(x)  # (N, A) float32
        occlusion = (scores[:, self.occlusion_index].clone() if self.occlusion_index is not None
                     else torch.full((n,), float("nan"), device=self.device))

        rec_mask = np.zeros(n, dtype=bool)
        if self.reconstruction is not None:
            rec_mask = (occlusion >= self.occlusion_threshold).cpu().numpy()
            if rec_mask.any():
                x = self._restore(x, rec_mask, self.reconstruction, self.rec_input, as_correction=True)
                rows = torch.from_numpy(np.flatnonzero(rec_mask)).to(self.device)
                scores[rows] = self._classify(x.index_select(0, rows))

        scores_np = scores.cpu().numpy()
        out = {
            "scores": scores_np,
            "decisions": scores_np >= self.thresholds[None, :],
            "super_resolved": sr_mask,
            "reconstructed": rec_mask,
            "occlusion_score": occlusion.float().cpu().numpy(),
        }
        if return_images:
            out["images"] = ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
        return out

    def _classify(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) float in [-1, 1] → (B, A) float32 probabilities."""
        return torch.sigmoid(self.classifier(x).float())

    def _restore(self, x: torch.Tensor, mask: np.ndarray, net: nn.Module, in_size: tuple[int, int], *,
                 as_correction: bool = False) -> torch.Tensor:
        """Replace the rows of `x` selected by `mask` with `net`'s restoration of them.

        Rows go to the generator's input size (area filter), through it, and back to the classifier
        input size. With `as_correction` (a same-size generator: G^R) the restoration is brought
        back to full resolution by `full_size`: a masked G^R's paint and weight, or what it changed.
        Returns a new tensor; `x` is left untouched.
        """
        rows = torch.from_numpy(np.flatnonzero(mask)).to(self.device)
        original = x.index_select(0, rows)
        small = resize_batch(original, in_size)
        if not as_correction:
            return x.index_copy(0, rows, resize_batch(net(small).float(), self.input_size).clamp(-1, 1))
        out, layers = net(small, with_layers=True) if getattr(net, "masked", False) else (net(small), None)
        return x.index_copy(0, rows, full_size(original, small, out, layers))

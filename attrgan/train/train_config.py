"""Training settings: one frozen `TrainConfig` per run, built from a preset, a YAML file and overrides.

Presets (per network, since the paper trains the classifier and the GANs differently):

    paper      §3.1 classifier: SGD lr 1e-5, momentum 0.9, weight decay 1e-6, batch 8, ResNet50 with
               ImageNet weights when torchvision's cache holds them.
               §3.2 / §3.3 GANs: Adam β1 0.5, lr 0.002, K = 1, λ 0.1 (reconstruction) / 1 (superres),
               width 1, the paper's input sizes.
    cpu-small  laptops, tests and the demo: the "small" classifier trunk and narrow GANs, Adam with a
               larger classifier learning rate, batch 32 and few epochs, so each network learns the
               synthetic set in minutes on two CPU cores. Its generators are residual (input +
               learned correction) with U-Net skip connections: without them a narrow
               encoder-decoder blurs everything it outputs and loses to the identity / bilinear
               upsampling.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from attrgan.attributes import validate_attributes
from attrgan.config import ConfigError, load
from attrgan.contracts import DEFAULT_INPUT_SIZES, NETWORKS
from attrgan.precision import PRECISIONS

log = logging.getLogger(__name__)

PRESETS = ("paper", "cpu-small")
TRAIN_ON = ("clean", "augmented", "restored", "occluded", "lowres", "corrupted")
IMAGENET_WEIGHTS = "IMAGENET1K_V2"


@dataclasses.dataclass(frozen=True)
class GanConfig:
    """What one GAN step needs (paper §3.2, §3.3): λ of the adversarial term, the average-pool factor
    before the pixel SSE, K discriminator updates per generator update, and the adversarial form."""

    lam: float
    pool: int = 4
    d_steps: int = 1
    adversarial: Literal["paper", "non_saturating"] = "paper"
    mask_weight: float = 0.0  # a masked G^R's weight α supervised by where the occluder is (TrainConfig.mask_weight)


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Everything one training run needs besides its data and output locations."""

    model: Literal["classifier", "reconstruction", "superres"] = "classifier"
    epochs: int = 10
    batch_size: int = 32
    max_steps_per_epoch: int | None = None  # step budget per epoch (None: one pass over the data)

    # Optimiser. The classifier uses `weight_decay` as the paper's "decay"; the GANs use Adam.
    optimizer: Literal["sgd", "adam"] = "adam"
    lr: float = 2e-3
    momentum: float = 0.9  # SGD only
    betas: tuple[float, float] = (0.5, 0.999)  # Adam only
    weight_decay: float = 0.0

    # Network shape. `width` is the channel multiplier (GANs; the classifier's "small" trunk).
    width: float = 1.0
    input_size: tuple[int, int] | None = None  # None: the network's default (DEFAULT_INPUT_SIZES)

    # Classifier.
    attributes: tuple[str, ...] | None = None  # None: the manifest's label columns, in order
    backbone: Literal["resnet50", "resnet18", "small"] = "resnet50"
    weights: str | None = None  # trunk init: torchvision weights name or a local state-dict file
    occluded_fraction: float = 0.3  # share of training crops occluded on the fly (occlusion_down=1)
    # Occluded training crops also teach the other attributes (True), or only occlusion_down with
    # the rest unknown (False): guessing what the occluder hides cost 3 mA on clean crops (docs/demo.md).
    occluded_attribute_labels: bool = False
    occlusion_range: tuple[float, float] = (0.5, 0.8)  # covered fraction of the crop's height
    threshold_objective: Literal["ma", "f1"] = "ma"
    # "clean" trains the pipeline's classifier. "augmented" trains the alternative to restoration:
    # each crop kept clean, occluded or x4 low-res at `augment_shares`, all labels kept.
    # "restored" fine-tunes the bundle's trained classifier on clean crops mixed with crops its
    # generators restored, at `augment_shares` (attrgan.train.restored).
    # "occluded" / "lowres" / "corrupted" train an information ceiling instead: every training and
    # validation crop corrupted like that test set, all labels kept
    # (attrgan.train.data.corrupted_crops; `make reproduce` reports them all).
    train_on: Literal["clean", "augmented", "restored", "occluded", "lowres", "corrupted"] = "clean"
    # train_on "augmented" / "restored": the shares of crops occluded and x4 low-res; the rest stay clean.
    augment_shares: tuple[float, float] = (0.25, 0.25)

    # GANs.
    lam: float | None = None  # λ of Loss_R / Loss_S; None: the paper's (0.1 reconstruction, 1 superres)
    pool: int = 4  # average-pool factor before the pixel SSE
    d_steps: int = 1  # K: discriminator updates per generator update
    adversarial: Literal["paper", "non_saturating"] = "paper"
    residual: bool = False  # generator adds its input (bilinear-upsampled for superres); False = the paper
    skips: bool = False  # U-Net skip connections in the generator; False = the paper
    # GANs, not in the paper: weight μ of the attribute-agreement loss against the bundle's trained
    # classifier (attrgan.train.gan.AgreementLoss); 0 = the paper's Loss_R / Loss_S.
    agreement_weight: float = 0.0
    # Reconstruction only, not in the paper: G^R composites its painting with a predicted per-pixel
    # weight (attrgan.models.reconstruction), so what is visible stays; replaces `residual`.
    masked: bool = False
    # Reconstruction only, not in the paper: share of training inputs left unoccluded (target = the
    # input), so G^R learns to leave alone a crop the pipeline wrongly took for occluded.
    clean_share: float = 0.0
    # Masked reconstruction only, not in the paper: weight of a loss that teaches G^R's compositing
    # weight α where the occluder is (1 on the pixels the training occlusion changed, 0 elsewhere,
    # `attrgan.losses.mask_loss`). Without it α learns the occluder only through the pixel loss and
    # stays partial, so the occluder shows through the painting as a ghost.
    mask_weight: float = 0.0
    # GANs, not in the paper: which epoch's generator the bundle gets. "last": the last epoch's.
    # "best_gain": after every epoch the generator's validation mA gain against the bundle's
    # classifier is measured (as `attrgan.train.gain.measure_gain` measures the trained one) and the
    # epoch `attrgan.train.gain.best_epoch` picks is exported; needs the classifier in the bundle.
    select_epoch: Literal["last", "best_gain"] = "last"

    # Data.
    train_split: str = "train"
    val_split: str | None = "val"  # None: no validation (and default thresholds)
    max_train_crops: int | None = None  # cap on training crops (before sharding)

    # Distribution and numerics.
    workers: int = 1
    use_gpu: bool = False
    cpus_per_worker: float = 1.0  # fractional on small machines, so other Ray work can still run
    gpus_per_worker: float = 1.0  # only with use_gpu
    # bf16 autocast: "auto" = on CUDA and on CPUs with AMX / AVX512-BF16 (attrgan.precision).
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    max_failures: int = 2  # worker-group restarts before the run fails
    seed: int = 0
    log_every: int = 10  # steps between loss-curve points

    def __post_init__(self) -> None:
        if self.model not in NETWORKS:
            raise ConfigError(f"model must be one of {NETWORKS}, got {self.model!r}")
        for name in ("epochs", "batch_size", "workers", "pool", "d_steps", "log_every"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        for name in ("max_steps_per_epoch", "max_train_crops"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"{name} must be a positive integer or null, got {value!r}")
        if self.max_failures < 0:
            raise ConfigError(f"max_failures must be >= 0, got {self.max_failures!r}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ConfigError(f"lr must be > 0, got {self.lr!r}")
        if self.weight_decay < 0 or not 0 <= self.momentum < 1:
            raise ConfigError(f"weight_decay must be >= 0 and momentum in [0, 1), "
                              f"got {self.weight_decay!r} and {self.momentum!r}")
        if not all(0 <= b < 1 for b in self.betas):
            raise ConfigError(f"betas must be in [0, 1), got {self.betas!r}")
        if not self.width > 0:
            raise ConfigError(f"width must be > 0, got {self.width!r}")
        if self.input_size is not None and (len(self.input_size) != 2 or min(self.input_size) < 1):
            raise ConfigError(f"input_size must be (height, width), got {self.input_size!r}")
        if not 0 <= self.occluded_fraction <= 1:
            raise ConfigError(f"occluded_fraction must be in [0, 1], got {self.occluded_fraction!r}")
        low, high = self.occlusion_range
        if not 0 < low <= high < 1:
            raise ConfigError(f"occlusion_range must satisfy 0 < low <= high < 1, got {self.occlusion_range!r}")
        if self.train_on not in TRAIN_ON:
            raise ConfigError(f"train_on must be one of {', '.join(TRAIN_ON)}, got {self.train_on!r}")
        shares = self.augment_shares
        if (len(shares) != 2 or not all(isinstance(x, (int, float)) and math.isfinite(x) and x >= 0 for x in shares)
                or sum(shares) > 1):
            raise ConfigError(f"augment_shares must be two shares >= 0 (occluded, low-res) summing to at most 1, "
                              f"got {shares!r}")
        if self.lam is not None and self.lam < 0:
            raise ConfigError(f"lam must be >= 0, got {self.lam!r}")
        if not (math.isfinite(self.agreement_weight) and self.agreement_weight >= 0):
            raise ConfigError(f"agreement_weight must be >= 0, got {self.agreement_weight!r}")
        if not 0 <= self.clean_share < 1:
            raise ConfigError(f"clean_share must be in [0, 1), got {self.clean_share!r}")
        if self.clean_share and self.model != "reconstruction":
            raise ConfigError(f"clean_share applies to the reconstruction GAN, not to {self.model!r}")
        if not (math.isfinite(self.mask_weight) and self.mask_weight >= 0):
            raise ConfigError(f"mask_weight must be >= 0, got {self.mask_weight!r}")
        if self.mask_weight and not self.masked:
            raise ConfigError("mask_weight supervises a masked G^R's weight: set masked: true with it")
        if self.masked and self.model != "reconstruction":
            raise ConfigError(f"masked applies to the reconstruction GAN, not to {self.model!r}")
        if self.train_on != "clean" and self.model != "classifier":
            raise ConfigError(f"train_on applies to the classifier, not to {self.model!r}")
        if self.agreement_weight and self.model == "classifier":
            raise ConfigError("agreement_weight applies to the GANs, not to the classifier")
        if self.select_epoch not in ("last", "best_gain"):
            raise ConfigError(f"select_epoch must be last or best_gain, got {self.select_epoch!r}")
        if self.select_epoch != "last" and self.model == "classifier":
            raise ConfigError("select_epoch applies to the GANs, not to the classifier")
        if self.select_epoch == "best_gain" and self.val_split is None:
            raise ConfigError("select_epoch best_gain measures each epoch on the validation split, "
                              "but val_split is null")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if self.cpus_per_worker <= 0 or self.gpus_per_worker <= 0:
            raise ConfigError(f"cpus_per_worker and gpus_per_worker must be > 0, "
                              f"got {self.cpus_per_worker!r} and {self.gpus_per_worker!r}")
        if self.attributes is not None:
            try:
                validate_attributes(self.attributes)
            except ValueError as exc:
                raise ConfigError(f"attributes: {exc}") from None

    @property
    def network_input_size(self) -> tuple[int, int]:
        """(H, W) the trained network takes."""
        return tuple(self.input_size) if self.input_size else DEFAULT_INPUT_SIZES[self.model]  # type: ignore[return-value]

    @property
    def target_size(self) -> tuple[int, int]:
        """(H, W) of the clean images a batch is built from (4× the input for super-resolution)."""
        h, w = self.network_input_size
        return (4 * h, 4 * w) if self.model == "superres" else (h, w)

    @property
    def occluded_share(self) -> float:
        """The share of training crops the classifier sees occluded (occlusion_down = 1)."""
        return {"clean": self.occluded_fraction, "augmented": self.augment_shares[0],
                "restored": self.augment_shares[0], "occluded": 1.0, "lowres": 0.0, "corrupted": 0.5}[self.train_on]

    @property
    def adversarial_weight(self) -> float:
        """λ: the configured value, else the paper's for this network."""
        if self.lam is not None:
            return self.lam
        return 1.0 if self.model == "superres" else 0.1

    @property
    def gan(self) -> GanConfig:
        """The GAN step's settings of this run (for "reconstruction" and "superres")."""
        return GanConfig(lam=self.adversarial_weight, pool=self.pool, d_steps=self.d_steps,
                         adversarial=self.adversarial, mask_weight=self.mask_weight)

    @property
    def resources_per_worker(self) -> dict[str, float]:
        """Ray resources of one training worker."""
        resources = {"CPU": self.cpus_per_worker}
        if self.use_gpu:
            resources["GPU"] = self.gpus_per_worker
        return resources

    @property
    def torch_threads(self) -> int:
        """Intra-op threads per worker: the worker's whole CPUs (at least one)."""
        return max(1, math.ceil(self.cpus_per_worker))


def _imagenet_weights_cached() -> bool:
    """Whether torchvision's cache already holds ResNet50 ImageNet weights (no download needed)."""
    import torch
    import torchvision

    url = getattr(torchvision.models.ResNet50_Weights, IMAGENET_WEIGHTS).url
    return (Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[-1]).is_file()


def preset(name: str, model: str) -> dict[str, Any]:
    """The settings of preset `name` ("paper" | "cpu-small") for network `model`."""
    if name not in PRESETS:
        raise ConfigError(f"preset must be one of {PRESETS}, got {name!r}")
    if model not in NETWORKS:
        raise ConfigError(f"model must be one of {NETWORKS}, got {model!r}")
    values: dict[str, Any] = {"model": model}
    if name == "paper":
        if model == "classifier":
            weights = IMAGENET_WEIGHTS if _imagenet_weights_cached() else None
            if weights is None:
                log.warning("ResNet50 ImageNet weights are not in torchvision's cache; "
                            "the paper preset starts the classifier from random weights")
            values |= {"optimizer": "sgd", "lr": 1e-5, "momentum": 0.9, "weight_decay": 1e-6, "batch_size": 8,
                       "backbone": "resnet50", "weights": weights, "epochs": 30}
        else:
            values |= {"optimizer": "adam", "lr": 2e-3, "betas": (0.5, 0.999), "d_steps": 1, "batch_size": 64,
                       "width": 1.0, "epochs": 30, "lam": 0.1 if model == "reconstruction" else 1.0}
        return values
    # cpu-small: measured on 2 CPU cores, a few thousand synthetic crops.
    values |= {"batch_size": 32, "optimizer": "adam", "log_every": 5}
    if model == "classifier":
        # The paper's 320×128 input, so a ×4 low-resolution crop loses to a clean one what it
        # loses in the paper (at 160×64 bilinear upsampling already gave the classifier everything).
        values |= {"backbone": "small", "width": 0.125, "input_size": (320, 128), "lr": 3e-3,
                   "betas": (0.9, 0.999), "weight_decay": 1e-4, "epochs": 4, "occluded_fraction": 0.25}
    elif model == "reconstruction":
        values |= {"width": 0.125, "lr": 2e-3, "betas": (0.5, 0.999), "epochs": 4, "lam": 0.1, "residual": True,
                   "skips": True}
    else:
        # G^S and D^S work at 320×128: half the reconstruction width keeps them as fast.
        values |= {"width": 0.0625, "lr": 2e-3, "betas": (0.5, 0.999), "epochs": 3, "lam": 1.0, "residual": True,
                   "skips": True}
    return values


def load_train_config(model: str, *, preset_name: str = "cpu-small", path: str | Path | None = None,
                      overrides: Mapping[str, Any] | None = None) -> TrainConfig:
    """Preset ← YAML file at `path` ← `overrides` (e.g. from `parse_overrides`), validated.

    Unknown keys or bad values raise ConfigError; a file that names another `model` too.
    """
    config = load(TrainConfig, path, overrides, base=preset(preset_name, model))
    if config.model != model:
        raise ConfigError(f"the configuration trains {config.model!r} but {model!r} was asked for")
    return config


def with_values(config: TrainConfig, **values: Any) -> TrainConfig:
    """A copy of `config` with `values` replaced (None values are ignored), validated again."""
    return dataclasses.replace(config, **{k: v for k, v in values.items() if v is not None})


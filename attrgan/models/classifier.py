"""Part-based attribute classifier (paper §3.1).

The input crop is cut into four views by a 10-block rule on its height: the whole body and
three parts (head-shoulder = blocks 0–4, upper body = blocks 2–7, lower body = blocks 5–10).
Every view goes through ONE shared trunk (ResNet50 in the paper) ending in global average
pooling, so views shorter than the ImageNet size work. Two score paths follow, eq. (1):

    score_i = w_{i,b} · φ(b) + max_{p ∈ parts} w_{i,p} · φ(p)

a linear head on the body features plus, per attribute, the best of one linear head per part.
`forward_features` returns the pooled features per view; `forward_head` applies eq. (1).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from attrgan.attributes import RAP_ATTRIBUTES, validate_attributes

BACKBONES = ("resnet50", "resnet18", "small")
BODY = "body"
# Each part as [first block, end block) of the height split into 10 blocks.
PART_BLOCKS: dict[str, tuple[int, int]] = {"head_shoulder": (0, 4), "upper": (2, 7), "lower": (5, 10)}
PARTS = tuple(PART_BLOCKS)
VIEWS = (BODY,) + PARTS

# The trunks are ImageNet-style: they expect ImageNet-normalised RGB, the network input is [-1, 1].
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
WEIGHT_FILE_SUFFIXES = (".pth", ".pt", ".safetensors")


def part_rows(height: int) -> dict[str, tuple[int, int]]:
    """Row range [top, bottom) of each part of a crop `height` rows tall (the 10-block rule).

    >>> part_rows(320)
    {'head_shoulder': (0, 128), 'upper': (64, 224), 'lower': (160, 320)}
    """
    if not isinstance(height, int) or height < 10:
        raise ValueError(f"part_rows: height must be an integer >= 10 (one row per block), got {height!r}")
    return {p: (a * height // 10, b * height // 10) for p, (a, b) in PART_BLOCKS.items()}


@dataclasses.dataclass(frozen=True)
class ClassifierConfig:
    """Classifier settings.

    attributes: ordered attribute ids the model predicts (one logit each).
    backbone: "resnet50" (the paper), "resnet18", or "small" — a compact ResNet-style trunk for
        CPU runs whose channel counts are (64, 128, 256, 512) × `width`.
    width: channel multiplier, used by "small" only (must stay 1.0 for the torchvision trunks).
    input_size: (H, W) of the input crop.
    weights: initial trunk weights: None (random), a torchvision weights name for the backbone
        ("IMAGENET1K_V2" or "ResNet50_Weights.IMAGENET1K_V2"; fetched through torchvision's cache),
        or a local .pth/.pt/.safetensors state dict of the trunk (torchvision ResNet keys; `fc.*`
        ignored). A saved bundle restores the whole model and ignores this field.
    """

    attributes: tuple[str, ...] = RAP_ATTRIBUTES
    backbone: Literal["resnet50", "resnet18", "small"] = "resnet50"
    width: float = 1.0
    input_size: tuple[int, int] = (320, 128)
    weights: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "attributes", validate_attributes(self.attributes))
        object.__setattr__(self, "input_size", tuple(self.input_size))
        if self.backbone not in BACKBONES:
            raise ValueError(f"ClassifierConfig.backbone must be one of {BACKBONES}, got {self.backbone!r}")
        if not self.width > 0:
            raise ValueError(f"ClassifierConfig.width must be > 0, got {self.width!r}")
        if self.backbone != "small" and self.width != 1.0:
            raise ValueError(f"ClassifierConfig.width scales the 'small' backbone only; "
                             f"{self.backbone} needs width 1.0, got {self.width!r}")
        h_w = self.input_size
        if len(h_w) != 2 or any(not isinstance(s, int) for s in h_w) or h_w[0] < 10 or h_w[1] < 1:
            raise ValueError(f"ClassifierConfig.input_size must be (H, W) integers with H >= 10, "
                             f"got {self.input_size!r}")


class BasicBlock(nn.Module):
    """ResNet's basic block as torchvision builds it (same layers, names, order and forward), so
    small-trunk state dicts and initialisations are torchvision's. Defined here because importing
    torchvision costs ~3 s per process (it imports torch._dynamo), paid by every extraction actor;
    the torchvision trunks import it when they are built."""

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(out + identity)


class SmallTrunk(nn.Module):
    """A ResNet-style trunk small enough for CPU: 3×3 stride-2 stem and 3×3 stride-2 max pool (as
    torchvision's ResNets: the stem sees full resolution, the stages run at a quarter of it), four
    stages of one basic block each (strides 1, 2, 2, 2), global average pooling.
    (N, 3, h, w) → (N, num_features)."""

    CHANNELS = (64, 128, 256, 512)

    def __init__(self, *, width: float = 1.0) -> None:
        super().__init__()
        chans = [max(1, round(c * width)) for c in self.CHANNELS]
        self.stem = nn.Sequential(nn.Conv2d(3, chans[0], 3, stride=2, padding=1, bias=False),
                                  nn.BatchNorm2d(chans[0]), nn.ReLU(inplace=True),
                                  nn.MaxPool2d(kernel_size=3, stride=2, padding=1))
        stages: list[nn.Module] = []
        prev = chans[0]
        for c, stride in zip(chans, (1, 2, 2, 2)):
            downsample = None
            if stride != 1 or prev != c:
                downsample = nn.Sequential(nn.Conv2d(prev, c, 1, stride=stride, bias=False), nn.BatchNorm2d(c))
            stages.append(BasicBlock(prev, c, stride=stride, downsample=downsample))
            prev = c
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.num_features = prev
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.stages(self.stem(x))).flatten(1)


def _build_trunk(config: ClassifierConfig) -> tuple[nn.Module, int]:
    """The shared trunk, mapping (N, 3, h, w) ImageNet-normalised → (N, F) pooled features."""
    if config.backbone == "small":
        trunk = SmallTrunk(width=config.width)
        return trunk, trunk.num_features
    import torchvision

    resnet = getattr(torchvision.models, config.backbone)(weights=None)
    # torchvision's avgpool is already adaptive (global); dropping fc leaves the pooled features.
    num_features = resnet.fc.in_features
    resnet.fc = nn.Identity()
    return resnet, num_features


def _is_weight_file(weights: str) -> bool:
    return weights.endswith(WEIGHT_FILE_SUFFIXES) or "/" in weights or Path(weights).exists()


def _trunk_state_dict(config: ClassifierConfig) -> Mapping[str, torch.Tensor]:
    """Read `config.weights` (file or torchvision weights name) as a trunk state dict."""
    weights = str(config.weights)
    if _is_weight_file(weights):
        path = Path(weights)
        if not path.is_file():
            raise ValueError(f"ClassifierConfig.weights: no such file {weights!r}")
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(path)
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(state, Mapping):
            raise ValueError(f"ClassifierConfig.weights: {weights!r} does not hold a state dict, "
                             f"got {type(state).__name__}")
        return state
    if config.backbone == "small":
        raise ValueError(f"ClassifierConfig.weights: the 'small' backbone has no torchvision weights; "
                         f"give a local state dict file, got {weights!r}")
    import torchvision

    enum = torchvision.models.get_model_weights(config.backbone)
    name = weights.rsplit(".", 1)[-1]
    if name not in enum.__members__:
        raise ValueError(f"ClassifierConfig.weights: unknown {enum.__name__} {weights!r}; "
                         f"known: {list(enum.__members__)}")
    try:
        # Served from torchvision's cache (TORCH_HOME); fetched once where there is network.
        return enum[name].get_state_dict(progress=False)
    except OSError as exc:
        raise RuntimeError(f"ClassifierConfig.weights: could not fetch {enum.__name__}.{name} ({exc}); "
                           f"pre-fill torchvision's cache or give a local .pth/.safetensors file") from exc


def _load_trunk_weights(trunk: nn.Module, config: ClassifierConfig) -> None:
    state = {k: v for k, v in _trunk_state_dict(config).items() if not k.startswith("fc.")}
    expected = trunk.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise ValueError(f"ClassifierConfig.weights {config.weights!r} do not fit the {config.backbone} trunk: "
                         f"missing {missing[:5]}{'…' if len(missing) > 5 else ''}, "
                         f"unexpected {unexpected[:5]}{'…' if len(unexpected) > 5 else ''}")
    for key, value in state.items():
        if tuple(value.shape) != tuple(expected[key].shape):
            raise ValueError(f"ClassifierConfig.weights: tensor {key!r} has shape {tuple(value.shape)}, "
                             f"the {config.backbone} trunk expects {tuple(expected[key].shape)}")
    trunk.load_state_dict(state)


class AttributeClassifier(nn.Module):
    """Part-based classifier: (B, 3, H, W) float32 in [-1, 1] → logits (B, A), A = len(attributes).

    Probabilities are `sigmoid(logits)`. The views are crops of the input; views of equal height
    are batched into one trunk call (at 320×128: body, head-shoulder, upper+lower = 3 calls).
    In training mode the trunk's BatchNorm statistics are therefore taken over the views that
    share a call.
    """

    part_rows = staticmethod(part_rows)

    def __init__(self, config: ClassifierConfig | None = None) -> None:
        super().__init__()
        self.config = config or ClassifierConfig()
        self.trunk, self.num_features = _build_trunk(self.config)
        if self.config.weights is not None:
            _load_trunk_weights(self.trunk, self.config)
        num_attributes = len(self.config.attributes)
        self.body_head = nn.Linear(self.num_features, num_attributes)
        self.part_heads = nn.ModuleDict({p: nn.Linear(self.num_features, num_attributes) for p in PARTS})
        # Not persistent: constants of the input contract, not learned state.
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    @property
    def attributes(self) -> tuple[str, ...]:
        return self.config.attributes

    def _check_input(self, x: torch.Tensor) -> None:
        h, w = self.config.input_size
        if x.ndim != 4 or x.shape[1] != 3 or tuple(x.shape[2:]) != (h, w) or not x.is_floating_point():
            raise ValueError(f"AttributeClassifier expects a (B, 3, {h}, {w}) float tensor in [-1, 1], "
                             f"got {tuple(x.shape)} {x.dtype}")

    def forward_features(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """(B, 3, H, W) float32 in [-1, 1] → {view: (B, F) pooled trunk features} for VIEWS."""
        self._check_input(x)
        x = ((x + 1) / 2 - self.mean) / self.std
        views = {BODY: x} | {p: x[:, :, top:bottom] for p, (top, bottom) in part_rows(x.shape[2]).items()}
        by_height: dict[int, list[str]] = {}
        for name, view in views.items():
            by_height.setdefault(view.shape[2], []).append(name)
        features: dict[str, torch.Tensor] = {}
        for names in by_height.values():
            pooled = self.trunk(torch.cat([views[n] for n in names]))
            # reshape, not chunk(): chunking a symbolic batch pins it (ONNX export wants it dynamic).
            features.update(zip(names, pooled.reshape(len(names), x.shape[0], -1).unbind(0)))
        return {name: features[name] for name in VIEWS}

    def forward_head(self, features: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Eq. (1): body score + per-attribute max over the part scores. → logits (B, A)."""
        part_scores = torch.stack([self.part_heads[p](features[p]) for p in PARTS])  # (P, B, A)
        return self.body_head(features[BODY]) + part_scores.amax(dim=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

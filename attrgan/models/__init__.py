"""The paper's networks: part-based classifier, reconstruction and super-resolution GANs.

Plain PyTorch: no Ray, no I/O. `build_network` makes a network from the config dict a bundle
stores (`attrgan.bundle`), so a saved model is rebuilt without pickle.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import nn

from attrgan.config import from_dict
from attrgan.models.classifier import AttributeClassifier, ClassifierConfig, part_rows
from attrgan.models.discriminator import ReconstructionDiscriminator, SuperResDiscriminator
from attrgan.models.reconstruction import ReconstructionConfig, ReconstructionGenerator
from attrgan.models.superres import SuperResConfig, SuperResGenerator

# architecture name → (config dataclass, network class)
ARCHITECTURES: dict[str, tuple[type, type[nn.Module]]] = {
    "classifier": (ClassifierConfig, AttributeClassifier),
    "reconstruction": (ReconstructionConfig, ReconstructionGenerator),
    "superres": (SuperResConfig, SuperResGenerator),
}


def config_class(architecture: str) -> type:
    """The config dataclass of `architecture` ("classifier" | "reconstruction" | "superres")."""
    if architecture not in ARCHITECTURES:
        raise ValueError(f"architecture must be one of {sorted(ARCHITECTURES)}, got {architecture!r}")
    return ARCHITECTURES[architecture][0]


def architecture_of(model: nn.Module) -> str:
    """The architecture name of a network built by `build_network`."""
    for name, (_, cls) in ARCHITECTURES.items():
        if type(model) is cls:
            return name
    raise ValueError(f"not one of the bundled networks {sorted(ARCHITECTURES)}: got {type(model).__name__}")


def build_network(architecture: str, config_dict: Mapping[str, Any] | None = None) -> nn.Module:
    """Build a freshly initialised network from a plain config mapping (e.g. a bundle's config.json).

    Unknown keys or bad values raise `attrgan.config.ConfigError` (a ValueError).
    """
    config_cls = config_class(architecture)
    config = from_dict(config_cls, dict(config_dict or {}))
    return ARCHITECTURES[architecture][1](config)


__all__ = [
    "ARCHITECTURES",
    "AttributeClassifier",
    "ClassifierConfig",
    "ReconstructionConfig",
    "ReconstructionDiscriminator",
    "ReconstructionGenerator",
    "SuperResConfig",
    "SuperResDiscriminator",
    "SuperResGenerator",
    "architecture_of",
    "build_network",
    "config_class",
    "part_rows",
]

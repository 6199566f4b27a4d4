"""Model bundles: networks saved as safetensors + config.json, on local disk or object storage.

A network folder holds

    model.safetensors   the state dict (safetensors only: loading never runs pickle)
    config.json         {"architecture", "config", "input_size", "attributes", "thresholds",
                         "metrics", "training", "version", "weights_sha256", ...}

and a bundle folder holds one network folder each for `classifier/`, `reconstruction/` and
`superres/`. A network's `version` is a content hash of its weight file and a bundle's version
a hash of its three weight files, so every result can name exactly which models produced it.
URIs are local paths, `file://` or `s3://` (read and written through `attrgan.data.storage`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors
from torch import nn

from attrgan.config import StorageConfig, to_dict
from attrgan.data.storage import join, read_bytes, write_bytes
from attrgan.models import architecture_of, build_network

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
NETWORKS = ("classifier", "reconstruction", "superres")
VERSION_CHARS = 12


class BundleError(ValueError):
    """A bundle or network folder is missing, inconsistent or not in the expected format."""


def _plain(value: Any, where: str) -> Any:
    """`value` as JSON data: numpy arrays/scalars and tuples become lists and numbers."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, (np.ndarray, torch.Tensor)):
        return _plain(value.tolist(), where)
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    raise BundleError(f"{where} cannot be stored in {CONFIG_FILE}: {type(value).__name__} is not JSON data")


def _read(uri: str, storage: StorageConfig | None, what: str) -> bytes:
    try:
        return read_bytes(uri, storage=storage)
    except FileNotFoundError:
        raise BundleError(f"no {what} at {uri}: is this a network folder written by save_network?") from None


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def save_network(uri: str | Path, model: nn.Module, meta: Mapping[str, Any] | None = None,
                 storage: StorageConfig | None = None) -> dict[str, Any]:
    """Write `model` to `<uri>/model.safetensors` and `<uri>/config.json`; return the stored meta.

    The caller's `meta` supplies what only training knows ("thresholds" (A,), "metrics",
    "training", ...). "architecture", "config", "input_size", "attributes" (classifier),
    "version" and "weights_sha256" are filled in from the model and its weights; a caller value
    that contradicts the model raises BundleError.
    """
    uri = str(uri)
    architecture = architecture_of(model)
    config = to_dict(model.config)
    meta = dict(meta or {})
    derived: dict[str, Any] = {"architecture": architecture, "config": config,
                               "input_size": list(model.config.input_size)}
    if architecture == "classifier":
        derived["attributes"] = list(model.config.attributes)
        thresholds = meta.get("thresholds")
        if thresholds is not None and len(thresholds) != len(model.config.attributes):
            raise BundleError(f"meta['thresholds'] must have one value per attribute "
                              f"({len(model.config.attributes)}), got {len(thresholds)}")
    for key, value in derived.items():
        if key in meta and _plain(meta[key], key) != value:
            raise BundleError(f"meta[{key!r}] = {meta[key]!r} contradicts the model's {value!r}")

    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    data = save_safetensors(state, metadata={"architecture": architecture})
    digest = _digest(data)
    meta.update(derived, version=digest[:VERSION_CHARS], weights_sha256=digest)
    text = json.dumps(_plain(meta, "meta"), indent=2)
    # Weights first: config.json names their hash, so a reader never sees it ahead of them.
    write_bytes(join(uri, WEIGHTS_FILE), data, storage=storage)
    write_bytes(join(uri, CONFIG_FILE), text.encode(), storage=storage)
    return json.loads(text)


def _check_state(state: Mapping[str, torch.Tensor], model: nn.Module, weights_uri: str) -> None:
    """BundleError naming every tensor that config.json's network and the weight file disagree on."""
    expected = model.state_dict()
    # In the network's layer order, so the first problem named is the first layer that differs.
    problems = [f"missing {k} {tuple(v.shape)}" for k, v in expected.items() if k not in state]
    problems += [f"unexpected {k} {tuple(v.shape)}" for k, v in state.items() if k not in expected]
    problems += [f"{k}: {tuple(state[k].shape)} in {WEIGHTS_FILE}, {tuple(v.shape)} from {CONFIG_FILE}"
                 for k, v in expected.items() if k in state and state[k].shape != v.shape]
    if problems:
        shown = "; ".join(problems[:5]) + (f"; … {len(problems) - 5} more" if len(problems) > 5 else "")
        raise BundleError(f"{weights_uri} does not match the network {CONFIG_FILE} describes "
                          f"({len(problems)} tensor(s)): {shown}")


def load_network(uri: str | Path, storage: StorageConfig | None = None,
                 device: str | torch.device = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild a network saved by `save_network`: returns (model in eval mode on `device`, meta)."""
    uri = str(uri)
    config_uri, weights_uri = join(uri, CONFIG_FILE), join(uri, WEIGHTS_FILE)
    try:
        meta = json.loads(_read(config_uri, storage, CONFIG_FILE))
    except json.JSONDecodeError as exc:
        raise BundleError(f"{config_uri} is not valid JSON: {exc}") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("config"), dict) or "architecture" not in meta:
        raise BundleError(f"{config_uri} must be a JSON object with 'architecture' and a 'config' object")
    config = dict(meta["config"])
    if meta["architecture"] == "classifier":
        config["weights"] = None  # the saved state dict replaces any initial trunk weights
    try:
        model = build_network(meta["architecture"], config)
    except ValueError as exc:
        raise BundleError(f"{config_uri}: {exc}") from None

    data = _read(weights_uri, storage, WEIGHTS_FILE)
    try:
        state = load_safetensors(data)
    except Exception as exc:  # safetensors raises its own error types for malformed bytes
        raise BundleError(f"{weights_uri} is not a safetensors file ({exc})") from None
    _check_state(state, model, weights_uri)
    digest = _digest(data)
    if meta.get("weights_sha256", digest) != digest:
        raise BundleError(f"{weights_uri} has sha256 {digest}, but {config_uri} was written for "
                          f"{meta['weights_sha256']}: the two files come from different saves")
    model.load_state_dict(state)
    meta.update(version=digest[:VERSION_CHARS], weights_sha256=digest)
    return model.to(device).eval(), meta


def bundle_version(metas: Mapping[str, Mapping[str, Any]]) -> str:
    """Content hash of a bundle: a hash over its networks' weight hashes, in NETWORKS order."""
    text = "\n".join(f"{name}:{metas[name]['weights_sha256']}" for name in NETWORKS)
    return _digest(text.encode())[:VERSION_CHARS]


@dataclasses.dataclass
class Bundle:
    """The three networks the pipeline runs, with their stored meta (config.json) per network."""

    classifier: nn.Module
    reconstruction: nn.Module
    superres: nn.Module
    metas: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    version: str = ""  # set by save_bundle / load_bundle

    @property
    def attributes(self) -> tuple[str, ...]:
        return tuple(self.classifier.config.attributes)

    @property
    def thresholds(self) -> np.ndarray:
        """(A,) float32 decision thresholds on the classifier's probabilities; 0.5 where none stored."""
        stored = self.metas.get("classifier", {}).get("thresholds")
        if stored is None:
            return np.full(len(self.attributes), 0.5, dtype=np.float32)
        return np.asarray(stored, dtype=np.float32)

    def network(self, name: str) -> nn.Module:
        if name not in NETWORKS:
            raise ValueError(f"bundle networks are {NETWORKS}, got {name!r}")
        return getattr(self, name)


def save_bundle(uri: str | Path, bundle: Bundle, storage: StorageConfig | None = None) -> Bundle:
    """Write `<uri>/{classifier,reconstruction,superres}/`; return the bundle with stored metas and version."""
    uri = str(uri)
    metas: dict[str, dict[str, Any]] = {}
    for name in NETWORKS:
        model = bundle.network(name)
        if architecture_of(model) != name:
            raise BundleError(f"Bundle.{name} must be a {name} network, got {type(model).__name__}")
        metas[name] = save_network(join(uri, name), model, bundle.metas.get(name), storage=storage)
    return dataclasses.replace(bundle, metas=metas, version=bundle_version(metas))


def load_bundle(uri: str | Path, storage: StorageConfig | None = None, device: str | torch.device = "cpu") -> Bundle:
    """Load the three networks of the bundle at `uri` (eval mode, on `device`)."""
    uri = str(uri)
    models: dict[str, nn.Module] = {}
    metas: dict[str, dict[str, Any]] = {}
    for name in NETWORKS:
        models[name], metas[name] = load_network(join(uri, name), storage=storage, device=device)
        if metas[name]["architecture"] != name:
            raise BundleError(f"{join(uri, name)} holds a {metas[name]['architecture']!r} network, expected {name!r}")
    return Bundle(**models, metas=metas, version=bundle_version(metas))

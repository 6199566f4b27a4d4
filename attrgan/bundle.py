"""Model bundles: networks saved as safetensors + config.json, on local disk or object storage.

A network folder holds

    model.safetensors   the state dict (safetensors only: loading never runs pickle)
    config.json         {"architecture", "config", "input_size", "attributes", "thresholds",
                         "metrics", "training", "version", "weights_sha256", ...}

and a bundle folder holds one network folder each for `classifier/`, `reconstruction/` and
`superres/`. A network's `version` is a content hash of its weight file and a bundle's version
a hash of its three weight files, so every result can name exactly which models produced it.
URIs are local paths, `file://` or `s3://` (read and written through `attrgan.data.storage`).

A bundle may come from anywhere a job can read, so loading trusts nothing in it. One validator,
`check_network` (and `check_bundle` over a bundle's networks), is what every reader goes through
(the extraction's driver, its actors, `predict`, `export`, `evaluate`): config.json is at most
`MAX_CONFIG_BYTES` and `MAX_JSON_DEPTH` deep; the network it describes is built from it with the
settings' strict types, its input at most `MAX_INPUT_PIXELS`, sized on the meta device and
refused above `MAX_NETWORK_BYTES` before anything is allocated; attribute ids are at most
`MAX_ATTRIBUTES` snake_case ids that never collide with results columns; thresholds are JSON
numbers (not booleans, not strings), finite and in [0, 1]; a stored fusion is a `Fusion` record (a
known rule, one finite coefficient per quality feature) and the person-level marking distinct ids of
the classifier's attributes; the weight file is read only up to the
network's size, must match `weights_sha256`, and its tensors' shapes must be the network's. Every
refusal is a one-line `BundleError`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors
from torch import nn

from attrgan.config import StorageConfig, from_dict, to_dict
from attrgan.data.storage import ObjectRefusedError, join, read_bytes, replace_bytes, write_bytes
from attrgan.models import ARCHITECTURES, architecture_of, config_class
from attrgan.contracts import (BASE_COLUMNS, FUSION_KEY, GAIN_KEY, NETWORKS, OCCLUSION_THRESHOLD_KEY, PERSON_LEVEL_KEY,
                               TRACK_COLUMNS, VERSION_CHARS, BundleInfo, bundle_version)
from attrgan.fusion import Fusion

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
MAX_CONFIG_BYTES = 1 << 20
MAX_JSON_DEPTH = 32
MAX_NETWORK_BYTES = 1 << 30  # parameters + buffers; the paper's largest network holds ~143 MB
MAX_INPUT_PIXELS = 1 << 20  # H x W of a network's input; the paper's largest is 320 x 128 (40,960)
MAX_ATTRIBUTES = 1024  # the datasets bring 17-52
ATTRIBUTE_ID = re.compile(r"[a-z][a-z0-9_]{0,63}", re.ASCII)  # snake_case: a results column and a file-safe name
_SAFETENSORS_HEADER_BYTES = 1 << 20  # room for the weight file's JSON header beyond the tensors


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


def _read(uri: str, storage: StorageConfig | None, what: str, max_bytes: int) -> bytes:
    try:
        return read_bytes(uri, storage=storage, max_bytes=max_bytes)
    except FileNotFoundError:
        raise BundleError(f"no {what} at {uri}: is this a network folder written by save_network?") from None
    except ObjectRefusedError as exc:
        raise BundleError(f"{what} refused: {exc}") from None


def _json_depth(text: str) -> int:
    """Deepest nesting of [ and { in JSON text (brackets inside strings not counted)."""
    # Escapes first, then strings: two patterns without alternation, each linear in the text (one
    # pattern for both retried every quote of an unclosed string to the end: quadratic).
    stripped = re.sub(r'"[^"]*"', '""', re.sub(r"\\.", "", text, flags=re.DOTALL))
    steps = np.frombuffer(stripped.encode(), dtype=np.uint8)
    delta = np.isin(steps, (ord("["), ord("{"))).astype(np.int64) - np.isin(steps, (ord("]"), ord("}")))
    return int(np.cumsum(delta).max(initial=0))


def _parse_config(data: bytes, config_uri: str) -> dict[str, Any]:
    """config.json as a dict, checked for depth before the parser recurses into it."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise BundleError(f"{config_uri} is not UTF-8 text") from None
    if _json_depth(text) > MAX_JSON_DEPTH:
        raise BundleError(f"{config_uri} nests deeper than {MAX_JSON_DEPTH} levels: not a config.json written by save_network")
    try:
        meta = json.loads(text)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, or an integer over Python's digit limit
        raise BundleError(f"{config_uri} is not valid JSON: {_short(exc, 200)}") from None
    if not isinstance(meta, dict):
        raise BundleError(f"{config_uri} must be a JSON object with 'architecture' and a 'config' object")
    return meta


def _short(value: Any, n: int = 80) -> str:
    """`value` on one line and at most `n` characters: what a refusal may quote of a config.json."""
    text = " ".join(str(value).split())
    return text if len(text) <= n else text[:n] + "…"


def check_attributes(attributes: Any, where: str) -> tuple[str, ...]:
    """Attribute ids usable as results columns: distinct strings, none of them a fixed results
    column or another attribute's `<attr>_score` column."""
    if not isinstance(attributes, (list, tuple)) or not all(isinstance(a, str) and a for a in attributes):
        raise BundleError(f"{where}: attributes must be a list of non-empty strings")
    if not 1 <= len(attributes) <= MAX_ATTRIBUTES:
        raise BundleError(f"{where}: a classifier has 1 to {MAX_ATTRIBUTES} attributes, got {len(attributes)}")
    bad = [a for a in attributes if not ATTRIBUTE_ID.fullmatch(a)]
    if bad:
        raise BundleError(f"{where}: attribute ids are snake_case (a-z, 0-9, _; at most 64 characters), "
                          f"got {_short(repr(bad[0]))}")
    columns: dict[str, str] = {c: "a tracks column" for c in TRACK_COLUMNS} | {c: "a results column" for c in BASE_COLUMNS}
    for a in attributes:
        for column in (a, f"{a}_score"):
            if column in columns:
                raise BundleError(f"{where}: attribute {a!r} collides with {columns[column]} {column!r}; rename it")
            columns[column] = f"the column of attribute {a!r},"
    return tuple(attributes)


def check_thresholds(thresholds: Any, n: int, where: str) -> None:
    """Per-attribute decision thresholds: n finite numbers in [0, 1] (NaN would turn every decision off).
    Strings and booleans are refused though numpy would read them ("0.5" as 0.5, true as 1)."""
    if isinstance(thresholds, np.ndarray) and thresholds.dtype.kind in "fiu":
        thresholds = thresholds.tolist()
    if not isinstance(thresholds, (list, tuple)) or not all(
            isinstance(t, (int, float, np.integer, np.floating)) and not isinstance(t, (bool, np.bool_))
            for t in thresholds):
        raise BundleError(f"{where}: thresholds must be a list of numbers, got {_short(thresholds)}")
    try:
        values = np.asarray(thresholds, dtype=np.float64)
    except OverflowError:  # an integer beyond any float
        raise BundleError(f"{where}: thresholds must be finite and in [0, 1], got {_short(thresholds)}") from None
    if values.shape != (n,):
        got = len(values) if values.ndim == 1 else f"shape {values.shape}"
        raise BundleError(f"{where}: thresholds must have one value per attribute ({n}), got {got}")
    bad = ~(np.isfinite(values) & (values >= 0) & (values <= 1))
    if bad.any():
        raise BundleError(f"{where}: thresholds must be finite and in [0, 1], got {_short(values[bad][:5].tolist())}")


def _state_bytes(model: nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in model.state_dict().values())


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
        derived["attributes"] = list(check_attributes(list(model.config.attributes), "the classifier"))
        if meta.get("thresholds") is not None:
            check_thresholds(meta["thresholds"], len(model.config.attributes), "meta['thresholds']")
        check_fusion(_plain(meta, "meta"), derived["attributes"], "meta")
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


def _check_state(shapes: Mapping[str, tuple[int, ...]], expected: Mapping[str, tuple[int, ...]],
                 weights_uri: str) -> None:
    """BundleError naming every tensor that config.json's network and the weight file disagree on."""
    # In the network's layer order, so the first problem named is the first layer that differs.
    problems = [f"missing {k} {v}" for k, v in expected.items() if k not in shapes]
    problems += [f"unexpected {k} {v}" for k, v in shapes.items() if k not in expected]
    problems += [f"{k}: {shapes[k]} in {WEIGHTS_FILE}, {v} from {CONFIG_FILE}"
                 for k, v in expected.items() if k in shapes and shapes[k] != v]
    if problems:
        shown = "; ".join(problems[:5]) + (f"; … {len(problems) - 5} more" if len(problems) > 5 else "")
        raise BundleError(f"{weights_uri} does not match the network {CONFIG_FILE} describes "
                          f"({len(problems)} tensor(s)): {shown}")


def _check_gain(stored: Any, where: str) -> None:
    """A generator's stored validation gain (`attrgan.train.gain`): absent, or an object whose gain and
    interval bounds, where given, are numbers (the gate compares and prints them)."""
    if stored is None:
        return
    if not isinstance(stored, dict):
        raise BundleError(f"{where}: {GAIN_KEY} must be an object, got {_short(stored)}")
    for key in ("gain_ma", "low", "high"):
        if key in stored and (isinstance(stored[key], bool) or not isinstance(stored[key], (int, float))):
            raise BundleError(f"{where}: {GAIN_KEY}.{key} must be a number, got {_short(stored[key])}")
    if not isinstance(stored.get("classifier_version", ""), (str, type(None))):
        raise BundleError(f"{where}: {GAIN_KEY}.classifier_version must be a string")
    threshold = stored.get(OCCLUSION_THRESHOLD_KEY)
    if threshold is not None and (isinstance(threshold, bool) or not isinstance(threshold, (int, float))
                                  or not 0.0 <= threshold <= 1.0):
        raise BundleError(f"{where}: {GAIN_KEY}.{OCCLUSION_THRESHOLD_KEY} must be a number in [0, 1], "
                          f"got {_short(threshold)}")


def check_fusion(meta: Mapping[str, Any], attributes: tuple[str, ...], where: str) -> None:
    """A classifier's stored FUSION_KEY (absent, or a `Fusion.to_dict` record) and PERSON_LEVEL_KEY
    (absent, or distinct ids of `attributes`: the ones fused per track)."""
    if meta.get(FUSION_KEY) is not None:
        try:
            Fusion.from_dict(meta[FUSION_KEY])
        except (ValueError, TypeError, OverflowError) as exc:
            raise BundleError(f"{where}: {_short(exc, 200)}") from None  # "fusion rule must be ...", ...
    marked = meta.get(PERSON_LEVEL_KEY)
    if marked is None:
        return
    if not isinstance(marked, list) or not all(isinstance(a, str) for a in marked):
        raise BundleError(f"{where}: {PERSON_LEVEL_KEY} must be a list of attribute ids, got {_short(marked)}")
    unknown = [a for a in marked if a not in attributes]
    if unknown:
        raise BundleError(f"{where}: {PERSON_LEVEL_KEY} names {_short(repr(unknown[0]))}, "
                          "which is not an attribute of the classifier")
    if len(set(marked)) != len(marked):
        raise BundleError(f"{where}: {PERSON_LEVEL_KEY} names an attribute twice")


class _SkipInit(torch.overrides.TorchFunctionMode):
    """Weight initialisers do nothing: on the meta device there is nothing to fill, and torch's
    meta kernels for random fills import torch._dynamo (~6 s of a fresh process)."""

    INITIALISERS = frozenset({"normal_", "uniform_", "fill_", "zero_", "constant_", "ones_", "zeros_",
                              "kaiming_normal_", "kaiming_uniform_", "xavier_normal_", "xavier_uniform_",
                              "trunc_normal_", "orthogonal_"})

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        if getattr(func, "__name__", "") in self.INITIALISERS:
            return args[0] if args else kwargs["tensor"]
        return func(*args, **(kwargs or {}))


def check_meta(meta: Any, where: str) -> tuple[Any, dict[str, tuple[int, ...]], int]:
    """The check of a network's config.json: everything that can be known without its weights.

    Returns (the architecture's config dataclass, tensor name → shape, bytes of parameters and
    buffers) and fills in meta's top-level "attributes" (classifier) and "input_size" from the
    checked config; BundleError (one line) for anything else. Nothing is allocated: the network
    is built on the meta device.
    """
    if not isinstance(meta, dict) or not isinstance(meta.get("config"), dict) or "architecture" not in meta:
        raise BundleError(f"{where} must be a JSON object with 'architecture' and a 'config' object")
    architecture = meta["architecture"]
    if not isinstance(architecture, str) or architecture not in ARCHITECTURES:
        raise BundleError(f"{where}: architecture must be one of {sorted(ARCHITECTURES)}, got {_short(architecture)!r}")
    if not isinstance(meta.get("weights_sha256"), str) or not re.fullmatch(r"[0-9a-f]{64}", meta["weights_sha256"]):
        raise BundleError(f"{where} has no 'weights_sha256' (64 hex digits): the weight file cannot be checked, so it is not loaded")
    values = dict(meta["config"])
    attributes: tuple[str, ...] = ()
    if architecture == "classifier":
        values["weights"] = None  # the saved state dict replaces any initial trunk weights
        # Before the config's own checks, whose cost grows with the square of the list's length.
        attributes = check_attributes(values.get("attributes"), where)
        if "attributes" in meta and meta["attributes"] != list(attributes):
            raise BundleError(f"{where}: the top-level 'attributes' differ from the classifier config's; "
                              "a bundle has one attribute list")
        if meta.get("thresholds") is not None:
            check_thresholds(meta["thresholds"], len(attributes), where)
        check_fusion(meta, attributes, where)
    try:
        config = from_dict(config_class(architecture), values)
    except (ValueError, TypeError) as exc:
        raise BundleError(f"{where}: {_short(exc, 200)}") from None
    h, w = config.input_size
    if h * w > MAX_INPUT_PIXELS:
        raise BundleError(f"{where}: input_size {h}x{w} is over the {MAX_INPUT_PIXELS:,}-pixel limit "
                          "(the paper's classifier takes 320x128)")
    if "input_size" in meta and meta["input_size"] != [h, w]:
        raise BundleError(f"{where}: the top-level 'input_size' differs from the network config's {[h, w]}")
    _check_gain(meta.get(GAIN_KEY), where)
    try:
        with torch.device("meta"), _SkipInit():  # sized before any memory is allocated
            network = ARCHITECTURES[architecture][1](config)
    except (ValueError, TypeError, RuntimeError, OverflowError) as exc:
        raise BundleError(f"{where}: {_short(exc, 200)}") from None
    size = _state_bytes(network)
    if size > MAX_NETWORK_BYTES:
        raise BundleError(f"{where} describes a {size / 1e9:.1f} GB network, over the "
                          f"{MAX_NETWORK_BYTES / 1e9:.1f} GB limit for one network")
    meta.update(input_size=[h, w], **({"attributes": list(attributes)} if attributes else {}))
    return config, {k: tuple(v.shape) for k, v in network.state_dict().items()}, size


@dataclasses.dataclass(frozen=True)
class CheckedNetwork:
    """A network folder that passed `check_network`: its config.json (with "version" set from the
    weight file), the architecture's config, and the weights, whose shapes are the network's."""

    meta: dict[str, Any]
    config: Any
    state: dict[str, torch.Tensor]

    def build(self, device: str | torch.device = "cpu") -> nn.Module:
        """The network with these weights, in eval mode on `device`."""
        model = ARCHITECTURES[self.meta["architecture"]][1](self.config)
        model.load_state_dict(self.state)
        return model.to(device).eval()


def check_network(uri: str | Path, storage: StorageConfig | None = None) -> CheckedNetwork:
    """The one validator of a network folder (see the module docstring): config.json through
    `check_meta`, then the weight file, read up to the network's size, parsed as safetensors,
    its tensor shapes compared with the network's and its sha256 with `weights_sha256`."""
    uri = str(uri)
    config_uri, weights_uri = join(uri, CONFIG_FILE), join(uri, WEIGHTS_FILE)
    meta = _parse_config(_read(config_uri, storage, CONFIG_FILE, MAX_CONFIG_BYTES), config_uri)
    config, shapes, size = check_meta(meta, config_uri)
    data = _read(weights_uri, storage, WEIGHTS_FILE, size + _SAFETENSORS_HEADER_BYTES)
    try:
        state = load_safetensors(data)
    except Exception as exc:  # safetensors raises its own error types for malformed bytes
        raise BundleError(f"{weights_uri} is not a safetensors file ({_short(exc, 200)})") from None
    _check_state({k: tuple(v.shape) for k, v in state.items()}, shapes, weights_uri)
    digest = _digest(data)
    if meta["weights_sha256"] != digest:
        raise BundleError(f"{weights_uri} has sha256 {digest}, but {config_uri} was written for "
                          f"{meta['weights_sha256']}: the two files come from different saves")
    meta.update(version=digest[:VERSION_CHARS])
    return CheckedNetwork(meta=meta, config=config, state=state)


def load_network(uri: str | Path, storage: StorageConfig | None = None,
                 device: str | torch.device = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild a network saved by `save_network`: returns (model in eval mode on `device`, meta)."""
    checked = check_network(uri, storage)
    return checked.build(device), checked.meta


def check_bundle(uri: str | Path, storage: StorageConfig | None = None,
                 networks: tuple[str, ...] = NETWORKS) -> dict[str, CheckedNetwork]:
    """The one validator of a bundle: each of `networks` through `check_network`, each holding the
    architecture its folder names. Every job runs it before any other work."""
    checked = {}
    for name in networks:
        checked[name] = check_network(join(str(uri), name), storage)
        if checked[name].meta["architecture"] != name:
            raise BundleError(f"{join(str(uri), name)} holds a {checked[name].meta['architecture']!r} network, "
                              f"expected {name!r}")
    return checked


def bundle_info(uri: str, storage: StorageConfig | None = None) -> BundleInfo:
    """The metadata of a bundle `check_bundle` accepts, without building its networks: what a
    job's driver checks and plans a run with."""
    return BundleInfo.from_metas({name: checked.meta for name, checked in check_bundle(uri, storage).items()})


def store_fusion(uri: str, fusion: Fusion, person_level: tuple[str, ...], *, bundle_version: str,
                 storage: StorageConfig | None = None) -> bool:
    """Write `fusion` and the `person_level` marking into the classifier's config.json of the bundle at
    `uri` (the weights are not touched, so no version changes); only while the bundle is still the
    `bundle_version` the fusion was fitted on (a network trained meanwhile fits its own). Returns
    whether it was stored."""
    checked = check_bundle(uri, storage)
    if BundleInfo.from_metas({n: c.meta for n, c in checked.items()}).version != bundle_version:
        return False
    update_meta(join(str(uri), "classifier"), {FUSION_KEY: fusion.to_dict(), PERSON_LEVEL_KEY: list(person_level)},
                storage=storage)
    return True


def update_meta(network_uri: str, values: Mapping[str, Any], *, storage: StorageConfig | None = None) -> None:
    """Set `values` in the config.json of the network at `network_uri`, checked as loading checks it.
    Only metadata changes: the weights, and so the versions, stay. The file is replaced whole
    (`replace_bytes`): actors loading the bundle meanwhile read the old meta or the new."""
    config_uri = join(str(network_uri), CONFIG_FILE)
    meta = _parse_config(_read(config_uri, storage, CONFIG_FILE, MAX_CONFIG_BYTES), config_uri)
    meta.update(values)
    check_meta(json.loads(json.dumps(_plain(meta, "meta"))), config_uri)
    replace_bytes(config_uri, json.dumps(_plain(meta, "meta"), indent=2).encode(), storage=storage)


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
    def info(self) -> BundleInfo:
        """The stored metadata, with the classifier's attributes (a bundle not saved yet has none stored)."""
        classifier = {**self.metas.get("classifier", {}), "attributes": list(self.attributes)}
        return BundleInfo.from_metas({**self.metas, "classifier": classifier})

    @property
    def thresholds(self) -> np.ndarray:
        """(A,) float32 decision thresholds on the classifier's probabilities; 0.5 where none stored."""
        stored = self.info.thresholds
        if not stored:
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
    """Load the three networks of the bundle at `uri` (eval mode, on `device`), all checked first."""
    checked = check_bundle(uri, storage)
    metas = {name: c.meta for name, c in checked.items()}
    return Bundle(**{name: c.build(device) for name, c in checked.items()}, metas=metas, version=bundle_version(metas))

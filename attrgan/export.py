"""Export a model bundle as ONNX, for serving the networks outside Python.

    attrgan export --bundle s3://models/attrgan/v1 --out exported/v1 [--set opset=18 ...]

writes `<out>/{classifier,reconstruction,superres}/` with `model.onnx` and `config.json` (the
bundle's config.json plus an "onnx" section: file, opset, input and output names and shapes,
and the checked difference). Each network is exported with a dynamic batch dimension, then run
by onnxruntime (CPU) on a random batch beside PyTorch; the largest absolute difference is
recorded and an export that differs by more than `tolerance` fails.

The networks keep the bundle's input contract: (N, 3, H, W) float32 RGB in [-1, 1]. The
classifier returns logits (probabilities = sigmoid(logits), decisions = probabilities >=
the config's thresholds); the generators return images in [-1, 1]. The pipeline's rules (which
crops are super-resolved or reconstructed) stay with the caller (attrgan.pipeline). A masked
G^R is exported as its composite at its own input size; the pipeline instead composites its paint
and weight over the full-size crop (`attrgan.pipeline.full_size`), which the ONNX model does not
expose, so outside callers add its change resized up (not yet the pipeline's compositing).

Needs the `export` extra: pip install 'attrgan[export]' (onnx, onnxruntime, onnxscript). The
command's flags live with the others in attrgan.cli (`attrgan export --help`); `python
jobs/export.py` is the same command.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import logging
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from attrgan.bundle import check_bundle
from attrgan.contracts import NETWORKS, BundleInfo
from attrgan.config import ConfigError, StorageConfig
from attrgan.data import storage as st

log = logging.getLogger(__name__)

MODEL_FILE = "model.onnx"
CONFIG_FILE = "config.json"
INPUT_NAME = "images"
OUTPUT_NAMES = {"classifier": "logits", "reconstruction": "restored", "superres": "restored"}
EXTRA_MODULES = ("onnx", "onnxruntime", "onnxscript")  # pyproject.toml's `export` extra


class ExportError(RuntimeError):
    """An exported network disagrees with PyTorch."""


class ExportToolsMissing(ConfigError):
    """The `export` extra is not installed: a setup problem, found before any work (exit 2 in the CLI)."""


def require_export_tools() -> None:
    """Raise ExportToolsMissing, naming the pip install, unless onnx, onnxruntime and onnxscript import."""
    missing = []
    for name in EXTRA_MODULES:
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    if missing:
        raise ExportToolsMissing(f"ONNX export needs the export extra ({', '.join(missing)} not installed): "
                                 "pip install 'attrgan[export]' (in a checkout: pip install -e '.[export]')")


@dataclasses.dataclass(frozen=True)
class ExportConfig:
    """networks: which bundle networks to export; opset: ONNX opset version; check_batch: crops
    in the onnxruntime check; tolerance: largest absolute difference to PyTorch accepted."""

    networks: tuple[str, ...] = NETWORKS
    opset: int = 18
    check_batch: int = 3
    tolerance: float = 1e-3

    def __post_init__(self) -> None:
        unknown = sorted(set(self.networks) - set(NETWORKS))
        if unknown or not self.networks:
            raise ConfigError(f"networks must be a non-empty subset of {NETWORKS}, got {list(self.networks)}")
        if self.opset < 18:
            raise ConfigError(f"opset must be >= 18 (what torch's ONNX exporter writes), got {self.opset}")
        if self.check_batch < 1:
            raise ConfigError(f"check_batch must be >= 1, got {self.check_batch}")
        if not self.tolerance > 0:
            raise ConfigError(f"tolerance must be > 0, got {self.tolerance}")


def _onnx_bytes(net: torch.nn.Module, example: torch.Tensor, *, output: str, opset: int) -> bytes:
    """The ONNX model of `net` (eval, CPU) with a dynamic batch dimension, as bytes."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / MODEL_FILE
        torch.onnx.export(net, (example,), str(path), input_names=[INPUT_NAME], output_names=[output],
                          dynamic_shapes={"x": {0: torch.export.Dim("batch", min=1)}}, opset_version=opset,
                          dynamo=True, external_data=False, verbose=False)
        return path.read_bytes()


def max_abs_difference(model: bytes, net: torch.nn.Module, x: torch.Tensor) -> float:
    """Largest |onnxruntime(model)(x) - net(x)| on the CPU."""
    import onnxruntime

    session = onnxruntime.InferenceSession(model, providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {INPUT_NAME: x.numpy()})
    with torch.inference_mode():
        expected = net(x).numpy()
    if got.shape != expected.shape:
        raise ExportError(f"onnxruntime returned shape {got.shape}, PyTorch {expected.shape}")
    return float(np.abs(got - expected).max())


def export_bundle(bundle_uri: str, out_dir: str, *, storage: StorageConfig | None = None,
                  config: ExportConfig | None = None) -> dict[str, Any]:
    """Export the bundle at `bundle_uri` to `out_dir` (local or s3://); see the module docstring.

    Returns {"bundle", "out", "networks": {name: {"uri", "bytes", "max_abs_diff", "input_shape",
    "output"}}}. Raises ExportError when a network differs from PyTorch by more than the tolerance,
    ExportToolsMissing when the export extra is not installed.
    """
    require_export_tools()
    config = config or ExportConfig()
    storage = storage or StorageConfig.from_env()
    checked = check_bundle(bundle_uri, storage, networks=config.networks)  # refused whole, before any export
    results: dict[str, Any] = {}
    sizes = BundleInfo.from_metas({name: c.meta for name, c in checked.items()}).input_sizes
    for name in config.networks:
        net, meta = checked[name].build("cpu"), checked[name].meta
        h, w = sizes[name]
        generator = torch.Generator().manual_seed(0)
        example = torch.rand(2, 3, h, w, generator=generator) * 2 - 1
        output = OUTPUT_NAMES[name]
        model = _onnx_bytes(net, example, output=output, opset=config.opset)
        # A batch size other than the traced one: the batch dimension must really be dynamic.
        check = torch.rand(config.check_batch, 3, h, w, generator=generator) * 2 - 1
        diff = max_abs_difference(model, net, check)
        if not diff <= config.tolerance:
            raise ExportError(f"{name}: onnxruntime differs from PyTorch by {diff:.3g} (> tolerance "
                              f"{config.tolerance:g}); the export is not written")
        uri = st.join(out_dir, name)
        st.write_bytes(st.join(uri, MODEL_FILE), model, storage)
        onnx_meta = {"file": MODEL_FILE, "opset": config.opset,
                     "input": {"name": INPUT_NAME, "shape": ["batch", 3, h, w], "dtype": "float32",
                               "layout": "NCHW RGB in [-1, 1]"},
                     "output": {"name": output, "dtype": "float32",
                                "meaning": "logits: probabilities = sigmoid(logits)" if name == "classifier"
                                else "images in [-1, 1]"},
                     "max_abs_diff": diff, "checked_batch": config.check_batch}
        st.write_bytes(st.join(uri, CONFIG_FILE), json.dumps(meta | {"onnx": onnx_meta}, indent=2).encode(), storage)
        results[name] = {"uri": uri, "bytes": len(model), "max_abs_diff": diff, "input_shape": [h, w],
                         "output": output}
        log.info("exported %s to %s (max abs difference %.3g)", name, uri, diff)
    return {"bundle": bundle_uri, "out": out_dir, "networks": results}


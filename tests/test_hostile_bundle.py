"""Bundles written by someone else: every odd config.json is a BundleError, before any large allocation."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hostile import write_json

from attrgan.bundle import MAX_CONFIG_BYTES, BundleError, load_network, save_network
from attrgan.models import AttributeClassifier, ClassifierConfig, SuperResConfig, SuperResGenerator


@pytest.fixture
def saved(tmp_path):
    """A saved superres network folder and its config.json body."""
    save_network(tmp_path / "n", SuperResGenerator(SuperResConfig(width=0.0625)))
    return tmp_path / "n", json.loads((tmp_path / "n" / "config.json").read_text())


def classifier(attributes):
    return AttributeClassifier(ClassifierConfig(attributes=attributes, backbone="small", width=0.125,
                                                input_size=(80, 32)))


@pytest.mark.parametrize("bad", [float("nan"), -1.0, 2.0, 1e308, float("inf")])
def test_thresholds_finite_and_in_unit_range(tmp_path, bad):
    with pytest.raises(BundleError, match=r"thresholds must be finite and in \[0, 1\]"):
        save_network(tmp_path / "c", classifier(("a", "b")), {"thresholds": [0.5, bad]})
    save_network(tmp_path / "c", classifier(("a", "b")), {"thresholds": [0.5, 0.5]})
    meta = json.loads((tmp_path / "c" / "config.json").read_text())
    meta["thresholds"] = [0.5, bad]
    (tmp_path / "c" / "config.json").write_text(json.dumps(meta))  # NaN/Infinity as Python's json writes them
    with pytest.raises(BundleError, match=r"thresholds must be finite and in \[0, 1\]"):
        load_network(tmp_path / "c")


def test_weights_sha256_is_required(saved):
    folder, meta = saved
    del meta["weights_sha256"]
    write_json(folder / "config.json", meta)
    with pytest.raises(BundleError, match="has no 'weights_sha256'"):
        load_network(folder)


@pytest.mark.parametrize("attributes", [("hat", "hat_score"), ("status", "hat"), ("occlusion",), ("crop_id",)])
def test_attributes_that_collide_with_results_columns(tmp_path, attributes):
    with pytest.raises(BundleError, match="collides with"):
        save_network(tmp_path / "c", classifier(attributes))
    save_network(tmp_path / "c", classifier(("x", "y")))
    meta = json.loads((tmp_path / "c" / "config.json").read_text())
    meta["config"]["attributes"] = meta["attributes"] = list(attributes)
    write_json(tmp_path / "c" / "config.json", meta)
    with pytest.raises(BundleError, match="collides with"):
        load_network(tmp_path / "c")


def test_one_attribute_list_per_bundle(tmp_path):
    save_network(tmp_path / "c", classifier(("x", "y")))
    meta = json.loads((tmp_path / "c" / "config.json").read_text())
    meta["attributes"] = ["y", "x"]
    write_json(tmp_path / "c" / "config.json", meta)
    with pytest.raises(BundleError, match="top-level 'attributes' differ from the classifier config's"):
        load_network(tmp_path / "c")


@pytest.mark.parametrize("change", [
    {"architecture": ["superres"]}, {"architecture": None}, {"config": {"width": "wide"}},
    {"config": {"width": [1]}}, {"config": {"width": True}}, {"config": {"nonsense": 1}},
])
def test_odd_types_are_bundle_errors(saved, change):
    folder, meta = saved
    meta.update(change)
    write_json(folder / "config.json", meta)
    with pytest.raises(BundleError):
        load_network(folder)


def test_deep_and_large_configs_are_refused_before_parsing(saved):
    folder, _ = saved
    (folder / "config.json").write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(BundleError, match="nests deeper than 32 levels"):
        load_network(folder)
    (folder / "config.json").write_text('{"pad": "' + "x" * MAX_CONFIG_BYTES + '"}')
    with pytest.raises(BundleError, match="config.json refused: .* over the 1048576-byte limit"):
        load_network(folder)
    (folder / "config.json").write_bytes(b"\xff\xfe{}")
    with pytest.raises(BundleError, match="not UTF-8"):
        load_network(folder)


def test_network_over_the_budget_is_refused_before_allocating(saved):
    import resource

    folder, meta = saved
    meta["config"]["width"] = 8  # ~9 GB of parameters
    write_json(folder / "config.json", meta)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(BundleError, match=r"describes a 9\.\d GB network, over the 1\.1 GB limit"):
        load_network(folder)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 200_000  # KiB: nothing allocated


def test_weight_file_larger_than_the_network_is_refused(saved):
    folder, meta = saved
    with open(folder / "model.safetensors", "ab") as f:
        f.write(np.zeros(2 << 20, np.uint8).tobytes())
    with pytest.raises(BundleError, match="model.safetensors refused: .* over the .*-byte limit"):
        load_network(folder)

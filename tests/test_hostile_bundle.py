"""Bundles written by someone else: every odd config.json is a BundleError, before any large allocation."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
from helpers import tiny_bundle
from hostile import write_json
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from attrgan.bundle import MAX_CONFIG_BYTES, BundleError, load_network, save_network
from attrgan.fusion import QUALITY_FEATURES, Fusion
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


# --- One validator for the driver, the actors, predict, export and evaluate ----------------------


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory):
    """A saved bundle of tiny random networks, and its three config.json bodies as saved."""
    from attrgan.bundle import save_bundle

    bundle = tiny_bundle(metas={"classifier": {"thresholds": [0.5, 0.5, 0.5], "person_level": ["female", "hat"],
                                               "fusion": Fusion("quality", (-2.0, 0.5, 0.0, 0.0)).to_dict()}})
    path = tmp_path_factory.mktemp("bundle") / "bundle"
    save_bundle(path, bundle)
    return path, {n: (path / n / "config.json").read_text() for n in ("classifier", "reconstruction", "superres")}


def _refused_alike(path, match):
    """The driver's pre-flight and the actors' loader refuse `path` with the same one-line BundleError."""
    from attrgan.bundle import bundle_info, load_bundle

    with pytest.raises(BundleError, match=match) as driver:
        bundle_info(str(path))
    with pytest.raises(BundleError) as actor:
        load_bundle(path)
    assert str(driver.value) == str(actor.value) and "\n" not in str(driver.value)


@pytest.mark.parametrize(("network", "change", "match"), [
    ("classifier", {"thresholds": [0.5, float("nan"), 0.5]}, r"thresholds must be finite and in \[0, 1\]"),
    ("classifier", {"thresholds": ["0.5", "0.5", "0.5"]}, "thresholds must be a list of numbers"),
    ("classifier", {"thresholds": [True, False, 0.5]}, "thresholds must be a list of numbers"),
    ("classifier", {"attributes": ["../../etc", "hat", "occlusion_down"],
                    "config.attributes": ["../../etc", "hat", "occlusion_down"]}, "attribute ids are snake_case"),
    ("classifier", {"config.width": 2000.0}, r"describes a .* GB network, over the 1\.1 GB limit"),
    ("classifier", {"input_size": [60000, 60000], "config.input_size": [60000, 60000]}, "over the 1,048,576-pixel"),
    ("superres", {"config.width": 1e15}, "superres/config.json"),
    ("classifier", {"config.attributes": [f"a{i}" for i in range(5000)]}, "1 to 1024 attributes"),
    ("reconstruction", {"validation_gain": {"gain_ma": 0.1, "low": "x"}}, "validation_gain.low must be a number"),
    ("classifier", {"fusion": {"rule": "median"}}, "fusion coefficients must name exactly"),
    ("classifier", {"fusion": {"rule": "median", "coefficients": dict.fromkeys(QUALITY_FEATURES, 0)}},
     "fusion rule must be one of"),
    ("classifier", {"fusion": {"rule": "quality", "coefficients": dict.fromkeys(QUALITY_FEATURES, 10**400)}},
     "fusion coefficients must be 4 finite numbers"),
    ("classifier", {"fusion": ["mean"]}, "fusion must be a mapping"),
    ("classifier", {"person_level": ["female", "backpack"]}, "person_level names 'backpack', which is not an attribute"),
    ("classifier", {"person_level": "female"}, "person_level must be a list of attribute ids"),
    ("classifier", {"person_level": ["hat", "hat"]}, "person_level names an attribute twice"),
])
def test_bundle_findings_are_refused_by_the_driver_and_the_actors_alike(bundle_dir, network, change, match):
    path, saved = bundle_dir
    meta = json.loads(saved[network])
    for key, value in change.items():
        *parents, leaf = key.split(".")
        node = meta
        for p in parents:
            node = node[p]
        node[leaf] = value
    try:
        write_json(path / network / "config.json", meta)
        _refused_alike(path, match)
    finally:
        (path / network / "config.json").write_text(saved[network])


def test_a_refused_bundle_stops_extract_before_ray_and_predict_before_decoding(bundle_dir, tmp_path, capsys,
                                                                                monkeypatch):
    import attrgan.extract
    from attrgan import cli

    path, saved = bundle_dir
    meta = json.loads(saved["classifier"])
    meta["thresholds"] = [0.5, "NaN", 0.5]
    monkeypatch.setattr(attrgan.extract, "init_ray", lambda: pytest.fail("Ray started for a refused bundle"))
    try:
        write_json(path / "classifier" / "config.json", meta)
        (tmp_path / "m").mkdir()
        (tmp_path / "x.png").write_bytes(b"")
        for argv in (["extract", "--manifest", str(tmp_path / "m"), "--bundle", str(path), "--out", str(tmp_path / "o")],
                     ["predict", str(tmp_path / "x.png"), "--bundle", str(path)]):
            with pytest.raises(SystemExit) as exit_:
                cli.main(argv)
            err = capsys.readouterr().err.strip()
            assert exit_.value.code == 2 and len(err.splitlines()) == 1, err
            assert err.startswith(f"attrgan {argv[0]}: error: ") and "thresholds must be a list of numbers" in err
    finally:
        (path / "classifier" / "config.json").write_text(saved["classifier"])


# Values a hand-edited or hostile config.json might hold.
_json = st.recursive(
    st.none() | st.booleans() | st.integers(-(10**30), 10**30) | st.floats(allow_nan=True, allow_infinity=True)
    | st.sampled_from(["", "0.5", "../../etc", "hat", "female", "NaN", "small", "resnet50", "classifier", "x" * 300])
    | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8)
_paths = st.sampled_from([
    ("thresholds",), ("attributes",), ("input_size",), ("architecture",), ("weights_sha256",), ("version",),
    ("config",), ("config", "width"), ("config", "input_size"), ("config", "attributes"), ("config", "backbone"),
    ("config", "weights"), ("config", "residual"), ("config", "scale"), ("config", "masked"), ("validation_gain",),
    ("validation_gain", "gain_ma"), ("validation_gain", "low"), ("validation_gain", "classifier_version"),
    ("thresholds", 0), ("config", "input_size", 0), ("config", "attributes", 1), ("extra",), ("fusion",),
    ("fusion", "rule"), ("fusion", "coefficients"), ("person_level",), ("person_level", 0)])
_sized = st.sampled_from([[64, 32], [32, 16], [16, 8], [64, 16], [10, 1], [80, 32], [2048, 2048]])


def _set(meta, keys, value):
    """meta[k0][k1]... = value where the path's parents exist (an int key is a list index)."""
    node = meta
    for k in keys[:-1]:
        ok = isinstance(node, dict) and isinstance(k, str) or isinstance(node, list) and isinstance(k, int) and k < len(node)
        node = node[k] if ok and not isinstance(node, dict) else node.get(k) if ok else None
    last = keys[-1]
    if isinstance(node, dict) and isinstance(last, str) or isinstance(node, list) and isinstance(last, int) and last < len(node):
        # A copy: sampled_from hands out the same list each time, and setting it inside itself
        # (thresholds, then thresholds[0]) would make the meta circular, which no JSON file can be.
        node[last] = copy.deepcopy(value)


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(network=st.sampled_from(["classifier", "reconstruction", "superres"]),
       mutations=st.lists(st.tuples(_paths, _json | _sized), min_size=1, max_size=3))
def test_mutated_bundle_metadata_is_refused_clearly_or_loads(bundle_dir, network, mutations):
    """Any change to a network's config.json: BundleError from the validator, or a bundle that loads
    and runs the pipeline; never another exception."""
    from attrgan.bundle import bundle_info, load_bundle
    from attrgan.pipeline import Pipeline, PipelineConfig

    path, saved = bundle_dir
    meta = json.loads(saved[network])
    for keys, value in mutations:
        _set(meta, keys, value)
    try:
        (path / network / "config.json").write_text(json.dumps(meta))
        try:
            version = bundle_info(str(path)).version
        except BundleError as exc:
            assert "\n" not in str(exc) and len(str(exc)) < 600, str(exc)
            return
        bundle = load_bundle(path)
        assert bundle.version == version
        assert Fusion.from_bundle_info(bundle.info).rule in ("mean", "quality", "max", "best")  # what it stores reads back
        pipe = Pipeline(bundle, PipelineConfig(device="cpu"))
        h, w = pipe.input_size
        out = pipe(np.zeros((1, h, w, 3), np.uint8), np.array([h]))
        assert out["scores"].shape == (1, len(bundle.attributes))
    finally:
        (path / network / "config.json").write_text(saved[network])

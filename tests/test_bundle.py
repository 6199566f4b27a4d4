"""Model bundles: safetensors + config.json round trips, locally and through S3, and clear errors."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from attrgan.bundle import Bundle, BundleError, bundle_info, load_bundle, load_network, save_bundle, save_network
from attrgan.models import (
    AttributeClassifier,
    ClassifierConfig,
    ReconstructionConfig,
    ReconstructionDiscriminator,
    ReconstructionGenerator,
    SuperResConfig,
    SuperResGenerator,
)

ATTRS = ("female", "hat", "skirt", "occlusion_down")


def small_bundle() -> Bundle:
    torch.manual_seed(0)
    return Bundle(
        classifier=AttributeClassifier(ClassifierConfig(attributes=ATTRS, backbone="small", width=0.125,
                                                        input_size=(80, 32))),
        reconstruction=ReconstructionGenerator(ReconstructionConfig(width=0.0625)),
        superres=SuperResGenerator(SuperResConfig(width=0.0625)),
        metas={"classifier": {"thresholds": np.array([0.5, 0.4, 0.6, 0.7]),
                              "metrics": {"mA": np.float64(71.5)}, "training": {"epochs": 2}}},
    )


def perturb_batchnorm(model: torch.nn.Module) -> None:
    """Non-default running statistics, so the round trip is checked on buffers too."""
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)


def outputs(bundle: Bundle) -> dict[str, torch.Tensor]:
    torch.manual_seed(1)
    with torch.inference_mode():
        return {
            "classifier": bundle.classifier.eval()(torch.rand(2, 3, 80, 32) * 2 - 1),
            "reconstruction": bundle.reconstruction.eval()(torch.rand(2, 3, 160, 64) * 2 - 1),
            "superres": bundle.superres.eval()(torch.rand(2, 3, 80, 32) * 2 - 1),
        }


def test_network_round_trip_gives_identical_outputs(tmp_path):
    model = ReconstructionGenerator(ReconstructionConfig(width=0.0625)).eval()
    perturb_batchnorm(model)
    meta = save_network(tmp_path / "g_r", model, {"training": {"steps": 10}})
    assert sorted(p.name for p in (tmp_path / "g_r").iterdir()) == ["config.json", "model.safetensors"]
    assert meta["architecture"] == "reconstruction" and meta["input_size"] == [160, 64]
    assert meta["config"] == {**dataclasses.asdict(model.config), "input_size": [160, 64]}
    assert meta["config"]["width"] == 0.0625
    assert len(meta["version"]) == 12 and meta["weights_sha256"].startswith(meta["version"])

    loaded, loaded_meta = load_network(tmp_path / "g_r")
    assert not loaded.training
    assert loaded_meta == meta
    x = torch.rand(2, 3, 160, 64) * 2 - 1
    with torch.inference_mode():
        assert torch.equal(model(x), loaded(x))


def test_bundle_round_trip_and_content_version(tmp_path):
    bundle = small_bundle()
    for net in (bundle.classifier, bundle.reconstruction, bundle.superres):
        perturb_batchnorm(net)
    saved = save_bundle(tmp_path / "bundle", bundle)
    for name in ("classifier", "reconstruction", "superres"):
        assert (tmp_path / "bundle" / name / "model.safetensors").is_file()
    stored = json.loads((tmp_path / "bundle" / "classifier" / "config.json").read_text())
    assert stored["attributes"] == list(ATTRS) and stored["thresholds"] == [0.5, 0.4, 0.6, 0.7]
    assert stored["metrics"] == {"mA": 71.5} and stored["config"]["backbone"] == "small"

    loaded = load_bundle(tmp_path / "bundle")
    assert loaded.version == saved.version and len(saved.version) == 12
    info = bundle_info(str(tmp_path / "bundle"))  # from the config files alone
    assert info.version == saved.version and info.attributes == ATTRS and info.input_size == loaded.classifier.config.input_size
    assert info.thresholds == (0.5, 0.4, 0.6, 0.7) and info == loaded.info
    assert loaded.attributes == ATTRS
    np.testing.assert_allclose(loaded.thresholds, [0.5, 0.4, 0.6, 0.7])
    before, after = outputs(bundle), outputs(loaded)
    for name in before:
        assert torch.equal(before[name], after[name]), name

    # Same weights → same version; any weight change → a new one.
    assert save_bundle(tmp_path / "again", bundle).version == saved.version
    with torch.no_grad():
        bundle.superres.head[0].bias.add_(1e-3)
    assert save_bundle(tmp_path / "changed", bundle).version != saved.version


def test_config_disagreeing_with_weights_names_the_tensor(tmp_path):
    save_network(tmp_path / "g_r", ReconstructionGenerator(ReconstructionConfig(width=0.0625)))
    config_path = tmp_path / "g_r" / "config.json"
    meta = json.loads(config_path.read_text())
    meta["config"]["width"] = 0.125  # 4 → 8 channels in the first conv
    config_path.write_text(json.dumps(meta))
    with pytest.raises(BundleError, match=r"encoder\.0\.0\.weight: \(4, 3, 5, 5\) in model\.safetensors, "
                                          r"\(8, 3, 5, 5\) from config\.json"):
        load_network(tmp_path / "g_r")

    meta["architecture"] = "superres"
    meta["config"], meta["input_size"] = {"width": 0.0625}, [80, 32]
    config_path.write_text(json.dumps(meta))
    with pytest.raises(BundleError, match=r"missing decoder\.4\.0\.weight \(8, 8, 5, 5\)"):
        load_network(tmp_path / "g_r")


def test_weights_from_another_save_are_refused(tmp_path):
    save_network(tmp_path / "a", ReconstructionGenerator(ReconstructionConfig(width=0.0625)))
    save_network(tmp_path / "b", ReconstructionGenerator(ReconstructionConfig(width=0.0625)))
    (tmp_path / "a" / "model.safetensors").write_bytes((tmp_path / "b" / "model.safetensors").read_bytes())
    with pytest.raises(BundleError, match="come from different saves"):
        load_network(tmp_path / "a")


def test_non_safetensors_weights_are_refused(tmp_path):
    model = ReconstructionGenerator(ReconstructionConfig(width=0.0625))
    save_network(tmp_path / "g_r", model)
    torch.save(model.state_dict(), tmp_path / "g_r" / "model.safetensors")  # a pickle under the right name
    with pytest.raises(BundleError, match=r"model\.safetensors is not a safetensors file"):
        load_network(tmp_path / "g_r")


def test_missing_and_malformed_folders(tmp_path):
    with pytest.raises(BundleError, match="no config.json at"):
        load_network(tmp_path / "nothing")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "config.json").write_text("{not json")
    with pytest.raises(BundleError, match="not valid JSON"):
        load_network(tmp_path / "bad")
    (tmp_path / "bad" / "config.json").write_text(json.dumps({"architecture": "detector", "config": {}}))
    with pytest.raises(BundleError, match="architecture must be one of"):
        load_network(tmp_path / "bad")


def test_save_refuses_meta_that_contradicts_the_model(tmp_path):
    clf = AttributeClassifier(ClassifierConfig(attributes=ATTRS, backbone="small", width=0.125, input_size=(80, 32)))
    with pytest.raises(BundleError, match="contradicts"):
        save_network(tmp_path / "c", clf, {"attributes": ["female", "hat"]})
    with pytest.raises(BundleError, match=r"one value per attribute \(4\), got 2"):
        save_network(tmp_path / "c", clf, {"thresholds": [0.5, 0.5]})
    with pytest.raises(BundleError, match="not JSON data"):
        save_network(tmp_path / "c", clf, {"training": {"started": object()}})
    with pytest.raises(ValueError, match="not one of the bundled networks"):
        save_network(tmp_path / "d", ReconstructionDiscriminator(width=0.0625))
    bundle = small_bundle()
    bundle.superres, bundle.reconstruction = bundle.reconstruction, bundle.superres
    with pytest.raises(BundleError, match="Bundle.reconstruction must be a reconstruction network"):
        save_bundle(tmp_path / "swapped", bundle)


def test_bundle_round_trip_through_s3(storage, s3_bucket):
    bundle = small_bundle()
    uri = f"s3://{s3_bucket}/models/run-1"
    saved = save_bundle(uri, bundle, storage=storage)
    loaded = load_bundle(uri, storage=storage)
    assert loaded.version == saved.version
    assert loaded.metas["classifier"]["training"] == {"epochs": 2}
    before, after = outputs(bundle), outputs(loaded)
    for name in before:
        assert torch.equal(before[name], after[name]), name


@pytest.mark.gpu
def test_bundle_loads_onto_cuda(tmp_path):
    bundle = small_bundle()
    save_bundle(tmp_path / "bundle", bundle)
    loaded = load_bundle(tmp_path / "bundle", device="cuda")
    assert next(loaded.classifier.parameters()).device.type == "cuda"
    x = torch.rand(2, 3, 80, 32) * 2 - 1
    with torch.inference_mode():
        torch.testing.assert_close(loaded.classifier(x.cuda()).cpu(), bundle.classifier.eval()(x),
                                   atol=1e-3, rtol=1e-3)
        torch.testing.assert_close(loaded.superres(x.cuda()).cpu(), bundle.superres.eval()(x), atol=1e-3, rtol=1e-3)


def test_update_meta_replaces_the_config_whole_so_a_reader_sees_the_old_file_or_the_new(tmp_path):
    from attrgan.bundle import update_meta
    from attrgan.contracts import GAIN_KEY
    from helpers import tiny_bundle

    save_bundle(tmp_path / "bundle", tiny_bundle())
    config = tmp_path / "bundle" / "reconstruction" / "config.json"
    record = {"gain_ma": 0.01, "low": 0.001, "high": 0.02}
    with open(config, "rb") as reader:  # e.g. an actor loading the bundle while training regates it
        update_meta(str(config.parent), {GAIN_KEY: record})
        old = json.loads(reader.read())  # rewritten in place, this read would see the new file or a cut one
    assert GAIN_KEY not in old
    assert json.loads(config.read_text())[GAIN_KEY] == record
    assert load_bundle(tmp_path / "bundle").metas["reconstruction"][GAIN_KEY] == record
    assert sorted(p.name for p in config.parent.iterdir()) == ["config.json", "model.safetensors"]

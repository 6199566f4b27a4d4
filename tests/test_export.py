"""ONNX export of a bundle: a round trip through onnxruntime (CPU) at small widths."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from attrgan.attributes import OCCLUSION_DOWN
from attrgan.bundle import Bundle, save_bundle
from attrgan.contracts import NETWORKS
from attrgan.config import ConfigError
from attrgan import cli
from attrgan.export import ExportConfig, ExportToolsMissing, export_bundle
from attrgan.models import (AttributeClassifier, ClassifierConfig, ReconstructionConfig, ReconstructionGenerator,
                            SuperResConfig, SuperResGenerator)

onnxruntime = pytest.importorskip("onnxruntime")
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def bundle_uri(tmp_path) -> str:
    torch.manual_seed(0)
    bundle = Bundle(
        classifier=AttributeClassifier(ClassifierConfig(attributes=("female", "hat", OCCLUSION_DOWN), backbone="small",
                                                        width=1 / 16, input_size=(64, 32))).eval(),
        reconstruction=ReconstructionGenerator(ReconstructionConfig(width=1 / 32, input_size=(32, 16),
                                                                    residual=True, skips=True)).eval(),
        superres=SuperResGenerator(SuperResConfig(width=1 / 64, input_size=(16, 8), residual=True)).eval(),
        metas={"classifier": {"thresholds": [0.4, 0.5, 0.6]}})
    save_bundle(str(tmp_path / "bundle"), bundle)
    return str(tmp_path / "bundle")


def test_job_writes_each_network_as_onnx_that_matches_pytorch(bundle_uri, tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("export_job", Path(__file__).resolve().parents[1] / "jobs/export.py")
    export_job = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(export_job)

    out = tmp_path / "onnx"
    export_job.main(["--bundle", bundle_uri, "--out", str(out), "--set", "check_batch=2"])
    printed = capsys.readouterr().out
    from attrgan.bundle import load_bundle

    bundle = load_bundle(bundle_uri)
    for name in NETWORKS:
        assert f"{name}" in printed and "max abs difference" in printed
        config = json.loads((out / name / "config.json").read_text())
        assert config["architecture"] == name and config["onnx"]["max_abs_diff"] < 1e-4
        h, w = config["input_size"]
        assert config["onnx"]["input"]["shape"] == ["batch", 3, h, w]
        # Another batch size than the export and check used: the batch dimension is dynamic.
        x = np.random.default_rng(1).uniform(-1, 1, (5, 3, h, w)).astype(np.float32)
        session = onnxruntime.InferenceSession(str(out / name / "model.onnx"), providers=["CPUExecutionProvider"])
        (got,) = session.run(None, {config["onnx"]["input"]["name"]: x})
        with torch.inference_mode():
            expected = bundle.network(name)(torch.from_numpy(x)).numpy()
        np.testing.assert_allclose(got, expected, atol=1e-4)
    assert json.loads((out / "classifier" / "config.json").read_text())["thresholds"] == [0.4, 0.5, 0.6]


def test_export_of_one_network_and_bad_settings(bundle_uri, tmp_path):
    result = export_bundle(bundle_uri, str(tmp_path / "one"), config=ExportConfig(networks=("superres",)))
    assert list(result["networks"]) == ["superres"] and result["networks"]["superres"]["output"] == "restored"
    assert not (tmp_path / "one" / "classifier").exists()
    with pytest.raises(ConfigError, match="networks"):
        ExportConfig(networks=("discriminator",))
    with pytest.raises(ConfigError, match="opset"):
        ExportConfig(opset=11)


def test_cli_export_takes_its_flags_and_names_the_missing_extra(bundle_uri, tmp_path, monkeypatch, capsys):
    """`attrgan export --bundle B --out O --set ...` as the README writes it; without the export
    extra it stops before loading the bundle with one line naming the pip install, exit 2."""
    cli.main(["export", "--bundle", bundle_uri, "--out", str(tmp_path / "one"), "--set", "networks=classifier",
              "--set", "check_batch=1"])
    assert capsys.readouterr().out.startswith("classifier ") and (tmp_path / "one/classifier/model.onnx").is_file()
    assert not (tmp_path / "one" / "superres").exists()
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # `import onnxruntime` now fails as if not installed
    with pytest.raises(SystemExit) as exit_:
        cli.main(["export", "--bundle", str(tmp_path / "missing"), "--out", str(tmp_path / "two")])
    err = capsys.readouterr().err.strip()
    assert exit_.value.code == 2 and err == ("attrgan export: error: ONNX export needs the export extra (onnxruntime "
                                             "not installed): pip install 'attrgan[export]' (in a checkout: "
                                             "pip install -e '.[export]')")
    with pytest.raises(ExportToolsMissing, match="onnxruntime"):
        export_bundle(bundle_uri, str(tmp_path / "three"))

"""`make gpu-check` on a machine without CUDA, and the figures it derives (the run itself needs a GPU)."""

from __future__ import annotations

import pytest

from attrgan.devtools import gpu_check


def test_without_cuda_it_does_nothing_and_exits_2(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(gpu_check.torch.cuda, "is_available", lambda: False)
    out = tmp_path / "figures.json"
    assert gpu_check.main(["--out", str(out)]) == gpu_check.NO_CUDA_EXIT == 2
    assert "no CUDA device" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize("name, peak", [("NVIDIA H100 80GB HBM3", 989.0), ("NVIDIA H100 PCIe", 756.0),
                                        ("NVIDIA H200", 989.0), ("NVIDIA A100-SXM4-80GB", 312.0),
                                        ("NVIDIA L4", 121.0), ("NVIDIA L40S", 362.0), ("Tesla T4", None)])
def test_peak_table_matches_the_most_specific_name(name, peak):
    assert gpu_check.peak_bf16_tflops(name) == peak


@pytest.mark.gpu
def test_classifier_share_of_peak_on_the_gpu(tmp_path):
    from attrgan.devtools.bench.extract import make_bundle
    from attrgan.bundle import save_bundle

    save_bundle(str(tmp_path / "b"), make_bundle(paper=True))
    out = gpu_check.classifier_share(str(tmp_path / "b"), peak_tflops=989.0, extraction_rate_per_gpu=1000.0,
                                     batch=32, iters=2)
    # ResNet50 over four views of 320x128 (~1.9x a 224x224 ResNet50's 8.2 GFLOPs).
    assert 10 < out["gflops_per_crop"] < 30
    assert 0 < out["bare_share_of_peak"] < 1 and out["extraction_share_of_peak"] == pytest.approx(
        1000.0 * out["gflops_per_crop"] * 1e9 / 989e12, rel=0.01)

"""`make gpu-check`: the GPU paths checked in one command on a machine with NVIDIA GPUs.

    python -m attrgan.devtools.gpu_check [--out gpu-check.json] [--steps 20] [--crops 20000] [--peak-tflops N]

In order, each stage's figures written to the JSON file as soon as it ends (so a stage that
fails or runs out of time leaves the others' figures):

1. the `gpu`-marked tests (pytest -m gpu): bf16 autocast on CUDA in the pipeline and training;
2. training: each network at the `paper` preset for a bounded number of steps on every GPU
   (Ray Train, DDP over NCCL, bf16 autocast) on synthetic crops (attrgan.data.synth);
3. extraction: `run_extract` with one GPU actor per GPU on `--crops` synthetic crop rows (one in
   four low-resolution, so G^S runs too), with the bundle trained in 2: crops/s in all and per GPU,
   GPU utilisation sampled every 0.5 s (pynvml, else nvidia-smi);
4. the classifier's FLOPs per crop (torch.utils.flop_counter) and its share of the GPU's dense
   bf16 peak: bare (batch 256, bf16, channels_last, BatchNorm folded) and within the extraction's rate.

About 4 minutes on one H100-class GPU (target: under 8). On a machine without CUDA it does
nothing and exits with code 2. Exit code 1 when any stage failed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

NO_CUDA_EXIT = 2
# Dense bf16 tensor-core peak in TFLOPS by GPU name (vendor data sheets, SXM parts unless named);
# the longest matching key wins. --peak-tflops overrides.
PEAK_BF16_TFLOPS: dict[str, float] = {
    "H200": 989.0, "H100": 989.0, "H100 PCIe": 756.0, "H100 NVL": 835.0, "H800": 989.0, "GH200": 989.0,
    "B200": 2250.0, "A100": 312.0, "A800": 312.0, "A10G": 70.0, "A10": 125.0, "L40S": 362.0, "L40": 181.0,
    "L4": 121.0, "RTX 4090": 165.0, "RTX 6000 Ada": 364.0,
}


def peak_bf16_tflops(gpu_name: str) -> float | None:
    """The dense bf16 peak of the GPU called `gpu_name` (e.g. "NVIDIA H100 80GB HBM3"), or None."""
    matches = [k for k in PEAK_BF16_TFLOPS if k.lower() in gpu_name.lower()]
    return PEAK_BF16_TFLOPS[max(matches, key=len)] if matches else None


class GpuSampler:
    """Samples every GPU's utilisation (%) and memory (MiB) in a thread while in a `with` block."""

    def __init__(self, interval_s: float = 0.5) -> None:
        self.interval_s = interval_s
        self.samples: list[list[tuple[float, float]]] = []  # per sample: (util %, MiB) per GPU
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._read = self._reader()

    @staticmethod
    def _reader() -> Callable[[], list[tuple[float, float]]] | None:
        try:
            import pynvml

            pynvml.nvmlInit()
            handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(pynvml.nvmlDeviceGetCount())]
            return lambda: [(float(pynvml.nvmlDeviceGetUtilizationRates(h).gpu),
                             pynvml.nvmlDeviceGetMemoryInfo(h).used / 2**20) for h in handles]
        except Exception:  # no pynvml or no NVML: fall back to nvidia-smi
            pass
        if shutil.which("nvidia-smi") is None:
            return None

        def smi() -> list[tuple[float, float]]:
            out = subprocess.run(["nvidia-smi", "--query-gpu=utilization.gpu,memory.used",
                                  "--format=csv,noheader,nounits"], capture_output=True, text=True, timeout=5).stdout
            return [tuple(float(v) for v in line.split(",")) for line in out.strip().splitlines()]  # type: ignore[misc]
        return smi

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.samples.append(self._read())  # type: ignore[misc]
            except Exception:
                pass

    def __enter__(self) -> GpuSampler:
        if self._read is not None:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def summary(self) -> list[dict[str, float]] | str:
        """Per GPU: mean and max utilisation (%), max memory (MiB) over the samples."""
        if self._read is None:
            return "no pynvml and no nvidia-smi: utilisation not sampled"
        if not self.samples:
            return "no samples"
        per_gpu = list(zip(*self.samples))
        return [{"gpu": i, "util_mean_pct": round(statistics.mean(u for u, _ in s), 1),
                 "util_max_pct": max(u for u, _ in s), "memory_max_mib": max(m for _, m in s),
                 "samples": len(s)} for i, s in enumerate(per_gpu)]


def run_gpu_tests(timeout_s: int = 300) -> dict[str, Any]:
    """pytest -m gpu over the test suite; {"returncode", "summary", "seconds"}."""
    start = time.perf_counter()
    env = os.environ | {"RAY_AUTH_MODE": "disabled"}
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider", "tests"],
                          capture_output=True, text=True, timeout=timeout_s, env=env)
    lines = proc.stdout.strip().splitlines()
    print(proc.stdout[-3000:], flush=True)
    if proc.returncode not in (0, 5):  # 5: nothing collected
        raise RuntimeError(f"gpu tests failed (exit {proc.returncode}): {lines[-1] if lines else proc.stderr[-500:]}")
    return {"returncode": proc.returncode, "summary": lines[-1] if lines else "",
            "seconds": round(time.perf_counter() - start, 1)}


def train_networks(manifest: str, bundle: str, *, gpus: int, steps: int) -> dict[str, Any]:
    """Each network at the paper preset for `steps` steps on every GPU (DDP over NCCL, bf16)."""
    from attrgan.contracts import NETWORKS
    from attrgan.train.train_config import load_train_config
    from attrgan.train.ray_train import train_network

    out: dict[str, Any] = {}
    cpus = max(1.0, min(4.0, (os.cpu_count() or 2) / (2 * gpus)))
    for model in NETWORKS:
        config = load_train_config(model, preset_name="paper", overrides={
            "epochs": 1, "max_steps_per_epoch": steps, "workers": gpus, "use_gpu": True, "gpus_per_worker": 1.0,
            "cpus_per_worker": cpus, "precision": "bf16", "log_every": 5})
        start = time.perf_counter()
        result = train_network(config, manifest=manifest, bundle=bundle, run_name=f"gpu-check-{model}")
        wall = time.perf_counter() - start
        metrics = {k: v for k, v in result.metrics.items() if isinstance(v, (int, float))}
        out[model] = {"wall_s": round(wall, 1), "batch_size": config.batch_size, "workers": gpus,
                      "images_per_s": metrics.get("images_per_s"), "steps": metrics.get("step"),
                      "metrics": metrics}
        print(f"[gpu-check] trained {model}: {metrics.get('step')} steps, "
              f"{metrics.get('images_per_s', float('nan')):.1f} images/s on {gpus} GPU(s), {wall:.0f} s", flush=True)
    return out


def extract(root: Path, bundle: str, *, gpus: int, crops: int, batch_size: int) -> dict[str, Any]:
    """`run_extract` with one GPU actor per GPU over `crops` synthetic rows."""
    from attrgan.devtools.bench.extract import make_manifest
    from attrgan.extract import ExtractConfig, run_extract
    from attrgan.pipeline import PipelineConfig

    copies = 5
    manifest = make_manifest(root / "extract", max(1, crops // copies), copies=copies)
    config = ExtractConfig(manifest=manifest, bundle=bundle, out=str(root / "results"), actors=gpus, min_actors=gpus,
                           gpus_per_actor=1.0, batch_size=batch_size, incremental=False,
                           pipeline=PipelineConfig(device="auto", precision="auto"))
    with GpuSampler() as sampler:
        summary = run_extract(config)
    rate = summary.crops_per_s
    print(f"[gpu-check] extraction: {summary.rows:,} crops in {summary.seconds:.1f} s, {rate:.0f} crops/s, "
          f"{rate / gpus:.0f} per GPU; super-resolved {summary.super_resolved}, reconstructed "
          f"{summary.reconstructed}", flush=True)
    return {"rows": summary.rows, "seconds": round(summary.seconds, 1), "crops_per_s": round(rate, 1),
            "crops_per_s_per_gpu": round(rate / gpus, 1), "errors": summary.errors,
            "super_resolved": summary.super_resolved, "reconstructed": summary.reconstructed,
            "batch_size": batch_size, "gpu_utilisation": sampler.summary()}


def classifier_share(bundle: str, *, peak_tflops: float | None, extraction_rate_per_gpu: float | None,
                     batch: int = 256, iters: int = 20) -> dict[str, Any]:
    """The classifier's FLOPs per crop, its bare bf16 rate on GPU 0 and both rates' share of the peak."""
    from torch.utils.flop_counter import FlopCounterMode

    from attrgan.bundle import load_network
    from attrgan.contracts import BundleInfo
    from attrgan.data import storage as st
    from attrgan.models.inference import inference_copy
    from attrgan.precision import autocast

    net, meta = load_network(st.join(bundle, "classifier"), device="cpu")
    net = inference_copy(net, device="cuda", memory_format=torch.channels_last)  # as the pipeline runs it
    h, w = BundleInfo.from_metas({"classifier": meta}).input_size
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        net(torch.zeros(1, 3, h, w, device="cuda"))
    flops = counter.get_total_flops()  # per crop (a multiply-add counts 2)
    x = (torch.rand(batch, 3, h, w, device="cuda") * 2 - 1).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode(), autocast("cuda", "bf16"):
        for _ in range(3):
            net(x)
        torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(iters):
            net(x)
        torch.cuda.synchronize()
    bare = batch * iters / (time.perf_counter() - start)
    peak = peak_tflops * 1e12 if peak_tflops else None
    out = {"gflops_per_crop": round(flops / 1e9, 2), "bare_crops_per_s": round(bare, 1),
           "bare_tflops": round(bare * flops / 1e12, 1), "peak_bf16_tflops": peak_tflops, "batch": batch}
    if peak:
        out["bare_share_of_peak"] = round(bare * flops / peak, 4)
        if extraction_rate_per_gpu:
            out["extraction_share_of_peak"] = round(extraction_rate_per_gpu * flops / peak, 4)
    print(f"[gpu-check] classifier: {flops / 1e9:.1f} GFLOPs per crop; bare bf16 {bare:.0f} crops/s = "
          f"{bare * flops / 1e12:.1f} TFLOPS" + (f" ({100 * bare * flops / peak:.1f} % of the {peak_tflops:g} TFLOPS "
                                                  f"bf16 peak)" if peak else " (peak unknown: pass --peak-tflops)"),
          flush=True)
    return out


@contextlib.contextmanager
def _stage(report: dict[str, Any], name: str, out: Path) -> Iterator[dict[str, Any]]:
    """Record a stage's figures (or its error) and its seconds in `report`, then write the file."""
    start = time.perf_counter()
    holder: dict[str, Any] = {}
    print(f"\n[gpu-check] == {name} ==", flush=True)
    try:
        yield holder
        report[name] = holder.get("result")
    except Exception as exc:  # a failed stage must not hide the others' figures
        traceback.print_exc()
        report[name] = {"error": f"{type(exc).__name__}: {exc}"}
        report["failed"].append(name)
    report.setdefault("stage_seconds", {})[name] = round(time.perf_counter() - start, 1)
    out.write_text(json.dumps(report, indent=2, default=str))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m attrgan.devtools.gpu_check", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="gpu-check.json", help="JSON file for the figures")
    parser.add_argument("--steps", type=int, default=20, help="training steps per network")
    parser.add_argument("--train-crops", type=int, default=1600, help="synthetic training crops to render")
    parser.add_argument("--crops", type=int, default=20_000, help="crop rows in the extraction")
    parser.add_argument("--batch-size", type=int, default=256, help="extraction batch size")
    parser.add_argument("--peak-tflops", type=float, default=None,
                        help="the GPU's dense bf16 peak (TFLOPS) when its name is not in the table")
    parser.add_argument("--skip-tests", action="store_true", help="skip the gpu-marked tests")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not torch.cuda.is_available():
        print("gpu-check: no CUDA device (torch.cuda.is_available() is False): run it on a machine with an "
              "NVIDIA GPU and its driver. Nothing was done.", file=sys.stderr)
        return NO_CUDA_EXIT
    import ray

    from attrgan.data.synth import generate
    from attrgan.ray_setup import start_local_ray

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    gpus = torch.cuda.device_count()
    name = torch.cuda.get_device_name(0)
    peak = args.peak_tflops or peak_bf16_tflops(name)
    out = Path(args.out).resolve()
    report: dict[str, Any] = {
        "host": platform.node(), "gpus": [torch.cuda.get_device_name(i) for i in range(gpus)],
        "torch": torch.__version__, "cuda": torch.version.cuda, "cpus": os.cpu_count(),
        "peak_bf16_tflops": peak, "settings": vars(args), "failed": []}
    started = time.perf_counter()
    print(f"[gpu-check] {gpus} x {name} (bf16 peak {peak or 'unknown'} TFLOPS), torch {torch.__version__} "
          f"CUDA {torch.version.cuda}; figures to {out}", flush=True)
    if not args.skip_tests:
        with _stage(report, "gpu_tests", out) as stage:
            stage["result"] = run_gpu_tests()
    with tempfile.TemporaryDirectory(prefix="attrgan-gpu-check-") as tmp:
        root = Path(tmp)
        bundle = str(root / "bundle")
        # This machine's GPUs are what is checked: a Ray of its own, whatever RAY_ADDRESS says.
        start_local_ray(log_to_driver=True)
        try:
            with _stage(report, "training", out) as stage:
                manifest = generate(str(root / "synth"), args.train_crops, splits=(0.9, 0.1, 0.0))
                stage["result"] = train_networks(manifest, bundle, gpus=gpus, steps=args.steps)
            if "training" in report["failed"]:
                # The extraction needs a bundle: random weights at the paper's sizes check the same paths.
                from attrgan.devtools.bench.extract import make_bundle
                from attrgan.bundle import save_bundle

                save_bundle(bundle, make_bundle(paper=True))
            with _stage(report, "extraction", out) as stage:
                stage["result"] = extract(root, bundle, gpus=gpus, crops=args.crops, batch_size=args.batch_size)
        finally:
            ray.shutdown()
        with _stage(report, "classifier", out) as stage:
            per_gpu = (report.get("extraction") or {}).get("crops_per_s_per_gpu")
            stage["result"] = classifier_share(bundle, peak_tflops=peak, extraction_rate_per_gpu=per_gpu)
    report["total_seconds"] = round(time.perf_counter() - started, 1)
    out.write_text(json.dumps(report, indent=2, default=str))
    verdict = f"FAILED stages: {report['failed']}" if report["failed"] else "all stages passed"
    print(f"\n[gpu-check] {verdict} in {report['total_seconds']:.0f} s; figures in {out}", flush=True)
    return 1 if report["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())

"""End-to-end extraction in fp32 and in the precision the pipeline picks ("auto"), side by side,
at the paper's widths and at the `cpu-small` preset's.

    python -m attrgan.devtools.bench --only precision [--quick]

For each preset, on one set of synthetic JPEG crops (three in four full size, one in four
low-resolution, as in the extract section; a few hundred at the paper's widths): `run_extract`
with `PipelineConfig(precision="fp32", channels_last=False, fold_batchnorm=False)` (the networks
as plain fp32 NCHW modules) and with the default `PipelineConfig()` (auto: BatchNorm folded,
channels_last, bf16 where `attrgan.precision` finds it), alternating `repeats` times on one local
Ray (medians), after one warm-up run; and the same two pipelines in this process on the first
128 crops (1,024 at cpu-small), pre-decoded, after each end-to-end run (the bare-model rate each
end-to-end run is held against). Batch 32 at the paper's widths, the extract section's 64 at
cpu-small. Rates are crops/s over the whole run (start-up included) and in
steady state (`attrgan.devtools.bench.extract.steady_state`: while the actors are busy, the rate a
night's run approaches).

    targets: end to end auto >= 2.5 x fp32 at the paper's widths, >= 1.4 x at cpu-small;
             each end-to-end rate >= 0.85 x its own bare-model rate.
"""

from __future__ import annotations

import statistics
import tempfile
from pathlib import Path

import numpy as np
import torch

from attrgan.devtools.bench.extract import E2E_SETTINGS, _batches, end_to_end, local_ray, make_bundle, make_manifest
from attrgan.bundle import load_bundle, save_bundle
from attrgan.data.images import decode_image, resize
from attrgan.pipeline import Pipeline, PipelineConfig
from attrgan.precision import resolve_precision

SETTINGS = {"fp32": PipelineConfig(precision="fp32", channels_last=False, fold_batchnorm=False),
            "auto": PipelineConfig()}
TARGETS = {True: 2.5, False: 1.4}  # auto / fp32 end to end, by paper widths or not
PAPER_BATCH = 32  # a few hundred crops still make several batches per actor
# Crops of the bare-model rate, by paper widths or not: a few seconds of work at either.
BARE_CROPS = {True: 128, False: 1024}


def _bare_rate(pipe: Pipeline, images: np.ndarray, heights: np.ndarray, batch: int) -> float:
    """Crops/s of `pipe` over pre-decoded crops, after a two-batch warm-up."""
    import time

    pipe(images[:2 * batch], heights[:2 * batch])
    start = time.perf_counter()
    for s in _batches(len(images), batch):
        pipe(images[s], heights[s])
    return len(images) / (time.perf_counter() - start)


def _preset(paper: bool, n: int, repeats: int) -> dict[str, dict[str, float]]:
    """{setting: {"steady", "whole", "startup", "bare"}} for one preset: the settings alternate
    `repeats` times, end to end and bare (medians)."""
    batch = PAPER_BATCH if paper else E2E_SETTINGS["batch_size"]
    settings = E2E_SETTINGS | {"batch_size": batch}
    runs: dict[str, dict[str, list[float]]] = {s: {"steady": [], "whole": [], "startup": [], "bare": []}
                                               for s in SETTINGS}
    label = "paper" if paper else "cpu-small"
    with tempfile.TemporaryDirectory(prefix="attrgan-bench-precision-") as tmp:
        root = Path(tmp)
        save_bundle(str(root / "bundle"), make_bundle(paper=paper))
        manifest = make_manifest(root, n)
        # The first crops (a quarter of them low-resolution, as in the whole set).
        paths = sorted((root / "images").glob("*.jpg"))[:BARE_CROPS[paper]]
        decoded = [decode_image(p.read_bytes()) for p in paths]
        heights = np.array([d.shape[0] for d in decoded])
        pipes = {name: Pipeline(load_bundle(str(root / "bundle")), config) for name, config in SETTINGS.items()}
        images = np.stack([resize(d, pipes["fp32"].input_size) for d in decoded])
        end_to_end(root, make_manifest(root / "warm-up", 2 * batch), settings)  # the first run on a Ray starts its workers
        for _ in range(repeats):
            for name, config in SETTINGS.items():
                whole = end_to_end(root, manifest, settings | {"pipeline": config})
                steady, startup = whole["steady"], whole["startup"]
                for key, value in (("steady", steady), ("whole", whole["rate"]), ("startup", startup),
                                   ("bare", _bare_rate(pipes[name], images, heights, batch))):
                    runs[name][key].append(value)
                print(f"  {label} {name}: end to end steady {steady:.1f}, whole run {whole['rate']:.1f} crops/s "
                      f"(start-up ~{startup:.0f} s); bare models {runs[name]['bare'][-1]:.1f}", flush=True)
    return {s: {k: statistics.median(v) for k, v in r.items()} for s, r in runs.items()}


def run(quick: bool = False) -> None:
    repeats = 1 if quick else 2
    sizes = {True: 96 if quick else 256, False: 1024 if quick else 2048}
    print(f"auto resolves to {resolve_precision('auto', 'cpu')} on this CPU; run_extract settings {E2E_SETTINGS}; "
          f"{repeats} alternating repeat(s), medians; bare models: this process, {torch.get_num_threads()} threads")
    with local_ray():  # one Ray for every run
        results = {paper: _preset(paper, sizes[paper], repeats) for paper in (True, False)}
    print(f"{'preset':<11}{'crops':>6}{'setting':>8}{'steady':>9}{'whole':>9}{'start-up s':>11}{'bare':>9}"
          f"{'steady/bare':>12}")
    for paper, by_setting in results.items():
        for name, r in by_setting.items():
            print(f"{'paper' if paper else 'cpu-small':<11}{sizes[paper]:>6}{name:>8}{r['steady']:>9.1f}"
                  f"{r['whole']:>9.1f}{r['startup']:>11.1f}{r['bare']:>9.1f}{r['steady'] / r['bare']:>12.2f}")
    for paper, r in results.items():
        ratio = {k: r["auto"][k] / r["fp32"][k] for k in ("whole", "steady", "bare")}
        print(f"target {'paper' if paper else 'cpu-small'}: end to end auto / fp32 {ratio['whole']:.2f}x over the whole "
              f"run, {ratio['steady']:.2f}x in steady state (>= {TARGETS[paper]}); bare models {ratio['bare']:.2f}x; "
              f"end to end vs bare (>= 0.85), whole run / steady: fp32 {r['fp32']['whole'] / r['fp32']['bare']:.2f} / "
              f"{r['fp32']['steady'] / r['fp32']['bare']:.2f}, auto {r['auto']['whole'] / r['auto']['bare']:.2f} / "
              f"{r['auto']['steady'] / r['auto']['bare']:.2f}")

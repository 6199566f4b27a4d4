"""bf16 against fp32 decisions of a trained bundle on the demo's test split.

    python -m attrgan.devtools.bench --only agreement [--bundle DIR]     (default: demo-out/bundle, from `make demo`)

Re-renders the demo's archive into a temporary folder exactly as the demo does (`generate` with its
5,000 crops, seed 0 and SPLITS, so the crops are byte-identical), decodes the test split at the
classifier's input size and runs the bundle's pipeline in this process (no Ray) with
`PipelineConfig(precision="fp32")` and `precision="bf16"`: the classifier alone and the complete
pipeline (default settings: restorations as the bundle's proofs allow). Per setting it prints the
share of (crop, attribute) decisions that agree over the classifier's attributes other than
occlusion_down, mA under each precision (bundle thresholds, manifest labels) and their difference in
points, the largest probability difference and crops/s of each. Without the bundle folder the
section says so in one line and is skipped.

    targets: decisions agree on >= 99.5 % of (crop, attribute) pairs; mA differs by <= 0.3 points.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from attrgan.attributes import OCCLUSION_DOWN
from attrgan.bundle import Bundle, load_bundle
from attrgan.metrics import attribute_metrics
from attrgan.pipeline import Pipeline, PipelineConfig
from attrgan.precision import resolve_precision

DEFAULT_BUNDLE = "demo-out/bundle"
DEMO_CROPS, DEMO_SEED = 5000, 0  # the demo's archive (DemoConfig.crops, DemoConfig.seed)
TARGET_AGREEMENT = 0.995
TARGET_MA_POINTS = 0.3
BATCH = 64
QUICK_CROPS = 200
# Setting name → PipelineConfig changes; precision is set per run.
SETTINGS: dict[str, dict[str, bool]] = {
    "classifier": {"use_superres": False, "use_reconstruction": False},
    "pipeline": {},
}


@dataclasses.dataclass(frozen=True)
class Agreement:
    """bf16 against fp32 for one pipeline setting on one set of crops (mA in [0, 1])."""

    crops: int
    agreement: float  # share of (crop, attribute) decisions equal under both precisions
    ma_fp32: float
    ma_bf16: float
    max_prob_diff: float
    rate_fp32: float  # crops/s
    rate_bf16: float
    restored: dict[str, int]  # precision → crops super-resolved or reconstructed
    restorations: tuple[str, ...]  # the restorations the setting runs
    flip_points: float  # the most one changed decision can move mA, in points (the rarest class)

    @property
    def ma_diff_points(self) -> float:
        return 100 * abs(self.ma_bf16 - self.ma_fp32)

    @property
    def met(self) -> bool:
        return self.agreement >= TARGET_AGREEMENT and self.ma_diff_points <= TARGET_MA_POINTS


def skip_reason(bundle: str | Path) -> str | None:
    """Why the section cannot run on `bundle` (None when it can)."""
    if not (Path(bundle) / "classifier").is_dir():
        return f"no model bundle at {bundle}: this section needs `make demo` first (or --bundle DIR); skipped"
    return None


def _run(pipe: Pipeline, images: np.ndarray, heights: np.ndarray) -> tuple[dict[str, np.ndarray], float]:
    """The pipeline's outputs over all crops in batches of BATCH, and crops/s after a one-batch warm-up."""
    pipe(images[:BATCH], heights[:BATCH])
    start = time.perf_counter()
    parts = [pipe(images[i:i + BATCH], heights[i:i + BATCH]) for i in range(0, len(images), BATCH)]
    rate = len(images) / (time.perf_counter() - start)
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}, rate


def compare(bundle: Bundle, images: np.ndarray, heights: np.ndarray, labels: np.ndarray,
            attributes: tuple[str, ...], *, device: str = "cpu") -> dict[str, Agreement]:
    """bf16 against fp32 per setting in SETTINGS.

    images: (N, H, W, 3) uint8 at the classifier input; heights: (N,) original crop heights;
    labels: (N, len(attributes)) in {1, 0, -1}, `attributes` a subset of the classifier's
    (occlusion_down is left out: the evaluation reports it on its own).
    """
    keep = [i for i, a in enumerate(attributes) if a != OCCLUSION_DOWN]
    attributes = tuple(attributes[i] for i in keep)
    labels = np.asarray(labels)[:, keep]
    columns = [bundle.attributes.index(a) for a in attributes]
    thresholds = np.asarray(bundle.thresholds, np.float32)[columns]
    # mA averages per-attribute balanced accuracies: one decision moves it by 1 / (2 * class size * A).
    smallest = np.minimum((labels == 1).sum(0), (labels == 0).sum(0))[(labels >= 0).any(0)]
    flip_points = 100 / (2 * max(int(smallest.min()), 1) * len(smallest)) if len(smallest) else float("nan")
    out: dict[str, Agreement] = {}
    for name, changes in SETTINGS.items():
        runs, pipes = {}, {}
        for precision in ("fp32", "bf16"):
            pipes[precision] = Pipeline(bundle, PipelineConfig(device=device, precision=precision, **changes))
            runs[precision] = _run(pipes[precision], images, heights)
        (fp32, rate_fp32), (bf16, rate_bf16) = runs["fp32"], runs["bf16"]
        ma = {p: attribute_metrics(labels, r[0]["scores"][:, columns], attributes=attributes,
                                   thresholds=thresholds).ma for p, r in runs.items()}
        out[name] = Agreement(
            crops=len(images),
            agreement=float((fp32["decisions"][:, columns] == bf16["decisions"][:, columns]).mean()),
            ma_fp32=ma["fp32"], ma_bf16=ma["bf16"],
            max_prob_diff=float(np.abs(fp32["scores"][:, columns] - bf16["scores"][:, columns]).max()),
            rate_fp32=rate_fp32, rate_bf16=rate_bf16,
            restored={p: int((r[0]["super_resolved"] | r[0]["reconstructed"]).sum()) for p, r in runs.items()},
            restorations=tuple(n for n, plan in pipes["fp32"].restorations.items() if plan.runs),
            flip_points=flip_points)
    return out


def demo_test_split(tmp: str | Path, size: tuple[int, int],
                    attributes: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The demo archive's test crops at `size`, their original heights and labels (`attributes` order),
    rendered under `tmp` as the demo renders them."""
    from attrgan.data.synth import generate
    from attrgan.devtools.demo import SPLITS
    from attrgan.train.data import load_crops, read_split

    manifest = generate(str(tmp), DEMO_CROPS, seed=DEMO_SEED, splits=SPLITS, workers=os.cpu_count() or 1)
    crops = load_crops(read_split(manifest, split="test"), size=size, attributes=attributes)
    assert crops.labels is not None and crops.crop_sizes is not None
    return crops.images, crops.crop_sizes[:, 0], crops.labels


def run(quick: bool = False, bundle: str = DEFAULT_BUNDLE) -> None:
    reason = skip_reason(bundle)
    if reason:
        print(reason)
        return
    loaded = load_bundle(bundle)
    attributes = tuple(a for a in loaded.attributes if a != OCCLUSION_DOWN)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="attrgan-bench-agreement-") as tmp:
        images, heights, labels = demo_test_split(tmp, tuple(loaded.classifier.config.input_size), attributes)
    if quick:
        images, heights, labels = images[:QUICK_CROPS], heights[:QUICK_CROPS], labels[:QUICK_CROPS]
    print(f"bundle {bundle} (version {loaded.version}); demo archive re-rendered ({DEMO_CROPS} crops, seed "
          f"{DEMO_SEED}) in {time.perf_counter() - start:.0f} s; {len(images)} test crops, {len(attributes)} "
          f"attributes (without {OCCLUSION_DOWN}); auto resolves to {resolve_precision('auto', 'cpu')} on this "
          f"CPU; this process, {torch.get_num_threads()} threads, batch {BATCH}")
    results = compare(loaded, images, heights, labels, attributes)
    print(f"{'setting':<11}{'crops':>6}{'agree %':>9}{'mA fp32':>9}{'mA bf16':>9}{'diff':>7}{'max |dp|':>10}"
          f"{'fp32/s':>8}{'bf16/s':>8}{'restored fp32/bf16':>20}")
    for name, r in results.items():
        print(f"{name:<11}{r.crops:>6}{100 * r.agreement:>9.2f}{100 * r.ma_fp32:>9.2f}{100 * r.ma_bf16:>9.2f}"
              f"{r.ma_diff_points:>7.2f}{r.max_prob_diff:>10.4f}{r.rate_fp32:>8.1f}{r.rate_bf16:>8.1f}"
              f"{r.restored['fp32']:>10}/{r.restored['bf16']}")
    print("restorations run: " + "; ".join(f"{n} {', '.join(r.restorations) or 'none'}" for n, r in results.items()))
    for name, r in results.items():
        print(f"target {name}: agreement {100 * r.agreement:.2f} % (>= {100 * TARGET_AGREEMENT:.1f}), mA differs "
              f"by {r.ma_diff_points:.2f} points (<= {TARGET_MA_POINTS}): {'met' if r.met else 'NOT met'}")
    print(f"one changed decision moves mA by up to {results['classifier'].flip_points:.3f} points on these crops")

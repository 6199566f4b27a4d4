"""`make reproduce`: Table 2 over several training seeds, on test crops no tuning ever saw.

For every seed s the demo's recipe runs again from scratch: a 5,000-crop synthetic archive
rendered with seed s, the three networks trained on it with seed s (`attrgan.devtools.demo.train_bundle`),
and the evaluation job (`attrgan.evaluate`) on `test_crops` fresh crops rendered with seed
TEST_SEED_BASE + s, a seed range no setting was ever tuned on. For the first `ceiling_seeds`
seeds, the information ceilings (`ceilings`, all three by default) are trained too: the same
classifier recipe trained directly on occluded, on x4 low-res and on mixed corrupted crops with all their labels (`TrainConfig.train_on`),
scored on the same test crops: how much of what the corruption cost the remaining pixels still
carry, the most any restoration could win back.

Printed and written to `<out>/reproduce.md` and `<out>/reproduce.json`:
    Table 2 as mean ± sd over seeds (mA, percent);
    each seed's gains with their paired bootstrap intervals and verdicts;
    recovery = gain / mA lost (clean - corrupted), per comparison and seed, with its mean (n/a when
    under one mA point was lost: MIN_LOST);
    the ceilings as mA and as the share of the loss they recover;
    whether the recovery targets are met (RECOVERY_TARGETS; every seed's interval above 0).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from attrgan.config import StorageConfig

log = logging.getLogger(__name__)

TEST_SEED_BASE = 900_000  # test crops come from seeds 900000 + s: never used to choose any setting
# comparison → (experiment without restoration, with restoration), as in attrgan.experiments.COMPARISONS
LOST_FROM = {"occlusion": "occluded", "low resolution": "lowres_bilinear", "complete": "corrupted"}
# Mean recovery (gain ÷ mA lost) each comparison should reach; the paper's RAP figures are 50 / 77 / 27 %.
RECOVERY_TARGETS = {"occlusion": 0.25, "low resolution": 0.40, "complete": 0.15}
# Below one mA point lost a share of the loss is noise (e.g. +1.5 of 0.16 points: 940 %): n/a.
MIN_LOST = 0.01
# The classifier `train_on` setting of each comparison's information ceiling.
CEILING_TRAIN_ON = {"occlusion": "occluded", "low resolution": "lowres", "complete": "corrupted"}
TABLE_ROWS = (("clean", "clean"), ("occluded", "occluded"), ("occluded_reconstruction", "occluded + reconstruction"),
              ("lowres_bilinear", "low-res + bilinear"), ("lowres_superres", "low-res + super-resolution"),
              ("corrupted", "corrupted (classifier alone)"), ("restored", "restored (complete pipeline)"))


@dataclasses.dataclass(frozen=True)
class ReproduceConfig:
    """seeds: training seeds (one archive, one bundle, one test set each). crops: archive size (the
    demo's). test_crops: fresh test crops per seed. ceiling_seeds: how many of the first seeds also
    train the information ceilings, one classifier training each; ceilings: which of them, by the
    crops they train on (CEILING_TRAIN_ON's values). train: per network, settings over the cpu-small
    preset (default: the demo's)."""

    out: str = "reproduce-out"
    seeds: tuple[int, ...] = (0, 1, 2)
    crops: int = 5000
    test_crops: int = 1000
    ceiling_seeds: int = 1
    ceilings: tuple[str, ...] = tuple(CEILING_TRAIN_ON.values())
    train: Mapping[str, Mapping[str, Any]] | None = None
    batch_size: int = 32
    ray_cpus: int = 4

    def __post_init__(self) -> None:
        if not self.seeds or len(set(self.seeds)) != len(self.seeds) or min(self.seeds) < 0:
            raise ValueError(f"ReproduceConfig.seeds must be distinct non-negative integers, got {self.seeds}")
        if self.crops < 20 or self.test_crops < 2:
            raise ValueError(f"ReproduceConfig needs crops >= 20 and test_crops >= 2, got {self.crops} and "
                             f"{self.test_crops}")
        unknown = sorted(set(self.ceilings) - set(CEILING_TRAIN_ON.values()))
        if isinstance(self.ceilings, str) or unknown or len(set(self.ceilings)) != len(self.ceilings):
            raise ValueError(f"ReproduceConfig.ceilings must be distinct values of {sorted(CEILING_TRAIN_ON.values())}, "
                             f"got {list(self.ceilings)}")
        if not 0 <= self.ceiling_seeds <= len(self.seeds):
            raise ValueError(f"ReproduceConfig.ceiling_seeds must be in [0, {len(self.seeds)}], got {self.ceiling_seeds}")


def run_reproduce(config: ReproduceConfig, *, say: Callable[[str], None] = print) -> dict[str, Any]:
    """Run every seed (module docstring); returns what reproduce.json holds."""
    import ray

    from attrgan.devtools.demo import local_s3
    from attrgan.runtime import start_quiet_ray

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.2")
    os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    out = Path(config.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    runs: list[dict[str, Any]] = []

    def save() -> dict[str, Any]:
        # Written after every step: an interrupted run keeps what it measured.
        result = summarize(runs, seconds=time.perf_counter() - start)
        (out / "reproduce.json").write_text(json.dumps(result, indent=2) + "\n")
        return result

    try:
        with local_s3() as storage:
            start_quiet_ray(config.ray_cpus)
            for seed in config.seeds:
                runs.append(_one_seed(config, seed, storage=storage, out=out, say=say))
                save()
            # The ceilings last: the seeds' Table 2 does not wait for them.
            for run in runs[:config.ceiling_seeds]:
                _ceilings(config, run, storage=storage, out=out, say=say)
                result = save()
    finally:
        if ray.is_initialized():
            ray.shutdown()
    result = save()
    text = render(result)
    (out / "reproduce.md").write_text(text)
    say("\n" + text)
    return result


def _locations(seed: int) -> dict[str, str]:
    """Where one seed's archive, test crops, bundle and evaluation sets live on the demo's S3."""
    from attrgan.devtools.demo import BUCKET

    root = f"s3://{BUCKET}/seed-{seed}"
    return {"root": root, "archive": f"{root}/archive", "test": f"{root}/test", "bundle": f"{root}/bundle",
            "sets": f"{root}/sets"}


def _evaluate(config: ReproduceConfig, seed: int, bundle: str, name: str, *, examples: int, storage: StorageConfig,
              out: Path, say: Callable[[str], None]) -> Any:
    from attrgan.data.storage import join
    from attrgan.evaluate import EvaluateConfig, evaluate

    where = _locations(seed)
    return evaluate(EvaluateConfig(manifest=join(where["test"], "manifest.parquet"), bundle=bundle,
                                   out=str(out / f"seed-{seed}" / name), split="test", sets_uri=where["sets"],
                                   seed=seed, batch_size=config.batch_size, examples=examples, storage=storage),
                    progress=lambda m: say(f"    {m}"))


def _one_seed(config: ReproduceConfig, seed: int, *, storage: StorageConfig, out: Path,
              say: Callable[[str], None]) -> dict[str, Any]:
    from attrgan.data.synth import generate
    from attrgan.devtools.demo import SPLITS, TRAIN_SETTINGS, train_bundle

    t0 = time.perf_counter()
    where = _locations(seed)
    say(f"\n== seed {seed}: archive of {config.crops} crops, the demo's training, "
        f"{config.test_crops} test crops of seed {TEST_SEED_BASE + seed}")
    archive = generate(where["archive"], config.crops, seed=seed, storage=storage, splits=SPLITS)
    generate(where["test"], config.test_crops, seed=TEST_SEED_BASE + seed, storage=storage, splits=(0.0, 0.0, 1.0))
    train = config.train if config.train is not None else TRAIN_SETTINGS
    train_bundle(archive, where["bundle"], storage, train=train, seed=seed, ray_cpus=config.ray_cpus, say=say)
    result = _evaluate(config, seed, where["bundle"], "report", examples=6, storage=storage, out=out, say=say)
    seconds = round(time.perf_counter() - t0, 1)
    say(f"    seed {seed} done in {seconds / 60:.1f} min")
    return {
        "seed": seed, "test_seed": TEST_SEED_BASE + seed, "test_crops": result.counts,
        "bundle_version": result.model_version, "seconds": seconds,
        "ma": {key: result.metrics[key].ma for key, _ in TABLE_ROWS},
        "intervals": {name: interval.to_dict() for name, interval in result.intervals.items()},
        "reconstruction_psnr": result.reconstruction_psnr.to_dict() if result.reconstruction_psnr else None,
        "ceilings": {},
    }


def _ceilings(config: ReproduceConfig, run: dict[str, Any], *, storage: StorageConfig, out: Path,
              say: Callable[[str], None]) -> None:
    """Train and score the chosen information ceilings of one seed's run; fills run["ceilings"]."""
    from attrgan.data.storage import copy_folder, join
    from attrgan.devtools.demo import TRAIN_SETTINGS, train_bundle

    seed, where = run["seed"], _locations(run["seed"])
    train = config.train if config.train is not None else TRAIN_SETTINGS
    classifier = dict(train.get("classifier", {}))
    for comparison, train_on in CEILING_TRAIN_ON.items():
        if train_on not in config.ceilings:
            continue
        t0 = time.perf_counter()
        ceiling = f"{where['root']}/ceiling-{train_on}"
        say(f"\n== seed {seed}: information ceiling for {comparison}, the classifier trained on {train_on} crops")
        train_bundle(join(where["archive"], "manifest.parquet"), ceiling, storage,
                     train={"classifier": classifier | {"train_on": train_on}}, seed=seed,
                     ray_cpus=config.ray_cpus, say=say, models=("classifier",))
        for name in ("reconstruction", "superres"):  # the evaluation loads a whole bundle
            copy_folder(join(where["bundle"], name), join(ceiling, name), storage)
        scored = _evaluate(config, seed, ceiling, f"ceiling-{train_on}", examples=0, storage=storage, out=out, say=say)
        run["ceilings"][comparison] = scored.metrics[LOST_FROM[comparison]].ma
        run["seconds"] = round(run["seconds"] + time.perf_counter() - t0, 1)


def summarize(runs: Sequence[Mapping[str, Any]], *, seconds: float) -> dict[str, Any]:
    """Mean ± sd of every Table 2 row, per-seed and mean recovery, ceilings, targets (pure)."""

    def mean_sd(values: Sequence[float]) -> dict[str, float | None]:
        return {"mean": statistics.fmean(values), "sd": statistics.stdev(values) if len(values) > 1 else None}

    table = {key: mean_sd([r["ma"][key] for r in runs]) for key, _ in TABLE_ROWS}
    comparisons: dict[str, Any] = {}
    for name, before in LOST_FROM.items():
        per_seed = []
        for r in runs:
            lost = r["ma"]["clean"] - r["ma"][before]
            gain = r["intervals"][name]["gain"]
            ceiling = r["ceilings"].get(name)
            per_seed.append({
                "seed": r["seed"], "gain": gain, "low": r["intervals"][name]["low"],
                "high": r["intervals"][name]["high"], "verdict": r["intervals"][name]["verdict"], "lost": lost,
                "recovery": gain / lost if lost >= MIN_LOST else None,
                "ceiling_ma": ceiling,
                "ceiling_recovery": (ceiling - r["ma"][before]) / lost
                if ceiling is not None and lost >= MIN_LOST else None,
            })
        recoveries = [p["recovery"] for p in per_seed if p["recovery"] is not None]
        mean_recovery = statistics.fmean(recoveries) if recoveries else None
        comparisons[name] = {
            "per_seed": per_seed, "gain": mean_sd([p["gain"] for p in per_seed]),
            "recovery_mean": mean_recovery, "target": RECOVERY_TARGETS[name],
            # Every seed must count: one that lost under MIN_LOST has no recovery, so no verdict.
            "target_met": (mean_recovery is not None and len(recoveries) == len(per_seed)
                           and mean_recovery >= RECOVERY_TARGETS[name] - 1e-9  # float sums
                           and all(p["gain"] > 0 and p["low"] > 0 for p in per_seed)),
        }
    return {"seeds": [r["seed"] for r in runs], "seconds": round(seconds, 1), "table": table,
            "comparisons": comparisons, "runs": list(runs)}


def render(result: Mapping[str, Any]) -> str:
    """reproduce.md: the summary as text (also what the job prints)."""

    def pct(value: float | None, signed: bool = False) -> str:
        return "n/a" if value is None else f"{100 * value:+.2f}" if signed else f"{100 * value:.2f}"

    def share(value: float | None) -> str:
        return "n/a" if value is None else f"{100 * value:.2f} %"

    n = len(result["seeds"])
    lines = [f"# Table 2 over {n} training seed(s) {result['seeds']}, fresh test crops per seed",
             "", f"Run time {result['seconds'] / 60:.1f} min.", "",
             "| input | mA mean | sd |", "|---|---|---|"]
    labels = dict(TABLE_ROWS)
    for key, stats in result["table"].items():
        lines.append(f"| {labels[key]} | {pct(stats['mean'])} | {pct(stats['sd'])} |")
    lines += ["", "| comparison | seed | gain (95 % CI) | verdict | mA lost | recovery | ceiling mA | ceiling recovery |",
              "|---|---|---|---|---|---|---|---|"]
    for name, c in result["comparisons"].items():
        for p in c["per_seed"]:
            lines.append(f"| {name} | {p['seed']} | {pct(p['gain'], True)} ({pct(p['low'], True)} to "
                         f"{pct(p['high'], True)}) | {p['verdict']} | {pct(p['lost'])} | {share(p['recovery'])} | "
                         f"{pct(p['ceiling_ma'])} | {share(p['ceiling_recovery'])} |")
    lines += ["", "| comparison | mean gain ± sd | mean recovery | target | met |", "|---|---|---|---|---|"]
    for name, c in result["comparisons"].items():
        lines.append(f"| {name} | {pct(c['gain']['mean'], True)} ± {pct(c['gain']['sd'])} | "
                     f"{share(c['recovery_mean'])} | {100 * c['target']:.0f} % | {'yes' if c['target_met'] else 'no'} |")
    lines += ["", "Recovery = gain ÷ mA lost to the corruption (clean − corrupted); n/a when under "
              f"{100 * MIN_LOST:g} mA point was lost. Ceiling: the classifier "
              "trained on the corrupted crops themselves, with all labels; its recovery is the share of the loss "
              "the remaining pixels carry. A target is met when the mean recovery reaches it and every seed's "
              "interval lies above 0.", ""]
    return "\n".join(lines)

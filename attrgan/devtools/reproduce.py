"""`make reproduce`: Table 2 over several training seeds, on test crops no tuning ever saw.

For every seed s the demo's recipe runs again from scratch: a 5,000-crop synthetic archive
rendered with seed s, the three networks trained on it with seed s (`attrgan.devtools.demo.train_bundle`),
and the evaluation job (`attrgan.evaluate`) on `test_crops` fresh crops rendered with seed
TEST_SEED_BASE + s, a seed range no setting was ever tuned on. For the first `ceiling_seeds`
seeds, the information ceilings (`ceilings`, all three by default) are trained too: the same
classifier recipe trained directly on occluded, on x4 low-res and on mixed corrupted crops with all their labels (`TrainConfig.train_on`),
scored on the same test crops: how much of what the corruption cost the remaining pixels still
carry, the most any restoration could win back.

With `augmented` (the default), every seed also trains the alternative a user would pick instead
of restoration: the same classifier recipe with the paper's corruptions as augmentation
(`TrainConfig.train_on` "augmented"), alone and with the seed's two generators, their gains
measured again against it (`attrgan.train.gain.regate`). The recipes are compared on the same
test crops, clean and corrupted, with paired intervals over tracks
(`attrgan.experiments.recipe_contrast`), and one is chosen per seed from validation numbers only
(`choose_recipe`). The gate's rule (`attrgan.contracts.proven`) is held against the point rule
(gain > 0): what each switched off, and what that did to the test mA.

Printed and written to `<out>/reproduce.md` and `<out>/reproduce.json`:
    Table 2 as mean ± sd over seeds (mA, percent);
    each seed's gains with their paired bootstrap intervals and verdicts;
    recovery = gain / mA lost (clean - corrupted), per comparison and seed, with its mean (n/a when
    under one mA point was lost: MIN_LOST);
    the ceilings as mA and as the share of the loss they recover;
    whether the recovery targets are met (RECOVERY_TARGETS; every seed's interval above 0);
    the recipes side by side, the recipe chosen on validation, and the gate rules' decisions.

One module on purpose (it is long): the runs, the comparisons and the two renderings share the
per-seed records, and splitting them would pass those records across modules for no reader's gain.
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
# 80 % of the information ceilings measured on seed 0 (25 / 48 / 30 % of the loss).
RECOVERY_TARGETS = {"occlusion": 0.20, "low resolution": 0.38, "complete": 0.24}
# Below one mA point lost a share of the loss is noise (e.g. +1.5 of 0.16 points: 940 %): n/a.
MIN_LOST = 0.01
# The classifier `train_on` setting of each comparison's information ceiling.
CEILING_TRAIN_ON = {"occlusion": "occluded", "low resolution": "lowres", "complete": "corrupted"}
# The recipes a user can run, as (name, bundle, evaluation variant): the paper's pipeline (the clean
# classifier with the gated restorations), the augmented classifier alone and with them.
RECIPES = (("paper pipeline", "paper", "pipeline"), ("augmented", "augmented", "plain"),
           ("augmented + restorations", "augmented", "pipeline"))
BASELINE = "augmented"  # what every recipe is held against
RECIPE_SETS = {"clean": ("clean",), "corrupted": ("occluded", "lowres")}
# The experiment (attrgan.experiments.EXPERIMENTS) that reads each recipe set under each variant.
RECIPE_ROWS = {"plain": {"clean": "clean", "corrupted": "corrupted"},
               "pipeline": {"clean": "clean_pipeline", "corrupted": "restored"}}
# Which restoration each Table 2 comparison measures alone, and the generator behind it.
RESTORATION_OF = {"occlusion": "reconstruction", "low resolution": "superres"}
GATE_RULE_NAMES = ("proven", "not_harmful", "point")  # the rules `gate_rules` holds against each other
TABLE_ROWS = (("clean", "clean"), ("occluded", "occluded"), ("occluded_reconstruction", "occluded + reconstruction"),
              ("lowres_bilinear", "low-res + bilinear"), ("lowres_superres", "low-res + super-resolution"),
              ("corrupted", "corrupted (classifier alone)"), ("restored", "restored (complete pipeline)"))


@dataclasses.dataclass(frozen=True)
class ReproduceConfig:
    """seeds: training seeds (one archive, one bundle, one test set each). crops: archive size (the
    demo's). test_crops: fresh test crops per seed. ceiling_seeds: how many of the first seeds also
    train the information ceilings, one classifier training each; ceilings: which of them, by the
    crops they train on (CEILING_TRAIN_ON's values). augmented: every seed also trains the augmented
    classifier (one more classifier training). train: per network, settings over the cpu-small
    preset (default: the demo's)."""

    out: str = "reproduce-out"
    seeds: tuple[int, ...] = (0, 1, 2)
    crops: int = 5000
    test_crops: int = 1000
    ceiling_seeds: int | None = None  # None: the first two seeds (or the only one)
    ceilings: tuple[str, ...] = ("occluded", "lowres")  # the mixed one is no bound (docs/demo.md)
    augmented: bool = True
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
        if self.ceiling_seeds is not None and not 0 <= self.ceiling_seeds <= len(self.seeds):
            raise ValueError(f"ReproduceConfig.ceiling_seeds must be in [0, {len(self.seeds)}], got {self.ceiling_seeds}")

    @property
    def ceiling_runs(self) -> int:
        """How many of the first seeds train the ceilings."""
        return min(2, len(self.seeds)) if self.ceiling_seeds is None else self.ceiling_seeds


def run_reproduce(config: ReproduceConfig, *, say: Callable[[str], None] = print) -> dict[str, Any]:
    """Run every seed (module docstring); returns what reproduce.json holds."""
    import ray

    from attrgan.devtools.demo import local_s3
    from attrgan.ray_setup import start_quiet_ray

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
            for run in runs[:config.ceiling_runs]:
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
    from attrgan.bundle import bundle_info
    from attrgan.data.synth import generate
    from attrgan.devtools.demo import SPLITS, TRACK_SPLITS, TRAIN_SETTINGS, train_bundle

    t0 = time.perf_counter()
    where = _locations(seed)
    say(f"\n== seed {seed}: archive of {config.crops} crops, the demo's training, "
        f"{config.test_crops} test crops of seed {TEST_SEED_BASE + seed}")
    archive = generate(where["archive"], config.crops, seed=seed, storage=storage, splits=SPLITS,
                       track_splits=TRACK_SPLITS)
    generate(where["test"], config.test_crops, seed=TEST_SEED_BASE + seed, storage=storage, splits=(0.0, 0.0, 1.0),
             track_splits=("test",))
    train = dict(config.train if config.train is not None else TRAIN_SETTINGS)
    # The paper's recipe: the classifier on clean crops, whatever the demo's default.
    train["classifier"] = dict(train.get("classifier", {})) | {"train_on": "clean"}
    train_bundle(archive, where["bundle"], storage, train=train, seed=seed, ray_cpus=config.ray_cpus, say=say)
    result = _evaluate(config, seed, where["bundle"], "report", examples=6, storage=storage, out=out, say=say)
    run = {
        "seed": seed, "test_seed": TEST_SEED_BASE + seed, "test_crops": result.counts,
        "bundle_version": result.model_version,
        **_scores(result), "gains": bundle_info(where["bundle"], storage).gains, "ceilings": {},
    }
    if config.augmented:
        augmented = _augmented(config, seed, archive, storage=storage, out=out, say=say)
        run["augmented"] = _scores(augmented) | {"gains": bundle_info(f"{where['root']}/augmented", storage).gains}
        run["recipes"] = _recipes({"paper": result, "augmented": augmented}, seed=seed)
    run["seconds"] = round(time.perf_counter() - t0, 1)
    say(f"    seed {seed} done in {run['seconds'] / 60:.1f} min")
    return run


def _scores(result: Any) -> dict[str, Any]:
    """One evaluation's Table 2 rows, gains with intervals and what G^R paints."""
    return {"ma": {key: result.metrics[key].ma for key, _ in TABLE_ROWS},
            "intervals": {name: interval.to_dict() for name, interval in result.intervals.items()},
            "reconstruction_psnr": result.reconstruction_psnr.to_dict() if result.reconstruction_psnr else None}


def _augmented(config: ReproduceConfig, seed: int, archive: str, *, storage: StorageConfig, out: Path,
               say: Callable[[str], None]) -> Any:
    """Train the augmented classifier into `<root>/augmented` beside the seed's generators, measure
    their gains against it (the gate's records), and evaluate it on the seed's test crops."""
    from attrgan.data.storage import copy_folder, join
    from attrgan.devtools.demo import TRAIN_SETTINGS, train_bundle
    from attrgan.pipeline import PipelineConfig
    from attrgan.train.gain import regate

    where = _locations(seed)
    bundle = f"{where['root']}/augmented"
    train = config.train if config.train is not None else TRAIN_SETTINGS
    say(f"\n== seed {seed}: the augmented classifier (clean crops mixed with the paper's corruptions), "
        f"alone and with the seed's generators")
    train_bundle(archive, bundle, storage, train={"classifier": dict(train.get("classifier", {})) | {"train_on": "augmented"}},
                 seed=seed, ray_cpus=config.ray_cpus, say=say, models=("classifier",))
    for name in ("reconstruction", "superres"):
        copy_folder(join(where["bundle"], name), join(bundle, name), storage)
    gains = regate(bundle, archive, storage=storage, seed=seed, config=PipelineConfig(device="cpu"))
    for name, record in gains.items():
        say(f"    {name} against the augmented classifier: validation gain {100 * record['gain_ma']:+.2f} mA "
            f"({100 * record['low']:+.2f} to {100 * record['high']:+.2f})")
    return _evaluate(config, seed, bundle, "augmented", examples=0, storage=storage, out=out, say=say)


def _recipes(results: Mapping[str, Any], *, seed: int) -> dict[str, Any]:
    """Each recipe's mA on the clean and the corrupted test crops, and its gain over the augmented
    classifier alone on the same crops: {recipe: {"ma": {set: mA}, "vs_augmented": {set: interval}}}."""
    from attrgan.experiments import recipe_contrast

    base_bundle, base_variant = next((b, v) for name, b, v in RECIPES if name == BASELINE)
    base = results[base_bundle]
    attributes = base.attributes
    out: dict[str, Any] = {}
    for name, bundle, variant in RECIPES:
        out[name] = {"ma": {s: results[bundle].metrics[RECIPE_ROWS[variant][s]].ma for s in RECIPE_SETS},
                     "vs_augmented": {}}
        for set_name, sets in RECIPE_SETS.items():
            interval = recipe_contrast(base.scored, results[bundle].scored, base.labels, sets=sets,
                                       variants=(base_variant, variant), attributes=attributes, seed=seed)
            out[name]["vs_augmented"][set_name] = interval.to_dict()
    return out


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


def _mean_sd(values: Sequence[float]) -> dict[str, float | None]:
    return {"mean": statistics.fmean(values), "sd": statistics.stdev(values) if len(values) > 1 else None}


def _comparisons(runs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Per Table 2 comparison: each seed's gain, interval, mA lost, recovery and ceiling; the mean
    gain and recovery; whether the recovery target is met."""
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
            "per_seed": per_seed, "gain": _mean_sd([p["gain"] for p in per_seed]),
            "recovery_mean": mean_recovery, "target": RECOVERY_TARGETS[name],
            # Every seed must count: one that lost under MIN_LOST has no recovery, so no verdict.
            "target_met": (mean_recovery is not None and len(recoveries) == len(per_seed)
                           and mean_recovery >= RECOVERY_TARGETS[name] - 1e-9  # float sums
                           and all(p["gain"] > 0 and p["low"] > 0 for p in per_seed)),
        }
    return comparisons


def summarize(runs: Sequence[Mapping[str, Any]], *, seconds: float) -> dict[str, Any]:
    """Mean ± sd of every Table 2 row, per-seed and mean recovery, ceilings, targets; the same for
    the augmented classifier with the generators; the recipes and the gate rules (pure)."""
    table = {key: _mean_sd([r["ma"][key] for r in runs]) for key, _ in TABLE_ROWS}
    comparisons = _comparisons(runs)
    with_augmented = [r["augmented"] | {"seed": r["seed"], "ceilings": {}} for r in runs if "augmented" in r]
    augmented = ({"table": {key: _mean_sd([r["ma"][key] for r in with_augmented]) for key, _ in TABLE_ROWS},
                  "comparisons": _comparisons(with_augmented)} if with_augmented else None)
    return {"seeds": [r["seed"] for r in runs], "seconds": round(seconds, 1), "table": table,
            "comparisons": comparisons, "augmented": augmented, **_recipe_summary(runs), "gate_rules": gate_rules(runs), "runs": list(runs)}


def validation_score(gains: Mapping[str, Any], *, restored: bool, rule: str | None = None) -> float | None:
    """A recipe's mA on the validation crops corrupted for both generators (the mean of the
    occluded and the low-res crops' mA, from the gain records), each restoration counted where the
    gate's `rule` (default: the pipeline's) runs it (`restored`) and not otherwise; None without
    the records."""
    from attrgan.contracts import GENERATORS, passes_gate
    from attrgan.pipeline import PipelineConfig

    rule = rule or PipelineConfig().gate
    records = [gains.get(name) for name in GENERATORS]
    if not all(isinstance(r, Mapping) and "ma_before" in r and "ma_after" in r for r in records):
        return None
    return statistics.fmean(r["ma_after"] if restored and passes_gate(r, rule) else r["ma_before"] for r in records)


def choose_recipe(run: Mapping[str, Any]) -> tuple[str | None, dict[str, float | None]]:
    """The recipe of RECIPES with the best validation score (`validation_score`): validation
    numbers only, never the test crops. A recipe must beat the augmented classifier alone, the
    simplest, to be chosen; (None, scores) when the run has no augmented classifier or records."""
    if "augmented" not in run:
        return None, {}
    gains = {"paper": run["gains"], "augmented": run["augmented"]["gains"]}
    scores = {name: validation_score(gains[bundle], restored=variant == "pipeline") for name, bundle, variant in RECIPES}
    if any(v is None for v in scores.values()):
        return None, scores
    chosen = BASELINE
    for name, score in scores.items():
        if score > scores[chosen]:
            chosen = name
    return chosen, scores


def _recipe_summary(runs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The recipes' mA and gains over the augmented classifier as mean ± sd over seeds, and the
    recipe each seed chose on validation with its test gain over the augmented classifier."""
    runs = [r for r in runs if "recipes" in r]
    if not runs:
        return {}
    recipes = {name: {"ma": {s: _mean_sd([r["recipes"][name]["ma"][s] for r in runs]) for s in RECIPE_SETS},
                      "vs_augmented": {s: _mean_sd([r["recipes"][name]["vs_augmented"][s]["gain"] for r in runs])
                                       for s in RECIPE_SETS}}
               for name, _, _ in RECIPES}
    chosen = []
    for r in runs:
        name, scores = choose_recipe(r)
        chosen.append({"seed": r["seed"], "recipe": name, "validation": scores,
                       "test": r["recipes"][name]["vs_augmented"] if name else None})
    return {"recipes": recipes, "chosen": chosen}


def gate_rules(runs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """What each rule of the gate (GATE_RULE_NAMES: `attrgan.contracts.passes_gate`'s two and the
    point rule, gain above 0) decides for each restoration of each bundle (the paper's and the
    augmented classifier's) on its validation record, and what switching one off did to its test
    crops: the restoration's test gain it cost (negative: mA saved).
    {"decisions": [...], rule: {"off", "of", "test_cost"}}."""
    from attrgan.contracts import passes_gate

    rules = {"proven": lambda r: passes_gate(r, "proven"), "not_harmful": lambda r: passes_gate(r, "not_harmful"),
             "point": lambda r: r["gain_ma"] > 0}
    decisions = []
    for r in runs:
        for bundle, scored in (("paper", r), ("augmented", r.get("augmented"))):
            if scored is None:
                continue
            for comparison, generator in RESTORATION_OF.items():
                record = scored.get("gains", {}).get(generator)
                if not isinstance(record, Mapping) or "gain_ma" not in record:
                    continue
                decisions.append({"seed": r["seed"], "bundle": bundle, "restoration": generator,
                                  "validation": {k: record.get(k) for k in ("gain_ma", "low", "high")},
                                  "test_gain": scored["intervals"][comparison]["gain"],
                                  **{rule: bool(decide(record)) for rule, decide in rules.items()}})
    summary: dict[str, Any] = {"decisions": decisions}
    for rule in rules:
        off = [d for d in decisions if not d[rule]]
        summary[rule] = {"off": len(off), "of": len(decisions), "test_cost": sum(d["test_gain"] for d in off)}
    return summary


def _pct(value: float | None, signed: bool = False) -> str:
    return "n/a" if value is None else f"{100 * value:+.2f}" if signed else f"{100 * value:.2f}"


def _share(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.2f} %"


def _interval(i: Mapping[str, Any]) -> str:
    return f"{_pct(i['gain'], True)} ({_pct(i['low'], True)} to {_pct(i['high'], True)})"


def _table2(table: Mapping[str, Any], comparisons: Mapping[str, Any]) -> list[str]:
    lines = ["| input | mA mean | sd |", "|---|---|---|"]
    labels = dict(TABLE_ROWS)
    for key, stats in table.items():
        lines.append(f"| {labels[key]} | {_pct(stats['mean'])} | {_pct(stats['sd'])} |")
    lines += ["", "| comparison | seed | gain (95 % CI) | verdict | mA lost | recovery | ceiling mA | ceiling recovery |",
              "|---|---|---|---|---|---|---|---|"]
    for name, c in comparisons.items():
        for p in c["per_seed"]:
            lines.append(f"| {name} | {p['seed']} | {_interval(p)} | {p['verdict']} | {_pct(p['lost'])} | "
                         f"{_share(p['recovery'])} | {_pct(p['ceiling_ma'])} | {_share(p['ceiling_recovery'])} |")
    lines += ["", "| comparison | mean gain ± sd | mean recovery | target | met |", "|---|---|---|---|---|"]
    for name, c in comparisons.items():
        lines.append(f"| {name} | {_pct(c['gain']['mean'], True)} ± {_pct(c['gain']['sd'])} | "
                     f"{_share(c['recovery_mean'])} | {100 * c['target']:.0f} % | {'yes' if c['target_met'] else 'no'} |")
    return lines


def _recipes_text(result: Mapping[str, Any]) -> list[str]:
    runs = [r for r in result["runs"] if "recipes" in r]
    lines = ["", "## The recipes on the same test crops", "",
             "mA on the clean and on the corrupted (occluded + low-res) test crops, and the gain over the "
             "augmented classifier alone on the same crops (95 % interval over tracks):", "",
             "| recipe | seed | clean mA | corrupted mA | vs augmented, clean | vs augmented, corrupted |",
             "|---|---|---|---|---|---|"]
    for name, _, _ in RECIPES:
        for r in runs:
            got = r["recipes"][name]
            vs = got["vs_augmented"]
            lines.append(f"| {name} | {r['seed']} | {_pct(got['ma']['clean'])} | {_pct(got['ma']['corrupted'])} | "
                         + ("—" if name == BASELINE else _interval(vs["clean"])) + " | "
                         + ("—" if name == BASELINE else _interval(vs["corrupted"])) + " |")
        m = result["recipes"][name]
        lines.append(f"| {name} | mean ± sd | {_pct(m['ma']['clean']['mean'])} ± {_pct(m['ma']['clean']['sd'])} | "
                     f"{_pct(m['ma']['corrupted']['mean'])} ± {_pct(m['ma']['corrupted']['sd'])} | "
                     f"{_pct(m['vs_augmented']['clean']['mean'], True)} | "
                     f"{_pct(m['vs_augmented']['corrupted']['mean'], True)} |")
    lines += ["", "Chosen on validation only (the mean of the occluded and low-res validation crops' mA, each "
              "restoration counted where the gate runs it; a recipe must beat the augmented classifier alone):", "",
              "| seed | chosen | validation mA per recipe | chosen vs augmented on test: clean | corrupted |",
              "|---|---|---|---|---|"]
    for c in result["chosen"]:
        shown = ", ".join(f"{k} {_pct(v)}" for k, v in c["validation"].items())
        test = c["test"]
        lines.append(f"| {c['seed']} | {c['recipe']} | {shown} | "
                     + (f"{_interval(test['clean'])} | {_interval(test['corrupted'])} |" if test and c["recipe"] != BASELINE
                        else "— | — |"))
    return lines


def _gate_text(rules: Mapping[str, Any]) -> list[str]:
    lines = ["", "## The gate's rule", "",
             "Each restoration of each bundle, decided on its validation record by each rule (proven: the interval "
             "lies above 0; not harmful: it does not lie below 0; point: the gain is above 0), against its forced "
             "gain on the test crops:",
             "", "| seed | bundle | restoration | validation gain (95 % CI) | proven | not harmful | point | test gain |",
             "|---|---|---|---|---|---|---|---|"]
    for d in rules["decisions"]:
        v = d["validation"]
        lines.append(f"| {d['seed']} | {d['bundle']} | {d['restoration']} | "
                     f"{_interval({'gain': v['gain_ma'], 'low': v['low'], 'high': v['high']})} | "
                     + " | ".join("on" if d[rule] else "off" for rule in GATE_RULE_NAMES) + f" | {_pct(d['test_gain'], True)} |")
    lines += ["", "| rule | switched off | test mA it cost (−: saved), summed over what it switched off |",
              "|---|---|---|"]
    for rule in GATE_RULE_NAMES:
        lines.append(f"| {rule} | {rules[rule]['off']} of {rules[rule]['of']} | {_pct(rules[rule]['test_cost'], True)} |")
    return lines


def render(result: Mapping[str, Any]) -> str:
    """reproduce.md: the summary as text (also what the job prints)."""
    n = len(result["seeds"])
    lines = [f"# Table 2 over {n} training seed(s) {result['seeds']}, fresh test crops per seed",
             "", f"Run time {result['seconds'] / 60:.1f} min.", ""]
    lines += _table2(result["table"], result["comparisons"])
    lines += ["", "Recovery = gain ÷ mA lost to the corruption (clean − corrupted); n/a when under "
              f"{100 * MIN_LOST:g} mA point was lost. Ceiling: the classifier "
              "trained on the corrupted crops themselves, with all labels; its recovery is the share of the loss "
              "the remaining pixels carry. A target is met when the mean recovery reaches it and every seed's "
              "interval lies above 0."]
    if result.get("augmented"):
        lines += ["", "## The augmented classifier with the same generators", "",
                  "The classifier trained on clean crops mixed with the paper's corruptions (all labels kept), with "
                  "the seed's G^R and G^S; each gain is the restoration's on top of it.", ""]
        lines += _table2(result["augmented"]["table"], result["augmented"]["comparisons"])
    if result.get("recipes"):
        lines += _recipes_text(result)
    if result["gate_rules"]["decisions"]:
        lines += _gate_text(result["gate_rules"])
    return "\n".join(lines + [""])

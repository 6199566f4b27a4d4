"""The product end to end on one machine: no cluster, no cloud, no data needed.

    1. start a local S3 server (moto, on 127.0.0.1) and a local Ray;
    2. render a labelled synthetic archive of pedestrian crops into it (`attrgan.data.synth`; its
       val and test splits as tracks: people over consecutive frames);
    3. train the classifier, the reconstruction GAN and the super-resolution GAN with Ray Train
       (the `cpu-small` preset plus the demo's settings) into one model bundle;
    4. build one night's manifest (new people in tracks, hive-partitioned by date) whose frames
       come clean, occluded or x4 low-res as `corrupt.track_conditions` picks them, and run the
       nightly extraction on it with Ray Data;
    5. run the evaluation job (the paper's Tables 1 and 2, and per person) on the archive's test split;
    6. query the night's results with pandas: crops with a backpack on one camera last night.

Everything the run produces on S3 lives only as long as the run, except the trained model bundle:
it is copied to `<out>/bundle/`, and the demo ends by printing the `attrgan predict` and
`attrgan extract` commands that run it on your own crops. The report, the query's answer and a
summary (summary.json, with each step's time) are written under the local `out` folder too.
While a network trains, one line per epoch shows its losses, validation metrics and seconds (read
from the run's epochs.csv, `attrgan.train.curves`).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import io
import json
import logging
import os
import shlex
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from attrgan.config import StorageConfig
from attrgan.ray_setup import start_quiet_ray

BUCKET = "attrgan-demo"
# Train / val / test shares of the archive: 4,000 / 500 / 500 of 5,000 crops. The validation split's
# 62 people can show a restoration hurts, which is what the gate asks (pipeline.gate "not_harmful");
# proving a 1-2 point gain would take several times as many (docs/demo.md "The gate").
SPLITS = (0.8, 0.1, 0.1)
TRACK_SPLITS = ("val", "test")  # the splits rendered as people over several frames
QUERY_ATTRIBUTE = "backpack"
SEARCH_TOP = 24  # cards on the demo's search page
STEP_COUNT = 7  # setup, synth, train, extract, evaluate, query, search
# Every demo network trains data-parallel on two single-threaded workers (DDP over gloo). On two
# cores that trains the classifier as fast as one worker with two threads and G^S 1.14x faster
# (`python -m attrgan.devtools.bench --only layout`), each worker fetches half the crops, and the recipe,
# hence the numbers, are the same on a machine with more cores.
TRAIN_WORKERS = 2

# Settings on top of the cpu-small preset (attrgan.train.train_config), per network; docs/demo.md has the
# Table 2 they give on the synthetic test split.
TRAIN_SETTINGS: dict[str, dict[str, Any]] = {
    # Trained from scratch, the classifier is limited by data more than by steps: 4,000 crops for
    # 8 epochs reach test mA ~0.76 where 1,400 crops for 12-24 epochs stayed at ~0.6, too weak for
    # corruption and restoration to show.
    # Clean crops mixed with occluded and x4 low-res ones, every label kept: on 3 seeds of `make
    # reproduce` validation chose it over the paper's clean-crop classifier every time, and on test
    # crops it read corrupted crops +1.40 mA better and clean ones 1.13 worse, no seed's difference
    # proven either way (docs/demo.md).
    "classifier": {"epochs": 8, "train_on": "augmented"},
    # The pixel loss on 4x-pooled images lets a narrow generator blur everything; full-resolution
    # SSE keeps what is visible, and a smaller adversarial weight keeps the tiny D from dominating.
    # With the preset's skip connections both beat their baseline in validation PSNR within fewer
    # steps than these epochs (reconstruction 17.3 dB vs 14.2 for the occluded input after 176
    # steps; super-resolution up to 35.2 dB vs 33.2 for bilinear, unsteady at lr 2e-3).
    # The GANs see 1,120 of the training crops: their steps, not more crops, bound what they learn
    # (1,400 took the demo past 15 minutes on a 2-core CPU without bf16; docs/demo.md).
    # G^R at λ 0.01 (λ 0.1 also changed the unoccluded head), trained against the classifier with
    # the attribute-agreement loss: on pixels and λ alone it did not raise the occluded mA
    # (-0.12), with μ 100 it does (+1.87 after 6 epochs, +2.41 after 10, which would take the demo
    # past 15 minutes; docs/demo.md). Masked (a painting composited with a predicted weight): the
    # same mA, and the visible rows change 2.8 dB less (docs/demo.md); 12 epochs or twice the width
    # gained nothing more. A quarter of its inputs left unoccluded teaches it to leave alone a crop
    # the pipeline wrongly takes for occluded (complete experiment -0.27 -> +0.54 on seed 2).
    "reconstruction": {"epochs": 6, "pool": 1, "lam": 0.01, "agreement_weight": 100.0, "max_train_crops": 1120,
                       "masked": True, "residual": False, "clean_share": 0.25},
    "superres": {"epochs": 4, "pool": 1, "lam": 0.1, "max_train_crops": 1120},
}
# --small: a minute or two, for CI. The numbers mean nothing; the path is what is tested.
SMALL_TRAIN_SETTINGS: dict[str, dict[str, Any]] = {
    name: {"epochs": 1, "max_steps_per_epoch": 2, "batch_size": 8, "val_split": None}
    | ({"agreement_weight": 100.0, "masked": True, "residual": False} if name == "reconstruction" else {})
    for name in ("classifier", "reconstruction", "superres")
}


@dataclasses.dataclass(frozen=True)
class DemoConfig:
    """Sizes of one demo run.

    crops: synthetic archive size (80 / 10 / 10 % train / val / test: SPLITS).
    night_crops: crops in the night's manifest (tracks; each frame clean, occluded or low-res).
    eval_limit: evaluate only the first crops of the test split; None = all of it.
    train: per network, settings over the cpu-small preset (any TrainConfig field).
    ray_cpus: logical CPUs of the local Ray (more than the cores, so decode tasks, actors and
        training workers can always be scheduled; Ray Data hangs otherwise).
    """

    out: str = "demo-out"
    crops: int = 5000
    night_crops: int = 300
    eval_limit: int | None = None
    seed: int = 0
    train: Mapping[str, Mapping[str, Any]] = dataclasses.field(default_factory=lambda: TRAIN_SETTINGS)
    batch_size: int = 32
    examples: int = 6
    ray_cpus: int = 4

    def __post_init__(self) -> None:
        if self.crops < 20:
            raise ValueError(f"DemoConfig.crops must be >= 20 (every split needs crops), got {self.crops}")
        if self.night_crops < 3:
            raise ValueError(f"DemoConfig.night_crops must be >= 3 (clean, occluded, low-res), got {self.night_crops}")
        if self.eval_limit is not None and self.eval_limit < 2:
            raise ValueError(f"DemoConfig.eval_limit must be >= 2 or None, got {self.eval_limit}")
        unknown = sorted(set(self.train) - {"classifier", "reconstruction", "superres"})
        if unknown:
            raise ValueError(f"DemoConfig.train keys must be network names, got {unknown}")

    @classmethod
    def small(cls, **changes: Any) -> "DemoConfig":
        """Tiny sizes: the whole path in a minute or two (CI)."""
        values: dict[str, Any] = {"crops": 60, "night_crops": 9, "eval_limit": 6, "train": SMALL_TRAIN_SETTINGS,
                                  "batch_size": 8, "examples": 2}
        return cls(**(values | changes))


@dataclasses.dataclass(frozen=True)
class DemoResult:
    out: Path
    report: Path
    bundle: Path  # the trained model bundle, kept
    table2: str  # the Table 2 rows as printed
    gains_ma: dict[str, float]  # restored - corrupted mA per comparison (attrgan.experiments.COMPARISONS)
    query: Any  # pandas DataFrame: the backpack crops of the query camera last night
    steps: dict[str, float]  # seconds per step
    seconds: float
    page: Path | None = None  # the search's page: the people with a backpack last night


@contextmanager
def local_s3() -> Iterator[StorageConfig]:
    """A moto S3 server on 127.0.0.1 with the demo's bucket; yields the StorageConfig to reach it."""
    import boto3

    from attrgan.devtools.s3server import local_s3_server

    # moto accepts any credentials; these keep boto, s3fs and pyarrow from looking for real ones.
    # Set before Ray starts, so its workers inherit them.
    for key, value in (("AWS_ACCESS_KEY_ID", "demo"), ("AWS_SECRET_ACCESS_KEY", "demo"),
                       ("AWS_DEFAULT_REGION", "us-east-1")):
        os.environ.setdefault(key, value)
    with local_s3_server() as endpoint:
        boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(Bucket=BUCKET)
        yield StorageConfig(endpoint_url=endpoint, region="us-east-1")


def night_manifest(src: pa.Table, occluded: pa.Table, lowres: pa.Table, *, heights: Sequence[float],
                   seed: int = 0) -> pa.Table:
    """One night's manifest from three versions of the same crops (same rows, same order).

    Each frame comes clean, occluded or low-res as `corrupt.track_conditions` picks it for its
    track (a passer-by hides a run of frames, the far end is seen small, a quarter of the tracks
    have no clean frame; a crop without a track_id is its own track), the far end found by the
    source crops' stored `heights` (N,). Labels and split are dropped (a night's manifest has none)
    and a `date` column (the UTC day of captured_at) is added for partitioning. Columns: crop_id,
    image_uri, bbox_*, camera_id, captured_at, track_id and frame_index (when the source has
    them), date.
    """
    from attrgan.corrupt import TRACK_CONDITIONS, track_conditions

    if not (src.num_rows == occluded.num_rows == lowres.num_rows == len(heights)):
        raise ValueError(f"the three versions and the heights must have the same rows, got {src.num_rows}, "
                         f"{occluded.num_rows}, {lowres.num_rows} and {len(heights)}")
    people = [c for c in ("track_id", "frame_index") if c in src.column_names]
    keep = ["crop_id", "image_uri", "bbox_x", "bbox_y", "bbox_w", "bbox_h", "camera_id", "captured_at", *people]
    n = src.num_rows
    conditions = track_conditions(src["track_id"].to_pylist() if people else [None] * n,
                                  src["frame_index"].to_pylist() if people else [None] * n,
                                  np.asarray(heights, np.float64), crop_ids=src["crop_id"].to_pylist(), seed=seed)
    versions = dict(zip(TRACK_CONDITIONS, (src, occluded, lowres)))
    parts = [versions[c].select(keep).take(np.flatnonzero(conditions == c)) for c in TRACK_CONDITIONS]
    table = pa.concat_tables(parts).sort_by([("captured_at", "ascending")])
    # captured_at is UTC; as a naive timestamp its wall clock is UTC, so strftime needs no tz database.
    day = pc.strftime(pc.cast(table["captured_at"], pa.timestamp("us")), format="%Y-%m-%d")
    return table.append_column("date", day)


def image_heights(uris: Sequence[str], storage: StorageConfig, *, workers: int = 8) -> np.ndarray:
    """(N,) float64 the height of each stored image, read from its header (the night's crops are
    whole images): which end of a track is far, small in the frame."""
    from PIL import Image

    from attrgan.data.storage import read_bytes

    def height(uri: str) -> int:
        with Image.open(io.BytesIO(read_bytes(uri, storage))) as image:
            return image.height

    with ThreadPoolExecutor(workers) as pool:
        return np.array(list(pool.map(height, uris)), np.float64)


def epoch_line(model: str, row: Mapping[str, Any], epochs: int, seconds: float) -> str:
    """`classifier epoch 2/8: train_loss 0.412, val_mA 0.613, 143 img/s, 38 s` from an epochs.csv row."""
    shown = [f"{k} {v:.3g}" for k, v in row.items() if k.startswith(("train_", "val_")) and v == v]  # v == v: not NaN
    speed = f", {row['images_per_s']:.0f} img/s" if "images_per_s" in row else ""
    return f"    {model} epoch {int(row['epoch']) + 1}/{epochs}: {', '.join(shown)}{speed}, {seconds:.0f} s"


@contextmanager
def epoch_progress(run_uri: str, storage: StorageConfig, *, model: str, epochs: int, say: Callable[[str], None],
                   interval: float = 1.0) -> Iterator[None]:
    """Say one `epoch_line` per finished epoch while a run trains, by polling the epochs.csv its
    rank 0 writes every epoch (the workers' own output does not reach the demo's terminal)."""
    import pandas as pd

    from attrgan.data.storage import join, read_bytes
    from attrgan.train.curves import EPOCHS_CSV

    shown, last = 0, time.perf_counter()

    def poll() -> None:
        nonlocal shown, last
        try:
            rows = pd.read_csv(io.BytesIO(read_bytes(join(run_uri, EPOCHS_CSV), storage))).to_dict("records")
        except Exception:  # not written yet, or mid-write: progress must never stop the demo
            return
        for row in rows[shown:]:
            now = time.perf_counter()
            say(epoch_line(model, row, epochs, now - last))
            last = now
        shown = max(shown, len(rows))

    stop = threading.Event()

    def watch() -> None:
        while not stop.wait(interval):
            poll()

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        poll()  # the last epoch, written just before training returned


def train_bundle(manifest: str, bundle_uri: str, storage: StorageConfig, *,
                 train: Mapping[str, Mapping[str, Any]], seed: int, ray_cpus: int, say: Callable[[str], None],
                 models: tuple[str, ...] = ("classifier", "reconstruction", "superres")) -> dict[str, Any]:
    """Train `models` into `bundle_uri` with Ray Train, the classifier first and the generators side
    by side after it: the cpu-small preset, then `train`'s settings per network, all seeded with
    `seed`. TRAIN_WORKERS data-parallel workers (unless the settings name `workers`) share the
    machine's cores, and `batch_size` is the global batch, split between them: an epoch takes as
    many steps as one worker with the whole batch would.
    Returns {model: TrainResult}."""
    from attrgan.data.storage import join
    from attrgan.train.train_config import load_train_config
    from attrgan.train.ray_train import default_locations, train_network

    def train_one(model: str) -> Any:
        t0 = time.perf_counter()
        settings = dict(train.get(model, {}))
        workers = int(settings.get("workers", TRAIN_WORKERS))
        # Torch threads follow cpus_per_worker: the cores split between the workers.
        cores = min(os.cpu_count() or 1, ray_cpus)
        overrides = {"workers": workers, "cpus_per_worker": float(max(1, cores // workers)), "seed": seed}
        train_config = load_train_config(model, preset_name="cpu-small", overrides=overrides | settings)
        train_config = dataclasses.replace(train_config, batch_size=max(1, train_config.batch_size // workers))
        run_uri = join(*default_locations(bundle_uri, model))
        with epoch_progress(run_uri, storage, model=model, epochs=train_config.epochs, say=say):
            trained = train_network(train_config, manifest=manifest, bundle=bundle_uri, storage=storage, retrain=True)
        shown = ", ".join(f"{k} {v:.3f}" for k, v in sorted(trained.metrics.items()) if isinstance(v, float))
        say(f"    {model}: {train_config.epochs} epoch(s) in {time.perf_counter() - t0:.0f} s -> "
            f"{trained.network_uri}" + (f" ({shown})" if shown else ""))
        return trained

    # The classifier first: the generators read it (G^R's agreement loss, both validation gains).
    # They do not read each other, so they train side by side: one run's start-up, data loading,
    # validation and gain measurement use the cores the other leaves idle (docs/demo.md).
    results = {model: train_one(model) for model in models if model == "classifier"}
    generators = [model for model in models if model != "classifier"]
    with ThreadPoolExecutor(max(1, len(generators))) as pool:
        running = {model: pool.submit(train_one, model) for model in generators}
        results |= {model: future.result() for model, future in running.items()}
    return {model: results[model] for model in models}


def keep_bundle(bundle_uri: str, storage: StorageConfig, folder: Path) -> Path:
    """Copy the bundle out of the demo's S3 (gone when the demo ends) into a local folder."""
    import shutil

    from attrgan.data.storage import list_dir, read_bytes

    shutil.rmtree(folder, ignore_errors=True)  # no file of an earlier demo's bundle stays beside the new one
    base = bundle_uri.rstrip("/") + "/"
    for uri in list_dir(bundle_uri, storage, recursive=True):
        target = folder / uri[len(base):]
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(read_bytes(uri, storage))
    return folder


def next_steps(bundle: Path, out: Path) -> str:
    """The commands that run the kept bundle on a user's own crops."""
    b, o = shlex.quote(str(bundle)), shlex.quote(str(out / "my-results"))
    return "\n".join([
        f"\nThe trained model is kept in {bundle}. Run it on your own crops:",
        f"    attrgan predict path/to/crops/ --bundle {b}                   # image files, folders or globs",
        f"    attrgan predict photo.jpg --bundle {b} --bbox 40,10,64,160 --json",
        f"    attrgan extract --manifest path/to/manifest.parquet --bundle {b} --out {o}   # a Parquet manifest",
        "or from Python: attrgan.load_pipeline(bundle).predict([...]) -> pandas.DataFrame",
    ])


def run_demo(config: DemoConfig, *, say: Callable[[str], None] = print) -> DemoResult:
    """Run the whole demo (see the module docstring); returns where things are and what they showed."""
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.2")
    os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")
    import ray

    logging.getLogger("ray.data").setLevel(logging.WARNING)  # the demo prints its own progress

    out = Path(config.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    steps: dict[str, float] = {}

    @contextmanager
    def step(name: str, title: str) -> Iterator[None]:
        t0 = time.perf_counter()
        say(f"\n[{len(steps) + 1}/{STEP_COUNT} {time.perf_counter() - start:6.0f} s] {title}")
        yield
        steps[name] = time.perf_counter() - t0
        say(f"    ({steps[name]:.0f} s)")

    try:
        with local_s3() as storage:
            result = _run(config, storage, out, step, say)
    finally:
        if ray.is_initialized():
            ray.shutdown()
    seconds = time.perf_counter() - start
    summary = {"seconds": round(seconds, 1), "steps": {k: round(v, 1) for k, v in steps.items()},
               "config": {k: v for k, v in dataclasses.asdict(config).items()},
               "gains_ma": result["gains_ma"], "intervals": result["intervals"], "tracks": result["tracks"],
               "report": str(result["report"]), "bundle": str(result["bundle"]), "page": str(result["page"])}
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    say(f"\nDone in {seconds / 60:.1f} min. Report: {result['report']}")
    say(next_steps(result["bundle"], out))
    return DemoResult(out=out, report=result["report"], bundle=result["bundle"], table2=result["table2"],
                      gains_ma=result["gains_ma"], query=result["query"], steps=steps, seconds=seconds,
                      page=result["page"])


def _run(config: DemoConfig, storage: StorageConfig, out: Path, step: Callable, say: Callable[[str], None]) -> dict:
    from attrgan.corrupt import SUFFIX as CORRUPT_SUFFIX, corrupt_manifest
    from attrgan.data.manifest import read_manifest, write_manifest
    from attrgan.data.synth import NIGHT_HOURS, NIGHT_START, generate
    from attrgan.evaluate import EvaluateConfig, evaluate
    from attrgan.experiments import COMPARISONS
    from attrgan.extract import ExtractConfig, run_extract
    from attrgan.report import gain_text, restoration_verdict, summary_row, track_section
    from attrgan.results import load_results
    from attrgan.search import format_table, search

    root = f"s3://{BUCKET}"
    bundle_uri = f"{root}/models/demo"
    with step("setup", f"local S3 at {storage.endpoint_url} (bucket {BUCKET}), local Ray with {config.ray_cpus} CPUs"):
        start_quiet_ray(config.ray_cpus)

    with step("synth", f"render {config.crops} labelled synthetic crops"):
        archive = generate(f"{root}/archive", config.crops, seed=config.seed, storage=storage, splits=SPLITS,
                           track_splits=TRACK_SPLITS)
        table = read_manifest(archive, storage=storage, columns=["split"])
        counts = {s: int(pc.sum(pc.equal(table["split"], s)).as_py() or 0) for s in ("train", "val", "test")}
        say(f"    archive manifest {archive}: {counts}")

    with step("train", "train the three networks with Ray Train (cpu-small preset)"):
        train_bundle(archive, bundle_uri, storage, train=config.train, seed=config.seed, ray_cpus=config.ray_cpus,
                     say=say)
        bundle = keep_bundle(bundle_uri, storage, out / "bundle")
        say(f"    model bundle kept in {bundle}")

    with step("extract", f"nightly extraction (Ray Data) on {config.night_crops} new crops in tracks: "
                         "clean, occluded, low-res frames"):
        night_src = generate(f"{root}/night-src", config.night_crops, seed=config.seed + 1000, storage=storage,
                             splits=(0.0, 0.0, 1.0), track_splits=("test",))
        occluded = corrupt_manifest(night_src, f"{root}/night-occluded", kind="occlusion", seed=config.seed,
                                    storage=storage)
        lowres = corrupt_manifest(night_src, f"{root}/night-lowres", kind="lowres", seed=config.seed, storage=storage)
        versions = [read_manifest(u, storage=storage) for u in (night_src, occluded, lowres)]
        night = night_manifest(*versions, heights=image_heights(versions[0]["image_uri"].to_pylist(), storage),
                               seed=config.seed)
        night_uri = write_manifest(night, f"{root}/nightly/manifest", storage=storage, partition_cols=["date"])
        results_uri = f"{root}/results"
        summary = run_extract(ExtractConfig(manifest=night_uri, bundle=bundle_uri, out=results_uri,
                                            batch_size=config.batch_size, storage=storage))
        kinds = {kind: sum(c.endswith(suffix) for c in night["crop_id"].to_pylist()) for kind, suffix in
                 (("occluded", CORRUPT_SUFFIX["occlusion"]), ("low-res", CORRUPT_SUFFIX["lowres"]))}
        tracks = len(set(night["track_id"].to_pylist()) - {None}) if "track_id" in night.column_names else 0
        say(f"    manifest {night_uri} ({night.num_rows} crops in {tracks} tracks: "
            f"{night.num_rows - sum(kinds.values())} clean, {kinds['occluded']} occluded, {kinds['low-res']} low-res; "
            f"partitions {sorted(set(night['date'].to_pylist()))}) -> results {results_uri}")
        say(f"    {summary.rows} rows, {summary.super_resolved} super-resolved, {summary.reconstructed} "
            f"reconstructed, errors {summary.errors or 'none'}")
        say("\n".join(f"    {name} {'ran' if r['runs'] else 'skipped'}: {r['reason']}"
                      for name, r in summary.restorations.items()))

    with step("evaluate", "evaluation job (paper Tables 1 and 2, and per person) on the archive's test split"):
        evaluation = evaluate(EvaluateConfig(manifest=archive, bundle=bundle_uri, out=str(out / "report"),
                                             split="test", sets_uri=f"{root}/eval-sets", limit=config.eval_limit,
                                             batch_size=config.batch_size, examples=config.examples,
                                             seed=config.seed, storage=storage),
                              progress=lambda m: say(f"    {m}"))
        m = evaluation.metrics
        rows = [("clean", "clean"), ("occluded", "occluded"), ("occluded_reconstruction", "occluded + reconstruction"),
                ("lowres_bilinear", "low-res + bilinear"), ("lowres_superres", "low-res + super-resolution"),
                ("corrupted", "corrupted (classifier alone)"), ("restored", "restored (complete pipeline)")]
        lines = [f"    {'input':32s} {'mA':>6s} {'Acc':>6s} {'Prec':>6s} {'Rec':>6s} {'F1':>6s}"]
        lines += [f"    {label:32s} " + " ".join(f"{v:>6s}" for v in summary_row(m[key])) for key, label in rows]
        table2 = "\n".join(lines)
        say(table2)
        gains = {name: m[after].ma - m[before].ma for name, before, after in COMPARISONS}
        say("    mA gain from restoring (points):")
        say("\n".join(f"      {n}: {gain_text(i)}" for n, i in evaluation.intervals.items()))
        say(f"    -> {restoration_verdict(evaluation.intervals)}")
        intervals = {n: i.to_dict() for n, i in evaluation.intervals.items()}
        people = evaluation.tracks
        if people is not None:
            say("    per person (tracks):")
            say("\n".join("    " + line for line in track_section(people).splitlines()[2:]))

    with step("query", f"pandas query: crops with a {QUERY_ATTRIBUTE} on one camera last night"):
        night_end = NIGHT_START + dt.timedelta(hours=NIGHT_HOURS)
        everything = load_results(results_uri, start=NIGHT_START, end=night_end, storage=storage,
                                  columns=["camera_id"])
        camera = everything["camera_id"].value_counts().idxmax()
        df = load_results(results_uri, start=NIGHT_START, end=night_end, cameras=[camera],
                          attributes=[QUERY_ATTRIBUTE], storage=storage)
        hits = df[(df["status"] == "ok") & df[QUERY_ATTRIBUTE].fillna(False)]  # <NA> on error rows
        hits = hits.sort_values(f"{QUERY_ATTRIBUTE}_score", ascending=False)[
            ["crop_id", "captured_at", f"{QUERY_ATTRIBUTE}_score", "super_resolved", "reconstructed"]]
        say(f"    load_results({results_uri!r}, start={NIGHT_START:%Y-%m-%d %H:%M}, end={night_end:%Y-%m-%d %H:%M}, "
            f"cameras=[{camera!r}], attributes=[{QUERY_ATTRIBUTE!r}])")
        say(f"    {len(hits)} of {len(df)} crops on {camera} have a {QUERY_ATTRIBUTE}:")
        say("\n".join("      " + line for line in hits.head(8).to_string(index=False).splitlines()))
        hits.to_csv(out / f"query_{QUERY_ATTRIBUTE}_{camera}.csv", index=False)

    with step("search", f"people search: last night's people with a {QUERY_ATTRIBUTE}, best first, as a page"):
        where = f"{QUERY_ATTRIBUTE} and not female"
        found = search(results_uri, where, start=NIGHT_START, end=night_end, top=SEARCH_TOP,
                       html_path=out / "search.html", storage=storage)
        say(f"    attrgan search --results {results_uri} --where {where!r} --top {SEARCH_TOP} --html {found.page}")
        say(f"    {len(found.tracks)} people (tracks) match; the best:")
        say("\n".join("      " + line for line in format_table(found.tracks.head(8), found.query).splitlines()))
        say(f"    page: {found.page}")

    return {"report": evaluation.report_path, "table2": table2, "gains_ma": gains, "intervals": intervals,
            "tracks": people.to_dict() if people is not None else None, "query": hits, "bundle": bundle,
            "page": found.page}

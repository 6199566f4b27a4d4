"""The `attrgan` command: one subcommand per job, one override convention, one-line errors.

One module on purpose (it is long): each subcommand's parser and how its flags become the job's
settings sit side by side, so a newcomer sees every command's surface in one place.

    attrgan train | extract | evaluate | synth | convert | demo | predict | export | search [--help]

Every job takes `--config FILE` (YAML) where it has settings and `--set key=value` (repeatable;
dotted keys reach nested settings: `--set pipeline.occlusion_threshold=0.6`,
`--set storage.endpoint_url=http://127.0.0.1:9000`). `jobs/<name>.py` runs the same subcommand,
for `ray job submit --working-dir . -- python jobs/<name>.py ...`.

Exit codes: 0 done; 2 bad input (arguments, settings, manifest, bundle, image: the project's
`ValueError` kinds, or a missing file), printed as one line `attrgan <cmd>: error: <message>`;
1 a runtime failure (`ExtractError`, storage or network errors), also one line; 130 interrupted.
`ATTRGAN_TRACEBACK=1` shows the full traceback instead.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import re
import sys
from collections.abc import Callable, Sequence
from typing import Any

from attrgan.config import StorageConfig, load, merge, parse_overrides, to_dict

COMMANDS = ("train", "extract", "evaluate", "synth", "convert", "demo", "reproduce", "predict", "export", "search")
EXIT_RUNTIME = 1
EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130


def _add_set(parser: argparse.ArgumentParser, example: str) -> None:
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help=f"override any setting, dotted keys for nested ones, e.g. --set {example} (repeatable)")


def _parser(name: str, doc: str) -> argparse.ArgumentParser:
    return argparse.ArgumentParser(prog=f"attrgan {name}", description=doc,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)


def _logging(level: int = logging.INFO) -> None:
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


# --- train ----------------------------------------------------------------------------------------

TRAIN_DOC = """Train one network with Ray Train and write it into a model bundle.

    attrgan train --model classifier --manifest s3://bucket/synth/manifest.parquet \\
        --bundle s3://bucket/models/v1 [--preset cpu-small] [--workers 2] [--epochs 4] [--set lr=0.001]

writes `<bundle>/<model>/model.safetensors + config.json`, so three runs (classifier,
reconstruction, superres) fill one bundle folder. Rerunning resumes an interrupted run from its
last checkpoint; a finished run is not trained again unless --retrain. The run's folder holds
losses.csv, epochs.csv, curves.png and TensorBoard event files. On a laptop it starts a local Ray
(only when there is something to train); under `ray job submit` (or with RAY_ADDRESS set) it
joins that cluster.
"""


def train_parser() -> argparse.ArgumentParser:
    from attrgan.contracts import NETWORKS
    from attrgan.train.train_config import PRESETS

    parser = _parser("train", TRAIN_DOC)
    parser.add_argument("--model", required=True, choices=NETWORKS)
    parser.add_argument("--manifest", required=True, help="training manifest (local path or s3://)")
    parser.add_argument("--bundle", required=True, help="bundle folder to write <model>/ into (local or s3://)")
    parser.add_argument("--config", help="YAML file of TrainConfig settings")
    parser.add_argument("--preset", default="cpu-small", choices=PRESETS)
    parser.add_argument("--workers", type=int, help="training workers (DDP ranks)")
    parser.add_argument("--gpu", action="store_true", help="one GPU per worker")
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--run-name", help="name of the run (default: <bundle name>-<model>)")
    parser.add_argument("--storage-path", help="where runs keep checkpoints (default: runs/ beside the bundle)")
    _add_set(parser, "lr=0.001")
    parser.add_argument("--retrain", action="store_true", help="train again even if the run finished")
    return parser


def run_train(args: argparse.Namespace) -> None:
    from attrgan.train.train_config import load_train_config, with_values

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # local clusters and jobs run without token auth
    _logging()
    config = load_train_config(args.model, preset_name=args.preset, path=args.config,
                               overrides=parse_overrides(args.overrides))
    config = with_values(config, workers=args.workers, epochs=args.epochs, use_gpu=args.gpu or None)

    from attrgan.train.ray_train import train_network

    result = train_network(config, manifest=args.manifest, bundle=args.bundle, run_name=args.run_name,
                           storage_path=args.storage_path, storage=StorageConfig.from_env(), retrain=args.retrain)
    state = "trained" if result.trained else "already finished, not retrained"
    print(f"{result.model}: {state}; network at {result.network_uri}; run {result.run_uri}")
    for name, value in sorted(result.metrics.items()):
        print(f"  {name} = {value:.4f}" if isinstance(value, float) else f"  {name} = {value}")


# --- extract --------------------------------------------------------------------------------------

EXTRACT_DOC = """Nightly extraction: restore-and-classify every crop of a manifest, results to Parquet.

    attrgan extract --manifest s3://archive/manifests/crops --bundle s3://models/attrgan/v3 \\
        --out s3://archive/attributes [--partition date=2026-11-25 ...] [--since 2026-11-01] \\
        [--gpus-per-actor 0.5] [--actors 4] [--batch-size 64] [--full] [--config extract.yaml] [--set key=value ...] \\
        [--summary-json s3://archive/attributes-runs/2026-11-26.json]

Each manifest partition is written to `<out>/<partition path>/` with a `_SUCCESS` marker; by
default partitions already done with the same bundle version are skipped (`--full` redoes them).
One run writes an output at a time: a second one stops with the holder of `<out>/_lease.json`
(`--break-lease` removes it, for a holder known to be dead).
Locally it starts its own Ray; under `ray job submit` (or with RAY_ADDRESS) it joins the cluster.
The S3 endpoint comes from the environment (AWS_ENDPOINT_URL, ATTRGAN_S3_*) and the YAML `storage:`.
The log has a line per committed partition, a progress line every `progress_interval_s` (30 s)
and the run's summary; `--summary-json` also writes that summary as JSON (each partition's rows,
errors by kind, restorations and seconds), partial runs included.
"""


def extract_parser() -> argparse.ArgumentParser:
    parser = _parser("extract", EXTRACT_DOC)
    parser.add_argument("--manifest", required=True, help="manifest URI: file, folder or partitioned prefix")
    parser.add_argument("--bundle", required=True, help="model bundle URI (local or s3://)")
    parser.add_argument("--out", required=True, help="results base URI (local or s3://)")
    parser.add_argument("--partition", dest="partitions", action="append", metavar="P",
                        help="partition to process, e.g. date=2026-11-25 (repeatable; default: all)")
    parser.add_argument("--since", metavar="DATE", help="only partitions dated DATE or later (the `since` setting)")
    parser.add_argument("--gpus-per-actor", type=float, help="GPU share of each pipeline actor (default 1)")
    parser.add_argument("--actors", type=int, help="most pipeline actors (default 2)")
    parser.add_argument("--batch-size", type=int, help="rows per batch (default 64)")
    parser.add_argument("--full", action="store_true", help="redo partitions that are already done")
    parser.add_argument("--allow-prefix", dest="allowed_prefixes", action="append", metavar="URI",
                        help="prefix image_uri values may lie under, e.g. s3://frames (repeatable; default: "
                             "ATTRGAN_ALLOWED_PREFIXES, else an S3 manifest's own bucket); other rows are refused")
    parser.add_argument("--break-lease", action="store_true",
                        help="remove the output's lease first, whoever holds it (only when sure that run is dead)")
    parser.add_argument("--summary-json", metavar="URI",
                        help="also write the run's summary as JSON to this file or s3:// URI")
    parser.add_argument("--config", help="YAML file with ExtractConfig settings")
    _add_set(parser, "pipeline.sr_max_height=100")
    return parser


def _with_flags(overrides: Sequence[str], flags: dict[str, Any]) -> dict[str, Any]:
    """`--set` values, then the named flags that were given (None = not given) over them."""
    return merge(parse_overrides(overrides), {k: v for k, v in flags.items() if v is not None})


def extract_config(args: argparse.Namespace) -> Any:
    """Defaults ← storage from the environment ← --config YAML ← --set ← the named flags.

    `--set` reaches every ExtractConfig field, so settings added there need no change here."""
    from attrgan.extract import ExtractConfig

    flags: dict[str, Any] = {
        "manifest": args.manifest, "bundle": args.bundle, "out": args.out, "partitions": args.partitions,
        "since": args.since, "gpus_per_actor": args.gpus_per_actor, "actors": args.actors,
        "batch_size": args.batch_size, "incremental": False if args.full else None,
        "break_lease": True if args.break_lease else None,
        "storage": {"allowed_prefixes": args.allowed_prefixes} if args.allowed_prefixes else None}
    base = {"storage": to_dict(StorageConfig.from_env())}
    return load(ExtractConfig, args.config, _with_flags(args.overrides, flags), base=base)


def run_extract(args: argparse.Namespace) -> None:
    from attrgan.extract import IncompleteRun
    from attrgan.extract import run_extract as extract

    _logging()
    config = extract_config(args)
    try:
        summary = extract(config)  # checks the bundle and the manifest, then joins or starts Ray; logs its summary
    except IncompleteRun as exc:  # the committed partitions are in the record too
        _write_summary(args.summary_json, exc.summary, config.storage)
        raise
    _write_summary(args.summary_json, summary, config.storage)


def _write_summary(uri: str | None, summary: Any, storage: StorageConfig) -> None:
    import json

    from attrgan.data.storage import write_bytes

    if uri:
        write_bytes(uri, json.dumps(summary.to_dict(), indent=2).encode() + b"\n", storage)


# --- evaluate -------------------------------------------------------------------------------------

EVALUATE_DOC = """Evaluate a model bundle on a labelled manifest: the paper's Tables 1 and 2 and a visual report.

    attrgan evaluate --manifest s3://archive/synth/manifest.parquet \\
        --bundle s3://models/attrgan/2024-05-01 --out ./eval-out [--split test] [--config eval.yaml] \\
        [--set key=value ...]

Locally it starts its own Ray; under `ray job submit` (or with RAY_ADDRESS) it joins the cluster.
`--set` overrides any EvaluateConfig setting (e.g. `--set actors=4 --set pipeline.device=cuda`).
"""


def evaluate_parser() -> argparse.ArgumentParser:
    parser = _parser("evaluate", EVALUATE_DOC)
    parser.add_argument("--manifest", required=True, help="labelled manifest URI (local or s3://)")
    parser.add_argument("--bundle", required=True, help="model bundle URI (local or s3://)")
    parser.add_argument("--out", required=True, help="local folder for report.md, metrics.json and figures")
    parser.add_argument("--split", default="test", help="split to evaluate ('all' for every row; default test)")
    parser.add_argument("--config", help="YAML file with EvaluateConfig settings")
    _add_set(parser, "limit=200")
    return parser


def run_evaluate(args: argparse.Namespace) -> None:
    from attrgan.evaluate import EvaluateConfig, evaluate

    _logging()
    flags = {"manifest": args.manifest, "bundle": args.bundle, "out": args.out}
    values = merge({"split": None if args.split == "all" else args.split}, _with_flags(args.overrides, flags))
    config = load(EvaluateConfig, args.config, values, base={"storage": to_dict(StorageConfig.from_env())})
    result = evaluate(config, progress=print)
    print(f"report: {result.report_path}")


# --- synth ----------------------------------------------------------------------------------------

SYNTH_DOC = """Make the synthetic pedestrian dataset, or a corrupted copy of any labelled manifest.

    attrgan synth generate --out s3://bucket/synth -n 20000 [--seed 0] [--workers 2] [--cameras 4]
        [--splits 0.7 0.1 0.2] [--track-splits val,test]
    attrgan synth corrupt --kind occlusion --manifest s3://bucket/synth/manifest.parquet \\
        --out s3://bucket/synth-occ [--seed 0]

`generate` writes images under `<out>/images/` and `<out>/manifest.parquet`; `corrupt` writes the
paper's occluded (bottom 50-80 % covered by another person's upper body) or 4x downsampled copy
the same way. Paths may be local, file:// or s3:// (object storage settings come from the
environment, see `attrgan.config.StorageConfig`).
"""


def synth_parser() -> argparse.ArgumentParser:
    parser = _parser("synth", SYNTH_DOC)
    commands = parser.add_subparsers(dest="command", required=True)
    gen = commands.add_parser("generate", help="render the synthetic dataset")
    gen.add_argument("--out", required=True, help="output folder (path or URI)")
    gen.add_argument("-n", type=int, required=True, help="number of crops")
    gen.add_argument("--seed", type=int, default=0)
    gen.add_argument("--workers", type=int, default=None, help="processes (default: the machine's cores, at most 8)")
    gen.add_argument("--cameras", type=int, default=4)
    gen.add_argument("--splits", type=float, nargs=3, default=(0.7, 0.1, 0.2), metavar=("TRAIN", "VAL", "TEST"))
    gen.add_argument("--track-splits", default="",
                     help="splits rendered as people over several frames, comma-separated (e.g. val,test; "
                          "default none)")
    cor = commands.add_parser("corrupt", help="write an occluded or low-resolution copy of a manifest")
    cor.add_argument("--kind", required=True, choices=("occlusion", "lowres"))
    cor.add_argument("--manifest", required=True, help="source manifest (path or URI)")
    cor.add_argument("--out", required=True, help="output folder (path or URI)")
    cor.add_argument("--seed", type=int, default=0)
    cor.add_argument("--factor", type=int, default=4, help="lowres: downsampling factor")
    cor.add_argument("--fraction-range", type=float, nargs=2, default=(0.5, 0.8), metavar=("LOW", "HIGH"),
                     help="occlusion: covered share of the crop height")
    return parser


def run_synth(args: argparse.Namespace) -> None:
    import time

    storage = StorageConfig.from_env()
    start = time.perf_counter()
    if args.command == "generate":
        from attrgan.data.synth import generate

        uri = generate(args.out, args.n, seed=args.seed, storage=storage, workers=args.workers,
                       splits=tuple(args.splits), cameras=args.cameras,
                       track_splits=tuple(t.strip() for t in args.track_splits.split(",") if t.strip()))
        elapsed = time.perf_counter() - start
        print(f"wrote {args.n} crops in {elapsed:.1f} s ({args.n / elapsed:.0f} crops/s) -> {uri}")
    else:
        from attrgan.corrupt import corrupt_manifest

        uri = corrupt_manifest(args.manifest, args.out, kind=args.kind, seed=args.seed, storage=storage,
                               fraction_range=tuple(args.fraction_range), factor=args.factor)
        print(f"wrote the {args.kind} copy in {time.perf_counter() - start:.1f} s -> {uri}")


# --- convert --------------------------------------------------------------------------------------

CONVERT_DOC = r"""Convert a public attribute dataset's annotation file into a training manifest.

    attrgan convert --dataset rap1 --annotation RAP_annotation.mat \
        --images /data/RAP_dataset --out s3://bucket/manifests/rap1 [--split 0]

The annotation file is read from the local disk; `--images` and `--out` may be local paths,
`file://` or `s3://` URIs (object storage settings come from the environment, see
`attrgan.config.StorageConfig`).
"""


def convert_parser() -> argparse.ArgumentParser:
    from attrgan.data.convert import DATASETS, RAP1_VAL_FRACTION

    parser = _parser("convert", CONVERT_DOC)
    parser.add_argument("--dataset", required=True, choices=DATASETS)
    parser.add_argument("--annotation", required=True, help="the dataset's .mat annotation file (local path)")
    parser.add_argument("--images", required=True, help="the dataset's image folder (path or URI)")
    parser.add_argument("--out", required=True, help="where the manifest goes (path or URI)")
    parser.add_argument("--split", type=int, default=0, help="partition index 0-4 (RAP, PETA); default 0")
    parser.add_argument("--val-fraction", type=float, default=RAP1_VAL_FRACTION,
                        help=f"RAP v1 only: share of train kept for validation (default {RAP1_VAL_FRACTION})")
    return parser


def run_convert(args: argparse.Namespace) -> None:
    from collections import Counter

    import pyarrow as pa

    from attrgan.data.convert import convert

    table = convert(args.dataset, annotation=args.annotation, images=args.images, out=args.out,
                    split=args.split, val_fraction=args.val_fraction, storage=StorageConfig.from_env())
    counts = Counter(table.column("split").to_pylist())
    summary = ", ".join(f"{name or 'none'} {counts[name]}" for name in ("train", "val", "test", None) if counts[name])
    attributes = sum(1 for field in table.schema if pa.types.is_int8(field.type))  # label columns
    print(f"wrote {table.num_rows} rows ({summary}), {attributes} attributes -> {args.out}")


# --- demo -----------------------------------------------------------------------------------------

DEMO_DOC = """The whole product on this machine in about 15 minutes: `make demo` (or `--small` for a quick look).

    attrgan demo [--small] [--out demo-out] [--crops 2000] [--night-crops 300] [--set classifier.epochs=6]

Starts a local S3 server and a local Ray, renders a synthetic archive, trains the three networks
with Ray Train, runs the nightly extraction and the evaluation with Ray Data, queries the results
with pandas, keeps the trained model bundle in `<out>/bundle/` and prints the commands that run
it on your own crops. Needs no cluster, no cloud and no data. `--set` reaches any DemoConfig
setting; a key that starts with a network name is a training setting of that network
(`--set classifier.epochs=6` is `--set train.classifier.epochs=6`).
"""


def demo_parser() -> argparse.ArgumentParser:
    parser = _parser("demo", DEMO_DOC)
    parser.add_argument("--small", action="store_true", help="tiny sizes: the whole path in a minute or two")
    parser.add_argument("--out", help="local folder for the report, the bundle and the summary (default demo-out)")
    parser.add_argument("--crops", type=int, help="synthetic archive size")
    parser.add_argument("--night-crops", type=int, help="crops in the night's manifest")
    parser.add_argument("--eval-limit", type=int, help="evaluate only the first N test crops")
    parser.add_argument("--seed", type=int)
    _add_set(parser, "classifier.epochs=6")
    return parser


def demo_config(args: argparse.Namespace) -> Any:
    from attrgan.config import from_dict
    from attrgan.devtools.demo import DemoConfig
    from attrgan.contracts import NETWORKS

    base = DemoConfig.small() if args.small else DemoConfig()
    overrides = parse_overrides(args.overrides)
    train = {k: overrides.pop(k) for k in list(overrides) if k in NETWORKS}  # classifier.epochs=6 shortcut
    overrides = merge(overrides, {"train": train}) if train else overrides
    flags = {"out": args.out, "crops": args.crops, "night_crops": args.night_crops, "eval_limit": args.eval_limit,
             "seed": args.seed}
    values = merge(dataclasses.asdict(base), merge(overrides, {k: v for k, v in flags.items() if v is not None}))
    return from_dict(DemoConfig, values)


def run_demo(args: argparse.Namespace) -> None:
    from attrgan.devtools.demo import run_demo as demo

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    demo(demo_config(args))


# --- reproduce ------------------------------------------------------------------------------------

REPRODUCE_DOC = """Table 2 over several training seeds on fresh test crops: `make reproduce` (about 1.5 hours on 2 cores).

    attrgan reproduce [--seeds 3] [--out reproduce-out] [--ceiling-seeds 2] [--ceilings occluded,lowres]
                      [--no-augmented] [--set classifier.epochs=6]

Per seed: the demo's archive and training with that seed, the augmented classifier (clean crops
mixed with the paper's corruptions) alone and with the seed's generators, then the evaluation on
test crops of a seed no setting was tuned on; the first --ceiling-seeds seeds also train the
information ceilings. Prints Table 2 as mean ± sd, each seed's gains with intervals, the recovery
shares and the ceilings, the recipes side by side with the one chosen on validation, and what the
gate's rule switched off; writes them to OUT/reproduce.md and OUT/reproduce.json
(attrgan.devtools.reproduce).
"""


def reproduce_parser() -> argparse.ArgumentParser:
    parser = _parser("reproduce", REPRODUCE_DOC)
    parser.add_argument("--seeds", type=int, default=3, help="number of training seeds: 0, 1, ... (default 3)")
    parser.add_argument("--out", default="reproduce-out", help="local folder for the reports (default reproduce-out)")
    parser.add_argument("--crops", type=int, help="synthetic archive size per seed (default the demo's 5000)")
    parser.add_argument("--test-crops", type=int, help="fresh test crops per seed (default 1000)")
    parser.add_argument("--ceiling-seeds", type=int, help="seeds that also train the information ceilings (default 2)")
    parser.add_argument("--ceilings", help="which ceilings, comma-separated, of occluded,lowres,corrupted "
                                           "(default occluded,lowres)")
    parser.add_argument("--no-augmented", action="store_true",
                        help="skip the augmented classifier (one classifier training per seed less)")
    parser.add_argument("--small", action="store_true", help="the demo's --small sizes: the whole path in minutes")
    _add_set(parser, "classifier.epochs=6")
    return parser


def reproduce_config(args: argparse.Namespace) -> Any:
    from attrgan.config import ConfigError
    from attrgan.devtools.demo import SMALL_TRAIN_SETTINGS, TRAIN_SETTINGS
    from attrgan.devtools.reproduce import ReproduceConfig

    base = SMALL_TRAIN_SETTINGS if args.small else TRAIN_SETTINGS
    train = merge({k: dict(v) for k, v in base.items()}, parse_overrides(args.overrides))
    unknown = sorted(set(train) - set(TRAIN_SETTINGS))
    if unknown:
        raise ConfigError(f"--set keys must start with a network name {sorted(TRAIN_SETTINGS)}, got {unknown}")
    if args.seeds < 1:
        raise ConfigError(f"--seeds must be >= 1, got {args.seeds}")
    small = {"crops": 60, "test_crops": 6, "batch_size": 8} if args.small else {}
    flags = small | {k: v for k, v in {"crops": args.crops, "test_crops": args.test_crops,
                                       "ceiling_seeds": args.ceiling_seeds,
                                       "ceilings": None if args.ceilings is None else
                                       tuple(c.strip() for c in args.ceilings.split(",") if c.strip())}.items()
                                     if v is not None}
    return ReproduceConfig(out=args.out, seeds=tuple(range(args.seeds)), train=train, augmented=not args.no_augmented,
                           **flags)


def run_reproduce(args: argparse.Namespace) -> None:
    from attrgan.devtools.reproduce import run_reproduce as reproduce

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    reproduce(reproduce_config(args))


# --- predict --------------------------------------------------------------------------------------

PREDICT_DOC = """Attributes for image files, folders or globs, in this process (no Ray, no manifest).

    attrgan predict photo.jpg crops/ 'frames/*.png' --bundle demo-out/bundle [--bbox x,y,w,h] [--json | --csv FILE]

Each image goes through the conditional pipeline (super-resolution for small crops, the
classifier, reconstruction when the lower body is occluded). One line per image: its positive
attributes with their scores, whether it was super-resolved / reconstructed, or its error.
`--json` prints one JSON record per line with every column; `--csv FILE` writes every column to
FILE. Exit code 1 when any image failed.
"""


def predict_parser() -> argparse.ArgumentParser:
    parser = _parser("predict", PREDICT_DOC)
    parser.add_argument("paths", nargs="+", metavar="PATH", help="image files, folders of images or globs")
    parser.add_argument("--bundle", required=True, help="model bundle (local folder or s3://)")
    parser.add_argument("--bbox", help="crop box x,y,w,h in pixels applied to every image (default: whole image)")
    output = parser.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true", help="one JSON record per image on stdout")
    output.add_argument("--csv", metavar="FILE", help="write every column to FILE as CSV")
    parser.add_argument("--config", help="YAML file with PredictConfig settings")
    _add_set(parser, "pipeline.occlusion_threshold=0.6")
    return parser


def _bbox(text: str | None) -> tuple[int, int, int, int] | None:
    if text is None:
        return None
    parts = text.split(",")
    try:
        x, y, w, h = (int(p) for p in parts)
    except ValueError:
        raise ValueError(f"--bbox must be four integers x,y,w,h, got {text!r}") from None
    return x, y, w, h


def run_predict(args: argparse.Namespace) -> int:
    from attrgan.predict import PredictConfig, Predictor, expand_paths, summary_line

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    config = load(PredictConfig, args.config, _with_flags(args.overrides, {"bundle": args.bundle}),
                  base={"storage": to_dict(StorageConfig.from_env())})
    bbox = _bbox(args.bbox)
    paths = expand_paths(args.paths)  # before the bundle loads: a typo fails fast
    df = Predictor.from_config(config).predict(paths, bbox=bbox)
    if args.csv:
        df.to_csv(args.csv, index=False)
        print(f"wrote {len(df)} rows -> {args.csv}")
    elif args.json:
        print(df.to_json(orient="records", lines=True, date_format="iso").rstrip("\n"))
    else:
        for _, row in df.iterrows():
            print(summary_line(row))
    return EXIT_RUNTIME if (df["status"] != "ok").any() else 0


# --- export ---------------------------------------------------------------------------------------

EXPORT_DOC = """Export a model bundle as ONNX for serving outside Python, each network checked with onnxruntime.

    attrgan export --bundle demo-out/bundle --out onnx-out [--set networks=classifier] [--set opset=18]

writes `<out>/{classifier,reconstruction,superres}/model.onnx + config.json` (the bundle's
config.json plus an "onnx" section) and prints each network's largest difference to PyTorch; an
export that differs by more than `tolerance` is not written. `--set` reaches every ExportConfig
setting (networks, opset, check_batch, tolerance) and storage.* (attrgan.export).
Needs the export extra: pip install 'attrgan[export]' (onnx, onnxruntime, onnxscript).
"""


def export_parser() -> argparse.ArgumentParser:
    parser = _parser("export", EXPORT_DOC)
    parser.add_argument("--bundle", required=True, help="model bundle URI (local folder or s3://)")
    parser.add_argument("--out", required=True, help="output folder (local or s3://)")
    _add_set(parser, "networks=classifier")
    return parser


def run_export(args: argparse.Namespace) -> None:
    from attrgan.export import ExportConfig, export_bundle, require_export_tools

    require_export_tools()  # before the bundle loads: a missing extra fails fast, naming the pip install
    overrides = parse_overrides(args.overrides)
    storage = StorageConfig.from_env(**overrides.pop("storage", {}))
    result = export_bundle(args.bundle, args.out, storage=storage, config=load(ExportConfig, overrides=overrides))
    for name, r in result["networks"].items():
        print(f"{name:<15} {r['uri']}  {r['bytes'] / 2**20:.1f} MiB  max abs difference vs PyTorch "
              f"{r['max_abs_diff']:.3g}")


# --- search ---------------------------------------------------------------------------------------

SEARCH_DOC = """Search people: the person tracks of the nightly results that match an expression, best first.

    attrgan search --results s3://archive/attributes --where "backpack and not female" \\
        [--camera cam07 ...] [--since 2026-11-25T18:00] [--until 2026-11-26T06:00] [--top 50] [--html people.html]

Prints one line per track (camera, track, first and last seen, crops, best crop, the expression's
attributes with their fused decisions and scores); --html also writes a self-contained page with
each track's best crop. The expression: attribute names (the fused decision is true), and, or,
not, parentheses, and score comparisons such as `backpack > 0.7` (attrgan.query). Times are
ISO-8601, UTC unless they say otherwise; a track overlapping [--since, --until) is kept. The S3
endpoint comes from the environment or --set storage.KEY=VALUE.
"""


def search_parser() -> argparse.ArgumentParser:
    from attrgan.search import DEFAULT_TOP

    parser = _parser("search", SEARCH_DOC)
    parser.add_argument("--results", required=True, help="results base URI written by extract (local or s3://)")
    parser.add_argument("--where", metavar="EXPR", help='e.g. "backpack and not female" (default: every track)')
    parser.add_argument("--camera", dest="cameras", action="append", metavar="ID",
                        help="only tracks of this camera (repeatable)")
    parser.add_argument("--since", metavar="TIME", help="only tracks seen at or after TIME (ISO-8601, UTC)")
    parser.add_argument("--until", metavar="TIME", help="only tracks seen before TIME (ISO-8601, UTC)")
    parser.add_argument("--top", type=int, default=DEFAULT_TOP, help=f"at most N tracks (default {DEFAULT_TOP})")
    parser.add_argument("--html", metavar="FILE", help="also write a page of the tracks with their best crops")
    _add_set(parser, "storage.endpoint_url=http://127.0.0.1:9000")
    return parser


def run_search(args: argparse.Namespace) -> None:
    from attrgan.config import ConfigError
    from attrgan.results import _utc
    from attrgan.search import format_table, search

    overrides = parse_overrides(args.overrides)
    storage = StorageConfig.from_env(**overrides.pop("storage", {}))
    if overrides:
        raise ConfigError(f"search takes only storage.* settings, got {sorted(overrides)}")
    if args.top < 1:
        raise ConfigError(f"--top must be >= 1, got {args.top}")
    since, until = _utc(args.since, "--since"), _utc(args.until, "--until")
    found = search(args.results, args.where, start=since, end=until, cameras=args.cameras, top=args.top,
                   html_path=args.html, storage=storage)
    if found.tracks.empty:
        print("no track matches")
    else:
        print(format_table(found.tracks, found.query))
    if found.page is not None:
        print(f"page: {found.page}")


# --- dispatch -------------------------------------------------------------------------------------

PARSERS: dict[str, Callable[[], argparse.ArgumentParser]] = {
    "train": train_parser, "extract": extract_parser, "evaluate": evaluate_parser, "synth": synth_parser,
    "convert": convert_parser, "demo": demo_parser, "reproduce": reproduce_parser, "predict": predict_parser,
    "export": export_parser, "search": search_parser,
}
RUNNERS: dict[str, Callable[[argparse.Namespace], int | None]] = {
    "train": run_train, "extract": run_extract, "evaluate": run_evaluate, "synth": run_synth,
    "convert": run_convert, "demo": run_demo, "reproduce": run_reproduce, "predict": run_predict,
    "export": run_export, "search": run_search,
}


def _usage() -> str:
    lines = [f"usage: attrgan {{{','.join(COMMANDS)}}} ...", "",
             "People-attribute recognition with restoration GANs, as batch jobs.", "", "commands:"]
    lines += [f"  {name:9s} {PARSERS[name]().description.splitlines()[0]}" for name in COMMANDS]
    lines += ["", "`attrgan COMMAND --help` lists a command's flags."]
    return "\n".join(lines)


def _error_code(exc: BaseException) -> int | None:
    """2 for bad input, 1 for runtime failures, None for what should show its traceback (a bug)."""
    from attrgan.config import ConfigError

    if isinstance(exc, (ConfigError, FileNotFoundError, IsADirectoryError, NotADirectoryError)):
        return EXIT_BAD_INPUT
    if isinstance(exc, ValueError):  # ManifestError, BundleError, ImageError, TrainDataError, config checks
        return EXIT_BAD_INPUT
    if isinstance(exc, (RuntimeError, OSError)):  # ExtractError, storage and network failures
        return EXIT_RUNTIME
    return None


def _one_line(exc: BaseException) -> str:
    """`exc`'s message on one line. An error raised in a Ray task says what its cause says: Ray's
    wrapper carries the remote traceback and terminal colour codes."""
    cause = getattr(exc, "cause", None)  # ray.exceptions.RayTaskError
    if isinstance(cause, BaseException):
        exc = cause
    from attrgan.data.storage import MESSAGE_CHARS, redact

    text = re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", str(exc))
    # Redacted before whitespace is folded: a URL's user-info may hold a newline.
    return " ".join(redact(text, MESSAGE_CHARS).split()) or type(exc).__name__


def main(argv: Sequence[str] | None = None) -> None:
    """`attrgan COMMAND ...`; exits with the codes of the module docstring (returns on success)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return
    name, rest = argv[0], argv[1:]
    if name not in PARSERS:
        print(f"{_usage()}\n\nattrgan: error: unknown command {name!r}", file=sys.stderr)
        raise SystemExit(EXIT_BAD_INPUT)
    args = PARSERS[name]().parse_args(rest)  # exits 2 with argparse's usage line on bad flags
    try:
        code = RUNNERS[name](args)
    except KeyboardInterrupt:
        print(f"attrgan {name}: interrupted", file=sys.stderr)
        raise SystemExit(EXIT_INTERRUPTED) from None
    except Exception as exc:
        code = _error_code(exc)
        if code is None or os.environ.get("ATTRGAN_TRACEBACK"):
            raise
        message = _one_line(exc)
        kind = "error" if code == EXIT_BAD_INPUT else "failed"
        print(f"attrgan {name}: {kind}: {message}", file=sys.stderr)
        raise SystemExit(code) from None
    if code:
        raise SystemExit(code)


if __name__ == "__main__":
    main()

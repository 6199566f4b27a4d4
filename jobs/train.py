"""Train one network with Ray Train and write it into a model bundle.

    python jobs/train.py --model classifier --manifest s3://bucket/synth/manifest.parquet \
        --bundle s3://bucket/models/v1 [--preset cpu-small] [--workers 2] [--epochs 4] [--set lr=0.001]

writes `<bundle>/<model>/model.safetensors + config.json`, so three runs (classifier,
reconstruction, superres) fill one bundle folder. Rerunning resumes an interrupted run from its
last checkpoint; a finished run is not trained again unless --retrain. On a laptop it starts a
local Ray (only when there is something to train); under `ray job submit` (or with RAY_ADDRESS
set) it joins that cluster.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from attrgan.config import ConfigError, StorageConfig, parse_overrides
from attrgan.train.config import NETWORKS, PRESETS, load_train_config, with_values


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
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
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a setting, e.g. --set lr=0.001 (repeatable)")
    parser.add_argument("--retrain", action="store_true", help="train again even if the run finished")
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    # Local clusters and jobs run without token auth (on by default in Ray 2.60).
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        config = load_train_config(args.model, preset_name=args.preset, path=args.config,
                                   overrides=parse_overrides(args.overrides))
        config = with_values(config, workers=args.workers, epochs=args.epochs, use_gpu=args.gpu or None)
    except ConfigError as exc:
        sys.exit(f"train.py: {exc}")

    from attrgan.data.manifest import ManifestError
    from attrgan.train.data import TrainDataError
    from attrgan.train.ray_train import train_network

    try:
        result = train_network(config, manifest=args.manifest, bundle=args.bundle, run_name=args.run_name,
                               storage_path=args.storage_path, storage=StorageConfig.from_env(),
                               retrain=args.retrain)
    except (ConfigError, ManifestError, TrainDataError) as exc:
        sys.exit(f"train.py: {exc}")
    state = "trained" if result.trained else "already finished, not retrained"
    print(f"{result.model}: {state}; network at {result.network_uri}; run {result.run_uri}")
    for name, value in sorted(result.metrics.items()):
        print(f"  {name} = {value:.4f}" if isinstance(value, float) else f"  {name} = {value}")


if __name__ == "__main__":
    main()

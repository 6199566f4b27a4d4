"""Nightly extraction: restore-and-classify every crop of a manifest, results to Parquet.

    python jobs/extract.py --manifest s3://archive/manifests/crops --bundle s3://models/attrgan/v3 \
        --out s3://archive/attributes [--partition date=2026-11-25 ...] [--gpus-per-actor 0.5] \
        [--actors 4] [--batch-size 64] [--full] [--config extract.yaml] [--set key=value ...]

Each manifest partition is written to `<out>/<partition path>/` with a `_SUCCESS` marker; by
default partitions already done with the same bundle version are skipped (`--full` redoes them).
Locally it starts its own Ray; under `ray job submit` (or with RAY_ADDRESS) it joins the cluster.
The S3 endpoint comes from the environment (AWS_ENDPOINT_URL, ATTRGAN_S3_*) and the YAML `storage:`.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from attrgan.config import ConfigError, StorageConfig, load, merge, parse_overrides, to_dict  # noqa: E402
from attrgan.extract import ExtractConfig, ExtractError, run_extract  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--manifest", required=True, help="manifest URI: file, folder or partitioned prefix")
    parser.add_argument("--bundle", required=True, help="model bundle URI (local or s3://)")
    parser.add_argument("--out", required=True, help="results base URI (local or s3://)")
    parser.add_argument("--partition", dest="partitions", action="append", metavar="P",
                        help="partition to process, e.g. date=2026-11-25 (repeatable; default: all)")
    parser.add_argument("--gpus-per-actor", type=float, help="GPU share of each pipeline actor (default 1)")
    parser.add_argument("--actors", type=int, help="most pipeline actors (default 2)")
    parser.add_argument("--batch-size", type=int, help="rows per batch (default 64)")
    parser.add_argument("--full", action="store_true", help="redo partitions that are already done")
    parser.add_argument("--allow-prefix", dest="allowed_prefixes", action="append", metavar="URI",
                        help="prefix image_uri values may lie under, e.g. s3://frames (repeatable; default: "
                             "ATTRGAN_ALLOWED_PREFIXES, else an S3 manifest's own bucket); other rows are refused")
    parser.add_argument("--config", help="YAML file with ExtractConfig settings")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override any setting, e.g. --set pipeline.sr_max_height=100 (repeatable)")
    return parser


def build_config(args: argparse.Namespace) -> ExtractConfig:
    """Defaults ← storage from the environment ← --config YAML ← --set ← the named flags."""
    flags = {"manifest": args.manifest, "bundle": args.bundle, "out": args.out, "partitions": args.partitions,
             "gpus_per_actor": args.gpus_per_actor, "actors": args.actors, "batch_size": args.batch_size,
             "incremental": False if args.full else None}
    flags = {k: v for k, v in flags.items() if v is not None}
    if args.allowed_prefixes:
        flags["storage"] = {"allowed_prefixes": args.allowed_prefixes}
    base = {"storage": to_dict(StorageConfig.from_env())}
    return load(ExtractConfig, args.config, merge(parse_overrides(args.overrides), flags), base=base)


def init_ray() -> None:
    """Join the cluster named by RAY_ADDRESS (or the submitting job's), else start a local Ray."""
    import ray

    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # local runs: no token auth (on by default in 2.60)
    if os.environ.get("RAY_ADDRESS") or os.environ.get("RAY_JOB_ID"):
        ray.init()  # never num_cpus here: the cluster decides
    else:
        ray.init(include_dashboard=False, runtime_env={"env_vars": {"RAY_AUTH_MODE": "disabled"}})


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        config = build_config(args)
    except (ConfigError, ValueError) as exc:
        sys.exit(f"extract.py: {exc}")

    from attrgan.bundle import BundleError
    from attrgan.data.manifest import ManifestError

    init_ray()
    try:
        run_extract(config)  # logs its summary: rows, errors by kind, restorations, crops/s
    except (ManifestError, BundleError, ExtractError) as exc:
        sys.exit(f"extract.py: {exc}")


if __name__ == "__main__":
    main()

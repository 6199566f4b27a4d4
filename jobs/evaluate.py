"""Evaluate a model bundle on a labelled manifest: the paper's Tables 1 and 2 and a visual report.

    python jobs/evaluate.py --manifest s3://archive/synth/manifest.parquet \
        --bundle s3://models/attrgan/2024-05-01 --out ./eval-out [--split test] [--config eval.yaml] [key=value ...]

Locally it starts its own Ray; under `ray job submit` (or with RAY_ADDRESS) it joins the cluster.
`key=value` overrides set any EvaluateConfig field (e.g. `actors=4 pipeline.device=cuda`).
"""

from __future__ import annotations

import argparse
import logging

from attrgan.config import ConfigError, StorageConfig, load, merge, parse_overrides, to_dict
from attrgan.evaluate import EvaluateConfig, evaluate


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--manifest", required=True, help="labelled manifest URI (local or s3://)")
    parser.add_argument("--bundle", required=True, help="model bundle URI (local or s3://)")
    parser.add_argument("--out", required=True, help="local folder for report.md, metrics.json and figures")
    parser.add_argument("--split", default="test", help="split to evaluate ('all' for every row; default test)")
    parser.add_argument("--config", help="YAML file with EvaluateConfig settings")
    parser.add_argument("overrides", nargs="*", help="key=value settings, e.g. seed=3 limit=200")
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    try:
        values = {"manifest": args.manifest, "bundle": args.bundle, "out": args.out,
                  "split": None if args.split == "all" else args.split,
                  "storage": to_dict(StorageConfig.from_env())}
        config = load(EvaluateConfig, args.config, merge(values, parse_overrides(args.overrides)))
    except ConfigError as exc:
        raise SystemExit(f"evaluate: {exc}") from None
    result = evaluate(config, progress=print)
    print(f"report: {result.report_path}")


if __name__ == "__main__":
    main()

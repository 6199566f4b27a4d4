"""The whole product on this machine in about 15 minutes: `make demo` (or `--small` for a quick look).

    python jobs/demo.py [--small] [--out demo-out] [--crops 2000] [--night-crops 300] [--set classifier.epochs=6]

Starts a local S3 server and a local Ray, renders a synthetic archive, trains the three networks
with Ray Train, runs the nightly extraction and the evaluation with Ray Data, queries the results
with pandas, and prints where the report is. Needs no cluster, no cloud and no data.
"""

from __future__ import annotations

import argparse
import logging

from attrgan.config import ConfigError, merge, parse_overrides
from attrgan.demo import DemoConfig, run_demo


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small", action="store_true", help="tiny sizes: the whole path in a minute or two")
    parser.add_argument("--out", default="demo-out", help="local folder for the report and summary (default demo-out)")
    parser.add_argument("--crops", type=int, help="synthetic archive size")
    parser.add_argument("--night-crops", type=int, help="crops in the night's manifest")
    parser.add_argument("--eval-limit", type=int, help="evaluate only the first N test crops")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="NETWORK.KEY=VALUE",
                        help="training setting over the demo's, e.g. --set classifier.epochs=6 (repeatable)")
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    changes = {k: v for k, v in {"out": args.out, "crops": args.crops, "night_crops": args.night_crops,
                                 "eval_limit": args.eval_limit, "seed": args.seed}.items() if v is not None}
    try:
        base = DemoConfig.small() if args.small else DemoConfig()
        train = merge({k: dict(v) for k, v in base.train.items()}, parse_overrides(args.overrides))
        config = DemoConfig.small(**changes, train=train) if args.small else DemoConfig(**changes, train=train)
    except (ConfigError, ValueError) as exc:
        raise SystemExit(f"demo: {exc}") from None
    run_demo(config)


if __name__ == "__main__":
    main()

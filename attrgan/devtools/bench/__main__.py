"""Run the benchmark sections: `python -m attrgan.devtools.bench [--quick] [--only models,data,...] [--bundle DIR]`."""

from __future__ import annotations

import argparse
import importlib
import os
import platform
import time

import torch

SECTIONS = ("models", "data", "train", "layout", "extract", "precision", "agreement", "dataplane", "manifest")
# Sections that measure a trained bundle rather than random networks take --bundle.
BUNDLE_SECTIONS = frozenset({"agreement"})


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m attrgan.devtools.bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer iterations and smaller inputs")
    parser.add_argument("--only", default=",".join(SECTIONS),
                        help=f"comma-separated sections to run, from {','.join(SECTIONS)}")
    parser.add_argument("--bundle", help="trained model bundle for the agreement section "
                                         "(default: demo-out/bundle, the one `make demo` keeps)")
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    chosen = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = sorted(set(chosen) - set(SECTIONS))
    if unknown:
        raise SystemExit(f"unknown benchmark section(s) {unknown}; choose from {list(SECTIONS)}")
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "CPU only"
    print(f"attrgan benchmarks on {platform.node()}: {os.cpu_count()} CPUs, {device}, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    for name in chosen:
        print(f"\n== {name} ==", flush=True)
        start = time.perf_counter()
        extra = {"bundle": args.bundle} if name in BUNDLE_SECTIONS and args.bundle else {}
        importlib.import_module(f"attrgan.devtools.bench.{name}").run(quick=args.quick, **extra)
        print(f"({name}: {time.perf_counter() - start:.0f} s)", flush=True)


if __name__ == "__main__":
    main()

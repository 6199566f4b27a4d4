"""Make the synthetic pedestrian dataset, or a corrupted copy of any labelled manifest.

    python jobs/synth.py generate --out s3://bucket/synth -n 20000 [--seed 0] [--workers 2] [--cameras 4]
    python jobs/synth.py corrupt --kind occlusion --manifest s3://bucket/synth/manifest.parquet \
        --out s3://bucket/synth-occ [--seed 0]

`generate` writes images under `<out>/images/` and `<out>/manifest.parquet`; `corrupt` writes the
paper's occluded (bottom 50–80 % covered by another person's upper body) or 4× downsampled copy
the same way. Paths may be local, file:// or s3:// (object storage settings come from the
environment, see `attrgan.config.StorageConfig`).
"""

from __future__ import annotations

import argparse
import time

from attrgan.config import StorageConfig


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    gen = commands.add_parser("generate", help="render the synthetic dataset")
    gen.add_argument("--out", required=True, help="output folder (path or URI)")
    gen.add_argument("-n", type=int, required=True, help="number of crops")
    gen.add_argument("--seed", type=int, default=0)
    gen.add_argument("--workers", type=int, default=None, help="processes (default: the machine's cores, at most 8)")
    gen.add_argument("--cameras", type=int, default=4)
    gen.add_argument("--splits", type=float, nargs=3, default=(0.7, 0.1, 0.2), metavar=("TRAIN", "VAL", "TEST"))
    cor = commands.add_parser("corrupt", help="write an occluded or low-resolution copy of a manifest")
    cor.add_argument("--kind", required=True, choices=("occlusion", "lowres"))
    cor.add_argument("--manifest", required=True, help="source manifest (path or URI)")
    cor.add_argument("--out", required=True, help="output folder (path or URI)")
    cor.add_argument("--seed", type=int, default=0)
    cor.add_argument("--factor", type=int, default=4, help="lowres: downsampling factor")
    cor.add_argument("--fraction-range", type=float, nargs=2, default=(0.5, 0.8), metavar=("LOW", "HIGH"),
                     help="occlusion: covered share of the crop height")
    args = parser.parse_args(argv)

    storage = StorageConfig.from_env()
    start = time.perf_counter()
    if args.command == "generate":
        from attrgan.data.synth import generate

        uri = generate(args.out, args.n, seed=args.seed, storage=storage, workers=args.workers,
                       splits=tuple(args.splits), cameras=args.cameras)
        elapsed = time.perf_counter() - start
        print(f"wrote {args.n} crops in {elapsed:.1f} s ({args.n / elapsed:.0f} crops/s) -> {uri}")
    else:
        from attrgan.corrupt import corrupt_manifest

        uri = corrupt_manifest(args.manifest, args.out, kind=args.kind, seed=args.seed, storage=storage,
                               fraction_range=tuple(args.fraction_range), factor=args.factor)
        print(f"wrote the {args.kind} copy in {time.perf_counter() - start:.1f} s -> {uri}")


if __name__ == "__main__":
    main()

r"""Convert a public attribute dataset's annotation file into a training manifest.

    python jobs/convert.py --dataset rap1 --annotation RAP_annotation.mat \
        --images /data/RAP_dataset --out s3://bucket/manifests/rap1 [--split 0]

The annotation file is read from the local disk; `--images` and `--out` may be local paths,
`file://` or `s3://` URIs (object storage settings come from the environment, see
`attrgan.config.StorageConfig`).
"""

from __future__ import annotations

import argparse
from collections import Counter

import pyarrow as pa

from attrgan.config import StorageConfig
from attrgan.data.convert import DATASETS, RAP1_VAL_FRACTION, convert


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", required=True, choices=DATASETS)
    parser.add_argument("--annotation", required=True, help="the dataset's .mat annotation file (local path)")
    parser.add_argument("--images", required=True, help="the dataset's image folder (path or URI)")
    parser.add_argument("--out", required=True, help="where the manifest goes (path or URI)")
    parser.add_argument("--split", type=int, default=0, help="partition index 0-4 (RAP, PETA); default 0")
    parser.add_argument("--val-fraction", type=float, default=RAP1_VAL_FRACTION,
                        help=f"RAP v1 only: share of train kept for validation (default {RAP1_VAL_FRACTION})")
    args = parser.parse_args(argv)

    table = convert(args.dataset, annotation=args.annotation, images=args.images, out=args.out,
                    split=args.split, val_fraction=args.val_fraction, storage=StorageConfig.from_env())
    counts = Counter(table.column("split").to_pylist())
    summary = ", ".join(f"{name or 'none'} {counts[name]}" for name in ("train", "val", "test", None) if counts[name])
    attributes = sum(1 for field in table.schema if pa.types.is_int8(field.type))  # label columns
    print(f"wrote {table.num_rows} rows ({summary}), {attributes} attributes -> {args.out}")


if __name__ == "__main__":
    main()

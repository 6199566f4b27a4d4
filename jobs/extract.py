"""Nightly extraction: restore-and-classify every crop of a manifest, results to Parquet.

`python jobs/extract.py ...` is `attrgan extract ...` for `ray job submit --working-dir . -- python jobs/extract.py`
and for checkouts without installing; `--help` lists the flags (attrgan.cli).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from attrgan import cli  # noqa: E402

build_parser = cli.extract_parser
build_config = cli.extract_config


def main(argv: list[str] | None = None) -> None:
    cli.main(["extract", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    main()

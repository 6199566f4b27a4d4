"""Convert a public attribute dataset's annotation file into a training manifest.

`python jobs/convert.py ...` is `attrgan convert ...` for `ray job submit --working-dir . -- python jobs/convert.py`
and for checkouts without installing; `--help` lists the flags (attrgan.cli).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from attrgan import cli  # noqa: E402

build_parser = cli.convert_parser


def main(argv: list[str] | None = None) -> None:
    cli.main(["convert", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    main()

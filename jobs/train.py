"""Train one network with Ray Train and write it into a model bundle.

`python jobs/train.py ...` is `attrgan train ...` for `ray job submit --working-dir . -- python jobs/train.py`
and for checkouts without installing; `--help` lists the flags (attrgan.cli).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from attrgan import cli  # noqa: E402

build_parser = cli.train_parser


def main(argv: list[str] | None = None) -> None:
    cli.main(["train", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    main()

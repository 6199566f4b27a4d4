"""Evaluate a model bundle on a labelled manifest: the paper's Tables 1 and 2 and a report.

`python jobs/evaluate.py ...` is `attrgan evaluate ...` for `ray job submit --working-dir . -- python jobs/evaluate.py`
and for checkouts without installing; `--help` lists the flags (attrgan.cli).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from attrgan import cli  # noqa: E402

build_parser = cli.evaluate_parser


def main(argv: list[str] | None = None) -> None:
    cli.main(["evaluate", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    main()

"""The whole product on this machine: `make demo` (or `--small` for a quick look).

`python jobs/demo.py ...` is `attrgan demo ...` for `ray job submit --working-dir . -- python jobs/demo.py`
and for checkouts without installing; `--help` lists the flags (attrgan.cli).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from attrgan import cli  # noqa: E402

build_parser = cli.demo_parser
build_config = cli.demo_config


def main(argv: list[str] | None = None) -> None:
    cli.main(["demo", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    main()

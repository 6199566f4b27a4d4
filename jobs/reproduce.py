"""Table 2 over several training seeds on fresh test crops: `make reproduce`.

`python jobs/reproduce.py ...` is `attrgan reproduce ...` for checkouts without installing; `--help`
lists the flags (attrgan.cli).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from attrgan import cli  # noqa: E402

build_parser = cli.reproduce_parser
build_config = cli.reproduce_config


def main(argv: list[str] | None = None) -> None:
    cli.main(["reproduce", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    main()

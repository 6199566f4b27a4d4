"""Make the synthetic pedestrian dataset, or a corrupted copy of any labelled manifest.

`python jobs/synth.py ...` is `attrgan synth ...` for `ray job submit --working-dir . -- python jobs/synth.py`
and for checkouts without installing; `--help` lists the flags (attrgan.cli).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from attrgan import cli  # noqa: E402

build_parser = cli.synth_parser


def main(argv: list[str] | None = None) -> None:
    cli.main(["synth", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    main()

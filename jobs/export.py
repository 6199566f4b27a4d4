"""Export a model bundle as ONNX: the classifier and both generators, each checked against PyTorch.

`python jobs/export.py ...` is `attrgan export ...` for `ray job submit --working-dir . -- python jobs/export.py`
and for checkouts without installing; `--help` lists the flags (attrgan.cli). Needs the export
extra: `pip install -e '.[export]'`.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from attrgan import cli  # noqa: E402

build_parser = cli.export_parser


def main(argv: list[str] | None = None) -> None:
    cli.main(["export", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    main()

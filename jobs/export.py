"""Export a model bundle as ONNX: `python jobs/export.py --bundle URI --out DIR [--set key=value ...]`.

Writes the classifier and both generators as ONNX with their config.json, each checked against
PyTorch with onnxruntime (attrgan.export; needs `pip install -e '.[export]'`).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from attrgan.export import build_parser, export_bundle  # noqa: E402,F401
from attrgan.export import main as _main  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    _main(sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    main()

"""The module map of docs/DESIGN.md against the code: every module is on it, the basics import
neither torch nor Ray, and no module imports one that imports it back."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "attrgan"
# The bottom layer of the map: no torch, no Ray (write, check and decode tasks stand on it).
BASICS = ("attributes", "config", "contracts", "data.storage", "data.manifest", "data.images", "data.synth",
          "data.convert", "metrics", "experiments", "results", "lease", "report", "ray_setup",
          "query", "search", "faults")


def module_map() -> str:
    text = (ROOT / "docs" / "DESIGN.md").read_text()
    return text[text.index("## Module map"):text.index("## Metric definitions")]


def modules() -> dict[str, Path]:
    return {".".join(p.relative_to(ROOT).with_suffix("").parts): p for p in PACKAGE.rglob("*.py")
            if p.name != "__init__.py" and p.name != "__main__.py"}


def test_every_module_is_on_the_map():
    text = module_map()
    missing = []
    for name in modules():
        parts = name.split(".")[1:]
        # A module is placed by its own name or by its folder's line ("models/", "devtools/").
        if not re.search(rf"\b{re.escape(parts[-1])}(\.py|/)", text) and f"{parts[0]}/" not in text:
            missing.append(name)
    assert missing == []


def test_the_basics_import_neither_torch_nor_ray():
    code = (f"import importlib, sys; [importlib.import_module('attrgan.' + m) for m in {list(BASICS)}]; "
            "print(sorted({'torch', 'ray'} & set(sys.modules)))")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]"


def test_no_module_imports_one_that_imports_it_back():
    known = modules()
    imports: dict[str, set[str]] = {}
    for name, path in known.items():
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("attrgan"):
                targets = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                continue
            found |= {t for t in targets if t in known and t != name}
        imports[name] = found

    def reaches(start: str, goal: str) -> bool:
        seen, todo = set(), [start]
        while todo:
            for nxt in imports[todo.pop()] - seen:
                if nxt == goal:
                    return True
                seen.add(nxt)
                todo.append(nxt)
        return False

    cycles = sorted((a, b) for a in imports for b in imports[a] if reaches(b, a))
    assert cycles == []


def test_a_long_module_says_why_at_its_top():
    # Past ~500 lines a module should be split, or its docstring says why it is one module.
    unexplained = []
    for name, path in modules().items():
        text = path.read_text()
        if text.count("\n") > 500 and "long" not in (ast.get_docstring(ast.parse(text)) or "").lower():
            unexplained.append(name)
    assert unexplained == []

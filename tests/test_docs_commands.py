"""Every shell command that README.md and docs/*.md show works as written.

The commands are found in the docs, not listed here: each line of a fenced shell block and each
inline `code` span that starts with `attrgan`, `.venv/bin/attrgan`, `make`, `python jobs/….py`
(any project script), `python -m attrgan…` or `ray job submit`. A command added to the docs is
checked without anyone adding it here, and the test fails when it does not parse:
- `attrgan NAME …` with `cli.PARSERS[NAME]`; a script or module with its own `build_parser()`;
- `make TARGET VAR=…`: the target is in the Makefile, VAR is used there, and a VAR the target's
  recipe hands to a project script (`DEMO_ARGS=--small`) parses with that script's parser;
- `ray job submit … -- ENTRYPOINT`: the options parse with ray's own CLI and the entrypoint is a
  project command that parses (without `--` only ray's options are shown, and checked).
Every parser also formats its --help (what `--help` prints). The docs' notation: `...` / `…` stands for arguments not
shown (flags are then not required), `{a,b}` for one of a or b (each is checked), `[--flag x]` for
optional arguments (checked as written), and `<x>`, `UPPERCASE` or a trailing `:` in the command
word for a pattern or output (`attrgan <command>: error: …`), which is skipped. An inline span
without arguments (`attrgan predict`) names a command: its parser must exist.

The cheap commands on the demo's bundle (`--bundle demo-out/bundle`: predict, export, extract)
and `attrgan search` on local results then run for real in a scratch folder holding a tiny bundle of random networks and the inputs they
name (RUNS says how to make a command's inputs; a command without an entry there is parsed only).
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import importlib
import importlib.util
import io
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import pytest

from attrgan import cli

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
MAKEFILE = ROOT / "Makefile"
ELISION = frozenset({"...", "…"})
SHELL_FENCES = frozenset({"", "sh", "bash", "shell", "console"})
FENCE = re.compile(r"^(`{3,}|~{3,})([\w-]*)[^\n]*\n(.*?)^\1", re.M | re.S)
INLINE = re.compile(r"(?<!`)`([^`]+)`(?!`)")
ASSIGNMENT = re.compile(r"[A-Za-z_]\w*=.*")
ATTRGAN = re.compile(r"(?:\S*/bin/)?attrgan")  # not `attrgan/`, the package folder in a tree
PYTHON = re.compile(r"(?:\S*/)?python(?:3(?:\.\d+)?)?")
BRACES = re.compile(r"\{([\w.-]+(?:,[\w.-]+)+)\}")
OPERATORS = frozenset({"&&", "||", "|", ";", "&"})


@dataclass(frozen=True)
class DocCommand:
    where: str  # file:line
    argv: tuple[str, ...]
    inline: bool  # an inline span, not a line of a fenced block
    problem: str | None = None  # why the shell could not read it


# --- finding the commands -------------------------------------------------------------------------

def split_commands(line: str) -> list[list[str]]:
    """Shell words of each command on `line` (split at && || | ; &, comments dropped)."""
    lexer = shlex.shlex(line, posix=True, punctuation_chars=";&|")
    lexer.whitespace_split = True
    commands: list[list[str]] = [[]]
    for word in lexer:
        if word in OPERATORS:
            commands.append([])
        else:
            commands[-1].append(word)
    return [c for c in commands if c]


def unclosed(text: str) -> bool:
    try:
        shlex.split(text, comments=True)
    except ValueError:
        return True
    return False


def is_pattern(word: str) -> bool:
    """`<command>`, `COMMAND`, `{a,b}` or `export:` where a command word goes: not a runnable command."""
    return bool(re.search(r"[<>{}:]", word)) or (word.isupper() and word.isalpha())


def project_command(argv: list[str]) -> list[str] | None:
    """`argv` without a leading `$` prompt and VAR=value assignments, if it runs one of this project's
    commands (attrgan, make, a python script or attrgan module, ray job submit); else None."""
    while argv and (argv[0] == "$" or ASSIGNMENT.fullmatch(argv[0])):
        argv = argv[1:]
    if not argv:
        return None
    head = argv[0]
    if ATTRGAN.fullmatch(head) or head == "make" or argv[:3] == ["ray", "job", "submit"]:
        return argv
    if PYTHON.fullmatch(head) and len(argv) > 1:
        if argv[1].endswith(".py") or (argv[1] == "-m" and len(argv) > 2 and argv[2].split(".")[0] == "attrgan"):
            return argv
    return None


def names_a_pattern(argv: list[str]) -> bool:
    """`attrgan <command>: error: …`, `python jobs/<x>.py`: a pattern or output, not a runnable command."""
    if ATTRGAN.fullmatch(argv[0]) or (PYTHON.fullmatch(argv[0]) and argv[1] != "-m"):
        return len(argv) > 1 and is_pattern(argv[1])
    return False


def doc_commands(text: str, name: str) -> list[DocCommand]:
    """The project commands in one markdown text: fenced shell lines, then inline code spans."""
    found: list[DocCommand] = []

    def add(source: str, line: int, inline: bool) -> None:
        if not re.match(r"\s*(\$\s+)?([A-Za-z_]\w*=\S*\s+)*(\S*attrgan|make|\S*python|ray)\b", source):
            return  # not one of ours: leave other tools' syntax alone
        try:
            commands = split_commands(source)
        except ValueError as exc:  # an unclosed quote
            command = project_command(source.split())
            if command and not names_a_pattern(command):
                found.append(DocCommand(f"{name}:{line}", tuple(command), inline, f"the shell cannot read it: {exc}"))
            return
        for argv in commands:
            command = project_command(argv)
            if command and not names_a_pattern(command):
                found.append(DocCommand(f"{name}:{line}", tuple(command), inline))

    prose = text
    for fence in FENCE.finditer(text):
        first = text.count("\n", 0, fence.start(3)) + 1
        block = fence.group(3)
        prose = prose[:fence.start()] + re.sub(r"[^\n]", " ", fence.group()) + prose[fence.end():]
        if fence.group(2) not in SHELL_FENCES:
            continue
        pending, start = "", first
        for offset, line in enumerate(block.splitlines()):
            if not pending:
                start = first + offset
            if line.rstrip().endswith("\\"):
                pending += line.rstrip()[:-1] + " "
            elif unclosed(pending + line):  # a quoted argument that goes on over lines
                pending += line + "\n"
            else:
                add(pending + line, start, inline=False)
                pending = ""
        if pending:
            add(pending, start, inline=False)
    for span in INLINE.finditer(prose):
        if "\n\n" not in span.group(1):
            add(" ".join(span.group(1).split()), prose.count("\n", 0, span.start()) + 1, inline=True)
    return found


def all_doc_commands() -> list[DocCommand]:
    return [c for path in DOCS for c in doc_commands(path.read_text(), str(path.relative_to(ROOT)))]


# --- checking that one parses ---------------------------------------------------------------------

def load_script(path: Path):
    spec = importlib.util.spec_from_file_location(f"docs_script_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # the scripts run their job only under `__main__`
    return module


def module_parser(name: str) -> argparse.ArgumentParser:
    spec = importlib.util.find_spec(name)
    assert spec is not None, f"no module {name}"
    module = importlib.import_module(f"{name}.__main__" if spec.submodule_search_locations else name)
    assert hasattr(module, "build_parser"), f"`python -m {name}` has no build_parser() to check its arguments with"
    return module.build_parser()


def relax(parser: argparse.ArgumentParser) -> None:
    """Nothing required (the doc elides arguments), in subcommands too. argparse has no public way
    to list a parser's actions, so this reads `_actions`."""
    for action in parser._actions:
        action.required = False
        if isinstance(action.choices, dict):  # subparsers
            for sub in action.choices.values():
                relax(sub)


def unbracket(word: str) -> str:
    """`[--flag` → `--flag`, `value]` → `value`: the doc's optional arguments are checked as written."""
    if word.startswith("[-"):
        word = word[1:]
    while word.endswith("]") and word.count("]") > word.count("["):
        word = word[:-1]
    return word


def alternatives(args: list[str]) -> list[list[str]]:
    """`--dataset {rap1,peta}` → one argument list per choice."""
    variants: list[list[str]] = [[]]
    for arg in args:
        match = BRACES.fullmatch(arg)
        options = match.group(1).split(",") if match else [arg]
        variants = [v + [o] for v in variants for o in options]
    return variants


def parse(parser: argparse.ArgumentParser, args: list[str], *, inline: bool) -> list[argparse.Namespace]:
    """Parse `args` as the docs write them (see the module docstring); AssertionError with argparse's
    message when they do not parse."""
    if any(a in ELISION for a in args) or (inline and not args):
        relax(parser)
    args = [w for w in (unbracket(a) for a in args if a not in ELISION) if w]
    parsed = []
    for variant in alternatives(args):
        err = io.StringIO()
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
            try:
                parsed.append(parser.parse_args(variant))
            except SystemExit as exc:
                if exc.code:
                    raise AssertionError(err.getvalue().strip().splitlines()[-1]) from None
    parser.format_help()  # a help string that cannot be formatted fails only at --help
    return parsed


def make_rules() -> dict[str, list[str]]:
    """Makefile target → its recipe lines."""
    rules: dict[str, list[str]] = {}
    targets: list[str] = []
    for line in MAKEFILE.read_text().splitlines():
        if line.startswith("\t"):
            for target in targets:
                rules[target].append(line.strip())
            continue
        rule = re.match(r"([\w./-][\w./ -]*?)\s*:(?!=)", line)
        targets = rule.group(1).split() if rule else []
        for target in targets:
            rules.setdefault(target, [])
    return rules


def check_make(args: list[str]) -> None:
    rules, makefile = make_rules(), MAKEFILE.read_text()
    targets = [a for a in args if not ASSIGNMENT.fullmatch(a) and a not in ELISION and not a.startswith("-")]
    variables = dict(a.split("=", 1) for a in args if ASSIGNMENT.fullmatch(a))
    for target in targets:
        assert target in rules, f"the Makefile has no target {target!r}"
    for var, value in variables.items():
        assert re.search(rf"\$\({var}\)|origin {var}\b", makefile), f"the Makefile does not use {var}"
        # A VAR the recipe passes to a project script must parse with that script's parser.
        for line in (line for t in targets for line in rules[t] if f"$({var})" in line):
            words: list[str] = []
            for word in shlex.split(line):
                words += shlex.split(value) if word == f"$({var})" else ["python" if word == "$(PY)" else word]
            command = project_command(words)
            if command:
                check(command, inline=False)


def check_ray_submit(args: list[str], *, inline: bool) -> None:
    import click
    from ray.dashboard.modules.job.cli import job_cli_group

    try:
        context = job_cli_group.commands["submit"].make_context("ray job submit", list(args))
    except click.MissingParameter as exc:
        if exc.param is not None and exc.param.name == "entrypoint":
            return  # no `-- ENTRYPOINT`: the doc shows ray's options, which parsed
        raise AssertionError(exc.format_message()) from None
    except click.UsageError as exc:
        raise AssertionError(exc.format_message()) from None
    words = list(context.params["entrypoint"])
    while words and words[0] in ELISION:  # `ray job submit … -- python …`: the elided options come first
        words = words[1:]
    entrypoint = project_command(words)
    assert entrypoint, f"the entrypoint {' '.join(words)!r} is not a project command"
    if not names_a_pattern(entrypoint):
        check(entrypoint, inline=inline)


def check(argv: list[str] | tuple[str, ...], *, inline: bool) -> list[argparse.Namespace]:
    """Parse one documented command with the real parsers; AssertionError naming what does not."""
    argv = list(argv)
    if argv[0] == "make":
        check_make(argv[1:])
        return []
    if argv[0] == "ray":
        check_ray_submit(argv[3:], inline=inline)
        return []
    if ATTRGAN.fullmatch(argv[0]):
        if len(argv) == 1 or argv[1] in ("-h", "--help"):
            return []
        assert argv[1] in cli.PARSERS, f"attrgan has no command {argv[1]!r}"
        return parse(cli.PARSERS[argv[1]](), argv[2:], inline=inline)
    if argv[1] == "-m":
        return parse(module_parser(argv[2]), argv[3:], inline=inline)
    script = ROOT / argv[1]
    assert script.is_file(), f"no script {argv[1]} in the project"
    module = load_script(script)
    assert hasattr(module, "build_parser"), f"{argv[1]} has no build_parser() to check its arguments with"
    return parse(module.build_parser(), argv[2:], inline=inline)


COMMANDS = all_doc_commands()


@pytest.mark.parametrize("command", COMMANDS, ids=[f"{c.where} {' '.join(c.argv[:3])}" for c in COMMANDS])
def test_documented_command_parses(command):
    problem = command.problem
    if problem is None:
        try:
            check(command.argv, inline=command.inline)
        except AssertionError as exc:
            problem = str(exc).splitlines()[0]
    if problem:
        pytest.fail(f"{command.where}: `{shlex.join(command.argv)}` does not work as documented: {problem}",
                    pytrace=False)


def test_every_kind_of_command_is_found():
    kinds = {c.argv[0] if c.argv[0] in ("make", "ray") else Path(c.argv[0]).name for c in COMMANDS}
    assert {"attrgan", "make", "ray"} <= kinds and any(PYTHON.fullmatch(k) for k in kinds), kinds
    assert any(c.inline for c in COMMANDS) and any(not c.inline for c in COMMANDS)


# --- running the cheap ones -----------------------------------------------------------------------

DEMO_BUNDLE = "demo-out/bundle"  # what `make demo` leaves: documented commands on it run for real
FRAME = (240, 160)  # images big enough for the README's --bbox 40,10,64,160
# Added to a real run to keep it small; the documented flags run as written.
SMALLER = {"export": ["--set", "networks=superres"], "extract": ["--actors", "1"]}


def image_at(path: Path, seed: int = 0) -> None:
    from PIL import Image

    from helpers import random_images

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(random_images(1, size=FRAME, seed=seed)[0]).save(path)


def predict_inputs(args: argparse.Namespace, root: Path) -> None:
    """An image for each path the command names: in a folder, matching a glob, or the file itself."""
    for path in args.paths:
        if glob.has_magic(path):
            image_at(root / re.sub(r"[*?]", "a", path))
        else:
            image_at(root / path / "a.png" if path.endswith("/") else root / path)


def extract_inputs(args: argparse.Namespace, root: Path) -> None:
    """A two-crop manifest where the command reads one, images beside it."""
    import pandas as pd

    from attrgan.data.manifest import write_manifest

    manifest = root / args.manifest
    folder = manifest.parent if manifest.suffix == ".parquet" else manifest
    for i in range(2):
        image_at(folder / f"crop{i}.png", seed=i)
    write_manifest(pd.DataFrame({"crop_id": ["c0", "c1"], "image_uri": ["crop0.png", "crop1.png"]}), str(manifest))


def search_inputs(args: argparse.Namespace, root: Path) -> None:
    """A committed results partition with a track table where the command reads results, each
    track's best crop a JPEG beside it."""
    import datetime as dt

    from search_helpers import UTC, crop_rows, jpeg, write_partition

    night = dt.datetime(2026, 11, 25, 22, tzinfo=UTC)
    rows = (crop_rows("cam07", "t1", night, [{"backpack": 0.9, "female": 0.2}] * 2, images=str(root / "images"))
            + crop_rows("cam07", "t2", night, [{"backpack": 0.2, "female": 0.8}], images=str(root / "images")))
    for row in rows:
        jpeg(Path(row["image_uri"]))
    write_partition(root / args.results, "date=2026-11-25/camera=cam07", rows)


def wrote(args: argparse.Namespace, root: Path) -> bool:
    """Output the command's --out / --csv / --html names exists (predict without either prints its rows)."""
    from attrgan.contracts import SUCCESS_MARKER

    target = getattr(args, "out", None) or getattr(args, "csv", None) or getattr(args, "html", None)
    if target is None:
        return True
    path = root / target
    return path.is_file() or any(p.name in (SUCCESS_MARKER, "model.onnx") for p in path.rglob("*"))


RUNS = {"predict": predict_inputs, "extract": extract_inputs, "export": lambda args, root: None,
        "search": search_inputs}
ON_RAY = frozenset({"extract"})
NO_BUNDLE = frozenset({"search"})  # runs on the results RUNS writes, on local disk


def runs_for_real(command: DocCommand) -> bool:
    """An attrgan command RUNS knows, written in full, on the demo's bundle (or, for a command
    that takes no bundle, on local paths)."""
    argv = command.argv
    if ATTRGAN.fullmatch(argv[0]) is None or len(argv) <= 2 or argv[1] not in RUNS or ELISION & set(argv):
        return False
    if argv[1] in NO_BUNDLE:
        return not any(a.startswith("s3://") for a in argv)
    return tuple(value for flag, value in zip(argv, argv[1:]) if flag == "--bundle") == (DEMO_BUNDLE,)


REAL = [c for c in COMMANDS if runs_for_real(c)]


@pytest.mark.usefixtures("one_torch_thread")
@pytest.mark.parametrize("command", [pytest.param(c, marks=[pytest.mark.ray] if c.argv[1] in ON_RAY else [],
                                                  id=f"{c.where} {' '.join(c.argv[:3])}") for c in REAL])
def test_documented_command_runs_on_a_tiny_bundle(command, tmp_path, monkeypatch, capsys, request):
    from attrgan.bundle import save_bundle
    from helpers import tiny_bundle

    name, argv = command.argv[1], [*command.argv[2:], *SMALLER.get(command.argv[1], [])]
    if name not in NO_BUNDLE:
        save_bundle(str(tmp_path / DEMO_BUNDLE), tiny_bundle())
    (args,) = check(command.argv, inline=command.inline)
    RUNS[name](args, tmp_path)
    if name in ON_RAY:
        request.getfixturevalue("ray_local")
    monkeypatch.chdir(tmp_path)
    try:
        cli.main([name, *argv])
        code = 0
    except SystemExit as exc:
        code = exc.code
    err = capsys.readouterr().err.strip()
    assert code == 0, f"{command.where}: `{shlex.join(command.argv)}` exited {code}: {err[-2000:]}"
    assert wrote(args, tmp_path), f"{command.where}: `{shlex.join(command.argv)}` wrote nothing"


def test_the_readme_commands_on_the_demo_bundle_run_for_real():
    assert {"predict", "extract", "export", "search"} <= {c.argv[1] for c in REAL}


# --- the finder and the checker on commands written for them ----------------------------------------

SAMPLE = """Run it:

```
$ .venv/bin/attrgan predict a.jpg --bundle b   # one image
RAY_AUTH_MODE=disabled attrgan extract --manifest m \\
    --bundle b --out o && make demo DEMO_ARGS=--small
attrgan export: error: this is output, not a command
```

```python
attrgan = "not shell"
```

~~~bash
make test
python -c 'import attrgan
print(attrgan)'
~~~

Then `attrgan convert --dataset {rap1,peta} …`, `attrgan <command>: failed: …`, `attrgan predict`,
`python -m attrgan.devtools.bench --only train [--bundle
DIR]` and `ray job submit --working-dir . -- python jobs/train.py …`; `pip install x` is not ours;
`attrgan predict 'a b.jpg --bundle b` misses a quote.
"""


def test_commands_are_found_with_their_lines():
    found = doc_commands(SAMPLE, "x.md")
    assert [(c.where, c.argv, c.inline) for c in found] == [
        ("x.md:4", (".venv/bin/attrgan", "predict", "a.jpg", "--bundle", "b"), False),
        ("x.md:5", ("attrgan", "extract", "--manifest", "m", "--bundle", "b", "--out", "o"), False),
        ("x.md:5", ("make", "demo", "DEMO_ARGS=--small"), False),
        ("x.md:15", ("make", "test"), False),
        ("x.md:20", ("attrgan", "convert", "--dataset", "{rap1,peta}", "…"), True),
        ("x.md:20", ("attrgan", "predict"), True),
        ("x.md:21", ("python", "-m", "attrgan.devtools.bench", "--only", "train", "[--bundle", "DIR]"), True),
        ("x.md:22", ("ray", "job", "submit", "--working-dir", ".", "--", "python", "jobs/train.py", "…"), True),
        ("x.md:23", ("attrgan", "predict", "'a", "b.jpg", "--bundle", "b"), True),
    ]
    assert [c.problem is not None for c in found] == [False] * 8 + [True]
    for command in found[:-1]:
        check(command.argv, inline=command.inline)


@pytest.mark.parametrize("argv, message", [
    ("attrgan export --bundle b --out o --colour red", "unrecognized arguments: --colour"),
    ("attrgan extract --manifest m --bundle b", "required: --out"),
    ("attrgan convert --dataset {rap1,nope} …", "invalid choice: 'nope'"),
    ("attrgan trian --model classifier", "no command 'trian'"),
    ("python jobs/nothing.py --out o", "no script jobs/nothing.py"),
    ("python -m attrgan.devtools.bench --quick --only", "expected one argument"),
    ("make dmeo", "no target 'dmeo'"),
    ("make demo DEMO_ARG=--small", "does not use DEMO_ARG"),
    ("make demo DEMO_ARGS=--tiny", "unrecognized arguments: --tiny"),
    ("ray job submit --adress http://h:8265 -- python jobs/train.py …", "--adress"),
    ("ray job submit --working-dir . -- jobs/train.py", "not a project command"),
    ("ray job submit --working-dir . -- python jobs/train.py --epochs 1", "required"),
])
def test_a_command_that_does_not_parse_fails(argv, message):
    with pytest.raises(AssertionError, match=re.escape(message)):
        check(shlex.split(argv), inline=False)

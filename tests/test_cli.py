"""The `attrgan` command: every subcommand's help, one-line errors with exit code 2 for bad input,
the jobs/*.py entry points, and the console script in a fresh virtualenv."""

from __future__ import annotations

import os
import subprocess
import sys
import venv
from pathlib import Path

import pytest

from attrgan import cli

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("command", cli.COMMANDS)
def test_every_subcommand_has_help(command, capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main([command, "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: attrgan {command}")
    if command != "synth":  # synth's settings are flags of its two subcommands
        assert "--set KEY=VALUE" in out or command in ("convert",)


def test_top_level_help_lists_every_command(capsys):
    cli.main([])
    out = capsys.readouterr().out
    assert all(f"  {c} " in out for c in cli.COMMANDS)
    with pytest.raises(SystemExit) as exit_:
        cli.main(["trian"])
    assert exit_.value.code == 2 and "unknown command 'trian'" in capsys.readouterr().err


# Each command's bad input stops before any work (no Ray, no download) with one line and exit 2.
BAD_INPUT = {
    "train": (["--model", "classifier", "--manifest", "m", "--bundle", "b", "--set", "lr=fast"], "lr"),
    "extract": (["--manifest", "m", "--bundle", "b", "--out", "o", "--set", "actors=0"], "actors must be"),
    "evaluate": (["--manifest", "m", "--bundle", "b", "--out", "o", "--set", "limit=0"], "limit must be"),
    "synth": (["corrupt", "--kind", "lowres", "--manifest", "{tmp}/missing.parquet", "--out", "{tmp}/o"], "missing"),
    "convert": (["--dataset", "peta", "--annotation", "{tmp}/missing.mat", "--images", "{tmp}", "--out", "{tmp}/o"],
                "missing.mat"),
    "demo": (["--small", "--crops", "5"], "crops must be >= 20"),
    "predict": (["{tmp}/missing.png", "--bundle", "b"], "no such file"),
    "export": (["--bundle", "{tmp}/missing", "--out", "{tmp}/o"], "no config.json"),
    "search": (["--results", "{tmp}/missing", "--where", "backpack"], "no results at"),
}


@pytest.mark.parametrize("command", sorted(BAD_INPUT))
def test_bad_input_is_one_line_and_exit_2(command, tmp_path, capsys):
    argv, expected = BAD_INPUT[command]
    with pytest.raises(SystemExit) as exit_:
        cli.main([command, *(a.format(tmp=tmp_path) for a in argv)])
    err = capsys.readouterr().err.strip()
    assert exit_.value.code == 2, err
    assert len(err.splitlines()) == 1 and err.startswith(f"attrgan {command}: error: ") and expected in err, err


def test_bad_flags_and_unknown_settings_exit_2(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["extract", "--manifest", "m"])  # argparse: missing required flags
    assert exit_.value.code == 2 and "required" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        cli.main(["evaluate", "--manifest", "m", "--bundle", "b", "--out", "o", "--set", "pipeline.colour=red"])
    assert exit_.value.code == 2 and "pipeline.colour" in capsys.readouterr().err


def test_runtime_failures_exit_1_and_bugs_keep_their_traceback(monkeypatch, capsys):
    from attrgan.extract import ExtractError

    def fail(error: Exception):
        def run(args):
            raise error
        return run

    monkeypatch.setitem(cli.RUNNERS, "synth", fail(ExtractError("partition date=1: 3 rows missing")))
    with pytest.raises(SystemExit) as exit_:
        cli.main(["synth", "generate", "--out", "x", "-n", "1"])
    assert exit_.value.code == 1
    assert capsys.readouterr().err.strip() == "attrgan synth: failed: partition date=1: 3 rows missing"
    monkeypatch.setitem(cli.RUNNERS, "synth", fail(KeyError("bug")))
    with pytest.raises(KeyError):
        cli.main(["synth", "generate", "--out", "x", "-n", "1"])


def test_settings_reach_the_configs(tmp_path):
    """One convention: --set with dotted keys, flags over --set, new config fields need no CLI change."""
    args = cli.extract_parser().parse_args(["--manifest", "m", "--bundle", "b", "--out", "o", "--actors", "3",
                                            "--set", "actors=5", "--set", "pipeline.occlusion_threshold=0.6",
                                            "--set", "storage.endpoint_url=http://127.0.0.1:9"])
    config = cli.extract_config(args)
    assert config.actors == 3 and config.pipeline.occlusion_threshold == 0.6
    assert config.storage.endpoint_url == "http://127.0.0.1:9"
    if any(f == "since" for f in type(config).__dataclass_fields__):
        args = cli.extract_parser().parse_args(["--manifest", "m", "--bundle", "b", "--out", "o",
                                                "--since", "2026-11-01"])
        assert str(cli.extract_config(args).since).startswith("2026-11-01")

    demo = cli.demo_config(cli.demo_parser().parse_args(["--small", "--crops", "30", "--set", "classifier.epochs=3",
                                                         "--set", "train.superres.lam=0.5", "--set", "night_crops=6"]))
    assert (demo.crops, demo.night_crops, demo.eval_limit) == (30, 6, 6)
    assert demo.train["classifier"]["epochs"] == 3 and demo.train["superres"]["lam"] == 0.5
    assert demo.train["classifier"]["max_steps_per_epoch"] == 2  # --small's settings stay under the --set


def test_job_scripts_run_from_a_checkout_without_installing(tmp_path):
    """`python jobs/x.py` finds the package from the repo root, under any working directory."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([sys.executable, "-I", str(ROOT / "jobs" / "evaluate.py"), "--manifest", "m", "--bundle",
                           "b", "--out", "o", "--set", "limit=0"], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr.strip().startswith("attrgan evaluate: error: "), proc.stderr


@pytest.mark.slow
def test_console_script_in_a_fresh_venv(tmp_path):
    """`pip install` puts an `attrgan` command on the PATH ([project.scripts]); dependencies come
    from this environment (--system-site-packages), so nothing is downloaded."""
    target = tmp_path / "venv"
    base_site = subprocess.run([sys.executable, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip()
    venv.create(target, system_site_packages=True, with_pip=False)
    python = target / "bin" / "python"
    # The fresh venv sees this interpreter's site-packages through a .pth file, pip included.
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    Path(site, "outer.pth").write_text(base_site + "\n")
    build = tmp_path / "src"  # a copy, so the editable install leaves no egg-info in the checkout
    build.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        (build / name).write_bytes((ROOT / name).read_bytes())
    (build / "attrgan").symlink_to(ROOT / "attrgan")
    pip = subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                          "--no-index", str(build)], capture_output=True, text=True, timeout=300)
    assert pip.returncode == 0, pip.stderr[-2000:]
    proc = subprocess.run([str(target / "bin" / "attrgan"), "--help"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "attrgan {train,extract" in proc.stdout, proc.stderr
    proc = subprocess.run([str(target / "bin" / "attrgan"), "predict", "--help"], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0 and "--bundle" in proc.stdout


def test_synth_generate_renders_the_splits_it_is_told_as_tracks(tmp_path):
    import pyarrow.compute as pc

    from attrgan.data.manifest import read_manifest

    cli.main(["synth", "generate", "--out", str(tmp_path), "-n", "12", "--workers", "1", "--splits", "0.5", "0.5", "0",
              "--track-splits", "val"])
    table = read_manifest(str(tmp_path / "manifest.parquet"))
    val = table.filter(pc.equal(table["split"], "val"))
    train = table.filter(pc.equal(table["split"], "train"))
    assert val.num_rows == train.num_rows == 6
    assert val["track_id"].null_count == 0 and train["track_id"].null_count == train.num_rows

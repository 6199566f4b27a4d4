"""`make reproduce`'s arithmetic: mean ± sd over seeds, recovery shares, ceilings and targets."""

from __future__ import annotations

import json

import pytest

from attrgan import cli
from attrgan.config import ConfigError
from attrgan.devtools.reproduce import (RECOVERY_TARGETS, ReproduceConfig, choose_recipe, gate_rules, render, summarize,
                                        validation_score)


def run(seed: int, *, occ_gain: float, low: float, ceiling: float | None = None) -> dict:
    ma = {"clean": 0.80, "occluded": 0.60, "occluded_reconstruction": 0.60 + occ_gain, "lowres_bilinear": 0.70,
          "lowres_superres": 0.74, "corrupted": 0.65, "restored": 0.67}

    def interval(gain: float, lo: float) -> dict:
        return {"gain": gain, "low": lo, "high": gain + 0.01, "verdict": "helps" if lo > 0 else "no measurable effect"}

    return {"seed": seed, "ma": ma,
            "intervals": {"occlusion": interval(occ_gain, low), "low resolution": interval(0.04, 0.02),
                          "complete": interval(0.02, 0.005)},
            "ceilings": {} if ceiling is None else {"occlusion": ceiling}}


def test_recovery_is_the_gain_over_what_the_corruption_cost():
    result = summarize([run(0, occ_gain=0.06, low=0.03, ceiling=0.70), run(1, occ_gain=0.04, low=0.01)], seconds=60)
    occ = result["comparisons"]["occlusion"]
    # 20 points lost to occlusion: +6 wins back 30 %, +4 wins back 20 %; the mean 25 % meets the 25 % target.
    assert [p["recovery"] for p in occ["per_seed"]] == pytest.approx([0.30, 0.20])
    assert occ["recovery_mean"] == pytest.approx(0.25) and occ["target"] == RECOVERY_TARGETS["occlusion"] == 0.20
    assert occ["target_met"]
    assert occ["per_seed"][0]["ceiling_recovery"] == pytest.approx(0.5)  # 0.70 - 0.60 of 0.20
    assert occ["per_seed"][1]["ceiling_ma"] is None and occ["per_seed"][1]["ceiling_recovery"] is None
    assert occ["gain"]["mean"] == pytest.approx(0.05) and occ["gain"]["sd"] == pytest.approx(0.01414, abs=1e-4)
    assert result["table"]["clean"] == {"mean": pytest.approx(0.80), "sd": pytest.approx(0.0)}
    low = result["comparisons"]["low resolution"]  # 0.04 of 0.10 = 40 %
    assert low["recovery_mean"] == pytest.approx(0.40) and low["target_met"]

    text = render(result)
    assert "| occlusion | 0 | +6.00 (+3.00 to +7.00) | helps | 20.00 | 30.00 % | 70.00 | 50.00 % |" in text
    assert "| occlusion | +5.00 ± 1.41 | 25.00 % | 20 % | yes |" in text


def test_a_target_needs_every_seed_above_zero():
    result = summarize([run(0, occ_gain=0.10, low=0.05), run(1, occ_gain=0.02, low=-0.01)], seconds=1)
    occ = result["comparisons"]["occlusion"]
    assert occ["recovery_mean"] == pytest.approx(0.30) and not occ["target_met"]  # seed 1's interval reaches 0
    one = summarize([run(0, occ_gain=0.04, low=0.01)], seconds=1)
    # Under one mA point lost, a share of it would be noise: 0.02 gain of 0.005 lost is not 400 %.
    barely = run(0, occ_gain=0.02, low=0.01, ceiling=0.80)
    barely["ma"]["occluded"] = barely["ma"]["clean"] - 0.005
    occ = summarize([barely], seconds=1)["comparisons"]["occlusion"]
    assert occ["per_seed"][0]["recovery"] is None and occ["per_seed"][0]["ceiling_recovery"] is None
    assert occ["recovery_mean"] is None and not occ["target_met"]
    # With another seed that recovered 50 %, the mean is that seed's, but no target is met on it alone.
    occ = summarize([barely, run(1, occ_gain=0.10, low=0.05)], seconds=1)["comparisons"]["occlusion"]
    assert occ["recovery_mean"] == pytest.approx(0.5) and not occ["target_met"]
    assert one["table"]["clean"]["sd"] is None and one["comparisons"]["occlusion"]["target_met"]  # 20 % of 20 %
    assert not summarize([run(0, occ_gain=0.03, low=0.01)], seconds=1)["comparisons"]["occlusion"]["target_met"]


def record(before: float, gain: float, low: float) -> dict:
    return {"gain_ma": gain, "low": low, "high": gain + 0.02, "ma_before": before, "ma_after": before + gain}


def with_recipes(seed: int, *, paper: dict, augmented: dict) -> dict:
    """A run with both bundles' validation records and every recipe's test numbers."""
    r = run(seed, occ_gain=0.03, low=0.01)
    interval = {"gain": 0.01, "low": -0.01, "high": 0.03, "verdict": "no measurable effect"}
    recipes = {name: {"ma": {"clean": 0.8, "corrupted": 0.7},
                      "vs_augmented": {"clean": interval, "corrupted": interval}}
               for name in ("paper pipeline", "augmented", "augmented + restorations")}
    aug = run(seed, occ_gain=-0.01, low=-0.03)
    return r | {"gains": paper, "recipes": recipes,
                "augmented": {"ma": aug["ma"], "intervals": aug["intervals"], "gains": augmented}}


def test_the_recipe_is_chosen_on_validation_and_the_gate_rules_are_held_against_the_test_gains():
    # Validation mA of the occluded / low-res crops: the paper's classifier reads them at 0.50 / 0.60,
    # the augmented one at 0.56 / 0.64. G^R is proven on the paper's (+0.04, low +0.01), G^S only
    # by its point gain (+0.02, low -0.01).
    paper = {"reconstruction": record(0.50, 0.04, 0.01), "superres": record(0.60, 0.02, -0.01)}
    augmented = {"reconstruction": record(0.56, 0.01, -0.02), "superres": record(0.64, 0.005, 0.001)}
    # Under the default rule (proven) only the paper's G^R and the augmented G^S count; under
    # "not_harmful" every restoration here does.
    assert validation_score(paper, restored=True) == pytest.approx((0.54 + 0.60) / 2)
    assert validation_score(paper, restored=True, rule="not_harmful") == pytest.approx((0.54 + 0.62) / 2)
    assert validation_score(paper, restored=False) == pytest.approx(0.55)
    assert validation_score({"superres": {"gain_ma": 0.1}}, restored=True) is None
    chosen, scores = choose_recipe(with_recipes(0, paper=paper, augmented=augmented))
    assert scores == pytest.approx({"paper pipeline": 0.57, "augmented": 0.60, "augmented + restorations": 0.6025})
    assert chosen == "augmented + restorations"
    # A tie keeps the simplest recipe: the augmented classifier alone.
    flat = {"reconstruction": record(0.56, 0.0, -0.02), "superres": record(0.64, 0.0, -0.01)}
    assert choose_recipe(with_recipes(0, paper=paper, augmented=flat))[0] == "augmented"
    assert choose_recipe(run(0, occ_gain=0.03, low=0.01)) == (None, {})

    runs = [with_recipes(0, paper=paper, augmented=augmented)]
    rules = gate_rules(runs)
    # Four decisions: "proven" switches off the paper's G^S and the augmented G^R, the point rule and
    # "not harmful" none. Their test gains (low resolution +4, the augmented occlusion -1) are what
    # switching them off cost / saved.
    assert rules["proven"]["off"] == 2 and rules["point"]["off"] == rules["not_harmful"]["off"] == 0
    assert rules["proven"]["of"] == 4 and rules["proven"]["test_cost"] == pytest.approx(0.04 - 0.01)
    harmful = gate_rules([with_recipes(0, paper=paper | {"superres": record(0.60, -0.03, -0.05)}, augmented=augmented)])
    assert harmful["not_harmful"]["off"] == 1 and harmful["not_harmful"]["test_cost"] == pytest.approx(0.04)
    result = summarize(runs, seconds=60)
    assert result["chosen"][0]["recipe"] == "augmented + restorations"
    assert result["augmented"]["comparisons"]["occlusion"]["per_seed"][0]["gain"] == pytest.approx(-0.01)
    text = render(result)
    assert "| 0 | augmented + restorations | paper pipeline 57.00, augmented 60.00, augmented + restorations 60.25 |" in text
    assert "| 0 | paper | superres | +2.00 (-1.00 to +4.00) | off | on | on | +4.00 |" in text
    assert "| proven | 2 of 4 | +3.00 |" in text


def test_command_line_settings():
    config = cli.reproduce_config(cli.reproduce_parser().parse_args(
        ["--seeds", "2", "--ceiling-seeds", "0", "--ceilings", "lowres,corrupted", "--set", "reconstruction.epochs=9"]))
    assert config.seeds == (0, 1) and config.ceiling_seeds == 0 and config.ceilings == ("lowres", "corrupted")
    assert ReproduceConfig().ceilings == ("occluded", "lowres") and ReproduceConfig().ceiling_runs == 2
    assert ReproduceConfig(seeds=(0,)).ceiling_runs == 1 and ReproduceConfig().augmented
    assert not cli.reproduce_config(cli.reproduce_parser().parse_args(["--no-augmented"])).augmented
    assert config.train["reconstruction"]["epochs"] == 9 and config.train["reconstruction"]["agreement_weight"] == 100
    with pytest.raises(ConfigError, match="network name"):
        cli.reproduce_config(cli.reproduce_parser().parse_args(["--set", "epochs=3"]))
    with pytest.raises(ValueError, match="ceiling_seeds"):
        ReproduceConfig(seeds=(0,), ceiling_seeds=2)
    with pytest.raises(ValueError, match="ceilings must be distinct values of"):
        ReproduceConfig(ceilings=("blurred",))
    with pytest.raises(ValueError, match="ceilings must be distinct values of"):
        ReproduceConfig(ceilings="lowres")
    spaced = cli.reproduce_config(cli.reproduce_parser().parse_args(["--ceilings", " occluded, lowres ,"]))
    assert spaced.ceilings == ("occluded", "lowres")
    assert cli.reproduce_config(cli.reproduce_parser().parse_args(["--ceilings", ""])).ceilings == ()


@pytest.mark.slow
def test_a_tiny_reproduce_runs_every_step(tmp_path, ray_local, monkeypatch):
    # The whole command at the demo's --small sizes, one seed with one ceiling (the mixed one, which
    # corrupts both ways). It runs in this process on the session's Ray, which it must leave up: the
    # start and stop of a Ray of its own are the demo's, tested in a fresh process (tests/test_demo.py).
    monkeypatch.setattr(ray_local, "shutdown", lambda: None)
    cli.main(["reproduce", "--small", "--seeds", "1", "--ceilings", "corrupted", "--out", str(tmp_path)])
    result = json.loads((tmp_path / "reproduce.json").read_text())
    run = result["runs"][0]
    assert run["seed"] == 0 and run["test_seed"] == 900_000 and set(run["ceilings"]) == {"complete"}
    assert 0 <= run["ceilings"]["complete"] <= 1
    assert set(result["comparisons"]) == set(RECOVERY_TARGETS) and "| clean |" in (tmp_path / "reproduce.md").read_text()
    assert (tmp_path / "seed-0" / "report" / "report.md").is_file()
    assert (tmp_path / "seed-0" / "ceiling-corrupted" / "metrics.json").is_file()

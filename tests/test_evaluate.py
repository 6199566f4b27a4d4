"""The evaluation job (paper §4 Tables 1 and 2) and its report rendering."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from attrgan import report
from attrgan.attributes import OCCLUSION_DOWN, SYNTH_ATTRIBUTES
from attrgan.evaluate import (
    EXPERIMENTS,
    EvaluateConfig,
    VariantScorer,
    experiment_metrics,
    occlusion_detection,
    variant_configs,
)
from attrgan.metrics import attribute_metrics
from attrgan.pipeline import Pipeline, PipelineConfig

CLASSIFIER_SIZE = (64, 32)


def tiny_bundle(attributes=SYNTH_ATTRIBUTES):
    """Random tiny networks: classifier 64×32, G^R 32×16, G^S 16×8 → 64×32."""
    from attrgan.bundle import Bundle
    from attrgan.models import (AttributeClassifier, ClassifierConfig, ReconstructionConfig,
                                ReconstructionGenerator, SuperResConfig, SuperResGenerator)

    torch.manual_seed(0)
    return Bundle(
        classifier=AttributeClassifier(ClassifierConfig(attributes=tuple(attributes), backbone="small",
                                                        width=0.125, input_size=CLASSIFIER_SIZE)).eval(),
        reconstruction=ReconstructionGenerator(ReconstructionConfig(width=0.0625, input_size=(32, 16))).eval(),
        superres=SuperResGenerator(SuperResConfig(width=0.0625, input_size=(16, 8))).eval(),
        metas={"classifier": {"thresholds": [0.5] * len(attributes)}},
    )


# --- report rendering -------------------------------------------------------------------------


def test_markdown_tables_use_percent_and_reject_ragged_rows():
    assert report.percent(0.57704) == "57.70" and report.percent(math.nan) == "n/a"
    table = report.markdown_table(["a", "b"], [["x", 1], ["y", 2]])
    assert table.splitlines() == ["| a | b |", "|:---|---:|", "| x | 1 |", "| y | 2 |"]
    with pytest.raises(ValueError, match="every row needs 2 cells"):
        report.markdown_table(["a", "b"], [["x"]])


def test_summary_and_per_attribute_tables_show_the_metrics():
    labels = np.array([[1, 0], [0, 1], [1, -1]], np.int8)
    scores = np.array([[0.9, 0.2], [0.8, 0.7], [0.6, 0.1]], np.float32)
    m = attribute_metrics(labels, scores, attributes=("a", "b"))
    # a: TP 2 of 2 positives, TN 0 of 1 negative → mA_a 0.5; b: 1/1 and 1/1 → 1.0; mA 0.75.
    assert m.ma == pytest.approx(0.75)
    summary = report.summary_table([("clean", m)])
    assert "| clean | 75.00 |" in summary
    per_attr = report.per_attribute_table(m).splitlines()
    assert per_attr[2].startswith("| a | 50.00 |") and per_attr[2].endswith("| 2 | 3 |")
    assert per_attr[3].startswith("| b | 100.00 |")


def test_contact_sheet_and_plots_write_pngs(tmp_path):
    img = np.zeros((40, 16, 3), np.uint8)
    img[:20] = 255
    small = np.full((10, 4, 3), 128, np.uint8)
    path = report.contact_sheet([[img, small, img], [img, small, img]], tmp_path / "sheet.png",
                                column_titles=["original", "corrupted", "restored"], row_titles=["r0", "r1"])
    with Image.open(path) as png:
        assert png.format == "PNG" and png.width > 100 and png.height > 100
    with pytest.raises(ValueError, match="row 0 has 2 images, expected 3"):
        report.contact_sheet([[img, img]], tmp_path / "bad.png", column_titles=["a", "b", "c"])
    with pytest.raises(ValueError, match="HWC RGB uint8"):
        report.contact_sheet([[img.astype(np.float32)]], tmp_path / "bad.png", column_titles=["a"])

    m = attribute_metrics(np.array([[1, 0], [0, 1]], np.int8), np.array([[0.9, 0.1], [0.2, 0.3]]),
                          attributes=("a", "b"))
    bars = report.plot_per_attribute_ma({"x": m, "y": m}, tmp_path / "ma.png")
    pairs = report.plot_corrupted_vs_restored({"occ": (m, m)}, tmp_path / "cr.png")
    assert bars.stat().st_size > 1000 and pairs.stat().st_size > 1000


# --- scoring ------------------------------------------------------------------------------------


def test_variant_configs_force_one_restoration_each():
    base = PipelineConfig(device="cpu")
    v = variant_configs(base)
    assert not v["plain"].use_superres and not v["plain"].use_reconstruction
    assert v["reconstruct"].use_reconstruction and v["reconstruct"].occlusion_threshold == 0.0
    assert not v["reconstruct"].use_superres
    assert v["superres"].use_superres and not v["superres"].use_reconstruction
    assert v["superres"].sr_max_height >= 10**9
    assert v["pipeline"] == base


def test_variant_scorer_matches_the_pipeline_run_each_way():
    bundle = tiny_bundle()
    scorer = VariantScorer(bundle, PipelineConfig(device="cpu"))
    rng = np.random.default_rng(0)
    n, (h, w) = 6, CLASSIFIER_SIZE
    images = rng.integers(0, 256, (n, h, w, 3), dtype=np.uint8)
    heights = np.array([200, 60, 180, 200, 70, 10], np.int64)
    batch = {"crop_id": np.array([f"c{i}" for i in range(n)]),
             "eval_set": np.array(["clean", "lowres", "occluded", "occluded", "lowres", "clean"]),
             "status": np.array(["ok"] * 5 + ["error"]), "error": np.array([None] * 5 + ["bad jpeg"], object),
             "image": images, "crop_height": heights}
    out = scorer(batch)
    ok = slice(0, 5)
    plain = Pipeline(bundle, PipelineConfig(device="cpu", use_superres=False, use_reconstruction=False))
    rec = Pipeline(bundle, PipelineConfig(device="cpu", use_superres=False, occlusion_threshold=0.0))
    full = Pipeline(bundle, PipelineConfig(device="cpu"))
    expected_plain = plain(images[ok], heights[ok])["scores"]
    np.testing.assert_allclose(out["plain"][ok], expected_plain, atol=1e-6)
    np.testing.assert_allclose(out["pipeline"][ok], full(images[ok], heights[ok])["scores"], atol=1e-6)
    # forced: clean rows keep the plain scores, occluded rows are reconstructed first.
    np.testing.assert_allclose(out["forced"][0], expected_plain[0], atol=1e-6)
    np.testing.assert_allclose(out["forced"][2:4], rec(images[2:4], heights[2:4])["scores"], atol=1e-6)
    assert not np.allclose(out["forced"][2:4], expected_plain[2:4])
    # the unreadable row is carried with zero scores and its error
    assert out["status"][5] == "error" and out["error"][5] == "bad jpeg"
    assert not out["plain"][5].any() and np.isnan(out["occlusion_score"][5])


def test_experiment_metrics_are_attribute_metrics_of_the_right_rows():
    attrs = ("female", "hat", OCCLUSION_DOWN)
    rng = np.random.default_rng(1)
    rows = []
    for s in ("clean", "occluded", "lowres"):
        for i in range(5):
            rows.append({"crop_id": f"{s}{i}", "eval_set": s, "status": "ok" if i < 4 else "error",
                         **{v: rng.random(3).astype(np.float32) for v in ("plain", "forced", "pipeline")}})
    predictions = pd.DataFrame(rows)
    labels = {s: pd.DataFrame(rng.integers(-1, 2, (5, 2)).astype(np.int8), columns=["female", "hat"],
                              index=[f"{s}{i}" for i in range(5)]) for s in ("clean", "occluded", "lowres")}
    thresholds = np.array([0.4, 0.6, 0.5], np.float32)
    got = experiment_metrics(predictions, labels, attributes=("female", "hat"), model_attributes=attrs,
                             thresholds=thresholds)
    assert set(got) == {key for key, *_ in EXPERIMENTS}
    # "restored": occluded then lowres rows, ok only, pipeline scores, occlusion_down dropped.
    ok = predictions[predictions["status"] == "ok"]
    occ, low = ok[ok["eval_set"] == "occluded"], ok[ok["eval_set"] == "lowres"]
    y = np.concatenate([labels["occluded"].loc[occ["crop_id"]].to_numpy(), labels["lowres"].loc[low["crop_id"]].to_numpy()])
    s = np.stack(list(occ["pipeline"]) + list(low["pipeline"]))[:, :2]
    want = attribute_metrics(y, s, attributes=("female", "hat"), thresholds=thresholds[:2])
    assert got["restored"].to_dict() == want.to_dict()

    detect = occlusion_detection(predictions, model_attributes=attrs, threshold=0.5)
    y_occ = (ok["eval_set"] == "occluded").to_numpy(np.int8)[:, None]
    s_occ = np.stack(list(ok["plain"]))[:, [2]]
    assert detect.to_dict() == attribute_metrics(y_occ, s_occ, attributes=(OCCLUSION_DOWN,)).to_dict()


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="limit must be >= 1"):
        EvaluateConfig(manifest="m", bundle="b", out="o", limit=0)
    with pytest.raises(ValueError, match="EvaluateConfig.bundle is required"):
        EvaluateConfig(manifest="m", bundle="", out="o")


# --- the job end to end on a tiny bundle and manifest ---------------------------------------------


@pytest.mark.ray
def test_evaluate_job_writes_every_table_with_the_metrics_of_its_predictions(tmp_path, ray_local):
    from attrgan.bundle import save_bundle
    from attrgan.data.manifest import label_columns, read_manifest
    from attrgan.data.synth import generate
    from attrgan.evaluate import evaluate

    manifest = generate(str(tmp_path / "data"), 8, seed=3, workers=1, splits=(0.0, 0.0, 1.0))
    save_bundle(str(tmp_path / "bundle"), tiny_bundle())
    config = EvaluateConfig(manifest=manifest, bundle=str(tmp_path / "bundle"), out=str(tmp_path / "out"),
                            batch_size=8, examples=2, pipeline=PipelineConfig(device="cpu"))
    result = evaluate(config)

    text = result.report_path.read_text()
    for heading in ("## Table 1", "## Table 2", "## Occlusion detection", "## Per attribute, clean crops"):
        assert heading in text
    for _, label, _, _ in EXPERIMENTS:
        assert f"| {label} |" in text
    for fig in result.figures:
        assert fig.is_file() and f"({fig.relative_to(result.report_path.parent).as_posix()})" in text
    assert {f.name for f in result.figures} >= {"per_attribute_ma.png", "corrupted_vs_restored.png",
                                                "examples_occluded.png", "examples_lowres.png"}
    assert result.counts == {"clean": 8, "occluded": 8, "lowres": 8}

    # metrics.json = attrgan.metrics on the labels and the scores the job saved.
    summary = json.loads(result.metrics_path.read_text())
    predictions = pd.read_parquet(tmp_path / "out" / "predictions.parquet")
    attrs = summary["attributes"]
    assert OCCLUSION_DOWN not in attrs and len(attrs) == len(SYNTH_ATTRIBUTES) - 1
    tables = {s: read_manifest(str(tmp_path / "out" / "sets" / s)) for s in ("clean", "occluded", "lowres")}
    for key, _, sets, variant in EXPERIMENTS:
        y, s = [], []
        for name in sets:
            t = tables[name]
            rows = predictions[predictions["eval_set"] == name].set_index("crop_id").loc[t["crop_id"].to_pylist()]
            y.append(label_columns(t, attrs))
            s.append(rows[[f"{variant}_{a}" for a in attrs]].to_numpy(np.float32))
        want = attribute_metrics(np.concatenate(y), np.concatenate(s), attributes=attrs, thresholds=0.5)
        got = summary["experiments"][key]
        for field in ("ma", "accuracy", "precision", "recall", "f1"):
            assert got[field] == pytest.approx(getattr(want, field), abs=1e-12), (key, field)
        want_table = want.to_dict()["per_attribute"]
        assert list(got["per_attribute"]) == list(want_table)
        for attr, row in want_table.items():
            for column, value in row.items():
                assert got["per_attribute"][attr][column] == (None if value is None else pytest.approx(value))
        assert f"| {dict((k, l) for k, l, _, _ in EXPERIMENTS)[key]} | {report.percent(want.ma)} |" in text

"""The evaluation job (paper §4 Tables 1 and 2) and its report rendering."""

from __future__ import annotations

import json
import math
import types

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from attrgan import report
from attrgan.attributes import OCCLUSION_DOWN, SYNTH_ATTRIBUTES
from attrgan.config import StorageConfig
from attrgan.evaluate import EvaluateConfig, VariantScorer, reconstruction_psnr
from attrgan.experiments import (COMPARISONS, EXPERIMENTS, Scored, comparison_intervals, experiment_metrics,
                                 occlusion_detection, recipe_contrast)
from attrgan.metrics import GainInterval, attribute_metrics
from attrgan.pipeline import Pipeline, PipelineConfig
from helpers import tiny_bundle

CLASSIFIER_SIZE = (64, 32)


def synth_bundle():
    """Random tiny networks over the synthetic attributes: classifier 64×32, G^R 32×16, G^S 16×8 → 64×32."""
    return tiny_bundle(attributes=SYNTH_ATTRIBUTES, input_size=CLASSIFIER_SIZE, width=0.125,
                       thresholds=[0.5] * len(SYNTH_ATTRIBUTES))


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


def _interval(gain, low, high, per_attribute=None):
    table = per_attribute if per_attribute is not None else pd.DataFrame(
        {"gain": [gain], "low": [low], "high": [high]}, index=pd.Index(["a"], name="attribute"))
    return GainInterval(gain=gain, low=low, high=high, crops=500, resamples=1000, level=0.95, per_attribute=table)


def test_gains_are_written_with_their_interval_and_a_verdict_no_stronger_than_it():
    helps, flat, hurts = _interval(0.018, 0.009, 0.027), _interval(0.01, -0.002, 0.02), _interval(-0.03, -0.05, -0.01)
    assert report.gain_text(helps) == "+1.80 (95 % CI +0.90 to +2.70, 500 crops) helps"
    assert report.gain_text(flat).endswith("-0.20 to +2.00, 500 crops) no measurable effect")
    assert report.gain_text(hurts).endswith(") hurts")
    assert report.restoration_verdict({"x": helps, "y": helps}) == "every restoration helps"
    assert report.restoration_verdict({"x": flat, "y": flat}) == "no restoration has a measurable effect"
    assert (report.restoration_verdict({"x": helps, "y": flat, "z": hurts})
            == "helps: x; no measurable effect: y; hurts: z")
    table = report.gain_table({"occlusion": helps, "complete": _interval(
        0.0, 0.0, 0.0, pd.DataFrame({"gain": [math.nan], "low": [math.nan], "high": [math.nan]},
                                    index=pd.Index(["a"], name="attribute")))}).splitlines()
    assert table[0] == "| Attribute | occlusion | complete |"
    assert table[2] == "| **mA** | +1.80 [+0.90, +2.70] | +0.00 [+0.00, +0.00] |"
    assert table[3] == "| a | +1.80 [+0.90, +2.70] | n/a [n/a, n/a] |"
    assert report.decibels(17.304) == "17.30" and report.decibels(None) == "n/a" and report.decibels(math.inf) == "inf"


# --- scoring ------------------------------------------------------------------------------------


def test_variant_scorer_matches_the_pipeline_run_each_way():
    bundle = synth_bundle()
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

    # The gains' intervals pair the same rows: their gains are the experiments' mA differences.
    intervals = comparison_intervals(predictions, labels, attributes=("female", "hat"), model_attributes=attrs,
                                     thresholds=thresholds, resamples=50, seed=3)
    assert list(intervals) == [name for name, _, _ in COMPARISONS]
    for name, before, after in COMPARISONS:
        assert intervals[name].gain == got[after].ma - got[before].ma
        assert intervals[name].resamples == 50
    assert intervals["occlusion"].crops == 4 and intervals["complete"].crops == 8

    detect = occlusion_detection(predictions, model_attributes=attrs, threshold=0.5)
    y_occ = (ok["eval_set"] == "occluded").to_numpy(np.int8)[:, None]
    s_occ = np.stack(list(ok["plain"]))[:, [2]]
    assert detect.to_dict() == attribute_metrics(y_occ, s_occ, attributes=(OCCLUSION_DOWN,)).to_dict()


def test_two_bundles_are_compared_on_the_same_crops_each_with_its_own_thresholds():
    rng = np.random.default_rng(4)
    sets = ("occluded", "lowres")
    labels = {s: pd.DataFrame(rng.integers(0, 2, (6, 2)).astype(np.int8), columns=["female", "hat"],
                              index=[f"{s}{i}" for i in range(6)]) for s in sets}

    def predictions(order, width):
        rows = [{"crop_id": f"{s}{i}", "eval_set": s, "status": "ok" if (s, i) != ("lowres", 5) else "error",
                 "track_id": f"t{i // 2}", "camera_id": "c",
                 **{v: rng.random(width).astype(np.float32) for v in ("plain", "forced", "pipeline")}}
                for s in sets for i in range(6)]
        return pd.DataFrame([rows[j] for j in order])

    # Another bundle (other attributes, other thresholds) scored the same crops in another order.
    a = Scored(predictions(range(12), 3), ("female", "hat", OCCLUSION_DOWN), np.array([0.4, 0.6, 0.5], np.float32))
    b = Scored(predictions(range(11, -1, -1), 2), ("hat", "female"), np.array([0.3, 0.7], np.float32))
    got = recipe_contrast(a, b, labels, sets=sets, variants=("pipeline", "plain"), attributes=("female", "hat"),
                          resamples=50)
    # By hand: the 11 crops both read, b's columns reordered, each side's own thresholds.
    ok = a.predictions[a.predictions["status"] == "ok"].copy()
    other = b.predictions.set_index(["eval_set", "crop_id"])
    y = np.stack([labels[s].loc[c].to_numpy() for s, c in zip(ok["eval_set"], ok["crop_id"])])
    first = np.stack(list(ok["pipeline"]))[:, :2] >= [0.4, 0.6]
    second = np.stack([other.loc[(s, c), "plain"] for s, c in zip(ok["eval_set"], ok["crop_id"])])[:, [1, 0]] >= [0.7, 0.3]
    want = (attribute_metrics(y, second, attributes=("female", "hat")).ma
            - attribute_metrics(y, first, attributes=("female", "hat")).ma)
    assert got.crops == 11 and got.tracks == 3 and got.gain == pytest.approx(want)
    assert recipe_contrast(a, a, labels, sets=sets, variants=("plain", "plain"), attributes=("female", "hat"),
                           resamples=50).gain == 0


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="limit must be >= 1"):
        EvaluateConfig(manifest="m", bundle="b", out="o", limit=0)
    with pytest.raises(ValueError, match="EvaluateConfig.bundle is required"):
        EvaluateConfig(manifest="m", bundle="", out="o")
    with pytest.raises(ValueError, match="bootstrap_resamples must be >= 1, got 0"):
        EvaluateConfig(manifest="m", bundle="b", out="o", bootstrap_resamples=0)


class _AddTen:
    """A stand-in for the scorer's "reconstruction" pipeline: paints +10 on every pixel."""

    reconstruction = object()  # it reconstructs

    def __call__(self, images, heights, *, return_images=False):
        assert return_images
        return {"images": (images.astype(np.int16) + 10).clip(0, 255).astype(np.uint8)}


def test_reconstruction_psnr_by_hand(tmp_path):
    """Grey people (100) half covered by a lighter occluder (200), 40×16 PNGs seen at 20×8; the
    stand-in reconstruction adds 10 everywhere, so every PSNR is known: 20·log10(255 / difference)."""
    ids, clean_uris, occ_uris = [], [], []
    for i in range(3):
        person = np.full((40, 16, 3), 100, np.uint8)
        occluded = person.copy()
        occluded[20:] = 200
        ids.append(f"c{i}")
        for image, uris, name in ((person, clean_uris, f"c{i}.png"), (occluded, occ_uris, f"c{i}-occ.png")):
            Image.fromarray(image).save(tmp_path / name)
            uris.append(str(tmp_path / name))
    occ_uris[2] = str(tmp_path / "missing.png")  # unreadable: left out
    tables = {"clean": pa.table({"crop_id": ids, "image_uri": clean_uris}),
              "occluded": pa.table({"crop_id": [f"{c}-occ" for c in ids], "image_uri": occ_uris,
                                    "occluded_fraction": pa.array([0.5] * 3, pa.float32())})}
    scorer = types.SimpleNamespace(pipelines={"reconstruction": _AddTen()}, input_size=(20, 8))
    got = reconstruction_psnr(tables, scorer, batch_size=2, storage=StorageConfig())
    assert got.crops == 2
    assert got.visible_vs_input == pytest.approx(20 * math.log10(255 / 10))
    assert got.occluded_vs_original == pytest.approx(20 * math.log10(255 / 110))
    assert got.occluded_input_vs_original == pytest.approx(20 * math.log10(255 / 100))
    assert json.loads(json.dumps(got.to_dict()))["crops"] == 2
    # Without the manifest column nothing says which rows were covered.
    tables["occluded"] = tables["occluded"].drop_columns(["occluded_fraction"])
    assert reconstruction_psnr(tables, scorer, batch_size=2, storage=StorageConfig()) is None


# --- the job end to end on a tiny bundle and manifest ---------------------------------------------


@pytest.mark.ray
def test_evaluate_job_writes_every_table_with_the_metrics_of_its_predictions(tmp_path, ray_local):
    from attrgan.bundle import save_bundle
    from attrgan.data.manifest import label_columns, read_manifest
    from attrgan.data.synth import generate
    from attrgan.evaluate import evaluate

    manifest = generate(str(tmp_path / "data"), 8, seed=3, workers=1, splits=(0.0, 0.0, 1.0))
    # Two people over three frames each and two crops without a track (tracks of one), on one camera.
    table = pq.read_table(manifest)
    table = table.set_column(table.schema.get_field_index("camera_id"), "camera_id", pa.array(["cam00"] * 8))
    table = table.append_column("track_id", pa.array(["t0"] * 3 + ["t1"] * 3 + [None] * 2, pa.string()))
    table = table.append_column("frame_index", pa.array([0, 1, 2, 0, 1, 2, None, None], pa.int64()))
    pq.write_table(table, manifest)
    save_bundle(str(tmp_path / "bundle"), synth_bundle())
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
    # No gain stored: the pipeline reconstructs from the classifier's own occlusion threshold, and says so.
    assert "The pipeline reconstructs from 0.500 (" in text and "of the occluded crops and" in text

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

    # Gains with their intervals, and what G^R paints, next to the mA figures.
    assert set(summary["gain_intervals"]) == set(summary["gains_ma"]) == {name for name, _, _ in COMPARISONS}
    for name, interval in result.intervals.items():
        got = summary["gain_intervals"][name]
        assert got["gain"] == pytest.approx(summary["gains_ma"][name], abs=1e-12)
        assert got["resamples"] == config.bootstrap_resamples and got["verdict"] == interval.verdict
        assert f"{name} {report.gain_text(interval)}" in text
    assert summary["gain_intervals"]["complete"]["crops"] == 16
    assert summary["gain_intervals"]["complete"]["tracks"] == 4  # resampled as people, not crops
    rec = summary["reconstruction_psnr"]
    assert rec["crops"] == 8 and rec == result.reconstruction_psnr.to_dict()
    assert all(rec[k] is None or rec[k] > 0 for k in ("visible_vs_input", "occluded_vs_original"))
    for heading in ("## What reconstruction paints (PSNR)", "## Per attribute, gain from restoring"):
        assert heading in text

    # Per person: the predictions say who each crop shows, and the per-track tables are the
    # experiments of those predictions.
    assert predictions.groupby("eval_set")["track_id"].apply(lambda t: t.notna().sum()).to_dict() == {
        "clean": 6, "occluded": 6, "lowres": 6}
    assert (predictions["crop_height"] > 0).all() and predictions["frame_index"].max() == 2
    people = summary["tracks"]
    assert people["sets"]["clean"]["plain"]["tracks"] == 4 and people["sets"]["mixed"]["plain"]["crops"] == 8
    assert people["fusion"]["rule"] == "mean" and result.tracks is not None
    assert "## Per person: tracks" in text and report.track_section(result.tracks) in text


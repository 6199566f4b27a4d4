"""Restoration that is proven or off: the stored validation gain and the pipeline's gate."""

from __future__ import annotations

import dataclasses

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as hs

from attrgan.bundle import load_bundle, save_bundle
from attrgan.fusion import track_groups
from attrgan.pipeline import Pipeline, PipelineConfig
from attrgan.contracts import GAIN_KEY, OCCLUSION_THRESHOLD_KEY, BundleInfo, passes_gate, proven
from attrgan.metrics import measurable
from attrgan.train.gain import (MIN_TRACKS, best_epoch, calibrate_occlusion, corrupted_inputs, keep_best,
                                measure_gain, regate)
from helpers import ATTRS, INPUT, tiny_bundle

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def stored(gain: float, classifier_version: str = "c1", *, low: float | None = None) -> dict:
    """A stored gain record; its interval is gain ± 0.01 unless `low` is given."""
    low = gain - 0.01 if low is None else low
    return {GAIN_KEY: {"split": "val", "crops": 500, "gain_ma": gain, "low": low, "high": gain + 0.01,
                       "level": 0.95, "resamples": 1000, "seed": 0, "classifier_version": classifier_version}}


def plan_of(metas, *, attributes, **switches):
    """The restorations a bundle with these metas and a classifier of `attributes` runs."""
    classifier = {**metas.get("classifier", {}), "attributes": list(attributes)}
    return BundleInfo.from_metas({**metas, "classifier": classifier}).restorations(**switches)


def test_plan_runs_only_what_is_proven_or_unmeasured():
    metas = {"classifier": {"version": "c1"}, "superres": stored(0.018), "reconstruction": stored(-0.002)}
    plan = plan_of(metas, attributes=ATTRS, use_superres=True, use_reconstruction=True, require_proven=True)
    assert plan["superres"].runs and "+1.80 mA (+0.80 to +2.80" in plan["superres"].reason
    assert plan["superres"].reason.endswith(": proven")
    # The reason says what the gain was measured on.
    drawn = {GAIN_KEY: metas["superres"][GAIN_KEY] | {"tracks": 62, "draws": 3, "left_out": ["box", "hat", "glasses"]}}
    reason = plan_of(metas | {"reconstruction": drawn}, attributes=ATTRS, use_superres=False, use_reconstruction=True,
                     require_proven=True)["reconstruction"].reason
    assert "(+0.80 to +2.80, 500 crops in 62 tracks, 3 occlusion draws, 3 attributes too rare to measure left out)" in reason
    assert not plan["reconstruction"].runs and "not proven" in plan["reconstruction"].reason

    forced = plan_of(metas, attributes=ATTRS, use_superres=True, use_reconstruction=True, require_proven=False)
    assert forced["reconstruction"].runs and "forced on" in forced["reconstruction"].reason

    # A positive gain whose interval reaches 0 is not proven (+1.78, -0.12 to +3.90), nor is a
    # lower end of exactly 0; one whose whole interval lies above 0 is.
    for low, runs in ((-0.0012, False), (0.0, False), (0.0005, True)):
        gated = plan_of(metas | {"reconstruction": stored(0.0178, low=low)}, attributes=ATTRS, use_superres=True,
                        use_reconstruction=True, require_proven=True)
        assert gated["reconstruction"].runs is runs, low
    assert not proven({"gain_ma": 0.02}) and not proven({"gain_ma": 0.02, "low": float("nan")})
    assert not proven({"gain_ma": 0.02, "low": True}) and proven({"gain_ma": 0.02, "low": 0.001})
    # "not_harmful" runs all of those, and switches off only a gain whose whole interval lies below 0.
    lenient = plan_of(metas | {"reconstruction": stored(-0.02)}, attributes=ATTRS, use_superres=True,
                      use_reconstruction=True, require_proven=True, rule="not_harmful")
    assert not lenient["reconstruction"].runs and "shown to hurt" in lenient["reconstruction"].reason
    assert passes_gate({"gain_ma": 0.0178, "low": -0.0012, "high": 0.039}, "not_harmful")
    assert passes_gate({"gain_ma": -0.003, "low": -0.02, "high": 0.01}, "not_harmful")
    assert not passes_gate({"gain_ma": -0.003, "low": -0.02, "high": 0.01}, "proven")
    with pytest.raises(ValueError, match="gate's rule"):
        passes_gate({"gain_ma": 0.1}, "maybe")
    with pytest.raises(ValueError, match="PipelineConfig.gate"):
        PipelineConfig(gate="maybe")

    old = plan_of({"classifier": {"version": "c1"}}, attributes=ATTRS, use_superres=True, use_reconstruction=True,
                           require_proven=True)
    assert all(r.runs and r.reason == "no validation gain stored" for r in old.values())

    retrained = plan_of(metas | {"reconstruction": stored(-0.02, classifier_version="c0")},
                                 attributes=ATTRS, use_superres=False, use_reconstruction=True, require_proven=True)
    assert retrained["reconstruction"].runs and "another classifier" in retrained["reconstruction"].reason
    assert not retrained["superres"].runs and retrained["superres"].reason == "switched off"

    blind = plan_of(metas, attributes=("female",), use_superres=True, use_reconstruction=True,
                             require_proven=False)
    assert not blind["reconstruction"].runs and "no 'occlusion_down' to trigger it" in blind["reconstruction"].reason


def test_pipeline_skips_an_unproven_network_and_can_be_forced(tmp_path):
    bundle = save_bundle(tmp_path / "bundle", tiny_bundle())
    # A stored gain whose interval lies below 0 for G^R, written the way training writes it: in its config.json.
    loaded = load_bundle(tmp_path / "bundle")
    loaded.metas["reconstruction"] |= stored(-0.02, classifier_version=loaded.metas["classifier"]["version"])
    images = np.random.default_rng(1).integers(0, 256, (6, *INPUT, 3), dtype=np.uint8)
    heights = np.full(6, 400, np.int64)

    gated = Pipeline(loaded, PipelineConfig(occlusion_threshold=0.0, device="cpu"))
    assert gated.reconstruction is None and not gated.restorations["reconstruction"].runs
    assert not gated(images, heights)["reconstructed"].any()

    forced = Pipeline(loaded, PipelineConfig(occlusion_threshold=0.0, device="cpu", require_proven=False))
    assert forced(images, heights)["reconstructed"].all()

    old = Pipeline(load_bundle(tmp_path / "bundle"), PipelineConfig(occlusion_threshold=0.0, device="cpu"))
    assert old(images, heights)["reconstructed"].all() and bundle.version == loaded.version


def validation_crops(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(images, labels of female and hat, stored sizes) of n random crops."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, *INPUT, 3), dtype=np.uint8)
    return images, rng.integers(0, 2, (n, 2)).astype(np.int8), np.tile([[120, 48]], (n, 1)).astype(np.int32)


def test_measure_gain_scores_the_same_crops_before_and_after():
    bundle = tiny_bundle(metas={"classifier": {"version": "c1", "thresholds": [0.5, 0.5, 0.5]}})
    images, labels, sizes = validation_crops(24)

    for kind in ("reconstruction", "superres"):
        record = measure_gain(bundle, kind, images, labels, sizes, attributes=("female", "hat"), resamples=200)
        assert record["crops"] == 24 and record["classifier_version"] == "c1" and record["resamples"] == 200
        assert record["low"] <= record["gain_ma"] <= record["high"]
        again = measure_gain(bundle, kind, images, labels, sizes, attributes=("female", "hat"), resamples=200)
        assert again == record  # seeded: corruption and resampling
    # Crops in tracks: the interval resamples the 6 tracks, and the record says so.
    tracks = track_groups([f"t{i // 4}" for i in range(24)])
    record = measure_gain(bundle, "superres", images, labels, sizes, attributes=("female", "hat"), resamples=200,
                          groups=tracks)
    assert record["tracks"] == 6 and record["crops"] == 24
    assert track_groups([None, None]) is None and track_groups(["a", None, "a"]).tolist() == [0, 1, 0]

    low, heights = corrupted_inputs("superres", images, sizes, np.random.default_rng(0))
    assert low.shape == images.shape and (heights == 30).all()
    occluded, same = corrupted_inputs("reconstruction", images, sizes, np.random.default_rng(0))
    assert (same == 120).all() and (occluded[:, :10] == images[:, :10]).all()  # the top stays visible
    assert not (occluded[:, -10:] == images[:, -10:]).all()
    with pytest.raises(ValueError, match="kind must be one of"):
        corrupted_inputs("deblur", images, sizes, np.random.default_rng(0))


def test_an_attribute_few_tracks_show_is_left_out_of_the_gain():
    # 10 tracks of 3 crops: "female" is positive in 5 tracks and negative in 5, "hat" positive in
    # one track only. A resample would often hold no hat-wearer and score hat by its negative
    # recall alone, so hat stays out of the gain and the record names it.
    groups = np.repeat(np.arange(10), 3)
    labels = np.zeros((30, 2), np.int8)
    labels[groups < 5, 0] = 1
    labels[groups == 0, 1] = 1
    assert measurable(labels, groups, MIN_TRACKS).tolist() == [True, False]
    # As single crops: 15 positive crops of female, 3 of hat.
    assert measurable(labels, None, min_tracks=3).tolist() == [True, True]
    assert measurable(labels, None, min_tracks=4).tolist() == [True, False]
    labels[0, 0] = -1  # unknown is neither positive nor negative
    assert measurable(labels, groups, min_tracks=MIN_TRACKS).tolist() == [True, False]

    bundle = tiny_bundle(metas={"classifier": {"version": "c1", "thresholds": [0.5, 0.5, 0.5]}})
    images, _, sizes = validation_crops(30)
    record = measure_gain(bundle, "superres", images, labels, sizes, attributes=("female", "hat"), resamples=100,
                          groups=groups)
    assert record["left_out"] == ["hat"] and record["min_tracks"] == MIN_TRACKS and record["draws"] == 1
    # Three tracks, too few for the rule: the gain falls back to every attribute with a positive
    # and a negative (here hat; every crop is female), and says so.
    few = measure_gain(bundle, "superres", images[:9], labels[:9], sizes[:9], attributes=("female", "hat"),
                       resamples=100, groups=groups[:9])
    assert few["min_tracks"] == 1 and few["left_out"] == ["female"] and math.isfinite(few["gain_ma"])


def test_a_reconstruction_gain_is_measured_over_several_occlusion_draws():
    bundle = tiny_bundle(metas={"classifier": {"version": "c1", "thresholds": [0.5, 0.5, 0.5]}})
    images, labels, sizes = validation_crops(12)
    measure = lambda **kw: measure_gain(bundle, "reconstruction", images, labels, sizes, attributes=("female", "hat"),
                                        resamples=100, **kw)
    three, one = measure(), measure(draws=1)
    assert three["draws"] == 3 and one["draws"] == 1 and three["crops"] == one["crops"] == 12
    assert three == measure()  # seeded
    with pytest.raises(ValueError, match="draws must be an integer >= 1"):
        measure(draws=0)


def test_the_occlusion_threshold_is_where_the_complete_pipeline_reads_best():
    # Three clean crops (low occlusion scores) that reconstruction spoils, three occluded ones it fixes.
    labels = np.array([[1], [0], [1], [0], [1], [0]], np.int8)
    occlusion = np.array([0.1, 0.2, 0.3, 0.7, 0.8, 0.9])
    right = labels[:, 0] * 0.8 + 0.1
    plain = np.where(occlusion[:, None] < 0.5, right[:, None], 1 - right[:, None])
    reconstructed = 1 - plain

    def calibrate(plain, reconstructed, detection=0.5):
        return calibrate_occlusion(labels, plain, reconstructed, occlusion, attributes=("a",),
                                   thresholds=np.array([0.5]), detection_threshold=detection)

    record = calibrate(plain, reconstructed)
    # mA 1.0 anywhere in (0.3, 0.7]; a tie goes to the highest, so the fewest crops are changed.
    assert record[OCCLUSION_THRESHOLD_KEY] == pytest.approx(0.7) and record["occlusion_ma"] == 1.0
    assert record["detection_threshold"] == 0.5 and record["detection_ma"] == 1.0
    # A detector threshold that reconstructs the clean crops too costs what the record shows.
    assert calibrate(plain, reconstructed, detection=0.15)["detection_ma"] < 1.0
    # Reconstruction that never helps: reconstruct (almost) nothing; that always helps: everything.
    assert calibrate(right[:, None], 1 - right[:, None])[OCCLUSION_THRESHOLD_KEY] == 1.0
    assert calibrate(1 - right[:, None], right[:, None])[OCCLUSION_THRESHOLD_KEY] == 0.1


def test_the_pipeline_reconstructs_from_the_calibrated_threshold_when_asked_and_of_its_own_classifier(tmp_path):
    bundle = tiny_bundle(metas={"classifier": {"version": "c1", "thresholds": [0.5, 0.5, 0.4]}})
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (24, *INPUT, 3), dtype=np.uint8)
    labels = rng.integers(0, 2, (24, 2)).astype(np.int8)
    sizes = np.tile([[120, 48]], (24, 1)).astype(np.int32)
    record = measure_gain(bundle, "reconstruction", images, labels, sizes, attributes=("female", "hat"), resamples=50)
    assert 0.0 <= record[OCCLUSION_THRESHOLD_KEY] <= 1.0 and record["detection_threshold"] == pytest.approx(0.4)
    assert record["occlusion_ma"] >= record["detection_ma"]
    sr = measure_gain(bundle, "superres", images, labels, sizes, attributes=("female", "hat"), resamples=50)
    assert OCCLUSION_THRESHOLD_KEY not in sr

    def info(gain):
        return BundleInfo.from_metas({"classifier": {"version": "c1", "attributes": list(ATTRS),
                                                     "thresholds": [0.5, 0.5, 0.4]},
                                     "reconstruction": {GAIN_KEY: gain} if gain else {}})

    calibrated = {GAIN_KEY: {"gain_ma": 0.01, "classifier_version": "c1", OCCLUSION_THRESHOLD_KEY: 0.83}}
    # By default the classifier's own threshold; the calibrated one when asked for; a setting wins over both.
    assert info(calibrated[GAIN_KEY]).occlusion_threshold() == pytest.approx(0.4)
    assert info(calibrated[GAIN_KEY]).occlusion_threshold(calibrated=True) == 0.83
    assert info(calibrated[GAIN_KEY]).occlusion_threshold(0.6, calibrated=True) == 0.6
    stale = calibrated[GAIN_KEY] | {"classifier_version": "c0"}  # calibrated for another classifier
    assert info(stale).occlusion_threshold(calibrated=True) == pytest.approx(0.4)
    assert info(None).occlusion_threshold(calibrated=True) == pytest.approx(0.4)
    assert BundleInfo.from_metas({"classifier": {"attributes": ["female"]}}).occlusion_threshold() == 0.5

    uri = tmp_path / "bundle"
    save_bundle(uri, tiny_bundle(metas={"classifier": {"thresholds": [0.5, 0.5, 0.4]}}))
    loaded = load_bundle(uri)
    loaded.metas["reconstruction"] |= {GAIN_KEY: {**calibrated[GAIN_KEY], "low": 0.001,
                                                  "classifier_version": loaded.metas["classifier"]["version"]}}
    assert Pipeline(loaded, PipelineConfig(device="cpu")).occlusion_threshold == pytest.approx(0.4)
    assert Pipeline(loaded, PipelineConfig(device="cpu", calibrated_occlusion=True)).occlusion_threshold == 0.83


def test_a_stored_occlusion_threshold_outside_0_1_is_refused(tmp_path):
    import json

    from attrgan.bundle import BundleError

    save_bundle(tmp_path / "bundle", tiny_bundle())
    config = tmp_path / "bundle" / "reconstruction" / "config.json"
    meta = json.loads(config.read_text())
    for bad in (1.5, "0.5", True):
        config.write_text(json.dumps(meta | {GAIN_KEY: {"gain_ma": 0.0, OCCLUSION_THRESHOLD_KEY: bad}}))
        with pytest.raises(BundleError, match="occlusion_threshold must be a number in"):
            load_bundle(tmp_path / "bundle")


def test_forced_configs_measure_even_an_unproven_network():
    from attrgan.pipeline import forced_configs

    base = PipelineConfig(device="cpu", precision="fp32")
    configs = forced_configs(base)
    assert not any(c.require_proven for c in configs.values()) and base.require_proven
    assert not configs["plain"].use_superres and not configs["plain"].use_reconstruction
    assert configs["reconstruction"].use_reconstruction and configs["reconstruction"].occlusion_threshold == 0.0
    assert not configs["reconstruction"].use_superres
    assert configs["superres"].use_superres and not configs["superres"].use_reconstruction
    assert configs["superres"].sr_max_height >= 10**9
    assert configs["plain"] == dataclasses.replace(configs["superres"], use_superres=False, sr_max_height=None)


def test_regate_measures_a_swapped_classifier_and_the_gate_reads_it(tmp_path):
    from attrgan.bundle import bundle_info
    from attrgan.data.synth import generate

    manifest = generate(str(tmp_path / "archive"), 24, seed=3, splits=(0.0, 1.0, 0.0), track_splits=("val",), workers=1)
    uri = str(tmp_path / "bundle")
    saved = save_bundle(uri, tiny_bundle(metas={"classifier": {"thresholds": [0.5, 0.5, 0.5]}}))
    records = regate(uri, manifest, seed=1, config=PipelineConfig(device="cpu", precision="fp32"))
    info = bundle_info(uri)
    assert info.version == saved.version  # metadata only: the weights and versions stay
    for kind, record in records.items():
        assert info.gains[kind] == record and record["classifier_version"] == info.classifier_version
        assert record["crops"] == 24 and 0 < record["tracks"] < 24 and record["split"] == "val"
        assert record["ma_after"] == pytest.approx(record["ma_before"] + record["gain_ma"])
    plan = info.restorations(use_superres=True, use_reconstruction=True, require_proven=True)
    assert all(plan[k].runs == proven(records[k]) for k in records)


def test_restored_crops_mix_clean_crops_with_what_the_generators_paint_labels_kept():
    from attrgan.pipeline import forced_configs
    from attrgan.train.gain import pipeline_outputs
    from attrgan.train.restored import restored_crops

    bundle = tiny_bundle(metas={"classifier": {"thresholds": [0.5, 0.5, 0.5]}})
    rng = np.random.default_rng(0)
    n = 40
    images = rng.integers(0, 256, (n, *INPUT, 3), dtype=np.uint8)
    labels = rng.integers(0, 2, (n, 3)).astype(np.int8)
    labels[:, 2] = 0
    sizes = np.tile([[120, 48]], (n, 1)).astype(np.int32)
    config = PipelineConfig(device="cpu", precision="fp32")
    out, y, kind = restored_crops(bundle, images, labels, sizes, shares=(0.3, 0.3), occlusion_index=2, seed=5,
                                  config=config)
    assert set(np.unique(kind)) == {0, 1, 2} and out.shape == images.shape
    assert (out[kind == 0] == images[kind == 0]).all() and (y[kind == 0] == labels[kind == 0]).all()
    assert (y[:, :2] == labels[:, :2]).all() and (y[kind == 1, 2] == 1).all() and (y[kind != 1, 2] == 0).all()
    # A restored crop is what the pipeline, forced, classifies for that crop corrupted as the gains measure it.
    redo = np.random.default_rng(5)
    redo.random(n)
    chosen = np.flatnonzero(kind == 1)
    corrupted, heights = corrupted_inputs("reconstruction", images[chosen], sizes[chosen], redo)
    want = pipeline_outputs(Pipeline(bundle, forced_configs(config)["reconstruction"]), corrupted, heights,
                            return_images=True)["images"]
    assert np.array_equal(out[chosen], want)
    again = restored_crops(bundle, images, labels, sizes, shares=(0.3, 0.3), occlusion_index=2, seed=5, config=config)
    assert all(np.array_equal(a, b) for a, b in zip(again, (out, y, kind)))  # seeded


def test_best_epoch_takes_the_highest_gain_the_later_of_ties_and_never_nan():
    nan = math.nan
    assert best_epoch([0.01, 0.03, 0.02]) == 1
    assert best_epoch([0.03]) == 0
    assert best_epoch([0.02, 0.02, 0.01]) == 1  # a tie goes to the later epoch
    assert best_epoch([-0.01, -0.01]) == 1
    assert best_epoch([-0.02, nan, -0.03]) == 0  # NaN (not measured) never wins, even over a loss
    assert best_epoch([nan, 0.0, nan]) == 1
    assert best_epoch([nan, nan]) == 1  # nothing measured: the last epoch, as select_epoch "last"
    with pytest.raises(ValueError, match="at least one epoch"):
        best_epoch([])


@settings(max_examples=100, deadline=None)
@given(hs.lists(hs.one_of(hs.floats(-1, 1), hs.just(math.nan)), min_size=1, max_size=8))
def test_keeping_the_better_of_best_and_each_new_epoch_is_best_epoch_over_all(gains):
    # What training does epoch by epoch (keep_best) picks what best_epoch picks over the whole run.
    best = None
    for epoch, gain in enumerate(gains):
        record = None if math.isnan(gain) else {"gain_ma": gain}
        best = keep_best(best, epoch, record, {"w": torch.tensor([float(epoch)])})
    assert best["epoch"] == best_epoch(gains)
    assert best["net_g"]["w"].item() == best_epoch(gains)


def test_keep_best_copies_the_weights_it_keeps():
    weights = {"w": torch.zeros(3)}
    best = keep_best(None, 0, {"gain_ma": 0.02}, weights)
    weights["w"] += 1  # training goes on in place
    kept = keep_best(best, 1, {"gain_ma": 0.01}, weights)
    assert kept["epoch"] == 0 and kept["gain"] == {"gain_ma": 0.02} and kept["net_g"]["w"].tolist() == [0, 0, 0]
    later = keep_best(best, 2, {"gain_ma": 0.02}, weights)
    assert later["epoch"] == 2 and later["net_g"]["w"].tolist() == [1, 1, 1]

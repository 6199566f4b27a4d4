"""Fitting a bundle's track fusion (attrgan.train.fusion) and storing it in the bundle: the fit on
hand-built tracks, the whole fit on a tiny bundle, and the stored record read back."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import ATTRS, INPUT, tiny_bundle

from attrgan.bundle import bundle_info, save_bundle, store_fusion
from attrgan.fusion import QUALITY_FEATURES, Fusion, crop_weights, fuse, quality_features
from attrgan.metrics import attribute_metrics
from attrgan.fusion import track_labels
from attrgan.train.fusion import MIN_TRACKS, choose_fusion, fit_coefficients, fit_fusion

pytestmark = pytest.mark.usefixtures("one_torch_thread")

A = 5
OCCLUSION = QUALITY_FEATURES.index("occlusion_score")


def hand_built(n_tracks: int, seed: int, *, informative: bool = True):
    """(scores, features, groups, labels per track): 3-7 crops a track, about half occluded (the
    first never). A clean crop's scores carry the person's labels; an occluded one's are noise."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, (n_tracks, A)).astype(np.int8)
    scores, features, groups = [], [], []
    for t in range(n_tracks):
        k = int(rng.integers(3, 8))
        occluded = rng.random(k) < 0.5
        occluded[0] = False
        clean = np.clip(0.2 + 0.6 * labels[t] + rng.normal(0, 0.15, (k, A)), 0, 1)
        scores.append(np.where(occluded[:, None], rng.random((k, A)), clean) if informative else rng.random((k, A)))
        occlusion = np.where(occluded, rng.uniform(0.6, 1.0, k), rng.uniform(0.0, 0.3, k))
        features.append(quality_features(occlusion, rng.integers(60, 400, k), np.zeros(k), occluded))
        groups.append(np.full(k, t))
    return np.concatenate(scores), np.concatenate(features), np.concatenate(groups), labels


def test_occluded_crops_that_carry_no_label_are_weighted_down_and_quality_wins():
    scores, features, groups, labels = hand_built(60, seed=0)
    c = fit_coefficients(scores, features, groups, labels)
    assert c[OCCLUSION] < -1  # an occluded crop weighs less
    # On tracks the fit never saw, the quality-weighted mean beats the plain mean.
    held = hand_built(60, seed=1)
    ma = {rule: attribute_metrics(held[3], fuse(held[0], crop_weights(held[1], c), held[2], 60, rule),
                                  attributes=tuple("abcde"), thresholds=0.5).ma for rule in ("mean", "quality")}
    assert ma["quality"] > ma["mean"] + 0.03

    fusion = choose_fusion(scores, features, groups, labels, attributes=tuple("abcde"), thresholds=np.full(A, 0.5))
    assert fusion.rule in ("quality", "best") and fusion.fitted["chosen"] == fusion.rule
    assert fusion.fitted["gain_over_mean"][fusion.rule]["low"] > 0
    assert fusion.fitted["tracks"] == 60 and fusion.fitted["crops"] == len(scores)
    assert fusion.coefficients == pytest.approx(tuple(c))  # stored: the c fitted on every track


def test_quality_that_tells_nothing_keeps_the_mean():
    scores, features, groups, labels = hand_built(40, seed=2, informative=False)
    fusion = choose_fusion(scores, features, groups, labels, attributes=tuple("abcde"), thresholds=np.full(A, 0.5))
    assert fusion.rule == "mean"
    assert all(g["low"] <= 0 for g in fusion.fitted["gain_over_mean"].values())
    assert set(fusion.fitted["ma"]) == {"mean", "quality", "max", "best"}


def test_a_track_label_is_what_its_known_crop_labels_agree_on():
    labels = np.array([[1, -1, 0], [1, 0, 1], [-1, -1, 1], [0, 1, 1], [1, 0, 1]], np.int8)
    groups = np.array([0, 0, 1, 1, 1])
    assert track_labels(labels, groups, 3).tolist() == [[1, 0, -1], [-1, -1, 1], [-1, -1, -1]]
    assert fit_coefficients(np.zeros((2, 3)), np.ones((2, 4)), np.array([0, 1]),
                            np.full((2, 3), -1, np.int8)).tolist() == [0.0] * 4  # nothing known: nothing fitted


def validation_crops(n_tracks: int, per_track: int = 3):
    rng = np.random.default_rng(0)
    n = n_tracks * per_track
    images = rng.integers(0, 256, (n, *INPUT, 3), dtype=np.uint8)
    labels = np.repeat(rng.integers(0, 2, (n_tracks, 2)), per_track, axis=0).astype(np.int8)
    sizes = np.tile([[120, 48]], (n, 1)).astype(np.int32)
    tracks = [f"t{i // per_track}" for i in range(n)]
    frames = [i % per_track for i in range(n)]
    return images, labels, sizes, tracks, frames


def test_fit_fusion_scores_mixed_tracks_through_the_pipeline_and_stores_in_the_bundle(tmp_path):
    bundle = save_bundle(tmp_path / "b", tiny_bundle(metas={"classifier": {"thresholds": [0.5, 0.5, 0.5]}}))
    images, labels, sizes, tracks, frames = validation_crops(MIN_TRACKS + 2)
    tracks[-1], frames[-1] = None, None  # a crop without a track is left out
    fusion = fit_fusion(bundle, images, labels, sizes, tracks, frames, attributes=("female", "hat"), seed=0)
    fitted = fusion.fitted
    assert fitted["split"] == "val" and fitted["tracks"] == MIN_TRACKS + 2 and fitted["crops"] == len(images) - 1
    assert sum(fitted["conditions"].values()) == len(images) - 1 and fitted["conditions"]["occluded"] > 0
    assert fitted["chosen"] == fusion.rule and fitted["bundle_version"] == bundle.version
    assert fusion == fit_fusion(bundle, images, labels, sizes, tracks, frames, attributes=("female", "hat"), seed=0)

    info = bundle_info(str(tmp_path / "b"))
    assert Fusion.from_bundle_info(info) == Fusion() and info.person_level == ("female", "hat")  # nothing stored yet
    assert not store_fusion(str(tmp_path / "b"), fusion, ("female",), bundle_version="another", storage=None)
    assert store_fusion(str(tmp_path / "b"), fusion, ("female",), bundle_version=bundle.version)
    info = bundle_info(str(tmp_path / "b"))
    assert Fusion.from_bundle_info(info) == fusion and info.person_level == ("female",) and info.version == bundle.version
    stored = json.loads((tmp_path / "b" / "classifier" / "config.json").read_text())
    assert stored["fusion"]["rule"] == fusion.rule and stored["person_level"] == ["female"]


def test_too_few_tracks_fit_nothing():
    bundle = tiny_bundle()
    images, labels, sizes, tracks, frames = validation_crops(MIN_TRACKS - 1)
    fusion = fit_fusion(bundle, images, labels, sizes, tracks, frames, attributes=("female", "hat"))
    assert fusion.rule == "mean" and fusion.coefficients == (0.0,) * 4
    assert fusion.fitted["reason"] == f"{MIN_TRACKS - 1} validation track(s), fewer than {MIN_TRACKS}"
    untracked = fit_fusion(bundle, images, labels, sizes, [None] * len(images), [None] * len(images),
                           attributes=("female", "hat"))
    assert untracked.fitted["tracks"] == 0 and "fewer than" in untracked.fitted["reason"]
    images, _, sizes, tracks, frames = validation_crops(MIN_TRACKS)
    moment_only = fit_fusion(bundle, images, np.zeros((len(images), 1), np.int8), sizes, tracks, frames,
                             attributes=(ATTRS[2],))  # occlusion_down: moment-level, never fused
    assert moment_only.fitted["reason"] == "no person-level attribute has validation labels"

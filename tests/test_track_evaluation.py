"""Per-person evaluation: fused tracks scored beside crops, mixed tracks, and bootstrap intervals
that resample tracks (attrgan.experiments, attrgan.metrics, attrgan.report)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from attrgan import report
from attrgan.attributes import OCCLUSION_DOWN
from attrgan.corrupt import track_conditions
from attrgan.experiments import (TRACK_SETS, TRACK_VARIANTS, comparison_intervals, mixed_rows, track_experiments,
                                 track_index)
from attrgan.fusion import RULES, Fusion
from attrgan.metrics import attribute_metrics, bootstrap_contrast, paired_bootstrap_gain

PEOPLE = ("hat", "backpack")
MODEL = (*PEOPLE, OCCLUSION_DOWN)
SUFFIX = {"clean": "", "occluded": "-occ", "lowres": "-low"}
# Quality weights that trust an unoccluded, tall crop: exp(-8 · occlusion + 2 · log2(height / 160)).
TRUSTING = (-8.0, 2.0, 0.0, 0.0)


def _tracks_case(tracks: int = 24, frames: int = 6, seed: int = 0):
    """Scored predictions of `tracks` people over `frames` frames in the three copies. A clean
    frame says the truth (0.9 / 0.1), occluded and low-res frames say the opposite; the plain
    classifier's occlusion_down fires on occluded frames, low-res frames are stored 4x smaller.
    The pipeline variant is the plain one (restoration changes nothing here)."""
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, 2, (tracks, len(PEOPLE)))
    truth[0], truth[1] = 0, 1  # both classes of every attribute
    rows, labels = [], {s: {} for s in SUFFIX}
    for s, suffix in SUFFIX.items():
        for t in range(tracks):
            for f in range(frames):
                crop = f"p{t}f{f}{suffix}"
                said = truth[t] if s == "clean" else 1 - truth[t]
                scores = np.array([*(0.1 + 0.8 * said), 0.9 if s == "occluded" else 0.1], np.float32)
                rows.append({"crop_id": crop, "eval_set": s, "status": "ok", "camera_id": "cam00",
                             "track_id": f"trk-{t}", "frame_index": f,
                             "crop_height": 40 if s == "lowres" else 160 + 4 * f,
                             "occlusion_score": float(scores[-1]), "super_resolved": False, "reconstructed": False,
                             "plain": scores, "forced": scores, "pipeline": scores})
                labels[s][crop] = truth[t]
    predictions = pd.DataFrame(rows)
    frames_of = {s: pd.DataFrame.from_dict(v, orient="index", columns=list(PEOPLE)).astype(np.int8)
                 for s, v in labels.items()}
    return predictions, frames_of, truth


def test_mixed_tracks_take_each_frame_from_the_copy_track_conditions_picks():
    predictions, _, _ = _tracks_case(tracks=12, frames=5)
    predictions = predictions.sample(frac=1.0, random_state=1).reset_index(drop=True)  # order does not matter
    picked, conditions = mixed_rows(predictions, seed=7)
    clean = predictions[predictions["eval_set"] == "clean"]
    want = track_conditions(clean["track_id"].tolist(), clean["frame_index"].tolist(), clean["crop_height"].to_numpy(),
                            crop_ids=clean["crop_id"].tolist(), seed=7)
    assert list(conditions) == list(want) and len(picked) == len(clean)
    for position, source, condition in zip(picked, clean["crop_id"], conditions):
        row = predictions.iloc[position]
        assert row["eval_set"] == condition and row["crop_id"] == source + SUFFIX[condition]
    assert set(conditions) == {"clean", "occluded", "lowres"}


def test_quality_and_best_fusion_recover_a_track_whose_clean_frame_says_the_truth():
    predictions, labels, truth = _tracks_case()
    got = track_experiments(predictions, labels, attributes=PEOPLE, model_attributes=MODEL,
                            thresholds=np.full(3, 0.5), fusion=Fusion(rule="quality", coefficients=TRUSTING),
                            resamples=200, seed=3)
    assert got is not None and got.attributes == PEOPLE
    assert set(got.sets) == set(TRACK_SETS) and all(set(v) == set(TRACK_VARIANTS) for v in got.sets.values())
    # Every clean frame is right and every corrupted one wrong, per crop and per track alike.
    for s, ma in (("clean", 1.0), ("occluded", 0.0), ("lowres", 0.0)):
        m = got.sets[s]["plain"]
        assert m.tracks == 24 and m.crops == 24 * 6 and m.per_crop.ma == ma
        assert all(m.per_track[r].ma == ma for r in RULES)
    # Mixed: a track with a clean frame is recovered by quality and best, one without is not; the
    # per-crop metric counts every wrong frame.
    picked, conditions = mixed_rows(predictions, seed=3)
    mixed = predictions.iloc[picked]
    seen_clean = pd.Series(conditions == "clean").groupby(mixed["track_id"].to_numpy()).any()
    people = sorted(seen_clean.index, key=lambda t: int(t.split("-")[1]))
    right = seen_clean[people].to_numpy()[:, None]
    track_truth = truth[[int(t.split("-")[1]) for t in people]]
    want_track = attribute_metrics(track_truth, np.where(right, track_truth, 1 - track_truth).astype(float),
                                   attributes=PEOPLE)
    frame_truth = np.stack([truth[int(t.split("-")[1])] for t in mixed["track_id"]])
    frame_right = (conditions == "clean")[:, None]
    want_crop = attribute_metrics(frame_truth, np.where(frame_right, frame_truth, 1 - frame_truth).astype(float),
                                  attributes=PEOPLE)
    m = got.sets["mixed"]["plain"]
    assert m.per_crop.ma == pytest.approx(want_crop.ma)
    assert m.per_track["quality"].ma == pytest.approx(want_track.ma) == m.per_track["best"].ma
    assert m.per_track["best"].ma > m.per_crop.ma + 0.2 and m.per_track["best"].ma > m.per_track["mean"].ma
    # The mixed tracks with no clean frame stay wrong; quality beats the mean, with an interval above 0.
    assert got.sets["mixed_no_clean"]["plain"].tracks == int((~seen_clean).sum()) > 0
    assert got.sets["mixed_no_clean"]["plain"].per_track["best"].ma == 0.0
    assert got.rules["quality - mean"]["plain"].low > 0 and got.rules["quality - mean"]["plain"].tracks == 24
    # Corruption costs 100 points per crop and per track alike on the occluded copy: nothing won back.
    assert got.won_back["occluded"]["plain"].gain == 0.0
    assert got.restoration["mixed"]["track"].gain == 0.0  # pipeline = plain here
    assert json.loads(json.dumps(got.to_dict()))["sets"]["mixed"]["plain"]["tracks"] == 24

    text = report.track_section(got)
    assert "| mixed: fusion quality vs mean | 24 |" in text and "| mixed, no clean frame | with |" in text
    assert f"| mixed | without | 24 | {m.crops} | {report.percent(m.per_crop.ma)} |" in text
    assert "rule `quality`, quality coefficients occlusion_score -8, log_height +2" in text and "(none stored)" in text


def test_the_bundles_person_level_marking_chooses_the_attributes_and_no_tracks_means_no_per_person_evaluation():
    predictions, labels, _ = _tracks_case(tracks=4, frames=2)
    assert track_index(predictions) is not None
    only_hat = track_experiments(predictions, labels, attributes=PEOPLE, model_attributes=MODEL,
                                 thresholds=np.full(3, 0.5), person_attributes=["hat"], resamples=20,
                                 fusion=Fusion(fitted={"reason": "fewer than 10 validation tracks"}))
    assert only_hat.attributes == ("hat",)
    assert "(not fitted: fewer than 10 validation tracks; every crop weighs the same" in report.track_section(only_hat)
    predictions["track_id"] = None
    assert track_index(predictions) is None
    assert track_experiments(predictions, labels, attributes=PEOPLE, model_attributes=MODEL,
                             thresholds=np.full(3, 0.5), fusion=Fusion()) is None


def _crops_in_tracks(tracks: int = 10, per_track: int = 20):
    """Restoration fixes every crop of the even tracks and none of the odd ones: the crops of a
    track move together, which only a bootstrap over tracks sees."""
    n = tracks * per_track
    groups = np.repeat(np.arange(tracks), per_track)
    i = np.arange(n)
    labels = np.stack([(i % 2).astype(np.int8), ((i // 2) % 2).astype(np.int8)], axis=1)
    after = 0.1 + 0.8 * labels
    before = after.copy()
    fixed = groups % 2 == 0
    before[fixed] = 1.0 - before[fixed]
    return labels, before, after, groups


def test_bootstrap_over_tracks_is_wider_than_over_crops_when_a_tracks_crops_move_together():
    labels, before, after, groups = _crops_in_tracks()
    crops = paired_bootstrap_gain(labels, before, after, attributes=("a", "b"), resamples=400, seed=2)
    tracks = paired_bootstrap_gain(labels, before, after, attributes=("a", "b"), resamples=400, seed=2, groups=groups)
    assert crops.gain == tracks.gain == pytest.approx(0.5)
    assert crops.tracks is None and tracks.tracks == 10 and tracks.crops == crops.crops == 200
    assert (tracks.high - tracks.low) > 2 * (crops.high - crops.low)
    assert tracks.low < crops.low and tracks.high > crops.high
    # One group per crop is the crop bootstrap itself, draw for draw.
    same = paired_bootstrap_gain(labels, before, after, attributes=("a", "b"), resamples=400, seed=2,
                                 groups=np.arange(200))
    assert (same.low, same.high) == (crops.low, crops.high)
    assert "200 crops in 10 tracks) helps" in report.gain_text(tracks)
    assert report.points(-1e-17) == report.points(0.0) == "+0.00" and report.points(-0.0123) == "-1.23"


def test_bootstrap_contrast_pairs_sides_that_hold_different_rows_by_track():
    labels, before, after, groups = _crops_in_tracks(tracks=8, per_track=5)
    # A track side: one row per track, the first crop's label and the mean of its scores.
    first = np.arange(0, 40, 5)
    fused = np.stack([after[groups == g].mean(axis=0) for g in range(8)])
    sides = [(labels, after, groups), (labels[first], fused, np.arange(8))]
    got = bootstrap_contrast(sides, (-1.0, 1.0), attributes=("a", "b"), resamples=300, seed=1, tracks=8)
    want = (attribute_metrics(labels[first], fused, attributes=("a", "b")).ma
            - attribute_metrics(labels, after, attributes=("a", "b")).ma)
    assert got.gain == pytest.approx(want) and got.crops == 40 and got.tracks == 8
    assert got.low <= got.gain <= got.high
    with pytest.raises(ValueError, match="one coefficient per side"):
        bootstrap_contrast(sides, (1.0,), attributes=("a", "b"))
    with pytest.raises(ValueError, match="groups must be"):
        bootstrap_contrast([(labels, after, groups[:3])], (1.0,), attributes=("a", "b"))


def test_table_two_intervals_resample_tracks_when_crops_carry_track_ids():
    predictions, labels, _ = _tracks_case(tracks=6, frames=4)
    args = dict(attributes=PEOPLE, model_attributes=MODEL, thresholds=np.full(3, 0.5), resamples=50, seed=0)
    got = comparison_intervals(predictions, labels, **args)
    assert got["complete"].tracks == 6 and got["complete"].crops == 48
    predictions["track_id"] = None
    assert comparison_intervals(predictions, labels, **args)["complete"].tracks is None

"""Per-track fusion (attrgan.fusion): rules, track keys, the track table and the merge across
partitions, on hand-built crops."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pyarrow as pa
import pytest

from attrgan.contracts import results_schema, tracks_schema
from attrgan.fusion import Fusion, fuse, fuse_tracks, merge_tracks, track_keys

T0 = dt.datetime(2024, 1, 15, 23, 59, tzinfo=dt.timezone.utc)
ATTRS = ("female", "backpack", "talking")
PERSON = ("female", "backpack")


def crops(rows: list[dict]) -> pa.Table:
    """Results rows with defaults for what a test does not set."""
    out = []
    for i, r in enumerate(rows):
        row = {"crop_id": f"c{i}", "image_uri": f"images/c{i}.jpg", "camera_id": "cam07",
               "captured_at": T0 + dt.timedelta(seconds=i), "track_id": None, "frame_index": None,
               "status": "ok", "error": None, "super_resolved": False, "reconstructed": False,
               "occlusion_score": 0.1, "crop_height": 160, "model_version": "v1", "processed_at": T0}
        for a in ATTRS:
            row[a], row[f"{a}_score"] = None, None
        row.update(r)
        if row["status"] != "ok":
            row["occlusion_score"] = None
        out.append(row)
    return pa.Table.from_pylist(out, schema=results_schema(ATTRS))


def test_each_rule_on_one_group():
    scores = np.array([[0.9], [0.2], [0.4]])
    weights = np.array([1.0, 3.0, 0.5])
    groups = np.array([0, 0, 0])
    assert fuse(scores, weights, groups, 1, "mean")[0, 0] == pytest.approx(0.5)
    assert fuse(scores, weights, groups, 1, "quality")[0, 0] == pytest.approx((0.9 + 0.6 + 0.2) / 4.5)
    assert fuse(scores, weights, groups, 1, "max")[0, 0] == pytest.approx(0.9)
    assert fuse(scores, weights, groups, 1, "best")[0, 0] == pytest.approx(0.2)
    assert np.isnan(fuse(scores, weights, groups, 2, "max")[1, 0])  # a group without crops


def test_a_track_is_camera_and_track_id_and_a_row_without_one_is_its_own():
    table = crops([{"track_id": "t1"}, {"track_id": "t1"}, {"track_id": "t1", "camera_id": "cam08"},
                   {}, {}, {"track_id": "c3"}])  # "c3" as a track_id never meets crop c3's own track
    groups, n = track_keys(table)
    assert n == 5
    assert groups[0] == groups[1] and len({groups[2], groups[3], groups[4], groups[5], groups[0]}) == 5


def test_track_table_fuses_scored_crops_and_describes_the_track():
    quality = Fusion("quality", (-4.0, 1.0, 0.0, 0.0))
    table = crops([
        {"track_id": "t1", "frame_index": 0, "female_score": 0.9, "backpack_score": 0.1, "crop_height": 320,
         "occlusion_score": 0.0},
        {"track_id": "t1", "frame_index": 1, "female_score": 0.3, "backpack_score": 0.7, "crop_height": 80,
         "occlusion_score": 0.9, "super_resolved": True},
        {"track_id": "t1", "frame_index": 2, "status": "error", "error": "missing object: x"},
        {"female_score": 0.2, "backpack_score": 0.6},
    ])
    tracks = fuse_tracks(table, quality, person_attributes=PERSON, thresholds={"female": 0.5, "backpack": 0.5})
    assert tracks.schema == tracks_schema(PERSON)
    t1, solo = tracks.to_pylist()
    w_clean, w_occ = np.exp(1.0), np.exp(-4 * 0.9 - 1.0)  # log2(320 / 160), log2(80 / 160)
    assert t1["crops"] == 3 and t1["crops_ok"] == 2
    assert t1["female_score"] == pytest.approx((w_clean * 0.9 + w_occ * 0.3) / (w_clean + w_occ), rel=1e-6)
    assert t1["female"] is True and t1["backpack"] is False
    assert t1["best_crop_id"] == "c0" and t1["first_frame"] == 0 and t1["last_frame"] == 2
    assert t1["first_seen"] == T0 and t1["last_seen"] == T0 + dt.timedelta(seconds=2)
    assert t1["occluded_share"] == pytest.approx(0.5) and t1["super_resolved_share"] == pytest.approx(0.5)
    assert "talking" not in tracks.column_names  # moment-level: stays per crop
    assert solo["track_id"] is None and solo["best_crop_id"] == "c3" and solo["crops"] == 1


def test_a_track_without_a_scored_crop_keeps_its_row_with_null_scores():
    table = crops([{"track_id": "t1", "status": "error", "error": "bad uri: x"}] * 2)
    (row,) = fuse_tracks(table, Fusion(), person_attributes=PERSON, thresholds={}).to_pylist()
    assert row["crops"] == 2 and row["crops_ok"] == 0 and row["female_score"] is None and row["female"] is None
    assert row["best_crop_id"] == "c0" and row["weight"] == 0 and row["occluded_share"] is None


@pytest.mark.parametrize("rule", ["mean", "quality", "max"])
def test_a_track_across_midnight_merges_to_what_one_table_gives(rule):
    fusion = Fusion(rule, (-2.0, 0.5, 0.0, 0.0))
    rng = np.random.default_rng(0)
    rows = [{"track_id": "t1", "frame_index": i, "female_score": float(s), "backpack_score": float(1 - s),
             "occlusion_score": float(o), "crop_height": int(h)}
            for i, (s, o, h) in enumerate(zip(rng.random(7), rng.random(7), rng.integers(60, 400, 7)))]
    table = crops(rows)
    whole = fuse_tracks(table, fusion, person_attributes=PERSON, thresholds={}).to_pandas()
    halves = pa.concat_tables([fuse_tracks(table.slice(0, 3), fusion, person_attributes=PERSON, thresholds={}),
                               fuse_tracks(table.slice(3), fusion, person_attributes=PERSON, thresholds={})])
    merged = merge_tracks(halves.to_pandas(), person_attributes=PERSON, thresholds={})
    assert len(merged) == 1
    for column in ("crops", "crops_ok", "first_frame", "last_frame", "female_score", "backpack_score", "weight"):
        assert merged[column].iloc[0] == pytest.approx(whole[column].iloc[0], rel=1e-5), column


def test_a_stored_fusion_is_checked():
    assert Fusion.from_dict(Fusion("best", (1, 2, 3, 4)).to_dict()) == Fusion("best", (1, 2, 3, 4))
    with pytest.raises(ValueError, match="rule"):
        Fusion("median")
    with pytest.raises(ValueError, match="coefficients"):
        Fusion.from_dict({"rule": "quality", "coefficients": {"occlusion_score": float("nan")}})
    with pytest.raises(ValueError, match="finite"):
        Fusion("quality", (float("inf"), 0, 0, 0))


def test_a_classifier_without_occlusion_down_still_fuses_its_tracks():
    # Such a pipeline reports no occlusion score (null): the crops are still scored and fused.
    table = crops([{"track_id": "t1", "female_score": 0.8}, {"track_id": "t1", "female_score": 0.4}])
    table = table.set_column(table.schema.get_field_index("occlusion_score"), "occlusion_score",
                             pa.nulls(2, pa.float32()))
    (row,) = fuse_tracks(table, Fusion("quality", (-3.0, 0.0, 0.0, 0.0)), person_attributes=PERSON,
                         thresholds={}).to_pylist()
    assert row["crops_ok"] == 2 and row["female_score"] == pytest.approx(0.6)

"""Per-track fusion: a person's attributes from the scores of all of their crops, weighted by what
each crop can show (docs/DESIGN.md "Tracks").

A crop's quality weight is exp(c · f) over its quality signals f (QUALITY_FEATURES, what the
pipeline already knows of it): the first-pass occlusion score, log2 of its stored height over
REFERENCE_HEIGHT, and whether super-resolution or reconstruction restored it. The rules:

- mean: every scored crop counts the same (c = 0);
- quality: the mean weighted by the fitted c;
- max: each attribute's highest score over the track;
- best: the scores of the track's one crop of highest weight.

The bundle stores the rule and c that won on the validation split's tracks (`Fusion`, fitted by
`attrgan.train.fusion`); person-level attributes are fused, moment-level ones stay per crop
(`attrgan.attributes.MOMENT_LEVEL`).

Free of torch on purpose (numpy and pyarrow): the track tables are built in plain Ray task
workers.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from attrgan.contracts import BundleInfo, tracks_schema

QUALITY_FEATURES = ("occlusion_score", "log_height", "super_resolved", "reconstructed")
RULES = ("mean", "quality", "max", "best")
REFERENCE_HEIGHT = 160.0  # px: a crop this tall has log_height 0 (the pipeline's super-resolution rule)
_MAX_EXPONENT = 30.0  # exp() stays finite whatever a bundle stores


@dataclasses.dataclass(frozen=True)
class Fusion:
    """How a bundle fuses a track: the rule, the quality coefficients (one per QUALITY_FEATURES)
    and the record of the fit that chose them (empty when nothing was fitted)."""

    rule: str = "mean"
    coefficients: tuple[float, ...] = (0.0,) * len(QUALITY_FEATURES)
    fitted: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.rule not in RULES:
            raise ValueError(f"fusion rule must be one of {RULES}, got {self.rule!r}")
        if len(self.coefficients) != len(QUALITY_FEATURES) or not all(
                isinstance(c, (int, float)) and not isinstance(c, bool) and _finite(c) for c in self.coefficients):
            raise ValueError(f"fusion coefficients must be {len(QUALITY_FEATURES)} finite numbers "
                             f"({', '.join(QUALITY_FEATURES)}), got {self.coefficients!r}")
        object.__setattr__(self, "coefficients", tuple(float(c) for c in self.coefficients))

    def to_dict(self) -> dict[str, Any]:
        return {"rule": self.rule, "coefficients": dict(zip(QUALITY_FEATURES, self.coefficients)),
                "fitted": dict(self.fitted)}

    @classmethod
    def from_bundle_info(cls, info: BundleInfo) -> Fusion:
        """The fusion a bundle stores (checked when it was loaded); the plain mean when it stores none."""
        return cls() if info.fusion is None else cls.from_dict(info.fusion)

    @classmethod
    def from_dict(cls, value: Any) -> Fusion:
        """From a bundle's stored record (`to_dict`); a ValueError names what is wrong."""
        if not isinstance(value, Mapping):
            raise ValueError(f"fusion must be a mapping, got {type(value).__name__}")
        coefficients = value.get("coefficients", {})
        if not isinstance(coefficients, Mapping) or set(coefficients) != set(QUALITY_FEATURES):
            raise ValueError(f"fusion coefficients must name exactly {QUALITY_FEATURES}")
        fitted = value.get("fitted", {})
        return cls(rule=value.get("rule"), coefficients=tuple(coefficients[f] for f in QUALITY_FEATURES),
                   fitted=dict(fitted) if isinstance(fitted, Mapping) else {})


def _finite(value: float) -> bool:
    """math.isfinite, False for an integer beyond any float (JSON may hold one)."""
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def quality_features(occlusion_score: np.ndarray, crop_height: np.ndarray, super_resolved: np.ndarray,
                     reconstructed: np.ndarray) -> np.ndarray:
    """(N, len(QUALITY_FEATURES)) float64 from per-crop arrays; a missing occlusion score or height
    (NaN) reads as 0, the signal of an average crop."""
    occlusion = np.nan_to_num(np.asarray(occlusion_score, np.float64), nan=0.0)
    height = np.asarray(crop_height, np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        log_height = np.where(height > 0, np.log2(height / REFERENCE_HEIGHT), 0.0)
    log_height = np.nan_to_num(log_height, nan=0.0)
    return np.stack([occlusion, log_height, np.asarray(super_resolved, np.float64),
                     np.asarray(reconstructed, np.float64)], axis=1)


def crop_weights(features: np.ndarray, coefficients: Sequence[float]) -> np.ndarray:
    """(N,) positive quality weights exp(features · coefficients)."""
    return np.exp(np.clip(features @ np.asarray(coefficients, np.float64), -_MAX_EXPONENT, _MAX_EXPONENT))


def best_crops(weights: np.ndarray, groups: np.ndarray, n_groups: int) -> np.ndarray:
    """(n_groups,) the index of each group's crop of highest weight (the first of equals; a NaN
    weight, an unscored crop, only when the group has nothing else); -1 for an empty group."""
    key = np.where(np.isnan(weights), -np.inf, weights)
    order = np.lexsort((np.arange(len(groups)), -key, groups))
    first = np.full(n_groups, -1, np.int64)
    starts = np.flatnonzero(np.r_[True, np.diff(groups[order]) != 0]) if len(order) else np.array([], np.int64)
    first[groups[order][starts]] = order[starts]
    return first


def fuse(scores: np.ndarray, weights: np.ndarray, groups: np.ndarray, n_groups: int, rule: str) -> np.ndarray:
    """(n_groups, A) fused scores of per-crop `scores` (N, A) grouped by `groups` (N,) in
    [0, n_groups), NaN for a group without crops. Only scored crops belong in the arrays."""
    if rule not in RULES:
        raise ValueError(f"fusion rule must be one of {RULES}, got {rule!r}")
    scores = np.asarray(scores, np.float64)
    a = scores.shape[1]
    out = np.full((n_groups, a), np.nan)
    if not len(groups):
        return out
    if rule in ("mean", "quality"):
        w = np.ones(len(groups)) if rule == "mean" else np.asarray(weights, np.float64)
        total = np.bincount(groups, weights=w, minlength=n_groups)
        for j in range(a):
            out[:, j] = np.bincount(groups, weights=w * scores[:, j], minlength=n_groups)
        with np.errstate(invalid="ignore", divide="ignore"):
            return out / total[:, None]
    if rule == "max":
        order = np.argsort(groups, kind="stable")
        starts = np.flatnonzero(np.r_[True, np.diff(groups[order]) != 0])
        out[groups[order][starts]] = np.maximum.reduceat(scores[order], starts, axis=0)
        return out
    best = best_crops(np.asarray(weights, np.float64), groups, n_groups)
    has = best >= 0
    out[has] = scores[best[has]]
    return out


def track_labels(labels: np.ndarray, groups: np.ndarray, n_groups: int) -> np.ndarray:
    """(n_groups, A) int8: per track and attribute, the label every known crop label of the track
    agrees on; -1 when none is known or they disagree."""
    labels = np.asarray(labels)
    out = np.full((n_groups, labels.shape[1]), -1, np.int8)
    for value in (0, 1):
        hits = np.zeros((n_groups, labels.shape[1]), np.int64)
        np.add.at(hits, groups, (labels == value).astype(np.int64))
        other = np.zeros_like(hits)
        np.add.at(other, groups, (labels == 1 - value).astype(np.int64))
        out[(hits > 0) & (other == 0)] = value
    return out


def track_groups(keys: Sequence[str | None]) -> np.ndarray | None:
    """(N,) int64 track per crop from per-crop track keys (None: a crop of no track, its own
    group); None when no crop has a key (every crop independent)."""
    if not any(k is not None for k in keys):
        return None
    codes: dict[str, int] = {}
    out = np.empty(len(keys), np.int64)
    for i, k in enumerate(keys):
        out[i] = codes.setdefault(f"t{k}" if k is not None else f"c{i}", len(codes))
    return out


def track_keys(crops: pa.Table) -> tuple[np.ndarray, int]:
    """(group per row (N,) int64, number of tracks): a track is (camera_id, track_id) within a
    partition, and a row without a track_id is its own track of one."""
    n = crops.num_rows
    if n == 0:
        return np.zeros(0, np.int64), 0
    camera = pc.fill_null(crops["camera_id"], "")
    track = crops["track_id"]
    solo = pc.is_null(track)
    # "t" + track_id, or "c" + crop_id for a row without one: the two can never meet
    own = pc.if_else(solo, pc.binary_join_element_wise("c", crops["crop_id"], ""),
                     pc.binary_join_element_wise("t", pc.fill_null(track, ""), ""))
    key = pc.binary_join_element_wise(camera, own, "\x1f")
    encoded = pc.dictionary_encode(key.combine_chunks() if isinstance(key, pa.ChunkedArray) else key)
    return np.asarray(encoded.indices, np.int64), len(encoded.dictionary)


def _floats(column: Any) -> np.ndarray:
    return np.asarray(pc.fill_null(pc.cast(column, pa.float64()), math.nan), np.float64)


def fuse_tracks(crops: pa.Table, fusion: Fusion, *, person_attributes: Sequence[str],
                thresholds: Mapping[str, float], occlusion_threshold: float = 0.5) -> pa.Table:
    """One partition's per-track table (`contracts.tracks_schema`) from its results rows.

    crops: results rows (`contracts.results_schema` columns; only camera_id, track_id, crop_id,
    image_uri, captured_at, frame_index, status, occlusion_score, crop_height, super_resolved,
    reconstructed, `<attr>_score` of `person_attributes`, model_version and processed_at are
    read). thresholds: attribute → decision threshold. occlusion_threshold: the first-pass
    occlusion score at which a crop counts as occluded.
    """
    groups, t = track_keys(crops)
    schema = tracks_schema(person_attributes)
    if t == 0:
        return schema.empty_table()
    # A scored row is an ok row; its occlusion score is null when the classifier has no
    # occlusion_down (a PETA bundle), and that only leaves the feature at 0.
    ok = np.asarray(pc.fill_null(pc.equal(crops["status"], "ok"), False), bool)
    occlusion = _floats(crops["occlusion_score"])
    height = _floats(crops["crop_height"])
    sr = np.asarray(pc.fill_null(crops["super_resolved"], False), bool)
    rec = np.asarray(pc.fill_null(crops["reconstructed"], False), bool)
    weights = crop_weights(quality_features(occlusion, height, sr, rec), fusion.coefficients)
    weights = np.where(ok, weights, np.nan)

    counts = np.bincount(groups, minlength=t)
    counts_ok = np.bincount(groups, weights=ok, minlength=t)
    rows_ok = np.flatnonzero(ok)
    scores = np.stack([_floats(crops[f"{a}_score"]) for a in person_attributes], axis=1) \
        if person_attributes else np.zeros((crops.num_rows, 0))
    fused = fuse(scores[rows_ok], weights[rows_ok], groups[rows_ok], t, fusion.rule)
    best = best_crops(weights, groups, t)  # every track has a row: unscored tracks get their first

    def share(values: np.ndarray) -> pa.Array:
        with np.errstate(invalid="ignore", divide="ignore"):
            s = np.bincount(groups, weights=values & ok, minlength=t) / counts_ok
        return pa.array(s, pa.float32(), mask=counts_ok == 0)

    stats = pa.table({"g": groups, "captured_at": crops["captured_at"], "frame_index": crops["frame_index"],
                      "crop_height": crops["crop_height"]}).group_by("g").aggregate(
        [("captured_at", "min"), ("captured_at", "max"), ("frame_index", "min"), ("frame_index", "max"),
         ("crop_height", "approximate_median")]).sort_by("g")
    take = pa.array(best)  # camera, track and the bundle's fields are the same on every row of a track
    track = crops["track_id"].take(take)
    columns: dict[str, Any] = {
        "camera_id": crops["camera_id"].take(take),
        "track_id": track,
        "crops": pa.array(counts, pa.int32()),
        "crops_ok": pa.array(counts_ok.astype(np.int32), pa.int32()),
        "first_seen": stats["captured_at_min"],
        "last_seen": stats["captured_at_max"],
        "first_frame": stats["frame_index_min"],
        "last_frame": stats["frame_index_max"],
        "best_crop_id": crops["crop_id"].take(take),
        "best_image_uri": crops["image_uri"].take(take),
        "occluded_share": share(occlusion >= occlusion_threshold),
        "super_resolved_share": share(sr),
        "reconstructed_share": share(rec),
        "median_height": pc.cast(stats["crop_height_approximate_median"], pa.float32()),
        # what a track's rows in two partitions are merged by (`merge_tracks`): the mean counts crops
        "weight": pa.array(counts_ok.astype(np.float64) if fusion.rule == "mean"
                           else np.bincount(groups, weights=np.nan_to_num(weights, nan=0.0), minlength=t)),
        "fusion": pa.array([fusion.rule] * t, pa.string()),
    }
    for j, a in enumerate(person_attributes):
        missing = np.isnan(fused[:, j])
        columns[a] = pa.array(fused[:, j] >= thresholds.get(a, 0.5), pa.bool_(), mask=missing)
        columns[f"{a}_score"] = pa.array(fused[:, j].astype(np.float32), pa.float32(), mask=missing)
    columns["model_version"] = crops["model_version"].take(take)
    columns["processed_at"] = crops["processed_at"].take(take)
    arrays = [c.combine_chunks() if isinstance(c, pa.ChunkedArray) else c for c in columns.values()]
    return pa.Table.from_arrays(arrays, names=list(columns)).cast(schema)


def merge_tracks(tracks: pd.DataFrame, *, person_attributes: Sequence[str],
                 thresholds: Mapping[str, float]) -> pd.DataFrame:
    """One row per (camera_id, track_id): a track seen in two partitions (a person crossing
    midnight) has a row in each, merged here by its fusion rule. Mean and quality rules average
    the rows' scores by their `weight` (exact: the same sums as one table), max takes the highest,
    best takes the row of highest `weight`; counts add up, times and frames span both, shares are
    averaged over scored crops and the median height is the crop-weighted mean of the rows'.
    Rows without a track_id are left as they are."""
    if tracks.empty:
        return tracks
    key = tracks["camera_id"].fillna("\x1f") + "\x00" + tracks["track_id"].fillna("")
    repeated = tracks["track_id"].notna() & key.duplicated(keep=False)
    if not repeated.any():
        return tracks
    merged = [_merge_rows(rows, person_attributes, thresholds) for _, rows in tracks[repeated].groupby(key[repeated])]
    out = pd.concat([tracks[~repeated], pd.DataFrame(merged)], ignore_index=True)
    return out.astype({c: tracks[c].dtype for c in tracks.columns if c in out.columns}, errors="ignore")


def _merge_rows(rows: pd.DataFrame, person_attributes: Sequence[str], thresholds: Mapping[str, float]) -> dict:
    heaviest = rows.loc[rows["weight"].idxmax()] if rows["weight"].notna().any() else rows.iloc[0]
    out = heaviest.to_dict()
    ok = rows["crops_ok"].to_numpy(np.float64)
    out.update(crops=rows["crops"].sum(), crops_ok=rows["crops_ok"].sum(), weight=rows["weight"].sum(),
               first_seen=rows["first_seen"].min(), last_seen=rows["last_seen"].max(),
               first_frame=rows["first_frame"].min(), last_frame=rows["last_frame"].max())
    for column in ("occluded_share", "super_resolved_share", "reconstructed_share"):
        values = rows[column].to_numpy(np.float64)
        has = ~np.isnan(values)
        out[column] = float(np.average(values[has], weights=ok[has])) if ok[has].sum() > 0 else math.nan
    heights = rows["median_height"].to_numpy(np.float64)
    has = ~np.isnan(heights)
    out["median_height"] = float(np.average(heights[has], weights=rows["crops"].to_numpy()[has])) \
        if has.any() and rows["crops"].to_numpy()[has].sum() > 0 else math.nan
    rule = heaviest["fusion"]
    weights = rows["weight"].to_numpy(np.float64)
    for a in person_attributes:
        scores = rows[f"{a}_score"].to_numpy(np.float64)
        has = ~np.isnan(scores)
        if not has.any():
            continue
        if rule == "max":
            score = scores[has].max()
        elif rule == "best":  # the best crop of the heaviest row that scored it
            score = scores[has][np.argmax(np.nan_to_num(weights[has], nan=0.0))]
        else:
            score = float(np.average(scores[has], weights=weights[has])) if weights[has].sum() > 0 else scores[has].mean()
        out[f"{a}_score"] = score
        out[a] = bool(score >= thresholds.get(a, 0.5))
    return out

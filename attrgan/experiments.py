"""The paper's experiments (§4, Tables 1 and 2) as data and their metrics, over scored crops.

The evaluation job (`attrgan.evaluate`) scores each crop of three sets (clean, occluded, low-res)
three ways (VARIANTS); an experiment is one set (or two merged) under one variant, and a
comparison of Table 2 is the mA gain between two experiments on the same crops. Plain numpy and
pandas: no Ray, no torch.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from attrgan.attributes import OCCLUSION_DOWN, person_level
from attrgan.corrupt import SUFFIX, track_conditions
from attrgan.fusion import RULES, Fusion, crop_weights, fuse, quality_features, track_labels
from attrgan.metrics import (AttributeMetrics, GainInterval, Side, attribute_metrics, bootstrap_contrast,
                             paired_bootstrap_gain)

SETS = ("clean", "occluded", "lowres")
VARIANTS = ("plain", "forced", "pipeline")
# (experiment key, table label, evaluation set(s), variant): the rows of Tables 1 and 2.
EXPERIMENTS: tuple[tuple[str, str, tuple[str, ...], str], ...] = (
    ("clean", "clean", ("clean",), "plain"),
    ("clean_pipeline", "clean + complete pipeline", ("clean",), "pipeline"),
    ("occluded", "occluded", ("occluded",), "plain"),
    ("occluded_reconstruction", "occluded + reconstruction", ("occluded",), "forced"),
    ("lowres_bilinear", "low-res + bilinear", ("lowres",), "plain"),
    ("lowres_superres", "low-res + super-resolution", ("lowres",), "forced"),
    ("corrupted", "corrupted (classifier alone)", ("occluded", "lowres"), "plain"),
    ("restored", "restored (complete pipeline)", ("occluded", "lowres"), "pipeline"),
)
# (name, without restoration, with restoration): the comparisons the paper's Table 2 makes.
COMPARISONS: tuple[tuple[str, str, str], ...] = (
    ("occlusion", "occluded", "occluded_reconstruction"),
    ("low resolution", "lowres_bilinear", "lowres_superres"),
    ("complete", "corrupted", "restored"),
)
# The network that restores each set in the "forced" variant.
FORCED = {"clean": "plain", "occluded": "reconstruction", "lowres": "superres"}


def experiment_metrics(predictions: pd.DataFrame, labels: Mapping[str, pd.DataFrame], *,
                       attributes: Sequence[str], model_attributes: Sequence[str],
                       thresholds: np.ndarray) -> dict[str, AttributeMetrics]:
    """`attribute_metrics` of every experiment in EXPERIMENTS.

    predictions: score_sets' output; labels: set name → DataFrame indexed by crop_id with one int8
    column per attribute id; attributes: the ids the tables cover (a subset of model_attributes,
    the classifier's score columns in order); thresholds: (len(model_attributes),).
    """
    cols = [list(model_attributes).index(a) for a in attributes]
    out: dict[str, AttributeMetrics] = {}
    for key, _, sets, variant in EXPERIMENTS:
        y, scores, _ = _set_rows(predictions, labels, sets, (variant,), attributes=attributes,
                                 model_attributes=model_attributes)
        out[key] = attribute_metrics(y, scores[variant], attributes=tuple(attributes),
                                     thresholds=np.asarray(thresholds)[cols])
    return out


def comparison_intervals(predictions: pd.DataFrame, labels: Mapping[str, pd.DataFrame], *,
                         attributes: Sequence[str], model_attributes: Sequence[str], thresholds: np.ndarray,
                         resamples: int = 1000, seed: int = 0) -> dict[str, GainInterval]:
    """`paired_bootstrap_gain` of every comparison in COMPARISONS, arguments as `experiment_metrics`.

    Both sides of a comparison score the same readable crops of the same sets; their scores are
    the two variants' columns of each crop's prediction row, so they pair by crop_id. The gains
    equal `experiment_metrics`' mA differences exactly (same rows, same order). When crops come
    in tracks (`track_index`), resamples draw whole tracks: a person's crops are not independent.
    """
    cols = [list(model_attributes).index(a) for a in attributes]
    tracks = track_index(predictions)
    experiments = {key: (sets, variant) for key, _, sets, variant in EXPERIMENTS}
    out: dict[str, GainInterval] = {}
    for name, before, after in COMPARISONS:
        (sets, v_before), (after_sets, v_after) = experiments[before], experiments[after]
        if sets != after_sets:  # a comparison across different crops would not be paired
            raise ValueError(f"comparison {name!r} compares sets {sets} with {after_sets}; it needs the same crops")
        y, scores, rows = _set_rows(predictions, labels, sets, (v_before, v_after), attributes=attributes,
                                    model_attributes=model_attributes)
        out[name] = paired_bootstrap_gain(y, scores[v_before], scores[v_after], attributes=tuple(attributes),
                                          thresholds=np.asarray(thresholds)[cols], resamples=resamples, seed=seed,
                                          groups=None if tracks is None else tracks[rows])
    return out


def _set_rows(predictions: pd.DataFrame, labels: Mapping[str, pd.DataFrame], sets: Sequence[str],
              variants: Sequence[str], *, attributes: Sequence[str],
              model_attributes: Sequence[str]) -> tuple[np.ndarray, dict[str, np.ndarray], np.ndarray]:
    """The readable crops of `sets`, in set then prediction order: their labels (n, len(attributes))
    int8, looked up by crop_id, per variant their (n, len(attributes)) scores, and their (n,)
    positions in `predictions`. One row per crop, so the variants' rows pair by crop_id."""
    cols = [list(model_attributes).index(a) for a in attributes]
    ok = (predictions["status"] == "ok").to_numpy()
    y_parts: list[np.ndarray] = []
    s_parts: dict[str, list[np.ndarray]] = {v: [] for v in variants}
    positions = []
    for s in sets:
        where = np.flatnonzero(ok & (predictions["eval_set"] == s).to_numpy())
        rows = predictions.iloc[where]
        positions.append(where)
        y_parts.append(labels[s].loc[rows["crop_id"].to_numpy(), list(attributes)].to_numpy(np.int8))
        for v in variants:
            s_parts[v].append(stack_scores(rows[v], len(model_attributes))[:, cols])
    scores = {v: np.concatenate(parts) for v, parts in s_parts.items()}
    return np.concatenate(y_parts), scores, np.concatenate(positions)


@dataclasses.dataclass(frozen=True, eq=False)
class Scored:
    """One bundle's scores of the evaluation sets: `score_sets`' predictions, the classifier's
    attributes (its score columns in order) and its thresholds."""

    predictions: pd.DataFrame
    model_attributes: tuple[str, ...]
    thresholds: np.ndarray


def recipe_contrast(before: Scored, after: Scored, labels: Mapping[str, pd.DataFrame], *, sets: Sequence[str],
                    variants: tuple[str, str], attributes: Sequence[str], resamples: int = 1000,
                    seed: int = 0) -> GainInterval:
    """The mA gain of one recipe over another on the same crops (e.g. the augmented classifier alone
    against the paper's pipeline on the corrupted sets), with its paired interval over tracks.

    before / after: two bundles' scores of the same evaluation sets (one seed: the same copies),
    read under `variants` (before's, after's). Rows pair by (set, crop_id), as the two scoring
    passes need not keep one order; each side decides with its own thresholds. labels as in
    `experiment_metrics`."""
    sides = []
    for side, variant in zip((before, after), variants):
        y, scores, rows = _set_rows(side.predictions, labels, sets, (variant,), attributes=attributes,
                                    model_attributes=side.model_attributes)
        cols = [list(side.model_attributes).index(a) for a in attributes]
        frame = side.predictions.iloc[rows]
        keys = pd.Index(frame["eval_set"].astype(str) + "\x1f" + frame["crop_id"].astype(str))
        tracks = track_index(side.predictions)
        sides.append((keys, y, scores[variant] >= np.asarray(side.thresholds)[cols],
                      None if tracks is None else tracks[rows]))
    (keys, y, first, tracks), (other_keys, _, second, _) = sides
    common = np.flatnonzero(keys.isin(other_keys))  # crops both sides could read
    matched = other_keys.get_indexer(keys[common])
    return paired_bootstrap_gain(y[common], first[common], second[matched], attributes=tuple(attributes),
                                 resamples=resamples, seed=seed, groups=None if tracks is None else tracks[common])


def occlusion_detection(predictions: pd.DataFrame, *, model_attributes: Sequence[str],
                        threshold: float) -> AttributeMetrics | None:
    """How well the first-pass `occlusion_down` score tells occluded crops (1) from clean and
    low-res ones (0); None when the classifier has no such attribute."""
    if OCCLUSION_DOWN not in model_attributes:
        return None
    ok = predictions[predictions["status"] == "ok"]
    index = list(model_attributes).index(OCCLUSION_DOWN)
    y = (ok["eval_set"] == "occluded").to_numpy(np.int8)[:, None]
    s = stack_scores(ok["plain"], len(model_attributes))[:, [index]]
    return attribute_metrics(y, s, attributes=(OCCLUSION_DOWN,), thresholds=[threshold])


def stack_scores(column: pd.Series, width: int) -> np.ndarray:
    """A column of (width,) score arrays as one (n, width) float32 array."""
    return np.stack(column.to_list()).astype(np.float32) if len(column) else np.zeros((0, width), np.float32)


# ---------------------------------------------------------------------------------------------
# Per person: the crops of a track fused into one answer (docs/DESIGN.md "Metric definitions").

# Track sets: the test tracks seen through each copy, mixed (each frame from the copy
# `corrupt.track_conditions` picks), and the mixed tracks with no clean frame on their own.
TRACK_SETS = ("clean", "occluded", "lowres", "mixed", "mixed_no_clean")
TRACK_SET_LABELS = {"clean": "clean", "occluded": "occluded", "lowres": "low-res", "mixed": "mixed",
                    "mixed_no_clean": "mixed, no clean frame"}
# Without and with restoration: the classifier alone, and the complete pipeline as extraction runs it.
TRACK_VARIANTS = ("plain", "pipeline")
CORRUPTIONS = ("occluded", "lowres", "mixed")
# (name, the rule compared, the rule it is compared with): on mixed tracks.
RULE_COMPARISONS = (("quality - mean", "quality", "mean"), ("quality - best", "quality", "best"))
_COPY_SUFFIX = {"clean": "", "occluded": SUFFIX["occlusion"], "lowres": SUFFIX["lowres"]}


@dataclasses.dataclass(frozen=True, eq=False)
class TrackSetMetrics:
    """One track set under one variant: its readable crops and tracks, the per-crop metrics and
    the per-track metrics of each fusion rule (RULES), on the person-level attributes."""

    crops: int
    tracks: int
    per_crop: AttributeMetrics
    per_track: dict[str, AttributeMetrics]


@dataclasses.dataclass(frozen=True, eq=False)
class TrackEvaluation:
    """Per-person metrics beside per-crop ones, and the questions they answer, with intervals
    that resample tracks (`metrics.bootstrap_contrast`).

    sets: track set (TRACK_SETS) → variant (TRACK_VARIANTS) → metrics.
    won_back: corruption (CORRUPTIONS) → variant → what a track wins back of the mA a corruption
        costs per crop: (crop clean − crop corrupted) − (track clean − track corrupted), fused by
        the bundle's rule.
    restoration: track set (but clean) → "crop" / "track" → mA(pipeline) − mA(plain), per crop
        and per track (the bundle's rule).
    rules: RULE_COMPARISONS name → variant → per-track mA difference of two rules on mixed tracks.
    """

    fusion: Fusion
    attributes: tuple[str, ...]
    sets: dict[str, dict[str, TrackSetMetrics]]
    won_back: dict[str, dict[str, GainInterval]]
    restoration: dict[str, dict[str, GainInterval]]
    rules: dict[str, dict[str, GainInterval]]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: summary metrics (no per-attribute tables) and every interval."""
        def summary(m: AttributeMetrics) -> dict[str, Any]:
            return {k: v for k, v in m.to_dict().items() if k != "per_attribute"}

        def intervals(table: Mapping[str, Mapping[str, GainInterval]]) -> dict[str, Any]:
            return {k: {v: i.to_dict() for v, i in row.items()} for k, row in table.items()}

        return {
            "fusion": self.fusion.to_dict(), "attributes": list(self.attributes),
            "sets": {s: {v: {"crops": m.crops, "tracks": m.tracks, "per_crop": summary(m.per_crop),
                             "per_track": {r: summary(t) for r, t in m.per_track.items()}}
                         for v, m in row.items()} for s, row in self.sets.items()},
            "won_back": intervals(self.won_back), "restoration": intervals(self.restoration),
            "rules": intervals(self.rules),
        }


def track_index(predictions: pd.DataFrame) -> np.ndarray | None:
    """(N,) int per prediction row: its track, the same in every copy (camera_id, track_id; a row
    without a track_id is a track of one, keyed by its source crop), or None when no row has a
    track_id (every crop is then its own track)."""
    if "track_id" not in predictions.columns or not predictions["track_id"].notna().any():
        return None
    camera = predictions["camera_id"].fillna("").astype(str) if "camera_id" in predictions.columns else ""
    track = predictions["track_id"]
    own = np.where(track.notna(), "t" + track.fillna("").astype(str), "c" + pd.Series(source_ids(predictions)))
    codes, _ = pd.factorize(camera + "\x1f" + pd.Series(own, index=predictions.index))
    return codes.astype(np.int64)


def source_ids(predictions: pd.DataFrame) -> np.ndarray:
    """(N,) the crop_id of each row's clean source: `corrupt_manifest` names a copy "<crop_id><suffix>"."""
    out = predictions["crop_id"].astype(str).to_numpy(copy=True)
    for s, suffix in _COPY_SUFFIX.items():
        rows = (predictions["eval_set"] == s).to_numpy()
        if suffix and rows.any():
            out[rows] = [c.removesuffix(suffix) for c in out[rows]]
    return out


def mixed_rows(predictions: pd.DataFrame, *, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The mixed tracks: per clean row, the position in `predictions` of the copy of that frame
    that `corrupt.track_conditions` picks, and that copy's name ("clean", "occluded", "lowres").
    Frames are ordered by frame_index and a track's far end found by the clean crops' stored
    heights (crop_height; an unreadable crop's is unknown)."""
    clean = np.flatnonzero((predictions["eval_set"] == "clean").to_numpy())
    rows = predictions.iloc[clean]
    sources = source_ids(predictions)
    tracks = rows["track_id"] if "track_id" in rows.columns else pd.Series([None] * len(rows))
    frames = rows["frame_index"] if "frame_index" in rows.columns else pd.Series([None] * len(rows))
    heights = (rows["crop_height"].to_numpy(np.float64) if "crop_height" in rows.columns
               else np.full(len(rows), np.nan))
    conditions = track_conditions([None if pd.isna(t) else str(t) for t in tracks],
                                  [None if pd.isna(f) else int(f) for f in frames],
                                  np.where(heights > 0, heights, np.nan), crop_ids=list(sources[clean]), seed=seed)
    position = {(s, c): i for i, (s, c) in enumerate(zip(predictions["eval_set"], predictions["crop_id"]))}
    picked = np.array([position.get((cond, src + _COPY_SUFFIX[cond]), -1)
                       for cond, src in zip(conditions, sources[clean])], np.int64)
    found = picked >= 0
    return picked[found], conditions[found]


def track_experiments(predictions: pd.DataFrame, labels: Mapping[str, pd.DataFrame], *,
                      attributes: Sequence[str], model_attributes: Sequence[str], thresholds: np.ndarray,
                      fusion: Fusion, person_attributes: Sequence[str] | None = None, resamples: int = 1000,
                      seed: int = 0) -> TrackEvaluation | None:
    """Per-track beside per-crop metrics of every track set, variant and fusion rule, and the
    questions of `TrackEvaluation` with intervals that resample tracks.

    Arguments as `experiment_metrics`, with predictions carrying track_id, frame_index,
    camera_id and crop_height (`evaluate.score_sets`); fusion: the bundle's rule and quality
    coefficients (quality and best weigh crops by them; the questions fuse by its rule);
    person_attributes: the attributes fused and scored, in `attributes` order (the bundle's
    person-level marking; None: `attributes.person_level` of `attributes`). A crop's quality
    signals are those of its variant: the plain classifier's own occlusion_down score and no
    restoration, or the pipeline's first-pass score and what it restored. A track's label is the
    one its labelled crops agree on (unknown where they disagree). `seed` seeds the mixed
    tracks and the bootstrap. None when no crop has a track_id or no attribute is person-level.
    """
    tracks = track_index(predictions)
    chosen = set(person_level(tuple(attributes)) if person_attributes is None else person_attributes)
    people = tuple(a for a in attributes if a in chosen)
    if tracks is None or not people:
        return None
    model = list(model_attributes)
    cols = [model.index(a) for a in people]
    thr = np.asarray(thresholds, np.float64)[cols]
    ok = (predictions["status"] == "ok").to_numpy()
    y = np.full((len(predictions), len(people)), -1, np.int8)  # every row's own labels
    for s, table in labels.items():
        rows = np.flatnonzero((predictions["eval_set"] == s).to_numpy())
        y[rows] = table.loc[predictions["crop_id"].to_numpy()[rows], list(people)].to_numpy(np.int8)
    mixed, conditions = mixed_rows(predictions, seed=seed)
    clean_tracks = np.unique(tracks[mixed][conditions == "clean"])
    members = {s: np.flatnonzero((predictions["eval_set"] == s).to_numpy()) for s in SETS}
    members["mixed"] = mixed
    members["mixed_no_clean"] = mixed[~np.isin(tracks[mixed], clean_tracks)]

    height = (predictions["crop_height"].to_numpy(np.float64) if "crop_height" in predictions.columns
              else np.full(len(predictions), np.nan))
    occ = model.index(OCCLUSION_DOWN) if OCCLUSION_DOWN in model else None
    sides: dict[tuple[str, str, str], Side] = {}  # (track set, variant, "crop" or a rule)
    sets: dict[str, dict[str, TrackSetMetrics]] = {}
    for name in TRACK_SETS:
        rows = members[name][ok[members[name]]]
        sets[name] = {}
        for variant in TRACK_VARIANTS:
            scores = stack_scores(predictions[variant].iloc[rows], len(model))
            if variant == "plain":
                first = scores[:, occ] if occ is not None else np.full(len(rows), np.nan)
                restored = np.zeros(len(rows), bool), np.zeros(len(rows), bool)
            else:
                first = predictions["occlusion_score"].to_numpy(np.float64)[rows]
                restored = (predictions["super_resolved"].to_numpy(bool)[rows],
                            predictions["reconstructed"].to_numpy(bool)[rows])
            weights = crop_weights(quality_features(first, height[rows], *restored), fusion.coefficients)
            sides[(name, variant, "crop")] = (y[rows], scores[:, cols], tracks[rows])
            group_ids, groups = np.unique(tracks[rows], return_inverse=True)
            per_track_labels = track_labels(y[rows], groups, len(group_ids))
            per_track = {}
            for rule in RULES:
                fused = fuse(scores[:, cols], weights, groups, len(group_ids), rule)
                sides[(name, variant, rule)] = (per_track_labels, fused, group_ids)
                per_track[rule] = attribute_metrics(per_track_labels, fused, attributes=people, thresholds=thr)
            sets[name][variant] = TrackSetMetrics(
                crops=len(rows), tracks=len(group_ids), per_track=per_track,
                per_crop=attribute_metrics(y[rows], scores[:, cols], attributes=people, thresholds=thr))

    def contrast(keys: Sequence[tuple[str, str, str]], coefficients: Sequence[float]) -> GainInterval:
        chosen = [sides[k] for k in keys]
        crops = max(sets[s][v].crops for s, v, _ in keys)
        return bootstrap_contrast(chosen, coefficients, attributes=people, thresholds=thr, resamples=resamples,
                                  seed=seed, crops=crops, tracks=len(np.unique(np.concatenate([c[2] for c in chosen]))))

    rule = fusion.rule
    won_back = {c: {v: contrast([("clean", v, "crop"), (c, v, "crop"), ("clean", v, rule), (c, v, rule)],
                                (1.0, -1.0, -1.0, 1.0)) for v in TRACK_VARIANTS} for c in CORRUPTIONS}
    restoration = {s: {level: contrast([(s, "plain", side), (s, "pipeline", side)], (-1.0, 1.0))
                       for level, side in (("crop", "crop"), ("track", rule))} for s in TRACK_SETS if s != "clean"}
    rules = {name: {v: contrast([("mixed", v, other), ("mixed", v, this)], (-1.0, 1.0)) for v in TRACK_VARIANTS}
             for name, this, other in RULE_COMPARISONS}
    return TrackEvaluation(fusion=fusion, attributes=people, sets=sets, won_back=won_back,
                           restoration=restoration, rules=rules)


"""Attribute-recognition metrics under the RAP protocol (DESIGN.md "Metric definitions").

Inputs everywhere:
    labels  (N, A) integers in {1, 0, -1}: positive, negative, unknown. Unknown entries are
            ignored by every metric.
    scores  (N, A) float probabilities (or bool decisions); a decision is `scores >= threshold`.

Label-based (per attribute i, over samples with a known label):
    pos_recall = TP / (TP + FN), neg_recall = TN / (TN + FP), ma_i = mean of the two.
    A recall is only computed when its denominator is > 0: an attribute with no known positives
    is scored by its negative recall alone (and vice versa), and an attribute with no known
    label at all has ma_i = NaN and is left out of mA. mA = mean over the remaining attributes.

Instance-based (per sample j, over attributes with a known label; Y = labelled positives,
P = predicted positives):
    acc = |Y∩P| / |Y∪P|, prec = |Y∩P| / |P|, rec = |Y∩P| / |Y|, each 0 when its denominator is 0.
    Accuracy, Precision, Recall are means over samples; F1 = 2·P·R / (P + R) of those means
    (0 when P + R = 0). Samples whose labels are all unknown carry no information and are left
    out of the means (counting them as 0 would punish missing annotations, not the model).

Gains (`paired_bootstrap_gain`): mA(after) - mA(before) on the same crops, with a paired
percentile bootstrap interval over crops, or over tracks when crops come in tracks;
`bootstrap_contrast` is the same for any sum of mA's over sides that share their tracks (per-crop
against per-track mA). `GainInterval.verdict` says "helps" only when the whole interval lies above
0. Image fidelity (`squared_error`, `psnr`): PSNR of uint8 images over selected rows, pooled over
every compared value.

A metric with nothing to average over (no sample or attribute with a known label) is NaN;
`AttributeMetrics.to_dict` writes NaN as null.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

PER_ATTRIBUTE_COLUMNS = ("ma", "accuracy", "precision", "recall", "f1", "positives", "support")
GAIN_COLUMNS = ("gain", "low", "high")


@dataclasses.dataclass(frozen=True, eq=False)
class AttributeMetrics:
    """Summary metrics plus the per-attribute table.

    `per_attribute` is indexed by attribute id with columns ma, accuracy, precision, recall, f1
    (float; NaN for an attribute without known labels), positives and support (int: known
    positive labels and known labels). Its accuracy / precision / recall / f1 are the usual
    binary ones on that attribute's known labels, with 0 for a zero denominator.
    """

    ma: float
    accuracy: float
    precision: float
    recall: float
    f1: float
    per_attribute: pd.DataFrame

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: floats (NaN as None), and per_attribute as {attribute: {column: value}}."""
        columns = {col: self.per_attribute[col].tolist() for col in PER_ATTRIBUTE_COLUMNS}
        table = {
            str(attr): {col: _json_number(columns[col][i]) for col in PER_ATTRIBUTE_COLUMNS}
            for i, attr in enumerate(self.per_attribute.index)
        }
        return {
            "ma": _json_number(self.ma),
            "accuracy": _json_number(self.accuracy),
            "precision": _json_number(self.precision),
            "recall": _json_number(self.recall),
            "f1": _json_number(self.f1),
            "per_attribute": table,
        }


def attribute_metrics(
    labels: np.ndarray,
    scores: np.ndarray,
    *,
    attributes: Sequence[str],
    thresholds: float | Sequence[float] | np.ndarray | None = None,
) -> AttributeMetrics:
    """mA, instance accuracy / precision / recall / F1 and the per-attribute table.

    labels: (N, A) in {1, 0, -1}; scores: (N, A) probabilities or bool decisions;
    attributes: the A attribute ids, in column order; thresholds: None (0.5), a scalar, or (A,)
    per-attribute thresholds (a decision is `score >= threshold`).
    """
    known, positive = _check_labels(labels)
    n, a = known.shape
    attrs = tuple(attributes)
    if len(attrs) != a:
        raise ValueError(f"attributes must name the {a} label columns, got {len(attrs)} names")
    predicted = _decisions(scores, thresholds, shape=(n, a)) & known  # unknown cells never count

    # Label-based counts per attribute, (A,) each.
    tp = (predicted & positive).sum(axis=0)
    pos = positive.sum(axis=0)
    support = known.sum(axis=0)
    neg = support - pos
    fp = predicted.sum(axis=0) - tp
    fn = pos - tp
    tn = neg - fp

    attr_ma = _balanced_accuracy(tp, pos, tn, neg)
    has_known = support > 0  # = ma_i defined: its NaN marks an attribute left out of mA
    per_attribute = pd.DataFrame(
        {
            "ma": attr_ma,
            "accuracy": np.where(has_known, _ratio(tp + tn, support, nan=True), np.nan),
            "precision": np.where(has_known, _ratio(tp, tp + fp), np.nan),
            "recall": np.where(has_known, _ratio(tp, pos), np.nan),
            "f1": np.where(has_known, _ratio(2 * tp, 2 * tp + fp + fn), np.nan),
            "positives": pos.astype(np.int64),
            "support": support.astype(np.int64),
        },
        index=pd.Index(attrs, name="attribute"),
    )
    ma = float(_mean_accuracy(attr_ma))

    # Instance-based, per sample over its known attributes, (N,) each.
    inter = (predicted & positive).sum(axis=1)
    n_true = positive.sum(axis=1)
    n_pred = predicted.sum(axis=1)
    union = n_true + n_pred - inter
    rows = known.any(axis=1)
    if rows.any():
        accuracy = float(np.mean(_ratio(inter, union)[rows]))
        precision = float(np.mean(_ratio(inter, n_pred)[rows]))
        recall = float(np.mean(_ratio(inter, n_true)[rows]))
        f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    else:
        accuracy = precision = recall = f1 = math.nan

    return AttributeMetrics(ma=ma, accuracy=accuracy, precision=precision, recall=recall, f1=f1,
                            per_attribute=per_attribute)


def default_threshold_grid() -> np.ndarray:
    """0.01, 0.02, ..., 0.99: the candidates `calibrate_thresholds` tries by default."""
    return np.round(np.arange(1, 100) / 100.0, 2)


def calibrate_thresholds(
    labels: np.ndarray,
    scores: np.ndarray,
    *,
    objective: str = "ma",
    grid: Sequence[float] | np.ndarray | None = None,
) -> np.ndarray:
    """Per-attribute decision thresholds that maximise a validation objective.

    labels: (N, A) in {1, 0, -1}; scores: (N, A) float. objective "ma" maximises each
    attribute's balanced accuracy (its ma_i above), "f1" its binary F1. Candidates come from
    `grid` (default `default_threshold_grid()`). Ties go to the candidate closest to 0.5 (then
    the smaller one), so an attribute the data says nothing about keeps 0.5 when the grid has it.
    Returns (A,) float64.
    """
    if objective not in ("ma", "f1"):
        raise ValueError(f"objective must be 'ma' or 'f1', got {objective!r}")
    known, positive = _check_labels(labels)
    n, a = known.shape
    scores = _check_scores(scores, shape=(n, a)).astype(np.float64)
    cand = default_threshold_grid() if grid is None else np.asarray(grid, dtype=np.float64)
    if cand.ndim != 1 or cand.size == 0 or not np.all(np.isfinite(cand)):
        raise ValueError(f"grid must be a non-empty 1-D array of finite thresholds, got shape {cand.shape}")
    cand = np.unique(cand)  # sorted, so cumulative counts below line up with it
    g = cand.size

    # bins[j, i] = how many candidates are <= score, i.e. the score is a positive decision for
    # exactly the candidates cand[:bins]. One bincount per label class gives, for every
    # (attribute, candidate), the count of known positives / negatives predicted positive,
    # in O(N·A) instead of O(N·A·G).
    bins = np.searchsorted(cand, scores, side="right")  # (N, A) in [0, G]
    offset = bins + (g + 1) * np.arange(a)[None, :]

    def predicted_positive(mask: np.ndarray) -> np.ndarray:
        hist = np.bincount(offset[mask], minlength=a * (g + 1)).reshape(a, g + 1)
        # cand[k] predicts positive for scores in bins k+1..G: a reversed cumulative sum.
        return np.cumsum(hist[:, ::-1], axis=1)[:, ::-1][:, 1:]  # (A, G)

    negative = known & ~positive
    tp = predicted_positive(positive)
    fp = predicted_positive(negative)
    pos = positive.sum(axis=0)[:, None]
    neg = negative.sum(axis=0)[:, None]
    if objective == "ma":
        value = _balanced_accuracy(tp, pos, neg - fp, neg)
        value = np.nan_to_num(value, nan=0.0)  # no known labels: every candidate ties
    else:
        value = _ratio(2 * tp, tp + fp + pos)  # 2TP / (2TP + FP + FN), FN = pos - TP

    best = value.max(axis=1, keepdims=True)
    ties = value >= best - 1e-12
    distance = np.where(ties, np.abs(cand - 0.5)[None, :], np.inf)
    return cand[np.argmin(distance, axis=1)]  # argmin takes the first (smaller) of equals


@dataclasses.dataclass(frozen=True, eq=False)
class GainInterval:
    """mA(after) - mA(before) on the same crops, with its paired percentile bootstrap interval.

    gain, low, high are fractions like `AttributeMetrics.ma` (0.018 = 1.8 points); crops is N,
    resamples and level (e.g. 0.95) say how the interval was drawn, and tracks how many tracks its
    resamples drew from (None: it drew single crops). `per_attribute` is indexed by
    attribute id with columns gain, low, high: the same for each ma_i (NaN where an attribute has
    no known label).
    """

    gain: float
    low: float
    high: float
    crops: int
    resamples: int
    level: float
    per_attribute: pd.DataFrame
    tracks: int | None = None

    @property
    def verdict(self) -> str:
        """"helps" when the whole interval lies above 0, "hurts" when it lies below 0, otherwise
        (0 inside it, or nothing measured) "no measurable effect"."""
        if self.low > 0:
            return "helps"
        if self.high < 0:
            return "hurts"
        return "no measurable effect"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: floats (NaN as None), the verdict, per_attribute as {attribute: {gain, low, high}}."""
        columns = {col: self.per_attribute[col].tolist() for col in GAIN_COLUMNS}
        table = {str(attr): {col: _json_number(columns[col][i]) for col in GAIN_COLUMNS}
                 for i, attr in enumerate(self.per_attribute.index)}
        return {"gain": _json_number(self.gain), "low": _json_number(self.low), "high": _json_number(self.high),
                "crops": self.crops, "tracks": self.tracks, "resamples": self.resamples, "level": self.level,
                "verdict": self.verdict, "per_attribute": table}


# Weights held at once by a bootstrap (resamples × groups): 32 MiB of float64.
_BOOTSTRAP_CELLS = 1 << 22

# One side of a bootstrap contrast: labels (n, A), scores (n, A) and each row's group (n,) ints.
Side = tuple[np.ndarray, np.ndarray, np.ndarray]


def measurable(labels: np.ndarray, groups: np.ndarray | None, min_tracks: int) -> np.ndarray:
    """(A,) bool: which attributes' positive and negative crops each come from at least
    `min_tracks` of the groups ((N,) ints, the crops' tracks; None: every crop its own).
    labels (N, A) with 1 / 0 / -1 (unknown counts as neither). A bootstrap over groups scores an
    attribute the same way in (nearly) every resample only when both spread over enough groups."""
    labels = np.asarray(labels)
    groups = np.arange(len(labels)) if groups is None else np.asarray(groups)

    def spread(mask: np.ndarray) -> np.ndarray:
        return np.array([len(np.unique(groups[mask[:, i]])) for i in range(mask.shape[1])], dtype=np.int64)
    return (spread(labels == 1) >= min_tracks) & (spread(labels == 0) >= min_tracks)


def paired_bootstrap_gain(
    labels: np.ndarray,
    before: np.ndarray,
    after: np.ndarray,
    *,
    attributes: Sequence[str],
    thresholds: float | Sequence[float] | np.ndarray | None = None,
    resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    groups: np.ndarray | None = None,
) -> GainInterval:
    """The mA gain of `after` over `before` on the same crops, with a paired bootstrap interval.

    labels: (N, A) in {1, 0, -1}; before / after: (N, A) scores (or bool decisions) of the SAME
    N crops in the same row order, without / with restoration; attributes and thresholds as for
    `attribute_metrics`. gain = attribute_metrics(after).ma - attribute_metrics(before).ma.

    Each of `resamples` resamples draws N crop rows with replacement, the same rows for before
    and after (paired: what varies between crops cancels), and scores both exactly as
    `attribute_metrics` does: an attribute without known positives in the resample is scored by
    its negative recall alone (and vice versa), one without any known label is left out of mA.
    low / high are the (1 - level) / 2 and (1 + level) / 2 percentiles of the resampled gains
    (resamples where mA is undefined are left out). Seeded: the same inputs and seed give the
    same interval. N = 0 gives NaN gain and interval.

    groups: (N,) ints, crops that are not independent (a person's track): each resample then
    draws whole groups with replacement, as many as there are, instead of single crops
    (`bootstrap_contrast`). None: every crop is its own group.
    """
    n = np.asarray(labels).shape[0] if np.ndim(labels) == 2 else 0
    tracks = None if groups is None else len(np.unique(np.asarray(groups)))
    groups = np.arange(n) if groups is None else groups
    return bootstrap_contrast([(labels, before, groups), (labels, after, groups)], (-1.0, 1.0),
                              attributes=attributes, thresholds=thresholds, resamples=resamples, seed=seed,
                              level=level, tracks=tracks)


def bootstrap_contrast(
    sides: Sequence[Side],
    coefficients: Sequence[float],
    *,
    attributes: Sequence[str],
    thresholds: float | Sequence[float] | np.ndarray | None = None,
    resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    crops: int | None = None,
    tracks: int | None = None,
) -> GainInterval:
    """sum_s coefficients[s] · mA(side s), with a percentile bootstrap interval over groups.

    sides: per side (labels (n_s, A), scores (n_s, A), groups (n_s,) ints): the rows one mA is
    measured on and the group (a track) each row belongs to. Sides may hold different rows (a
    track's crops on one side, its fused scores on another) as long as their groups name the same
    things. Each resample draws G groups with replacement (G: the distinct groups over every side)
    and gives each side the rows of the drawn groups, as often as drawn, so every side of a
    resample sees the same groups (paired). Scored as `attribute_metrics` does; per attribute the
    same contrast of ma_i. crops: reported as the interval's crops (default: the largest side's
    rows); tracks: reported as its tracks (None: the groups are single crops).
    """
    if isinstance(resamples, bool) or not isinstance(resamples, (int, np.integer)) or resamples < 1:
        raise ValueError(f"resamples must be an integer >= 1, got {resamples!r}")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level!r}")
    coef = np.asarray(coefficients, np.float64)
    if not sides or coef.shape != (len(sides),):
        raise ValueError(f"bootstrap_contrast needs one coefficient per side, got {len(sides)} side(s) and "
                         f"{coef.shape} coefficients")
    attrs = tuple(attributes)
    point = [attribute_metrics(labels, scores, attributes=attrs, thresholds=thresholds) for labels, scores, _ in sides]
    gain, per_gain = 0.0, np.zeros(len(attrs))
    for c, m in zip(coef, point):
        gain += c * m.ma
        per_gain = per_gain + c * m.per_attribute["ma"].to_numpy()

    keys = []
    for k, (labels, _, group) in enumerate(sides):
        group = np.asarray(group)
        if group.shape != (np.asarray(labels).shape[0],) or not np.issubdtype(group.dtype, np.integer):
            raise ValueError(f"side {k}: groups must be ({np.asarray(labels).shape[0]},) integers, "
                             f"got {group.shape} {group.dtype}")
        keys.append(group)
    universe, inverse = np.unique(np.concatenate(keys), return_inverse=True)
    g = len(universe)
    a = len(attrs)
    gains = np.full(resamples, np.nan)
    per = np.full((resamples, a), np.nan)
    if g:
        # What each group adds to attribute_metrics' counts pos, neg, TP and TN of every side: a
        # resample's counts are then its group weights times these, one matrix product.
        offsets = np.cumsum([0] + [len(k) for k in keys])
        cells = np.concatenate([_group_cells(labels, scores, thresholds, inverse[offsets[k]:offsets[k + 1]], g)
                                for k, (labels, scores, _) in enumerate(sides)], axis=1)  # (G, S·4A)
        rng = np.random.default_rng(seed)
        chunk = max(1, _BOOTSTRAP_CELLS // g)
        s = len(sides)
        for start in range(0, resamples, chunk):
            b = min(chunk, resamples - start)
            drawn = rng.integers(0, g, size=(b, g))
            # How often each resample drew each group, (b, G).
            weights = np.bincount((drawn + g * np.arange(b)[:, None]).ravel(), minlength=b * g).reshape(b, g)
            counts = (weights.astype(np.float64) @ cells).reshape(b, s, 4, a)
            ma = _balanced_accuracy(counts[:, :, 2], counts[:, :, 0], counts[:, :, 3], counts[:, :, 1])  # (b, S, A)
            per[start:start + b] = (ma * coef[None, :, None]).sum(axis=1)
            gains[start:start + b] = (_mean_accuracy(ma) * coef[None, :]).sum(axis=1)

    q = (50.0 * (1.0 - level), 50.0 * (1.0 + level))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN: nothing measured, NaN is the answer
        low, high = np.nanpercentile(gains, q)
        per_low, per_high = np.nanpercentile(per, q, axis=0)
    per_attribute = pd.DataFrame({"gain": per_gain, "low": per_low, "high": per_high},
                                 index=pd.Index(attrs, name="attribute"))
    rows = max(len(k) for k in keys)
    return GainInterval(gain=gain, low=float(low), high=float(high), crops=rows if crops is None else crops,
                        resamples=resamples, level=float(level), per_attribute=per_attribute, tracks=tracks)


def _group_cells(labels: np.ndarray, scores: np.ndarray, thresholds: Any, groups: np.ndarray, g: int) -> np.ndarray:
    """(G, 4A) per group the sums of positive, negative, TP and TN cells of its rows."""
    known, positive = _check_labels(labels)
    n, a = known.shape
    predicted = _decisions(scores, thresholds, shape=(n, a))
    negative = known & ~positive
    cells = np.concatenate([positive, negative, predicted & positive, ~predicted & negative], axis=1).astype(np.float64)
    out = np.zeros((g, 4 * a))
    if n:
        order = np.argsort(groups, kind="stable")
        starts = np.flatnonzero(np.r_[True, np.diff(groups[order]) != 0])
        out[groups[order][starts]] = np.add.reduceat(cells[order], starts, axis=0)
    return out


def squared_error(a: np.ndarray, b: np.ndarray, rows: np.ndarray) -> tuple[float, int]:
    """Sum of squared differences of two image batches over selected rows, and the number of
    values compared: what `psnr` pools over batches.

    a, b: (N, H, W, C) images of one value range (uint8 for `psnr`'s default peak); rows: (N, H)
    bool, the rows of each image to compare (every column and channel of a selected row).
    """
    a, b, rows = np.asarray(a), np.asarray(b), np.asarray(rows, dtype=bool)
    if a.shape != b.shape or a.ndim != 4:
        raise ValueError(f"images must be two (N, H, W, C) batches of one shape, got {a.shape} and {b.shape}")
    if rows.shape != a.shape[:2]:
        raise ValueError(f"rows must be (N, H) = {a.shape[:2]}, got {rows.shape}")
    diff = a[rows].astype(np.float64) - b[rows].astype(np.float64)  # (selected rows, W, C)
    return float(np.square(diff).sum()), int(diff.size)


def psnr(sse: float, count: int, *, peak: float = 255.0) -> float:
    """PSNR in dB of a pooled squared error: 10·log10(peak² / (sse / count)).

    Pooled over every compared value of every image (one PSNR of the set, not a mean of
    per-image PSNRs); inf for identical images, NaN when nothing was compared.
    """
    if count <= 0:
        return math.nan
    mse = sse / count
    return math.inf if mse == 0 else 10.0 * math.log10(peak * peak / mse)


def _balanced_accuracy(tp: np.ndarray, pos: np.ndarray, tn: np.ndarray, neg: np.ndarray) -> np.ndarray:
    """Mean of the recalls whose denominator is > 0; NaN where neither is defined."""
    pos_recall = _ratio(tp, pos, nan=True)
    neg_recall = _ratio(tn, neg, nan=True)
    both = np.stack(np.broadcast_arrays(pos_recall, neg_recall))
    defined = ~np.isnan(both)
    total = np.where(defined, both, 0.0).sum(axis=0)
    count = defined.sum(axis=0)
    return _ratio(total, count, nan=True)


def _mean_accuracy(attr_ma: np.ndarray) -> np.ndarray:
    """mA from (..., A) per-attribute ma_i: the mean over the attributes whose ma_i is defined
    (not NaN); NaN where none is. The one definition of mA that every caller shares."""
    defined = ~np.isnan(attr_ma)
    return _ratio(np.where(defined, attr_ma, 0.0).sum(axis=-1), defined.sum(axis=-1), nan=True)


def _ratio(num: np.ndarray, den: np.ndarray, *, nan: bool = False) -> np.ndarray:
    """num / den elementwise, with 0 (or NaN) where den == 0."""
    num = np.asarray(num, dtype=np.float64)
    den = np.asarray(den, dtype=np.float64)
    out = np.full(np.broadcast_shapes(num.shape, den.shape), np.nan if nan else 0.0)
    np.divide(num, den, out=out, where=den > 0)
    return out


def _check_labels(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N, A) labels in {1, 0, -1} -> (known, positive) bool masks."""
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"labels must be 2-D (samples, attributes), got shape {labels.shape}")
    if labels.dtype == bool or not (np.issubdtype(labels.dtype, np.integer) or np.issubdtype(labels.dtype, np.floating)):
        raise ValueError(f"labels must be integers in {{-1, 0, 1}}, got dtype {labels.dtype}")
    bad = ~np.isin(labels, (-1, 0, 1))
    if bad.any():
        values = np.unique(labels[bad])[:5].tolist()
        raise ValueError(f"labels must be 1 (positive), 0 (negative) or -1 (unknown), got values {values}")
    return labels != -1, labels == 1


def _check_scores(scores: np.ndarray, *, shape: tuple[int, int]) -> np.ndarray:
    scores = np.asarray(scores)
    if scores.shape != shape:
        raise ValueError(f"scores must have the labels' shape {shape}, got {scores.shape}")
    if not (scores.dtype == bool or np.issubdtype(scores.dtype, np.number)):
        raise ValueError(f"scores must be numbers or bools, got dtype {scores.dtype}")
    if scores.dtype != bool and not np.all(np.isfinite(scores)):
        raise ValueError("scores contain NaN or infinite values")
    return scores


def _decisions(scores: np.ndarray, thresholds: Any, *, shape: tuple[int, int]) -> np.ndarray:
    """(N, A) bool: score >= the attribute's threshold (0.5 by default)."""
    scores = _check_scores(scores, shape=shape)
    if scores.dtype == bool:
        if thresholds is not None:
            raise ValueError("thresholds were given but scores are already bool decisions")
        return scores
    thr = np.asarray(0.5 if thresholds is None else thresholds, dtype=np.float64)
    if thr.ndim == 0:
        thr = np.full(shape[1], float(thr))
    if thr.shape != (shape[1],):
        raise ValueError(f"thresholds must be a scalar or one per attribute ({shape[1]},), got shape {thr.shape}")
    if not np.all(np.isfinite(thr)):
        raise ValueError(f"thresholds must be finite, got {thr.tolist()}")
    return scores >= thr[None, :]


def _json_number(value: Any) -> float | int | None:
    if isinstance(value, (int, np.integer)):
        return int(value)
    value = float(value)
    return None if math.isnan(value) else value

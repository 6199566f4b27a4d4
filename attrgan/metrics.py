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
percentile bootstrap interval over crops; `GainInterval.verdict` says "helps" only when the whole
interval lies above 0. Image fidelity (`squared_error`, `psnr`): PSNR of uint8 images over
selected rows, pooled over every compared value.

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
    resamples and level (e.g. 0.95) say how the interval was drawn. `per_attribute` is indexed by
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
                "crops": self.crops, "resamples": self.resamples, "level": self.level, "verdict": self.verdict,
                "per_attribute": table}


# Weights held at once by paired_bootstrap_gain (resamples × crops): 32 MiB of float64.
_BOOTSTRAP_CELLS = 1 << 22


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
    """
    if isinstance(resamples, bool) or not isinstance(resamples, (int, np.integer)) or resamples < 1:
        raise ValueError(f"resamples must be an integer >= 1, got {resamples!r}")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level!r}")
    attrs = tuple(attributes)
    m_before = attribute_metrics(labels, before, attributes=attrs, thresholds=thresholds)
    m_after = attribute_metrics(labels, after, attributes=attrs, thresholds=thresholds)
    known, positive = _check_labels(labels)
    n, a = known.shape
    per_gain = m_after.per_attribute["ma"].to_numpy() - m_before.per_attribute["ma"].to_numpy()
    gains = np.full(resamples, np.nan)
    per = np.full((resamples, a), np.nan)

    if n:
        negative = known & ~positive
        pred_before = _decisions(before, thresholds, shape=(n, a))
        pred_after = _decisions(after, thresholds, shape=(n, a))
        # What each crop adds to attribute_metrics' counts pos, neg, TP and TN of both variants:
        # a resample's counts are then its crop weights times these, one matrix product.
        cells = np.concatenate([positive, negative, pred_before & positive, ~pred_before & negative,
                                pred_after & positive, ~pred_after & negative], axis=1).astype(np.float64)  # (N, 6A)
        rng = np.random.default_rng(seed)
        chunk = max(1, _BOOTSTRAP_CELLS // n)
        for start in range(0, resamples, chunk):
            b = min(chunk, resamples - start)
            rows = rng.integers(0, n, size=(b, n))
            # How often each resample drew each crop, (b, N).
            weights = np.bincount((rows + n * np.arange(b)[:, None]).ravel(), minlength=b * n).reshape(b, n)
            counts = (weights.astype(np.float64) @ cells).reshape(b, 6, a)
            ma_before = _balanced_accuracy(counts[:, 2], counts[:, 0], counts[:, 3], counts[:, 1])  # (b, A)
            ma_after = _balanced_accuracy(counts[:, 4], counts[:, 0], counts[:, 5], counts[:, 1])
            per[start:start + b] = ma_after - ma_before
            gains[start:start + b] = _mean_accuracy(ma_after) - _mean_accuracy(ma_before)

    q = (50.0 * (1.0 - level), 50.0 * (1.0 + level))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN: nothing measured, NaN is the answer
        low, high = np.nanpercentile(gains, q)
        per_low, per_high = np.nanpercentile(per, q, axis=0)
    per_attribute = pd.DataFrame({"gain": per_gain, "low": per_low, "high": per_high},
                                 index=pd.Index(attrs, name="attribute"))
    return GainInterval(gain=m_after.ma - m_before.ma, low=float(low), high=float(high), crops=n,
                        resamples=resamples, level=float(level), per_attribute=per_attribute)


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

"""Metrics against hand-computed values (RAP protocol, DESIGN.md "Metric definitions")."""

from __future__ import annotations

import json
import math
import time

import numpy as np
import pytest

from attrgan.metrics import (attribute_metrics, calibrate_thresholds, default_threshold_grid, paired_bootstrap_gain,
                             psnr, squared_error)

ATTRS = ("a", "b", "c")
# Row 3 is all unknown; -1 cells must never count, whatever the score.
LABELS = np.array([[1, 0, -1], [0, 1, 1], [1, -1, 0], [-1, -1, -1]], dtype=np.int8)
SCORES = np.array([[0.9, 0.6, 0.9], [0.2, 0.4, 0.7], [0.4, 0.9, 0.1], [0.9, 0.9, 0.9]])


def test_hand_computed_case():
    m = attribute_metrics(LABELS, SCORES, attributes=ATTRS)
    t = m.per_attribute
    # a: labels 1,0,1 / decisions 1,0,0 -> TP 1 FN 1 TN 1 FP 0.
    assert t.loc["a", "ma"] == pytest.approx(0.75)
    assert t.loc["a", "accuracy"] == pytest.approx(2 / 3)
    assert t.loc["a", "precision"] == pytest.approx(1.0)
    assert t.loc["a", "recall"] == pytest.approx(0.5)
    assert t.loc["a", "f1"] == pytest.approx(2 / 3)
    # b: labels 0,1 / decisions 1,0 -> everything wrong.
    assert t.loc["b"].tolist()[:5] == [0.0, 0.0, 0.0, 0.0, 0.0]
    # c: labels 1,0 / decisions 1,0 -> everything right.
    assert t.loc["c", "ma"] == 1.0 and t.loc["c", "f1"] == 1.0
    assert t["positives"].tolist() == [2, 1, 1] and t["support"].tolist() == [3, 2, 2]
    assert list(t.index) == list(ATTRS)
    assert m.ma == pytest.approx(1.75 / 3)
    # Samples: (acc, prec, rec) = (1/2, 1/2, 1), (1/2, 1, 1/2), (0, 0, 0); the all-unknown row is left out.
    assert m.accuracy == pytest.approx(1 / 3)
    assert m.precision == pytest.approx(0.5)
    assert m.recall == pytest.approx(0.5)
    assert m.f1 == pytest.approx(0.5)


def test_per_attribute_thresholds():
    m = attribute_metrics(LABELS, SCORES, attributes=ATTRS, thresholds=[0.3, 0.5, 0.95])
    # a now decides 1,0,1 (perfect); c decides 0,0 (pos recall 0, neg recall 1).
    assert m.per_attribute["ma"].tolist() == pytest.approx([1.0, 0.0, 0.5])
    assert m.ma == pytest.approx(0.5)
    # A scalar threshold applies to every attribute.
    scalar = attribute_metrics(LABELS, SCORES, attributes=ATTRS, thresholds=0.95)
    assert scalar.per_attribute["ma"].tolist() == pytest.approx([0.5, 0.5, 0.5])


def test_attribute_without_positives_uses_negative_recall_only():
    labels = np.array([[0, -1], [0, -1], [-1, -1]])
    scores = np.array([[0.6, 0.9], [0.1, 0.1], [0.9, 0.9]])
    m = attribute_metrics(labels, scores, attributes=["no_pos", "unknown"])
    assert m.per_attribute.loc["no_pos", "ma"] == pytest.approx(0.5)  # TN 1 of 2, no pos recall
    assert m.per_attribute.loc["no_pos", "recall"] == 0.0 and m.per_attribute.loc["no_pos", "precision"] == 0.0
    assert math.isnan(m.per_attribute.loc["unknown", "ma"])
    assert m.per_attribute.loc["unknown", "support"] == 0
    assert m.ma == pytest.approx(0.5)  # the attribute with no known label is left out


def test_empty_labels_and_empty_predictions_score_zero():
    # No positive label and no positive decision: every ratio has a zero denominator -> 0.
    m = attribute_metrics(np.array([[0, 0]]), np.array([[0.1, 0.2]]), attributes=["x", "y"])
    assert (m.accuracy, m.precision, m.recall, m.f1) == (0.0, 0.0, 0.0, 0.0)
    assert m.ma == 1.0  # both attributes: negative recall 1
    # Positives labelled, nothing predicted: recall 0, precision 0 (empty P).
    m = attribute_metrics(np.array([[1, 1, 0]]), np.zeros((1, 3)), attributes=["x", "y", "z"])
    assert (m.accuracy, m.precision, m.recall, m.f1) == (0.0, 0.0, 0.0, 0.0)
    assert m.ma == pytest.approx(1 / 3)  # x, y: positive recall 0 alone; z: negative recall 1


def test_all_unknown_or_no_samples_is_nan():
    for labels in (np.full((2, 2), -1), np.zeros((0, 2), dtype=np.int8)):
        m = attribute_metrics(labels, np.zeros(labels.shape), attributes=["x", "y"])
        assert all(math.isnan(v) for v in (m.ma, m.accuracy, m.precision, m.recall, m.f1))
        d = m.to_dict()
        assert d["ma"] is None and d["per_attribute"]["x"]["support"] == 0


def test_bool_decisions_match_scores():
    from_scores = attribute_metrics(LABELS, SCORES, attributes=ATTRS)
    from_bools = attribute_metrics(LABELS, SCORES >= 0.5, attributes=ATTRS)
    assert from_bools.to_dict() == from_scores.to_dict()
    with pytest.raises(ValueError, match="already bool"):
        attribute_metrics(LABELS, SCORES >= 0.5, attributes=ATTRS, thresholds=0.3)


def test_to_dict_is_json():
    d = attribute_metrics(LABELS, SCORES, attributes=ATTRS).to_dict()
    back = json.loads(json.dumps(d))
    assert back["ma"] == pytest.approx(1.75 / 3)
    assert back["per_attribute"]["a"] == {
        "ma": 0.75, "accuracy": pytest.approx(2 / 3), "precision": 1.0, "recall": 0.5,
        "f1": pytest.approx(2 / 3), "positives": 2, "support": 3,
    }
    assert isinstance(back["per_attribute"]["a"]["positives"], int)


@pytest.mark.parametrize(
    ("labels", "scores", "kwargs", "match"),
    [
        (np.array([1, 0]), np.array([0.1, 0.2]), {}, "2-D"),
        (np.array([[1, 2]]), np.array([[0.1, 0.2]]), {}, r"got values \[2\]"),
        (np.array([[1, 0]]), np.array([[0.1, 0.2, 0.3]]), {}, "labels' shape"),
        (np.array([[1, 0]]), np.array([[0.1, np.nan]]), {}, "NaN"),
        (np.array([[1, 0]]), np.array([[0.1, 0.2]]), {"thresholds": [0.5, 0.5, 0.5]}, "one per attribute"),
        (np.array([[1, 0]]), np.array([[0.1, 0.2]]), {"attributes": ["x"]}, "2 label columns"),
        (np.array([["1", "0"]]), np.array([[0.1, 0.2]]), {}, "dtype"),
    ],
)
def test_bad_input(labels, scores, kwargs, match):
    kwargs = {"attributes": ["x", "y"], **kwargs}
    with pytest.raises(ValueError, match=match):
        attribute_metrics(labels, scores, **kwargs)


def test_calibration_finds_obvious_thresholds():
    neg, pos = [0.1, 0.2, 0.3, 0.62], [0.71, 0.8, 0.9]
    labels = np.array([
        [0] * 4 + [1] * 3,       # separable at any t in (0.62, 0.71]
        [1, 1, 0, 0, -1, -1, -1],  # positives score low, negatives high
        [-1] * 7,                # nothing known
    ]).T
    scores = np.array([
        neg + pos,
        [0.1, 0.2, 0.8, 0.9, 0.5, 0.5, 0.5],
        [0.3] * 7,
    ]).T
    ma = calibrate_thresholds(labels, scores, objective="ma")
    # Attribute 0: 0.63..0.71 all perfect, 0.63 is closest to 0.5.
    # Attribute 1: balanced accuracy 0.5 for t <= 0.10 or t > 0.90, 0 in between; 0.10 is closest.
    # Attribute 2: every candidate ties -> 0.5.
    assert ma.tolist() == pytest.approx([0.63, 0.10, 0.5])
    f1 = calibrate_thresholds(labels, scores, objective="f1")
    # F1 of attribute 1 peaks (2/3) by calling everything positive: any t <= 0.10 -> 0.10.
    assert f1.tolist() == pytest.approx([0.63, 0.10, 0.5])
    calibrated = attribute_metrics(labels[:, :1], scores[:, :1], attributes=["x"], thresholds=ma[:1])
    assert calibrated.ma == 1.0 and calibrated.per_attribute.loc["x", "f1"] == 1.0
    # Equidistant ties go to the smaller candidate.
    assert calibrate_thresholds(np.full((2, 1), -1), np.zeros((2, 1)), grid=[0.6, 0.4]).tolist() == [0.4]


@pytest.mark.parametrize("objective", ["ma", "f1"])
def test_calibration_maximises_the_objective(objective):
    rng = np.random.default_rng(0)
    labels = rng.choice([-1, 0, 1], size=(300, 4), p=[0.1, 0.6, 0.3])
    scores = np.clip(0.35 * (labels == 1) + rng.uniform(0, 0.65, size=labels.shape), 0, 1)
    grid = np.round(np.arange(0.05, 1.0, 0.05), 2)
    best = calibrate_thresholds(labels, scores, objective=objective, grid=grid)
    attrs = ["w", "x", "y", "z"]
    per_t = np.stack([
        attribute_metrics(labels, scores, attributes=attrs, thresholds=t).per_attribute[objective].to_numpy()
        for t in grid
    ])  # (G, A), brute force
    chosen = attribute_metrics(labels, scores, attributes=attrs, thresholds=best).per_attribute[objective]
    np.testing.assert_allclose(chosen.to_numpy(), per_t.max(axis=0))


def test_calibration_bad_arguments():
    with pytest.raises(ValueError, match="objective"):
        calibrate_thresholds(LABELS, SCORES, objective="accuracy")
    with pytest.raises(ValueError, match="grid"):
        calibrate_thresholds(LABELS, SCORES, grid=[])


def test_default_grid():
    grid = default_threshold_grid()
    assert grid.size == 99 and grid[0] == 0.01 and grid[-1] == 0.99 and 0.5 in grid


def test_large_input_is_fast():
    rng = np.random.default_rng(1)
    labels = rng.choice(np.array([-1, 0, 1], dtype=np.int8), size=(100_000, 52), p=[0.05, 0.7, 0.25])
    scores = rng.random((100_000, 52), dtype=np.float32)
    start = time.perf_counter()
    m = attribute_metrics(labels, scores, attributes=[f"a{i}" for i in range(52)])
    thresholds = calibrate_thresholds(labels, scores)
    elapsed = time.perf_counter() - start
    assert elapsed < 5.0
    # Random scores: every attribute's balanced accuracy is close to chance.
    assert abs(m.ma - 0.5) < 0.01 and thresholds.shape == (52,)


# --- paired bootstrap of mA gains ---------------------------------------------------------------


CASE_ATTRS = ("a", "b", "c")


def _restoration_case():
    """200 crops, 3 attributes. Attribute "a": crops 0-99 positive; "b": even crops positive; "c":
    unknown everywhere. `after` decides every known cell right; `before` is wrong on every fifth
    crop (20 of each class of a and b), so mA(before) = (0.8 + 0.8) / 2 and the gain is 0.2."""
    n = 200
    i = np.arange(n)
    labels = np.stack([(i < 100).astype(np.int8), (i % 2 == 0).astype(np.int8), np.full(n, -1, np.int8)], axis=1)
    truth = (labels == 1).astype(np.float64)
    after = 0.1 + 0.8 * truth  # 0.9 for positives, 0.1 for negatives
    before = after.copy()
    before[i % 5 == 0, :2] = 1.0 - before[i % 5 == 0, :2]  # the crops restoration fixes
    return labels, before, after


def test_bootstrap_gain_is_the_exact_ma_difference_and_its_interval_lies_above_zero():
    labels, before, after = _restoration_case()
    attrs = CASE_ATTRS
    g = paired_bootstrap_gain(labels, before, after, attributes=attrs, thresholds=0.5, resamples=500, seed=1)
    exact = (attribute_metrics(labels, after, attributes=attrs).ma
             - attribute_metrics(labels, before, attributes=attrs).ma)
    assert g.gain == exact == pytest.approx(0.2)
    assert 0 < g.low <= g.gain <= g.high < 0.4
    assert g.verdict == "helps" and (g.crops, g.resamples, g.level) == (200, 500, 0.95)
    t = g.per_attribute
    assert list(t.index) == list(attrs) and list(t.columns) == ["gain", "low", "high"]
    assert t.loc["a", "gain"] == pytest.approx(0.2) and t.loc["a", "low"] > 0
    assert t.loc[["c"]].isna().all(axis=None)  # no known label: no gain, no interval

    d = json.loads(json.dumps(g.to_dict()))
    assert d["gain"] == pytest.approx(0.2) and d["verdict"] == "helps" and d["crops"] == 200
    assert d["per_attribute"]["c"] == {"gain": None, "low": None, "high": None}
    assert d["per_attribute"]["a"]["low"] == pytest.approx(t.loc["a", "low"])


def test_bootstrap_no_change_and_a_worse_restoration():
    labels, before, after = _restoration_case()
    same = paired_bootstrap_gain(labels, before, before, attributes=CASE_ATTRS, resamples=200)
    assert (same.gain, same.low, same.high) == (0.0, 0.0, 0.0)  # paired: every resample cancels
    assert same.verdict == "no measurable effect"
    worse = paired_bootstrap_gain(labels, after, before, attributes=CASE_ATTRS, resamples=200)
    assert worse.gain == pytest.approx(-0.2) and worse.high < 0 and worse.verdict == "hurts"


def test_bootstrap_is_seeded():
    labels, before, after = _restoration_case()
    runs = [paired_bootstrap_gain(labels, before, after, attributes=CASE_ATTRS, resamples=300, seed=s).to_dict()
            for s in (4, 4, 5)]
    assert runs[0] == runs[1]
    assert (runs[0]["low"], runs[0]["high"]) != (runs[2]["low"], runs[2]["high"])


def test_bootstrap_resamples_score_like_attribute_metrics():
    """Each resample is attribute_metrics on the drawn rows, rare classes included: an attribute
    whose single positive is not drawn is scored by its negative recall alone. Replays the draws
    (`default_rng(seed).integers(0, N, (resamples, N))`) with attribute_metrics itself."""
    rng = np.random.default_rng(2)
    n, attrs, thresholds = 30, ("a", "b", "c", "d"), [0.3, 0.5, 0.6, 0.5]
    labels = rng.choice(np.array([-1, 0, 1], np.int8), size=(n, 4), p=[0.3, 0.6, 0.1])
    labels[:, 3] = 0
    labels[7, 3] = 1  # one positive only
    before, after = rng.random((n, 4)), rng.random((n, 4))
    g = paired_bootstrap_gain(labels, before, after, attributes=attrs, thresholds=thresholds, resamples=100, seed=9)
    draws = np.random.default_rng(9).integers(0, n, size=(100, n))
    gains = [attribute_metrics(labels[r], after[r], attributes=attrs, thresholds=thresholds).ma
             - attribute_metrics(labels[r], before[r], attributes=attrs, thresholds=thresholds).ma for r in draws]
    assert (g.low, g.high) == pytest.approx(tuple(np.percentile(gains, [2.5, 97.5])))


def test_bootstrap_edge_cases_and_bad_arguments():
    empty = paired_bootstrap_gain(np.zeros((0, 2), np.int8), np.zeros((0, 2)), np.zeros((0, 2)), attributes=("x", "y"))
    assert empty.crops == 0 and math.isnan(empty.gain) and math.isnan(empty.low)
    assert empty.verdict == "no measurable effect" and empty.to_dict()["low"] is None
    labels, before, after = _restoration_case()
    with pytest.raises(ValueError, match="resamples must be an integer >= 1, got 0"):
        paired_bootstrap_gain(labels, before, after, attributes=CASE_ATTRS, resamples=0)
    with pytest.raises(ValueError, match=r"level must be in \(0, 1\), got 1"):
        paired_bootstrap_gain(labels, before, after, attributes=CASE_ATTRS, level=1)
    with pytest.raises(ValueError, match="labels' shape"):
        paired_bootstrap_gain(labels, before, after[:5], attributes=CASE_ATTRS)


def test_bootstrap_is_fast():
    rng = np.random.default_rng(3)
    labels = rng.choice(np.array([-1, 0, 1], np.int8), size=(1000, 16), p=[0.05, 0.7, 0.25])
    before = rng.random((1000, 16))
    after = np.clip(before + 0.05 * (labels == 1) - 0.05 * (labels == 0), 0, 1)
    start = time.perf_counter()
    g = paired_bootstrap_gain(labels, before, after, attributes=[f"a{i}" for i in range(16)], resamples=1000)
    assert time.perf_counter() - start < 1.0
    assert g.verdict == "helps"


# --- PSNR ------------------------------------------------------------------------------------------


def test_psnr_of_selected_rows():
    a = np.zeros((2, 4, 3, 3), np.uint8)
    b = a.copy()
    b[:, 2:] = 10  # the bottom two rows differ by 10
    b[1, 0] = 255  # a changed row that is not selected
    rows = np.array([[False, True, True, False], [False, False, True, True]])
    sse, count = squared_error(a, b, rows)
    # Selected: image 0 rows 1 (0) and 2 (10); image 1 rows 2, 3 (10): 3 rows of 10 of 4 rows · 9 values.
    assert (sse, count) == (3 * 9 * 100.0, 4 * 9)
    assert psnr(sse, count) == pytest.approx(10 * math.log10(255**2 / 75.0))
    assert psnr(0.0, count) == math.inf and math.isnan(psnr(0.0, 0))
    with pytest.raises(ValueError, match="rows must be"):
        squared_error(a, b, rows[:, :3])

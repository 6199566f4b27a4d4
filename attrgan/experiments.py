"""The paper's experiments (§4, Tables 1 and 2) as data and their metrics, over scored crops.

The evaluation job (`attrgan.evaluate`) scores each crop of three sets (clean, occluded, low-res)
three ways (VARIANTS); an experiment is one set (or two merged) under one variant, and a
comparison of Table 2 is the mA gain between two experiments on the same crops. Plain numpy and
pandas: no Ray, no torch.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from attrgan.attributes import OCCLUSION_DOWN
from attrgan.metrics import AttributeMetrics, GainInterval, attribute_metrics, paired_bootstrap_gain

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
        y, scores = _set_rows(predictions, labels, sets, (variant,), attributes=attributes,
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
    equal `experiment_metrics`' mA differences exactly (same rows, same order).
    """
    cols = [list(model_attributes).index(a) for a in attributes]
    experiments = {key: (sets, variant) for key, _, sets, variant in EXPERIMENTS}
    out: dict[str, GainInterval] = {}
    for name, before, after in COMPARISONS:
        (sets, v_before), (after_sets, v_after) = experiments[before], experiments[after]
        if sets != after_sets:  # a comparison across different crops would not be paired
            raise ValueError(f"comparison {name!r} compares sets {sets} with {after_sets}; it needs the same crops")
        y, scores = _set_rows(predictions, labels, sets, (v_before, v_after), attributes=attributes,
                              model_attributes=model_attributes)
        out[name] = paired_bootstrap_gain(y, scores[v_before], scores[v_after], attributes=tuple(attributes),
                                          thresholds=np.asarray(thresholds)[cols], resamples=resamples, seed=seed)
    return out


def _set_rows(predictions: pd.DataFrame, labels: Mapping[str, pd.DataFrame], sets: Sequence[str],
              variants: Sequence[str], *, attributes: Sequence[str],
              model_attributes: Sequence[str]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The readable crops of `sets`, in set then prediction order: their labels (n, len(attributes))
    int8, looked up by crop_id, and per variant their (n, len(attributes)) scores. One row per
    crop, so the variants' rows pair by crop_id."""
    cols = [list(model_attributes).index(a) for a in attributes]
    ok = predictions[predictions["status"] == "ok"]
    y_parts: list[np.ndarray] = []
    s_parts: dict[str, list[np.ndarray]] = {v: [] for v in variants}
    for s in sets:
        rows = ok[ok["eval_set"] == s]
        y_parts.append(labels[s].loc[rows["crop_id"].to_numpy(), list(attributes)].to_numpy(np.int8))
        for v in variants:
            s_parts[v].append(stack_scores(rows[v], len(model_attributes))[:, cols])
    return np.concatenate(y_parts), {v: np.concatenate(parts) for v, parts in s_parts.items()}


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

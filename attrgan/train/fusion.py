"""Fitting a bundle's track fusion (`attrgan.fusion.Fusion`) on the validation split's tracks.

`fit_fusion` turns the validation crops into mixed tracks: each frame is taken clean, behind a
passer-by or at low resolution as `attrgan.corrupt.track_conditions` picks it (the corrupted copies
built as `attrgan.train.gain.corrupted_inputs` builds a generator's test set), and the complete
pipeline scores them as extraction would (the bundle's restorations, gated by their stored gains).
Per crop that gives the scores of the person-level attributes and the quality features
(`attrgan.fusion.quality_features`: first-pass occlusion score, crop height the pipeline saw,
super-resolved, reconstructed).

The fit (`choose_fusion`, on arrays):

- coefficients c (one per QUALITY_FEATURES, shared by all person-level attributes): minimise the
  balanced binary cross-entropy of each track's quality-weighted mean score against the person's
  label (per attribute, its positive and its negative cells weigh half each, as mA counts them),
  over every person-level attribute with a known label, plus L2 · |c|², by L-BFGS (scipy) on its
  exact gradient (a few ms for hundreds of tracks);
- each rule (mean, quality and best with c, max) is scored by per-track mA
  (`attrgan.metrics.attribute_metrics`, the bundle's thresholds). Quality and best are scored
  cross-fitted: each of FOLDS folds of the tracks is fused with the c fitted on the other folds,
  so a rule is never scored on the tracks its c was fitted on;
- the choice: mean, unless another rule's paired bootstrap interval of its mA gain over mean
  (`attrgan.metrics.paired_bootstrap_gain` over tracks, RESAMPLES resamples, 95 %) lies wholly
  above 0; of the rules that clear it, the one of highest mA. The stored c is the one fitted on
  every track (the mean rule ignores it; it still picks each track's best crop).

A track's label for an attribute is the one all its crops' known labels agree on (unknown when
none is known or they disagree). Crops without a track_id are left out; with fewer than
MIN_TRACKS tracks nothing is fitted: `Fusion()` with `fitted = {"reason": ...}`.

numpy and scipy (and the pipeline's PyTorch), no Ray: `attrgan.train.ray_train` runs `fit_fusion` in a Ray task once the
bundle holds all three networks.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from attrgan.fusion import RULES, Fusion, crop_weights, fuse, quality_features, track_labels

if TYPE_CHECKING:
    from attrgan.bundle import Bundle
    from attrgan.pipeline import PipelineConfig

MIN_TRACKS = 10  # fewer validation tracks than this: the plain mean, nothing fitted
FOLDS = 5
L2 = 1e-3  # on |c|², beside a loss of ~0.1-0.7 per cell: keeps c finite when a feature never varies
RESAMPLES = 1000
_MAX_ITER = 200
_EPS = 1e-6  # scores and fused scores are kept in [_EPS, 1 - _EPS]: the log stays finite


def fit_coefficients(scores: np.ndarray, features: np.ndarray, groups: np.ndarray, labels: np.ndarray, *,
                     l2: float = L2) -> np.ndarray:
    """(F,) quality coefficients c: minimise the balanced BCE of each track's exp(c·f)-weighted mean
    score against its label, plus l2 · |c|² (module docstring), by L-BFGS on the exact gradient.

    scores (N, A) per crop; features (N, F); groups (N,) the track of each crop in [0, T);
    labels (T, A) per track in {1, 0, -1}. No known label: c = 0.
    """
    from scipy.optimize import minimize

    scores = np.clip(np.asarray(scores, np.float64), _EPS, 1 - _EPS)
    features = np.asarray(features, np.float64)
    n_groups = labels.shape[0]
    known, positive = labels >= 0, labels == 1
    # Each attribute's positives and negatives weigh half, the attributes alike (as mA counts them).
    pos_n, neg_n = positive.sum(0), (known & ~positive).sum(0)
    cell = np.where(positive, 0.5 / np.maximum(pos_n, 1), 0.5 / np.maximum(neg_n, 1)) * known
    if cell.sum() == 0:
        return np.zeros(features.shape[1])
    cell /= cell.sum()

    def loss_and_gradient(c: np.ndarray) -> tuple[float, np.ndarray]:
        z = features @ c
        w = np.exp(z - z.max())  # the shift cancels in each track's weighted mean
        total = np.maximum(np.bincount(groups, weights=w, minlength=n_groups), 1e-300)
        share = w / total[groups]  # each crop's weight within its track
        p = np.zeros((n_groups, scores.shape[1]))
        np.add.at(p, groups, share[:, None] * scores)
        p = np.clip(p, _EPS, 1 - _EPS)
        loss = -(cell * np.where(positive, np.log(p), np.log1p(-p))).sum() + l2 * c @ c
        # d loss / d p per cell, then d p_t / d c = sum over the track's crops of share_i (s_i - p_t) f_i
        dp = cell * (p - positive) / (p * (1 - p))
        per_crop = share * ((scores - p[groups]) * dp[groups]).sum(axis=1)
        return float(loss), features.T @ per_crop + 2 * l2 * c

    found = minimize(loss_and_gradient, np.zeros(features.shape[1]), jac=True, method="L-BFGS-B",
                     options={"maxiter": _MAX_ITER})
    return found.x if np.all(np.isfinite(found.x)) else np.zeros(features.shape[1])


def choose_fusion(scores: np.ndarray, features: np.ndarray, groups: np.ndarray, labels: np.ndarray, *,
                  attributes: Sequence[str], thresholds: np.ndarray, seed: int = 0, folds: int = FOLDS,
                  resamples: int = RESAMPLES) -> Fusion:
    """The fitted `Fusion` of tracks given as arrays (module docstring: c, the cross-fitted mA per
    rule, the choice). scores (N, A) of `attributes` per crop; features (N, len(QUALITY_FEATURES));
    groups (N,) in [0, T), every track holding a crop; labels (T, A) per track; thresholds (A,).
    fitted: {"tracks", "crops", "ma": {rule: mA}, "gain_over_mean": {rule: {gain, low, high}},
    "chosen", "seed", "folds"}."""
    from attrgan.metrics import attribute_metrics, paired_bootstrap_gain

    scores, features = np.asarray(scores, np.float64), np.asarray(features, np.float64)
    groups, labels = np.asarray(groups, np.int64), np.asarray(labels)
    n_groups = labels.shape[0]
    coefficients = fit_coefficients(scores, features, groups, labels)
    fused = {rule: fuse(scores, np.ones(len(groups)), groups, n_groups, rule) for rule in ("mean", "max")}
    fold = np.random.default_rng(seed).permutation(n_groups) % max(1, min(folds, n_groups))
    for rule in ("quality", "best"):
        fused[rule] = np.full_like(fused["mean"], np.nan)
    for k in np.unique(fold):
        held = fold[groups] == k
        c = fit_coefficients(scores[~held], features[~held], groups[~held], np.where((fold != k)[:, None], labels, -1))
        weights = crop_weights(features[held], c)
        for rule in ("quality", "best"):
            part = fuse(scores[held], weights, groups[held], n_groups, rule)
            fused[rule][fold == k] = part[fold == k]
    attrs = tuple(attributes)
    ma = {rule: attribute_metrics(labels, fused[rule], attributes=attrs, thresholds=thresholds).ma for rule in RULES}
    gains = {}
    for rule in RULES[1:]:
        interval = paired_bootstrap_gain(labels, fused["mean"], fused[rule], attributes=attrs, thresholds=thresholds,
                                         resamples=resamples, seed=seed)
        gains[rule] = {"gain": interval.gain, "low": interval.low, "high": interval.high}
    proven = [rule for rule in gains if gains[rule]["low"] > 0]
    chosen = max(proven, key=lambda rule: ma[rule]) if proven else "mean"
    fitted = {"tracks": int(n_groups), "crops": int(len(groups)), "ma": ma, "gain_over_mean": gains,
              "chosen": chosen, "seed": seed, "folds": int(fold.max() + 1) if n_groups else 0}
    return Fusion(chosen, tuple(float(c) for c in coefficients), fitted=fitted)


def fit_fusion(bundle: Bundle, images: np.ndarray, labels: np.ndarray, crop_sizes: np.ndarray,
               track_ids: Sequence[str | None], frame_index: Sequence[int | None] | np.ndarray, *,
               attributes: tuple[str, ...], config: PipelineConfig | None = None, seed: int = 0,
               split: str = "val") -> Fusion:
    """The `Fusion` a bundle stores, fitted on validation crops as mixed tracks (module docstring).

    images (N, H, W, 3) uint8 clean crops at the classifier size; labels (N, len(attributes)) int8;
    crop_sizes (N, 2) stored (height, width); track_ids (N,) None for a crop without a track;
    frame_index (N,) the frame order within a track (None where unknown). Fits over the bundle's
    person-level attributes among `attributes`. fitted also holds "split", "conditions" (crops per
    clean / occluded / lowres) and "bundle_version"; `Fusion()` with fitted {"reason"} when there is
    nothing to fit on.
    """
    from attrgan.corrupt import TRACK_CONDITIONS, track_conditions
    from attrgan.pipeline import Pipeline, PipelineConfig
    from attrgan.train.gain import corrupted_inputs, pipeline_outputs

    ids = np.asarray([None if t is None else str(t) for t in track_ids], object)
    has_track = np.asarray([t is not None for t in ids], bool)
    n_tracks = len(set(ids[has_track]))
    person = [a for a in bundle.info.person_level if a in attributes]
    reason = (f"{n_tracks} validation track(s), fewer than {MIN_TRACKS}" if n_tracks < MIN_TRACKS
              else "no person-level attribute has validation labels" if not person else None)
    if reason:
        return Fusion(fitted={"reason": reason, "split": split, "tracks": n_tracks, "crops": int(has_track.sum())})

    keep = np.flatnonzero(has_track)
    images, crop_sizes = np.asarray(images)[keep], np.asarray(crop_sizes)[keep]
    frames = list(np.asarray(frame_index, object)[keep])
    heights = crop_sizes[:, 0].astype(np.int64)
    conditions = track_conditions(list(ids[keep]), frames, heights, seed=seed)
    inputs = images.copy()
    rng = np.random.default_rng(seed)
    for kind, condition in (("reconstruction", "occluded"), ("superres", "lowres")):
        chosen = conditions == condition
        if chosen.any():
            inputs[chosen], heights[chosen] = corrupted_inputs(kind, images[chosen], crop_sizes[chosen], rng)
    out = pipeline_outputs(Pipeline(bundle, config or PipelineConfig()), inputs, heights)

    model_attributes = tuple(bundle.attributes)
    cols = [model_attributes.index(a) for a in person]
    _, groups = np.unique(ids[keep].astype(str), return_inverse=True)
    features = quality_features(out["occlusion_score"], heights, out["super_resolved"], out["reconstructed"])
    per_track = track_labels(np.asarray(labels)[keep][:, [attributes.index(a) for a in person]], groups, n_tracks)
    fusion = choose_fusion(out["scores"][:, cols], features, groups, per_track, attributes=person,
                           thresholds=np.asarray(bundle.thresholds, np.float64)[cols], seed=seed)
    fitted: dict[str, Any] = {"split": split, **fusion.fitted,
                              "conditions": {c: int((conditions == c).sum()) for c in TRACK_CONDITIONS},
                              "bundle_version": str(bundle.version)}
    return Fusion(fusion.rule, fusion.coefficients, fitted=fitted)


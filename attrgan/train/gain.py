"""A generator's measured effect on its bundle's classifier: what makes a restoration proven or off.

When a generator is trained into a bundle, `measure_gain` scores the validation split's crops,
corrupted the way that generator's test set is (occluded for G^R, ×4 low resolution for G^S),
by the bundle's classifier twice: on the corrupted input and after the generator restored it.
The paired mA gain with its bootstrap interval (`attrgan.metrics.paired_bootstrap_gain`) goes
into the generator's config.json under GAIN_KEY:

    {"split": "val", "crops": 500, "tracks": 62, "gain_ma": 0.0183, "low": 0.0071, "high": 0.0290,
     "level": 0.95, "resamples": 1000, "seed": 0, "classifier_version": "3f2a...",
     "ma_before": 0.5512, "ma_after": 0.5695}

`attrgan.contracts.BundleInfo.restorations` reads it back: the gate of extraction, prediction and
evaluation (`attrgan.contracts.proven`). `regate` measures them again after a bundle's classifier
was swapped for another (the gains are the classifier's as much as the generator's).

With `TrainConfig.select_epoch = "best_gain"` training measures every epoch's generator the same
way and keeps the epoch `best_epoch` picks (`keep_best`); its record then also names the epoch:
`{..., "epoch": 2, "selected_by": "best_gain"}`.

G^R's record also holds the occlusion threshold calibrated on the complete pipeline's validation mA
(`calibrate_occlusion`, the same crops clean and occluded): a false alarm costs a clean crop what
a miss costs an occluded one, which detection F1 does not weigh. With
`PipelineConfig.calibrated_occlusion` the pipeline reconstructs from it
(`attrgan.contracts.BundleInfo.occlusion_threshold`).

Plain PyTorch and numpy, no Ray: `attrgan.train.ray_train` runs `measure_gain` in a Ray task.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from attrgan.attributes import OCCLUSION_DOWN
from attrgan.contracts import GENERATORS

if TYPE_CHECKING:
    from attrgan.bundle import Bundle
    from attrgan.pipeline import Pipeline, PipelineConfig

_BATCH = 64  # crops per pipeline call: bounds the activations held at once
# An attribute enters a gain only when its positive and its negative crops each come from at least
# this many tracks (crops, when they come in none). With fewer, a resample often draws none of its
# positives, the attribute is then scored by its negative recall alone, and the interval is skewed
# far from the point: on the demo's validation crops one attribute with a single positive track
# put the interval at -1.85 to +4.14 around a gain of +0.12 (docs/demo.md "The gate's interval").
# Five tracks leave a resample without them less than 1 % of the time (e^-5).
MIN_TRACKS = 5
# Occlusion draws a G^R gain is measured over: which donor hides a crop, and how much of it, moved
# the demo's validation gain with a standard deviation of 0.85 mA over 5 draws (+0.12 to -1.72).
OCCLUSION_DRAWS = 3


def corrupted_inputs(kind: str, images: np.ndarray, crop_sizes: np.ndarray,
                     rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """The validation crops as the pipeline sees them once corrupted for `kind`'s test set.

    images (N, H, W, 3) uint8 clean crops at the classifier size; crop_sizes (N, 2) their stored
    (height, width). "reconstruction": the bottom 50-80 % of each crop covered by another crop's
    upper body (`attrgan.corrupt.occlude_batch`), heights unchanged. "superres": each crop's ×4
    downsample of its stored size, brought back up to (H, W) as the decoder would; heights / 4.
    Returns (images (N, H, W, 3) uint8, crop heights (N,) int64).
    """
    from attrgan.corrupt import lowres_view, occlude_batch

    heights = crop_sizes[:, 0].astype(np.int64)
    if kind == "reconstruction":
        return occlude_batch(images, rng), heights
    if kind == "superres":
        low = np.stack([lowres_view(img, size) for img, size in zip(images, crop_sizes)])
        return low, np.maximum(1, np.round(heights / 4)).astype(np.int64)
    raise ValueError(f"kind must be one of {GENERATORS}, got {kind!r}")


def pipeline_outputs(pipeline: Pipeline, images: np.ndarray, heights: np.ndarray, *,
                     return_images: bool = False) -> dict[str, np.ndarray]:
    """The pipeline's outputs (scores, occlusion_score, super_resolved, ..., and with
    `return_images` the restored images) for every crop, run in batches of _BATCH."""
    parts = [pipeline(images[i:i + _BATCH], heights[i:i + _BATCH], return_images=return_images)
             for i in range(0, len(images), _BATCH)]
    if not parts:
        return pipeline(images, heights, return_images=return_images)
    return {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}


def measure_gain(bundle: Bundle, kind: str, images: np.ndarray, labels: np.ndarray, crop_sizes: np.ndarray, *,
                 attributes: tuple[str, ...], config: PipelineConfig | None = None, seed: int = 0,
                 resamples: int = 1000, split: str = "val", groups: np.ndarray | None = None,
                 draws: int | None = None) -> dict[str, Any]:
    """The stored GAIN_KEY record of generator `kind` ("reconstruction" | "superres") in `bundle`.

    images / crop_sizes as in `corrupted_inputs`; labels (N, len(attributes)) int8 of the clean
    crops. The gain is over the classifier's attributes other than occlusion_down that these crops
    can measure (`attrgan.metrics.measurable`: positives and negatives each from MIN_TRACKS
    tracks; when none can, every attribute with a positive and a negative, and the record's
    min_tracks says 1), with the bundle's thresholds, as the evaluation's Table 2 computes it.
    groups: (N,) the track of each crop when the crops come in tracks (`attrgan.fusion.track_groups`): the interval then resamples
    tracks, as a person's crops are not independent.
    draws: how many corrupted copies of each crop are scored (default OCCLUSION_DRAWS for
    reconstruction, whose corruption is random; 1 for super-resolution, whose is not). A crop's
    copies stay in its track, so the interval still resamples people, not draws.
    """
    from attrgan.metrics import attribute_metrics, measurable, paired_bootstrap_gain
    from attrgan.pipeline import Pipeline, PipelineConfig, forced_configs

    if len(images) < 2:
        raise ValueError(f"measuring a restoration needs at least 2 validation crops, got {len(images)}")
    draws = (OCCLUSION_DRAWS if kind == "reconstruction" else 1) if draws is None else draws
    if isinstance(draws, bool) or not isinstance(draws, (int, np.integer)) or draws < 1:
        raise ValueError(f"draws must be an integer >= 1, got {draws!r}")
    rng = np.random.default_rng(seed)
    copies = [corrupted_inputs(kind, images, crop_sizes, rng) for _ in range(draws)]
    inputs, heights = np.concatenate([c[0] for c in copies]), np.concatenate([c[1] for c in copies])
    configs = forced_configs(config or PipelineConfig())
    pipelines = {variant: Pipeline(bundle, configs[variant]) for variant in ("plain", kind)}
    outputs = {variant: pipeline_outputs(p, inputs, heights) for variant, p in pipelines.items()}
    model_attributes = tuple(bundle.attributes)
    keep = [a for a in attributes if a != OCCLUSION_DOWN and a in model_attributes]
    keep_labels = labels[:, [attributes.index(a) for a in keep]]
    min_tracks = MIN_TRACKS if measurable(keep_labels, groups, MIN_TRACKS).any() else 1  # 1: too few crops for the rule
    ok = measurable(keep_labels, groups, min_tracks)
    left_out = [a for a, measured in zip(keep, ok) if not measured]
    keep = [a for a, measured in zip(keep, ok) if measured] or keep
    cols = [model_attributes.index(a) for a in keep]
    label_cols = [attributes.index(a) for a in keep]
    thresholds = np.asarray(bundle.thresholds)[cols]
    copied_labels = np.tile(labels[:, label_cols], (draws, 1))
    copied_groups = np.tile(np.arange(len(images)) if groups is None else np.asarray(groups), draws)
    interval = paired_bootstrap_gain(copied_labels, outputs["plain"]["scores"][:, cols],
                                     outputs[kind]["scores"][:, cols], attributes=tuple(keep), thresholds=thresholds,
                                     resamples=resamples, seed=seed, groups=copied_groups)
    before = attribute_metrics(copied_labels, outputs["plain"]["scores"][:, cols], attributes=tuple(keep),
                               thresholds=thresholds).ma
    record = {"split": split, "crops": len(images), **({"tracks": interval.tracks} if groups is not None else {}),
              "draws": draws, "min_tracks": min_tracks, "left_out": left_out,
              "gain_ma": interval.gain, "low": interval.low,
              "high": interval.high, "level": interval.level, "resamples": interval.resamples, "seed": seed,
              "classifier_version": bundle.metas.get("classifier", {}).get("version", ""),
              # The corrupted crops' mA without and with the restoration: what choosing a recipe compares.
              "ma_before": before, "ma_after": before + interval.gain}
    if kind == "reconstruction" and OCCLUSION_DOWN in model_attributes:
        # The same crops clean as well, as often as occluded: a false alarm on a clean crop costs
        # what a miss costs.
        clean = {variant: pipeline_outputs(p, images, copies[0][1]) for variant, p in pipelines.items()}
        both = {variant: {key: np.concatenate([clean[variant][key]] * draws + [outputs[variant][key]])
                          for key in ("scores", "occlusion_score")} for variant in pipelines}
        record |= calibrate_occlusion(np.concatenate([copied_labels, copied_labels]),
                                      both["plain"]["scores"][:, cols], both[kind]["scores"][:, cols],
                                      both["plain"]["occlusion_score"], attributes=tuple(keep), thresholds=thresholds,
                                      detection_threshold=float(bundle.thresholds[model_attributes.index(OCCLUSION_DOWN)]))
    return record


def calibrate_occlusion(labels: np.ndarray, plain: np.ndarray, reconstructed: np.ndarray, occlusion: np.ndarray, *,
                        attributes: tuple[str, ...], thresholds: np.ndarray, detection_threshold: float,
                        candidates: int = 101) -> dict[str, float]:
    """The occlusion threshold at which the complete pipeline's mA is highest on these crops.

    labels (N, A) and the scores of each crop without (`plain`) and with (`reconstructed`)
    reconstruction, (N, A) over `attributes` with their decision `thresholds`; occlusion (N,) the
    first-pass occlusion_down score, from which a crop at or over the threshold is reconstructed.
    The candidates are `candidates` quantiles of the scores, the classifier's own
    `detection_threshold` (chosen for detection F1) and 1.0 (reconstruct almost nothing); the
    highest mA wins, a tie going to the higher threshold (fewer crops changed for the same mA).
    The choice is made on the crops it is scored on, so its mA is optimistic: the evaluation's
    test crops tell what it is worth. Returns the GAIN_KEY fields {OCCLUSION_THRESHOLD_KEY,
    "occlusion_ma", "detection_threshold", "detection_ma"}.
    """
    from attrgan.contracts import OCCLUSION_THRESHOLD_KEY
    from attrgan.metrics import attribute_metrics

    def ma(threshold: float) -> float:
        chosen = np.where((occlusion >= threshold)[:, None], reconstructed, plain)
        return attribute_metrics(labels, chosen, attributes=attributes, thresholds=thresholds).ma

    points = np.quantile(occlusion, np.linspace(0.0, 1.0, candidates)) if len(occlusion) else np.zeros(0)
    detection_threshold = float(detection_threshold)
    scored = {t: ma(t) for t in {float(t) for t in np.clip(points, 0.0, 1.0)} | {detection_threshold, 1.0}}
    best = max(scored, key=lambda t: (scored[t], t))  # ties: the higher threshold
    return {OCCLUSION_THRESHOLD_KEY: best, "occlusion_ma": scored[best],
            "detection_threshold": detection_threshold, "detection_ma": scored[detection_threshold]}


def regate(bundle_uri: str, manifest: str, *, storage: Any = None, split: str = "val", seed: int = 0,
           config: PipelineConfig | None = None) -> dict[str, dict[str, Any]]:
    """Measure both generators of the bundle at `bundle_uri` against its classifier on the `split`
    crops of `manifest` (`measure_gain`, intervals over tracks) and store each record in its
    generator's config.json: what the gate reads after the classifier was replaced (e.g. by
    another recipe's). Returns {generator: record}."""
    from attrgan.bundle import load_bundle, update_meta
    from attrgan.contracts import GAIN_KEY
    from attrgan.data.storage import join
    from attrgan.fusion import track_groups
    from attrgan.train.data import TrainDataError, load_crops, read_split, validation_tracks

    bundle = load_bundle(bundle_uri, storage=storage)
    rows = read_split(manifest, split=split, storage=storage)
    attributes = tuple(a for a in bundle.attributes if a in rows.column_names and a != OCCLUSION_DOWN)
    if rows.num_rows < 2 or not attributes:
        raise TrainDataError(f"{manifest} has no labelled {split!r} crops to measure the restorations on")
    crops = load_crops(rows, size=bundle.info.input_size, attributes=attributes, storage=storage)
    groups = track_groups(validation_tracks(rows.take(crops.rows))[0])
    records = {}
    for kind in GENERATORS:
        records[kind] = measure_gain(bundle, kind, crops.images, crops.labels, crops.crop_sizes, attributes=attributes,
                                     config=config, seed=seed, split=split, groups=groups)
        update_meta(join(bundle_uri, kind), {GAIN_KEY: records[kind]}, storage=storage)
    return records


def best_epoch(gains: Sequence[float]) -> int:
    """The epoch whose generator select_epoch "best_gain" keeps, as an index into `gains` (each
    epoch's validation mA gain, in order): the highest gain; a tie goes to the later epoch (it
    trained longer for the same result); NaN (an epoch not measured) never wins, and with no gain
    measured at all the last epoch, as select_epoch "last" would."""
    if len(gains) == 0:
        raise ValueError("best_epoch needs the gain of at least one epoch")
    chosen, highest = len(gains) - 1, -math.inf
    for epoch, gain in enumerate(gains):
        if not math.isnan(gain) and gain >= highest:
            chosen, highest = epoch, gain
    return chosen


def keep_best(best: Mapping[str, Any] | None, epoch: int, gain: Mapping[str, Any] | None,
              net_state: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """The generator kept after `epoch`: `best` (what this returned after the epochs before, None
    before the first) or this epoch's (its `measure_gain` record, None where nothing could be
    measured, and its state dict), whichever `best_epoch` picks of the two; picking between the
    best so far and each new epoch is `best_epoch` over all of them. Returns {"epoch", "gain",
    "net_g"}, the weights copied to the CPU: training goes on changing the live ones."""
    def value(record: Mapping[str, Any] | None) -> float:
        return math.nan if record is None else float(record["gain_ma"])

    if best is not None and best_epoch([value(best["gain"]), value(gain)]) == 0:
        return dict(best)
    return {"epoch": epoch, "gain": None if gain is None else dict(gain),
            "net_g": {name: t.detach().to("cpu", copy=True) for name, t in net_state.items()}}

"""The paper's experiments (§4, Tables 1 and 2) on any labelled manifest, with a visual report.

The job itself; the experiments' metrics are `attrgan.experiments` and the report's rendering
`attrgan.report`. It is long because the job's driver, its scorer and what G^R paints (PSNR and the
contact sheets) share the three evaluation sets and the pipeline settings they were scored with.

From the rows of one split (default "test") the job builds three evaluation sets:

    clean     the crops as they are;
    occluded  the same crops with their bottom 50-80 % covered by another person's upper body
              (occRAP-style, `attrgan.corrupt`, seeded);
    lowres    the same crops downsampled x4 (lowRAP-style).

One Ray Data pass (`map_batches` with an actor holding `attrgan.pipeline.Pipeline`, the code the
nightly extraction runs) scores every crop four ways:

    plain     the classifier alone on the input resized to its size (bilinear for low-res crops);
    forced    the input restored by the set's own network before classifying: reconstruction for
              occluded crops, super-resolution for low-res crops (clean crops: = plain);
    pipeline  the complete conditional pipeline (SR when small, reconstruct when `occlusion_down`
              fires) exactly as extraction runs it.

and the tables are `attrgan.metrics.attribute_metrics` of the labels and those scores, with the
bundle's per-attribute thresholds:

    Table 1    clean/plain (summary and per attribute);
    Table 2    occluded: plain vs forced; lowres: plain vs forced;
               complete (occluded + lowres merged): corrupted = plain, restored = pipeline.

Each comparison of Table 2 (COMPARISONS) is a gain in mA on the same crops, reported with a paired
bootstrap interval over crops, or over tracks when the crops come in tracks
(`attrgan.metrics.paired_bootstrap_gain`), and its verdict: "helps" only where the whole interval
lies above 0.

When the split's crops carry track ids, the same scores are also fused per person
(`attrgan.experiments.track_experiments`): per-track beside per-crop metrics of the clean,
occluded, low-res and mixed tracks (each frame from the copy `corrupt.track_conditions` picks: no
extra scoring), each fusion rule, without and with restoration.

`occlusion_down` is the pipeline's control signal, not a property of the person, so it is left out
of the tables and reported on its own (how well it separates clean from occluded crops).

What G^R paints is measured in-process on every occluded crop at the classifier input size:
PSNR of the rows above the occluder against the occluded input (G^R should leave them alone) and
of the occluded rows against the clean original, next to the occluded input's own PSNR there.

Outputs under `out`: report.md, metrics.json, predictions.parquet and figures/*.png.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from attrgan import report
from attrgan.attributes import OCCLUSION_DOWN
from attrgan.config import StorageConfig, to_dict
from attrgan.corrupt import OCCLUDED_FRACTION, SUFFIX as CORRUPT_SUFFIX, occlusion_rows
from attrgan.experiments import (COMPARISONS, EXPERIMENTS, FORCED, SETS, VARIANTS, Scored, TrackEvaluation,
                                 comparison_intervals, experiment_metrics, occlusion_detection, stack_scores,
                                 track_experiments)
from attrgan.fusion import Fusion
from attrgan.metrics import AttributeMetrics, GainInterval, psnr, squared_error
from attrgan.pipeline import PipelineConfig, forced_configs
from attrgan.ray_setup import init_ray
from attrgan.ray_scoring import let_pools_grow, plan_actors, score_stream

log = logging.getLogger(__name__)

@dataclasses.dataclass(frozen=True)
class EvaluateConfig:
    """What to evaluate and where the report goes.

    manifest: labelled manifest URI (file, folder or prefix; local or s3://).
    bundle: model bundle URI (`attrgan.bundle`).
    out: local folder for report.md, metrics.json, predictions.parquet and figures/.
    split: rows of this `split` value are evaluated; None = every row.
    sets_uri: where the clean / occluded / low-res evaluation manifests and images are written
        (local or s3://); None = `<out>/sets`. Point it at object storage next to the data when
        the job runs on a cluster, so every worker can read the images.
    seed: seeds the occlusion donors, fractions and everything else random.
    limit: evaluate only the first `limit` rows of the split (quick looks); None = all.
    batch_size: rows per decode and scoring batch.
    actors / cpus_per_actor / gpus_per_actor: the scoring actor pool, sized by
        `attrgan.ray_scoring.plan_actors` exactly like extraction's, with the same default (on CPUs the
        actors decode).
    examples: image triplets per contact sheet.
    pipeline: the pipeline settings the "pipeline" variant runs with (as extraction would).
    bootstrap_resamples: resamples of each gain's paired bootstrap interval (>= 1; cheap: 1,000
        resamples of 1,000 crops take milliseconds, so there is no switch to turn it off).
    """

    manifest: str
    bundle: str
    out: str
    split: str | None = "test"
    sets_uri: str | None = None
    seed: int = 0
    limit: int | None = None
    batch_size: int = 32
    actors: int = 2  # as extraction's: on a 2-core machine one single-threaded actor left a core idle
    cpus_per_actor: float | None = None
    gpus_per_actor: float = 1.0
    examples: int = 6
    bootstrap_resamples: int = 1000
    pipeline: PipelineConfig = dataclasses.field(default_factory=PipelineConfig)
    storage: StorageConfig = dataclasses.field(default_factory=StorageConfig)

    def __post_init__(self) -> None:
        for name in ("manifest", "bundle", "out"):
            if not getattr(self, name):
                raise ValueError(f"EvaluateConfig.{name} is required, got {getattr(self, name)!r}")
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"EvaluateConfig.limit must be >= 1 or None, got {self.limit!r}")
        if self.batch_size < 1 or self.actors < 1:
            raise ValueError(f"EvaluateConfig.batch_size and actors must be >= 1, "
                             f"got {self.batch_size!r} and {self.actors!r}")
        if self.cpus_per_actor is not None and not self.cpus_per_actor > 0:
            raise ValueError(f"EvaluateConfig.cpus_per_actor must be > 0 or None, got {self.cpus_per_actor!r}")
        if self.examples < 0:
            raise ValueError(f"EvaluateConfig.examples must be >= 0, got {self.examples!r}")
        if self.bootstrap_resamples < 1:
            raise ValueError(f"EvaluateConfig.bootstrap_resamples must be >= 1, got {self.bootstrap_resamples!r}")


@dataclasses.dataclass(frozen=True)
class ReconstructionPSNR:
    """What G^R paints on the occluded crops, at the classifier input size (dB, `attrgan.metrics.psnr`).

    visible_vs_input: rows above the occluder, reconstructed vs the occluded input (high: G^R
        leaves the visible person alone). occluded_vs_original: rows under the occluder,
        reconstructed vs the clean original. occluded_input_vs_original: the same rows of the
        occluded input vs the clean original, the baseline the reconstruction has to beat.
    Rows come from `attrgan.corrupt.occlusion_rows`; crops: the crops measured.
    """

    visible_vs_input: float
    occluded_vs_original: float
    occluded_input_vs_original: float
    crops: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready; a non-finite PSNR (nothing compared, or identical pixels) as None."""
        return {k: (v if isinstance(v, int) or math.isfinite(v) else None)
                for k, v in dataclasses.asdict(self).items()}


@dataclasses.dataclass(frozen=True, eq=False)
class EvaluationResult:
    """The experiments' metrics (keys of EXPERIMENTS), the gains' intervals, what G^R paints and
    where the report was written."""

    metrics: dict[str, AttributeMetrics]
    intervals: dict[str, GainInterval]  # per COMPARISONS name: the mA gain with its bootstrap interval
    reconstruction_psnr: ReconstructionPSNR | None  # None: the pipeline runs no reconstruction
    counts: dict[str, int]  # evaluated (decoded) crops per set
    errors: dict[str, int]  # crops per set that could not be read
    attributes: tuple[str, ...]
    model_version: str
    report_path: Path
    metrics_path: Path
    figures: tuple[Path, ...]
    seconds: float
    tracks: TrackEvaluation | None = None  # per person; None when the crops carry no track ids
    scored: Scored | None = None  # every crop's scores, to compare this bundle with another's on the same sets
    labels: Mapping[str, pd.DataFrame] | None = None  # per set, the labels indexed by crop_id

    def gain(self, comparison: str) -> float:
        """mA(restored) - mA(corrupted) of one of COMPARISONS, in [-1, 1]."""
        for name, before, after in COMPARISONS:
            if name == comparison:
                return self.metrics[after].ma - self.metrics[before].ma
        raise ValueError(f"comparison must be one of {[c[0] for c in COMPARISONS]}, got {comparison!r}")


# ---------------------------------------------------------------------------------------------
# Scoring: the same Pipeline as extraction, three ways per crop.


class VariantScorer:
    """Scores a batch of decoded crops with every variant; holds one Pipeline per setting.

    The bundle is loaded once; each Pipeline runs its own inference copies of the networks it
    uses (a few hundred MB at the paper widths). Plain PyTorch: the Ray Data actor below only adds
    loading.
    """

    def __init__(self, bundle: Any, config: PipelineConfig) -> None:
        from attrgan.pipeline import Pipeline

        # The forced settings measure each network (gate off); "pipeline" runs `config` as extraction does.
        settings = forced_configs(config) | {"pipeline": config}
        self.pipelines = {name: Pipeline(bundle, cfg) for name, cfg in settings.items()}
        self.attributes: tuple[str, ...] = self.pipelines["plain"].attributes
        self.input_size: tuple[int, int] = self.pipelines["plain"].input_size

    def __call__(self, batch: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Input columns: crop_id, eval_set, status, error, image (N, H, W, 3) uint8 at the classifier
        size, crop_height (N,) int. Output columns: crop_id, eval_set, status, error, crop_height, and for
        the decoded rows (zeros elsewhere) plain / forced / pipeline (N, A) float32 scores,
        super_resolved, reconstructed (N,) bool and occlusion_score (N,) float32 of the pipeline.
        """
        n = len(batch["crop_id"])
        a = len(self.attributes)
        ok = np.asarray(batch["status"]) == "ok"
        sets = np.asarray(batch["eval_set"]).astype(str)
        out: dict[str, np.ndarray] = {
            "crop_id": np.asarray(batch["crop_id"]),
            "eval_set": sets,
            "status": np.asarray(batch["status"]),
            "error": np.asarray(batch["error"], dtype=object),
            "crop_height": np.asarray(batch["crop_height"]).astype(np.int32),  # a crop's quality signal
            "plain": np.zeros((n, a), np.float32),
            "forced": np.zeros((n, a), np.float32),
            "pipeline": np.zeros((n, a), np.float32),
            "super_resolved": np.zeros(n, bool),
            "reconstructed": np.zeros(n, bool),
            "occlusion_score": np.full(n, np.nan, np.float32),
        }
        if not ok.any():
            return out
        images = np.asarray(batch["image"])[ok]
        heights = np.asarray(batch["crop_height"]).astype(np.int64)[ok]
        rows = np.flatnonzero(ok)
        plain = self.pipelines["plain"](images, heights)["scores"]
        out["plain"][rows] = plain
        complete = self.pipelines["pipeline"](images, heights)
        out["pipeline"][rows] = complete["scores"]
        for key in ("super_resolved", "reconstructed", "occlusion_score"):
            out[key][rows] = complete[key]
        forced = plain.copy()
        for set_name, variant in FORCED.items():
            mask = sets[ok] == set_name
            if variant != "plain" and mask.any():
                forced[mask] = self.pipelines[variant](images[mask], heights[mask])["scores"]
        out["forced"][rows] = forced
        return out


def score_sets(tables: Mapping[str, pa.Table], *, input_size: tuple[int, int], config: EvaluateConfig) -> pd.DataFrame:
    """Run the scoring pass over the evaluation sets as one Ray Data job, sized like extraction.

    tables: set name → manifest table (crop_id, image_uri, bbox_*; camera_id, track_id and
    frame_index when present). Returns one row per manifest row with columns crop_id, eval_set,
    status, error, crop_height (the stored crop's, 0 when unreadable), super_resolved,
    reconstructed, occlusion_score, plain / forced / pipeline holding (A,) float32 score arrays,
    and camera_id, track_id, frame_index carried from the manifest (null where it has none).
    """
    import ray
    import ray.data

    init_ray()  # a local Ray on a laptop; the cluster under `ray job submit` / RAY_ADDRESS
    keep = ("crop_id", "image_uri", "bbox_x", "bbox_y", "bbox_w", "bbox_h")
    parts = []
    for name, table in tables.items():
        cols = {c: table.column(c) for c in keep if c in table.column_names}
        cols["eval_set"] = pa.chunked_array([pa.array([name] * table.num_rows, pa.string())])
        parts.append(pa.table(cols))
    combined = pa.concat_tables(parts, promote_options="default")
    if combined.num_rows == 0:
        raise ValueError("the evaluation sets are empty: nothing to score")
    resources = ray.cluster_resources()
    plan = plan_actors(cluster_cpus=resources.get("CPU", 0.0), cluster_gpus=resources.get("GPU", 0.0),
                       actors=config.actors, gpus_per_actor=config.gpus_per_actor,
                       cpus_per_actor=config.cpus_per_actor)
    # One block per batch: decode tasks spread over the free CPUs, or the actors decode their own
    # batches (CPU runs). The sets are a test split, small enough to pass through the driver.
    b = config.batch_size
    let_pools_grow()
    ds = ray.data.from_arrow([combined.slice(i, b) for i in range(0, combined.num_rows, b)])
    ds = score_stream(ds, VariantScorer, plan=plan, batch_size=b, decode={"size": input_size, "storage": config.storage},
                      bundle_uri=config.bundle, storage=config.storage, pipeline_config=config.pipeline)
    frames = []
    for batch in ds.iter_batches(batch_format="numpy", batch_size=None):
        frame = pd.DataFrame({k: v for k, v in batch.items() if k not in VARIANTS})
        for v in VARIANTS:
            frame[v] = list(np.asarray(batch[v], dtype=np.float32))
        frames.append(frame)
    # The actors finish batches in any order; the rows go back to the sets' order, so that every
    # bootstrap resample, which draws row positions, is the same on every run.
    scored = pd.concat(frames, ignore_index=True)
    keys = zip(combined["eval_set"].to_pylist(), combined["crop_id"].to_pylist())
    position = {key: i for i, key in enumerate(keys)}
    rows = [position.get(key, len(position)) for key in zip(scored["eval_set"], scored["crop_id"])]
    order = np.argsort(rows, kind="stable")
    scored = scored.iloc[order].reset_index(drop=True)
    # Who each crop shows stays on the driver, taken from the sets' manifests by row.
    rows = pa.array(np.asarray(rows)[order])
    for column, kind in (("camera_id", pa.string()), ("track_id", pa.string()), ("frame_index", pa.int64())):
        values = pa.concat_arrays([(t.column(column).combine_chunks().cast(kind) if column in t.column_names
                                    else pa.nulls(t.num_rows, kind)) for t in tables.values()])
        scored[column] = values.take(rows).to_pandas(types_mapper={pa.int64(): pd.Int64Dtype()}.get)
    return scored


# ---------------------------------------------------------------------------------------------
# The job.


def evaluate(config: EvaluateConfig, *, progress: Callable[[str], None] | None = None) -> EvaluationResult:
    """Build the three evaluation sets, score them with Ray Data, write the report. See module doc."""
    from attrgan.bundle import load_bundle
    from attrgan.corrupt import corrupt_manifest
    from attrgan.data.manifest import read_manifest, write_manifest
    from attrgan.data.storage import join

    say = progress or log.info
    start = time.perf_counter()
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    storage = config.storage

    bundle = load_bundle(config.bundle, storage=storage)
    model_attributes = tuple(bundle.attributes)
    thresholds = np.asarray(bundle.thresholds, dtype=np.float32)
    input_size = tuple(bundle.classifier.config.input_size)

    table = read_manifest(config.manifest, storage=storage)
    table = _select_split(table, config.split, config.manifest)
    if config.limit is not None:
        table = table.slice(0, config.limit)
    attributes = tuple(a for a in model_attributes if a != OCCLUSION_DOWN and a in table.column_names)
    if not attributes:
        raise ValueError(f"manifest {config.manifest} has no label column for any of the model's attributes "
                         f"{list(model_attributes)}")
    say(f"evaluating {table.num_rows} crops of split {config.split!r} on {len(attributes)} attributes "
        f"with bundle {bundle.version}")

    sets_uri = config.sets_uri or str(out / "sets")
    uris = {"clean": write_manifest(table, join(sets_uri, "clean", "manifest.parquet"), storage=storage)}
    uris["occluded"] = corrupt_manifest(uris["clean"], join(sets_uri, "occluded"), kind="occlusion",
                                        seed=config.seed, storage=storage)
    uris["lowres"] = corrupt_manifest(uris["clean"], join(sets_uri, "lowres"), kind="lowres",
                                      seed=config.seed + 1, storage=storage)
    tables = {name: read_manifest(uri, storage=storage) for name, uri in uris.items()}
    say(f"made the occluded and x4 low-res copies under {sets_uri}")

    predictions = score_sets(tables, input_size=input_size, config=config)
    say(f"scored {len(predictions)} crops ({len(VARIANTS)} ways each) with Ray Data")

    labels = {name: _labels(t, attributes) for name, t in tables.items()}
    metrics = experiment_metrics(predictions, labels, attributes=attributes, model_attributes=model_attributes,
                                 thresholds=thresholds)
    intervals = comparison_intervals(predictions, labels, attributes=attributes, model_attributes=model_attributes,
                                     thresholds=thresholds, resamples=config.bootstrap_resamples, seed=config.seed)
    # occlusion_down as a detector at its own threshold (the paper's F1), and at the threshold the
    # pipeline reconstructs from (its own unless set or calibrated_occlusion).
    own_threshold = bundle.info.detection_threshold
    pipeline_threshold = bundle.info.occlusion_threshold(config.pipeline.occlusion_threshold,
                                                         calibrated=config.pipeline.calibrated_occlusion)
    detection = occlusion_detection(predictions, model_attributes=model_attributes, threshold=own_threshold)
    sent = (detection if pipeline_threshold == own_threshold
            else occlusion_detection(predictions, model_attributes=model_attributes, threshold=pipeline_threshold))
    # People are fused as extraction fuses them: the bundle's stored fusion and person-level marking.
    info = bundle.info
    tracks = track_experiments(predictions, labels, attributes=attributes, model_attributes=model_attributes,
                               thresholds=thresholds, fusion=Fusion.from_bundle_info(info),
                               person_attributes=[a for a in attributes if a in info.person_level],
                               resamples=config.bootstrap_resamples, seed=config.seed)
    if tracks is not None:
        say(f"fused {tracks.sets['clean']['plain'].tracks} test tracks per person "
            f"({len(tracks.attributes)} person-level attributes, fusion rule {tracks.fusion.rule!r})")

    counts = {s: int(((predictions["eval_set"] == s) & (predictions["status"] == "ok")).sum()) for s in SETS}
    errors = {s: int(((predictions["eval_set"] == s) & (predictions["status"] != "ok")).sum()) for s in SETS}
    restoration = _restoration_rates(predictions)

    # In-process on the CPU, like the contact sheets: the Ray pass is over, the driver may have no GPU.
    scorer = VariantScorer(bundle, dataclasses.replace(config.pipeline, device="cpu"))
    rec_psnr = reconstruction_psnr(tables, scorer, batch_size=config.batch_size, storage=storage)
    if rec_psnr is not None:
        say(f"PSNR of G^R on {rec_psnr.crops} occluded crops: visible rows {rec_psnr.visible_vs_input:.2f} dB "
            f"(vs input), occluded rows {rec_psnr.occluded_vs_original:.2f} dB vs "
            f"{rec_psnr.occluded_input_vs_original:.2f} dB for the occluded input (vs original)")

    figures_dir = out / "figures"
    figures = report.evaluation_figures(metrics, figures_dir)
    if config.examples:
        figures += _contact_sheets(tables, scorer, config, figures_dir)
    _write_predictions(predictions, model_attributes, out / "predictions.parquet")

    seconds = time.perf_counter() - start
    summary = {
        "manifest": config.manifest, "bundle": config.bundle, "model_version": bundle.version,
        "split": config.split, "seed": config.seed, "attributes": list(attributes), "input_size": list(input_size),
        "evaluated_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "seconds": round(seconds, 1), "counts": counts, "errors": errors, "restoration_rates": restoration,
        "experiments": {key: {"label": label, **metrics[key].to_dict()} for key, label, _, _ in EXPERIMENTS},
        "gains_ma": {name: metrics[after].ma - metrics[before].ma for name, before, after in COMPARISONS},
        "gain_intervals": {name: interval.to_dict() for name, interval in intervals.items()},
        "reconstruction_psnr": rec_psnr.to_dict() if rec_psnr is not None else None,
        "occlusion_detection": detection.to_dict() if detection is not None else None,
        "occlusion_threshold": pipeline_threshold,
        "occlusion_detection_pipeline": sent.to_dict() if sent is not None else None,
        "tracks": tracks.to_dict() if tracks is not None else None,
        "pipeline": to_dict(config.pipeline),
    }
    metrics_path = out / "metrics.json"
    metrics_path.write_text(json.dumps(summary, indent=2) + "\n")
    report_path = out / "report.md"
    report_path.write_text(report.render_report(metrics, summary=summary, detection=detection, intervals=intervals,
                                                tracks=tracks, figures=[f.relative_to(out) for f in figures]))
    say(f"wrote {report_path}, {metrics_path} and {len(figures)} figures")
    return EvaluationResult(metrics=metrics, intervals=intervals, reconstruction_psnr=rec_psnr, counts=counts,
                            errors=errors, attributes=attributes, model_version=bundle.version,
                            report_path=report_path, metrics_path=metrics_path, figures=tuple(figures),
                            seconds=seconds, tracks=tracks,
                            scored=Scored(predictions, model_attributes, thresholds), labels=labels)


def _select_split(table: pa.Table, split: str | None, uri: str) -> pa.Table:
    if split is None:
        return table
    if "split" not in table.column_names:
        raise ValueError(f"manifest {uri} has no 'split' column; pass split=None to evaluate every row")
    keep = pa.compute.equal(table.column("split"), split)
    chosen = table.filter(pa.compute.fill_null(keep, False))
    if chosen.num_rows == 0:
        present = sorted(str(s) for s in set(table.column("split").to_pylist()))
        raise ValueError(f"manifest {uri} has no rows with split {split!r}; splits present: {present}")
    return chosen


def _labels(table: pa.Table, attributes: Sequence[str]) -> pd.DataFrame:
    from attrgan.data.manifest import label_columns

    values = label_columns(table, list(attributes))
    crop_ids = pd.Index(table.column("crop_id").to_pylist(), name="crop_id")
    return pd.DataFrame(values, index=crop_ids, columns=list(attributes))


def _restoration_rates(predictions: pd.DataFrame) -> dict[str, dict[str, float]]:
    """Per set, the share of crops the complete pipeline super-resolved / reconstructed."""
    ok = predictions[predictions["status"] == "ok"]
    rates = {}
    for s in SETS:
        rows = ok[ok["eval_set"] == s]
        n = max(len(rows), 1)
        rates[s] = {"super_resolved": float(rows["super_resolved"].sum()) / n,
                    "reconstructed": float(rows["reconstructed"].sum()) / n}
    return rates


def _write_predictions(predictions: pd.DataFrame, attributes: Sequence[str], path: Path) -> None:
    """Scores as one float32 column per (variant, attribute): readable by any Parquet reader."""
    frame = predictions.drop(columns=list(VARIANTS)).copy()
    for v in VARIANTS:
        scores = stack_scores(predictions[v], len(attributes))
        for i, a in enumerate(attributes):
            frame[f"{v}_{a}"] = scores[:, i]
    frame.to_parquet(path, index=False)


# ---------------------------------------------------------------------------------------------
# What G^R paints, and the contact sheets.


def _decode_crops(table: pa.Table, crop_ids: Sequence[str], *, size: tuple[int, int],
                  storage: StorageConfig) -> dict[str, np.ndarray]:
    """`decode_batch` of the rows of `table` with these crop_ids, in their order, at `size`."""
    from attrgan.data.images import decode_batch

    index = {c: i for i, c in enumerate(table.column("crop_id").to_pylist())}
    rows = table.take([index[c] for c in crop_ids])
    cols = {c: rows.column(c).to_numpy(zero_copy_only=False)
            for c in ("crop_id", "image_uri", "bbox_x", "bbox_y", "bbox_w", "bbox_h") if c in rows.column_names}
    return decode_batch(cols, size=size, storage=storage)


def _source_ids(crop_ids: Sequence[str], kind: str) -> list[str]:
    """corrupt_manifest names a corrupted crop after its source: "<crop_id><suffix>"."""
    return [c.removesuffix(CORRUPT_SUFFIX[kind]) for c in crop_ids]


def reconstruction_psnr(tables: Mapping[str, pa.Table], scorer: VariantScorer, *, batch_size: int,
                        storage: StorageConfig) -> ReconstructionPSNR | None:
    """PSNR of what G^R paints on every occluded crop (see ReconstructionPSNR), in-process.

    tables: the clean and occluded sets' manifests (the occluded one with `occluded_fraction`);
    crops are decoded at the classifier input size, `batch_size` at a time, and reconstructed by
    the scorer's "reconstruction" pipeline, the forced variant's. Crops unreadable in either set
    are skipped. None when that pipeline runs no reconstruction or the column is missing.
    """
    pipeline = scorer.pipelines["reconstruction"]
    occluded = tables["occluded"]
    if pipeline.reconstruction is None or OCCLUDED_FRACTION not in occluded.column_names:
        return None
    size = scorer.input_size
    ids = occluded.column("crop_id").to_pylist()
    fractions = occluded.column(OCCLUDED_FRACTION).to_numpy(zero_copy_only=False).astype(np.float64)
    sse, count, crops = np.zeros(3), np.zeros(3, np.int64), 0
    for start in range(0, len(ids), batch_size):
        chunk = ids[start:start + batch_size]
        original = _decode_crops(tables["clean"], _source_ids(chunk, "occlusion"), size=size, storage=storage)
        corrupted = _decode_crops(occluded, chunk, size=size, storage=storage)
        ok = ((original["status"] == "ok") & (corrupted["status"] == "ok")
              & np.isfinite(fractions[start:start + batch_size]))
        if not ok.any():
            continue
        images, heights = corrupted["image"][ok], corrupted["crop_height"][ok].astype(np.int64)
        restored = pipeline(images, heights, return_images=True)["images"]
        visible, hidden = occlusion_rows(fractions[start:start + batch_size][ok], heights, size[0])
        pairs = ((restored, images, visible), (restored, original["image"][ok], hidden),
                 (images, original["image"][ok], hidden))
        for k, (a, b, rows) in enumerate(pairs):
            e, c = squared_error(a, b, rows)
            sse[k] += e
            count[k] += c
        crops += int(ok.sum())
    return ReconstructionPSNR(visible_vs_input=psnr(sse[0], count[0]), occluded_vs_original=psnr(sse[1], count[1]),
                              occluded_input_vs_original=psnr(sse[2], count[2]), crops=crops)


def _contact_sheets(tables: Mapping[str, pa.Table], scorer: VariantScorer, config: EvaluateConfig,
                    folder: Path) -> list[Path]:
    """Triplets like the paper's figures: original / corrupted input / what the classifier saw."""
    size = scorer.input_size
    k = config.examples

    def decoded(table: pa.Table, crop_ids: Sequence[str]) -> dict[str, np.ndarray]:
        return _decode_crops(table, crop_ids, size=size, storage=config.storage)

    sheets = []
    complete_rows: list[list[np.ndarray]] = []
    complete_titles: list[str] = []
    for set_name, kind, variant, stage in (("occluded", "occlusion", "reconstruction", "reconstructed"),
                                           ("lowres", "lowres", "superres", "super-resolved")):
        ids = tables[set_name].column("crop_id").to_pylist()[:k]
        source_ids = _source_ids(ids, kind)
        original, corrupted = decoded(tables["clean"], source_ids), decoded(tables[set_name], ids)
        ok = (original["status"] == "ok") & (corrupted["status"] == "ok")
        if not ok.any():
            continue
        images, heights = corrupted["image"][ok], corrupted["crop_height"][ok].astype(np.int64)
        forced = scorer.pipelines[variant](images, heights, return_images=True)["images"]
        complete = scorer.pipelines["pipeline"](images, heights, return_images=True)
        titles = list(np.asarray(source_ids)[ok])
        rows = [[o, c, f] for o, c, f in zip(original["image"][ok], images, forced)]
        corrupted_title = "occluded" if set_name == "occluded" else "x4 down, bilinear up"
        sheets.append(report.contact_sheet(rows, folder / f"examples_{set_name}.png",
                                           column_titles=["original", corrupted_title, stage], row_titles=titles))
        for o, c, f, sr, rec, t in zip(original["image"][ok], images, complete["images"],
                                       complete["super_resolved"], complete["reconstructed"], titles):
            done = "+".join(n for n, flag in (("SR", sr), ("rec", rec)) if flag) or "none"
            complete_rows.append([o, c, f])
            complete_titles.append(f"{t}\n({done})")
    if complete_rows:
        sheets.append(report.contact_sheet(complete_rows, folder / "examples_complete.png",
                                           column_titles=["original", "corrupted", "complete pipeline"],
                                           row_titles=complete_titles))
    return sheets

"""Training data: manifest → decoded crops in memory → per-network batches made on the fly.

A training worker reads the manifest, keeps its split and its shard of rows (rank::world_size),
decodes those crops once into a uint8 array (a few thousand small crops fit easily), then builds
every epoch's batches from memory:

    classifier      (x (B,3,H,W) float32 in [-1,1], labels (B,A) int8 tensor); a share of the
                    crops is occluded on the fly (another crop's upper body pasted over the
                    bottom, as occRAP) and labelled occlusion_down = 1, its other labels unknown
    reconstruction  (occluded (B,3,H,W), clean (B,3,H,W)), both float32 in [-1, 1]
    superres        (low (B,3,H/4,W/4), clean (B,3,H,W)): the clean crop and, as G^S will get it
                    in the pipeline, the crop at a quarter of its stored size brought to H/4×W/4
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterator, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from attrgan.attributes import OCCLUSION_DOWN
from attrgan.config import StorageConfig
from attrgan.corrupt import lowres_input, lowres_view, occlude, occlude_batch
from attrgan.data.images import decode_batch, to_tensor
from attrgan.data.manifest import label_columns, manifest_attributes, read_manifest
from attrgan.losses import UNKNOWN

log = logging.getLogger(__name__)

# Recipes that corrupt training crops (`corrupted_crops`), all labels kept: "augmented" (the
# alternative to restoration: clean crops mixed with the paper's corruptions) and the information
# ceilings (every crop corrupted like one test set).
CEILINGS = ("occluded", "lowres", "corrupted")
CORRUPTING = ("augmented",) + CEILINGS
DECODE_ROWS = 256  # rows per decode_batch call: bounds the memory of encoded bytes in flight


class TrainDataError(ValueError):
    """The manifest cannot train the requested network (no labels, empty split, ...)."""


@dataclasses.dataclass(frozen=True, eq=False)
class CropSet:
    """Decoded crops of one split (or one worker's shard of it).

    images: (N, H, W, 3) uint8 RGB at the training size; labels: (N, A) int8 in {1, 0, -1}
    in the order of `attributes`, or None when the network needs no labels; crop_sizes: (N, 2)
    int32 (height, width) of each crop in its stored image, or None when unknown; rows: (N,) the
    index of each crop's row in the table it was loaded from (after sharding), or None.
    """

    images: np.ndarray
    labels: np.ndarray | None
    attributes: tuple[str, ...]
    dropped: int = 0  # rows that failed to decode and were left out
    crop_sizes: np.ndarray | None = None
    rows: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.images)


def resolve_attributes(table: pa.Table, requested: Sequence[str] | None, *,
                       uri: str = "the manifest") -> tuple[str, ...]:
    """The classifier's attribute list: `requested`, or the manifest's label columns; occlusion_down
    is always included (it is learned from occluded crops even when the manifest lacks it).

    Raises TrainDataError when the manifest has no label columns or lacks a requested one.
    """
    available = tuple(manifest_attributes(table))
    if not available:
        raise TrainDataError(f"{uri} has no attribute label columns (int8 columns such as 'female' or "
                             f"'occlusion_down'), so it cannot train the classifier; use a labelled "
                             f"training manifest (jobs/synth.py or jobs/convert.py writes one)")
    attributes = tuple(requested) if requested else available
    missing = [a for a in attributes if a not in available and a != OCCLUSION_DOWN]
    if missing:
        raise TrainDataError(f"{uri} lacks label columns for attribute(s) {missing}; "
                             f"it has {list(available)}")
    return attributes if OCCLUSION_DOWN in attributes else attributes + (OCCLUSION_DOWN,)


def split_rows(table: pa.Table, split: str | None) -> pa.Table:
    """Rows of `split` (all rows when split is None or the manifest has no split column)."""
    if split is None or "split" not in table.column_names:
        return table
    return table.filter(pc.equal(table["split"], split))


def label_array(table: pa.Table, attributes: Sequence[str]) -> np.ndarray:
    """(N, A) int8 labels in `attributes` order; null → -1 (unknown); an absent occlusion_down
    column reads as 0 (manifest crops count as unoccluded unless they say otherwise)."""
    present = [a for a in attributes if a in table.column_names]
    missing = [a for a in attributes if a not in present and a != OCCLUSION_DOWN]
    if missing:
        raise TrainDataError(f"manifest has no label column(s) {missing}")
    out = np.zeros((table.num_rows, len(attributes)), dtype=np.int8)
    if present:
        out[:, [list(attributes).index(a) for a in present]] = label_columns(table, present)
    return out


def read_split(manifest_uri: str, *, split: str | None, storage: StorageConfig | None = None) -> pa.Table:
    """The manifest rows of `split` (validated by attrgan.data.manifest)."""
    return split_rows(read_manifest(manifest_uri, storage=storage), split)


def validation_tracks(kept: pa.Table) -> tuple[list[str | None], list[int | None]]:
    """The track key and frame index of each decoded validation crop (`kept`: their manifest rows):
    a track is (camera_id, track_id), as in the extraction's track tables (`attrgan.fusion.track_keys`);
    None where the manifest has no track_id."""
    tracks = frames = [None] * kept.num_rows
    if "track_id" in kept.column_names:
        cameras = kept["camera_id"].to_pylist() if "camera_id" in kept.column_names else [None] * kept.num_rows
        tracks = [None if t is None else f"{c or ''}\x1f{t}" for c, t in zip(cameras, kept["track_id"].to_pylist())]
    if "frame_index" in kept.column_names:
        frames = kept["frame_index"].to_pylist()
    return tracks, frames


def load_crops(table: pa.Table, *, size: tuple[int, int], attributes: Sequence[str] | None = None,
               storage: StorageConfig | None = None, rank: int = 0, world_size: int = 1,
               limit: int | None = None) -> CropSet:
    """Decode this worker's shard of `table` (rows rank::world_size, after `limit`) at `size`.

    Rows that fail to decode are dropped (and counted in `dropped`, logged) rather than trained
    on as black images. `attributes` given: labels are read too.
    """
    if not 0 <= rank < world_size:
        raise ValueError(f"need 0 <= rank < world_size, got rank {rank} of {world_size}")
    if limit is not None:
        table = table.slice(0, limit)
    table = table.take(np.arange(rank, table.num_rows, world_size))
    columns = ["image_uri", "bbox_x", "bbox_y", "bbox_w", "bbox_h"]
    images, keep, sizes = [], [], []
    for start in range(0, table.num_rows, DECODE_ROWS):
        chunk = table.slice(start, DECODE_ROWS)
        batch = {c: chunk[c].to_numpy(zero_copy_only=False) for c in columns if c in chunk.column_names}
        out = decode_batch(batch, size=tuple(size), storage=storage)
        ok = np.asarray(out["status"]) == "ok"
        images.append(out["image"][ok])
        sizes.append(np.stack([out["crop_height"][ok], out["crop_width"][ok]], axis=1).astype(np.int32))
        keep.append(start + np.flatnonzero(ok))
        for err in np.asarray(out["error"])[~ok][:3]:
            log.warning("dropping a training crop that does not decode: %s", err)
    h, w = size
    image_array = np.concatenate(images) if images else np.zeros((0, h, w, 3), np.uint8)
    kept = np.concatenate(keep) if keep else np.zeros(0, np.int64)
    dropped = table.num_rows - len(kept)
    if dropped:
        log.warning("dropped %d of %d crops that failed to decode (rank %d)", dropped, table.num_rows, rank)
    labels = label_array(table.take(kept), attributes) if attributes else None
    crop_sizes = np.concatenate(sizes) if sizes else np.zeros((0, 2), np.int32)
    return CropSet(images=image_array, labels=labels, attributes=tuple(attributes or ()), dropped=dropped,
                   crop_sizes=crop_sizes, rows=kept)


def epoch_indices(n: int, batch_size: int, *, rng: np.random.Generator) -> Iterator[np.ndarray]:
    """Shuffled index batches covering `n` items; the last partial batch is dropped (BatchNorm
    dislikes tiny batches) unless it is the only one."""
    if n < 1 or batch_size < 1:
        raise ValueError(f"need n >= 1 and batch_size >= 1, got {n} and {batch_size}")
    order = rng.permutation(n)
    full = n // batch_size
    if full == 0:
        yield order
        return
    for i in range(full):
        yield order[i * batch_size:(i + 1) * batch_size]


def occlude_images(images: np.ndarray, *, rng: np.random.Generator,
                   occlusion_range: tuple[float, float] = (0.5, 0.8),
                   donors: np.ndarray | None = None) -> np.ndarray:
    """occRAP-style occlusion: each crop's bottom 50–80 % covered by a donor's upper body.

    images, donors: (B, H, W, 3) uint8; donors default to the batch rotated by one (so a crop
    never occludes itself unless the batch holds a single crop). Returns (B, H, W, 3) uint8.
    """
    donors = np.roll(images, 1, axis=0) if donors is None else donors
    if donors.shape != images.shape:
        raise ValueError(f"donors must match images' shape {images.shape}, got {donors.shape}")
    fractions = rng.uniform(*occlusion_range, size=len(images))
    return np.stack([occlude(img, donor, float(f), rng=rng) for img, donor, f in zip(images, donors, fractions)])


def corrupted_crops(images: np.ndarray, labels: np.ndarray, crop_sizes: np.ndarray | None, *,
                    rng: np.random.Generator, train_on: str, occlusion_index: int | None,
                    occlusion_range: tuple[float, float] = (0.5, 0.8),
                    augment_shares: tuple[float, float] = (0.25, 0.25)) -> tuple[np.ndarray, np.ndarray]:
    """Crops corrupted as `train_on` trains on them, every label kept (an occluded crop's
    occlusion_down is 1): the paper's corruptions as training data, without restoration.

    images (B, H, W, 3) uint8, labels (B, A) int8, crop_sizes (B, 2) or None as in CropSet →
    (images, labels), new arrays. Each crop is occluded (`occluded_copies`), made ×4 low
    resolution (`lowres_view`) or left clean:
        "augmented"  at `augment_shares` (occluded, low-res), the rest clean: what a user would
                     train instead of restoring;
        "occluded" / "lowres"  every crop so: the information ceiling of one test set;
        "corrupted"  each crop occluded or low-res with even odds: the complete experiment's mix.
    """
    if train_on not in CORRUPTING:
        raise ValueError(f"train_on must be one of {CORRUPTING}, got {train_on!r}")
    occluded_share, lowres_share = {"augmented": augment_shares, "occluded": (1.0, 0.0), "lowres": (0.0, 1.0),
                                    "corrupted": (0.5, 0.5)}[train_on]
    draw = rng.random(len(images))
    occluded = draw < occluded_share
    lowres = ~occluded & (draw < occluded_share + lowres_share)
    images, labels = occluded_copies(images, labels, np.flatnonzero(occluded), rng=rng, occlusion_index=occlusion_index,
                                     occlusion_range=occlusion_range, occluded_attribute_labels=True)
    for i in np.flatnonzero(lowres):
        images[i] = lowres_view(images[i], None if crop_sizes is None else crop_sizes[i])
    return images, labels


def classifier_batch(images: np.ndarray, labels: np.ndarray, *, rng: np.random.Generator,
                     occluded_fraction: float, occlusion_index: int | None,
                     occlusion_range: tuple[float, float] = (0.5, 0.8),
                     occluded_attribute_labels: bool = False, train_on: str = "clean",
                     crop_sizes: np.ndarray | None = None,
                     augment_shares: tuple[float, float] = (0.25, 0.25)) -> tuple[torch.Tensor, torch.Tensor]:
    """Clean and occluded crops with their labels.

    images (B, H, W, 3) uint8, labels (B, A) int8 → x (B, 3, H, W) float32 in [-1, 1], y (B, A) int8.
    Each crop is occluded with probability `occluded_fraction`, and then its occlusion_down
    label (column `occlusion_index`) is 1 and, unless `occluded_attribute_labels`, its other
    labels are unknown (-1): an occluded crop teaches the classifier to detect occlusion, not to
    guess what the occluder hides, which is the reconstruction network's job (docs/demo.md).
    `train_on` other than "clean" corrupts the crops as that recipe does instead (`corrupted_crops`).
    """
    if train_on != "clean":
        images, labels = corrupted_crops(images, labels, crop_sizes, rng=rng, train_on=train_on,
                                         occlusion_index=occlusion_index, occlusion_range=occlusion_range,
                                         augment_shares=augment_shares)
    else:
        chosen = np.flatnonzero(rng.random(len(images)) < occluded_fraction)
        images, labels = occluded_copies(images, labels, chosen, rng=rng, occlusion_index=occlusion_index,
                                         occlusion_range=occlusion_range,
                                         occluded_attribute_labels=occluded_attribute_labels)
    return to_tensor(images), torch.from_numpy(labels)


def classifier_validation(val: CropSet, *, train_on: str, occluded_fraction: float, occlusion_index: int | None,
                          occlusion_range: tuple[float, float], occluded_attribute_labels: bool, seed: int,
                          augment_shares: tuple[float, float] = (0.25, 0.25)) -> CropSet:
    """The crops a classifier is validated on, and its thresholds calibrated on.

    A recipe that corrupts its training crops (`train_on` not "clean") sees them corrupted as it
    trains (`corrupted_crops`, seeded). The
    pipeline's classifier sees each clean crop plus an occluded copy labelled as training labels
    it: occlusion_down's threshold needs occluded crops to be calibrated (on clean ones alone it
    was set so high that half the occluded test crops went undetected).
    """
    rng = np.random.default_rng(seed)
    if train_on != "clean":
        images, labels = corrupted_crops(val.images, val.labels, val.crop_sizes, rng=rng, train_on=train_on,
                                         occlusion_index=occlusion_index, occlusion_range=occlusion_range,
                                         augment_shares=augment_shares)
        return dataclasses.replace(val, images=images, labels=labels)
    if not occluded_fraction or val.labels is None:
        return val
    copies, labels = occluded_copies(val.images, val.labels, np.arange(len(val)), rng=rng,
                                     occlusion_index=occlusion_index, occlusion_range=occlusion_range,
                                     occluded_attribute_labels=occluded_attribute_labels)
    sizes = None if val.crop_sizes is None else np.concatenate([val.crop_sizes, val.crop_sizes])
    return dataclasses.replace(val, images=np.concatenate([val.images, copies]),
                               labels=np.concatenate([val.labels, labels]), crop_sizes=sizes)


def occluded_copies(images: np.ndarray, labels: np.ndarray, chosen: np.ndarray, *, rng: np.random.Generator,
                    occlusion_index: int | None, occlusion_range: tuple[float, float] = (0.5, 0.8),
                    occluded_attribute_labels: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """New (images, labels) arrays with the crops at indices `chosen` occluded by the next crop of
    the batch (another person): their occlusion_down label 1 and, unless `occluded_attribute_labels`,
    their other labels unknown (-1), as `classifier_batch` trains them."""
    images, labels = images.copy(), labels.copy()
    if len(chosen):
        donors = images[(chosen + 1) % len(images)]
        images[chosen] = occlude_images(images[chosen], rng=rng, occlusion_range=occlusion_range, donors=donors)
        if not occluded_attribute_labels:
            labels[chosen] = UNKNOWN
        if occlusion_index is not None:
            labels[chosen, occlusion_index] = 1
    return images, labels


def reconstruction_batch(images: np.ndarray, *, rng: np.random.Generator,
                         occlusion_range: tuple[float, float] = (0.5, 0.8),
                         clean_share: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """images (B >= 2, H, W, 3) uint8 → (occluded, clean), each (B, 3, H, W) float32 in [-1, 1];
    each crop is occluded by another crop of the batch (attrgan.corrupt.occlude_batch), except a
    random `clean_share` of them, left as they are (their target is their input)."""
    occluded = occlude_batch(images, rng, fraction_range=occlusion_range)
    if clean_share:  # no draw at 0, so runs without it keep their random stream
        keep = rng.random(len(images)) < clean_share
        occluded[keep] = images[keep]
    return to_tensor(occluded), to_tensor(images)


def superres_batch(images: np.ndarray, crop_sizes: np.ndarray | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """images (B, H, W, 3) uint8 (crop_sizes (B, 2) as in CropSet) → (low (B, 3, H/4, W/4) from
    `lowres_input`, clean (B, 3, H, W)), float32 in [-1, 1]."""
    sizes = [None] * len(images) if crop_sizes is None else crop_sizes
    return to_tensor(np.stack([lowres_input(img, s) for img, s in zip(images, sizes)])), to_tensor(images)

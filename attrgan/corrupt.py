"""The paper's two corruptions (§4, Fig. 4): lower-body occlusion and ×4 downsampling (with what
G^S and the classifier see of a low-resolution crop: `lowres_input`, `lowres_view`).

- Occlusion: the bottom 50–80 % of a crop is covered by the upper body of another person from
  the same split: the donor crop is scaled to the person's width (plus a little jitter) and its
  top part pasted over the bottom of the crop, as if someone stood in front of the camera.
- Low resolution: an area (box) downsample by 4 in height and width.

Images are numpy HWC RGB uint8 throughout; `occlude_tensor` is the same occlusion on a
(B, 3, H, W) float tensor for corrupting training batches on the fly. `corrupt_manifest`
writes a corrupted copy of a labelled manifest (occRAP / lowRAP style test sets).
"""

from __future__ import annotations

import hashlib
import io
import re
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from PIL import Image

from attrgan.attributes import OCCLUSION_DOWN
from attrgan.config import StorageConfig
from attrgan.data.images import resize

if TYPE_CHECKING:
    import pyarrow as pa
    import torch

FRACTION_RANGE = (0.5, 0.8)
WIDTH_JITTER = 0.15  # the donor is scaled to 1.0–1.15× the person's width
SUFFIX = {"occlusion": "-occ", "lowres": "-low"}
IMAGE_QUALITY = 95
# corrupt_manifest(kind="occlusion")'s column: the share of each crop's rows (from the bottom) covered.
OCCLUDED_FRACTION = "occluded_fraction"
_CHUNK = 32  # rows per storage batch in corrupt_manifest


def _check_image(name: str, image: Any) -> np.ndarray:
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        desc = f"{image.dtype} array of shape {image.shape}" if isinstance(image, np.ndarray) else type(image).__name__
        raise ValueError(f"{name} must be an HWC RGB uint8 array (H, W, 3), got {desc}")
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise ValueError(f"{name} is empty, got shape {image.shape}")
    return image


def _check_fraction_range(fraction_range: Sequence[float]) -> tuple[float, float]:
    lo, hi = (float(x) for x in fraction_range)
    if not 0 < lo <= hi <= 1:
        raise ValueError(f"fraction_range must satisfy 0 < low <= high <= 1, got {tuple(fraction_range)}")
    return lo, hi


def covered_rows(fraction: float, height: int) -> int:
    """How many bottom rows of a `height`-row image `occlude` covers for `fraction`: at least one."""
    return max(1, round(fraction * height))


def occlusion_rows(fractions: np.ndarray, crop_heights: np.ndarray, height: int, *,
                   margin: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Which rows of occluded crops resized to `height` rows lie clearly above / below the occluder.

    fractions: (N,) the share of each crop's rows covered from the bottom (the `occluded_fraction`
    column); crop_heights: (N,) the crops' stored heights. The occluder's top edge lies at
    t = height·(1 - fraction) in resized rows. Resizing blends rows near the edge, so a row counts
    as visible when its centre lies at least m rows above t and as occluded when at least m rows
    below it, m = max(margin, height / crop_height) (one stored row of an enlarged crop spans
    several resized rows); rows in between are in neither. Returns (visible, occluded): (N, height) bool.
    """
    fractions = np.asarray(fractions, dtype=np.float64).reshape(-1)
    crop_heights = np.asarray(crop_heights, dtype=np.float64).reshape(-1)
    if fractions.shape != crop_heights.shape:
        raise ValueError(f"fractions and crop_heights need one value per crop, got {fractions.shape} "
                         f"and {crop_heights.shape}")
    bad = ~((fractions >= 0) & (fractions <= 1))  # NaN is bad too
    if bad.any():
        raise ValueError(f"fractions must be in [0, 1], got {fractions[bad][:5].tolist()}")
    if height < 1 or not np.all(crop_heights >= 1):
        raise ValueError(f"heights must be >= 1, got height {height} and crop heights "
                         f"{crop_heights[~(crop_heights >= 1)][:5].tolist()}")
    edge = height * (1.0 - fractions)[:, None]  # (N, 1)
    m = np.maximum(margin, height / crop_heights)[:, None]
    centre = np.arange(height)[None, :] + 0.5  # (1, H)
    return centre <= edge - m, centre >= edge + m


def _donor_geometry(h: int, w: int, dh: int, dw: int, cover: int,
                    rng: np.random.Generator | None) -> tuple[int, int, int]:
    """(scaled donor height, width, horizontal offset) so the paste spans the crop's full width
    and the donor is tall enough to cover `cover` rows."""
    jitter = 1.0 + (rng.uniform(0.0, WIDTH_JITTER) if rng is not None else 0.0)
    scale = max(w / dw * jitter, cover / dh)
    new_w, new_h = max(w, round(dw * scale)), max(cover, round(dh * scale))
    x0 = int(rng.integers(0, new_w - w + 1)) if rng is not None else (new_w - w) // 2
    return new_h, new_w, x0


def occlude(image: np.ndarray, donor: np.ndarray, fraction: float, *,
            rng: np.random.Generator | None = None) -> np.ndarray:
    """Cover the bottom `fraction` of `image` with the upper body of `donor`.

    image: (H, W, 3) uint8, the occluded person. donor: (h, w, 3) uint8, another person's crop
    of any size. fraction in (0, 1]: the bottom round(fraction·H) rows (at least one) are
    replaced by the top of the donor scaled to 1.0–1.15× the image width (exactly 1.0× and
    centred without `rng`); the rows above are untouched. Returns a new (H, W, 3) uint8 array.
    """
    image = _check_image("image", image)
    donor = _check_image("donor", donor)
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    h, w = image.shape[:2]
    cover = covered_rows(fraction, h)
    new_h, new_w, x0 = _donor_geometry(h, w, donor.shape[0], donor.shape[1], cover, rng)
    scaled = np.asarray(Image.fromarray(donor).resize((new_w, new_h), Image.BILINEAR))
    out = image.copy()
    out[h - cover:] = scaled[:cover, x0:x0 + w]
    return out


def occlude_batch(images: np.ndarray, rng: np.random.Generator,
                  fraction_range: Sequence[float] = FRACTION_RANGE) -> np.ndarray:
    """Occlude every image of a batch with the upper body of another image of the same batch.

    images: (N, H, W, 3) uint8 with N >= 2. Each image gets a different donor from the batch
    and a fraction drawn uniformly from `fraction_range`. Returns a new (N, H, W, 3) uint8 array.
    """
    if not isinstance(images, np.ndarray) or images.ndim != 4:
        raise ValueError(f"images must be an (N, H, W, 3) uint8 batch, got {getattr(images, 'shape', type(images))}")
    n = images.shape[0]
    if n < 2:
        raise ValueError(f"occlusion takes donors from the batch: need at least 2 images, got {n}")
    lo, hi = _check_fraction_range(fraction_range)
    donors = (np.arange(n) + rng.integers(1, n, size=n)) % n  # never the image itself
    fractions = rng.uniform(lo, hi, size=n)
    return np.stack([occlude(images[i], images[donors[i]], fractions[i], rng=rng) for i in range(n)])


def occlude_tensor(x: "torch.Tensor", rng: np.random.Generator,
                   fraction_range: Sequence[float] = FRACTION_RANGE) -> "torch.Tensor":
    """`occlude_batch` for a (B, 3, H, W) float tensor (any value range; B >= 2).

    Returns a new tensor of the same shape, dtype and device; gradients do not flow through
    the pasted donors (this makes training inputs, not a differentiable op).
    """
    import torch
    import torch.nn.functional as F

    if not isinstance(x, torch.Tensor) or x.ndim != 4 or not x.is_floating_point():
        raise ValueError(f"x must be a (B, C, H, W) float tensor, got {getattr(x, 'shape', type(x))}")
    b, _, h, w = x.shape
    if b < 2:
        raise ValueError(f"occlusion takes donors from the batch: need at least 2 images, got {b}")
    lo, hi = _check_fraction_range(fraction_range)
    donors = (np.arange(b) + rng.integers(1, b, size=b)) % b
    fractions = rng.uniform(lo, hi, size=b)
    out = x.detach().clone()
    for i in range(b):
        cover = covered_rows(float(fractions[i]), h)
        new_h, new_w, x0 = _donor_geometry(h, w, h, w, cover, rng)
        scaled = F.interpolate(x[donors[i]: donors[i] + 1].detach(), size=(new_h, new_w), mode="bilinear",
                               align_corners=False)
        out[i, :, h - cover:] = scaled[0, :, :cover, x0:x0 + w]
    return out


def downsample(image: np.ndarray, factor: int = 4) -> np.ndarray:
    """Area (box) downsample: (H, W, 3) uint8 → (H // factor, W // factor, 3) uint8.

    Each output pixel is the rounded mean of one factor×factor block; the last H % factor rows
    and W % factor columns (fewer than `factor`) are dropped.
    """
    image = _check_image("image", image)
    if not isinstance(factor, (int, np.integer)) or factor < 1:
        raise ValueError(f"factor must be a positive integer, got {factor!r}")
    h, w = image.shape[:2]
    oh, ow = h // factor, w // factor
    if oh < 1 or ow < 1:
        raise ValueError(f"image of shape {image.shape} is smaller than the factor {factor}")
    return np.asarray(Image.fromarray(image).resize((ow, oh), Image.BOX, box=(0, 0, ow * factor, oh * factor)))


# --------------------------------------------------------------------------------------------
# Corrupted copies of a manifest


def lowres_input(image: np.ndarray, crop_size: Sequence[int] | None, factor: int = 4) -> np.ndarray:
    """What G^S gets for a crop once that crop is ×`factor` low-resolution: (H, W, 3) uint8 →
    (H/factor, W/factor, 3) uint8.

    `image` is the crop resized to the training size (H, W); crop_size (h, w) its size in the
    stored image. A low-resolution crop holds only h/factor × w/factor pixels, and the pipeline
    brings them up to G^S's input, so the input is that many pixels resized to H/factor × W/factor.
    Crops stored at H × W or more (and crop_size None) give the plain ×factor downsample.
    """
    h, w = image.shape[:2]
    size = (h // factor, w // factor)
    if crop_size is None:
        return downsample(image, factor=factor)
    kept = (max(1, min(size[0], round(crop_size[0] / factor))), max(1, min(size[1], round(crop_size[1] / factor))))
    if kept == size:
        return downsample(image, factor=factor)
    return resize(resize(image, kept), size)


def lowres_view(image: np.ndarray, crop_size: Sequence[int] | None, factor: int = 4) -> np.ndarray:
    """What the classifier sees of a crop once it is ×`factor` low resolution: `lowres_input`
    brought back up to the crop's (H, W) as the decoder resizes it. (H, W, 3) uint8 → same."""
    return resize(lowres_input(image, crop_size, factor), image.shape[:2])


def _file_name(crop_id: str) -> str:
    """A file name for a crop id; ids with unsafe characters get a hash to stay unique."""
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", crop_id)
    if safe != crop_id:
        safe += "-" + hashlib.sha1(crop_id.encode()).hexdigest()[:8]
    return safe + ".jpg"


def _bbox(row: dict[str, Any]) -> tuple[int, int, int, int] | None:
    box = tuple(row.get(k) for k in ("bbox_x", "bbox_y", "bbox_w", "bbox_h"))
    return None if any(v is None for v in box) else box  # type: ignore[return-value]


# ---------------------------------------------------------------------------------------------
# Tracks as footage shows them: a person is clean in some frames, hidden behind a passer-by in a
# run of others, and tiny at the far end of the view.

TRACK_CONDITIONS = ("clean", "occluded", "lowres")
NO_GOOD_CROP_SHARE = 0.25  # tracks with no clean frame: the people restoration matters most for
PASSER_BY_SHARE = 0.6  # of the other tracks, those a passer-by occludes for a run of frames
FAR_END_SHARE = 0.6  # ... and those whose far end is seen at low resolution


def track_conditions(track_ids: Sequence[str | None], frame_index: Sequence[int | None] | np.ndarray,
                     heights: Sequence[float] | np.ndarray, *, crop_ids: Sequence[str] | None = None,
                     seed: int = 0) -> np.ndarray:
    """Which copy each frame of a mixed track comes from: "clean", "occluded" or "lowres" (N,) object.

    Per track (rows of one track_id, ordered by frame_index), seeded by (seed, track_id) so the
    answer does not depend on row order: NO_GOOD_CROP_SHARE of the tracks have no clean frame (a
    passer-by's run of frames, the rest at low resolution); of the others, PASSER_BY_SHARE have an
    occluded run of 20-60 % of their frames and FAR_END_SHARE a low-resolution run of 20-50 % at
    the end where the person is smaller, and at least one frame stays clean. A row without a
    track_id is a track of one: clean, occluded or low-res with equal odds, seeded by its crop_id
    (by its position when `crop_ids` is None).
    """
    ids = list(track_ids)
    n = len(ids)
    frames = np.asarray([-1 if f is None else f for f in frame_index], np.float64) if n else np.zeros(0)
    heights = np.asarray(heights, np.float64)
    out = np.empty(n, object)
    by_track: dict[str, list[int]] = {}
    for i, t in enumerate(ids):
        if t is None:
            out[i] = TRACK_CONDITIONS[_track_rng(seed, f"\x00{i if crop_ids is None else crop_ids[i]}").integers(3)]
        else:
            by_track.setdefault(t, []).append(i)
    for t, rows in by_track.items():
        rows = sorted(rows, key=lambda i: (frames[i], i))
        out[rows] = _conditions(len(rows), heights[rows], _track_rng(seed, t))
    return out


def _track_rng(seed: int, key: str) -> np.random.Generator:
    digest = hashlib.sha256(f"{seed}\x1f{key}".encode("utf-8", "surrogatepass")).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def _conditions(length: int, heights: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One track's frames, in order."""
    out = np.full(length, "clean", object)
    far_first = length > 1 and np.nanmean(heights[: length // 2]) < np.nanmean(heights[length - length // 2:])
    if rng.random() < NO_GOOD_CROP_SHARE:
        cut = int(rng.integers(0, length + 1))  # frames [0, cut) behind a passer-by, the rest low-res
        out[:] = "lowres"
        out[:cut] = "occluded"
        return out[::-1] if far_first else out
    if rng.random() < FAR_END_SHARE and length > 1:
        run = max(1, min(length - 1, round(rng.uniform(0.2, 0.5) * length)))
        out[-run:] = "lowres"
    if rng.random() < PASSER_BY_SHARE:
        clean = np.flatnonzero(out == "clean")
        run = min(len(clean) - 1, round(rng.uniform(0.2, 0.6) * length))
        if run > 0:
            start = int(rng.integers(0, len(clean) - run + 1))
            out[clean[start:start + run]] = "occluded"
    return out[::-1] if far_first else out


def corrupt_manifest(src_uri: str, dst_uri: str, *, kind: Literal["occlusion", "lowres"], seed: int = 0,
                     storage: StorageConfig | None = None, fraction_range: Sequence[float] = FRACTION_RANGE,
                     factor: int = 4, workers: int = 8) -> str:
    """Write a corrupted copy of the manifest at `src_uri` under `dst_uri`; returns the new manifest's URI.

    Images go to `<dst_uri>/images/`, the manifest to `<dst_uri>/manifest.parquet` with the
    same rows in the same order: crop_id + "-occ" / "-low", image_uri relative to the new
    manifest, bbox null (the stored image is the crop), camera_id, captured_at, split, every
    other column (labels) copied. kind="occlusion": each crop's bottom 50–80 % (see
    `fraction_range`) is covered by the upper body of another crop of the same split (null
    split is its own group), `occlusion_down` is set to 1 and `occluded_fraction` (float32) is the
    share of the crop's rows covered (covered rows / crop height; `occlusion_rows` maps it to
    a resized crop). kind="lowres": an area downsample by `factor`, `occlusion_down` copied (0
    when the source has no such column).
    Seeded: the same (source, kind, seed) gives the same images. `workers` threads fetch,
    corrupt and store images concurrently.
    """
    from attrgan.data.manifest import read_manifest, write_manifest
    from attrgan.data.storage import fsspec_filesystem, join

    if kind not in SUFFIX:
        raise ValueError(f"kind must be 'occlusion' or 'lowres', got {kind!r}")
    lo, hi = _check_fraction_range(fraction_range)
    if not isinstance(factor, (int, np.integer)) or factor < 1:
        raise ValueError(f"factor must be a positive integer, got {factor!r}")
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    table = read_manifest(src_uri, storage=storage)
    rows = table.to_pylist()
    n = len(rows)
    if n == 0:
        raise ValueError(f"manifest {src_uri} has no rows")

    donors = np.full(n, -1)
    if kind == "occlusion":
        groups: dict[Any, list[int]] = {}
        for i, row in enumerate(rows):
            groups.setdefault(row.get("split"), []).append(i)
        for split, members in groups.items():
            if len(members) < 2:
                raise ValueError(f"split {split!r} has a single crop; occlusion needs a donor from the same split")
            picks = np.random.default_rng([seed, 1, len(members)]).integers(1, len(members), size=len(members))
            for k, i in enumerate(members):
                donors[i] = members[(k + picks[k]) % len(members)]

    fs, root = fsspec_filesystem(dst_uri, storage)
    root = root.rstrip("/")
    suffix = SUFFIX[kind]
    names = [_file_name(str(row["crop_id"]) + suffix) for row in rows]
    covered = np.zeros(n, np.float32)  # filled per row by the threads below (occlusion only)

    def load(i: int) -> np.ndarray:
        from attrgan.data.images import load_crop

        return load_crop(rows[i]["image_uri"], _bbox(rows[i]), storage=storage)

    def run(chunk: range) -> None:
        blobs = {}
        for i in chunk:
            image = load(i)
            if kind == "occlusion":
                rng = np.random.default_rng([seed, 2, i])
                fraction = float(rng.uniform(lo, hi))
                covered[i] = covered_rows(fraction, image.shape[0]) / image.shape[0]
                image = occlude(image, load(int(donors[i])), fraction, rng=rng)
            else:
                image = downsample(image, factor)
            buf = io.BytesIO()
            Image.fromarray(image).save(buf, "JPEG", quality=IMAGE_QUALITY)
            blobs[f"{root}/images/{names[i]}"] = buf.getvalue()
        fs.pipe(blobs)

    chunks = [range(s, min(s + _CHUNK, n)) for s in range(0, n, _CHUNK)]
    with ThreadPoolExecutor(max_workers=min(workers, len(chunks))) as pool:
        list(pool.map(run, chunks))  # list() re-raises the first failure

    out_uri = join(dst_uri, "manifest.parquet")
    write_manifest(_corrupted_table(table, kind, names, covered), out_uri, storage=storage)
    return out_uri


def _corrupted_table(table: "pa.Table", kind: str, names: list[str], covered: np.ndarray) -> "pa.Table":
    import pyarrow as pa

    n = table.num_rows
    suffix = SUFFIX[kind]
    columns: dict[str, pa.Array] = {}
    for name in table.column_names:
        col = table.column(name)
        if name == "crop_id":
            col = pa.array([f"{c}{suffix}" for c in col.to_pylist()], type=pa.string())
        elif name == "image_uri":
            col = pa.array([f"images/{f}" for f in names], type=col.type)
        elif name.startswith("bbox_"):
            col = pa.nulls(n, type=col.type)
        columns[name] = col
    if kind == "occlusion" or OCCLUSION_DOWN not in columns:
        columns[OCCLUSION_DOWN] = pa.array(np.full(n, 1 if kind == "occlusion" else 0, np.int8))
    if kind == "occlusion":  # lowres copies the source's column, if any: downsampling keeps the share
        columns[OCCLUDED_FRACTION] = pa.array(covered.astype(np.float32), pa.float32())
    return pa.table(columns)

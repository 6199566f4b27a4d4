"""Decode + crop + resize throughput (crops/s) for typical person crops, to the classifier's 320x128.

Two kinds of input, both JPEG on the local disk (object-store latency is not part of this figure;
`decode_batch` overlaps it with its thread pool):
- frames: 1920x1080 camera frames, each holding several ~70x140 boxes;
- crops: ~70x140 files holding one person each (bbox null).
Each is read one crop at a time with `load_crop` (single process, one decode per crop) and in
batches with `decode_batch` (thread pool; crops of one frame share its decode).
"""

from __future__ import annotations

import io
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from attrgan.data.images import decode_batch, load_crop

SIZE = (320, 128)
FRAME = (1080, 1920)  # (height, width)
BOXES_PER_FRAME = 4
BATCH = 64


def _jpeg(rng: np.random.Generator, height: int, width: int) -> bytes:
    """A smooth random picture with mild noise: compresses like a real scene, unlike pure noise."""
    coarse = rng.integers(0, 256, (max(2, height // 40), max(2, width // 40), 3), dtype=np.uint8)
    picture = np.asarray(Image.fromarray(coarse).resize((width, height), Image.Resampling.BICUBIC), dtype=np.int16)
    picture = np.clip(picture + rng.integers(-8, 9, picture.shape), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(picture).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def _make_inputs(root: Path, n_frames: int, n_crops: int, seed: int = 0) -> dict[str, dict[str, list]]:
    rng = np.random.default_rng(seed)
    frames: dict[str, list] = {"image_uri": [], "bbox_x": [], "bbox_y": [], "bbox_w": [], "bbox_h": []}
    for i in range(n_frames):
        path = root / f"frame_{i}.jpg"
        path.write_bytes(_jpeg(rng, *FRAME))
        for _ in range(BOXES_PER_FRAME):
            w, h = int(rng.integers(60, 81)), int(rng.integers(120, 161))
            frames["image_uri"].append(str(path))
            frames["bbox_x"].append(int(rng.integers(0, FRAME[1] - w)))
            frames["bbox_y"].append(int(rng.integers(0, FRAME[0] - h)))
            frames["bbox_w"].append(w)
            frames["bbox_h"].append(h)
    crops: dict[str, list] = {"image_uri": []}
    for i in range(n_crops):
        path = root / f"crop_{i}.jpg"
        path.write_bytes(_jpeg(rng, int(rng.integers(120, 161)), int(rng.integers(60, 81))))
        crops["image_uri"].append(str(path))
    return {"frames": frames, "crops": crops}


def _rate(fn: Callable[[], int], repeats: int) -> float:
    """Best crops/s over `repeats` runs (the first run also warms the page cache)."""
    best = 0.0
    for _ in range(repeats):
        start = time.perf_counter()
        n = fn()
        best = max(best, n / (time.perf_counter() - start))
    return best


def _one_by_one(rows: dict[str, list]) -> int:
    boxes = zip(*(rows[c] for c in ("bbox_x", "bbox_y", "bbox_w", "bbox_h"))) if "bbox_x" in rows else None
    for i, uri in enumerate(rows["image_uri"]):
        bbox = next(boxes) if boxes is not None else None
        load_crop(uri, bbox, size=SIZE)
    return len(rows["image_uri"])


def _batched(rows: dict[str, list], workers: int) -> int:
    n = len(rows["image_uri"])
    done = 0
    for start in range(0, n, BATCH):
        batch = {k: np.asarray(v[start:start + BATCH], dtype=object if k == "image_uri" else None)
                 for k, v in rows.items()}
        out = decode_batch(batch, size=SIZE, workers=workers)
        if (out["status"] != "ok").any():
            raise RuntimeError(f"benchmark input failed to decode: {out['error'][out['status'] != 'ok'][0]}")
        done += len(out["status"])
    return done


def run(quick: bool = False) -> None:
    n_frames, n_crops, repeats = (8, 32, 1) if quick else (32, 256, 3)
    with tempfile.TemporaryDirectory() as tmp:
        inputs = _make_inputs(Path(tmp), n_frames, n_crops)
        print(f"{'input':<34} {'method':<26} {'crops/s':>9}")
        for name, rows in inputs.items():
            label = (f"{FRAME[1]}x{FRAME[0]} frame, {BOXES_PER_FRAME} boxes" if name == "frames"
                     else "~70x140 crop files")
            label = f"{label} ({len(rows['image_uri'])})"
            results = [("load_crop, one at a time", _rate(lambda: _one_by_one(rows), repeats))]
            for workers in (1, 8):
                results.append((f"decode_batch, {workers} thread{'s' if workers > 1 else ''}",
                                _rate(lambda: _batched(rows, workers), repeats)))
            for method, rate in results:
                print(f"{label:<34} {method:<26} {rate:>9.0f}", flush=True)

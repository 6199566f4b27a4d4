"""Committed results partitions with track tables, written by hand as the extraction writes them:
crops with `contracts.results_schema`, tracks from `fusion.fuse_tracks` under `_tracks/`, and a
`_SUCCESS` listing both (DESIGN.md "Results", "Tracks")."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from attrgan.contracts import SUCCESS_MARKER, TRACK_FILES_KEY, TRACKS_DIR, results_schema
from attrgan.fusion import Fusion, fuse_tracks

UTC = dt.timezone.utc
ATTRS = ("female", "backpack", "hat", "talking")  # talking: moment-level, stays per crop
PERSON = ("female", "backpack", "hat")
THRESHOLDS = {"female": 0.5, "backpack": 0.5, "hat": 0.5}


def crop_rows(camera: str, track: str | None, start: dt.datetime, scores: list[dict[str, float]], *,
              images: str = "/nowhere", first_frame: int = 0, status: str = "ok") -> list[dict]:
    """One results row per entry of `scores` (attribute → score), a second apart."""
    rows = []
    for i, s in enumerate(scores):
        crop = f"{camera}-{track}-{first_frame + i}"
        row = {"crop_id": crop, "image_uri": f"{images}/{crop}.jpg", "camera_id": camera,
               "captured_at": start + dt.timedelta(seconds=i), "track_id": track, "frame_index": first_frame + i,
               "status": status, "error": None if status == "ok" else "missing object: x",
               "super_resolved": bool(s.get("sr", False)), "reconstructed": bool(s.get("rec", False)),
               "occlusion_score": 0.1 if status == "ok" else None, "crop_height": int(s.get("height", 160)),
               "model_version": "v1", "processed_at": start}
        for a in ATTRS:
            score = s.get(a) if status == "ok" else None
            row[a], row[f"{a}_score"] = (None, None) if score is None else (score >= 0.5, score)
        rows.append(row)
    return rows


def write_partition(root: Path, partition: str, rows: list[dict], *, run: str = "r1", tracks: bool = True,
                    fusion: Fusion = Fusion("mean"), files: int = 1) -> Path:
    """Write `rows` as a committed partition `root/partition`: its crops, and with `tracks` its
    track table in `files` files listed under `track_files` in `_SUCCESS` (without, a marker of an
    older run: no `track_files`)."""
    folder = root / partition
    (folder / TRACKS_DIR).mkdir(parents=True, exist_ok=True)
    crops = pa.Table.from_pylist(rows, schema=results_schema(ATTRS))
    pq.write_table(crops, folder / f"part-{run}-00000.parquet")
    marker: dict = {"model_version": "v1", "run": run, "rows": len(rows), "files": [f"part-{run}-00000.parquet"]}
    if tracks:
        table = fuse_tracks(crops, fusion, person_attributes=PERSON, thresholds=THRESHOLDS)
        names = []
        for n, part in enumerate(np.array_split(np.arange(table.num_rows), files)):
            name = f"{TRACKS_DIR}/part-{run}-{n:05d}.parquet"
            pq.write_table(table.take(pa.array(part, pa.int64())), folder / name)
            names.append(name)
        marker[TRACK_FILES_KEY] = names
        marker["tracks"] = {"rows": table.num_rows, "person_attributes": list(PERSON), "thresholds": THRESHOLDS,
                            "fusion": fusion.to_dict()}
    (folder / SUCCESS_MARKER).write_text(json.dumps(marker))
    return folder


def jpeg(path: Path, size: tuple[int, int] = (160, 64), seed: int = 0) -> Path:
    """A real JPEG of a synthetic pedestrian, (height, width) `size`."""
    from attrgan.data.synth import render_person, sample_person

    rng = np.random.default_rng(seed)
    person, attrs = sample_person(rng)
    path.parent.mkdir(parents=True, exist_ok=True)
    render_person(rng, attrs, size=size, person=person).save(path, "JPEG", quality=85)
    return path

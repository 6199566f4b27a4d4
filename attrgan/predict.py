"""Attributes for a few images in this process: no Ray, no manifest, no object to write.

    import attrgan

    pipe = attrgan.load_pipeline("demo-out/bundle")        # local folder or s3:// bundle
    df = pipe.predict(["photo.jpg", "crops/", "frames/*.png", rgb_array])
    df[["crop_id", "status", "female", "female_score", "reconstructed"]]

`predict` takes image paths (files, folders of images, globs; `s3://` objects too) and HWC uint8
RGB arrays, and returns a pandas DataFrame with one row per image in the order given, in the
columns of the extraction's results (DESIGN.md "Results"): `crop_id` (the path, or `array[i]`),
`status` / `error`, `super_resolved`, `reconstructed`, `occlusion_score`, `<attr>` (bool) and
`<attr>_score` per attribute, `model_version`. An image that cannot be read is a row with
`status="error"` and the reason, never an exception.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import glob
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from attrgan.config import StorageConfig
from attrgan.data.storage import redact
from attrgan.pipeline import PipelineConfig

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp")
DROPPED_COLUMNS = ("image_uri", "camera_id", "captured_at", "processed_at")  # nothing to say for one-off images


@dataclasses.dataclass(frozen=True)
class PredictConfig:
    """bundle: model bundle URI; batch_size: images per pipeline call; pipeline / storage as for
    extraction (`--set pipeline.occlusion_threshold=0.6`, `--set storage.endpoint_url=...`)."""

    bundle: str
    batch_size: int = 16
    pipeline: PipelineConfig = dataclasses.field(default_factory=PipelineConfig)
    storage: StorageConfig = dataclasses.field(default_factory=StorageConfig)

    def __post_init__(self) -> None:
        if not isinstance(self.bundle, str) or not self.bundle:
            raise ValueError(f"PredictConfig.bundle must be a URI, got {self.bundle!r}")
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ValueError(f"PredictConfig.batch_size must be an integer >= 1, got {self.batch_size!r}")


def expand_paths(paths: Sequence[str], *, seen: set[Any] | None = None) -> list[str]:
    """Files as given, folders as their image files (sorted, not recursive), globs expanded (sorted).

    Each file once: a file reached again (through a symlink, a hard link, or a folder given twice)
    is left out; `seen` carries that across calls. What cannot be read is kept, so that it becomes
    one error row: a dangling link, a link loop, and a folder named like an image (`x.jpg`, as a
    shell's `*.jpg` passes it), which is never walked; other folders a glob matches are left out. `s3://` URIs pass through. FileNotFoundError for a path
    or glob that matches nothing, so a typo is not an empty answer.
    """
    seen = set() if seen is None else seen
    out: list[str] = []

    def first_time(path: str) -> bool:
        key = _identity(path)
        if key in seen:
            return False
        seen.add(key)
        return True

    def keep(path: str) -> None:
        if first_time(path):
            out.append(path)

    for path in paths:
        if "://" in path:
            keep(path)
        elif os.path.isdir(path) and not path.lower().endswith(IMAGE_SUFFIXES):  # `x.jpg/` is walked
            found = sorted(os.path.join(path, n) for n in os.listdir(path) if n.lower().endswith(IMAGE_SUFFIXES))
            if not found:
                raise FileNotFoundError(f"no image files ({', '.join(IMAGE_SUFFIXES)}) in the folder {path}")
            if first_time(path):  # a folder reached again (a link to it) is not walked again
                for p in found:
                    keep(p)
        elif glob.has_magic(path):
            found = sorted(p for p in glob.glob(path) if not os.path.isdir(p) or p.lower().endswith(IMAGE_SUFFIXES))
            if not found:
                raise FileNotFoundError(f"no file matches {path}")
            for p in found:
                keep(p)
        elif os.path.lexists(path):  # a dangling link or a loop included
            keep(path)
        else:
            raise FileNotFoundError(f"no such file or folder: {path}")
    return out


def _identity(path: str) -> Any:
    """What makes two names one file or folder: its device and inode, following links; for a name
    that cannot be followed (dangling, a loop), the name in its real folder."""
    try:
        st = os.stat(path)
        return st.st_dev, st.st_ino
    except OSError:
        return os.path.join(os.path.realpath(os.path.dirname(path) or "."), os.path.basename(path))


def _expand(images: Sequence[str | np.ndarray] | str | np.ndarray) -> list[str | np.ndarray]:
    if isinstance(images, (str, np.ndarray)):
        images = [images]
    items: list[str | np.ndarray] = []
    seen: set[Any] = set()
    for item in images:
        if isinstance(item, (str, os.PathLike)):
            items += expand_paths([os.fspath(item)], seen=seen)
        else:
            items.append(item)
    return items


class Predictor:
    """A loaded bundle and its conditional pipeline; `predict` scores images (module docstring)."""

    def __init__(self, bundle: Any, config: PredictConfig) -> None:
        from attrgan.pipeline import Pipeline

        self.config = config
        self.pipeline = Pipeline(bundle, config.pipeline)

    @classmethod
    def from_config(cls, config: PredictConfig) -> "Predictor":
        from attrgan.bundle import load_bundle

        return cls(load_bundle(config.bundle, storage=config.storage), config)

    @property
    def attributes(self) -> tuple[str, ...]:
        return self.pipeline.attributes

    def predict(self, images: Sequence[str | np.ndarray] | str | np.ndarray, *,
                bbox: Sequence[int] | None = None) -> pd.DataFrame:
        """One row per image (see the module docstring); `bbox` (x, y, w, h) crops every image first."""
        from attrgan.results import results_to_pandas

        items = _expand(images)
        tables = [self._batch(items[i:i + self.config.batch_size], i, bbox)
                  for i in range(0, len(items), self.config.batch_size)]
        if not tables:
            tables = [self._batch([], 0, bbox)]
        import pyarrow as pa

        table = pa.concat_tables(tables)
        return results_to_pandas(table.drop_columns([c for c in DROPPED_COLUMNS if c in table.column_names]))

    def _batch(self, items: list[str | np.ndarray], offset: int, bbox: Sequence[int] | None) -> Any:
        from attrgan.extract import results_batch

        batch = _decoded(items, offset, bbox, self.pipeline.input_size, self.config.storage)
        return results_batch(batch, self.pipeline, model_version=self.pipeline.version,
                             processed_at=dt.datetime.now(dt.timezone.utc))


def _decoded(items: list[str | np.ndarray], offset: int, bbox: Sequence[int] | None, size: tuple[int, int],
             storage: StorageConfig) -> dict[str, Any]:
    """The decoded-batch columns `attrgan.extract.results_batch` takes: paths through
    `decode_batch` (the extraction's own decoding), arrays through `crop` and `resize`."""
    from attrgan.data.images import ImageError, crop, decode_batch, resize

    n = len(items)
    names = [item if isinstance(item, str) else f"array[{offset + i}]" for i, item in enumerate(items)]
    x, y, w, h = bbox if bbox is not None else (None,) * 4
    paths = {"image_uri": [item if isinstance(item, str) else "" for item in items],
             "bbox_x": [x] * n, "bbox_y": [y] * n, "bbox_w": [w] * n, "bbox_h": [h] * n}
    out = decode_batch(paths, size=size, storage=storage)
    for i, item in enumerate(items):
        if isinstance(item, str):
            continue
        try:
            if not (isinstance(item, np.ndarray) and item.ndim == 3 and item.shape[2] == 3 and item.dtype == np.uint8):
                raise ImageError(f"bad array: expected (H, W, 3) uint8 RGB, got {getattr(item, 'shape', None)} "
                                 f"{getattr(item, 'dtype', type(item).__name__)}")
            cut = crop(item, bbox)
            out["image"][i], out["crop_height"][i] = resize(cut, size), cut.shape[0]
            out["status"][i], out["error"][i] = "ok", None
        except ValueError as exc:  # ImageError or a bad box
            out["status"][i], out["error"][i] = "error", str(exc)
    return out | {"crop_id": np.array(names, dtype=object), "image_uri": np.array(names, dtype=object),
                  "camera_id": np.array([None] * n, dtype=object), "captured_at": np.array([None] * n, dtype=object)}


def summary_line(row: pd.Series, *, attributes: Sequence[str] | None = None) -> str:
    """One human line for a result row: `path: ok female 0.91, backpack 0.77 [super-resolved]`."""
    name = printable(redact(str(row["crop_id"])))
    if row["status"] != "ok":
        return f"{name}: error: {printable(str(row['error']))}"
    names = attributes if attributes is not None else [c[:-6] for c in row.index if c.endswith("_score")
                                                       and c != "occlusion_score"]
    positives = sorted(((row[f"{a}_score"], a) for a in names if bool(row[a])), reverse=True)
    restored = [flag for flag, column in (("super-resolved", "super_resolved"), ("reconstructed", "reconstructed"))
                if bool(row[column])]
    text = ", ".join(f"{a} {s:.2f}" for s, a in positives) or "no attribute above its threshold"
    return f"{name}: ok {text}" + (f" [{', '.join(restored)}]" if restored else "")


def printable(text: str) -> str:
    """`text` with every character a terminal would act on (escape sequences, newlines) written as
    its Python escape: a file name from a walked folder is shown, never run."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)

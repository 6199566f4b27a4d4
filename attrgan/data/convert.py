"""Turn the public attribute datasets' MATLAB annotations into training manifests.

Supported files (DESIGN.md "Dataset files"); the images themselves are not touched:

- `rap1`   RAP v1 `RAP_annotation.mat`: struct `RAP_annotation` with `partion` (5 cells of
           {train_index, test_index}, 1-based), `label` (N×92), `attribute_eng` (92 names),
           `imagesname`. Columns 0–50 are the RAP 51 (`attrgan.attributes.RAP51`, by position:
           RAP v1's own spelling has typos such as 'action-Pusing'); column 58 is `occlusion_down`.
           RAP v1 has no validation split: `val_fraction` of each partition's train indices
           (default 10 %, a seeded permutation, so the same on every run) becomes `val`;
           `val_fraction=0` keeps train/test only.
- `rap2`   RAP v2 `RAP_annotation.mat`: struct with `name`, `data` (N×152, 2 = uncertain),
           `attribute` (152 names), `selected_attribute` (54, 1-based), `partition_attribute`
           (5 cells of {train_index, val_index, test_index}). Selected names that are one of
           RAP v1's (`RAP_NAMES`) take the RAP id, the rest `snake_case(name)`;
           `occlusion_down` is added when the file has an 'occlusionDown' attribute.
- `peta`   `PETA.mat`: `peta` (a struct or cell of four: data N×109 with labels from column 4,
           105 names, 35 selected 1-based, 5 cells of {train, val, test}); images `%05d.png`.
           The standard file gives `attrgan.attributes.PETA35`.
- `pa100k` `annotation.mat`: `train/val/test_images_name`, `train/val/test_label`, `attributes`
           (26); one fixed partition. The standard file gives `attrgan.attributes.PA100K26`.

Labels: 1 positive, 0 negative, 2 (uncertain) → -1 unknown; anything else is an error.
Rows a partition leaves out keep a null `split`. A file that does not have the expected
variables or fields raises ValueError naming what was expected and what was found.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import pyarrow as pa

from attrgan.attributes import OCCLUSION_DOWN, RAP51, RAP_NAMES, snake_case, validate_attributes
from attrgan.config import StorageConfig
from attrgan.data.manifest import DATA_SUFFIXES, MANIFEST_SCHEMA, write_manifest

DATASETS = ("rap1", "rap2", "peta", "pa100k")
NUM_PARTITIONS = 5  # RAP v1, RAP v2 and PETA each ship five random partitions
RAP1_VAL_FRACTION = 0.1
RAP1_OCCLUSION_DOWN_COLUMN = 58
PETA_LABEL_OFFSET = 4  # PETA's data columns 0–3 are image and person metadata

_RAP_ID_BY_NAME = {name: attr for attr, name in RAP_NAMES.items()}


@dataclasses.dataclass(frozen=True, eq=False)
class LabelledImages:
    """A dataset's images, labels and split, before it becomes a manifest.

    names: (N,) image file names (relative to the dataset's image folder), unique;
    labels: (N, A) int8 in {1, 0, -1}; attributes: the A ids in column order;
    split: (N,) object array of 'train' / 'val' / 'test' or None.
    """

    names: np.ndarray
    labels: np.ndarray
    attributes: tuple[str, ...]
    split: np.ndarray

    def __post_init__(self) -> None:
        n = len(self.names)
        if self.labels.shape != (n, len(self.attributes)):
            raise ValueError(f"labels must be ({n}, {len(self.attributes)}), got {self.labels.shape}")
        if self.split.shape != (n,):
            raise ValueError(f"split must be ({n},), got {self.split.shape}")
        validate_attributes(self.attributes)
        names, counts = np.unique(self.names, return_counts=True)
        if (counts > 1).any():
            raise ValueError(f"image names must be unique, got duplicates {names[counts > 1][:5].tolist()}")


# ----------------------------------------------------------------------------------------------
# Loaders, one per dataset


def load_rap1(path: str, *, split: int = 0, val_fraction: float = RAP1_VAL_FRACTION, seed: int = 0) -> LabelledImages:
    """RAP v1: the RAP 51 + `occlusion_down`, partition `split` (0–4), val carved from train."""
    _check_split(split)
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    rap = _struct(_load(path, "rap1", ["RAP_annotation"])["RAP_annotation"], "RAP_annotation", "rap1",
                  ["partion", "label", "attribute_eng", "imagesname"])
    names = _strings(rap.imagesname, "RAP_annotation.imagesname")
    raw = _matrix(rap.label, "RAP_annotation.label", rows=len(names))
    attr_names = _strings(rap.attribute_eng, "RAP_annotation.attribute_eng")
    if raw.shape[1] <= RAP1_OCCLUSION_DOWN_COLUMN or len(attr_names) != raw.shape[1]:
        raise ValueError(
            f"RAP v1 label must have one column per attribute_eng name and at least "
            f"{RAP1_OCCLUSION_DOWN_COLUMN + 1} of them, got {raw.shape[1]} columns and {len(attr_names)} names"
        )
    found = snake_case(attr_names[RAP1_OCCLUSION_DOWN_COLUMN])
    if found != OCCLUSION_DOWN:
        raise ValueError(f"RAP v1 column {RAP1_OCCLUSION_DOWN_COLUMN} must be 'occlusionDown', got {found!r}")
    columns = list(range(len(RAP51))) + [RAP1_OCCLUSION_DOWN_COLUMN]
    labels = _labels(raw[:, columns], "RAP_annotation.label")

    partition = _partition(rap.partion, split, ("train", "test"), "RAP_annotation.partion", n=len(names))
    if val_fraction > 0:
        # A fixed permutation of this partition's train indices: the same val set on every run.
        train = partition["train"]
        order = np.random.default_rng(seed).permutation(len(train))
        n_val = int(round(val_fraction * len(train)))
        partition = {"train": np.sort(train[order[n_val:]]), "val": np.sort(train[order[:n_val]]),
                     "test": partition["test"]}
    return LabelledImages(names=names, labels=labels, attributes=RAP51 + (OCCLUSION_DOWN,),
                          split=_assign(len(names), partition))


def load_rap2(path: str, *, split: int = 0) -> LabelledImages:
    """RAP v2: its 54 selected attributes (+ `occlusion_down` when present), partition `split` (0–4)."""
    _check_split(split)
    rap = _struct(_load(path, "rap2", ["RAP_annotation"])["RAP_annotation"], "RAP_annotation", "rap2",
                  ["name", "data", "attribute", "selected_attribute", "partition_attribute"])
    names = _strings(rap.name, "RAP_annotation.name")
    raw = _matrix(rap.data, "RAP_annotation.data", rows=len(names))
    attr_names = _strings(rap.attribute, "RAP_annotation.attribute")
    if len(attr_names) != raw.shape[1]:
        raise ValueError(f"RAP v2 attribute must name the {raw.shape[1]} data columns, got {len(attr_names)} names")
    columns = _indices(rap.selected_attribute, len(attr_names), "RAP_annotation.selected_attribute").tolist()
    ids = [_RAP_ID_BY_NAME.get(attr_names[c], snake_case(attr_names[c])) for c in columns]
    if OCCLUSION_DOWN not in ids:
        occlusion = [c for c, name in enumerate(attr_names) if snake_case(name) == OCCLUSION_DOWN]
        if occlusion:
            columns.append(occlusion[0])
            ids.append(OCCLUSION_DOWN)
    labels = _labels(raw[:, columns], "RAP_annotation.data")
    partition = _partition(rap.partition_attribute, split, ("train", "val", "test"),
                           "RAP_annotation.partition_attribute", n=len(names))
    return LabelledImages(names=names, labels=labels, attributes=_ids(ids, "RAP v2"),
                          split=_assign(len(names), partition))


def load_peta(path: str, *, split: int = 0) -> LabelledImages:
    """PETA: its 35 selected attributes, partition `split` (0–4); images are '%05d.png'."""
    _check_split(split)
    parts = _members(_load(path, "peta", ["peta"])["peta"], 4, "peta",
                     "[data, attribute names, selected_attribute, partition_attribute]")
    data = _matrix(parts[0], "peta data")
    attr_names = _strings(parts[1], "peta attribute names")
    if data.shape[1] != PETA_LABEL_OFFSET + len(attr_names):
        raise ValueError(
            f"peta data must have {PETA_LABEL_OFFSET} metadata columns plus one per attribute name "
            f"({PETA_LABEL_OFFSET + len(attr_names)}), got {data.shape[1]} columns"
        )
    selected = _indices(parts[2], len(attr_names), "peta selected_attribute")
    labels = _labels(data[:, PETA_LABEL_OFFSET + selected], "peta data")
    names = np.array([f"{i + 1:05d}.png" for i in range(len(data))], dtype=object)
    partition = _partition(parts[3], split, ("train", "val", "test"), "peta partition_attribute", n=len(names))
    return LabelledImages(names=names, labels=labels, attributes=_ids([attr_names[i] for i in selected], "PETA"),
                          split=_assign(len(names), partition))


def load_pa100k(path: str, *, split: int = 0) -> LabelledImages:
    """PA-100K: 26 attributes, its one fixed train/val/test partition (`split` must be 0)."""
    if split != 0:
        raise ValueError(f"PA-100K has a single partition, so split must be 0, got {split}")
    parts = ("train", "val", "test")
    expected = [f"{p}_images_name" for p in parts] + [f"{p}_label" for p in parts] + ["attributes"]
    mat = _load(path, "pa100k", expected)
    attr_names = _strings(mat["attributes"], "attributes")
    names, labels, split_col = [], [], []
    for p in parts:
        part_names = _strings(mat[f"{p}_images_name"], f"{p}_images_name")
        raw = _matrix(mat[f"{p}_label"], f"{p}_label", rows=len(part_names))
        if raw.shape[1] != len(attr_names):
            raise ValueError(f"{p}_label must have one column per attribute ({len(attr_names)}), got {raw.shape[1]}")
        names.append(part_names)
        labels.append(_labels(raw, f"{p}_label"))
        split_col += [p] * len(part_names)
    return LabelledImages(names=np.concatenate(names), labels=np.concatenate(labels),
                          attributes=_ids(attr_names, "PA-100K"), split=np.array(split_col, dtype=object))


def load_dataset(dataset: str, path: str, *, split: int = 0, val_fraction: float = RAP1_VAL_FRACTION) -> LabelledImages:
    """Dispatch on `dataset` (one of DATASETS). `val_fraction` is used by RAP v1 only."""
    if dataset == "rap1":
        return load_rap1(path, split=split, val_fraction=val_fraction)
    if dataset == "rap2":
        return load_rap2(path, split=split)
    if dataset == "peta":
        return load_peta(path, split=split)
    if dataset == "pa100k":
        return load_pa100k(path, split=split)
    raise ValueError(f"dataset must be one of {DATASETS}, got {dataset!r}")


# ----------------------------------------------------------------------------------------------
# Manifest


def manifest_table(images: LabelledImages, *, images_uri: str, manifest_uri: str) -> pa.Table:
    """The manifest rows for `images` (DESIGN.md manifest schema).

    crop_id is the image name; image_uri is where the image lies under `images_uri`, written
    relative to the manifest when both are on the local disk (so the two can move together), as
    an absolute URI otherwise. bbox, camera_id and captured_at are null (the images are crops);
    one int8 column per attribute.
    """
    n = len(images.names)
    prefix = image_prefix(images_uri, manifest_uri)
    values = {
        "crop_id": pa.array(images.names.tolist(), pa.string()),
        "image_uri": pa.array([_join(prefix, name) for name in images.names.tolist()], pa.string()),
        "split": pa.array(images.split.tolist(), pa.string()),
    }
    columns, fields = [], []
    for field in MANIFEST_SCHEMA:
        columns.append(values[field.name] if field.name in values else pa.nulls(n, field.type))
        fields.append(field)
    for i, attr in enumerate(images.attributes):
        columns.append(pa.array(images.labels[:, i], pa.int8()))
        fields.append(pa.field(attr, pa.int8()))
    return pa.Table.from_arrays(columns, schema=pa.schema(fields))


def image_prefix(images_uri: str, manifest_uri: str) -> str:
    """How the manifest at `manifest_uri` refers to the folder `images_uri`.

    `s3://` and `file://` image folders stay absolute. A local image folder becomes a path
    relative to the manifest's folder when the manifest is local too, and a `file://` URI when
    the manifest goes to object storage. A `manifest_uri` ending in `.parquet` is a file, else a
    folder (as `attrgan.data.manifest.write_manifest` writes it).
    """
    if _has_scheme(images_uri):
        return images_uri.rstrip("/")
    images_abs = os.path.abspath(images_uri)
    if _has_scheme(manifest_uri) and not manifest_uri.lower().startswith("file://"):
        return "file://" + images_abs
    manifest = manifest_uri[7:] if manifest_uri.lower().startswith("file://") else manifest_uri
    manifest = os.path.abspath(manifest)
    folder = os.path.dirname(manifest) if manifest.lower().endswith(DATA_SUFFIXES) else manifest
    return os.path.relpath(images_abs, folder).replace(os.sep, "/")


def convert(
    dataset: str,
    *,
    annotation: str,
    images: str,
    out: str,
    split: int = 0,
    val_fraction: float = RAP1_VAL_FRACTION,
    storage: StorageConfig | None = None,
) -> pa.Table:
    """Read a dataset's annotation file (a local path) and write its manifest to `out`.

    `images` is the dataset's image folder (local path, `file://` or `s3://`); `split` picks the
    partition (0–4, RAP and PETA); `val_fraction` is RAP v1's validation share of train.
    Returns the table written.
    """
    table = manifest_table(load_dataset(dataset, annotation, split=split, val_fraction=val_fraction),
                           images_uri=images, manifest_uri=out)
    write_manifest(table, out, storage=storage)
    return table


# ----------------------------------------------------------------------------------------------
# MATLAB file access. Files are read with struct_as_record=False: a MATLAB struct becomes an
# object with one attribute per field, a cell an object ndarray, and nothing is squeezed, so the
# 1×1 wrappers MATLAB puts around everything are unwrapped explicitly.


def _load(path: str, dataset: str, expected: list[str]) -> dict[str, Any]:
    from scipy.io import loadmat

    try:
        mat = loadmat(path, squeeze_me=False, struct_as_record=False)
    except NotImplementedError as exc:  # scipy cannot read MATLAB v7.3 (HDF5) files
        raise ValueError(f"{path}: {exc}; re-save it in MATLAB with save(..., '-v7')") from None
    found = sorted(k for k in mat if not k.startswith("__"))
    missing = [k for k in expected if k not in mat]
    if missing:
        raise ValueError(f"{path} is not a {dataset} annotation file: expected variables {expected}, found {found}")
    return mat


def _scalar(value: Any) -> Any:
    """Unwrap MATLAB's 1×1 object arrays."""
    while isinstance(value, np.ndarray) and value.dtype == object and value.size == 1:
        value = value.flat[0]
    return value


def _struct(value: Any, what: str, dataset: str, expected: list[str]) -> Any:
    value = _scalar(value)
    fields = list(getattr(value, "_fieldnames", None) or [])
    missing = [f for f in expected if f not in fields]
    if not fields or missing:
        raise ValueError(f"{what} is not a {dataset} annotation struct: expected fields {expected}, found {fields or type(value).__name__}")
    return value


def _members(value: Any, count: int, what: str, expected: str) -> list[Any]:
    """The parts of a struct (in field order) or of a cell (in order), exactly `count` of them."""
    value = _scalar(value)
    fields = getattr(value, "_fieldnames", None)
    if fields is not None:
        parts = [getattr(value, f) for f in fields]
        found = f"a struct with fields {list(fields)}"
    elif isinstance(value, np.ndarray) and value.dtype == object:
        parts = list(value.flat)
        found = f"a cell of {value.size}"
    else:
        parts, found = [], f"{type(value).__name__} {getattr(value, 'shape', '')}"
    if len(parts) != count:
        raise ValueError(f"{what} must be a struct or cell of {count}: {expected}; found {found}")
    return parts


def _strings(value: Any, what: str) -> np.ndarray:
    """A cell of strings (any shape) or a char array → (n,) object array of str."""
    if not isinstance(value, np.ndarray):
        raise ValueError(f"{what} must be a cell of strings, got {type(value).__name__}")
    if value.dtype.kind == "U":  # a char matrix: scipy already made each row one string
        return np.array([s.strip() for s in value.ravel().tolist()], dtype=object)
    if value.dtype != object:
        raise ValueError(f"{what} must be a cell of strings, got an array of {value.dtype}")
    out = []
    for item in value.flat:
        item = _scalar(item)
        if isinstance(item, np.ndarray):
            if item.dtype.kind != "U":
                raise ValueError(f"{what} must hold strings, got an element of dtype {item.dtype}")
            item = "".join(item.ravel().tolist())
        if not isinstance(item, str):
            raise ValueError(f"{what} must hold strings, got {type(item).__name__}")
        out.append(item.strip())
    return np.array(out, dtype=object)


def _matrix(value: Any, what: str, *, rows: int | None = None) -> np.ndarray:
    value = _scalar(value)
    if not isinstance(value, np.ndarray) or value.ndim != 2 or value.dtype.kind not in "biuf":
        shape = getattr(value, "shape", None)
        raise ValueError(f"{what} must be a numeric matrix, got {type(value).__name__} {shape or ''}".rstrip())
    if rows is not None and value.shape[0] != rows:
        raise ValueError(f"{what} must have one row per image ({rows}), got {value.shape[0]}")
    return value


def _indices(value: Any, n: int, what: str) -> np.ndarray:
    """MATLAB 1-based indices (any shape) → 0-based int64, each checked to lie in 1..n."""
    value = _scalar(value)
    arr = np.asarray(value)
    if arr.dtype.kind not in "biuf":
        raise ValueError(f"{what} must be numeric indices, got {arr.dtype}")
    flat = arr.ravel()
    if flat.size and (np.any(flat != np.round(flat)) or flat.min() < 1 or flat.max() > n):
        raise ValueError(f"{what} must be 1-based indices in 1..{n}, got values in {flat.min()}..{flat.max()}")
    return flat.astype(np.int64) - 1


def _labels(raw: np.ndarray, what: str) -> np.ndarray:
    """1 → 1, 0 → 0, 2 (uncertain) → -1, as (N, A) int8."""
    bad = ~np.isin(raw, (0, 1, 2))
    if bad.any():
        raise ValueError(f"{what} must hold 0, 1 or 2 (uncertain), got values {np.unique(raw[bad])[:5].tolist()}")
    out = raw.astype(np.int8)
    out[raw == 2] = -1
    return out


def _partition(value: Any, split: int, parts: Iterable[str], what: str, *, n: int) -> dict[str, np.ndarray]:
    """Partition `split` of a cell of structs → {part: 0-based indices}.

    Each part is the field named `part` or `part_index`; a struct with exactly as many fields as
    parts and other names is read in field order (PETA's field names vary between copies).
    """
    parts = tuple(parts)
    if not isinstance(value, np.ndarray) or value.dtype != object:
        raise ValueError(f"{what} must be a cell of partitions, got {type(value).__name__}")
    if not 0 <= split < value.size:
        raise ValueError(f"split must be in 0..{value.size - 1} ({what} has {value.size}), got {split}")
    struct = _scalar(value.flat[split])
    fields = list(getattr(struct, "_fieldnames", None) or [])
    chosen: dict[str, str] = {}
    for part in parts:
        for name in (part, f"{part}_index"):
            if name in fields:
                chosen[part] = name
                break
    if len(chosen) < len(parts):
        if len(fields) != len(parts):
            wanted = [f"{p} (or {p}_index)" for p in parts]
            raise ValueError(f"{what}[{split}] must be a struct with fields {wanted}, found {fields or type(struct).__name__}")
        chosen = dict(zip(parts, fields))
    return {part: _indices(getattr(struct, name), n, f"{what}[{split}].{name}") for part, name in chosen.items()}


def _assign(n: int, partition: Mapping[str, np.ndarray]) -> np.ndarray:
    """(n,) split names; None for images no part lists. An image in two parts is an error."""
    split = np.full(n, None, dtype=object)
    seen = np.zeros(n, dtype=np.int64)
    for part, idx in partition.items():
        np.add.at(seen, idx, 1)
        split[idx] = part
    twice = np.flatnonzero(seen > 1)
    if twice.size:
        raise ValueError(f"a partition must list each image once, got {twice.size} listed more than once "
                         f"(1-based, first: {(twice[:5] + 1).tolist()})")
    return split


def _ids(names: Iterable[str], dataset: str) -> tuple[str, ...]:
    ids = [snake_case(name) for name in names]
    try:
        return validate_attributes(ids)
    except ValueError as exc:
        raise ValueError(f"{dataset} attribute names do not make unique ids: {exc}") from None


def _check_split(split: int) -> None:
    if not isinstance(split, (int, np.integer)) or not 0 <= split < NUM_PARTITIONS:
        raise ValueError(f"split must be a partition index 0..{NUM_PARTITIONS - 1}, got {split!r}")


def _has_scheme(uri: str) -> bool:
    return "://" in uri


def _join(prefix: str, name: str) -> str:
    return f"{prefix.rstrip('/')}/{name}" if prefix not in ("", ".") else name

"""Dataset converters on small .mat files written in each dataset's real layout."""

from __future__ import annotations

import importlib.util
import os

import numpy as np
import pytest
import scipy.io as sio

from attrgan.attributes import OCCLUSION_DOWN, PA100K26, PA100K_NAMES, PETA35, PETA_NAMES, RAP51, RAP_ATTRIBUTES, RAP_NAMES
from attrgan.data.convert import convert, image_prefix, load_dataset, load_pa100k, load_peta, load_rap1, load_rap2
from attrgan.data.manifest import FIXED_COLUMNS, label_columns, read_manifest


def _load_job():
    path = os.path.join(os.path.dirname(__file__), "..", "jobs", "convert.py")
    spec = importlib.util.spec_from_file_location("jobs_convert", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# RAP v1's extras after the 51 (columns 51–62), occlusionDown at 58; RAP v1 spells one of the 51
# 'action-Pusing', which the converter must not care about (it takes the 51 by position).
RAP1_EXTRAS = ["faceFront", "faceBack", "faceLeft", "faceRight", "occlusionLeft", "occlusionRight", "occlusionUp",
               "occlusionDown", "occlusion-Environment", "occlusion-Attachment", "occlusion-Person", "occlusion-Other"]


def _cell(items, column=True) -> np.ndarray:
    """A MATLAB cell (n×1 or 1×n) of the given Python objects (str → char, dict → struct)."""
    out = np.empty((len(items), 1) if column else (1, len(items)), dtype=object)
    for i, item in enumerate(items):
        out.flat[i] = item
    return out


def _partitions(n: int, sizes: dict[str, int], fields: dict[str, str], *, column: bool = True, as_column_vectors=False):
    """Five random partitions of range(n) as a cell of structs with 1-based indices."""
    parts = []
    for k in range(5):
        order = np.random.default_rng(100 + k).permutation(n) + 1
        struct, start = {}, 0
        for part, size in sizes.items():
            idx = order[start:start + size].astype(np.float64)  # MATLAB stores doubles
            struct[fields[part]] = idx.reshape(-1, 1) if as_column_vectors else idx.reshape(1, -1)
            start += size
        parts.append(struct)
    return _cell(parts, column=column)


@pytest.fixture
def rap1_file(tmp_path):
    n = 30
    rng = np.random.default_rng(0)
    label = rng.integers(0, 2, size=(n, 92)).astype(np.float64)
    names = [RAP_NAMES[a] for a in RAP51]
    names[names.index("action-Pushing")] = "action-Pusing"
    names += RAP1_EXTRAS + [f"color-{i}" for i in range(92 - 63)]
    images = [f"CAM{i % 3:02d}_frame{i}.png" for i in range(n)]
    path = tmp_path / "rap1.mat"
    sio.savemat(path, {"RAP_annotation": {
        "partion": _partitions(n, {"train": 24, "test": 6}, {"train": "train_index", "test": "test_index"}),
        "label": label,
        "attribute_chinese": _cell([f"zh{i}" for i in range(92)]),
        "attribute_eng": _cell(names),
        "position": np.zeros((n, 16)),
        "imagesname": _cell(images),
    }})
    return path, label, images


@pytest.fixture
def rap2_file(tmp_path):
    n = 40
    rng = np.random.default_rng(1)
    data = rng.integers(0, 3, size=(n, 152)).astype(np.uint8)  # 2 = uncertain
    names = [f"extra{i}" for i in range(152)]
    names[:4] = ["Female", "hs-BaldHead", "attachment-Backpack", "Age46-60"]
    names[120] = "occlusionDown"  # not among the selected: added as occlusion_down
    selected = np.arange(1, 55, dtype=np.float64).reshape(1, -1)  # 1-based, first 54 columns
    path = tmp_path / "rap2.mat"
    sio.savemat(path, {"RAP_annotation": {
        "name": _cell([f"img{i:05d}.png" for i in range(n)]),
        "data": data,
        "attribute": _cell(names),
        "selected_attribute": selected,
        "partition_attribute": _partitions(n, {"train": 24, "val": 8, "test": 8},
                                           {"train": "train_index", "val": "val_index", "test": "test_index"},
                                           column=False),
    }})
    return path, data


def _peta_parts(n: int = 20):
    rng = np.random.default_rng(2)
    data = np.concatenate([np.arange(n * 4).reshape(n, 4), rng.integers(0, 2, size=(n, 105))], axis=1).astype(float)
    names = [PETA_NAMES[a] for a in PETA35] + [f"otherAttr{i}" for i in range(70)]
    partitions = _partitions(n, {"train": 10, "val": 2, "test": 8}, {"train": "train", "val": "val", "test": "test"},
                             as_column_vectors=True)
    return data, _cell(names), np.arange(1, 36, dtype=float).reshape(-1, 1), partitions


@pytest.fixture
def peta_file(tmp_path):
    data, names, selected, partitions = _peta_parts()
    path = tmp_path / "PETA.mat"
    sio.savemat(path, {"peta": {"data": data, "attribute": names, "selected_attribute": selected,
                                "partition_attribute": partitions}})
    return path, data


@pytest.fixture
def pa100k_file(tmp_path):
    rng = np.random.default_rng(3)
    sizes = {"train": 12, "val": 4, "test": 4}
    mat, start = {"attributes": _cell([PA100K_NAMES[a] for a in PA100K26])}, 1
    for part, size in sizes.items():
        mat[f"{part}_images_name"] = _cell([f"{i:06d}.jpg" for i in range(start, start + size)])
        mat[f"{part}_label"] = rng.integers(0, 2, size=(size, 26)).astype(np.uint8)
        start += size
    path = tmp_path / "annotation.mat"
    sio.savemat(path, mat)
    return path, mat


def _split_counts(split) -> dict:
    values, counts = np.unique(np.asarray([s or "none" for s in split]), return_counts=True)
    return dict(zip(values.tolist(), counts.tolist()))


def test_rap1_roundtrip(rap1_file, tmp_path):
    path, label, images = rap1_file
    out = tmp_path / "manifests" / "rap1.parquet"
    convert("rap1", annotation=str(path), images=str(tmp_path / "RAP_dataset"), out=str(out), split=2)
    table = read_manifest(str(out))
    attrs = [c for c in table.column_names if c not in FIXED_COLUMNS]
    assert attrs == list(RAP_ATTRIBUTES)
    assert table["crop_id"].to_pylist() == images
    # Relative to the manifest's folder, resolved back to the real place by read_manifest.
    assert table["image_uri"][0].as_py() == str(tmp_path / "RAP_dataset" / images[0])
    labels = label_columns(table, RAP_ATTRIBUTES)
    np.testing.assert_array_equal(labels[:, :51], label[:, :51])
    np.testing.assert_array_equal(labels[:, 51], label[:, 58])  # occlusion_down from column 58
    assert table["bbox_x"].null_count == 30 and table["camera_id"].null_count == 30
    # Partition 2: 24 train / 6 test, 10 % of train (2.4 -> 2) carved off as val, the rest intact.
    split = np.array(table["split"].to_pylist(), dtype=object)
    assert _split_counts(split) == {"test": 6, "train": 22, "val": 2}
    original = sio.loadmat(path, struct_as_record=False)["RAP_annotation"][0, 0].partion[2, 0][0, 0]
    test_rows = np.sort(original.test_index.ravel().astype(int) - 1)
    np.testing.assert_array_equal(np.flatnonzero(split == "test"), test_rows)
    train_rows = set(original.train_index.ravel().astype(int) - 1)
    assert set(np.flatnonzero(split != "test")) == train_rows


def test_rap1_validation_carve_is_deterministic(rap1_file):
    path, _, _ = rap1_file
    a = load_rap1(str(path), split=0)
    b = load_rap1(str(path), split=0)
    np.testing.assert_array_equal(a.split, b.split)
    none = load_rap1(str(path), split=0, val_fraction=0.0)
    assert _split_counts(none.split) == {"test": 6, "train": 24}
    assert _split_counts(load_rap1(str(path), split=0, val_fraction=0.25).split) == {"test": 6, "train": 18, "val": 6}
    with pytest.raises(ValueError, match="val_fraction"):
        load_rap1(str(path), val_fraction=1.0)


def test_rap2_uncertain_and_ids(rap2_file):
    path, data = rap2_file
    ds = load_rap2(str(path), split=4)
    assert len(ds.attributes) == 55 and ds.attributes[-1] == OCCLUSION_DOWN
    # RAP v1 names take the RAP id; others are snake_case of RAP v2's name.
    assert ds.attributes[:4] == ("female", "bald_head", "attachment_backpack", "age_46_60")
    assert ds.attributes[4] == "extra_4"
    expected = data[:, list(range(54)) + [120]].astype(np.int8)
    expected[expected == 2] = -1
    np.testing.assert_array_equal(ds.labels, expected)
    assert (ds.labels == -1).sum() == (data[:, list(range(54)) + [120]] == 2).sum() > 0
    assert _split_counts(ds.split) == {"test": 8, "train": 24, "val": 8}


def test_rap2_manifest_has_unknown_labels(rap2_file, tmp_path):
    path, data = rap2_file
    out = tmp_path / "rap2_manifest"
    table = convert("rap2", annotation=str(path), images="s3://bucket/rap2/images", out=str(out), split=1)
    assert table["image_uri"][0].as_py() == "s3://bucket/rap2/images/img00000.png"
    back = read_manifest(str(out))
    assert back.num_rows == 40
    assert back["female"].to_pylist() == [{0: 0, 1: 1, 2: -1}[int(v)] for v in data[:, 0]]


def test_peta_selected_attributes(peta_file):
    path, data = peta_file
    ds = load_peta(str(path), split=3)
    assert ds.attributes == PETA35
    assert ds.names[:2].tolist() == ["00001.png", "00002.png"] and len(ds.names) == 20
    np.testing.assert_array_equal(ds.labels, data[:, 4:39].astype(np.int8))
    assert _split_counts(ds.split) == {"test": 8, "train": 10, "val": 2}


def test_peta_as_cell_reads_the_same(tmp_path, peta_file):
    data, names, selected, partitions = _peta_parts()
    path = tmp_path / "PETA_cell.mat"
    sio.savemat(path, {"peta": _cell([data, names, selected, partitions], column=False)})
    from_cell = load_peta(str(path), split=1)
    from_struct = load_peta(str(peta_file[0]), split=1)
    np.testing.assert_array_equal(from_cell.labels, from_struct.labels)
    np.testing.assert_array_equal(from_cell.split, from_struct.split)


def test_pa100k(pa100k_file, tmp_path):
    path, mat = pa100k_file
    ds = load_pa100k(str(path))
    assert ds.attributes == PA100K26
    assert _split_counts(ds.split) == {"test": 4, "train": 12, "val": 4}
    np.testing.assert_array_equal(ds.labels[12:16], mat["val_label"])
    assert ds.names[12] == "000013.jpg" and ds.split[12] == "val"
    with pytest.raises(ValueError, match="single partition"):
        load_pa100k(str(path), split=1)


def test_pa100k_to_object_storage(pa100k_file, storage, s3_bucket):
    path, mat = pa100k_file
    out = f"s3://{s3_bucket}/pa100k/manifest.parquet"
    convert("pa100k", annotation=str(path), images=f"s3://{s3_bucket}/pa100k/images", out=out, storage=storage)
    table = read_manifest(out, storage=storage)
    assert table.num_rows == 20 and table["image_uri"][19].as_py() == f"s3://{s3_bucket}/pa100k/images/000020.jpg"
    np.testing.assert_array_equal(label_columns(table, PA100K26)[16:], mat["test_label"])


def test_job_cli(pa100k_file, tmp_path, capsys):
    path, _ = pa100k_file
    out = tmp_path / "out"
    _load_job().main(["--dataset", "pa100k", "--annotation", str(path), "--images", str(tmp_path / "imgs"),
                      "--out", str(out)])
    assert "wrote 20 rows (train 12, val 4, test 4), 26 attributes" in capsys.readouterr().out
    assert read_manifest(str(out))["image_uri"][0].as_py() == str(tmp_path / "imgs" / "000001.jpg")


def test_image_prefix():
    assert image_prefix("s3://b/imgs/", "/data/m.parquet") == "s3://b/imgs"
    assert image_prefix("/data/RAP_dataset", "/data/manifests/rap.parquet") == "../RAP_dataset"
    assert image_prefix("/data/RAP_dataset", "/data/manifests/rap") == "../../RAP_dataset"
    assert image_prefix("/data/RAP_dataset", "s3://b/m.parquet") == "file:///data/RAP_dataset"


def test_wrong_file_names_what_was_expected(pa100k_file, rap1_file, tmp_path):
    pa_path, _ = pa100k_file
    with pytest.raises(ValueError, match=r"expected variables \['RAP_annotation'\], found \['attributes'"):
        load_rap1(str(pa_path))
    # RAP v1's struct is not RAP v2's.
    with pytest.raises(ValueError, match=r"expected fields \['name', 'data'.*found \['partion'"):
        load_rap2(str(rap1_file[0]))
    with pytest.raises(ValueError, match="dataset must be one of"):
        load_dataset("market1501", str(pa_path))


def test_bad_values_and_arguments(tmp_path, rap1_file):
    path = tmp_path / "bad.mat"
    sio.savemat(path, {"attributes": _cell(["A", "B"]),
                       **{f"{p}_images_name": _cell([f"{p}.jpg"]) for p in ("train", "val", "test")},
                       "train_label": np.array([[1, 3]]), "val_label": np.array([[0, 1]]),
                       "test_label": np.array([[0, 1]])})
    with pytest.raises(ValueError, match=r"train_label must hold 0, 1 or 2 \(uncertain\), got values \[3\]"):
        load_pa100k(str(path))
    with pytest.raises(ValueError, match="partition index 0..4"):
        load_rap1(str(rap1_file[0]), split=5)

"""Fuzzing: mutated images, boxes and bundle configs never escape as anything but the project's errors."""

from __future__ import annotations

import json
import resource

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as hst
from hostile import cut_jpeg, encode, forged_jpeg, large_png, noise_jpeg, peak_decode_mib

from attrgan.bundle import BundleError, load_network, save_network
from attrgan.data.images import ImageError, crop, decode_batch, decode_image
from attrgan.models import SuperResConfig, SuperResGenerator

FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
_PIXELS = np.random.default_rng(1).integers(0, 256, (48, 32, 4), dtype=np.uint8)
SEEDS = {
    "JPEG": encode(_PIXELS[:, :, :3], "JPEG"),
    "PNG": encode(_PIXELS, "PNG"),
    "WEBP": encode(_PIXELS[:, :, :3], "WEBP"),
}


@hst.composite
def mutated(draw):
    data = bytearray(SEEDS[draw(hst.sampled_from(sorted(SEEDS)))])
    for _ in range(draw(hst.integers(1, 8))):
        op = draw(hst.sampled_from(("flip", "cut", "insert", "big")))
        at = draw(hst.integers(0, max(0, len(data) - 1)))
        if op == "flip" and data:
            data[at] = draw(hst.integers(0, 255))
        elif op == "cut":
            data = data[:at] + (b"\xff\xd9" if draw(hst.booleans()) else b"")
        elif op == "insert":
            data[at:at] = draw(hst.binary(min_size=1, max_size=16))
        elif len(data) > at + 4:  # a large number where a size field may be
            data[at:at + 4] = draw(hst.integers(0, 2**32 - 1)).to_bytes(4, "big")
    return bytes(data)


@FUZZ
@given(data=mutated())
def test_mutated_images_decode_or_raise_image_error(data):
    try:
        out = decode_image(data)
    except ImageError:
        return
    assert out.dtype == np.uint8 and out.ndim == 3 and out.shape[2] == 3


finite = hst.floats(allow_nan=True, allow_infinity=True) | hst.integers(-2**70, 2**70) | hst.none()


@FUZZ
@given(box=hst.tuples(finite, finite, finite, finite))
def test_random_boxes_crop_or_raise_bad_bbox(box):
    image = np.zeros((20, 10, 3), np.uint8)
    try:
        piece = crop(image, box)
    except ImageError as exc:
        assert str(exc).startswith("bad bbox")
        return
    assert piece.ndim == 3 and 0 < piece.shape[0] <= 20 and 0 < piece.shape[1] <= 10


@FUZZ
@given(data=mutated(), box=hst.tuples(finite, finite, finite, finite))
def test_mutated_rows_through_decode_batch(tmp_path_factory, data, box):
    path = tmp_path_factory.mktemp("fuzz") / "x.img"
    path.write_bytes(data)
    out = decode_batch({"image_uri": [str(path), str(path)], "bbox_x": [box[0], None], "bbox_y": [box[1], None],
                        "bbox_w": [box[2], None], "bbox_h": [box[3], None]}, size=(16, 8), workers=2)
    assert out["image"].shape == (2, 16, 8, 3)
    for status, error in zip(out["status"], out["error"]):
        assert (status == "ok") == (error is None)


@pytest.fixture(scope="module")
def network_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bundle") / "superres"
    save_network(folder, SuperResGenerator(SuperResConfig(width=0.0625)))
    return folder, (folder / "config.json").read_text()


json_values = hst.recursive(hst.none() | hst.booleans() | hst.integers(-10**6, 10**6) | hst.floats()
                            | hst.text(max_size=8), lambda inner: hst.lists(inner, max_size=3)
                            | hst.dictionaries(hst.text(max_size=8), inner, max_size=3), max_leaves=10)


@FUZZ
@given(path=hst.lists(hst.sampled_from(["architecture", "config", "width", "input_size", "weights_sha256",
                                        "attributes", "thresholds", "base_channels", "0"]), min_size=1, max_size=3),
       value=json_values)
def test_mutated_bundle_config_loads_or_raises_bundle_error(network_folder, path, value):
    folder, original = network_folder
    meta = json.loads(original)
    node = meta
    for key in path[:-1]:
        child = node.get(key) if isinstance(node, dict) else None
        if not isinstance(child, dict):
            child = node[key] = {} if isinstance(node, dict) else None
        if child is None:
            break
        node = child
    if isinstance(node, dict):
        node[path[-1]] = value
    (folder / "config.json").write_text(json.dumps(meta))
    try:
        model, _ = load_network(folder)
    except BundleError:
        return
    finally:
        (folder / "config.json").write_text(original)
    assert isinstance(model, SuperResGenerator)


@pytest.mark.slow
def test_hostile_images_decode_under_an_address_space_limit(tmp_path):
    """Every hostile image, decoded in a process allowed 1.5 GB above its start-up size: an
    error row, never a MemoryError or a crash. (12 MP PNGs of every mode decode under the same
    limit in tests/test_hostile_images.py, with their peak memory.)"""
    cases = {"forged.jpg": forged_jpeg(), "cut.jpg": cut_jpeg(noise_jpeg()), "bomb.png": large_png("L", 7000, 6000)}
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        out = peak_decode_mib(str(tmp_path / name), "batch", rlimit_as=int(1.5e9))
        assert out["result"] != "MemoryError", name
        assert out["mib"] < 100, (name, out)
        if name in ("forged.jpg", "cut.jpg"):
            assert out["result"].startswith("undecodable image"), out
        else:
            assert out["result"].startswith("image too large"), out
    assert resource.getrlimit(resource.RLIMIT_AS)[0] == resource.RLIM_INFINITY  # the limit stayed in the child

import importlib.util
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch
from PIL import Image

from attrgan.attributes import OCCLUSION_DOWN, SYNTH_ATTRIBUTES
from attrgan.corrupt import (OCCLUDED_FRACTION, corrupt_manifest, downsample, occlude, occlude_batch, occlude_tensor,
                             occlusion_rows)
from attrgan.data import synth
from attrgan.data.images import resize
from attrgan.data.manifest import manifest_attributes, read_manifest, write_manifest

RED, BLUE = (200, 10, 10), (10, 10, 200)


def _two_tone_donor(h: int = 200, w: int = 80, top: int = 40) -> np.ndarray:
    """A 'person' whose top `top` rows are red and the rest blue."""
    donor = np.empty((h, w, 3), np.uint8)
    donor[:top] = RED
    donor[top:] = BLUE
    return donor


def test_occlude_pastes_the_donors_top_over_the_bottom_fraction():
    image = np.zeros((100, 40, 3), np.uint8)
    # Donor 200x80 is scaled by 0.5 to the image width: its 40 red rows become 20.
    out = occlude(image, _two_tone_donor(), 0.5)
    assert out.shape == image.shape and out.dtype == np.uint8
    assert (out[:50] == 0).all()  # above the line: untouched
    assert (out[51:69] == RED).all()  # the donor's top (head) starts at the line
    assert (out[71:] == BLUE).all()
    assert (out[50:].sum(axis=2) > 0).all()  # every pixel below the line is covered
    assert (image == 0).all()  # the input is not modified


@pytest.mark.parametrize("fraction", [0.5, 0.63, 0.8, 1.0])
def test_occlude_covers_exactly_the_fraction(fraction):
    rng = np.random.default_rng(0)
    image = np.zeros((150, 60, 3), np.uint8)
    donor = rng.integers(1, 256, (90, 70, 3), dtype=np.uint8)  # short, wide donor: gets scaled up
    out = occlude(image, donor, fraction, rng=np.random.default_rng(1))
    changed = out.any(axis=(1, 2))
    line = 150 - round(fraction * 150)
    assert not changed[:line].any()
    assert (out[line:] > 0).all()


def test_occlude_is_seeded():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (120, 48, 3), dtype=np.uint8)
    donor = rng.integers(0, 256, (130, 50, 3), dtype=np.uint8)
    a = occlude(image, donor, 0.7, rng=np.random.default_rng(5))
    b = occlude(image, donor, 0.7, rng=np.random.default_rng(5))
    c = occlude(image, donor, 0.7, rng=np.random.default_rng(6))
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)  # scale and offset jitter
    assert np.array_equal(a[:36], image[:36]) and np.array_equal(c[:36], image[:36])


def test_occlude_rejects_bad_input():
    image = np.zeros((100, 40, 3), np.uint8)
    with pytest.raises(ValueError, match="fraction"):
        occlude(image, image, 0.0)
    with pytest.raises(ValueError, match="fraction"):
        occlude(image, image, 1.5)
    with pytest.raises(ValueError, match="HWC RGB uint8"):
        occlude(image.astype(np.float32), image, 0.5)
    with pytest.raises(ValueError, match="donor"):
        occlude(image, np.zeros((10, 10), np.uint8), 0.5)


def test_occlude_batch_uses_other_images_of_the_batch():
    colors = np.array([[40, 0, 0], [0, 80, 0], [0, 0, 120], [160, 160, 0]], np.uint8)
    images = np.broadcast_to(colors[:, None, None, :], (4, 80, 32, 3)).copy()
    out = occlude_batch(images, np.random.default_rng(3))
    again = occlude_batch(images, np.random.default_rng(3))
    assert np.array_equal(out, again)
    assert out.shape == images.shape and out.dtype == np.uint8
    for i in range(4):
        changed = (out[i] != images[i]).any(axis=(1, 2))
        covered = changed.sum() / 80
        assert 0.5 - 1 / 80 <= covered <= 0.8 + 1 / 80
        assert not changed[: 80 - int(covered * 80)].any()  # one contiguous bottom band
        bottom = out[i, -1, 0]
        assert not np.array_equal(bottom, colors[i])
        assert any(np.array_equal(bottom, c) for c in colors)
    with pytest.raises(ValueError, match="at least 2"):
        occlude_batch(images[:1], np.random.default_rng(0))
    with pytest.raises(ValueError, match="fraction_range"):
        occlude_batch(images, np.random.default_rng(0), fraction_range=(0.8, 0.5))


def test_occlude_tensor_matches_the_semantics():
    x = torch.arange(4, dtype=torch.float32).view(4, 1, 1, 1).expand(4, 3, 64, 24) / 4 - 0.5
    out = occlude_tensor(x, np.random.default_rng(0))
    assert out.shape == x.shape and out.dtype == x.dtype
    for i in range(4):
        changed = (out[i] != x[i]).any(dim=0).any(dim=1)
        rows = torch.nonzero(changed).flatten()
        assert 0.5 * 64 - 1 <= len(rows) <= 0.8 * 64 + 1
        assert rows.max() == 63 and len(rows) == 64 - rows.min()  # the bottom band
        # Constant donors stay constant under scaling: the band holds another image's value.
        assert float(out[i, 0, -1, 0]) in {float(v) for v in x[:, 0, 0, 0]} - {float(x[i, 0, 0, 0])}
    assert torch.equal(out, occlude_tensor(x, np.random.default_rng(0)))
    with pytest.raises(ValueError, match="at least 2"):
        occlude_tensor(x[:1], np.random.default_rng(0))


@pytest.mark.parametrize("crop_height", [100, 37, 10])
def test_occlusion_rows_match_an_occluded_crop_resized(crop_height):
    """Black person, white occluder: after resizing to 20 rows, the visible rows are still exactly
    black and the occluded rows exactly white; only rows at the edge blend (shrunk or enlarged)."""
    image = np.zeros((crop_height, 8, 3), np.uint8)
    for fraction in (0.5, 0.63, 0.8):
        occluded = occlude(image, np.full((50, 20, 3), 255, np.uint8), fraction)
        covered = (occluded[:, 0, 0] == 255).mean()  # the share the manifest column records
        small = resize(occluded, (20, 8))
        visible, hidden = occlusion_rows([covered], [crop_height], 20)
        assert visible[0].any() and hidden[0].any() and not (visible & hidden).any()
        assert (small[visible[0]] == 0).all() and (small[hidden[0]] == 255).all()
        assert visible[0].sum() + hidden[0].sum() >= 20 - 2 * max(1, 20 / crop_height) - 1  # little is left out


def test_occlusion_rows_by_hand_and_bad_input():
    # Edge at 20·(1 - 0.5) = 10; margin 1 row (shrunk crop): centres <= 9 visible, >= 11 occluded.
    visible, hidden = occlusion_rows([0.5], [100], 20)
    assert np.flatnonzero(visible[0]).tolist() == list(range(9))
    assert np.flatnonzero(hidden[0]).tolist() == list(range(11, 20))
    # An enlarged crop (10 → 20 rows): one stored row spans 2 resized rows, the margin too.
    visible, hidden = occlusion_rows([0.5], [10], 20)
    assert np.flatnonzero(visible[0]).tolist() == list(range(8))
    assert np.flatnonzero(hidden[0]).tolist() == list(range(12, 20))
    with pytest.raises(ValueError, match=r"fractions must be in \[0, 1\], got \[1.5\]"):
        occlusion_rows([1.5], [10], 20)
    with pytest.raises(ValueError, match="one value per crop"):
        occlusion_rows([0.5, 0.6], [10], 20)


def test_downsample_is_a_box_filter():
    image = np.zeros((8, 8, 3), np.uint8)
    image[:4, :4] = 100  # one 4x4 block of 100
    image[4:, 4:, 0] = np.arange(16, dtype=np.uint8).reshape(4, 4) * 10  # mean 75
    out = downsample(image, 4)
    assert out.shape == (2, 2, 3)
    assert (out[0, 0] == 100).all() and (out[0, 1] == 0).all() and (out[1, 0] == 0).all()
    assert out[1, 1, 0] == 75 and out[1, 1, 1] == 0
    assert downsample(np.zeros((322, 130, 3), np.uint8)).shape == (80, 32, 3)
    assert downsample(np.zeros((320, 128, 3), np.uint8), factor=2).shape == (160, 64, 3)
    with pytest.raises(ValueError, match="factor"):
        downsample(image, 0)
    with pytest.raises(ValueError, match="smaller than the factor"):
        downsample(np.zeros((3, 8, 3), np.uint8), 4)


@pytest.fixture(scope="module")
def synth_set(tmp_path_factory) -> str:
    return synth.generate(str(tmp_path_factory.mktemp("synth")), 20, seed=2, workers=1)


def test_corrupt_manifest_occlusion_round_trip(synth_set, tmp_path):
    out = corrupt_manifest(synth_set, str(tmp_path / "occ"), kind="occlusion", seed=1)
    assert out == f"{tmp_path}/occ/manifest.parquet"
    src, dst = read_manifest(synth_set).to_pandas(), read_manifest(out).to_pandas()
    assert list(dst["crop_id"]) == [c + "-occ" for c in src["crop_id"]]
    labels = [a for a in SYNTH_ATTRIBUTES if a != OCCLUSION_DOWN]
    assert (dst[labels].to_numpy() == src[labels].to_numpy()).all()
    assert (dst[OCCLUSION_DOWN] == 1).all() and (src[OCCLUSION_DOWN] == 0).all()
    assert list(dst["split"]) == list(src["split"]) and list(dst["camera_id"]) == list(src["camera_id"])
    for s_uri, d_uri in zip(src["image_uri"][:6], dst["image_uri"][:6]):
        a = np.asarray(Image.open(s_uri), np.float32)
        b = np.asarray(Image.open(d_uri), np.float32)
        assert a.shape == b.shape
        h = a.shape[0]
        # 50-80 % covered: the top 20 % is only re-encoded, the bottom half is another person.
        assert np.abs(a[: int(0.18 * h)] - b[: int(0.18 * h)]).mean() < 3
        assert np.abs(a[h // 2:] - b[h // 2:]).mean() > 8
    # The covered share of each crop's rows, as stored: 50-80 % up to one row of rounding.
    assert read_manifest(out).schema.field(OCCLUDED_FRACTION).type == pa.float32()
    assert OCCLUDED_FRACTION not in manifest_attributes(read_manifest(out))  # a float, never a label
    assert dst[OCCLUDED_FRACTION].between(0.49, 0.81).all()
    for s_uri, d_uri, fraction in zip(src["image_uri"][:6], dst["image_uri"][:6], dst[OCCLUDED_FRACTION][:6]):
        a = np.asarray(Image.open(s_uri), np.float32)
        b = np.asarray(Image.open(d_uri), np.float32)
        h = a.shape[0]
        assert abs(fraction * h - round(fraction * h)) < 0.01  # whole rows: covered rows / height
        visible, hidden = occlusion_rows([fraction], [h], h, margin=8)  # 8 rows: JPEG blocks blur the edge
        assert np.abs(a[visible[0]] - b[visible[0]]).mean() < 3
        assert np.abs(a[hidden[0]] - b[hidden[0]]).mean() > 8
    again = corrupt_manifest(synth_set, str(tmp_path / "occ2"), kind="occlusion", seed=1)
    for name in ("syn2-0000000-occ.jpg", "syn2-0000007-occ.jpg"):
        assert (tmp_path / "occ/images" / name).read_bytes() == (tmp_path / "occ2/images" / name).read_bytes()
    assert read_manifest(again).drop_columns(["image_uri"]).equals(read_manifest(out).drop_columns(["image_uri"]))


def test_corrupt_manifest_lowres(synth_set, tmp_path):
    out = corrupt_manifest(synth_set, str(tmp_path / "low"), kind="lowres")
    src, dst = read_manifest(synth_set).to_pandas(), read_manifest(out).to_pandas()
    assert list(dst["crop_id"]) == [c + "-low" for c in src["crop_id"]]
    assert (dst[OCCLUSION_DOWN] == 0).all()
    for s_uri, d_uri in zip(src["image_uri"][:4], dst["image_uri"][:4]):
        w, h = Image.open(s_uri).size
        assert Image.open(d_uri).size == (w // 4, h // 4)


def test_corrupt_manifest_needs_a_donor_in_each_split(tmp_path):
    image = tmp_path / "a.jpg"
    Image.fromarray(np.full((64, 32, 3), 90, np.uint8)).save(image)
    table = pa.table({"crop_id": ["a", "b", "c"], "image_uri": ["a.jpg"] * 3, "split": ["train", "train", "test"],
                      "female": pa.array([1, 0, 1], pa.int8())})
    src = write_manifest(table, str(tmp_path / "m.parquet"))
    with pytest.raises(ValueError, match="split 'test' has a single crop"):
        corrupt_manifest(src, str(tmp_path / "out"), kind="occlusion")
    with pytest.raises(ValueError, match="kind"):
        corrupt_manifest(src, str(tmp_path / "out"), kind="blur")  # type: ignore[arg-type]
    # Lowres needs no donor; a manifest without occlusion_down gets the column (0).
    low = read_manifest(corrupt_manifest(src, str(tmp_path / "low"), kind="lowres")).to_pandas()
    assert list(low[OCCLUSION_DOWN]) == [0, 0, 0] and list(low["female"]) == [1, 0, 1]


def test_job_cli(synth_set, tmp_path):
    spec = importlib.util.spec_from_file_location("synth_job", Path(__file__).parents[1] / "jobs" / "synth.py")
    job = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(job)
    job.main(["generate", "--out", str(tmp_path / "gen"), "-n", "3", "--seed", "5", "--workers", "1"])
    assert read_manifest(str(tmp_path / "gen/manifest.parquet")).num_rows == 3
    job.main(["corrupt", "--kind", "occlusion", "--manifest", synth_set, "--out", str(tmp_path / "occ"), "--seed", "2"])
    assert read_manifest(str(tmp_path / "occ/manifest.parquet"))["crop_id"][0].as_py().endswith("-occ")
    with pytest.raises(SystemExit):
        job.main(["corrupt", "--kind", "blur", "--manifest", synth_set, "--out", str(tmp_path / "x")])


def test_track_conditions_are_per_track_stable_and_keep_a_clean_frame_unless_none_is_good():
    from attrgan.corrupt import TRACK_CONDITIONS, track_conditions

    ids = [f"t{k}" for k in range(300) for _ in range(8)] + [None] * 60
    frames = [i % 8 for i in range(2400)] + [None] * 60
    heights = np.r_[np.tile(np.linspace(320, 60, 8), 300), np.full(60, 150.0)]
    crops = [f"c{i}" for i in range(len(ids))]
    conditions = track_conditions(ids, frames, heights, crop_ids=crops, seed=3)
    assert set(conditions) == set(TRACK_CONDITIONS)
    shuffled = np.random.default_rng(0).permutation(len(ids))
    again = track_conditions([ids[i] for i in shuffled], [frames[i] for i in shuffled], heights[shuffled],
                             crop_ids=[crops[i] for i in shuffled], seed=3)
    assert list(again) == list(conditions[shuffled])  # the same per track whatever the row order
    tracks = conditions[:2400].reshape(300, 8)
    no_clean = (tracks != "clean").all(axis=1)
    assert 0.15 < no_clean.mean() < 0.35
    low = tracks == "lowres"  # the far (small) end of the track
    assert low[:, -1].sum() > 2 * low[:, 0].sum()
    assert (tracks[~no_clean] == "clean").any(axis=1).all()

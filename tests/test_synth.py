import hashlib
import io
import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from attrgan.attributes import OCCLUSION_DOWN, SYNTH_ATTRIBUTES
from attrgan.data import synth
from attrgan.data.manifest import read_manifest

# (low, high) bounds on each prevalence over 500 samples: about ±3.5 standard deviations around
# the design rates in sample_attributes' docstring.
PREVALENCE = {
    "female": (0.37, 0.52), "long_hair": (0.22, 0.36), "hat": (0.03, 0.11), "glasses": (0.03, 0.11),
    "muffler": (0.03, 0.11), "short_sleeve": (0.18, 0.31), "jacket": (0.29, 0.45), "long_trousers": (0.63, 0.77),
    "skirt": (0.05, 0.14), "dress": (0.04, 0.13), "boots": (0.03, 0.11), "backpack": (0.075, 0.18),
    "handbag": (0.08, 0.18), "box": (0.02, 0.095), "plastic_bag": (0.04, 0.13), "carry_by_hand": (0.18, 0.32),
    OCCLUSION_DOWN: (0.0, 0.0),
}
RARE = ("hat", "glasses", "muffler", "box", "boots")


def _labels(n: int, seed: int = 3) -> dict[str, np.ndarray]:
    rows = [synth.sample_attributes(synth.sample_rng(seed, i)) for i in range(n)]
    return {k: np.array([r[k] for r in rows]) for k in SYNTH_ATTRIBUTES}


def test_attribute_prevalence_and_correlations():
    y = _labels(500)
    assert set(PREVALENCE) == set(SYNTH_ATTRIBUTES)
    for attr, (lo, hi) in PREVALENCE.items():
        assert lo <= y[attr].mean() <= hi, (attr, y[attr].mean())
    for attr in RARE:  # realistic imbalance: rare attributes under 10 %
        assert y[attr].mean() < 0.1, attr
    female = y["female"] == 1
    assert y["long_hair"][female].mean() > 0.45 > 0.1 > y["long_hair"][~female].mean()
    assert y["handbag"][female].mean() > 3 * y["handbag"][~female].mean()
    assert y["dress"][~female].sum() == 0 and y["skirt"][~female].sum() == 0


def test_attributes_are_consistent():
    y = _labels(500, seed=11)
    lower = y["dress"] + y["skirt"] + y["long_trousers"]
    assert lower.max() == 1
    assert (y["carry_by_hand"][(y["box"] == 1) | (y["plastic_bag"] == 1)] == 1).all()
    assert (y["short_sleeve"] * y["jacket"]).sum() == 0
    # carry_by_hand is not just box/plastic bag: handbags in the hand and unlabelled objects count too.
    assert (y["carry_by_hand"] & (1 - y["box"]) & (1 - y["plastic_bag"])).sum() > 0
    for i in range(50):
        synth.check_attributes(synth.sample_attributes(synth.sample_rng(0, i)))


def _people(n: int, seed: int = 4) -> tuple[list[synth.Person], dict[str, np.ndarray]]:
    drawn = [synth.sample_person(synth.sample_rng(seed, i)) for i in range(n)]
    return [p for p, _ in drawn], {k: np.array([a[k] for _, a in drawn]) for k in SYNTH_ATTRIBUTES}


def test_sample_person_draws_the_labels_of_sample_attributes():
    for i in range(20):
        person, attrs = synth.sample_person(synth.sample_rng(2, i))
        assert attrs == synth.sample_attributes(synth.sample_rng(2, i))
        synth.check_person(person, attrs)


def test_outfits_tie_upper_and_lower_clothing_together():
    people, y = _people(4000)
    style = np.array([p.style for p in people])
    female = y["female"] == 1
    for name in synth.STYLES:
        assert (style == name).sum() > 100, name  # every style occurs
    business, coat, sport = style == "business", style == "coat", style == "sport"
    assert (y["long_trousers"][business & ~female] == 1).all()  # a man's suit has long trousers
    assert (y["long_trousers"] | y["skirt"])[business].all() and y["jacket"][business].mean() > 0.75
    assert (y["jacket"][coat] == 1).all() and (y["short_sleeve"][coat] == 0).all()
    assert (y["dress"][style == "dress"] == 1).all() and female[style == "dress"].all()
    assert (y["skirt"] | y["dress"])[sport].sum() == 0
    assert y["backpack"][sport].mean() > 2 * y["backpack"][business].mean()
    # The upper body is informative about the lower body: a jacket makes long trousers likelier,
    # short sleeves make them rarer, a coat makes boots likelier.
    jacket, short = y["jacket"] == 1, y["short_sleeve"] == 1
    assert y["long_trousers"][jacket].mean() > y["long_trousers"][~jacket].mean() + 0.1
    assert y["long_trousers"][short].mean() < y["long_trousers"][~short].mean() - 0.1
    assert y["boots"][coat].mean() > 2 * y["boots"][~coat].mean()


def _dist(a, b) -> float:
    return float(np.linalg.norm(np.subtract(a, b, dtype=np.float64)))


def test_outfit_colours_match_as_the_style_says():
    def looks(style: str) -> list:
        return [synth._Look.sample(np.random.default_rng([5, i]), synth.Person(style=style)) for i in range(200)]

    suits, uniforms, casual = looks("business"), looks("uniform"), looks("casual")
    # A suit is one cloth, a uniform one colour: close colours, yet never a copy of the top.
    assert np.median([_dist(lk.jacket, lk.lower) for lk in suits]) < 30
    assert np.median([_dist(lk.top, lk.lower) for lk in suits]) > 150  # pale shirt, dark trousers
    assert np.median([_dist(lk.top, lk.lower) for lk in uniforms]) < 40
    assert not any(lk.top == lk.lower for lk in suits + uniforms + casual)
    # Casual clothes are a free mix: top and bottom brightness are unrelated.
    top = [np.mean(lk.top) for lk in casual]
    lower = [np.mean(lk.lower) for lk in casual]
    assert abs(np.corrcoef(top, lower)[0, 1]) < 0.2


def test_age_and_sex_co_occur_with_styles_at_the_stated_rates():
    people, y = _people(6000, seed=8)
    age = np.array([p.age for p in people])
    style = np.array([p.style for p in people])
    female = y["female"] == 1
    for group, rate in synth.AGE_RATES.items():  # within ~4 standard deviations
        assert abs((age == group).mean() - rate) < 4 * np.sqrt(rate * (1 - rate) / len(age)) + 1e-3, group
    adult, young = age == "adult", age == "young"
    assert (style[age == "child"] != "business").all()
    assert (style[~female] != "dress").all()
    assert (style[adult] == "business").mean() > 1.5 * (style[young] == "business").mean()
    assert (style[young] == "sport").mean() > 1.5 * (style[adult] == "sport").mean()
    # The measured style mix of adult men matches style_rates averaged over the weather.
    expected = {k: (synth.style_rates(False, "adult", True)[k] + synth.style_rates(False, "adult", False)[k]) / 2
                for k in synth.STYLES}
    men = adult & ~female
    for name, rate in expected.items():
        assert abs((style[men] == name).mean() - rate) < 4 * np.sqrt(rate * (1 - rate) / men.sum()) + 1e-3, name
    for key in synth.STYLE_RATES:
        assert sum(synth.style_rates(key[0] == "female", key[1], True).values()) == pytest.approx(1.0)


def test_hair_greys_with_age():
    grey = {}
    for age in ("young", "elderly"):
        looks = [synth._Look.sample(np.random.default_rng([3, i]), synth.Person(age=age)) for i in range(300)]
        grey[age] = np.mean([max(lk.hair) - min(lk.hair) < 25 and min(lk.hair) > 90 for lk in looks])
    assert grey["elderly"] > 0.6 > 0.15 > grey["young"]


def test_crop_heights_spread_like_raps():
    rng = np.random.default_rng(0)
    sizes = np.array([synth.sample_crop_size(rng) for _ in range(600)])
    h, w = sizes[:, 0], sizes[:, 1]
    assert synth.CROP_HEIGHT_RANGE == (90, 550)
    assert h.min() >= 90 and h.max() <= 550 and h.min() < 100 and h.max() > 350
    assert 0.58 <= (h < 200).mean() <= 0.74  # most under 200 px (design: 66 %)
    assert 155 <= np.median(h) <= 185  # design: about 170
    assert ((w / h >= 0.35 - 1 / h) & (w / h <= 0.5 + 1 / h)).all()
    assert (h // 4).min() >= 22 and (h // 4).max() <= 137  # x4 low-res: 22-137 px, lowRAP-small


@pytest.mark.parametrize("size", [(90, 32), (550, 270)])
def test_smallest_and_largest_crops_render_and_downsample(size):
    from attrgan.corrupt import downsample
    from attrgan.data.images import decode_image

    for i, style in enumerate(synth.STYLES):
        rng = synth.sample_rng(6, i)
        person, attrs = synth.sample_person(rng)
        while person.style != style:  # a person of each style
            person, attrs = synth.sample_person(rng)
        img = synth.render_person(rng, attrs, size=size, person=person)
        arr = np.asarray(img)
        assert arr.shape == (*size, 3) and arr.std() > 10
        low = downsample(arr, 4)
        assert low.shape == (size[0] // 4, size[1] // 4, 3)
        buf = io.BytesIO()
        Image.fromarray(low).save(buf, "JPEG", quality=95)
        assert decode_image(buf.getvalue()).shape == low.shape


def test_check_attributes_rejects_contradictions():
    base = dict.fromkeys(SYNTH_ATTRIBUTES, 0)
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="exclude each other"):
        synth.render_person(rng, dict(base, dress=1, long_trousers=1))
    with pytest.raises(ValueError, match="carry_by_hand"):
        synth.render_person(rng, dict(base, box=1))
    with pytest.raises(ValueError, match="missing"):
        synth.render_person(rng, {"female": 1})
    with pytest.raises(ValueError, match="0 or 1"):
        synth.render_person(rng, dict(base, hat=2))
    with pytest.raises(ValueError, match="occlusion_down"):
        synth.render_person(rng, dict(base, occlusion_down=1))
    with pytest.raises(ValueError, match="size"):
        synth.render_person(rng, base, size=(8, 4))
    with pytest.raises(ValueError, match="coat outfit needs"):
        synth.render_person(rng, dict(base, long_trousers=1), person=synth.Person(style="coat"))
    with pytest.raises(ValueError, match="sportswear"):
        synth.render_person(rng, dict(base, female=1, skirt=1), person=synth.Person(style="sport"))
    with pytest.raises(ValueError, match="age"):
        synth.render_person(rng, dict(base, long_trousers=1), person=synth.Person(age="teen"))


def test_render_sizes_and_determinism():
    for i in range(12):
        attrs = synth.sample_attributes(synth.sample_rng(5, i))
        img = synth.render_person(synth.sample_rng(5, i), attrs)
        w, h = img.size
        assert img.mode == "RGB"
        assert synth.CROP_HEIGHT_RANGE[0] <= h <= synth.CROP_HEIGHT_RANGE[1]
        assert 0.35 - 1 / h <= w / h <= 0.5 + 1 / h
        again = synth.render_person(synth.sample_rng(5, i), attrs)
        assert np.array_equal(np.asarray(img), np.asarray(again))
    fixed = synth.render_person(np.random.default_rng(1), attrs, size=(80, 32))
    assert fixed.size == (32, 80)
    # The crop is not flat: a person and a scene, not noise around one colour.
    arr = np.asarray(img, np.float32)
    assert arr.std() > 15


@pytest.mark.parametrize("attr, region", [("hat", "top"), ("glasses", "top"), ("boots", "bottom")])
def test_attributes_are_drawn_where_rap_finds_them(attr, region):
    """Toggling one attribute with the same generator changes pixels only in its body region."""
    base = dict.fromkeys(SYNTH_ATTRIBUTES, 0)
    base["long_trousers"] = 1
    h = 320
    for seed in range(6):
        off = np.asarray(synth.render_person(np.random.default_rng(seed), base, size=(h, 128)), np.int16)
        on = np.asarray(synth.render_person(np.random.default_rng(seed), dict(base, **{attr: 1}), size=(h, 128)),
                        np.int16)
        rows = np.flatnonzero(np.abs(on - off).max(axis=(1, 2)) > 0)
        assert len(rows) > 0, (attr, seed)
        if region == "top":
            assert rows.max() < 0.32 * h, (attr, seed, rows.max())
        else:
            assert rows.min() > 0.6 * h, (attr, seed, rows.min())


def _generate(tmp_path: Path, name: str, workers: int, n: int = 80) -> Path:
    out = tmp_path / name
    uri = synth.generate(str(out), n, seed=9, workers=workers, cameras=3)
    assert uri == f"{out}/manifest.parquet"
    return out


def test_generate_is_identical_for_any_worker_count(tmp_path):
    one = _generate(tmp_path, "one", workers=1)
    two = _generate(tmp_path, "two", workers=2)  # 80 crops = two chunks: both processes work
    files_one = sorted(p.relative_to(one) for p in one.rglob("*") if p.is_file())
    files_two = sorted(p.relative_to(two) for p in two.rglob("*") if p.is_file())
    assert files_one == files_two and len(files_one) == 81
    for rel in files_one:
        assert (one / rel).read_bytes() == (two / rel).read_bytes(), rel

    raw = pq.read_table(one / "manifest.parquet")
    assert raw.num_rows == 80
    assert raw["image_uri"][0].as_py() == "images/syn9-0000000.jpg"  # relative to the manifest
    assert raw.schema.field("captured_at").type.tz == "UTC"
    for attr in SYNTH_ATTRIBUTES:
        assert str(raw.schema.field(attr).type) == "int8"
    assert raw["occlusion_down"].to_numpy().max() == 0
    assert all(raw[c].null_count == 80 for c in ("bbox_x", "bbox_y", "bbox_w", "bbox_h"))

    table = read_manifest(str(one / "manifest.parquet"))
    df = table.to_pandas()
    assert df["crop_id"].is_unique
    assert df["split"].value_counts().to_dict() == {"train": 56, "test": 16, "val": 8}
    assert set(df["camera_id"]) == {"cam00", "cam01", "cam02"}
    night = df["captured_at"]
    assert night.min() >= synth.NIGHT_START and (night.max() - synth.NIGHT_START).total_seconds() <= 10 * 3600
    for uri in df["image_uri"][:5]:
        w, h = Image.open(uri).size
        assert 90 <= h <= 550 and 0.34 <= w / h <= 0.51


def test_generate_seed_changes_output(tmp_path):
    a = synth.generate(str(tmp_path / "a"), 3, seed=1, workers=1)
    b = synth.generate(str(tmp_path / "b"), 3, seed=2, workers=1)
    first_a = (tmp_path / "a/images/syn1-0000000.jpg").read_bytes()
    assert first_a != (tmp_path / "b/images/syn2-0000000.jpg").read_bytes()
    assert read_manifest(a).num_rows == read_manifest(b).num_rows == 3


def test_generate_rejects_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="n must be"):
        synth.generate(str(tmp_path), 0)
    with pytest.raises(ValueError, match="splits"):
        synth.generate(str(tmp_path), 10, splits=(0.5, 0.2, 0.2))
    with pytest.raises(ValueError, match="workers"):
        synth.generate(str(tmp_path), 10, workers=0)
    with pytest.raises(ValueError, match="cameras"):
        synth.generate(str(tmp_path), 10, cameras=0)


def test_generate_to_s3(storage, s3_bucket):
    import boto3

    uri = synth.generate(f"s3://{s3_bucket}/synth", 12, seed=4, storage=storage, workers=1)
    assert uri == f"s3://{s3_bucket}/synth/manifest.parquet"
    s3 = boto3.client("s3", endpoint_url=storage.endpoint_url, region_name="us-east-1")
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket=s3_bucket, Prefix="synth/")["Contents"]}
    assert len([k for k in keys if k.startswith("synth/images/") and k.endswith(".jpg")]) == 12
    table = read_manifest(uri, storage=storage)
    first = table["image_uri"][0].as_py()
    assert first == f"s3://{s3_bucket}/synth/images/syn4-0000000.jpg"
    body = s3.get_object(Bucket=s3_bucket, Key="synth/images/syn4-0000000.jpg")["Body"].read()
    assert body[:2] == b"\xff\xd8"  # JPEG


def _mean_accuracy(labels: np.ndarray, scores: np.ndarray) -> float:
    """DESIGN.md mA: mean over attributes of (positive recall + negative recall) / 2."""
    pred = scores >= 0.5
    pos, neg = labels == 1, labels == 0
    pos_recall = (pred & pos).sum(0) / np.maximum(pos.sum(0), 1)
    neg_recall = (~pred & neg).sum(0) / np.maximum(neg.sum(0), 1)
    keep = (pos.sum(0) > 0) & (neg.sum(0) > 0)
    return float(((pos_recall + neg_recall) / 2)[keep].mean())


@pytest.mark.slow
def test_synthetic_attributes_are_learnable(tmp_path):
    """A tiny CNN trained for 16 epochs on 1200 crops clearly beats the majority-class mA of 0.5 on 300 others."""
    import torch
    import torch.nn as nn

    from attrgan.data.manifest import label_columns

    torch.manual_seed(0)
    uri = synth.generate(str(tmp_path / "d"), 1500, seed=21, workers=2, splits=(0.8, 0.0, 0.2))
    table = read_manifest(uri)
    attrs = [a for a in SYNTH_ATTRIBUTES if a != OCCLUSION_DOWN]
    images = np.stack([np.asarray(Image.open(u).convert("RGB").resize((32, 80), Image.BILINEAR))
                       for u in table["image_uri"].to_pylist()])
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1  # (N, 3, 80, 32) in [-1, 1]
    y = label_columns(table, attrs)
    train = np.asarray(table["split"].to_pylist()) == "train"
    xt, yt = x[train], torch.from_numpy(y[train]).float()

    def block(cin: int, cout: int) -> nn.Module:
        return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(), nn.MaxPool2d(2))

    # Flattened 5x2 feature map: the head knows where on the body a feature is (attributes are local).
    net = nn.Sequential(block(3, 16), block(16, 32), block(32, 64), block(64, 64),
                        nn.Flatten(), nn.Dropout(0.2), nn.Linear(64 * 5 * 2, len(attrs)))
    ratio = yt.mean(0).clamp(0.02, 0.98)
    w_pos, w_neg = torch.exp(1 - ratio), torch.exp(ratio)  # eq. (2) weighting against imbalance
    epochs, batch = 16, 64
    opt = torch.optim.Adam(net.parameters(), lr=3e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, 3e-3, total_steps=epochs * -(-len(xt) // batch))
    # A fixed number of steps (~25 s of CPU), not a time budget: the same result on a busy machine.
    for _ in range(epochs):
        for idx in torch.randperm(len(xt)).split(batch):
            xb, yb = xt[idx], yt[idx]
            xb = torch.where(torch.rand(len(idx), 1, 1, 1) < 0.5, xb, xb.flip(3))  # mirror half the batch
            weight = torch.where(yb > 0.5, w_pos, w_neg)
            loss = nn.functional.binary_cross_entropy_with_logits(net(xb), yb, weight=weight)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    net.eval()
    with torch.no_grad():
        scores = torch.sigmoid(net(x[~train])).numpy()
    ma = _mean_accuracy(y[~train], scores)
    assert ma > 0.62, ma  # ~0.68 when written


# The default output's manifest content, computed with the generator as it was before tracks existed.
DEFAULT_MANIFEST_SHA256 = "08a77520b0176ef03a06dc8473e75282f351c305cf30e909b93b4d80e2b89cc5"


def _content_hash(table) -> str:
    return hashlib.sha256(json.dumps(table.to_pylist(), default=str).encode()).hexdigest()


def _single_crop(seed: int, cameras: int, index: int) -> bytes:
    """The stored JPEG of crop `index` drawn on its own by the per-crop renderer."""
    rng = synth.sample_rng(seed, index)
    person, attrs = synth.sample_person(rng)
    cam = int(rng.integers(cameras))
    rng.uniform(0, 1)  # captured_at
    buf = io.BytesIO()
    image = synth.render_person(rng, attrs, camera=synth.camera_styles(seed, cameras)[cam], person=person)
    image.save(buf, "JPEG", quality=synth.IMAGE_QUALITY)
    return buf.getvalue()


def test_generate_without_tracks_draws_what_it_drew_before(tmp_path):
    uri = synth.generate(str(tmp_path / "d"), 10, seed=5, cameras=2, workers=1)
    raw = pq.read_table(uri)
    assert "track_id" not in raw.column_names and "frame_index" not in raw.column_names
    assert _content_hash(raw) == DEFAULT_MANIFEST_SHA256
    for i in range(3):
        assert (tmp_path / f"d/images/syn5-{i:07d}.jpg").read_bytes() == _single_crop(5, 2, i)


def test_track_lengths_are_mostly_short_with_a_long_tail():
    rng = np.random.default_rng(0)
    lengths = np.array([synth.sample_track_length(rng) for _ in range(20_000)])
    assert lengths.min() == 3 and lengths.max() == 40
    assert np.median(lengths) == 7 and 9.0 < lengths.mean() < 9.5  # the module docstring's figures
    assert 0.33 < (lengths <= 5).mean() < 0.38 and 0.07 < (lengths >= 20).mean() < 0.1


def test_track_heights_grow_towards_the_camera_and_shrink_away_from_it():
    assert synth.track_heights((100, 120), 5, approaching=True)[::4] == [100, 120]
    assert synth.track_heights((120, 100), 5, approaching=False)[::4] == [120, 100]
    capped = synth.track_heights((90, 500), 11, approaching=True)  # 10 steps of at most 5 %
    assert capped[0] == 90 and capped[-1] == round(90 * np.exp(0.5))
    assert all(b > a for a, b in zip(capped, capped[1:]))
    assert synth.track_heights((90, 500), 1, approaching=False) == [500]


def _thumb(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("L").resize((16, 40)), np.float32)


def test_tracks_show_one_person_each_and_keep_the_splits(tmp_path):
    kwargs = dict(seed=2, cameras=3, splits=(0.5, 0.25, 0.25), track_splits=("val", "test"))
    one = Path(synth.generate(str(tmp_path / "one"), 40, workers=1, **kwargs)).parent
    two = Path(synth.generate(str(tmp_path / "two"), 40, workers=2, **kwargs)).parent  # two tasks: crops, tracks
    files = sorted(p.relative_to(one) for p in one.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(two) for p in two.rglob("*") if p.is_file()) and len(files) == 41
    assert all((one / rel).read_bytes() == (two / rel).read_bytes() for rel in files)

    df = read_manifest(str(one / "manifest.parquet")).to_pandas()
    assert df["split"].value_counts().to_dict() == {"train": 20, "val": 10, "test": 10}
    train = df[df["split"] == "train"]
    assert train["track_id"].isna().all() and train["frame_index"].isna().all()
    # The other splits' crops are what the generator draws without tracks.
    for i in train.index[:3]:
        assert (one / "images" / f"syn2-{i:07d}.jpg").read_bytes() == _single_crop(2, 3, i)

    tracked = df[df["track_id"].notna()]
    lengths = []
    for split in ("val", "test"):
        in_split = tracked[tracked["split"] == split]
        order = list(dict.fromkeys(in_split["track_id"]))  # tracks in the order their frames come
        lengths += [(in_split["track_id"] == t).sum() for t in order]
        assert all(3 <= n <= 40 for n in lengths[len(lengths) - len(order):-1])  # the last may be shorter
    for track, rows in tracked.groupby("track_id"):
        assert rows["split"].nunique() == 1 and rows["camera_id"].nunique() == 1, track  # one split, one camera
        assert (rows[list(SYNTH_ATTRIBUTES)].nunique() == 1).all(), track  # the labels are the person's
        assert rows["frame_index"].tolist() == list(range(len(rows))), track
        gaps = rows["captured_at"].diff().dt.total_seconds().dropna()
        assert ((gaps >= 0.199) & (gaps <= 0.501)).all(), track
        heights = [Image.open(u).size[1] for u in rows["image_uri"]]
        steps = np.diff(np.log(heights))
        assert (np.abs(steps) <= 0.05 + 1 / min(heights)).all() and ((steps >= 0).all() or (steps <= 0).all())
        assert len(heights) < 3 or heights[0] != heights[-1], (track, heights)
    assert sum(lengths) == 20
    # Consecutive frames show one person: closer to each other than to another track's frame.
    uris = tracked.groupby("track_id")["image_uri"].apply(list)
    first, other = uris.iloc[0], uris.iloc[1]
    near = np.abs(_thumb(Path(first[0])) - _thumb(Path(first[1]))).mean()
    assert near < 0.5 * np.abs(_thumb(Path(first[0])) - _thumb(Path(other[0]))).mean()

"""Procedural pedestrian crops: the product's default dataset.

One module on purpose (it is long): the body, clothing, scene and camera stages share one person's
parameters and one random stream per crop, and read best in the order a crop is drawn.

Each crop looks like pedestrian-detector output from an indoor surveillance camera: one person
filling most of the crop (aspect 0.35–0.5) with some margin jitter, seen from the front or the
back, on a camera-specific background (wall and floor, textures, tiles, clutter, bystanders cut by
the border), under colour cast, uneven lighting, sensor noise, blur, softness and JPEG artefacts.

Crop heights spread like RAP's (36×92 to 344×554 px; Li et al. 2016): a log-normal truncated to
90–550 px, median about 170 px, two thirds under 200 px (`sample_crop_size`). Their ×4
downsamples are 22–137 px tall, as small as lowRAP's; about 46 % of the clean crops are already
small enough (<= 160 px) for the pipeline's super-resolution rule.

The labels are `attrgan.attributes.SYNTH_ATTRIBUTES` (RAP ids). Every attribute is drawn where
RAP finds it (hat and glasses on the head, short sleeves on the arms, skirt and boots on the
legs, bags beside the body), mutually consistent (exactly one lower garment; a box or a plastic
bag is held in the hand) and imbalanced like RAP (hat, glasses, muffler, box, boots, dress under
10 % positive). Latent traits that are not labels tie them together the way real clothing does
(`Person`, `sample_person`): sex, an age group (child / young adult / adult / elderly) and the
weather pick an outfit style (casual, business, dress, sport, coat, uniform), and the style sets
which garments go together and how their colours match: a suit is one dark colour, a uniform's
top and trousers one colour, a casual outfit a free mix. So the visible upper body says something
about the lower body without copying it. `occlusion_down` is 0: crops are clean;
`attrgan.corrupt` makes occluded ones.

Surveillance footage shows people as tracks: one person over consecutive frames. The splits named
in `generate(track_splits=...)` are rendered as tracks (`plan_tracks`, `render_track`): one person,
labels, outfit, camera and scene per track, drawn frame after frame while they walk towards the
camera (seen from the front, the crop growing) or away from it (from the back, shrinking), log-height
interpolated between two `sample_crop_size` heights at most 5 % per frame, with the pose and the
light jittered a little and fresh sensor noise in every frame, 0.2-0.5 s apart. As in tracker output
such as MARS's (Zheng et al. 2016: about 20,000 tracklets of 1,261 people, detector boxes linked by
a tracker) or RAP v2's many crops per person, most tracks are short with a long tail: a truncated
log-normal over 3-40 frames, median 7, mean 9.2 (`sample_track_length`; the parameters are
this generator's choice, not fitted to a dataset). A split's last track takes what is left of the
split and may be shorter.

Everything is seeded: sample `i` of `generate(seed=s)` uses its own generator seeded from
(s, i), track `k` its own seeded from (s, k) (`track_key`), so the output is byte-identical for any
number of worker processes.
"""

from __future__ import annotations

import colorsys
import dataclasses
import io
import math
import multiprocessing
import os
import statistics
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from datetime import datetime, timedelta, timezone
from functools import partial
from typing import TYPE_CHECKING, Any, cast

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from attrgan.attributes import OCCLUSION_DOWN, SYNTH_ATTRIBUTES
from attrgan.config import StorageConfig

if TYPE_CHECKING:
    import pyarrow as pa

# Crop heights: RAP's pedestrians are 92-554 px tall (36x92 to 344x554, Li et al. 2016), most of
# them far from the camera and small. A log-normal (median 160 px before truncation,
# sigma 0.45) truncated to this range gives a median of about 170 px, 66 % under 200 px, 46 %
# at or under the pipeline's super-resolution height (160) and 8 % over 300 px. The x4
# low-resolution copies are 22-137 px tall, lowRAP-small.
CROP_HEIGHT_RANGE = (90, 550)
_HEIGHT_LOG = statistics.NormalDist(math.log(160.0), 0.45)
ASPECT_RANGE = (0.35, 0.5)
# A far person is cut from the frame at the sensor's own pixels; a near one fills more pixels than
# the optics resolve (and moves and defocuses more), so the camera's softness (native_scale) only
# brings a crop's detail down to this height, never below: small crops stay at native resolution.
SHARP_HEIGHT = 160
SPLIT_NAMES = ("train", "val", "test")
# Crops are "captured" during one night (UTC), spread uniformly over NIGHT_HOURS from NIGHT_START.
NIGHT_START = datetime(2024, 1, 15, 20, 0, tzinfo=timezone.utc)
NIGHT_HOURS = 10.0
IMAGE_QUALITY = 92  # stored JPEG quality; the camera's own compression happens in render_person
_SUPERSAMPLE = 2  # the person is drawn at 2x and downscaled: anti-aliased edges for free
_CHUNK = 64  # crops per worker task

# Tracks (`generate(track_splits=...)`): one person over consecutive frames. Lengths follow a
# log-normal (median 6.5 frames before truncation, sigma 0.8) truncated to TRACK_LENGTH_RANGE and
# floored: median 7, mean 9.2, 36 % of the tracks 5 frames or shorter, 8 % 20 or longer (holding
# 24 % of the tracked crops; 100,000 draws). At 2-5 frames a second (FRAME_SPACING_S) a median
# track is 1.4-3.5 s in view.
TRACK_LENGTH_RANGE = (3, 40)
_TRACK_LOG = statistics.NormalDist(math.log(6.5), 0.8)
FRAME_SPACING_S = (0.2, 0.5)
# Walking at about 1.4 m/s past a camera some 10 m away changes the distance, and so the crop height,
# by up to about 5 % per frame: log-height steps are capped at this.
MAX_LOG_HEIGHT_STEP = 0.05
# Between frames each continuous draw of the pose and the light moves by up to this share of its
# range around the track's value: the same person, a little differently posed and lit.
FRAME_JITTER = 0.08

Color = tuple[int, int, int]


# --------------------------------------------------------------------------------------------
# Attributes


AGE_GROUPS = ("child", "young", "adult", "elderly")
STYLES = ("casual", "business", "dress", "sport", "coat", "uniform")
FEMALE_RATE = 0.45
COLD_RATE = 0.5  # half the crops are "captured" in cold weather (coats, mufflers, boots, hats)
# Age groups, adult-dominated like RAP's annotations (a shopping mall: few children, RAP's
# AgeLess16 is a rare attribute; most people 17-45): child (< 16), young adult (16-30),
# adult (31-60), elderly (> 60).
AGE_RATES = {"child": 0.04, "young": 0.44, "adult": 0.42, "elderly": 0.10}
# P(style | sex, age group) before the weather reweights it (STYLE_WEATHER); columns follow STYLES.
# Business wear is for working-age adults, sportswear for the young, dresses for women, coats
# most common among the elderly, uniforms for staff and school children.
STYLE_RATES: dict[tuple[str, str], tuple[float, ...]] = {
    #                      casual business dress sport  coat  uniform
    ("male", "child"):     (0.50, 0.00, 0.00, 0.30, 0.05, 0.15),
    ("female", "child"):   (0.40, 0.00, 0.15, 0.25, 0.05, 0.15),
    ("male", "young"):     (0.55, 0.08, 0.00, 0.22, 0.08, 0.07),
    ("female", "young"):   (0.50, 0.06, 0.16, 0.14, 0.09, 0.05),
    ("male", "adult"):     (0.45, 0.25, 0.00, 0.08, 0.12, 0.10),
    ("female", "adult"):   (0.43, 0.17, 0.14, 0.06, 0.14, 0.06),
    ("male", "elderly"):   (0.55, 0.10, 0.00, 0.05, 0.27, 0.03),
    ("female", "elderly"): (0.50, 0.05, 0.12, 0.04, 0.27, 0.02),
}
# Weather weights per style (cold, warm): coats in the cold, dresses and sportswear in the warm.
STYLE_WEATHER: dict[str, tuple[float, float]] = {
    "casual": (1.0, 1.0), "business": (1.0, 1.0), "dress": (0.5, 1.4), "sport": (0.6, 1.3),
    "coat": (1.5, 0.15), "uniform": (1.0, 1.0),
}


@dataclasses.dataclass(frozen=True)
class Person:
    """A person's latent traits: not labels, but they shape the labels and the picture.

    age: one of AGE_GROUPS (a child is drawn with a larger head and a slighter build, the
    elderly mostly grey-haired). style: one of STYLES (which garments go together, their cut and
    colours). `check_person` says which label sets a style allows.
    """

    age: str = "adult"
    style: str = "casual"


def style_rates(female: bool, age: str, cold: bool) -> dict[str, float]:
    """P(style) for a person of this sex, age group and weather: STYLE_RATES × STYLE_WEATHER, normalised."""
    row = STYLE_RATES[("female" if female else "male", age)]
    w = {k: r * STYLE_WEATHER[k][0 if cold else 1] for k, r in zip(STYLES, row)}
    total = sum(w.values())
    return {k: v / total for k, v in w.items()}


def sample_person(rng: np.random.Generator) -> tuple[Person, dict[str, int]]:
    """Draw one person: latent traits and labels ({attribute id: 0/1} for every SYNTH_ATTRIBUTES id).

    Sex, age group (AGE_RATES) and weather (COLD_RATE) pick the outfit style (`style_rates`); the
    style decides the garments: business = a blazer (85 %) over long trousers (women: 45 % a
    skirt); dress = a dress, a jacket over it in the cold; sport = short sleeves or a track
    jacket, over shorts (warm 55 %) or track trousers, backpacks likely; coat = a knee-length
    coat (the jacket label) over trousers or a skirt, mufflers, hats and boots likely;
    uniform = long trousers (women: 25 % a skirt); casual = the free mix. Approximate
    prevalences are in `sample_attributes`.
    """
    u = rng.random
    female = u() < FEMALE_RATE
    cold = u() < COLD_RATE
    age = AGE_GROUPS[int(rng.choice(len(AGE_GROUPS), p=list(AGE_RATES.values())))]
    rates = style_rates(female, age, cold)
    style = STYLES[int(rng.choice(len(STYLES), p=list(rates.values())))]
    child, elderly = age == "child", age == "elderly"
    a = dict.fromkeys(SYNTH_ATTRIBUTES, 0)
    a["female"] = int(female)
    a["long_hair"] = int(u() < ((0.35 if elderly else 0.62) if female else 0.04))
    a["hat"] = int(u() < {"coat": 0.15, "sport": 0.10, "uniform": 0.12, "business": 0.02}.get(
        style, 0.08 if cold else 0.03))
    a["glasses"] = int(u() < {"child": 0.02, "young": 0.05, "adult": 0.07, "elderly": 0.18}[age])
    a["muffler"] = int(u() < (0.25 if style == "coat" else (0.1 if cold else 0.01)))

    # Upper and lower garment, and how likely short sleeves are when neither a jacket nor a
    # muffler rules them out (short sleeves under a jacket are (almost) never annotated).
    if style == "business":
        jacket = u() < 0.85  # blazer; without it a shirt
        lower = "skirt" if female and u() < 0.45 else "long_trousers"
        sleeves = 0.0 if cold else 0.3
    elif style == "dress":
        jacket = u() < (0.35 if cold else 0.08)
        lower = "dress"
        sleeves = 0.1 if cold else 0.55
    elif style == "sport":
        jacket = u() < (0.55 if cold else 0.15)  # track jacket
        lower = None if u() < (0.1 if cold else 0.55) else "long_trousers"  # shorts or track trousers
        sleeves = 0.4 if cold else 0.85
    elif style == "coat":
        jacket = True  # knee-length coat
        lower = "skirt" if female and u() < 0.2 else "long_trousers"
        sleeves = 0.0
    elif style == "uniform":
        jacket = u() < (0.4 if cold else 0.1)
        lower = "skirt" if female and u() < 0.25 else "long_trousers"
        sleeves = 0.1 if cold else 0.5
    else:  # casual: exactly one lower garment among dress, skirt, long trousers, shorts (no label)
        jacket = u() < (0.3 if cold else 0.06)
        if female:
            probs = (0.06, 0.25, 0.67, 0.02) if cold else (0.12, 0.28, 0.42, 0.18)
        else:
            probs = (0.0, 0.0, 0.97, 0.03) if cold else (0.0, 0.0, 0.72, 0.28)
        lower = ("dress", "skirt", "long_trousers", None)[int(rng.choice(4, p=probs))]
        sleeves = 0.06 if cold else 0.5
    a["jacket"] = int(jacket)
    if not a["jacket"] and not a["muffler"]:
        a["short_sleeve"] = int(u() < sleeves)
    if lower is not None:
        a[lower] = 1
    if style == "coat":
        boots = 0.35 if female else 0.12
    elif style in ("casual", "dress"):
        boots = ((0.25 if female else 0.08) if cold else 0.01)
    else:
        boots = 0.1 if style == "business" and female and cold else 0.0
    a["boots"] = int(u() < boots)
    if child:
        backpack = 0.45  # school bags
    else:
        backpack = {"sport": 0.3, "business": 0.06, "dress": 0.04, "coat": 0.07, "uniform": 0.05}.get(
            style, 0.10 if female else 0.14) * (0.4 if elderly else 1.0)
    a["backpack"] = int(u() < backpack)
    if female:
        handbag = {"business": 0.35, "dress": 0.4, "coat": 0.3, "sport": 0.05, "uniform": 0.05}.get(style, 0.22)
    else:
        handbag = 0.08 if style == "business" else 0.03  # briefcases count
    a["handbag"] = int(u() < handbag * (0.1 if child else 1.0))
    a["box"] = int(u() < {"child": 0.01, "elderly": 0.03}.get(age, 0.12 if style == "uniform" else 0.06))
    a["plastic_bag"] = int(u() < {"child": 0.03, "elderly": 0.15}.get(age, 0.08))
    # A box or a plastic bag is carried by hand; a handbag is in the hand or on the forearm;
    # a few people hold something unlabelled (phone, bottle, umbrella).
    in_hand = a["box"] or a["plastic_bag"] or (a["handbag"] and u() < 0.55) or u() < 0.06
    a["carry_by_hand"] = int(bool(in_hand))
    a[OCCLUSION_DOWN] = 0
    return Person(age=age, style=style), a


def sample_attributes(rng: np.random.Generator) -> dict[str, int]:
    """Draw one person's labels: {attribute id: 0/1} for every id in SYNTH_ATTRIBUTES.

    The labels of `sample_person` (the same draws). Approximate prevalences (20,000 draws):
    female 0.45, long_hair 0.29, hat 0.07, glasses 0.07, muffler 0.07, short_sleeve 0.25,
    jacket 0.37, long_trousers 0.70, skirt 0.10, dress 0.08, boots 0.07, backpack 0.13,
    handbag 0.13, box 0.06, plastic_bag 0.08, carry_by_hand 0.25.
    """
    return sample_person(rng)[1]


def check_person(person: Person, attrs: dict[str, int]) -> None:
    """Raise ValueError unless `person`'s age group and style exist and the style allows `attrs`."""
    if person.age not in AGE_GROUPS or person.style not in STYLES:
        raise ValueError(f"person must have an age in {AGE_GROUPS} and a style in {STYLES}, got {person}")
    need = {"business": ("long_trousers", "skirt"), "dress": ("dress",), "coat": ("jacket",),
            "uniform": ("long_trousers", "skirt")}.get(person.style)
    if need is not None and not any(attrs[k] for k in need):
        raise ValueError(f"a {person.style} outfit needs one of {need}, got none")
    if person.style == "sport" and (attrs["skirt"] or attrs["dress"]):
        raise ValueError("sportswear has shorts or track trousers: no skirt or dress")


def sample_crop_size(rng: np.random.Generator) -> tuple[int, int]:
    """A detector-like crop size (height, width): the height from the log-normal truncated to
    CROP_HEIGHT_RANGE (one uniform draw through the inverse CDF), aspect in ASPECT_RANGE."""
    lo, hi = CROP_HEIGHT_RANGE
    a, b = _HEIGHT_LOG.cdf(math.log(lo)), _HEIGHT_LOG.cdf(math.log(hi + 1))
    h = min(hi, max(lo, int(math.exp(_HEIGHT_LOG.inv_cdf(rng.uniform(a, b))))))  # floor into [lo, hi]
    return h, max(8, round(h * rng.uniform(*ASPECT_RANGE)))


def check_attributes(attrs: dict[str, int]) -> None:
    """Raise ValueError unless `attrs` is a complete, mutually consistent synthetic label set."""
    missing = [k for k in SYNTH_ATTRIBUTES if k not in attrs]
    if missing:
        raise ValueError(f"attributes missing {missing}; expected every id in SYNTH_ATTRIBUTES")
    bad = {k: v for k, v in attrs.items() if k in SYNTH_ATTRIBUTES and v not in (0, 1)}
    if bad:
        raise ValueError(f"attribute values must be 0 or 1, got {bad}")
    lower = [k for k in ("dress", "skirt", "long_trousers") if attrs[k]]
    if len(lower) > 1:
        raise ValueError(f"dress, skirt and long_trousers exclude each other, got {lower}")
    if (attrs["box"] or attrs["plastic_bag"]) and not attrs["carry_by_hand"]:
        raise ValueError("a box or plastic bag is carried by hand: carry_by_hand must be 1")
    if attrs["jacket"] and attrs["short_sleeve"]:
        raise ValueError("jacket sleeves are long: jacket and short_sleeve exclude each other")
    if attrs[OCCLUSION_DOWN]:
        raise ValueError("the renderer draws clean crops: occlusion_down must be 0 "
                         "(use attrgan.corrupt.occlude for occluded ones)")


# --------------------------------------------------------------------------------------------
# Colours


def _hsv(h: float, s: float, v: float) -> Color:
    r, g, b = colorsys.hsv_to_rgb(h % 1.0, min(max(s, 0.0), 1.0), min(max(v, 0.0), 1.0))
    return int(r * 255), int(g * 255), int(b * 255)


def _jitter(rng: np.random.Generator, color: Color, amount: float) -> Color:
    c = np.asarray(color, np.float32) * (1 + rng.uniform(-amount, amount)) + rng.uniform(-12, 12, 3)
    return tuple(int(x) for x in np.clip(c, 0, 255))  # type: ignore[return-value]


_SKIN = ((241, 204, 176), (224, 172, 135), (198, 144, 104), (160, 108, 72), (112, 74, 50), (233, 190, 160))
_HAIR = ((20, 16, 14), (45, 30, 22), (82, 55, 36), (130, 95, 60), (196, 160, 100), (150, 150, 150), (110, 45, 25))
_HAIR_P = (0.35, 0.25, 0.15, 0.08, 0.08, 0.05, 0.04)
_NEUTRAL = ((22, 22, 24), (40, 40, 44), (90, 90, 94), (150, 150, 150), (225, 225, 222),
            (30, 38, 70), (200, 185, 150), (95, 75, 55))


# Style palettes: suits are dark and sober, shirts pale, uniforms a few institutional colours,
# coats dark or camel; jeans are the commonest trousers of all.
_SUIT = ((22, 22, 26), (45, 47, 52), (30, 36, 62), (70, 72, 78), (60, 45, 35))
_SHIRT = ((235, 235, 232), (200, 215, 235), (235, 215, 215), (225, 225, 205))
_UNIFORM = ((28, 34, 62), (25, 25, 28), (40, 70, 45), (150, 135, 95), (150, 180, 210), (90, 92, 96), (95, 30, 40))
_COAT = ((25, 25, 28), (160, 120, 80), (70, 70, 74), (30, 36, 62), (70, 75, 45), (100, 35, 40), (195, 180, 150))
_DENIM = (50, 70, 110)
_LEATHER = ((20, 18, 16), (65, 42, 28))
_GREY_HAIR = ((150, 150, 150), (200, 200, 196), (110, 108, 106))


def _pick(rng: np.random.Generator, palette: Sequence[Color], amount: float) -> Color:
    return _jitter(rng, palette[int(rng.integers(len(palette)))], amount)


def _clothing(rng: np.random.Generator) -> Color:
    """Real clothes are mostly dark and neutral; a third are saturated colours."""
    if rng.random() < 0.62:
        return _jitter(rng, _NEUTRAL[int(rng.integers(len(_NEUTRAL)))], 0.15)
    return _hsv(rng.random(), rng.uniform(0.35, 0.9), rng.uniform(0.3, 0.95))


def _contrasting(rng: np.random.Generator, other: Color, min_dist: float = 90.0) -> Color:
    for _ in range(20):
        c = _clothing(rng)
        if np.linalg.norm(np.subtract(c, other)) >= min_dist:
            return c
    return tuple(255 - x for x in other)  # type: ignore[return-value]


# --------------------------------------------------------------------------------------------
# Cameras and backgrounds


@dataclasses.dataclass(frozen=True)
class CameraStyle:
    """What one camera's crops share: the scene's colours and the sensor's character."""

    wall: Color
    floor: Color
    horizon: float  # where the floor starts, as a fraction of the person's height from the top
    tiles: bool  # tiled floor
    panels: bool  # vertical wall panels / shop fronts
    cast: tuple[float, float, float]  # per-channel gain (white balance)
    brightness: float
    noise: float  # sensor noise std in grey levels
    blur: float  # extra blur radius at 256 px crop height
    jpeg_quality: tuple[int, int]
    native_scale: tuple[float, float]  # the sensor resolves this fraction of the crop size (floor: SHARP_HEIGHT)

    @classmethod
    def sample(cls, rng: np.random.Generator) -> "CameraStyle":
        return cls(
            wall=_hsv(rng.random(), rng.uniform(0.0, 0.35), rng.uniform(0.35, 0.9)),
            floor=_hsv(rng.random(), rng.uniform(0.0, 0.3), rng.uniform(0.25, 0.75)),
            horizon=float(rng.uniform(0.45, 0.8)),
            tiles=bool(rng.random() < 0.5),
            panels=bool(rng.random() < 0.5),
            cast=tuple(float(x) for x in rng.uniform(0.85, 1.15, 3)),  # type: ignore[arg-type]
            brightness=float(rng.uniform(0.75, 1.15)),
            noise=float(rng.uniform(1.0, 6.0)),
            blur=float(rng.uniform(0.2, 1.0)),
            jpeg_quality=(int(rng.integers(30, 55)), int(rng.integers(65, 92))),
            native_scale=(float(rng.uniform(0.45, 0.7)), 1.0),
        )


def camera_styles(seed: int, cameras: int) -> list[CameraStyle]:
    """The styles of `cameras` cameras for a dataset seed (independent of the samples' seeds)."""
    return [CameraStyle.sample(np.random.default_rng([seed, cameras, 1 << 30, c])) for c in range(cameras)]


def _background(rng: np.random.Generator, style: CameraStyle, h: int, w: int, horizon_y: int) -> Image.Image:
    """(h, w) RGB scene: wall above `horizon_y`, floor below, texture, clutter and bystanders."""
    wall = np.asarray(_jitter(rng, style.wall, 0.12), np.float32)
    floor = np.asarray(_jitter(rng, style.floor, 0.12), np.float32)
    rows = np.arange(h, dtype=np.float32)[:, None, None]
    img = np.where(rows < horizon_y, wall, floor) * np.ones((1, w, 1), np.float32)
    # Vertical gradient (ceiling light falloff) and low-frequency texture.
    img *= np.linspace(rng.uniform(0.8, 1.15), rng.uniform(0.8, 1.15), h, dtype=np.float32)[:, None, None]
    lo = rng.uniform(0.85, 1.15, (int(rng.integers(3, 9)), int(rng.integers(2, 6)))).astype(np.float32)
    img *= np.asarray(Image.fromarray(lo, mode="F").resize((w, h), Image.BICUBIC))[:, :, None]
    bg = Image.fromarray(img.clip(0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(bg, "RGBA")
    line = tuple(int(x) for x in floor * 0.7) + (160,)
    if style.tiles:
        step = int(rng.integers(18, 40))
        off = int(rng.integers(step))
        for x in range(-off, w, step):
            draw.line([(x, horizon_y), (x + (x - w / 2) * 0.6, h)], fill=line, width=1)
        y, gap = horizon_y + 4, 6.0
        while y < h:
            draw.line([(0, int(y)), (w, int(y))], fill=line, width=1)
            gap *= 1.35
            y += gap
    if style.panels:
        step = int(rng.integers(w // 3, w + 1))
        for x in range(int(rng.integers(step)), w, step):
            edge = tuple(int(c * 0.75) for c in wall) + (200,)
            draw.rectangle([x, 0, x + int(rng.integers(2, 8)), horizon_y], fill=edge)
    # Clutter: shop windows, signs, poles, planters, floor objects; some translucent.
    for _ in range(int(rng.integers(1, 7))):
        kind = rng.random()
        color = _hsv(rng.random(), rng.uniform(0, 0.8), rng.uniform(0.2, 0.95)) + (int(rng.integers(90, 256)),)
        x0, y0 = rng.uniform(-0.2, 1.0) * w, rng.uniform(-0.1, 1.0) * h
        if kind < 0.4:
            draw.rectangle([x0, y0, x0 + rng.uniform(0.1, 0.7) * w, y0 + rng.uniform(0.05, 0.4) * h], fill=color)
        elif kind < 0.6:
            pw = rng.uniform(0.02, 0.08) * w
            draw.rectangle([x0, 0, x0 + pw, h], fill=color)
        elif kind < 0.85:
            r = rng.uniform(0.05, 0.25) * w
            draw.ellipse([x0 - r, y0 - r, x0 + r, y0 + r * rng.uniform(0.5, 1.5)], fill=color)
        else:
            xs = x0 + rng.uniform(-0.15, 0.15, 4) * w
            ys = y0 + rng.uniform(-0.1, 0.1, 4) * h
            draw.polygon(list(zip(xs.tolist(), ys.tolist())), fill=color)
    # Bystanders cut by the crop border (detector crops often contain parts of other people).
    if rng.random() < 0.3:
        side = -1 if rng.random() < 0.5 else 1
        bx = (0 if side < 0 else w) + side * rng.uniform(-0.15, 0.05) * w
        unit = h * rng.uniform(0.6, 1.0)
        top = rng.uniform(-0.1, 0.3) * h
        body = _clothing(rng)
        draw.rectangle([bx - 0.13 * unit, top + 0.17 * unit, bx + 0.13 * unit, top + 0.55 * unit], fill=body)
        legs = _clothing(rng)
        draw.rectangle([bx - 0.1 * unit, top + 0.52 * unit, bx + 0.1 * unit, top + unit], fill=legs)
        skin = _jitter(rng, _SKIN[int(rng.integers(len(_SKIN)))], 0.1)
        draw.ellipse([bx - 0.05 * unit, top, bx + 0.05 * unit, top + 0.13 * unit], fill=skin)
    return bg


# --------------------------------------------------------------------------------------------
# The person


class _Canvas:
    """Draws on the supersampled RGBA person layer in crop coordinates, with the body's lean."""

    def __init__(self, size: tuple[int, int], feet_y: float, lean: float):
        w, h = size
        self.image = Image.new("RGBA", (w * _SUPERSAMPLE, h * _SUPERSAMPLE), (0, 0, 0, 0))
        self.draw = ImageDraw.Draw(self.image, "RGBA")
        self.feet_y = feet_y
        self.shear = math.tan(lean)

    def p(self, x: float, y: float) -> tuple[float, float]:
        # Lean = shear about the feet: the head moves sideways, the feet stay on the floor.
        return (x + (self.feet_y - y) * self.shear) * _SUPERSAMPLE, y * _SUPERSAMPLE

    def polygon(self, points: Sequence[tuple[float, float]], fill: Any) -> None:
        self.draw.polygon([self.p(x, y) for x, y in points], fill=fill)

    def ellipse(self, cx: float, cy: float, rx: float, ry: float, fill: Any) -> None:
        x, y = self.p(cx, cy)
        s = _SUPERSAMPLE
        self.draw.ellipse([x - rx * s, y - ry * s, x + rx * s, y + ry * s], fill=fill)

    def line(self, points: Sequence[tuple[float, float]], fill: Any, width: float) -> None:
        self.draw.line([self.p(x, y) for x, y in points], fill=fill, width=max(1, round(width * _SUPERSAMPLE)))

    def limb(self, a: tuple[float, float], b: tuple[float, float], wa: float, wb: float, fill: Any) -> None:
        """A tapered segment from `a` (width wa) to `b` (width wb) with rounded ends."""
        dx, dy = b[0] - a[0], b[1] - a[1]
        n = math.hypot(dx, dy) or 1.0
        nx, ny = -dy / n, dx / n
        self.polygon([(a[0] + nx * wa / 2, a[1] + ny * wa / 2), (b[0] + nx * wb / 2, b[1] + ny * wb / 2),
                      (b[0] - nx * wb / 2, b[1] - ny * wb / 2), (a[0] - nx * wa / 2, a[1] - ny * wa / 2)], fill)
        self.ellipse(a[0], a[1], wa / 2, wa / 2, fill)
        self.ellipse(b[0], b[1], wb / 2, wb / 2, fill)


def _lerp(a: tuple[float, float], b: tuple[float, float], t: float) -> tuple[float, float]:
    return a[0] + (b[0] - a[0]) * t, a[1] + (b[1] - a[1]) * t


@dataclasses.dataclass
class _Body:
    """Keypoints in crop pixels (before lean) and the appearance of one person."""

    u: float  # person height in pixels
    top: float
    cx: float
    front: bool
    sw: float  # shoulder half-width
    ww: float  # waist half-width
    hw: float  # hip half-width
    y_sh: float
    y_waist: float
    y_hip: float
    y_knee: float
    y_ankle: float
    feet: float
    head: tuple[float, float]
    head_r: tuple[float, float]
    hips: tuple[tuple[float, float], tuple[float, float]]
    knees: tuple[tuple[float, float], tuple[float, float]]
    ankles: tuple[tuple[float, float], tuple[float, float]]
    shoulders: tuple[tuple[float, float], tuple[float, float]]
    elbows: list[tuple[float, float]]
    hands: list[tuple[float, float]]
    limb_w: float  # build factor for limb widths


def _make_body(rng: np.random.Generator, attrs: dict[str, int], h: int, w: int, hands: dict[str, str | None],
               age: str = "adult") -> _Body:
    u = h * rng.uniform(0.80, 0.94)
    top = (h - u) * rng.uniform(0.2, 0.8)
    cx = w / 2 + w * rng.uniform(-0.06, 0.06)
    female = bool(attrs["female"])
    build = rng.uniform(0.85, 1.18)
    # An adult's head is about 1/7.5 of the body height, a 6-12-year-old's about 1/6: the child's
    # head grows by `extra` (person heights) and the body below is compressed to fit; shoulders
    # and limbs are slighter.
    extra = 0.034 if age == "child" else 0.0
    if age == "child":
        build *= 0.85

    def y(f: float) -> float:
        return top + (extra + f * (1 - extra)) * u

    sw = u * (0.092 if female else 0.108) * build
    hw = u * (0.088 if female else 0.082) * build
    ww = hw * (0.78 if female else 0.92)
    y_sh, y_waist, y_hip = y(0.18), y(0.41), y(0.51)
    y_knee, y_ankle, feet = y(0.735), y(0.955), top + u
    ry = (0.066 + extra / 2) * u
    head_r = (ry * 0.79 * rng.uniform(0.93, 1.07), ry)
    head = (cx + rng.uniform(-0.01, 0.01) * u, top + head_r[1])
    hips = ((cx - hw * 0.5, y_hip), (cx + hw * 0.5, y_hip))
    # Leg stance: each foot a little in or out; a walking stride spreads them.
    stride = rng.uniform(0.0, 0.06) * u
    ankles = ((cx - hw * 0.5 - stride * rng.uniform(0.3, 1.0) + rng.uniform(-0.01, 0.01) * u, y_ankle),
              (cx + hw * 0.5 + stride * rng.uniform(0.3, 1.0) + rng.uniform(-0.01, 0.01) * u, y_ankle))
    knees = tuple(((hp[0] + an[0]) / 2 + rng.uniform(-0.008, 0.008) * u, y_knee) for hp, an in zip(hips, ankles))
    shoulders = ((cx - sw + 0.022 * u, y_sh + 0.02 * u), (cx + sw - 0.022 * u, y_sh + 0.02 * u))
    upper, fore = 0.185 * u * (1 - extra), 0.165 * u * (1 - extra)
    elbows, hand_pts = [], []
    for side, sh in zip((-1, 1), shoulders):
        held = hands["left" if side < 0 else "right"]
        if held == "box":
            # Both forearms forward: in 2D the hands come together in front of the waist.
            el = (sh[0] + side * 0.03 * u, sh[1] + upper * 0.92)
            hd = (cx + side * rng.uniform(0.07, 0.1) * u, top + rng.uniform(0.42, 0.47) * u)
        else:
            theta = math.radians(rng.uniform(6, 14) if held else rng.uniform(2, 20))
            bend = 0.0 if held else math.radians(rng.uniform(-8, 25))
            el = (sh[0] + side * upper * math.sin(theta), sh[1] + upper * math.cos(theta))
            f = fore * (1.0 if held else rng.uniform(0.75, 1.0))  # foreshortened when swung
            hd = (el[0] + side * f * math.sin(theta - bend), el[1] + f * math.cos(theta - bend))
        elbows.append(el)
        hand_pts.append(hd)
    return _Body(u=u, top=top, cx=cx, front=bool(rng.random() < 0.55), sw=sw, ww=ww, hw=hw, y_sh=y_sh,
                 y_waist=y_waist, y_hip=y_hip, y_knee=y_knee, y_ankle=y_ankle, feet=feet, head=head,
                 head_r=head_r, hips=hips, knees=knees, ankles=ankles, shoulders=shoulders,
                 elbows=elbows, hands=hand_pts, limb_w=build)


def _assign_hands(rng: np.random.Generator, attrs: dict[str, int]) -> dict[str, str | None]:
    """What each hand holds ("box", "handbag", "plastic_bag", "other" or None)."""
    hands: dict[str, str | None] = {"left": None, "right": None}
    if attrs["box"]:
        return {"left": "box", "right": "box"}
    items = []
    if attrs["handbag"] and attrs["carry_by_hand"] and (not attrs["plastic_bag"] or rng.random() < 0.5):
        items.append("handbag")
    if attrs["plastic_bag"]:
        items.append("plastic_bag")
    if attrs["carry_by_hand"] and not items:
        items.append("other")
    sides = ["left", "right"]
    rng.shuffle(sides)
    for side, item in zip(sides, items):
        hands[side] = item
    return hands


@dataclasses.dataclass
class _Look:
    """Everything random about a person's appearance besides the pose.

    Every field is drawn whether or not its attribute is present, so two renderings from the
    same generator that differ in one attribute differ only in that attribute's pixels.
    """

    skin: Color
    hair: Color
    top: Color
    jacket: Color
    lower: Color
    shoes: Color
    tights: Color | None  # bare legs under a skirt or dress are skin unless tights
    stripe: Color | None  # striped top
    stripe_step: float
    backpack: Color
    bag: Color
    box: Color
    plastic: tuple[int, int, int, int]
    other: Color
    muffler: Color
    hat: Color
    frame: Color
    shadow_alpha: int
    hair_len: float  # long hair ends this far below the shoulders (person heights)
    bald: bool
    backpack_depth: float
    backpack_half: float  # of the shoulder half-width
    box_size: tuple[float, float]
    shorts_len: tuple[float, float]  # share of the thigh
    boot_height: float
    skirt: tuple[float, float]  # hem offset from the knee, flare (× hip half-width)
    dress: tuple[float, float]
    jacket_hem: float
    jacket_gap: float
    sleeve_len: tuple[float, float]  # share of the upper arm
    forearm_bag_side: int
    handbag_size: tuple[float, float]
    plastic_size: tuple[float, float]
    plastic_wobble: tuple[float, ...]
    other_kind: str
    other_tilt: float
    dark_glasses: bool
    hat_kind: str
    muffler_tail: tuple[float, float]
    tie: Color | None  # business shirts (men, from the front)
    belt: Color | None  # a darker waistband: suits and uniforms
    sleeve_stripe: Color | None  # track jackets
    coat_hem: float  # a coat's hem below the knee (person heights; negative: above)
    coat_gap: float  # a buttoned coat barely opens

    @classmethod
    def sample(cls, rng: np.random.Generator, person: Person) -> "_Look":
        top, jacket, lower, shoes = _outfit_colours(rng, person.style)
        hair = _jitter(rng, _HAIR[int(rng.choice(len(_HAIR), p=_HAIR_P))], 0.1)
        grey = {"adult": 0.12, "elderly": 0.75}.get(person.age, 0.0)  # grey hair comes with age
        if rng.random() < grey:
            hair = _pick(rng, _GREY_HAIR, 0.08)
        stripe_p = {"casual": 0.25, "sport": 0.15, "dress": 0.2}.get(person.style, 0.0)
        return cls(
            skin=_jitter(rng, _SKIN[int(rng.integers(len(_SKIN)))], 0.08),
            hair=hair,
            top=top,
            jacket=jacket,
            lower=lower,
            shoes=shoes,
            tights=_jitter(rng, (35, 30, 35), 0.3) if rng.random() < 0.4 else None,
            stripe=_contrasting(rng, top, 60) if rng.random() < stripe_p else None,
            stripe_step=float(rng.uniform(0.025, 0.05)),
            backpack=_clothing(rng),
            bag=_clothing(rng),
            box=_jitter(rng, (170, 125, 80), 0.15) if rng.random() < 0.75 else _clothing(rng),
            plastic=(_jitter(rng, (238, 238, 232), 0.05) if rng.random() < 0.6
                     else _hsv(rng.random(), rng.uniform(0.2, 0.7), rng.uniform(0.7, 1.0))) + (215,),
            other=_clothing(rng),
            muffler=(_hsv(rng.random(), rng.uniform(0.3, 0.9), rng.uniform(0.3, 0.95)) if rng.random() < 0.7
                     else _clothing(rng)),
            hat=_clothing(rng),
            frame=_jitter(rng, (25, 25, 25), 0.5) if rng.random() < 0.8 else _clothing(rng),
            shadow_alpha=int(rng.integers(40, 110)),
            hair_len=float(rng.uniform(0.02, 0.16)),
            bald=bool(rng.random() < {"child": 0.0, "young": 0.03, "adult": 0.1, "elderly": 0.3}[person.age]),
            backpack_depth=float(rng.uniform(0.2, 0.27)),
            backpack_half=float(rng.uniform(0.75, 0.95)),
            box_size=(float(rng.uniform(0.24, 0.34)), float(rng.uniform(0.13, 0.22))),
            shorts_len=(float(rng.uniform(0.55, 0.9)), float(rng.uniform(0.55, 0.9))),
            boot_height=float(rng.uniform(0.1, 0.16)),
            skirt=(float(rng.uniform(-0.09, 0.07)), float(rng.uniform(1.2, 1.6))),
            dress=(float(rng.uniform(-0.06, 0.1)), float(rng.uniform(1.25, 1.7))),
            jacket_hem=float(rng.uniform(0.03, 0.12)),
            jacket_gap=float(rng.uniform(0.12, 0.4)),
            sleeve_len=(float(rng.uniform(0.35, 0.6)), float(rng.uniform(0.35, 0.6))),
            forearm_bag_side=int(rng.integers(2)),
            handbag_size=(float(rng.uniform(0.07, 0.11)), float(rng.uniform(0.06, 0.1))),
            plastic_size=(float(rng.uniform(0.08, 0.12)), float(rng.uniform(0.1, 0.17))),
            plastic_wobble=tuple(float(x) for x in rng.uniform(-0.008, 0.008, 12)),
            other_kind="phone" if rng.random() < 0.4 else "umbrella",
            other_tilt=float(rng.uniform(-0.03, 0.03)),
            dark_glasses=bool(rng.random() < 0.35),
            hat_kind=("cap", "beanie", "brimmed")[int(rng.choice(3, p=(0.45, 0.3, 0.25)))],
            muffler_tail=(float(rng.uniform(0.01, 0.05)), float(rng.uniform(0.1, 0.2))),
            tie=(_pick(rng, ((120, 25, 35), (30, 40, 90), (40, 40, 44), (60, 80, 60)), 0.2)
                 if person.style == "business" and rng.random() < 0.6 else None),
            belt=_darker(lower, 0.55) if person.style in ("business", "uniform") else None,
            sleeve_stripe=((235, 235, 235) if rng.random() < 0.6 else _clothing(rng))
            if person.style == "sport" and rng.random() < 0.5 else None,
            coat_hem=float(rng.uniform(-0.03, 0.05)),
            coat_gap=float(rng.uniform(0.0, 0.12)),
        )


def _outfit_colours(rng: np.random.Generator, style: str) -> tuple[Color, Color, Color, Color]:
    """(top, jacket, lower, shoes) colours matched the way the style matches them."""
    if style == "business":
        # A suit: blazer and trousers of one dark cloth (the trousers' own jitter is lighting,
        # not a second colour), a pale shirt, leather shoes.
        suit = _pick(rng, _SUIT, 0.1)
        return _pick(rng, _SHIRT, 0.05), suit, _jitter(rng, suit, 0.04), _pick(rng, _LEATHER, 0.2)
    if style == "uniform":
        # One colour top to bottom; the jacket a shade darker.
        colour = _pick(rng, _UNIFORM, 0.08)
        return colour, _darker(colour, 0.8), _jitter(rng, colour, 0.04), _pick(rng, _LEATHER, 0.2)
    if style == "sport":
        kit = _hsv(rng.random(), rng.uniform(0.5, 0.95), rng.uniform(0.35, 0.9)) if rng.random() < 0.6 \
            else _pick(rng, _NEUTRAL[:5], 0.15)
        top = kit if rng.random() < 0.5 else _clothing(rng)
        # Track suits come as a set half the time; otherwise dark trousers or shorts.
        lower = _jitter(rng, kit, 0.06) if rng.random() < 0.5 else _pick(rng, _NEUTRAL[:3] + (_DENIM,), 0.15)
        shoes = _jitter(rng, (232, 232, 228), 0.06) if rng.random() < 0.6 else _clothing(rng)  # trainers
        return top, kit, lower, shoes
    if style == "coat":
        top = _clothing(rng)
        lower = _jitter(rng, _DENIM, 0.15) if rng.random() < 0.3 else _pick(rng, _NEUTRAL[:3], 0.15)
        return top, _pick(rng, _COAT, 0.12), lower, _pick(rng, _LEATHER + _NEUTRAL[:2], 0.2)
    # casual and dress: independent garments (a dress takes the top's colour); jeans are common.
    top = _clothing(rng)
    lower = _jitter(rng, _DENIM, 0.15) if rng.random() < 0.35 else _clothing(rng)
    return top, _contrasting(rng, top), lower, _jitter(rng, _NEUTRAL[int(rng.integers(len(_NEUTRAL)))], 0.2)


def _darker(color: Sequence[int], k: float) -> Color:
    return tuple(int(x * k) for x in color[:3])  # type: ignore[return-value]


def _draw_person(c: _Canvas, attrs: dict[str, int], b: _Body, hands: dict[str, str | None], look: _Look,
                 style: str = "casual") -> None:
    """Draw the person back to front: things behind the body, legs, torso, coat, arms, held
    items, head and headwear."""
    u, cx, lw = b.u, b.cx, b.limb_w
    hx, hy = b.head
    rx, ry = b.head_r
    sleeve = look.jacket if attrs["jacket"] else look.top

    def quad(x0: float, x1: float, y0: float, x2: float, x3: float, y1: float, fill: Any) -> None:
        """Trapezoid with top edge x0..x1 at y0 and bottom edge x3..x2 at y1."""
        c.polygon([(x0, y0), (x1, y0), (x2, y1), (x3, y1)], fill)

    c.ellipse(cx, b.feet, b.hw * 1.6, 0.02 * u, (0, 0, 0, look.shadow_alpha))  # shadow on the floor

    # Behind the body.
    long_len = b.y_sh + look.hair_len * u
    if attrs["long_hair"] and b.front:
        quad(hx - rx * 1.15, hx + rx * 1.15, hy - ry * 0.2, hx + rx * 1.35, hx - rx * 1.35, long_len, look.hair)
    bp_top, bp_bottom = b.y_sh - 0.02 * u, b.y_sh + look.backpack_depth * u
    bp_half = b.sw * look.backpack_half
    if attrs["backpack"] and b.front:
        # Seen from the front the bag peeks out above and beside the shoulders.
        quad(cx - bp_half * 1.1, cx + bp_half * 1.1, bp_top, cx + bp_half * 1.2, cx - bp_half * 1.2, bp_bottom,
             look.backpack)
    box_w, box_h = look.box_size[0] * u, look.box_size[1] * u
    box_y = (b.hands[0][1] + b.hands[1][1]) / 2 - box_h * 0.35
    if attrs["box"] and not b.front:
        # Carried in front: from the back only what sticks out beside the body is visible.
        quad(cx - box_w / 2, cx + box_w / 2, box_y, cx + box_w / 2, cx - box_w / 2, box_y + box_h, look.box)

    # Legs and lower garment.
    leg_w = (0.075 * u * lw, 0.052 * u * lw, 0.036 * u * lw)
    bare = look.tights if attrs["female"] and look.tights is not None else look.skin
    legs = look.lower if attrs["long_trousers"] else bare
    for hip, knee, ankle in zip(b.hips, b.knees, b.ankles):
        c.limb(hip, knee, leg_w[0], leg_w[1], legs)
        c.limb(knee, ankle, leg_w[1], leg_w[2], legs)
    if attrs["long_trousers"]:
        quad(cx - b.hw, cx + b.hw, b.y_hip - 0.03 * u, cx + b.hw * 0.3, cx - b.hw * 0.3, b.y_hip + 0.09 * u, look.lower)
    elif not (attrs["skirt"] or attrs["dress"]):
        # Shorts: trouser colour on the thighs only.
        for hip, knee, length in zip(b.hips, b.knees, look.shorts_len):
            c.limb(hip, _lerp(hip, knee, length), leg_w[0] * 1.1, leg_w[0] * 1.05, look.lower)
        quad(cx - b.hw, cx + b.hw, b.y_hip - 0.03 * u, cx + b.hw * 0.5, cx - b.hw * 0.5, b.y_hip + 0.08 * u, look.lower)
    boot_top = b.y_ankle - look.boot_height * u
    for ankle in b.ankles:
        if attrs["boots"]:
            c.limb((ankle[0], boot_top), ankle, leg_w[1] * 1.15, leg_w[2] * 1.3, look.shoes)
        c.ellipse(ankle[0], (ankle[1] + b.feet) / 2, 0.03 * u * lw, (b.feet - ankle[1]) / 2 + 0.006 * u, look.shoes)
    if attrs["skirt"]:
        hem, flare = b.y_knee + look.skirt[0] * u, b.hw * look.skirt[1]
        if style == "coat":  # a skirt worn under a coat shows below its hem
            hem, flare = max(hem, b.y_knee + (look.coat_hem + 0.05) * u), max(flare, b.hw * 1.5)
        quad(cx - b.ww * 1.05, cx + b.ww * 1.05, b.y_waist, cx + flare, cx - flare, hem, look.lower)

    # Torso: neck, the dress's skirt, the top (maybe striped), the neckline.
    c.ellipse(hx, b.y_sh - 0.015 * u, 0.024 * u, 0.04 * u, look.skin)
    if attrs["dress"]:
        hem, flare = b.y_knee + look.dress[0] * u, b.hw * look.dress[1]
        quad(cx - b.ww, cx + b.ww, b.y_waist, cx + flare, cx - flare, hem, look.top)
    c.polygon([(cx - b.sw, b.y_sh), (cx + b.sw, b.y_sh), (cx + b.sw * 0.93, b.y_sh + 0.09 * u),
               (cx + b.ww, b.y_waist), (cx + b.hw * 1.02, b.y_hip + 0.01 * u), (cx - b.hw * 1.02, b.y_hip + 0.01 * u),
               (cx - b.ww, b.y_waist), (cx - b.sw * 0.93, b.y_sh + 0.09 * u)], look.top)
    if look.stripe is not None:
        step = look.stripe_step * u
        y = b.y_sh + 0.03 * u
        while y < b.y_hip - step:
            quad(cx - b.ww * 1.05, cx + b.ww * 1.05, y, cx + b.ww * 1.05, cx - b.ww * 1.05, y + step / 2, look.stripe)
            y += step
    if b.front:
        c.polygon([(hx - 0.03 * u, b.y_sh - 0.005 * u), (hx + 0.03 * u, b.y_sh - 0.005 * u), (hx, b.y_sh + 0.04 * u)],
                  look.skin)
        if look.tie is not None and not attrs["female"]:
            quad(hx - 0.012 * u, hx + 0.012 * u, b.y_sh + 0.02 * u, hx + 0.018 * u, hx - 0.018 * u,
                 b.y_waist - 0.01 * u, look.tie)
    if look.belt is not None and (attrs["long_trousers"] or attrs["skirt"]):
        quad(cx - b.ww * 1.02, cx + b.ww * 1.02, b.y_waist + 0.035 * u, cx + b.ww * 1.05, cx - b.ww * 1.05,
             b.y_waist + 0.05 * u, look.belt)

    coat = style == "coat" and attrs["jacket"]
    if attrs["jacket"]:
        # Open jacket over the shirt: two panels leave a strip of shirt visible down the middle.
        # A coat reaches the knee over the upper legs, flares, and is mostly buttoned.
        hem = b.y_knee + look.coat_hem * u if coat else b.y_hip + look.jacket_hem * u
        hem_w = b.hw * (1.45 if coat else 1.15)
        gap = (b.sw * (look.coat_gap if coat else look.jacket_gap)) if b.front else 0.0
        for s in (-1, 1):
            c.polygon([(cx + s * b.sw * 1.05, b.y_sh - 0.005 * u), (cx + s * gap * 0.6, b.y_sh - 0.005 * u),
                       (cx + s * gap, hem), (cx + s * hem_w, hem),
                       (cx + s * b.ww * 1.1, b.y_waist), (cx + s * b.sw, b.y_sh + 0.09 * u)], look.jacket)
        if coat and b.front:
            for k in range(3):  # buttons
                c.ellipse(cx + gap, b.y_sh + (0.08 + 0.1 * k) * u, 0.007 * u, 0.007 * u, _darker(look.jacket, 0.6))
        if b.front:
            for s in (-1, 1):  # lapels
                c.polygon([(cx + s * gap * 0.6, b.y_sh), (cx + s * (gap + 0.05 * u), b.y_sh + 0.02 * u),
                           (cx + s * gap * 0.9, b.y_sh + 0.11 * u)], _darker(look.jacket, 0.7))
        else:
            c.line([(cx, b.y_sh + 0.02 * u), (cx, hem)], _darker(look.jacket, 0.75), 0.006 * u)

    if attrs["long_hair"] and not b.front:
        quad(hx - rx * 1.1, hx + rx * 1.1, hy, hx + rx * 1.3, hx - rx * 1.3, long_len, look.hair)

    if attrs["backpack"]:
        strap = _darker(look.backpack, 0.8)
        if b.front:
            for s in (-1, 1):
                c.limb((cx + s * b.sw * 0.55, b.y_sh - 0.005 * u), (cx + s * b.sw * 0.75, b.y_sh + 0.16 * u),
                       0.022 * u, 0.018 * u, strap)
        else:
            quad(cx - bp_half, cx + bp_half, bp_top, cx + bp_half * 1.05, cx - bp_half * 1.05, bp_bottom, look.backpack)
            quad(cx - bp_half * 0.7, cx + bp_half * 0.7, bp_bottom - 0.09 * u, cx + bp_half * 0.75, cx - bp_half * 0.75,
                 bp_bottom - 0.01 * u, strap)  # front pocket

    # Arms: sleeve from the shoulder, skin below a short sleeve, hands; a handbag that is not
    # held in the hand hangs from a forearm.
    arm_w = (0.052 * u * lw, 0.044 * u * lw, 0.036 * u * lw)
    arm_col = look.top if attrs["dress"] and not attrs["jacket"] else sleeve
    forearm_bag = attrs["handbag"] and "handbag" not in hands.values()
    for i, (side, sh, el, hd) in enumerate(zip(("left", "right"), b.shoulders, b.elbows, b.hands)):
        if hands[side] == "box" and not b.front:
            # Seen from the back, forearms carrying a box are hidden by the body.
            c.limb(sh, _lerp(sh, el, 0.9), arm_w[0], arm_w[1], look.skin if attrs["short_sleeve"] else arm_col)
            continue
        if attrs["short_sleeve"]:
            c.limb(sh, el, arm_w[0] * 0.92, arm_w[1] * 0.92, look.skin)
            c.limb(el, hd, arm_w[1] * 0.9, arm_w[2] * 0.9, look.skin)
            c.limb(sh, _lerp(sh, el, look.sleeve_len[i]), arm_w[0] * 1.08, arm_w[0] * 1.02, arm_col)
        else:
            c.limb(sh, el, arm_w[0], arm_w[1], arm_col)
            c.limb(el, hd, arm_w[1], arm_w[2], arm_col)
            if look.sleeve_stripe is not None and attrs["jacket"]:
                c.line([sh, el, _lerp(el, hd, 0.85)], look.sleeve_stripe, 0.008 * u)
        c.ellipse(hd[0], hd[1] + 0.012 * u, 0.021 * u, 0.025 * u, look.skin)
        if forearm_bag and look.forearm_bag_side == i:
            bx, by = _lerp(el, hd, 0.3)
            c.line([(bx - 0.03 * u, by + 0.05 * u), (bx, by), (bx + 0.03 * u, by + 0.05 * u)], look.bag, 0.008 * u)
            quad(bx - 0.05 * u, bx + 0.05 * u, by + 0.05 * u, bx + 0.06 * u, bx - 0.06 * u, by + 0.13 * u, look.bag)

    # Things held in the hand.
    for side, (px, py) in zip(("left", "right"), b.hands):
        held = hands[side]
        py += 0.02 * u
        if held == "handbag":
            bw, bh = look.handbag_size[0] * u, look.handbag_size[1] * u
            top = py + 0.035 * u
            c.line([(px - bw * 0.3, top), (px, py), (px + bw * 0.3, top)], look.bag, 0.008 * u)
            quad(px - bw / 2, px + bw / 2, top, px + bw * 0.6, px - bw * 0.6, top + bh, look.bag)
        elif held == "plastic_bag":
            bw, bh = look.plastic_size[0] * u, look.plastic_size[1] * u
            pts = [(px - 0.015 * u, py), (px + 0.015 * u, py), (px + bw * 0.5, py + bh * 0.3),
                   (px + bw * 0.55, py + bh), (px - bw * 0.55, py + bh), (px - bw * 0.5, py + bh * 0.3)]
            wob = look.plastic_wobble
            c.polygon([(x + wob[2 * k] * u, y + wob[2 * k + 1] * u) for k, (x, y) in enumerate(pts)], look.plastic)
            c.line([(px - bw * 0.4, py + bh * 0.55), (px + bw * 0.35, py + bh * 0.5)],
                   _darker(look.plastic, 0.85) + (200,), 0.004 * u)
        elif held == "other":
            if look.other_kind == "phone":
                quad(px - 0.01 * u, px + 0.01 * u, py - 0.03 * u, px + 0.01 * u, px - 0.01 * u, py + 0.02 * u,
                     look.other)
            else:  # folded umbrella
                c.line([(px, py - 0.02 * u), (px + look.other_tilt * u, py + 0.22 * u)], look.other, 0.012 * u)
    if attrs["box"] and b.front:
        quad(cx - box_w / 2, cx + box_w / 2, box_y, cx + box_w / 2, cx - box_w / 2, box_y + box_h, look.box)
        c.line([(cx - box_w / 2, box_y + box_h * 0.25), (cx + box_w / 2, box_y + box_h * 0.25)],
               _darker(look.box, 0.7), 0.006 * u)  # tape
        for s in (-1, 1):  # fingers over the edges
            c.ellipse(cx + s * box_w * 0.47, box_y + box_h * 0.55, 0.016 * u, 0.022 * u, look.skin)

    # Head: face (front) or the back of the head, then glasses, hat, muffler.
    c.ellipse(hx, hy, rx, ry, look.skin if b.front else look.hair)
    if b.front:
        if not (look.bald and not attrs["long_hair"] and not attrs["female"]):
            c.ellipse(hx, hy - ry * 0.35, rx * 1.05, ry * 0.7, look.hair)
            c.ellipse(hx, hy + ry * 0.05, rx * 0.86, ry * 0.72, look.skin)  # face below the hairline
        if attrs["long_hair"]:
            for s in (-1, 1):  # strands framing the face
                c.polygon([(hx + s * rx * 0.85, hy - ry * 0.3), (hx + s * rx * 1.2, hy - ry * 0.1),
                           (hx + s * rx * 1.3, long_len - 0.04 * u), (hx + s * rx * 0.8, long_len - 0.06 * u)],
                          look.hair)
        for s in (-1, 1):
            c.ellipse(hx + s * rx * 0.38, hy + ry * 0.05, rx * 0.11, ry * 0.07, _darker(look.skin, 0.35))  # eyes
        c.line([(hx - rx * 0.25, hy + ry * 0.5), (hx + rx * 0.25, hy + ry * 0.5)], _darker(look.skin, 0.6), 0.004 * u)
    if attrs["glasses"]:
        if b.front:
            for s in (-1, 1):
                c.ellipse(hx + s * rx * 0.4, hy + ry * 0.05, rx * 0.32, ry * 0.2, look.frame)
                if not look.dark_glasses:
                    c.ellipse(hx + s * rx * 0.4, hy + ry * 0.05, rx * 0.22, ry * 0.12, _darker(look.skin, 0.9))
            c.line([(hx - rx * 0.95, hy), (hx + rx * 0.95, hy)], look.frame, 0.006 * u)
        else:
            for s in (-1, 1):  # temples over the ears
                c.line([(hx + s * rx * 1.02, hy - ry * 0.05), (hx + s * rx * 0.8, hy + ry * 0.05)], look.frame,
                       0.009 * u)
    if attrs["hat"]:
        if look.hat_kind == "cap":
            c.ellipse(hx, hy - ry * 0.45, rx * 1.1, ry * 0.6, look.hat)
            if b.front:
                c.ellipse(hx, hy - ry * 0.2, rx * 1.2, ry * 0.18, _darker(look.hat, 0.8))  # visor
        elif look.hat_kind == "beanie":
            c.ellipse(hx, hy - ry * 0.4, rx * 1.12, ry * 0.72, look.hat)
            quad(hx - rx * 1.12, hx + rx * 1.12, hy - ry * 0.35, hx + rx * 1.1, hx - rx * 1.1, hy - ry * 0.1, look.hat)
        else:
            c.ellipse(hx, hy - ry * 0.45, rx * 1.7, ry * 0.2, look.hat)
            quad(hx - rx * 0.75, hx + rx * 0.75, hy - ry * 1.2, hx + rx * 0.9, hx - rx * 0.9, hy - ry * 0.45, look.hat)
    if attrs["muffler"]:
        neck_y = b.y_sh - 0.01 * u
        c.limb((hx - 0.045 * u, neck_y), (hx + 0.045 * u, neck_y), 0.05 * u, 0.05 * u, look.muffler)
        if b.front:
            tail = (hx + look.muffler_tail[0] * u, b.y_sh + look.muffler_tail[1] * u)
            c.limb((hx + 0.02 * u, b.y_sh), tail, 0.035 * u, 0.035 * u, look.muffler)


def _camera_effects(rng: np.random.Generator, img: Image.Image, style: CameraStyle) -> Image.Image:
    """Lighting, colour cast, native resolution, blur, noise and the camera's JPEG."""
    w, h = img.size
    # The sensor resolves the person at `native_scale` of the crop, but never at fewer than
    # SHARP_HEIGHT rows (SHARP_HEIGHT's comment): crops up to that height are not softened.
    scale = max(rng.uniform(*style.native_scale), min(1.0, SHARP_HEIGHT / h))
    if scale < 0.95:
        small = (max(8, round(w * scale)), max(16, round(h * scale)))
        img = img.resize(small, Image.BILINEAR).resize((w, h), Image.BICUBIC)
    radius = style.blur * rng.uniform(0.3, 1.3) * h / 256
    if radius > 0.25:
        img = img.filter(ImageFilter.GaussianBlur(radius))
    arr = np.asarray(img, np.float32)
    gain = np.asarray(style.cast, np.float32) * rng.uniform(0.93, 1.07, 3).astype(np.float32)
    gain *= style.brightness * rng.uniform(0.8, 1.2)
    # Uneven illumination: a linear ramp across the crop, in a random direction.
    angle = rng.uniform(0, 2 * math.pi)
    ramp = (np.cos(angle) * np.linspace(-1, 1, w, dtype=np.float32)[None, :]
            + np.sin(angle) * np.linspace(-1, 1, h, dtype=np.float32)[:, None])
    arr = arr * gain * (1 + rng.uniform(0.0, 0.2) * ramp)[:, :, None]
    arr += rng.normal(0, style.noise, arr.shape[:2] + (1,)).astype(np.float32)  # luminance noise
    img = Image.fromarray(arr.clip(0, 255).astype(np.uint8))
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=int(rng.integers(style.jpeg_quality[0], style.jpeg_quality[1] + 1)))
    buf.seek(0)
    return Image.open(buf).convert("RGB")


def _shade(rng: np.random.Generator, person: Image.Image, body: _Body) -> Image.Image:
    """Round the flat drawing: darker towards the body's sides, lit from one side."""
    w = person.size[0]
    x = (np.arange(w, dtype=np.float32) - body.cx) / (0.25 * body.u)
    light = rng.uniform(-0.5, 0.5)
    shade = np.clip(1 - rng.uniform(0.1, 0.35) * (x - light) ** 2, 0.55, 1.0)
    rgb = np.asarray(person.convert("RGB"), np.float32) * shade[None, :, None]
    return Image.fromarray(rgb.astype(np.uint8))


def render_person(rng: np.random.Generator, attrs: dict[str, int], *, size: tuple[int, int] | None = None,
                  camera: CameraStyle | None = None, person: Person | None = None) -> Image.Image:
    """Render one pedestrian crop showing `attrs` (a consistent SYNTH_ATTRIBUTES label set).

    size: (height, width) of the crop; None draws a detector-like size (`sample_crop_size`:
    height 90–550 px, median about 170, aspect 0.35–0.5). camera: the scene and sensor style;
    None draws a random one. person: the latent age group and outfit style (`sample_person`);
    None is an adult in casual wear, which suits any label set. Returns an RGB PIL image of that
    size. All randomness comes from `rng`.
    """
    check_attributes(attrs)
    person = person if person is not None else Person()
    check_person(person, attrs)
    if size is None:
        h, w = sample_crop_size(rng)
    else:
        if len(size) != 2 or min(size) < 16:
            raise ValueError(f"size must be (height, width) with both >= 16, got {size}")
        h, w = int(size[0]), int(size[1])
    style = camera if camera is not None else CameraStyle.sample(rng)
    hands = _assign_hands(rng, attrs)
    body = _make_body(rng, attrs, h, w, hands, person.age)
    bg = _background(rng, style, h, w, int(body.top + style.horizon * body.u))
    canvas = _Canvas((w, h), body.feet, math.radians(rng.uniform(-5, 5)))
    _draw_person(canvas, attrs, body, hands, _Look.sample(rng, person), person.style)
    person = canvas.image.resize((w, h), Image.BOX)
    bg.paste(_shade(rng, person, body), (0, 0), person)
    return _camera_effects(rng, bg, style)


# --------------------------------------------------------------------------------------------
# Tracks: one person over consecutive frames


def sample_track_length(rng: np.random.Generator) -> int:
    """Frames in a track: the log-normal of TRACK_LENGTH_RANGE's comment, truncated to that range
    (one uniform draw through the inverse CDF)."""
    lo, hi = TRACK_LENGTH_RANGE
    a, b = _TRACK_LOG.cdf(math.log(lo)), _TRACK_LOG.cdf(math.log(hi + 1))
    return min(hi, max(lo, int(math.exp(_TRACK_LOG.inv_cdf(rng.uniform(a, b))))))


def track_heights(heights: tuple[int, int], frames: int, approaching: bool) -> list[int]:
    """Crop heights along a track of `frames` frames between the two `heights` (in either order):
    growing when the person approaches, shrinking when they walk away; log-height is interpolated,
    its steps capped at MAX_LOG_HEIGHT_STEP per frame (the far end moves in to meet the cap)."""
    near, far = max(heights), min(heights)
    span = min(math.log(near / far), MAX_LOG_HEIGHT_STEP * (frames - 1))
    start, sign = (far, 1) if approaching else (near, -1)
    steps = np.linspace(0.0, span, frames) if frames > 1 else np.zeros(1)
    return [int(round(start * math.exp(sign * x))) for x in steps]


class _Jittered:
    """A track's random stream, replayed for each frame, with each continuous draw moved by up to
    `amount` of its range by the frame's own generator: the same person, camera and scene, posed and
    lit a little differently. Discrete draws (random(), integers: which way the person faces, the
    JPEG quality) are the track's; sensor noise (normal) is the frame's own."""

    def __init__(self, track: np.random.Generator, frame: np.random.Generator, amount: float):
        self.track, self.frame, self.amount = track, frame, amount

    def uniform(self, low: float = 0.0, high: float = 1.0, size: Any = None) -> Any:
        value = self.track.uniform(low, high, size)
        moved = np.clip(value + self.frame.uniform(-self.amount, self.amount, size) * (high - low), low, high)
        return float(moved) if size is None else moved  # a float, as Generator.uniform gives

    def random(self) -> float:
        return self.track.random()

    def integers(self, *args: Any, **kwargs: Any) -> Any:
        return self.track.integers(*args, **kwargs)

    def normal(self, *args: Any, **kwargs: Any) -> Any:
        return self.frame.normal(*args, **kwargs)


# The stages of a track's drawing, each replayed from its own stream (`render_track`).
_HANDS, _POSE, _SCENE, _LOOK, _LIGHT, _FRAMES = 1, 2, 3, 4, 5, 1000


def render_track(key: Sequence[int], attrs: dict[str, int], *, frames: int, heights: tuple[int, int],
                 aspect: float, camera: CameraStyle, person: Person | None = None) -> list[Image.Image]:
    """Render one person over `frames` consecutive frames: the crops of a track.

    What makes the person (what they hold, build, outfit and its colours) and the scene behind them
    are drawn once; each frame redraws the pose, the lean and the light from the same streams with
    FRAME_JITTER of frame-to-frame variation, and its own sensor noise (`_Jittered`). A person seen
    from the front walks towards the camera, from the back away from it: the crop height runs between
    `heights` as `track_heights` says, the width `aspect` × height. The scene is drawn once at the
    largest frame's size and scaled to each frame (the crop box follows the person). Every draw comes
    from generators seeded from `key` plus a stage number. Returns RGB PIL images, frame 0 first.
    """
    check_attributes(attrs)
    person = person if person is not None else Person()
    check_person(person, attrs)
    if frames < 1 or min(heights) < 16 or not 0 < aspect <= 1:
        raise ValueError(f"a track needs frames >= 1, heights >= 16 and 0 < aspect <= 1, got {frames}, "
                         f"{heights}, {aspect}")

    def stream(stage: int) -> np.random.Generator:
        return np.random.default_rng([*key, stage])

    def width(h: int) -> int:
        return max(8, round(h * aspect))

    hands = _assign_hands(stream(_HANDS), attrs)
    look = _Look.sample(stream(_LOOK), person)
    near = max(heights)
    reference = _make_body(stream(_POSE), attrs, near, width(near), hands, person.age)
    scene = _background(stream(_SCENE), camera, near, width(near),
                        int(reference.top + camera.horizon * reference.u))
    images = []
    for f, h in enumerate(track_heights(heights, frames, approaching=reference.front)):
        w = width(h)
        jitter = np.random.default_rng([*key, _FRAMES + f])
        pose = cast(np.random.Generator, _Jittered(stream(_POSE), jitter, FRAME_JITTER))
        body = _make_body(pose, attrs, h, w, hands, person.age)
        canvas = _Canvas((w, h), body.feet, math.radians(pose.uniform(-5, 5)))
        _draw_person(canvas, attrs, body, hands, look, person.style)
        layer = canvas.image.resize((w, h), Image.BOX)
        bg = scene.resize((w, h), Image.BILINEAR)
        bg.paste(_shade(pose, layer, body), (0, 0), layer)
        light = cast(np.random.Generator, _Jittered(stream(_LIGHT), jitter, FRAME_JITTER))
        images.append(_camera_effects(light, bg, camera))
    return images


# --------------------------------------------------------------------------------------------
# Dataset generation


def sample_rng(seed: int, index: int) -> np.random.Generator:
    """The generator of sample `index` of a dataset with `seed` (independent of chunking)."""
    return np.random.default_rng([seed, index])


def _split_labels(n: int, splits: Sequence[float], seed: int) -> np.ndarray:
    """Exact split sizes (rounded), assigned by a seeded permutation."""
    counts = np.floor(np.asarray(splits) * n).astype(int)
    counts[np.argsort(-(np.asarray(splits) * n - counts))[: n - counts.sum()]] += 1
    labels = np.repeat(np.asarray(SPLIT_NAMES, dtype=object), counts)
    return labels[np.random.default_rng([seed, n, 1 << 31]).permutation(n)]


def _crop_id(seed: int, index: int) -> str:
    return f"syn{seed}-{index:07d}"


@dataclasses.dataclass(frozen=True)
class Track:
    """One track of a generated dataset: `number` seeds it (`track_key`) and names it (`track_id`);
    `indices` are the dataset indices of its frames, frame 0 first."""

    number: int
    indices: tuple[int, ...]


# The last entry of a track's key (a split's track plan: + 1): these generators never meet a
# sample's ([seed, index]), the split permutation's ([seed, n, 1 << 31]) or a camera style's
# ([seed, cameras, 1 << 30, camera]).
_TRACK_STREAM = 1 << 29


def track_key(seed: int, number: int) -> list[int]:
    """The seed of track `number` of a dataset with `seed` (`render_track`'s `key`)."""
    return [seed, number, _TRACK_STREAM]


def track_id(seed: int, number: int) -> str:
    return f"trk{seed}-{number:06d}"


def plan_tracks(labels: np.ndarray, track_splits: Sequence[str], seed: int) -> list[Track]:
    """Cut each split named in `track_splits` into tracks: its dataset indices (`labels`: the split
    of every index) in order, consecutive runs of `sample_track_length` frames; a split's last track
    keeps what is left, so it may be shorter than TRACK_LENGTH_RANGE[0]. A track lies in one split."""
    tracks: list[Track] = []
    for s, name in enumerate(SPLIT_NAMES):
        if name not in track_splits:
            continue
        members = np.flatnonzero(labels == name).tolist()
        rng = np.random.default_rng([seed, s, _TRACK_STREAM + 1])
        start = 0
        while start < len(members):
            length = sample_track_length(rng)
            tracks.append(Track(len(tracks), tuple(members[start:start + length])))
            start += length
    return tracks


def _render_chunk(chunk: tuple[Sequence[int], Sequence[Track]], *, out_uri: str, seed: int,
                  styles: list[CameraStyle], storage: StorageConfig | None) -> dict[int, dict[str, Any]]:
    """Render and store one task's crops, single crops (`chunk[0]`, dataset indices) and whole tracks
    (`chunk[1]`); returns their manifest rows (without split) by dataset index."""
    from attrgan.data.storage import fsspec_filesystem

    fs, root = fsspec_filesystem(out_uri, storage)
    root = root.rstrip("/")
    rows: dict[int, dict[str, Any]] = {}
    blobs = {}

    def store(index: int, image: Image.Image, row: dict[str, Any]) -> None:
        buf = io.BytesIO()
        image.save(buf, "JPEG", quality=IMAGE_QUALITY)
        crop_id = _crop_id(seed, index)
        blobs[f"{root}/images/{crop_id}.jpg"] = buf.getvalue()
        rows[index] = {"crop_id": crop_id, "image_uri": f"images/{crop_id}.jpg", **row}

    indices, tracks = chunk
    for i in indices:
        rng = sample_rng(seed, i)
        person, attrs = sample_person(rng)
        cam = int(rng.integers(len(styles)))
        captured = NIGHT_START + timedelta(seconds=float(rng.uniform(0, NIGHT_HOURS * 3600)))
        image = render_person(rng, attrs, camera=styles[cam], person=person)
        store(i, image, {"camera_id": f"cam{cam:02d}", "captured_at": captured.replace(microsecond=0), **attrs})
    for track in tracks:
        # What the whole track shares: the person, the camera, when it starts, the frame spacing,
        # the crop heights at its two ends and the crop's aspect.
        rng = np.random.default_rng(track_key(seed, track.number))
        person, attrs = sample_person(rng)
        cam = int(rng.integers(len(styles)))
        longest = TRACK_LENGTH_RANGE[1] * FRAME_SPACING_S[1]  # every track ends within the night
        start = NIGHT_START + timedelta(seconds=round(float(rng.uniform(0, NIGHT_HOURS * 3600 - longest)), 3))
        spacing = float(rng.uniform(*FRAME_SPACING_S))
        (h0, w0), (h1, _) = sample_crop_size(rng), sample_crop_size(rng)
        images = render_track(track_key(seed, track.number), attrs, frames=len(track.indices), heights=(h0, h1),
                              aspect=w0 / h0, camera=styles[cam], person=person)
        for f, (i, image) in enumerate(zip(track.indices, images)):
            captured = start + timedelta(seconds=round(f * spacing, 3))
            store(i, image, {"camera_id": f"cam{cam:02d}", "captured_at": captured,
                             "track_id": track_id(seed, track.number), "frame_index": f, **attrs})
    # One batched call: s3fs uploads the objects concurrently; a local filesystem writes files.
    fs.pipe(blobs)
    return rows


def _chunks(singles: Sequence[int], tracks: Sequence[Track]) -> list[tuple[Sequence[int], Sequence[Track]]]:
    """Worker tasks of about _CHUNK crops: single crops in runs, whole tracks packed together."""
    chunks: list[tuple[Sequence[int], Sequence[Track]]] = [
        (singles[s:s + _CHUNK], ()) for s in range(0, len(singles), _CHUNK)]
    packed: list[Track] = []
    for track in tracks:
        if packed and sum(len(t.indices) for t in packed) + len(track.indices) > _CHUNK:
            chunks.append(((), packed))
            packed = []
        packed.append(track)
    if packed:
        chunks.append(((), packed))
    return chunks


def generate(out_uri: str, n: int, *, seed: int = 0, storage: StorageConfig | None = None,
             workers: int | None = None, splits: Sequence[float] = (0.7, 0.1, 0.2), cameras: int = 4,
             track_splits: Sequence[str] = ()) -> str:
    """Render `n` crops to `<out_uri>/images/*.jpg` and write `<out_uri>/manifest.parquet`.

    Manifest columns (DESIGN.md): crop_id, image_uri (relative to the manifest), bbox_* (null),
    camera_id ("cam00"...), captured_at (UTC, one night), split (train/val/test in the
    proportions `splits`), then one int8 column per SYNTH_ATTRIBUTES id. `out_uri` is a local
    folder or s3://bucket/prefix. Output depends only on (n, seed, splits, cameras, track_splits),
    not on `workers` (default: the machine's cores, at most 8). Returns the manifest's URI.

    track_splits: the splits (of "train", "val", "test") whose crops are tracks (`plan_tracks`,
    `render_track`): one person, labels and camera per track, frames in dataset order. Their rows
    carry track_id ("trk<seed>-000000"...), frame_index (0, 1, ...) and a captured_at that grows by
    the track's frame spacing (millisecond precision); the manifest then has both columns, null for
    the other splits' rows. The other splits' crops are drawn the same either way; with no
    track_splits the output is what it was before tracks existed, without track columns.
    """
    from attrgan.data.manifest import write_manifest
    from attrgan.data.storage import join

    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if cameras < 1:
        raise ValueError(f"cameras must be >= 1, got {cameras}")
    splits = tuple(float(s) for s in splits)
    if len(splits) != 3 or min(splits) < 0 or abs(sum(splits) - 1) > 1e-6:
        raise ValueError(f"splits must be three non-negative fractions (train, val, test) summing to 1, got {splits}")
    workers = min(os.cpu_count() or 1, 8) if workers is None else workers
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    if isinstance(track_splits, str) or not set(track_splits) <= set(SPLIT_NAMES):
        raise ValueError(f"track_splits must be a sequence of split names among {SPLIT_NAMES}, got {track_splits!r}")

    styles = camera_styles(seed, cameras)
    labels = _split_labels(n, splits, seed)
    tracks = plan_tracks(labels, track_splits, seed)
    tracked = {i for track in tracks for i in track.indices}
    chunks = _chunks([i for i in range(n) if i not in tracked], tracks)
    task = partial(_render_chunk, out_uri=out_uri, seed=seed, styles=styles, storage=storage)
    if workers == 1 or len(chunks) == 1:
        parts = [task(c) for c in chunks]
    else:
        # spawn: forking a process that holds s3fs / torch threads is not safe.
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(min(workers, len(chunks)), mp_context=ctx) as pool:
            parts = list(pool.map(task, chunks))
    by_index = {i: row for part in parts for i, row in part.items()}
    rows = [by_index[i] for i in range(n)]
    for row, split in zip(rows, labels):
        row["split"] = split
        if track_splits:
            row.setdefault("track_id", None)
            row.setdefault("frame_index", None)
    manifest_uri = join(out_uri, "manifest.parquet")
    write_manifest(_manifest_table(rows), manifest_uri, storage=storage)
    return manifest_uri


def _manifest_table(rows: list[dict[str, Any]]) -> "pa.Table":
    """Rows → a pyarrow table with DESIGN.md's manifest types."""
    import pyarrow as pa

    from attrgan.data.manifest import MANIFEST_SCHEMA, TRACK_FRAME_COLUMNS

    n = len(rows)
    columns: dict[str, pa.Array] = {}
    for field in MANIFEST_SCHEMA:
        if field.name in rows[0]:
            columns[field.name] = pa.array([r[field.name] for r in rows], type=field.type)
        elif field.name not in TRACK_FRAME_COLUMNS:  # a dataset without tracks leaves them out
            columns[field.name] = pa.nulls(n, type=field.type)
    for attr in SYNTH_ATTRIBUTES:
        columns[attr] = pa.array(np.array([r[attr] for r in rows], dtype=np.int8))
    return pa.table(columns)

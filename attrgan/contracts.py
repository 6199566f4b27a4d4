"""The shared contracts (docs/DESIGN.md): the networks of a bundle and what a driver reads of its
metadata, the results table and its folder layout, and the error kinds of a results row.

Free of torch on purpose (it imports only `attrgan.attributes` of the project): the write, check and decode tasks
that run in plain Ray task workers import this, and a worker imports the module of the code it
runs (tests/test_commit.py holds that they start without torch). `BundleInfo` is the one reader of
a bundle's config.json metadata; `attrgan.bundle` validates and writes it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from collections.abc import Mapping, Sequence
from typing import Any

import pyarrow as pa

from attrgan.attributes import OCCLUSION_DOWN, person_level

# ---------------------------------------------------------------------------------------------
# networks

NETWORKS = ("classifier", "reconstruction", "superres")
GENERATORS = ("superres", "reconstruction")  # in the order the pipeline runs them
# Each network's default input size (H, W); the super-resolution target is 4× its input.
DEFAULT_INPUT_SIZES: Mapping[str, tuple[int, int]] = {
    "classifier": (320, 128),
    "reconstruction": (160, 64),
    "superres": (80, 32),
}
# A generator's measured effect on its bundle's classifier, in its config.json (`attrgan.train.gain`).
GAIN_KEY = "validation_gain"
# In G^R's GAIN_KEY record: the occlusion threshold calibrated on the complete pipeline's validation mA.
OCCLUSION_THRESHOLD_KEY = "occlusion_threshold"
# How the bundle fuses a track (`attrgan.fusion.Fusion.to_dict`, fitted by `attrgan.train.fusion`) and
# which attributes it fuses per track, in the classifier's config.json.
FUSION_KEY = "fusion"
PERSON_LEVEL_KEY = "person_level"
VERSION_CHARS = 12


def bundle_version(metas: Mapping[str, Mapping[str, Any]]) -> str:
    """Content hash of a bundle: a hash over its networks' weight hashes, in NETWORKS order."""
    text = "\n".join(f"{name}:{metas[name]['weights_sha256']}" for name in NETWORKS)
    return hashlib.sha256(text.encode()).hexdigest()[:VERSION_CHARS]


@dataclasses.dataclass(frozen=True)
class Restoration:
    """Whether one generator runs, and why (for logs, run summaries and `_SUCCESS`)."""

    runs: bool
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {"runs": self.runs, "reason": self.reason}


@dataclasses.dataclass(frozen=True)
class BundleInfo:
    """What jobs read of a bundle's metadata (config.json per network), typed.

    version: the bundle's content hash ("" while a network is not stored yet, as during training);
    attributes, thresholds, classifier_version: the classifier's; input_sizes: per network;
    gains: per generator, its stored GAIN_KEY record (None when none was stored);
    person_level: the attributes fused per track, in model order (stored under PERSON_LEVEL_KEY;
    none stored: `attrgan.attributes.person_level` of the attributes); fusion: the stored FUSION_KEY
    record (None when none was stored: `attrgan.fusion.Fusion.from_bundle_info` reads it).
    """

    version: str
    attributes: tuple[str, ...]
    thresholds: tuple[float, ...]
    classifier_version: str
    input_sizes: Mapping[str, tuple[int, int]]
    gains: Mapping[str, Mapping[str, Any] | None]
    person_level: tuple[str, ...] = ()
    fusion: Mapping[str, Any] | None = None

    @classmethod
    def from_metas(cls, metas: Mapping[str, Mapping[str, Any]]) -> BundleInfo:
        """From network name → meta as `attrgan.bundle` checked it (a network may be absent)."""
        classifier = metas.get("classifier", {})
        attributes = tuple(classifier.get("attributes") or ())
        marked = classifier.get(PERSON_LEVEL_KEY)
        return cls(
            version=bundle_version(metas) if all("weights_sha256" in metas.get(n, {}) for n in NETWORKS) else "",
            attributes=attributes,
            thresholds=tuple(classifier.get("thresholds") or ()),  # none stored: 0.5 each (`Bundle.thresholds`)
            classifier_version=classifier.get("version", ""),
            input_sizes={name: tuple(meta["input_size"]) for name, meta in metas.items() if "input_size" in meta},
            gains={name: metas.get(name, {}).get(GAIN_KEY) for name in GENERATORS},
            person_level=(person_level(attributes) if marked is None
                          else tuple(a for a in attributes if a in set(marked))),  # model order
            fusion=classifier.get(FUSION_KEY))

    @property
    def input_size(self) -> tuple[int, int]:
        """The classifier's input size: what crops are decoded to."""
        return self.input_sizes["classifier"]

    def occlusion_threshold(self, setting: float | None = None, *, calibrated: bool = False) -> float:
        """The first-pass occlusion_down score from which a crop is reconstructed: `setting` when
        given; else, with `calibrated`, the threshold calibrated on the complete pipeline's
        validation mA that G^R's gain record holds (`attrgan.train.gain.calibrate_occlusion`) when
        it was measured against this classifier; else the classifier's own occlusion_down
        threshold (chosen for detection F1; the default: the calibrated one read the demo's test
        crops worse, docs/demo.md "The occlusion threshold")."""
        if setting is not None:
            return float(setting)
        stored = self.gains.get("reconstruction") or {}
        value = stored.get(OCCLUSION_THRESHOLD_KEY)
        if (calibrated and _is_number(value) and 0.0 <= value <= 1.0
                and stored.get("classifier_version") in (None, "", self.classifier_version)):
            return float(value)
        return self.detection_threshold

    @property
    def detection_threshold(self) -> float:
        """The classifier's own occlusion_down threshold (chosen for detection F1), 0.5 without one."""
        if OCCLUSION_DOWN in self.attributes and len(self.thresholds) == len(self.attributes):
            return float(self.thresholds[self.attributes.index(OCCLUSION_DOWN)])
        return 0.5

    def restorations(self, *, use_superres: bool, use_reconstruction: bool, require_proven: bool,
                     rule: str = "proven") -> dict[str, Restoration]:
        """{"superres": Restoration, "reconstruction": Restoration}: the pipeline's switches, then
        the gate's `rule` (GATE_RULES, `passes_gate`) on a stored gain, unless `require_proven` is
        off. A bundle without the record (written before it existed, or trained without a
        validation split), or whose gain was measured against another classifier, keeps running
        the restoration: nothing was measured against this one."""
        plan = {}
        for name, wanted in (("superres", use_superres), ("reconstruction", use_reconstruction)):
            stored = self.gains.get(name)
            if not wanted:
                plan[name] = Restoration(False, "switched off")
                continue
            if name == "reconstruction" and OCCLUSION_DOWN not in self.attributes:
                plan[name] = Restoration(False, f"the classifier has no {OCCLUSION_DOWN!r} to trigger it")
                continue
            if not isinstance(stored, Mapping) or not isinstance(stored.get("gain_ma"), (int, float)):
                plan[name] = Restoration(True, "no validation gain stored")
                continue
            measured = (f"validation gain {100 * stored['gain_ma']:+.2f} mA "
                        f"({100 * stored.get('low', math.nan):+.2f} to {100 * stored.get('high', math.nan):+.2f}, "
                        f"{_measured_on(stored)})")
            if self.classifier_version and stored.get("classifier_version") not in (None, "", self.classifier_version):
                plan[name] = Restoration(True, f"{measured} against another classifier: not measured for this one")
            elif passes_gate(stored, rule):
                plan[name] = Restoration(True, f"{measured}: {GATE_RULES[rule][0]}")
            elif not require_proven:
                plan[name] = Restoration(True, f"{measured}: {GATE_RULES[rule][1]}, forced on")
            else:
                plan[name] = Restoration(False, f"{measured}: {GATE_RULES[rule][1]} "
                                                f"(pipeline.require_proven=false forces it)")
        return plan


def _measured_on(stored: Mapping[str, Any]) -> str:
    """'500 crops in 62 tracks, 3 occlusion draws, 3 attributes too rare to measure left out'."""
    text = f"{stored.get('crops', '?')} crops" + (f" in {stored['tracks']} tracks" if "tracks" in stored else "")
    draws, left_out = stored.get("draws", 1), stored.get("left_out") or []
    if isinstance(draws, int) and draws > 1:
        text += f", {draws} occlusion draws"
    if isinstance(left_out, list) and left_out:
        text += f", {len(left_out)} attribute{'s' * (len(left_out) > 1)} too rare to measure left out"
    return text


# The gate's rules: name → (what a passing record is called, what a failing one is called).
GATE_RULES = {
    "proven": ("proven", "not proven, its interval reaches 0"),
    "not_harmful": ("not shown to hurt", "shown to hurt, its interval lies below 0"),
}


def passes_gate(stored: Mapping[str, Any], rule: str) -> bool:
    """Whether a stored gain lets its restoration run under `rule`: "proven" (`proven`) or
    "not_harmful" (runs unless the whole interval lies below 0; a record without one runs)."""
    if rule == "proven":
        return proven(stored)
    if rule == "not_harmful":
        high = stored.get("high")
        return not (_is_number(high) and high < 0)
    raise ValueError(f"the gate's rule must be one of {sorted(GATE_RULES)}, got {rule!r}")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def proven(stored: Mapping[str, Any]) -> bool:
    """The gate's rule: a restoration is proven when the lower end of its stored validation gain's
    95 % interval lies above 0. A positive point gain alone is not enough: with a few hundred
    validation crops in a few dozen tracks a gain of +1.5 mA can be noise (docs/demo.md "The gate").
    A record without an interval is not proven."""
    low = stored.get("low")
    return _is_number(low) and low > 0


# ---------------------------------------------------------------------------------------------
# results: the table and its folders (the commit protocol: `attrgan.results`)

SUCCESS_MARKER = "_SUCCESS"
# Where a run stages its files under the output base before promoting them; readers (pyarrow,
# pandas, DuckDB, `load_results`) skip paths whose parts start with '_'.
STAGING_DIR = "_staging"
# A held-back partition's count of crops that failed for a transient reason, run after run.
TRANSIENT_RECORD = "_transient.json"
# The results table of DESIGN.md "Results": these, `<attr>` bool and `<attr>_score` float32 per
# attribute in model order, then the trailing fields.
FIXED_RESULT_FIELDS = (
    pa.field("crop_id", pa.string(), nullable=False),
    pa.field("image_uri", pa.string(), nullable=False),
    pa.field("camera_id", pa.string()),
    pa.field("captured_at", pa.timestamp("us", tz="UTC")),
    pa.field("track_id", pa.string()),
    pa.field("frame_index", pa.int64()),
    pa.field("status", pa.string(), nullable=False),
    pa.field("error", pa.string()),
    pa.field("super_resolved", pa.bool_(), nullable=False),
    pa.field("reconstructed", pa.bool_(), nullable=False),
    pa.field("occlusion_score", pa.float32()),
    pa.field("crop_height", pa.int32()),
)
TRAILING_RESULT_FIELDS = (
    pa.field("model_version", pa.string(), nullable=False),
    pa.field("processed_at", pa.timestamp("us", tz="UTC"), nullable=False),
)
# Columns every result row carries; with `attributes=` these come first, then `<attr>, <attr>_score`.
BASE_COLUMNS = tuple(f.name for f in FIXED_RESULT_FIELDS + TRAILING_RESULT_FIELDS)


def _attribute_fields(attributes: Sequence[str], fixed: Sequence[str], table: str) -> list[pa.Field]:
    names = set(fixed)
    attr_fields: list[pa.Field] = []
    for a in attributes:
        for field in (pa.field(a, pa.bool_()), pa.field(f"{a}_score", pa.float32())):
            if field.name in names or any(f.name == field.name for f in attr_fields):
                raise ValueError(f"attribute {a!r} collides with the {table} column {field.name!r}")
            attr_fields.append(field)
    return attr_fields


def results_schema(attributes: Sequence[str]) -> pa.Schema:
    """The results table of DESIGN.md: fixed columns, `<attr>` bool and `<attr>_score` float32 per
    attribute (in model order), then model_version and processed_at."""
    attr_fields = _attribute_fields(attributes, BASE_COLUMNS, "results")
    return pa.schema([*FIXED_RESULT_FIELDS, *attr_fields, *TRAILING_RESULT_FIELDS])


# ---------------------------------------------------------------------------------------------
# tracks: one row per (partition, camera_id, track_id), committed with the partition's crops

# A partition's track files live in this folder of the partition and are listed in its
# `_SUCCESS` under TRACK_FILES_KEY: one switch commits crops and tracks together, and readers of
# the crop results skip the folder (a '_' path).
TRACKS_DIR = "_tracks"
TRACK_FILES_KEY = "track_files"
FIXED_TRACK_FIELDS = (
    pa.field("camera_id", pa.string()),
    # null: a crop without a track_id, its own track of one (best_crop_id names it)
    pa.field("track_id", pa.string()),
    pa.field("crops", pa.int32(), nullable=False),  # the track's rows in this partition
    pa.field("crops_ok", pa.int32(), nullable=False),  # of those, scored (status ok): what is fused
    pa.field("first_seen", pa.timestamp("us", tz="UTC")),
    pa.field("last_seen", pa.timestamp("us", tz="UTC")),
    pa.field("first_frame", pa.int64()),
    pa.field("last_frame", pa.int64()),
    pa.field("best_crop_id", pa.string(), nullable=False),  # the scored crop of highest quality weight
    pa.field("best_image_uri", pa.string(), nullable=False),
    # shares of the scored crops; null when none was scored
    pa.field("occluded_share", pa.float32()),  # first-pass occlusion score at or over its threshold
    pa.field("super_resolved_share", pa.float32()),
    pa.field("reconstructed_share", pa.float32()),
    pa.field("median_height", pa.float32()),  # stored crop height, pixels
    # the sum of the scored crops' quality weights: what merges a track's rows across partitions
    pa.field("weight", pa.float64(), nullable=False),
    pa.field("fusion", pa.string(), nullable=False),  # the rule that fused the scores (`attrgan.fusion`)
)
TRACK_COLUMNS = tuple(f.name for f in FIXED_TRACK_FIELDS + TRAILING_RESULT_FIELDS)


def tracks_schema(person_attributes: Sequence[str]) -> pa.Schema:
    """The per-track table of DESIGN.md: fixed columns, then the fused `<attr>` bool and
    `<attr>_score` float32 of each person-level attribute (in model order), then model_version and
    processed_at. Moment-level attributes (actions) stay per crop."""
    attr_fields = _attribute_fields(person_attributes, TRACK_COLUMNS, "tracks")
    return pa.schema([*FIXED_TRACK_FIELDS, *attr_fields, *TRAILING_RESULT_FIELDS])


# ---------------------------------------------------------------------------------------------
# error kinds: a results row's `error` is "<kind>: <what>"

# A read that failed for a reason that may pass (timeouts, throttling, 5xx): its partition is held
# back and redone by the next run.
TRANSIENT = "transient"
# A crop that failed for a transient reason in `max_transient_runs` runs in a row: given up on.
GAVE_UP = "gave up"


def error_kind(message: str) -> str:
    """The kind of an error message: its text up to the first ':' ("missing object: s3://…")."""
    return message.split(":", 1)[0].strip() or "error"


@dataclasses.dataclass(frozen=True)
class TransientHistory:
    """What the decode step needs to give up on a crop: the run count after which it does, and per
    partition (its index in the commit group) the crops that reach it if they fail again."""

    max_runs: int
    runs: Mapping[int, Mapping[str, int]]

    def gives_up(self, partition: int, crop_id: str) -> int | None:
        """The runs in a row this one would make, when they reach `max_runs`; else None."""
        runs = self.runs.get(partition, {}).get(crop_id, 0) + 1
        return runs if runs >= self.max_runs else None


def gave_up_error(error: str, runs: int) -> str:
    """The permanent error of a crop that failed for a transient reason in `runs` runs in a row."""
    return f"{GAVE_UP}: its image read failed for a transient reason in {runs} runs in a row ({error})"

"""Attribute lists and their ids.

Every model stores the ordered list of attribute ids it was trained on; the lists here are the
ones the project knows by name. Ids are snake_case; `RAP_NAMES` keeps RAP's own spelling so that
converters and reports can map between the two.
"""

from __future__ import annotations

# RAP v1's 51 attributes in the dataset's order, with the names RAP's annotation file uses.
RAP_NAMES: dict[str, str] = {
    "female": "Female",
    "age_less_16": "AgeLess16",
    "age_17_30": "Age17-30",
    "age_31_45": "Age31-45",
    "body_fat": "BodyFat",
    "body_normal": "BodyNormal",
    "body_thin": "BodyThin",
    "customer": "Customer",
    "clerk": "Clerk",
    "bald_head": "hs-BaldHead",
    "long_hair": "hs-LongHair",
    "black_hair": "hs-BlackHair",
    "hat": "hs-Hat",
    "glasses": "hs-Glasses",
    "muffler": "hs-Muffler",
    "shirt": "ub-Shirt",
    "sweater": "ub-Sweater",
    "vest": "ub-Vest",
    "tshirt": "ub-TShirt",
    "cotton": "ub-Cotton",
    "jacket": "ub-Jacket",
    "suit_up": "ub-SuitUp",
    "tight": "ub-Tight",
    "short_sleeve": "ub-ShortSleeve",
    "long_trousers": "lb-LongTrousers",
    "skirt": "lb-Skirt",
    "short_skirt": "lb-ShortSkirt",
    "dress": "lb-Dress",
    "jeans": "lb-Jeans",
    "tight_trousers": "lb-TightTrousers",
    "leather_shoes": "shoes-Leather",
    "sport_shoes": "shoes-Sport",
    "boots": "shoes-Boots",
    "cloth_shoes": "shoes-Cloth",
    "casual_shoes": "shoes-Casual",
    "backpack": "attach-Backpack",
    "single_shoulder_bag": "attach-SingleShoulderBag",
    "handbag": "attach-HandBag",
    "box": "attach-Box",
    "plastic_bag": "attach-PlasticBag",
    "paper_bag": "attach-PaperBag",
    "hand_trunk": "attach-HandTrunk",
    "other_attachment": "attach-Other",
    "calling": "action-Calling",
    "talking": "action-Talking",
    "gathering": "action-Gathering",
    "holding": "action-Holding",
    "pushing": "action-Pushing",
    "pulling": "action-Pulling",
    "carry_by_arm": "action-CarrybyArm",
    "carry_by_hand": "action-CarrybyHand",
}
RAP51: tuple[str, ...] = tuple(RAP_NAMES)

OCCLUSION_DOWN = "occlusion_down"
# What the paper's classifier predicts: the RAP 51 plus the lower-body occlusion flag that
# decides whether the reconstruction network runs.
RAP_ATTRIBUTES: tuple[str, ...] = RAP51 + (OCCLUSION_DOWN,)

# Moment-level attributes describe a crop, not the person: what they are doing in that frame
# (RAP's actions, PA-100K's HoldObjectsInFront) and whether this crop's lower body is hidden.
# Per-track fusion leaves them per crop; every other attribute is person-level and is fused over
# the person's track (`attrgan.fusion`).
MOMENT_LEVEL: frozenset[str] = frozenset(
    {a for a, name in RAP_NAMES.items() if name.startswith("action-")} | {"hold_objects_in_front", OCCLUSION_DOWN})


def person_level(attributes: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """The person-level attributes of `attributes`, in their order."""
    return tuple(a for a in attributes if a not in MOMENT_LEVEL)


# Attributes the synthetic pedestrian renderer draws (attrgan.data.synth). Ids reuse RAP's where
# RAP has the attribute, so a synthetic model and a RAP model speak the same language.
SYNTH_ATTRIBUTES: tuple[str, ...] = (
    "female",
    "long_hair",
    "hat",
    "glasses",
    "muffler",
    "short_sleeve",
    "jacket",
    "long_trousers",
    "skirt",
    "dress",
    "boots",
    "backpack",
    "handbag",
    "box",
    "plastic_bag",
    "carry_by_hand",
    OCCLUSION_DOWN,
)


def snake_case(name: str) -> str:
    """Turn a dataset's attribute name ('personalLess30', 'hs-BaldHead', 'Age17-30') into an id."""
    out: list[str] = []
    prev = ""
    for ch in name.strip():
        if ch.isalnum():
            boundary = ch.isupper() and (prev.islower() or prev.isdigit())
            boundary |= ch.isdigit() and prev.isalpha()
            if boundary and out and out[-1] != "_":
                out.append("_")
            out.append(ch.lower())
        elif out and out[-1] != "_":
            out.append("_")
        prev = ch
    return "".join(out).strip("_")


def validate_attributes(attributes: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """Check an attribute list: non-empty, unique snake_case ids. Returns it as a tuple."""
    attrs = tuple(attributes)
    if not attrs:
        raise ValueError("attribute list is empty")
    dupes = sorted({a for a in attrs if attrs.count(a) > 1})
    if dupes:
        raise ValueError(f"attribute list has duplicates: {dupes}")
    bad = [a for a in attrs if not a or a != snake_case(a)]
    if bad:
        raise ValueError(f"attribute ids must be snake_case, got {bad}")
    return attrs


# PETA's 35 attributes most papers evaluate on (the `selected_attribute` set of PETA.mat), in the
# file's order, with the names PETA uses. Ids are `snake_case` of those names.
PETA_NAMES: dict[str, str] = {
    "personal_less_30": "personalLess30",
    "personal_less_45": "personalLess45",
    "personal_less_60": "personalLess60",
    "personal_larger_60": "personalLarger60",
    "carrying_backpack": "carryingBackpack",
    "carrying_other": "carryingOther",
    "lower_body_casual": "lowerBodyCasual",
    "upper_body_casual": "upperBodyCasual",
    "lower_body_formal": "lowerBodyFormal",
    "upper_body_formal": "upperBodyFormal",
    "accessory_hat": "accessoryHat",
    "upper_body_jacket": "upperBodyJacket",
    "lower_body_jeans": "lowerBodyJeans",
    "footwear_leather_shoes": "footwearLeatherShoes",
    "upper_body_logo": "upperBodyLogo",
    "hair_long": "hairLong",
    "personal_male": "personalMale",
    "carrying_messenger_bag": "carryingMessengerBag",
    "accessory_muffler": "accessoryMuffler",
    "accessory_nothing": "accessoryNothing",
    "carrying_nothing": "carryingNothing",
    "upper_body_plaid": "upperBodyPlaid",
    "carrying_plastic_bags": "carryingPlasticBags",
    "footwear_sandals": "footwearSandals",
    "footwear_shoes": "footwearShoes",
    "lower_body_shorts": "lowerBodyShorts",
    "upper_body_short_sleeve": "upperBodyShortSleeve",
    "lower_body_short_skirt": "lowerBodyShortSkirt",
    "footwear_sneaker": "footwearSneaker",
    "upper_body_thin_stripes": "upperBodyThinStripes",
    "accessory_sunglasses": "accessorySunglasses",
    "lower_body_trousers": "lowerBodyTrousers",
    "upper_body_tshirt": "upperBodyTshirt",
    "upper_body_other": "upperBodyOther",
    "upper_body_vneck": "upperBodyVNeck",
}
PETA35: tuple[str, ...] = tuple(PETA_NAMES)

# PA-100K's 26 attributes in annotation.mat's order, with its names.
PA100K_NAMES: dict[str, str] = {
    "female": "Female",
    "age_over_60": "AgeOver60",
    "age_18_60": "Age18-60",
    "age_less_18": "AgeLess18",
    "front": "Front",
    "side": "Side",
    "back": "Back",
    "hat": "Hat",
    "glasses": "Glasses",
    "hand_bag": "HandBag",
    "shoulder_bag": "ShoulderBag",
    "backpack": "Backpack",
    "hold_objects_in_front": "HoldObjectsInFront",
    "short_sleeve": "ShortSleeve",
    "long_sleeve": "LongSleeve",
    "upper_stride": "UpperStride",
    "upper_logo": "UpperLogo",
    "upper_plaid": "UpperPlaid",
    "upper_splice": "UpperSplice",
    "lower_stripe": "LowerStripe",
    "lower_pattern": "LowerPattern",
    "long_coat": "LongCoat",
    "trousers": "Trousers",
    "shorts": "Shorts",
    "skirt_dress": "Skirt&Dress",
    "boots": "boots",
}
PA100K26: tuple[str, ...] = tuple(PA100K_NAMES)

"""Builders the tests share: a bundle of tiny random networks, random images, PNG bytes and
buckets on the local S3 server.

Test files import them from here (pytest puts tests/ on sys.path), never from one another.
"""

from __future__ import annotations

import io
import uuid

import numpy as np
import torch
from PIL import Image

from attrgan.attributes import OCCLUSION_DOWN
from attrgan.bundle import Bundle
from attrgan.models import (AttributeClassifier, ClassifierConfig, ReconstructionConfig, ReconstructionGenerator,
                            SuperResConfig, SuperResGenerator)

ATTRS = ("female", "hat", OCCLUSION_DOWN)
INPUT = (64, 32)  # tiny classifier input; G^S 16×8 → 64×32, G^R works at 32×16


def tiny_bundle(*, attributes=ATTRS, input_size=INPUT, sr_input=(16, 8), rec_input=(32, 16), width=1 / 16,
                thresholds=None, metas=None, seed=0) -> Bundle:
    """Random tiny networks, the same ones for the same arguments: a classifier of `attributes` at
    `input_size` (backbone "small" at `width`), G^S from `sr_input` and G^R at `rec_input`.
    `thresholds` go into the classifier's metadata; `metas` replaces all of it."""
    torch.manual_seed(seed)
    classifier = AttributeClassifier(ClassifierConfig(attributes=tuple(attributes), backbone="small", width=width,
                                                      input_size=input_size))
    superres = SuperResGenerator(SuperResConfig(width=1 / 64, input_size=sr_input))
    reconstruction = ReconstructionGenerator(ReconstructionConfig(width=1 / 32, input_size=rec_input))
    if metas is None:
        metas = {"classifier": {"thresholds": thresholds}} if thresholds is not None else {}
    return Bundle(classifier=classifier.eval(), reconstruction=reconstruction.eval(), superres=superres.eval(),
                  metas=metas, version="tiny")


def random_images(n: int, size=INPUT, seed=1) -> np.ndarray:
    """n random RGB images (n, H, W, 3) uint8."""
    return np.random.default_rng(seed).integers(0, 256, size=(n, *size, 3), dtype=np.uint8)


def png(seed: int, shape=(80, 32)) -> bytes:
    """A random RGB image of `shape` (H, W) as PNG bytes."""
    buf = io.BytesIO()
    Image.fromarray(random_images(1, shape, seed)[0]).save(buf, format="PNG")
    return buf.getvalue()


def new_bucket(endpoint: str) -> str:
    """A fresh, empty bucket on the S3 server at `endpoint`; returns its name."""
    import boto3

    name = f"test-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(Bucket=name)
    return name

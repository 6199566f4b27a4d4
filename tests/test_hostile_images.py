"""Hostile and broken images: each case a clear row-level error, with bounded memory."""

from __future__ import annotations

import numpy as np
import pytest
from hostile import cut_jpeg, encode, forged_jpeg, large_png, noise_jpeg, peak_decode_mib
from PIL import Image

from attrgan.data.images import ImageError, crop, decode_batch, decode_image, load_crop


def test_jpeg_cut_short_and_closed_is_an_error_not_half_grey():
    data = noise_jpeg()
    assert decode_image(data).shape == (512, 256, 3)
    for keep in (0.5, 0.9, 0.99):
        with pytest.raises(ImageError, match=r"^undecodable image: truncated JPEG: "):
            decode_image(cut_jpeg(data, keep))


def test_cut_jpeg_refused_when_drafted(tmp_path):
    path = tmp_path / "cut.jpg"
    path.write_bytes(cut_jpeg(noise_jpeg(1024, 512)))
    out = decode_batch({"image_uri": [str(path)]}, size=(64, 32))  # drafted to 1/4 or 1/8
    assert out["error"][0].startswith("undecodable image: truncated JPEG: ")


def test_genuine_grey_jpeg_still_decodes():
    # An image that really ends in mid-grey is not mistaken for padding.
    for mode, fill in (("RGB", (128, 128, 128)), ("L", 128)):
        grey = decode_image(encode(Image.new(mode, (64, 48), fill), "JPEG"))
        assert grey.shape == (48, 64, 3) and (grey == 128).all()


def test_header_declaring_more_pixels_than_the_bytes_hold(tmp_path):
    data = forged_jpeg(13000, 13000)
    assert len(data) < 1000
    path = tmp_path / "forged.jpg"
    path.write_bytes(data)
    with pytest.raises(ImageError, match=r"^undecodable image: the JPEG header declares 13000x13000 pixels, "
                                         r"more than \d+ bytes can hold"):
        load_crop(str(path), size=(320, 128))  # decoded at 1/8 it would be 99.99 % grey
    with pytest.raises(ImageError, match="^undecodable image: the JPEG header declares 3000x2000"):
        decode_image(forged_jpeg(3000, 2000))


def test_infinite_or_nan_box_is_a_bad_bbox():
    image = np.zeros((8, 8, 3), np.uint8)
    for box in ((0, 0, float("inf"), 2), (float("nan"), 0, 2, 2), (0, -float("inf"), 2, 2)):
        with pytest.raises(ImageError, match="^bad bbox"):
            crop(image, box)
    out = decode_batch({"image_uri": ["/nonexistent.png"], "bbox_x": [0.0], "bbox_y": [0.0],
                        "bbox_w": [float("inf")], "bbox_h": [4.0]}, size=(8, 4))
    assert out["error"][0].startswith("bad bbox")


def test_messages_name_the_type_never_the_content(tmp_path):
    secret = tmp_path / "shadow"
    secret.write_bytes(b"root:*:19000:0:99999:7:::\n")
    token = tmp_path / "token"
    token.write_bytes(b"password=hunter2 \x00\x01\x02 binary")
    out = decode_batch({"image_uri": [str(secret), str(token)]}, size=(8, 4))
    assert out["error"][0] == f"undecodable image: not a JPEG/PNG/WEBP/BMP file (26 bytes of text) ({secret})"
    assert "unrecognised binary data" in out["error"][1]
    for message in out["error"]:
        assert "19000" not in message and "hunter2" not in message and "b'" not in message


def test_row_values_never_fail_a_batch(tmp_path):
    good = tmp_path / "ok.png"
    good.write_bytes(encode(np.full((8, 4, 3), 7, np.uint8)))
    uris = ["ftp://h/x.jpg", "gs://b/k.jpg", "s3://", "s3:///key", "s3://b/a/../k.jpg", "s3://bucket/",
            None, "http://user:secret@h/x.jpg", str(good)]
    out = decode_batch({"image_uri": uris}, size=(8, 4), allowed_prefixes=("s3://bucket", "file://"))
    kinds = [e.split(":")[0] if e else None for e in out["error"]]
    assert kinds == ["unsupported uri", "unsupported uri", "bad uri", "bad uri", "bad uri", "bad uri",
                     "missing uri", "unsupported uri", None]
    assert "names no bucket" in out["error"][3] and "secret" not in out["error"][7]
    assert (out["image"][-1] == 7).all()


@pytest.mark.slow
def test_memory_per_image_is_bounded_for_every_mode(tmp_path):
    """Extra peak RSS decoding a 12 MP PNG to a 320x128 crop: the decoded frame plus little, for
    alpha, palette+tRNS and 16-bit too (before: 3-5x the frame for these modes)."""
    width, height = 4000, 3000
    frame_mib = {"RGB": 4, "RGBA": 4, "PT": 1, "I;16": 2, "L": 1}  # Pillow's bytes per pixel
    for mode, bpp in frame_mib.items():
        path = tmp_path / f"{mode.replace(';', '')}.png"
        path.write_bytes(large_png(mode, width, height))
        frame = width * height * bpp / 2**20
        batch = peak_decode_mib(str(path), "batch")
        assert batch["result"] is None
        assert batch["mib"] < frame + 30, (mode, batch["mib"], frame)
        full = peak_decode_mib(str(path), "full")
        assert full["result"] == [height, width, 3]
        # the frame, the RGB output (3 bytes a pixel) and one band being converted
        assert full["mib"] < frame + width * height * 3 / 2**20 + 40, (mode, full["mib"], frame)

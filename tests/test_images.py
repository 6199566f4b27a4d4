import io
import json
import struct
import subprocess
import sys
import textwrap
import zlib

import numpy as np
import pytest
import torch
from PIL import Image, JpegImagePlugin

from attrgan.data import images as im
from attrgan.data import storage as st
from attrgan.data.images import (
    ImageError,
    crop,
    decode_batch,
    decode_image,
    load_crop,
    resize,
    to_tensor,
    to_uint8,
)


def encode(image, fmt="PNG", **kwargs) -> bytes:
    buf = io.BytesIO()
    (image if isinstance(image, Image.Image) else Image.fromarray(image)).save(buf, fmt, **kwargs)
    return buf.getvalue()


def jpeg(h, w, color=(200, 100, 50)) -> bytes:
    return encode(Image.new("RGB", (w, h), color), "JPEG", quality=95)


def grid(h=6, w=8) -> np.ndarray:
    """Pixel (y, x) = (y, x, y + x): every crop's values are known by hand."""
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([y, x, y + x], axis=2).astype(np.uint8)


# --------------------------------------------------------------------------------------------- decode


def test_decode_modes_to_rgb():
    assert np.array_equal(decode_image(encode(grid())), grid())
    grey = np.array([[0, 128, 255]], dtype=np.uint8)
    assert decode_image(encode(grey)).tolist() == [[[0, 0, 0], [128, 128, 128], [255, 255, 255]]]
    palette = Image.new("P", (2, 1))
    palette.putpalette([10, 20, 30, 40, 50, 60])
    palette.putpixel((1, 0), 1)
    assert decode_image(encode(palette)).tolist() == [[[10, 20, 30], [40, 50, 60]]]
    # alpha composited onto black: 200 * 128 / 255 = 100.4 -> 100, 100 -> 50, 50 -> 25
    rgba = np.array([[[200, 100, 50, 128], [9, 9, 9, 0], [1, 2, 3, 255]]], dtype=np.uint8)
    assert decode_image(encode(rgba)).tolist() == [[[100, 50, 25], [0, 0, 0], [1, 2, 3]]]
    la = Image.fromarray(np.array([[[200, 255], [200, 0]]], dtype=np.uint8), "LA")
    assert decode_image(encode(la)).tolist() == [[[200] * 3, [0] * 3]]
    transparent = palette.copy()
    transparent.info["transparency"] = 1
    assert decode_image(encode(transparent, transparency=1)).tolist() == [[[10, 20, 30], [0, 0, 0]]]
    # 16-bit greyscale PNG scales to 8 bit (65535 -> 255, 32896 = 128 * 257 -> 128) instead of clipping
    deep = Image.fromarray(np.array([[0, 65535, 32896, 256]], dtype=np.uint16))
    assert decode_image(encode(deep))[0, :, 0].tolist() == [0, 255, 128, 1]
    cmyk = decode_image(encode(Image.new("CMYK", (4, 4), (0, 255, 255, 0)), "JPEG", quality=100))
    assert cmyk.shape == (4, 4, 3) and cmyk.dtype == np.uint8
    assert abs(int(cmyk[0, 0, 0]) - 255) <= 3 and cmyk[0, 0, 1] <= 3 and cmyk[0, 0, 2] <= 3  # red
    color = decode_image(jpeg(3, 5))
    assert color.shape == (3, 5, 3) and np.abs(color.astype(int) - [200, 100, 50]).max() <= 3
    assert decode_image(encode(grid()[:1, :1])).shape == (1, 1, 3)


def test_decode_rejects_bad_bytes():
    noise = np.random.default_rng(0).integers(0, 256, (128, 128, 3), dtype=np.uint8)
    data = encode(noise, "JPEG", quality=90)
    with pytest.raises(ImageError, match=r"^undecodable image: truncated JPEG: "):
        decode_image(data[: len(data) // 2])  # cut inside the scan: never a half-grey image
    with pytest.raises(ImageError, match=r"^undecodable image: truncated or corrupt file header"):
        decode_image(data[:100])
    with pytest.raises(ImageError, match=r"^undecodable image: not a JPEG/PNG/WEBP/BMP file \(11 bytes of text\)"):
        decode_image(b"hello world")
    with pytest.raises(ImageError, match=r"^undecodable image: the file is empty"):
        decode_image(b"")
    with pytest.raises(ImageError, match="^undecodable image: not a"):
        decode_image(encode(grid(), "GIF"))  # a real image, but not an accepted format
    with pytest.raises(ValueError, match="max_pixels must be a positive integer, got 0"):
        decode_image(data, max_pixels=0)


def png_header(width, height) -> bytes:
    """A PNG that claims width x height and carries (almost) no pixel data."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0")) + chunk(b"IEND", b"")


def test_size_limit_from_the_header():
    with pytest.raises(ImageError, match=r"^image too large: 12000x12000 PNG \(144.0 MP\) is over the 40.0 MP decode limit$"):
        decode_image(png_header(12000, 12000))
    with pytest.raises(ImageError, match="^image too large: .*decompression bomb"):
        decode_image(png_header(20000, 20000))
    big = jpeg(800, 600)
    with pytest.raises(ImageError, match=r"^image too large: 600x800 JPEG \(0.5 MP\) is over the 0.2 MP"):
        decode_image(big, max_pixels=200_000)


def test_large_jpeg_is_drafted_within_the_limit(tmp_path):
    path = tmp_path / "big.jpg"
    path.write_bytes(jpeg(800, 600))
    # 480,000 px > 200,000: decoded at 1/2 (300 x 400 = 120,000 px), the box scaled with it
    piece = load_crop(str(path), (100, 200, 300, 400), max_pixels=200_000)
    assert piece.shape == (200, 150, 3) and np.abs(piece.astype(int) - [200, 100, 50]).max() <= 3
    with pytest.raises(ImageError, match="even at 1/8 scale"):
        load_crop(str(path), max_pixels=1_000)
    path.with_suffix(".png").write_bytes(encode(Image.new("RGB", (600, 800))))
    with pytest.raises(ImageError, match="only JPEGs can be decoded at reduced scale"):
        load_crop(str(path.with_suffix(".png")), max_pixels=200_000)


def test_draft_used_when_the_crop_allows(tmp_path, monkeypatch):
    calls = []
    original = JpegImagePlugin.JpegImageFile.draft

    def spy(self, mode, size):
        calls.append(size)
        return original(self, mode, size)

    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "draft", spy)
    path = tmp_path / "frame.jpg"
    path.write_bytes(jpeg(1600, 800))
    # a 1280 x 512 box at 1/4 is 320 x 128: exactly the output size, so 1/4 loses nothing
    out = load_crop(str(path), (0, 0, 512, 1280), size=(320, 128))
    assert calls == [(200, 400)] and out.shape == (320, 128, 3)
    calls.clear()
    assert load_crop(str(path), (0, 0, 70, 140), size=(320, 128)).shape == (320, 128, 3)
    assert calls == []  # a small crop needs every pixel


def test_12000_square_jpeg_decodes_in_bounded_memory(tmp_path):
    path = tmp_path / "huge.jpg"
    # Made in a child process so that this process's memory is not what gets measured.
    subprocess.run([sys.executable, "-c", textwrap.dedent(f"""
        from PIL import Image
        Image.new("RGB", (12000, 12000), (120, 60, 30)).save({str(path)!r}, "JPEG", quality=50)
    """)], check=True, timeout=120)
    probe = textwrap.dedent(f"""
        import json, resource
        from attrgan.data.images import decode_batch, decode_image, ImageError
        data = open({str(path)!r}, "rb").read()
        peak = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        before = peak()
        try:
            decode_image(data)
            refused = ""
        except ImageError as exc:
            refused = str(exc)
        after_refuse = peak()
        batch = {{"image_uri": [{str(path)!r}] * 2, "bbox_x": [10, 0], "bbox_y": [20, 0],
                 "bbox_w": [70, 12000], "bbox_h": [140, 12000]}}
        out = decode_batch(batch, size=(32, 16), max_pixels=10_000_000)
        print(json.dumps({{"before": before, "after_refuse": after_refuse, "after": peak(), "refused": refused,
                          "status": out["status"].tolist(), "shape": out["image"].shape,
                          "crop": [out["crop_height"].tolist(), out["crop_width"].tolist()],
                          "pixel": out["image"][0, 5, 5].tolist()}}))
    """)
    result = subprocess.run([sys.executable, "-c", probe], check=True, capture_output=True, text=True, timeout=120)
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["refused"].startswith("image too large: 12000x12000 JPEG (144.0 MP)")
    assert report["after_refuse"] - report["before"] < 5  # refused from the header, nothing decoded
    assert report["status"] == ["ok", "ok"] and report["shape"] == [2, 32, 16, 3]
    assert report["crop"] == [[140, 12000], [70, 12000]]  # sizes in the stored image, not the reduced one
    assert max(abs(a - b) for a, b in zip(report["pixel"], [120, 60, 30])) <= 4
    # 10 MP limit -> decoded at 1/4: 3000 x 3000 x 4 bytes = 36 MB; a full decode would take 576 MB.
    assert report["after"] - report["before"] < 80, report


# --------------------------------------------------------------------------------------------- crop/resize


def test_crop_rules():
    image = grid(6, 8)
    piece = crop(image, (2, 1, 3, 4))
    assert piece.shape == (4, 3, 3) and piece[0, 0].tolist() == [1, 2, 3] and piece[3, 2].tolist() == [4, 4, 8]
    assert crop(image, None).tolist() == image.tolist() and crop(image, None) is not image
    # 6 x 4 box at (4, 2): 4 x 4 = 16 of 24 px inside (67 %) -> clipped
    assert crop(image, (4, 2, 6, 4)).shape == (4, 4, 3)
    with pytest.raises(ImageError, match=r"^bad bbox: only 25% of \(x=6, y=-2, w=4, h=4\) lies inside the 8x6 image \(at least 50% must\)"):
        crop(image, (6, -2, 4, 4))
    with pytest.raises(ImageError, match=r"^bad bbox: \(x=8, y=0, w=2, h=2\) lies entirely outside the 8x6 image"):
        crop(image, (8, 0, 2, 2))
    for bad in ((0, 0, 0, 3), (0, 0, 3, -1)):
        with pytest.raises(ImageError, match="^bad bbox: width and height must be positive"):
            crop(image, bad)


def test_resize():
    flat = np.full((3, 2, 3), 77, dtype=np.uint8)
    out = resize(flat, (320, 128))
    assert out.shape == (320, 128, 3) and out.dtype == np.uint8 and (out == 77).all()
    one = resize(np.array([[[1, 2, 3]]], dtype=np.uint8), (4, 2))
    assert one.shape == (4, 2, 3) and (one == [1, 2, 3]).all()
    # shrinking averages (antialias): a 1-px checkerboard becomes mid grey, not aliased stripes
    checker = (np.indices((64, 64)).sum(0) % 2 * 255).astype(np.uint8)
    small = resize(np.repeat(checker[:, :, None], 3, axis=2), (8, 8))
    assert np.abs(small.astype(int) - 127).max() <= 2
    with pytest.raises(ValueError, match="size must be positive"):
        resize(flat, (0, 4))
    with pytest.raises(ValueError, match=r"expected \(H, W, 3\) uint8"):
        resize(flat.astype(np.float32), (4, 4))


def test_tensor_round_trip():
    images = np.random.default_rng(0).integers(0, 256, (2, 5, 4, 3), dtype=np.uint8)
    x = to_tensor(images)
    assert x.shape == (2, 3, 5, 4) and x.dtype == torch.float32
    assert x[0, :, 0, 0].tolist() == pytest.approx((images[0, 0, 0] / 127.5 - 1).tolist(), abs=1e-6)
    assert to_tensor(np.array([[[[0, 255, 0]]]], dtype=np.uint8)).flatten().tolist() == [-1.0, 1.0, -1.0]
    assert np.array_equal(to_uint8(x), images)
    assert to_uint8(torch.tensor([[[[-3.0]], [[3.0]], [[0.0]]]])).tolist() == [[[[0, 255, 128]]]]
    with pytest.raises(ValueError, match=r"expected \(N, H, W, 3\) uint8"):
        to_tensor(images[0])


# --------------------------------------------------------------------------------------------- batches


def test_decode_batch_keeps_every_row_and_flags_exactly_the_bad_ones(storage, s3_bucket, tmp_path):
    root = f"s3://{s3_bucket}/imgs"
    fs, _ = st.fsspec_filesystem(root, storage)
    fs.pipe_file(f"{s3_bucket}/imgs/frame.png", encode(grid(60, 80)))  # written with s3fs ...
    st.write_bytes(f"{root}/tiny.png", encode(grid(1, 1) + 9), storage)  # ... and with pyarrow
    st.write_bytes(f"{root}/cut.jpg", jpeg(64, 64)[:300], storage)
    st.write_bytes(f"{root}/text.jpg", b"this is not an image", storage)
    local = tmp_path / "crop.jpg"
    local.write_bytes(jpeg(140, 70))
    nan = float("nan")
    rows = [  # (image_uri, bbox, expected error prefix or None)
        (f"{root}/frame.png", (10, 20, 16, 32), None),
        (f"{root}/frame.png", (nan, nan, nan, nan), None),
        (f"{root}/tiny.png", (nan, nan, nan, nan), None),
        (str(local), (nan, nan, nan, nan), None),
        (f"{root}/missing.jpg", (nan, nan, nan, nan), f"missing object: {root}/missing.jpg not found"),
        (f"{root}/cut.jpg", (nan, nan, nan, nan), "undecodable image: truncated"),
        (f"{root}/text.jpg", (nan, nan, nan, nan), "undecodable image: not a JPEG"),
        (f"{root}/frame.png", (500, 500, 10, 10), "bad bbox: (x=500, y=500, w=10, h=10) lies entirely outside the 80x60"),
        (f"{root}/frame.png", (0, 0, 0, 10), "bad bbox: width and height must be positive"),
        (f"{root}/frame.png", (1, nan, 3, 3), "bad bbox: bbox_x, bbox_y, bbox_w, bbox_h must be all set or all null"),
        ("http://example.com/a.jpg", (nan, nan, nan, nan), "unsupported uri: unsupported URI scheme 'http://'"),
        (None, (nan, nan, nan, nan), "missing uri: row has no image_uri"),
    ]
    batch = {"crop_id": np.array([f"r{i}" for i in range(len(rows))], dtype=object),
             "image_uri": np.array([r[0] for r in rows], dtype=object)}
    for j, name in enumerate(("bbox_x", "bbox_y", "bbox_w", "bbox_h")):
        batch[name] = np.array([r[1][j] for r in rows], dtype=np.float64)  # Ray hands nullable ints over as floats

    out = decode_batch(batch, size=(8, 4), storage=storage, workers=4)
    n = len(rows)
    assert out["crop_id"] is batch["crop_id"] and "image" not in batch  # input untouched
    assert out["image"].shape == (n, 8, 4, 3) and out["image"].dtype == np.uint8
    assert len(out["status"]) == len(out["error"]) == len(out["crop_height"]) == n
    for i, (_, _, expected) in enumerate(rows):
        if expected is None:
            assert out["status"][i] == "ok" and out["error"][i] is None, (i, out["error"][i])
        else:
            assert out["status"][i] == "error" and out["error"][i].startswith(expected), (i, out["error"][i])
            assert (out["image"][i] == 0).all() and out["crop_height"][i] == 0 and out["crop_width"][i] == 0
    assert out["crop_height"][:4].tolist() == [32, 60, 1, 140] and out["crop_width"][:4].tolist() == [16, 80, 1, 70]
    assert out["crop_height"].dtype == np.int32
    assert (out["image"][2] == [9, 9, 9]).all()  # the 1x1 image, resized
    # row 0 is grid[20:52, 10:26] squeezed to 8x4 by area averaging: channel 0 rises with y
    assert out["image"][0, 0, 0, 0] < out["image"][0, -1, 0, 0] and 20 <= out["image"][0, 0, 0, 0] <= 26


def test_decode_batch_fetches_each_object_once(monkeypatch, tmp_path):
    path = tmp_path / "frame.png"
    path.write_bytes(encode(grid(60, 80)))
    fetched = []
    real_fetch = im.fetch
    monkeypatch.setattr(im, "fetch", lambda uri, storage=None: fetched.append(uri) or real_fetch(uri, storage))
    batch = {"image_uri": [str(path)] * 3, "bbox_x": [0, 10, 20], "bbox_y": [0, 0, 0],
             "bbox_w": [4, 4, 4], "bbox_h": [8, 8, 8]}
    out = decode_batch(batch, size=(8, 4))
    assert fetched == [str(path)] and out["status"].tolist() == ["ok"] * 3
    assert out["image"][1, 0, 0].tolist() == [0, 10, 10] and out["image"][2, 0, 0].tolist() == [0, 20, 20]
    # no bbox columns at all: whole images; pandas input works the same
    import pandas as pd

    whole = decode_batch(pd.DataFrame({"image_uri": [str(path)]}), size=(6, 8))
    assert whole["crop_height"].tolist() == [60] and whole["image"].shape == (1, 6, 8, 3)
    empty = decode_batch({"image_uri": np.array([], dtype=object)}, size=(8, 4))
    assert empty["image"].shape == (0, 8, 4, 3) and empty["status"].tolist() == []
    with pytest.raises(ValueError, match="needs an 'image_uri' column"):
        decode_batch({"uri": []})


def test_load_crop_errors_name_the_object(storage, s3_bucket):
    with pytest.raises(ImageError, match=rf"^missing object: s3://{s3_bucket}/nope.jpg not found$"):
        load_crop(f"s3://{s3_bucket}/nope.jpg", storage=storage)
    st.write_bytes(f"s3://{s3_bucket}/a.jpg", jpeg(140, 70), storage)
    out = load_crop(f"s3://{s3_bucket}/a.jpg", (5, 10, 20, 40), storage, size=(16, 8))
    assert out.shape == (16, 8, 3) and np.abs(out.astype(int) - [200, 100, 50]).max() <= 4
    assert load_crop(f"s3://{s3_bucket}/a.jpg", (5, 10, 20, 40), storage).shape == (40, 20, 3)

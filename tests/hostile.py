"""Builders of hostile and broken inputs shared by the hostile-input and fuzz tests."""

from __future__ import annotations

import contextlib
import io
import json
import socket
import subprocess
import sys
import textwrap
import threading

import numpy as np
from PIL import Image


def encode(image: Image.Image | np.ndarray, fmt: str = "PNG", **kwargs) -> bytes:
    buf = io.BytesIO()
    (image if isinstance(image, Image.Image) else Image.fromarray(image)).save(buf, fmt, **kwargs)
    return buf.getvalue()


def noise_jpeg(h: int = 512, w: int = 256, **kwargs) -> bytes:
    """A JPEG whose every block codes real data, so any cut loses pixels."""
    pixels = np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)
    return encode(pixels, "JPEG", **kwargs)


def cut_jpeg(data: bytes, keep: float = 0.5) -> bytes:
    """A JPEG cut short and closed with an end-of-image marker, as a failed upload leaves it."""
    return data[: int(len(data) * keep)] + b"\xff\xd9"


def forged_jpeg(width: int = 13000, height: int = 13000) -> bytes:
    """A few hundred bytes whose JPEG header declares width x height pixels."""
    data = bytearray(encode(Image.new("RGB", (16, 16), (9, 9, 9)), "JPEG"))
    sof = data.find(b"\xff\xc0")
    data[sof + 5:sof + 9] = height.to_bytes(2, "big") + width.to_bytes(2, "big")
    return bytes(data)


def large_png(mode: str, width: int, height: int) -> bytes:
    """A highly compressible PNG of `mode`: RGBA, PT (palette + tRNS), I;16, RGB or L."""
    if mode == "PT":
        img = Image.new("P", (width, height), 1)
        img.putpalette([0, 0, 0, 10, 20, 30])
        return encode(img, transparency=0)
    fill = {"RGBA": (200, 100, 50, 128), "I;16": 3000, "RGB": (200, 100, 50), "L": 77}[mode]
    return encode(Image.new(mode, (width, height), fill))


def write_json(path, value) -> None:
    path.write_text(json.dumps(value))


def peak_decode_mib(path: str, how: str, extra_env: dict | None = None, rlimit_as: int | None = None) -> dict:
    """Decode `path` in a fresh interpreter; its extra peak RSS (MiB, ru_maxrss) and the outcome.

    how: "batch" (decode_batch to 320x128, whole image), "full" (decode_image).
    rlimit_as: an address-space limit in bytes above the interpreter's size after imports.
    """
    code = textwrap.dedent(f"""
        import json, resource, sys
        from attrgan.data.images import decode_batch, decode_image
        data = open({path!r}, "rb").read()
        if {rlimit_as!r} is not None:
            size = int(open("/proc/self/statm").read().split()[0]) * resource.getpagesize()
            resource.setrlimit(resource.RLIMIT_AS, (size + {rlimit_as!r}, resource.RLIM_INFINITY))
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        try:
            if {how!r} == "batch":
                result = decode_batch({{"image_uri": [{path!r}]}}, size=(320, 128), workers=1)["error"][0]
            else:
                result = list(decode_image(data).shape)
        except MemoryError:
            result = "MemoryError"
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print(json.dumps({{"mib": (peak - base) / 1024, "result": result}}))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env=extra_env)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


JPEG_VARIANTS = ("baseline", "progressive", "cmyk", "ycck", "restart", "mpo")


def jpeg_variant(kind: str, pixels: np.ndarray, quality: int = 90) -> bytes:
    """(H, W, 3) uint8 `pixels` saved as one of the JPEG variants the decoder accepts."""
    rgb = Image.fromarray(pixels)
    if kind == "progressive":
        return encode(rgb, "JPEG", quality=quality, progressive=True)
    if kind == "restart":  # a restart marker every 3 MCUs
        return encode(rgb, "JPEG", quality=quality, restart_marker_blocks=3)
    if kind == "mpo":  # a stereo pair: two JPEGs and an MPF index in the first
        return encode(rgb, "MPO", quality=quality, save_all=True, append_images=[Image.fromarray(pixels[:, ::-1])])
    if kind in ("cmyk", "ycck"):
        data = bytearray(encode(rgb.convert("CMYK"), "JPEG", quality=quality))
        if kind == "ycck":  # the Adobe segment's transform flag: 2 = YCCK coded, decoded back to CMYK
            data[data.find(b"Adobe") + 11] = 2
        return bytes(data)
    assert kind == "baseline", kind
    return encode(rgb, "JPEG", quality=quality)


@contextlib.contextmanager
def hanging_endpoint():
    """An endpoint on 127.0.0.1 that accepts connections and never answers: yields its URL and a
    function giving how many connections it has accepted."""
    server = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                held.append(server.accept()[0])
            except OSError:  # closed
                return

    threading.Thread(target=accept, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.getsockname()[1]}", lambda: len(held)
    finally:
        server.close()
        for conn in held:
            conn.close()

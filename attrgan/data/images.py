"""Fetch, decode, crop and resize images; the batch function that turns manifest rows into arrays.

One module on purpose (it is long): the whole path from untrusted bytes to an array, the JPEG
completeness walk included, is one place to audit (docs/security.md).

Data contracts:
- images are numpy HWC, RGB, uint8; batches (N, H, W, 3) uint8; sizes are (height, width);
- network tensors are (N, 3, H, W) float32 in [-1, 1] (`to_tensor` / `to_uint8`);
- a bbox is (x, y, w, h) in pixels of the stored image (EXIF orientation is ignored, so boxes
  always refer to the pixel grid as stored).

Decoding rules (`decode_image`, `load_crop`, `decode_batch`):
- formats: JPEG, PNG, WEBP, BMP. Greyscale, palette, CMYK and 16-bit greyscale (scaled to 8 bit)
  become RGB; an alpha channel is composited onto black (transparent pixels become black, so
  padding around a cut-out person is deterministic instead of whatever colour hid under alpha 0).
- memory is bounded by `max_pixels` (default `DEFAULT_MAX_PIXELS` = 40 MP, about 160 MB as Pillow
  holds RGB in 4 bytes a pixel): no image is ever decoded to more pixels than that. `decode_image` refuses larger images.
  `load_crop`/`decode_batch` decode a larger JPEG at 1/2, 1/4 or 1/8 scale (libjpeg DCT scaling,
  so memory follows the reduced size) and crop the scaled box; other formats, and JPEGs too large
  even at 1/8, fail with "image too large". Pillow also refuses images above
  2 × `PIL.Image.MAX_IMAGE_PIXELS` (about 179 MP) as decompression bombs.
  `decode_batch` holds at most `workers` decoded images at a time.
- JPEGs are also decoded at reduced scale when every crop taken from them stays at least as large
  as the output size, which is faster and loses nothing.
- a truncated or corrupt file is an error, never a partly grey image (a JPEG cut short and closed
  with an end marker or padded with zeros included, for baseline, progressive, CMYK/YCCK,
  restart-marker and MPO JPEGs; arithmetic, lossless and hierarchical JPEGs are refused), and so
  is a JPEG/PNG header declaring more pixels than its bytes can code. Every mode is turned into RGB about a megapixel at a time, so alpha, palette and
  16-bit images need the decoded frame plus the output, like RGB ones (docs/security.md).

bbox rules (`crop`): width and height must be positive; a box partly outside the image is clipped
to it when at least `MIN_VISIBLE` (half) of its area is inside, otherwise it is an error (a box
mostly outside the frame is a bad annotation, not a person).

Errors are `ImageError` with a message that starts with a short kind — "missing object",
"access denied", "unreadable object", "object too large", "missing uri", "unsupported uri", "bad uri",
"undecodable image", "image too large", "bad bbox", "transient" (the store kept failing: worth a
rerun) — followed by what a person needs to fix it, never the file's content.
"""

from __future__ import annotations

import hashlib
import io
import math
import re
import reprlib
import struct
import warnings
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image, ImageFile, UnidentifiedImageError

from attrgan.config import StorageConfig
from attrgan.data.manifest import text_problem
from attrgan.data.storage import (MESSAGE_CHARS, S3_BUCKET, ObjectRefusedError, TransientStorageError, allowed, read_bytes,
                                  redact, scheme)
from attrgan.contracts import TRANSIENT  # the kind of a row whose read may pass later: its partition is redone

if TYPE_CHECKING:
    import torch

DEFAULT_MAX_PIXELS = 40_000_000
MIN_VISIBLE = 0.5
FORMATS = ("JPEG", "PNG", "WEBP", "BMP")
DRAFT_SCALES = (2, 4, 8)  # the reductions libjpeg decodes natively

# A truncated file must raise, not decode as an image padded with grey (Pillow's default; set here
# so that nothing else in the process can have switched it on for us).
ImageFile.LOAD_TRUNCATED_IMAGES = False
# `max_pixels` below is the limit that counts; Pillow's own warning for 89-179 MP images would only
# repeat it in the logs (its hard error above 179 MP still applies).
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)

BBox = tuple[int, int, int, int]
Box = tuple[int, int, int, int]  # (x0, y0, x1, y1), clipped to the image


class ImageError(ValueError):
    """An image cannot be fetched, decoded or cropped; the message starts with the kind of problem."""


# ---------------------------------------------------------------------------------------------
# decoding


# Magic numbers named in "not an image" errors: the detected type, never the bytes themselves.
_SIGNATURES = ((b"GIF8", "a GIF image"), (b"II*\x00", "a TIFF image"), (b"MM\x00*", "a TIFF image"),
               (b"%PDF", "a PDF document"), (b"PK\x03\x04", "a ZIP archive"), (b"\x1f\x8b", "gzip data"),
               (b"\x7fELF", "an executable (ELF)"), (b"PAR1", "a Parquet file"), (b"\x00\x00\x01\x00", "an icon"))

# The fewest compressed bytes a genuine image of a format can hold per decoded pixel: a JPEG
# codes every 8x8 block of every scan with at least one bit (512 px a byte, one component);
# deflate expands at most ~1032x, a bit a pixel at the lowest PNG depth. A header that declares
# more pixels than that is a forgery or a cut file, and would otherwise decode as padding.
_MAX_PIXELS_PER_BYTE = {"JPEG": 512, "MPO": 512, "PNG": 1032 * 8}
BAND_PIXELS = 1 << 20  # pixels converted at a time when a frame is turned into RGB


def _detected_type(data: bytes | bytearray | memoryview) -> str:
    head = bytes(data[:16])
    for magic, name in _SIGNATURES:
        if head.startswith(magic):
            return name
    if head[4:8] == b"ftyp":
        return "an ISO media file (HEIC/AVIF/MP4)"
    try:
        text = bytes(data[:512]).decode("utf-8")
    except UnicodeDecodeError:
        return "unrecognised binary data"
    return "text" if all(c.isprintable() or c.isspace() for c in text) else "unrecognised binary data"


def _reason(exc: BaseException) -> str:
    """A decoder's message without any bytes it may quote from the file (b'...' literals)."""
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return re.sub(r"""b(['"]).*?\1""", "<bytes>", text)[:200]


def _open(data: bytes | bytearray | memoryview) -> Image.Image:
    """Read the header only (no pixels decoded yet)."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise ValueError(f"expected image bytes, got {type(data).__name__}")
    if len(data) == 0:
        raise ImageError("undecodable image: the file is empty (0 bytes)")
    try:
        img = Image.open(io.BytesIO(data), formats=FORMATS)
    except Image.DecompressionBombError as exc:
        raise ImageError(f"image too large: {_reason(exc)}") from None
    except UnidentifiedImageError:
        raise ImageError(f"undecodable image: not a {'/'.join(FORMATS)} file "
                         f"({len(data)} bytes of {_detected_type(data)})") from None
    except (OSError, ValueError, SyntaxError, EOFError, struct.error) as exc:
        raise ImageError(f"undecodable image: truncated or corrupt file header ({_reason(exc)})") from None
    w, h = img.size
    if w <= 0 or h <= 0:
        raise ImageError(f"undecodable image: {img.format} header declares an empty {w}x{h} image")
    return img


def _check_max_pixels(max_pixels: int) -> None:
    if not isinstance(max_pixels, (int, np.integer)) or max_pixels <= 0:
        raise ValueError(f"max_pixels must be a positive integer, got {max_pixels!r}")


def _too_large(img: Image.Image, max_pixels: int, extra: str) -> ImageError:
    w, h = img.size
    return ImageError(f"image too large: {w}x{h} {img.format} ({w * h / 1e6:.1f} MP) is over the "
                      f"{max_pixels / 1e6:.1f} MP decode limit{extra}")


def _memory_scale(img: Image.Image, max_pixels: int) -> int:
    """The smallest draft reduction that keeps the decoded image within max_pixels."""
    w, h = img.size
    if w * h <= max_pixels:
        return 1
    if img.format not in _JPEG_FORMATS:
        raise _too_large(img, max_pixels, "; only JPEGs can be decoded at reduced scale")
    for s in DRAFT_SCALES:
        if math.ceil(w / s) * math.ceil(h / s) <= max_pixels:
            return s
    raise _too_large(img, max_pixels, f", even at 1/{DRAFT_SCALES[-1]} scale")


# A JPEG cut short is the one hostile input libjpeg lets through: an end marker where coded data
# should be makes it pad the rest of the scan with flat blocks and only a warning, which Pillow
# drops (and a cut padded with zeros decodes the zeros as data). So a JPEG is `ok` only when
#   1. its marker structure is whole (`_jpeg_image_end`): every segment and scan ends inside the
#      file, the image ends with its end marker, each scan holds coded data and every restart
#      marker its MCU count asks for, the scans code every component (and, progressive, every
#      coefficient bit), and an MPO's index declares no image past the end of the file; and
#   2. the last scan, which structure alone cannot vouch for, decodes to the same pixels with filler
#      bytes put before the end marker: a complete scan ignores them as trailing data, a cut one
#      decodes them in place of the missing bits (`_load`).
_JPEG_FORMATS = ("JPEG", "MPO")  # an MPO (phone / stereo cameras) decodes its first JPEG image
_SOF_CHECKED = {0xC0: False, 0xC1: False, 0xC2: True}  # Huffman frames: marker -> progressive
_SOF_REFUSED = {0xC3: "lossless", 0xC5: "hierarchical", 0xC6: "hierarchical", 0xC7: "hierarchical",
                0xC9: "arithmetic", 0xCA: "arithmetic", 0xCB: "arithmetic", 0xCD: "hierarchical arithmetic",
                0xCE: "hierarchical arithmetic", 0xCF: "hierarchical arithmetic"}
_NOT_FF = re.compile(rb"[^\xff]")  # one character class: a linear search, never a backtracking one
_FILLER = bytes(range(254, -1, -1)) * 4  # never 0xFF (never a marker); starts with 1 bits, unlike
# the zero bits libjpeg substitutes for missing data


def _truncated(what: str) -> ImageError:
    return ImageError(f"undecodable image: truncated JPEG: {what} (a cut or unfinished file)")


def _corrupt(what: str) -> ImageError:
    return ImageError(f"undecodable image: corrupt JPEG: {what}")


def _scan_mcus(frame: dict[int, tuple[int, int]], ids: list[int], width: int, height: int) -> int:
    """MCUs in a scan of components `ids` (ITU T.81 A.2): one block a unit when not interleaved."""
    hmax = max(h for h, _ in frame.values())
    vmax = max(v for _, v in frame.values())
    if len(ids) == 1:
        h, v = frame[ids[0]]
        return math.ceil(math.ceil(width * h / hmax) / 8) * math.ceil(math.ceil(height * v / vmax) / 8)
    return math.ceil(width / (8 * hmax)) * math.ceil(height / (8 * vmax))


def _scan_end(data: bytes, pos: int) -> tuple[int, list[int]] | None:
    """(offset of the first marker after the coded data that starts at `pos`, fill bytes included;
    the restart markers (0xD0-0xD7) met before it), or None when the file ends first.

    One pass over the bytes: hostile scan data (long runs of 0xFF, stuffed zeros) costs time linear
    in its length."""
    restarts: list[int] = []
    while True:
        start = data.find(b"\xff", pos)
        if start < 0:
            return None
        after = _NOT_FF.search(data, start)  # past the 0xFF and any fill bytes
        if after is None:
            return None
        code, pos = data[after.start()], after.start() + 1
        if code == 0x00:  # a stuffed zero: an 0xFF data byte
            continue
        if 0xD0 <= code <= 0xD7:
            restarts.append(code)
            continue
        return start, restarts


def _jpeg_image_end(img: Image.Image, data: bytes) -> int:
    """Walk the markers of the (first) image in `data` once; the offset of its end marker (of the
    fill bytes before it, if any).

    ImageError "truncated JPEG: ..." when anything ends early, "corrupt JPEG: ..." when the
    structure is impossible, "unsupported JPEG: ..." for codings this check cannot vouch for."""
    n, pos = len(data), 2  # after the start marker, which Pillow has seen
    frame: dict[int, tuple[int, int]] = {}  # component id -> (h, v) sampling
    width = height = restart = scans = 0
    progressive = False
    coded: dict[int, list[int | None]] = {}  # component -> per coefficient, the lowest bit coded so far
    mpf_base = None
    while True:
        start = pos  # where the marker begins, fill bytes included
        if pos >= n or data[pos] != 0xFF:
            if pos >= n:
                raise _truncated("the file ends before the end-of-image marker")
            raise _corrupt(f"expected a marker at byte {pos}")
        after = _NOT_FF.search(data, pos)  # past the fill bytes, without a Python step per byte
        if after is None:
            raise _truncated("the file ends before the end-of-image marker")
        marker, pos = data[after.start()], after.start() + 1
        if marker == 0xD9:
            break
        if 0xD0 <= marker <= 0xD7 or marker == 0x01:  # no length
            continue
        if pos + 2 > n or pos + int.from_bytes(data[pos:pos + 2], "big") > n:
            raise _truncated(f"marker 0xFF{marker:02X} at byte {pos - 2} runs past the end of the file")
        length = int.from_bytes(data[pos:pos + 2], "big")
        if length < 2:
            raise _corrupt(f"marker 0xFF{marker:02X} at byte {pos - 2} declares {length} bytes")
        body, pos = data[pos + 2:pos + length], pos + length
        if marker in _SOF_REFUSED:
            raise ImageError(f"undecodable image: unsupported JPEG: {_SOF_REFUSED[marker]} coding "
                             f"(SOF{marker - 0xC0}) cannot be checked for truncation; re-encode it as a "
                             "baseline or progressive JPEG")
        if marker in _SOF_CHECKED:
            if frame or len(body) < 6 or len(body) < 6 + 3 * body[5]:
                raise _corrupt("bad or repeated frame header")
            progressive = _SOF_CHECKED[marker]
            height, width = int.from_bytes(body[1:3], "big"), int.from_bytes(body[3:5], "big")
            for i in range(body[5]):
                cid, hv = body[6 + 3 * i], body[7 + 3 * i]
                if not (1 <= hv >> 4 <= 4 and 1 <= hv & 15 <= 4) or cid in frame:
                    raise _corrupt(f"bad sampling or repeated component {cid} in the frame header")
                frame[cid] = (hv >> 4, hv & 15)
                coded[cid] = [None] * 64
        elif marker == 0xDD:
            restart = int.from_bytes(body[:2], "big")
        elif marker == 0xE2 and body.startswith(b"MPF\x00"):
            mpf_base = pos - length + 6  # MPF offsets count from its TIFF header
        elif marker == 0xDA:
            scans += 1
            ids = list(body[1:1 + 2 * body[0]:2]) if body else []
            if not frame or not ids or len(body) != 4 + 2 * len(ids) or any(c not in frame for c in ids):
                raise _corrupt(f"scan {scans} names no or unknown components, or comes before the frame header")
            ss, se, ah, al = body[-3], body[-2], body[-1] >> 4, body[-1] & 15
            found = _scan_end(data, pos)
            if found is None:
                raise _truncated(f"the file ends inside the coded data of scan {scans}")
            end, markers = found
            if end == pos:  # every scan codes at least one Huffman code, so at least one byte
                raise _truncated(f"scan {scans} holds no coded data")
            if restart:
                expected = math.ceil(_scan_mcus(frame, ids, width, height) / restart) - 1
                if len(markers) < expected:
                    raise _truncated(f"scan {scans} holds {len(markers)} of its {expected} restart markers")
                if len(markers) > expected or any(m != 0xD0 + i % 8 for i, m in enumerate(markers)):
                    raise _corrupt(f"scan {scans} has restart markers out of order or too many")
            elif markers:  # libjpeg would pad the rest of the scan with flat blocks from the first one on
                raise _corrupt(f"scan {scans} holds restart markers but the image defines no restart interval")
            for cid in ids:
                bits = coded[cid]
                for k in (range(ss, se + 1) if progressive else range(64)):
                    if k > 63 or (bits[k] is not None if ah == 0 else (bits[k] != ah or al != ah - 1)):
                        raise _corrupt(f"scan {scans} codes coefficients out of order")
                    bits[k] = al if progressive else 0
            pos = end
    if not frame or not scans:
        raise _truncated("the image ends before its frame header or first scan")
    for cid, bits in coded.items():
        if any(b != 0 for b in bits):
            raise _truncated(f"the image ends before its scans code all of component {cid}")
    if img.format == "MPO":
        entries = getattr(img, "mpinfo", {}).get(0xB002, [])
        for i, entry in enumerate(entries[1:], 2):
            first = -1 if mpf_base is None else mpf_base + entry["DataOffset"]
            last = first + entry["Size"]
            if first < 0 or last > n or data[first:first + 2] != b"\xff\xd8" or data[last - 2:last] != b"\xff\xd9":
                raise _truncated(f"image {i} of the MPO file does not lie whole where its index says")
    return start


def _pixel_digest(img: Image.Image) -> bytes:
    """A hash of the decoded pixels, read a band at a time so that no copy of the frame is made."""
    digest = hashlib.blake2b(digest_size=16)
    rows = max(1, BAND_PIXELS // img.width)
    for top in range(0, img.height, rows):
        digest.update(img.crop((0, top, img.width, min(top + rows, img.height))).tobytes())
    return digest.digest()


def _jpeg_digest(data: bytes, scale: int) -> bytes | None:
    """The pixel digest of JPEG `data` decoded at 1/`scale`; None when it is undecodable."""
    try:
        img = Image.open(io.BytesIO(data), formats=("JPEG",))
        if scale > 1:
            img.draft(img.mode, (img.width // scale, img.height // scale))
        img.load()
        return _pixel_digest(img)
    except Exception:  # filler made it undecodable: it was read as coded data
        return None


def _check_holds(img: Image.Image, data: bytes | bytearray | memoryview) -> None:
    """The header's size against what the bytes can code (after the size limit, which names the
    larger problem, and before any draft reduction)."""
    w, h = img.size
    ratio = _MAX_PIXELS_PER_BYTE.get(img.format or "")
    if ratio is not None and w * h > len(data) * ratio:
        raise ImageError(f"undecodable image: the {img.format} header declares {w}x{h} pixels, more than "
                         f"{len(data)} bytes can hold (a cut or forged file)")


def _load(img: Image.Image, data: bytes | bytearray | memoryview, scale: int = 1, check_scale: int = 1) -> None:
    """Decode `img` (drafted to 1/`scale` by the caller); ImageError when it is cut or corrupt.

    check_scale: the scale the truncation check decodes a JPEG at, the finest that memory allows
    (a reduced decode ignores fine detail, and with it a cut that only loses fine detail)."""
    filled = None
    if img.format in _JPEG_FORMATS:
        data = bytes(data)
        end = _jpeg_image_end(img, data)
        # decoded before the image itself, so that one frame is held at a time
        filled = _jpeg_digest(data[:end] + _FILLER + b"\xff\xd9", check_scale)
    try:
        img.load()
    except Image.DecompressionBombError as exc:
        raise ImageError(f"image too large: {_reason(exc)}") from None
    except (OSError, ValueError, SyntaxError, EOFError, IndexError, struct.error) as exc:
        raise ImageError(f"undecodable image: truncated or corrupt {img.format} data ({_reason(exc)})") from None
    if img.format in _JPEG_FORMATS:
        plain = _pixel_digest(img) if scale == check_scale else _jpeg_digest(data, check_scale)
        if plain is None or plain != filled:
            raise _truncated("the last scan's coded data ends early (libjpeg would fill the rest with flat blocks)")


def _to_rgb(img: Image.Image) -> np.ndarray:
    """HWC uint8 RGB of any Pillow mode the supported formats produce (callers pass one band)."""
    mode = img.mode
    if mode.startswith("I"):  # 16-bit greyscale PNG ("I;16", "I;16B", or "I")
        grey = np.asarray(img).astype(np.uint32)
        grey = ((np.clip(grey, 0, 65535) * 255 + 32767) // 65535).astype(np.uint8)
        return np.repeat(grey[:, :, None], 3, axis=2)
    if mode == "F":
        raise ImageError("undecodable image: floating-point images are not supported")
    has_alpha = mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in img.info
    if has_alpha:
        rgba = np.asarray(img.convert("RGBA"))
        alpha = rgba[:, :, 3:4].astype(np.uint16)
        return ((rgba[:, :, :3].astype(np.uint16) * alpha + 127) // 255).astype(np.uint8)
    return np.array(img.convert("RGB") if mode != "RGB" else img, dtype=np.uint8)


def _rgb_region(img: Image.Image, box: Box) -> np.ndarray:
    """(y1 - y0, x1 - x0, 3) uint8 RGB of `box` in a loaded image.

    Converted BAND_PIXELS at a time, so alpha, palette and 16-bit frames never hold more than
    the output and one band besides the decoded frame (a whole-frame convert would copy it twice).
    """
    x0, y0, x1, y1 = box
    out = np.empty((y1 - y0, x1 - x0, 3), dtype=np.uint8)
    rows = max(1, BAND_PIXELS // (x1 - x0))
    for top in range(y0, y1, rows):
        bottom = min(top + rows, y1)
        out[top - y0:bottom - y0] = _to_rgb(img.crop((x0, top, x1, bottom)))
    return out


def _reduced_rgb(img: Image.Image, box: Box, size: tuple[int, int]) -> np.ndarray:
    """RGB of `box` shrunk band by band by whole factors (box filter, as Pillow's `reducing_gap`)
    to no less than twice `size`: the memory of a large crop follows the output, not the crop."""
    x0, y0, x1, y1 = box
    kx, ky = max(1, (x1 - x0) // (2 * size[1])), max(1, (y1 - y0) // (2 * size[0]))
    if kx == ky == 1:
        return _rgb_region(img, box)
    rows = ky * max(1, BAND_PIXELS // ((x1 - x0) * ky))
    parts = [np.asarray(Image.fromarray(_rgb_region(img, (x0, top, x1, min(top + rows, y1)))).reduce((kx, ky)))
             for top in range(y0, y1, rows)]
    return np.concatenate(parts)


def decode_image(data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode JPEG/PNG/WEBP/BMP bytes at full resolution: (H, W, 3) uint8 RGB.

    ImageError: not an image, truncated/corrupt, or more than `max_pixels` pixels (checked from
    the header, before any pixel is decoded; `load_crop` can read such JPEGs at reduced scale).
    """
    _check_max_pixels(max_pixels)
    img = _open(data)
    w, h = img.size
    if w * h > max_pixels:
        raise _too_large(img, max_pixels, "")
    _check_holds(img, data)
    _load(img, data)
    return _rgb_region(img, (0, 0, w, h))


# ---------------------------------------------------------------------------------------------
# boxes, crop, resize


def _clip_box(bbox: Sequence[Any], width: int, height: int) -> Box:
    """(x, y, w, h) → (x0, y0, x1, y1) inside a width×height image, or ImageError("bad bbox: ...")."""
    try:
        x, y, w, h = (int(v) for v in bbox)
    except (TypeError, ValueError, OverflowError):  # OverflowError: an infinite coordinate
        raise ImageError(f"bad bbox: expected four integers (x, y, w, h), got {tuple(bbox)!r}") from None
    if w <= 0 or h <= 0:
        raise ImageError(f"bad bbox: width and height must be positive, got (x={x}, y={y}, w={w}, h={h})")
    x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + w, width), min(y + h, height)
    if x1 <= x0 or y1 <= y0:
        raise ImageError(f"bad bbox: (x={x}, y={y}, w={w}, h={h}) lies entirely outside the {width}x{height} image")
    visible = (x1 - x0) * (y1 - y0) / (w * h)
    if visible < MIN_VISIBLE:
        raise ImageError(f"bad bbox: only {visible:.0%} of (x={x}, y={y}, w={w}, h={h}) lies inside the "
                         f"{width}x{height} image (at least {MIN_VISIBLE:.0%} must)")
    return x0, y0, x1, y1


def crop(image: np.ndarray, bbox: Sequence[int] | None) -> np.ndarray:
    """Crop (H, W, 3) uint8 `image` to bbox (x, y, w, h) in pixels; None returns a copy of the image.

    A box partly outside the image is clipped when at least MIN_VISIBLE of its area is inside.
    ImageError("bad bbox: ...") for zero/negative sizes or a box (mostly) outside the image.
    Always returns a new array, so a small crop never keeps a large frame alive.
    """
    if not isinstance(image, np.ndarray) or image.ndim != 3:
        raise ValueError(f"expected an (H, W, C) array, got {getattr(image, 'shape', type(image).__name__)}")
    if bbox is None:
        return image.copy()
    x0, y0, x1, y1 = _clip_box(bbox, image.shape[1], image.shape[0])
    return image[y0:y1, x0:x1].copy()


def _check_size(size: Sequence[int]) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in size)
    except (TypeError, ValueError):
        raise ValueError(f"size must be (height, width), got {size!r}") from None
    if h <= 0 or w <= 0:
        raise ValueError(f"size must be positive (height, width), got {size!r}")
    return h, w


def resize(image: np.ndarray, size: Sequence[int]) -> np.ndarray:
    """Resize (H, W, 3) uint8 to size=(height, width) with Pillow's bilinear filter (antialiased
    when shrinking). The aspect ratio is not kept: person crops are stretched to the network input,
    as in the RAP/PETA protocols."""
    h, w = _check_size(size)
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected (H, W, 3) uint8, got {getattr(image, 'shape', None)} "
                         f"{getattr(image, 'dtype', type(image).__name__)}")
    if image.shape[:2] == (h, w):
        return image.copy()
    return np.asarray(Image.fromarray(image).resize((w, h), Image.Resampling.BILINEAR))


# ---------------------------------------------------------------------------------------------
# fetch + decode + crop, sharing one decode between the crops of a frame


def uri_problem(uri: Any) -> str | None:
    """Why `uri` cannot name an image ("missing uri: …", "unsupported uri: …", "bad uri: …"), or None.
    Text that is not UTF-8 (bytes here) or is longer than the manifest's limit is a "bad uri"
    (`attrgan.data.manifest.text_problem`), checked before anything else looks at it."""
    if isinstance(uri, (bytes, bytearray)):
        return text_problem("image_uri", uri)[0] or "bad uri: image_uri is bytes, not text"
    if not isinstance(uri, str) or not uri.strip():
        return f"missing uri: row has no image_uri (got {reprlib.repr(uri)})"
    problem = text_problem("image_uri", uri)[0]
    if problem is not None:
        return problem
    if "\x00" in uri:  # no file system or object store takes one; os.path would raise on it
        return f"bad uri: {redact(uri)} holds a NUL character"
    try:
        kind = scheme(uri)
    except ValueError as exc:
        return f"unsupported uri: {redact(str(exc), MESSAGE_CHARS)}"
    if kind == "s3":
        bucket, _, key = uri[5:].partition("/")
        if not bucket:
            return f"bad uri: {redact(uri)} names no bucket (expected s3://bucket/key)"
        if not S3_BUCKET.fullmatch(bucket):  # user-info ('key:secret@bucket') included: never sent
            return f"bad uri: {redact(uri)} names no valid bucket (letters, digits, '.', '_', '-')"
        if not key.strip("/"):
            return f"bad uri: {redact(uri)} names no object key (expected s3://bucket/key)"
        if ".." in key.split("/"):
            return f"bad uri: {redact(uri)} has a '..' path segment"
    return None


def fetch(uri: str, storage: StorageConfig | None = None) -> bytes:
    """The bytes of `uri` (at most `storage.max_object_bytes`); ImageError naming the object and
    the problem, "transient: …" when the store kept failing through every retry."""
    problem = uri_problem(uri)
    if problem is not None:
        raise ImageError(problem)
    shown = redact(uri)
    try:
        return read_bytes(uri, storage)
    except TransientStorageError as exc:
        raise ImageError(f"{TRANSIENT}: {exc}") from None
    except ObjectRefusedError as exc:
        if "limit" in str(exc):
            raise ImageError(f"object too large: {exc} (storage.max_object_bytes)") from None
        raise ImageError(f"unreadable object: {exc}") from None
    except FileNotFoundError:
        raise ImageError(f"missing object: {shown} not found") from None
    except PermissionError:
        raise ImageError(f"access denied: {shown} (check the job's credentials and bucket policy)") from None
    except IsADirectoryError:
        raise ImageError(f"unreadable object: {shown} is a folder, not an image") from None
    except OSError as exc:
        # Redacted before the first line is taken: a URL's user-info may hold a newline.
        text = redact(str(exc)).splitlines()[0] if str(exc) else type(exc).__name__
        if "ACCESS_DENIED" in text or "AccessDenied" in text or "403" in text:
            raise ImageError(f"access denied: {shown} (check the job's credentials and bucket policy)") from None
        raise ImageError(f"unreadable object: {shown}: {text}") from None


def _crops_from(data: bytes, bboxes: Sequence[Sequence[int] | None], size: tuple[int, int] | None,
                max_pixels: int) -> list[tuple[np.ndarray, tuple[int, int]] | ImageError]:
    """Decode `data` once and cut every box. Per box: (crop, (crop_h, crop_w) at full resolution)
    or the ImageError of that box. An error common to all boxes (undecodable...) is raised."""
    img = _open(data)
    width, height = img.size
    boxes: list[Box | ImageError] = []
    for bbox in bboxes:
        try:
            boxes.append((0, 0, width, height) if bbox is None else _clip_box(bbox, width, height))
        except ImageError as exc:
            boxes.append(exc)
    valid = [b for b in boxes if not isinstance(b, ImageError)]
    if not valid:
        return boxes  # nothing to decode
    scale = check_scale = _memory_scale(img, max_pixels)
    _check_holds(img, data)
    if size is not None and img.format in _JPEG_FORMATS:
        # Reduce further when every crop keeps at least the output size: faster, no detail lost.
        for s in reversed(DRAFT_SCALES):
            if s <= scale:
                break
            if all((b[3] - b[1]) // s >= size[0] and (b[2] - b[0]) // s >= size[1] for b in valid):
                scale = s
                break
    if scale > 1:
        img.draft(img.mode, (width // scale, height // scale))
    _load(img, data, scale, check_scale)
    sx, sy = width / img.size[0], height / img.size[1]
    out: list[tuple[np.ndarray, tuple[int, int]] | ImageError] = []
    for box in boxes:
        if isinstance(box, ImageError):
            out.append(box)
            continue
        x0, y0, x1, y1 = box
        scaled = (int(x0 / sx), int(y0 / sy), max(math.ceil(x1 / sx), int(x0 / sx) + 1),
                  max(math.ceil(y1 / sy), int(y0 / sy) + 1))
        if size is not None and img.mode in ("L", "RGB", "CMYK"):
            # Crop and resize in one Pillow step: no full-size copy of a large crop is ever made.
            rgb = _to_rgb(img.resize((size[1], size[0]), Image.Resampling.BILINEAR, box=scaled))
        elif size is not None:
            rgb = resize(_reduced_rgb(img, scaled, size), size)
        else:
            rgb = _rgb_region(img, scaled)
        out.append((rgb, (y1 - y0, x1 - x0)))
    return out


def load_crop(uri: str, bbox: Sequence[int] | None = None, storage: StorageConfig | None = None, *,
              size: Sequence[int] | None = None, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Fetch `uri`, decode it and crop bbox (x, y, w, h) (None: the whole image).

    Returns (h, w, 3) uint8 RGB, resized to `size` (height, width) when given. A JPEG over
    `max_pixels` is decoded at reduced scale, so its crop comes back smaller than the box.
    Raises ImageError with a message a person can act on.
    """
    _check_max_pixels(max_pixels)
    size = None if size is None else _check_size(size)
    result = _crops_from(fetch(uri, storage), [bbox], size, max_pixels)[0]
    if isinstance(result, ImageError):
        raise result
    return result[0]


def _optional_int(value: Any) -> int | None:
    """A bbox cell as int; None for null (None, NaN, pandas NA); ValueError for non-integers."""
    if value is None:
        return None
    try:
        if value != value:  # NaN
            return None
    except TypeError:  # pandas.NA refuses to be a bool: it is a null
        return None
    number = float(value)
    if not number.is_integer():
        raise ValueError(value)
    return int(number)


def _row_bbox(cells: Sequence[Any]) -> tuple[int, int, int, int] | None:
    try:
        values = [_optional_int(v) for v in cells]
    except (TypeError, ValueError):
        raise ImageError(f"bad bbox: expected whole pixel numbers, got {tuple(cells)!r}") from None
    if all(v is None for v in values):
        return None
    if any(v is None for v in values):
        raise ImageError(f"bad bbox: bbox_x, bbox_y, bbox_w, bbox_h must be all set or all null, got {tuple(values)!r}")
    return tuple(values)  # type: ignore[return-value]


def _columns(batch: Any) -> dict[str, Any]:
    if isinstance(batch, Mapping):
        return dict(batch)
    if hasattr(batch, "column_names"):  # pyarrow Table / RecordBatch
        return {name: _values(batch.column(name)) for name in batch.column_names}
    if hasattr(batch, "columns"):  # pandas DataFrame
        return {name: batch[name].to_numpy() for name in batch.columns}
    raise ValueError(f"expected a dict of columns, a DataFrame or a pyarrow Table, got {type(batch).__name__}")


def _values(column: Any) -> np.ndarray:
    """A pyarrow column as numpy. Text that is not UTF-8 (Parquet readers do not check it) stays
    bytes, so that it is its row's error (`uri_problem`) rather than the batch's."""
    import pyarrow as pa

    def text(value: bytes | None) -> str | bytes | None:
        try:
            return value.decode("utf-8") if value is not None else None
        except UnicodeDecodeError:
            return value

    try:
        return column.to_numpy(zero_copy_only=False)
    except (pa.ArrowException, UnicodeDecodeError):
        return np.array([text(v) for v in column.cast(pa.large_binary()).to_pylist()], dtype=object)


def decode_batch(batch: Any, *, size: Sequence[int] = (320, 128), storage: StorageConfig | None = None,
                 max_pixels: int = DEFAULT_MAX_PIXELS, workers: int = 8,
                 allowed_prefixes: Sequence[str] | None = None) -> dict[str, Any]:
    """Fetch, decode, crop and resize a batch of manifest rows. Never raises for a bad row.

    allowed_prefixes: when given (see `manifest.allowed_prefixes`), rows whose image_uri lies
    outside them become "refused uri" error rows and are never fetched.

    Input columns (dict of numpy arrays/lists, DataFrame or pyarrow Table):
        image_uri                        str, absolute (s3://, file:// or a local path)
        bbox_x, bbox_y, bbox_w, bbox_h   optional; ints, null/NaN = whole image
    Output: every input column, plus
        image                            (N, H, W, 3) uint8 RGB at `size` (H, W); zeros on error
        crop_height, crop_width          (N,) int32, the crop's size in the stored image; 0 on error
        status                           (N,) object, "ok" or "error"
        error                            (N,) object, None when ok, else a message starting with
                                         its kind: "missing object: s3://b/k not found", "bad bbox: …"

    Objects are fetched concurrently by `workers` threads (object-store latency dominates, and
    Pillow decodes without holding the GIL); rows sharing an image_uri are fetched and decoded once.
    """
    h, w = _check_size(size)
    _check_max_pixels(max_pixels)
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    out = _columns(batch)
    if "image_uri" not in out:
        raise ValueError(f"decode_batch needs an 'image_uri' column, got columns {sorted(out)}")
    uris = list(out["image_uri"])
    n = len(uris)
    has_bbox = all(c in out for c in ("bbox_x", "bbox_y", "bbox_w", "bbox_h"))
    cells = list(zip(*(list(out[c]) for c in ("bbox_x", "bbox_y", "bbox_w", "bbox_h")))) if has_bbox else [()] * n

    images = np.zeros((n, h, w, 3), dtype=np.uint8)
    crop_h = np.zeros(n, dtype=np.int32)
    crop_w = np.zeros(n, dtype=np.int32)
    errors: list[str | None] = [None] * n

    groups: dict[str, list[tuple[int, tuple[int, int, int, int] | None]]] = {}
    for i, (uri, row_cells) in enumerate(zip(uris, cells)):
        errors[i] = uri_problem(uri)
        if errors[i] is not None:
            continue
        if allowed_prefixes is not None and not allowed(uri, allowed_prefixes):
            errors[i] = (f"refused uri: {redact(uri)} is outside the allowed prefixes {list(allowed_prefixes)} "
                         "(set storage.allowed_prefixes to allow it)")
            continue
        try:
            bbox = _row_bbox(row_cells) if has_bbox else None
        except ImageError as exc:
            errors[i] = str(exc)
            continue
        groups.setdefault(uri, []).append((i, bbox))

    def work(uri: str, rows: list[tuple[int, tuple[int, int, int, int] | None]]) -> None:
        try:
            results = _crops_from(fetch(uri, storage), [b for _, b in rows], (h, w), max_pixels)
        except ImageError as exc:
            results = [exc] * len(rows)
        except Exception as exc:  # one strange file must not take the whole batch down
            results = [ImageError(f"undecodable image: {type(exc).__name__}: {_reason(exc)}")] * len(rows)
        shown = redact(uri)
        for (i, _), result in zip(rows, results):
            if isinstance(result, ImageError):
                message = redact(str(result), MESSAGE_CHARS)
                errors[i] = message if shown in message else f"{message} ({shown})"
            else:
                images[i] = result[0]
                crop_h[i], crop_w[i] = result[1]

    if len(groups) <= 1 or workers == 1:
        for uri, rows in groups.items():
            work(uri, rows)
    else:
        with ThreadPoolExecutor(max_workers=min(workers, len(groups))) as pool:
            list(pool.map(lambda item: work(*item), groups.items()))

    out["image"] = images
    out["crop_height"] = crop_h
    out["crop_width"] = crop_w
    out["status"] = np.array(["ok" if e is None else "error" for e in errors], dtype=object)
    out["error"] = np.array(errors, dtype=object)
    return out


# ---------------------------------------------------------------------------------------------
# tensors


def to_tensor(images: np.ndarray) -> "torch.Tensor":
    """(N, H, W, 3) uint8 → (N, 3, H, W) float32 in [-1, 1]."""
    import torch

    if not isinstance(images, np.ndarray) or images.dtype != np.uint8 or images.ndim != 4 or images.shape[3] != 3:
        raise ValueError(f"expected (N, H, W, 3) uint8, got {getattr(images, 'shape', None)} "
                         f"{getattr(images, 'dtype', type(images).__name__)}")
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float()
    return x.div_(127.5).sub_(1.0)


def to_uint8(tensor: "torch.Tensor | np.ndarray") -> np.ndarray:
    """(N, 3, H, W) float in [-1, 1] (values outside are clipped) → (N, H, W, 3) uint8."""
    import torch

    x = torch.as_tensor(tensor)
    if x.ndim != 4 or x.shape[1] != 3:
        raise ValueError(f"expected (N, 3, H, W), got {tuple(x.shape)}")
    x = ((x.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).contiguous().numpy()

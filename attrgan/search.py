"""Search people: the tracks of the nightly results that match a query, as a table and as a page.

    from attrgan.search import search, write_page

    found = search("s3://archive/attributes", "backpack and not female", cameras=["cam07"], top=20)
    print(format_table(found.tracks, found.query))
    write_page(found.tracks, "people.html", query=found.query)

`search` reads the track tables (`attrgan.results.load_tracks`, best first); `write_page` writes one
self-contained HTML page (no external resource: CSS inline, thumbnails as data: URIs, a
Content-Security-Policy that allows nothing else) with a card per track: its best crop, the fused
person-level attributes that are true with their scores, camera, first and last seen, crops and the
shares super-resolved and reconstructed. Every text from the data is HTML-escaped; thumbnails are
read through `attrgan.data.images` (the storage layer's size limits, the decoder's pixel limits)
and an image that cannot be read becomes a card saying so, never a failed page.

Free of torch and Ray (pandas, pyarrow, Pillow).
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import html
import io
import math
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pandas as pd

from attrgan.config import StorageConfig
from attrgan.query import Query, parse
from attrgan.results import TimeLike, load_tracks, track_attributes

DEFAULT_TOP = 50  # tracks a search keeps, and cards a page shows, unless told otherwise
MAX_CARDS = 1_000  # a page never holds more cards than this, whatever `top` says
THUMB_SIZE = 96  # px: a thumbnail fits in a square this size, its aspect kept (people: full height)
THUMB_WORKERS = 8  # thumbnails fetched at a time (object-store latency, not CPU)
# Decoded pixels per thumbnail at most: a larger JPEG is decoded at 1/2 to 1/8 scale, another format
# is refused, so THUMB_WORKERS decodes hold at most ~128 MB.
THUMB_MAX_PIXELS = 4_000_000
TEXT_CHARS = 120  # a camera id, track id or crop id shown on a page or in the table is cut to this


@dataclasses.dataclass(frozen=True)
class SearchResult:
    """What `search` found: the tracks (best first), the parsed query and the page if one was written."""

    tracks: pd.DataFrame
    query: Query | None
    page: Path | None = None


def search(uri: str, where: str | None = None, *, start: TimeLike | None = None, end: TimeLike | None = None,
           cameras: Iterable[str] | None = None, top: int = DEFAULT_TOP, html_path: str | Path | None = None,
           storage: StorageConfig | None = None) -> SearchResult:
    """The tracks under results `uri` that match `where` (None: every track), best first, at most
    `top`; with `html_path`, also the page of them (`write_page`). Reads only the query's
    attributes unless a page is written (its cards show every attribute that is true)."""
    query = parse(where) if where is not None else None
    html_path = _page_path(html_path) if html_path is not None else None  # before any read
    columns = None if html_path is not None else []
    tracks = load_tracks(uri, start=start, end=end, cameras=cameras, where=where, top=top, columns=columns,
                         storage=storage)
    page = write_page(tracks, html_path, query=query, storage=storage, limit=top) if html_path is not None else None
    return SearchResult(tracks, query, page)


# ---------------------------------------------------------------------------------------------
# the terminal table


def printable(value: Any, chars: int = TEXT_CHARS) -> str:
    """`value` as one line of printable text: control and other unprintable characters (terminal
    escapes in a camera id) as ASCII escapes, cut to `chars` characters."""
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA or value is pd.NaT:
        return "-"
    text = str(value)
    text = "".join(c if c.isprintable() else ascii(c)[1:-1] for c in text)
    return text if len(text) <= chars else text[:chars - 1] + "…"


def _when(value: Any) -> str:
    return "-" if value is None or pd.isna(value) else pd.Timestamp(value).strftime("%Y-%m-%d %H:%M:%S")


def _score(value: Any) -> str:
    return "-" if value is None or pd.isna(value) else f"{float(value):.2f}"


def format_table(tracks: pd.DataFrame, query: Query | str | None = None) -> str:
    """The tracks as an aligned text table: camera, track, first and last seen, crops, best crop,
    then the query's attributes as `<decision> <score>` (`yes 0.91`)."""
    query = parse(query) if isinstance(query, str) else query
    attributes = [a for a in (query.attributes if query else ()) if f"{a}_score" in tracks.columns]
    header = ["camera", "track", "first seen (UTC)", "last seen (UTC)", "crops", "best crop", *attributes]
    rows = [header]
    for _, t in tracks.iterrows():
        rows.append([printable(t["camera_id"], 24), printable(t["track_id"], 24), _when(t["first_seen"]),
                     _when(t["last_seen"]), f"{t['crops']}", printable(t["best_crop_id"], 32),
                     *(f"{_yes(t[a])} {_score(t[f'{a}_score'])}" for a in attributes)])
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows)


def _yes(value: Any) -> str:
    return "?" if value is None or pd.isna(value) else ("yes" if bool(value) else "no")


# ---------------------------------------------------------------------------------------------
# the page

# Runs once the page has loaded: how many thumbnails decoded, for a reader and for the browser test.
SCRIPT = ("addEventListener('load',function(){var i=document.images,n=0;for(var k=0;k<i.length;k++)"
          "if(i[k].naturalWidth>0)n++;var s=document.getElementById('decoded');s.textContent=n+' of '+"
          "i.length+' thumbnails shown';s.setAttribute('data-decoded',n);});")
STYLE = """body{font:14px system-ui,sans-serif;margin:16px;background:#f4f4f4;color:#222}
h1{font-size:18px;margin:0 0 4px}.meta{color:#555;margin:0 0 12px}
.cards{display:flex;flex-wrap:wrap;gap:10px}
.card{background:#fff;border:1px solid #ccc;border-radius:6px;padding:8px;width:250px;display:flex;gap:8px}
.card img,.missing{height:96px;max-width:96px;object-fit:contain;flex:none}
.missing{width:64px;background:#ddd;color:#666;font-size:11px;display:flex;align-items:center;text-align:center}
.card b{display:block;overflow-wrap:anywhere}.card p{margin:2px 0;font-size:12px;color:#444}
.attrs span{display:inline-block;background:#e8eef8;border-radius:3px;padding:0 3px;margin:1px;font-size:11px}
.attrs span.q{background:#ffe08a}"""
PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src '{script_hash}'">
<title>{title}</title><style>{style}</style></head>
<body><h1>{title}</h1><p class="meta">{summary} <span id="decoded"></span></p>
<div class="cards">
{cards}
</div>
<script>{script}</script></body></html>
"""
CARD = """<div class="card">{thumbnail}<div><b>{camera} · {track}</b>
<p>{seen}</p><p>{crops}</p><p>super-resolved {sr}, reconstructed {rec}</p>
<p class="attrs">{attributes}</p><p title="best crop">{best_crop}</p></div></div>"""


def _e(value: Any, chars: int = TEXT_CHARS) -> str:
    """Data as HTML text: printable, cut, escaped (quotes included: safe in attributes too)."""
    return html.escape(printable(value, chars), quote=True)


def _span(first: Any, last: Any) -> str:
    """First to last seen, the date written once when both fall on the same day."""
    start, end = _when(first), _when(last)
    return f"{start} → {end[11:]}" if start[:10] == end[:10] and start != "-" else f"{start} → {end}"


def _share(value: Any) -> str:
    return "-" if value is None or pd.isna(value) else f"{100 * float(value):.0f} %"


def thumbnail(uri: Any, storage: StorageConfig | None) -> tuple[str | None, str | None]:
    """(data: URI of a JPEG within THUMB_SIZE px, None) or (None, why there is none). The image is
    read through `attrgan.data.images.load_crop`: the URI checks, `storage.max_object_bytes` and the
    decoder's pixel limit hold; with `storage.allowed_prefixes` set, only images under them are read."""
    from PIL import Image

    from attrgan.data.images import ImageError, load_crop
    from attrgan.data.storage import allowed

    storage = storage if storage is not None else StorageConfig.from_env()
    if not isinstance(uri, str) or not uri:
        return None, "no image"
    if storage.allowed_prefixes and not allowed(uri, storage.allowed_prefixes):
        return None, "image outside the allowed prefixes"
    try:
        image = Image.fromarray(load_crop(uri, None, storage, max_pixels=THUMB_MAX_PIXELS))
        image.thumbnail((THUMB_SIZE, THUMB_SIZE), Image.Resampling.BILINEAR)  # only ever shrinks
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=80)
    except ImageError as exc:  # unreadable, missing, too large, undecodable: the message says which
        return None, str(exc).split(":", 1)[0]
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii"), None


def _card(track: pd.Series, attributes: Sequence[str], asked: Sequence[str],
          image: tuple[str | None, str | None]) -> str:
    source, problem = image
    if source is not None:
        shown = f'<img src="{source}" alt="best crop {_e(track["best_crop_id"], 60)}">'
    else:
        shown = f'<div class="missing">no thumbnail: {_e(problem, 60)}</div>'
    tags = []
    for a in attributes:
        decision, score = track.get(a), track.get(f"{a}_score")
        if a in asked or (decision is not None and not pd.isna(decision) and bool(decision)):
            tags.append(f'<span{" class=q" if a in asked else ""}>{_e(a, 60)} {_score(score)}</span>')
    crops = f"{track['crops']} crops ({track['crops_ok']} scored)"
    track_id = track["track_id"]
    return CARD.format(
        thumbnail=shown, camera=_e(track["camera_id"]),
        track=_e(track_id) if track_id is not None and not pd.isna(track_id) else "single crop",
        seen=_e(_span(track["first_seen"], track["last_seen"])), crops=_e(crops),
        sr=_share(track["super_resolved_share"]), rec=_share(track["reconstructed_share"]),
        attributes=" ".join(tags) or "no attribute above its threshold", best_crop=_e(track["best_crop_id"]))


def write_page(tracks: pd.DataFrame, path: str | Path, *, query: Query | str | None = None,
               storage: StorageConfig | None = None, limit: int = DEFAULT_TOP) -> Path:
    """Write the page of `tracks` (as `load_tracks` returns them, in their order) to the local
    file `path`: at most `limit` cards (and never more than MAX_CARDS). A track whose best crop cannot
    be shown (missing, unreadable, no scored crop) gets a card saying so. Returns the path."""
    query = parse(query) if isinstance(query, str) else query
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ValueError(f"limit must be a positive integer, got {limit!r}")
    path = _page_path(path)
    shown = tracks.head(min(limit, MAX_CARDS))
    attributes = track_attributes(list(shown.columns))
    asked = query.attributes if query else ()

    def image(track: pd.Series) -> tuple[str | None, str | None]:
        if not track["crops_ok"]:  # the best crop of a track without a scored crop is an error row's
            return None, "no scored crop"
        return thumbnail(track["best_image_uri"], storage)

    rows = [t for _, t in shown.iterrows()]
    with ThreadPoolExecutor(THUMB_WORKERS) as pool:
        images = list(pool.map(image, rows))
    cards = "\n".join(_card(t, attributes, asked, i) for t, i in zip(rows, images))
    title = f"People: {query.text}" if query else "People"
    summary = f"{len(shown)} track{'s' if len(shown) != 1 else ''}, best first" + (
        f" (of {len(tracks)})" if len(shown) < len(tracks) else "") + "."
    script_hash = "sha256-" + base64.b64encode(hashlib.sha256(SCRIPT.encode()).digest()).decode()
    page = PAGE.format(title=_e(title, 300), summary=_e(summary), cards=cards, style=STYLE, script=SCRIPT,
                       script_hash=script_hash)
    path.write_text(page, encoding="utf-8")
    return path


def _page_path(path: str | Path) -> Path:
    if "://" in str(path):
        raise ValueError(f"the page is written to a local file, not a URI: got {str(path)[:200]!r}")
    return Path(path)

"""The search page in a real browser: headless Chromium (Debian's `chromium`, which `make test`
installs) renders every card and decodes every embedded thumbnail, under the page's own
Content-Security-Policy."""

from __future__ import annotations

import datetime as dt
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from attrgan.results import load_tracks
from attrgan.search import write_page
from search_helpers import UTC, crop_rows, jpeg, write_partition

BROWSER = shutil.which("chromium")
WINDOW = (1200, 800)


def chromium(page: Path, profile: Path, *actions: str) -> subprocess.CompletedProcess:
    return subprocess.run([BROWSER, "--headless=new", "--no-sandbox", "--disable-gpu", f"--user-data-dir={profile}",
                           f"--window-size={WINDOW[0]},{WINDOW[1]}", *actions, page.as_uri()],
                          capture_output=True, text=True, timeout=120)


def people_page(root: Path, path: Path) -> Path:
    """A page of four tracks of three cameras: three real JPEG best crops and one missing image."""
    night = dt.datetime(2024, 5, 1, 22, 15, tzinfo=UTC)
    rows = []
    for i, (camera, scores) in enumerate([("cam07", {"backpack": 0.93, "female": 0.08, "hat": 0.71}),
                                          ("cam07", {"backpack": 0.81, "female": 0.22}),
                                          ("cam12", {"backpack": 0.77, "female": 0.35, "hat": 0.12}),
                                          ("cam<b>&", {"backpack": 0.66, "female": 0.41})]):
        track = crop_rows(camera, f"t{i + 1}", night + dt.timedelta(minutes=7 * i), [scores] * (i + 2),
                          images=str(root / "images"))
        if i < 3:
            for j, row in enumerate(track):
                jpeg(Path(row["image_uri"]), size=(150 + 10 * i, 60), seed=i + 3 * j)
        track[0]["super_resolved"] = i == 1
        rows += track
    write_partition(root / "out", "date=2024-05-01", rows)
    tracks = load_tracks(str(root / "out"), where="backpack and not female")
    return write_page(tracks, path, query="backpack and not female")


@pytest.mark.skipif(BROWSER is None, reason="needs Debian's chromium (make test installs it)")
def test_chromium_renders_every_card_and_decodes_every_thumbnail(tmp_path):
    from PIL import Image

    page = people_page(tmp_path, tmp_path / "people.html")
    shot = tmp_path / "people.png"
    done = chromium(page, tmp_path / "profile", f"--screenshot={shot}", "--dump-dom")  # one browser does both
    assert done.returncode == 0, done.stderr[-2000:]
    html = done.stdout
    assert html.count('class="card"') == 4
    # the page's script ran (its hash is in the CSP) after every image had loaded: 3 decoded, of 3
    assert re.search(r'id="decoded" data-decoded="3">3 of 3 thumbnails shown<', html), html[-3000:]
    assert "no thumbnail: missing object" in html and "cam&lt;b&gt;&amp;" in html
    image = Image.open(shot)
    assert image.size == WINDOW
    assert len(image.convert("RGB").getcolors(1 << 20)) > 1000  # thumbnails drawn, not a blank page

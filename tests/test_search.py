"""Searching people: `results.load_tracks` over hand-written partitions (markers, merging across
midnight, windows, projection, re-reading markers), the page of `search.write_page` (escaping,
placeholders, bounds) and `attrgan search`."""

from __future__ import annotations

import datetime as dt
import json

import pandas as pd
import pytest

from attrgan import cli
from attrgan.config import StorageConfig
from attrgan.contracts import SUCCESS_MARKER, TRACK_FILES_KEY
from attrgan.query import QueryError
from attrgan.results import load_tracks
from attrgan.search import format_table, search, write_page
from search_helpers import UTC, crop_rows, jpeg, write_partition

NIGHT = dt.datetime(2024, 5, 1, 23, 59, 50, tzinfo=UTC)
DAY1, DAY2 = "date=2024-05-01/camera=cam07", "date=2024-05-02/camera=cam07"


@pytest.fixture
def night(tmp_path):
    """Two days of cam07 (t1 crosses midnight), one of cam08, crops as real JPEGs."""
    images = tmp_path / "images"
    root = tmp_path / "out"
    day1 = (crop_rows("cam07", "t1", NIGHT, [{"backpack": 0.9, "female": 0.2}, {"backpack": 0.8, "female": 0.3}],
                      images=str(images))
            + crop_rows("cam07", "t2", NIGHT, [{"backpack": 0.6, "female": 0.9, "hat": 0.7}], images=str(images))
            + crop_rows("cam07", "t3", NIGHT - dt.timedelta(hours=5), [{"backpack": 0.55, "female": 0.1}],
                        images=str(images)))
    day2 = crop_rows("cam07", "t1", NIGHT + dt.timedelta(seconds=20), [{"backpack": 0.7, "female": 0.1}],
                     images=str(images), first_frame=2)
    cam08 = crop_rows("cam08", "t1", NIGHT, [{"backpack": 0.95, "female": 0.05}], images=str(images))
    for row in day1 + day2 + cam08:
        jpeg(images / f"{row['crop_id']}.jpg", seed=len(row["crop_id"]))
    write_partition(root, DAY1, day1)
    write_partition(root, DAY2, day2, files=1)
    write_partition(root, "date=2024-05-01/camera=cam08", cam08, files=1)
    return root


def test_a_track_across_midnight_is_one_row_and_the_best_come_first(night):
    tracks = load_tracks(str(night), where="backpack and not female")
    assert list(zip(tracks["camera_id"], tracks["track_id"])) == [("cam08", "t1"), ("cam07", "t1"), ("cam07", "t3")]
    t1 = tracks.iloc[1]
    assert t1["crops"] == 3 and t1["first_frame"] == 0 and t1["last_frame"] == 2
    assert t1["first_seen"] == pd.Timestamp(NIGHT) and t1["last_seen"] == pd.Timestamp(NIGHT + dt.timedelta(seconds=20))
    assert t1["backpack_score"] == pytest.approx((0.9 + 0.8 + 0.7) / 3, rel=1e-6)  # the mean rule, merged exactly
    assert t1["relevance"] == pytest.approx((t1["backpack_score"] + 1 - t1["female_score"]) / 2, rel=1e-6)
    assert tracks["relevance"].is_monotonic_decreasing
    assert str(tracks["backpack"].dtype) == "boolean" and str(tracks["backpack_score"].dtype) == "Float32"
    everyone = load_tracks(str(night))  # without a query: the heaviest (most crops, here) first
    assert len(everyone) == 4 and (everyone.iloc[0]["camera_id"], everyone.iloc[0]["track_id"]) == ("cam07", "t1")
    assert "relevance" not in everyone.columns


def test_window_cameras_and_top(night):
    late = load_tracks(str(night), start="2024-05-01T23:00", end="2024-05-02T06:00")
    assert sorted(zip(late["camera_id"], late["track_id"])) == [("cam07", "t1"), ("cam07", "t2"), ("cam08", "t1")]
    # a track overlapping the window is kept whole; one seen only before it is not
    after_midnight = load_tracks(str(night), start="2024-05-02T00:00:05", end="2024-05-02T01:00")
    assert list(after_midnight["track_id"]) == ["t1"] and after_midnight["crops"].iloc[0] == 1  # only day 2 is read
    assert set(load_tracks(str(night), cameras=["cam08"])["camera_id"]) == {"cam08"}
    assert len(load_tracks(str(night), where="backpack", top=2)) == 2
    with pytest.raises(ValueError, match="top must be a positive integer"):
        load_tracks(str(night), top=0)


def test_only_what_markers_list_is_read_and_older_markers_have_no_tracks(night, caplog):
    day1 = night / DAY1
    (day1 / "_tracks" / "part-old-00000.parquet").write_bytes(b"superseded, not listed")  # never opened
    write_partition(night, "date=2024-05-03/camera=cam07", crop_rows("cam07", "t9", NIGHT + dt.timedelta(days=2),
                                                                     [{"backpack": 0.9}]), tracks=False)
    uncommitted = write_partition(night, "date=2024-05-04/camera=cam07",
                                  crop_rows("cam07", "t8", NIGHT + dt.timedelta(days=3), [{"backpack": 0.9}]))
    (uncommitted / SUCCESS_MARKER).unlink()
    (night / "date=2024-05-05").mkdir()
    (night / "date=2024-05-05" / SUCCESS_MARKER).write_text("")  # an empty marker: no track files either
    tracks = load_tracks(str(night))
    assert set(tracks["track_id"]) == {"t1", "t2", "t3"}

    marker = json.loads((day1 / SUCCESS_MARKER).read_text())
    marker[TRACK_FILES_KEY] = ["../../../etc/passwd.parquet"]  # a marker never points a reader elsewhere
    (day1 / SUCCESS_MARKER).write_text(json.dumps(marker))
    assert set(zip(load_tracks(str(night))["camera_id"], load_tracks(str(night))["track_id"])) == {
        ("cam07", "t1"), ("cam08", "t1")}
    assert "must list _tracks/<name>.parquet files" in caplog.text


def test_only_the_columns_needed_are_read(night, monkeypatch):
    import attrgan.results as results

    read: list[list[str]] = []
    real = results.ds.dataset

    class Spy:
        def __init__(self, *args, **kwargs):
            self.dataset = real(*args, **kwargs)

        def to_table(self, columns=None, **kwargs):
            read.append(list(columns))
            return self.dataset.to_table(columns=columns, **kwargs)

    monkeypatch.setattr(results.ds, "dataset", Spy)
    tracks = load_tracks(str(night), where="backpack > 0.7", columns=[])
    attribute_columns = {c for c in read[0] if c in ("female", "female_score", "backpack", "backpack_score", "hat",
                                                      "hat_score")}
    assert attribute_columns == {"backpack", "backpack_score"}
    assert "female" not in tracks.columns and "hat_score" not in tracks.columns
    with pytest.raises(ValueError, match="unknown track column"):
        load_tracks(str(night), columns=["colour"])


def test_markers_are_read_again_when_a_listed_file_is_gone(night, monkeypatch):
    """A reader that took a marker just before a run replaced the partition's files reads the new
    generation, whole."""
    import attrgan.results as results

    stale = results._committed_tracks(results._filesystem(str(night), None)[0],
                                      results.complete_partitions(str(night)))
    write_partition(night, DAY2, crop_rows("cam07", "t1", NIGHT + dt.timedelta(seconds=20),
                                           [{"backpack": 0.1, "female": 0.1}] * 4, first_frame=2), run="r2")
    (night / DAY2 / "_tracks" / "part-r1-00000.parquet").unlink()  # the next run cleaned the old generation
    real, calls = results._committed_tracks, []

    def first_stale(fs, partitions):
        calls.append(1)
        return stale if len(calls) == 1 else real(fs, partitions)

    monkeypatch.setattr(results, "_committed_tracks", first_stale)
    tracks = load_tracks(str(night), cameras=["cam07"])
    assert len(calls) == 2
    assert tracks.set_index("track_id").loc["t1", "crops"] == 2 + 4


def test_bad_queries_and_missing_results_are_clear_errors(night, tmp_path):
    with pytest.raises(QueryError, match="unknown attribute 'bakpack'; the tracks' attributes are: female, "
                                         "backpack, hat"):
        load_tracks(str(night), where="bakpack")
    with pytest.raises(QueryError, match="reported per crop, not per track"):
        load_tracks(str(night), where="talking")
    with pytest.raises(FileNotFoundError, match="no results at"):
        load_tracks(str(tmp_path / "nothing"), where="backpack")


# --- the page ---------------------------------------------------------------------------------------

def hostile_tracks(night) -> pd.DataFrame:
    tracks = load_tracks(str(night), where="backpack")
    tracks.loc[0, "camera_id"] = '<script>alert("cam")</script>\x1b[31m'
    tracks.loc[0, "track_id"] = "t1' onmouseover='alert(1)"
    tracks.loc[1, "best_crop_id"] = '"><img src=http://evil.example/x>'
    tracks.loc[1, "best_image_uri"] = str(night / "missing.jpg")
    return tracks


def test_the_page_escapes_data_embeds_thumbnails_and_loads_nothing_from_outside(night, tmp_path):
    page = write_page(hostile_tracks(night), tmp_path / "p.html", query="backpack and not female")
    text = page.read_text()
    assert "<script>alert" not in text and "&lt;script&gt;alert(&quot;cam&quot;)&lt;/script&gt;" in text
    assert "onmouseover='" not in text and "\x1b" not in text and "\\x1b[31m" in text
    assert "evil.example/x>" not in text and "&quot;&gt;&lt;img src=http://evil.example/x&gt;" in text
    assert text.count('<div class="card">') == 4
    assert text.count('src="data:image/jpeg;base64,') == 3
    assert "no thumbnail: missing object" in text
    assert "default-src 'none'; img-src data:" in text  # the CSP allows no fetch from anywhere
    tags = parsed_tags(text)
    assert {t for t, _ in tags} <= {"html", "head", "meta", "title", "style", "body", "h1", "p", "span", "div", "b",
                                    "img", "script"}
    assert sum(t == "script" for t, _ in tags) == 1  # the page's own one, whose hash the CSP names
    assert all(not name.startswith("on") for _, attrs in tags for name, _ in attrs)  # no handler from the data
    sources = [v for _, attrs in tags for name, v in attrs if name in ("src", "href")]
    assert len(sources) == 3 and all(v.startswith("data:image/jpeg;base64,") for v in sources)


def parsed_tags(text: str) -> list[tuple[str, list[tuple[str, str]]]]:
    """Every start tag of an HTML page with its attributes, as a browser's tokenizer reads them."""
    from html.parser import HTMLParser

    tags = []

    class Collect(HTMLParser):
        def handle_starttag(self, tag, attrs):
            tags.append((tag, attrs))

    Collect().feed(text)
    return tags


def test_the_page_is_bounded_and_images_go_through_the_storage_limits(night, tmp_path):
    tracks = load_tracks(str(night))
    page = write_page(tracks, tmp_path / "p.html", limit=2).read_text()
    assert page.count('<div class="card">') == 2 and "2 tracks, best first (of 4)." in page
    tiny = StorageConfig(max_object_bytes=100)
    page = write_page(tracks, tmp_path / "p.html", storage=tiny).read_text()
    assert page.count("no thumbnail: object too large") == 4 and "data:image" not in page
    fenced = StorageConfig(allowed_prefixes=(str(tmp_path / "elsewhere"),))
    page = write_page(tracks, tmp_path / "p.html", storage=fenced).read_text()
    assert page.count("no thumbnail: image outside the allowed prefixes") == 4
    unscored = tracks.head(1).assign(crops_ok=0)
    assert "no thumbnail: no scored crop" in write_page(unscored, tmp_path / "p.html").read_text()


def test_search_and_its_table(night, tmp_path):
    found = search(str(night), "backpack > 0.65 and not female", html_path=tmp_path / "p.html", top=2)
    assert found.page == tmp_path / "p.html" and found.page.read_text().count('<div class="card">') == 2
    assert "hat_score" in found.tracks.columns  # the page's cards show every attribute that is true
    table = format_table(found.tracks, found.query).splitlines()
    assert table[0].split() == ["camera", "track", "first", "seen", "(UTC)", "last", "seen", "(UTC)", "crops",
                                "best", "crop", "backpack", "female"]
    assert table[1].split()[:2] == ["cam08", "t1"] and table[1].endswith("yes 0.95  no 0.05")
    assert "hat_score" not in search(str(night), "backpack").tracks.columns  # no page: the query's columns only


# --- the command ------------------------------------------------------------------------------------

def run(argv: list[str], capsys) -> tuple[int, str, str]:
    try:
        cli.main(["search", *argv])
        code = 0
    except SystemExit as exc:
        code = exc.code
    out = capsys.readouterr()
    return code, out.out, out.err


def test_attrgan_search_prints_the_tracks_and_writes_the_page(night, tmp_path, capsys):
    code, out, err = run(["--results", str(night), "--where", "backpack and not female", "--camera", "cam07",
                          "--since", "2024-05-01T20:00", "--until", "2024-05-02", "--html", str(tmp_path / "p.html")],
                         capsys)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split()[:2] == ["camera", "track"] and lines[1].split()[:2] == ["cam07", "t1"]
    assert len(lines) == 3 and lines[2] == f"page: {tmp_path / 'p.html'}"
    code, out, _ = run(["--results", str(night), "--where", "hat and not hat"], capsys)
    assert code == 0 and out.strip() == "no track matches"


def test_attrgan_search_on_s3(night, storage, s3_bucket, tmp_path, capsys, monkeypatch):
    """Results on object storage, its endpoint from --set storage.*, as the other commands take it."""
    from attrgan.data.storage import write_bytes

    uri = f"s3://{s3_bucket}/out"
    for path in (p for p in night.rglob("*") if p.is_file()):
        write_bytes(f"{uri}/{path.relative_to(night).as_posix()}", path.read_bytes(), storage)
    for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "ATTRGAN_S3_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    code, out, err = run(["--results", uri, "--where", "backpack > 0.75", "--html", str(tmp_path / "p.html"),
                          "--set", f"storage.endpoint_url={storage.endpoint_url}", "--set", "storage.region=us-east-1"],
                         capsys)
    assert code == 0, err
    assert [line.split()[:2] for line in out.splitlines()[1:-1]] == [["cam08", "t1"], ["cam07", "t1"]]
    assert (tmp_path / "p.html").read_text().count('src="data:image/jpeg;base64,') == 2


@pytest.mark.parametrize("argv, message", [
    (["--where", "backpack and (female"], "expected ')', found the end"),
    (["--where", "__import__('os').system('x')"], "unexpected character"),
    (["--where", "talking"], "'talking' is a moment-level attribute"),
    (["--where", "backpack", "--since", "yesterday"], "--since: expected a datetime"),
    (["--top", "0"], "--top must be >= 1"),
    (["--set", "actors=2"], "search takes only storage.* settings"),
    (["--html", "s3://bucket/people.html"], "the page is written to a local file, not a URI"),
])
def test_attrgan_search_bad_input_is_one_line_and_exit_2(night, capsys, argv, message):
    code, out, err = run(["--results", str(night), *argv], capsys)
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1
    assert err.startswith("attrgan search: error: ") and message in err, err

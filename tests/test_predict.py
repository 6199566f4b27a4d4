"""`attrgan predict` and `attrgan.load_pipeline(...).predict(...)` on a tiny random-weight bundle (no Ray)."""

from __future__ import annotations

import io
import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

import attrgan
from attrgan import cli
from attrgan.bundle import save_bundle
from attrgan.predict import expand_paths, summary_line
from helpers import ATTRS, png, tiny_bundle

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory) -> str:
    """A saved bundle of tiny random networks: 64x32 classifier, G^S 16x8 -> 64x32, G^R at 32x16."""
    # occlusion_down at threshold 0 reconstructs every crop: the restoration path runs
    bundle = tiny_bundle(thresholds=[0.5, 0.5, 0.0])
    path = tmp_path_factory.mktemp("bundle") / "bundle"
    save_bundle(path, bundle)
    return str(path)


@pytest.fixture
def folder(tmp_path):
    """Three images: a full-size crop, a small (low-res) one, and a JPEG cut in half."""
    (tmp_path / "a.png").write_bytes(png(1, (140, 56)))
    (tmp_path / "b.png").write_bytes(png(2, (14, 6)))
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(3).integers(0, 256, (96, 40, 3), dtype=np.uint8)).save(buf, "JPEG")
    (tmp_path / "c.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    (tmp_path / "notes.txt").write_text("not an image, not picked up from the folder")
    return tmp_path


def test_predict_on_a_folder_gives_attributes_and_an_error_record(bundle_dir, folder):
    df = attrgan.load_pipeline(bundle_dir).predict([str(folder)])
    assert list(df["crop_id"]) == [str(folder / n) for n in ("a.png", "b.png", "c.jpg")]
    assert list(df["status"]) == ["ok", "ok", "error"]
    assert df["error"].iloc[2].startswith("undecodable image") and df["error"].iloc[:2].isna().all()
    assert list(df["super_resolved"]) == [False, True, False]  # 14 rows high: no taller than G^S's input (16)
    assert df["reconstructed"].iloc[:2].all()
    for a in ATTRS:
        assert df[a].dtype == "boolean" and df[f"{a}_score"].dtype == "Float32"
        assert df[f"{a}_score"].iloc[:2].between(0, 1).all() and df[f"{a}_score"].isna().iloc[2]
    assert (df[["female", "hat"]].iloc[:2] == (df[["female_score", "hat_score"]].iloc[:2] >= 0.5).values).all().all()
    assert set(df["model_version"]) == {attrgan.load_pipeline(bundle_dir).pipeline.version}


def test_predict_takes_arrays_and_a_box_the_same_way_as_files(bundle_dir, folder):
    pipe = attrgan.load_pipeline(bundle_dir)
    pixels = np.asarray(Image.open(folder / "a.png"))
    from_file = pipe.predict(str(folder / "a.png"), bbox=(0, 0, 56, 70))
    from_array = pipe.predict([pixels[:70]])
    assert from_array["crop_id"].tolist() == ["array[0]"]
    np.testing.assert_allclose(from_file["female_score"].astype(float), from_array["female_score"].astype(float),
                               atol=0.01)  # Pillow resizes a file's box in one step
    bad = pipe.predict([np.zeros((4, 4), np.uint8), pixels], bbox=(500, 500, 10, 10))
    assert list(bad["status"]) == ["error", "error"]
    assert bad["error"][0].startswith("bad array") and bad["error"][1].startswith("bad bbox")
    assert len(pipe.predict([])) == 0


def test_expand_paths_globs_and_missing(folder):
    assert expand_paths([str(folder / "*.png")]) == [str(folder / "a.png"), str(folder / "b.png")]
    assert expand_paths(["s3://bucket/x.jpg"]) == ["s3://bucket/x.jpg"]
    with pytest.raises(FileNotFoundError, match="no file matches"):
        expand_paths([str(folder / "*.gif")])
    with pytest.raises(FileNotFoundError, match="no such file"):
        expand_paths([str(folder / "missing.png")])


def test_links_in_folders_give_one_row_per_file_and_one_error_row_per_unreadable_name(bundle_dir, folder):
    import os

    os.symlink(folder / "gone.png", folder / "dangling.png")
    os.symlink("loop.png", folder / "loop.png")
    os.symlink(folder, folder / "again.jpg")  # the folder itself, under an image's name
    os.link(folder / "a.png", folder / "hard.png")  # a.png under a second name
    os.symlink(folder / "b.png", folder / "soft.png")
    other = folder / "other"
    other.mkdir()
    os.symlink(folder, other / "up.jpg")
    os.symlink(other, folder / "dir.jpg")  # another folder named like an image
    names = ["a.png", "b.png", "c.jpg", "dangling.png", "dir.jpg", "loop.png"]
    # The folder, and again through a link: each file once, each unreadable name once, dir.jpg reported.
    assert expand_paths([str(folder), str(folder / "again.jpg/")]) == [str(folder / n) for n in names]
    # As a shell's `*` passes it: every name, the folders named like images reported, not walked.
    shell = sorted(str(p) for p in folder.iterdir())
    given = sorted(names + ["again.jpg", "notes.txt", "other"])
    assert expand_paths(shell) == [str(folder / n) for n in given if n != "other"]  # other/up.jpg: the folder again
    assert expand_paths([str(folder / "*.*")]) == [str(folder / n) for n in given if n != "other"]
    df = attrgan.load_pipeline(bundle_dir).predict(shell)
    assert df["crop_id"].is_unique and len(df) == 8
    errors = dict(zip(df["crop_id"], df["error"]))
    assert errors[str(folder / "dangling.png")].startswith("missing object: ")
    assert errors[str(folder / "loop.png")].startswith("unreadable object: ")
    assert errors[str(folder / "dir.jpg")].startswith("unreadable object: ") and "folder" in errors[str(folder / "dir.jpg")]
    assert df.loc[df["crop_id"] == str(folder / "a.png"), "status"].item() == "ok"


def test_predict_command_lines_json_and_csv(bundle_dir, folder, capsys, tmp_path):
    paths = [str(folder / "a.png"), str(folder / "b.png")]
    cli.main(["predict", *paths, "--bundle", bundle_dir])
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and lines[0].startswith(f"{paths[0]}: ok") and "super-resolved" in lines[1]

    cli.main(["predict", *paths, "--bundle", bundle_dir, "--json", "--set", "pipeline.occlusion_threshold=1.0"])
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["crop_id"] for r in records] == paths
    assert not any(r["reconstructed"] for r in records)  # the --set reached the pipeline
    assert {"female", "female_score", "occlusion_score", "super_resolved", "error"} <= set(records[0])

    out = tmp_path / "out.csv"
    with pytest.raises(SystemExit) as exit_:  # one image failed: exit 1, the others are still written
        cli.main(["predict", str(folder), "--bundle", bundle_dir, "--csv", str(out)])
    assert exit_.value.code == 1
    table = pd.read_csv(out)
    assert list(table["status"]) == ["ok", "ok", "error"]


def test_predict_command_bad_input_is_one_line_and_exit_2(bundle_dir, folder, capsys):
    for argv, expected in (
        (["predict", str(folder / "nope.png"), "--bundle", bundle_dir], "no such file or folder"),
        (["predict", str(folder / "a.png"), "--bundle", bundle_dir, "--bbox", "1,2,3"], "--bbox must be four"),
        (["predict", str(folder / "a.png"), "--bundle", bundle_dir, "--set", "pipeline.occlusion_threshold=2"],
         "occlusion_threshold must be a probability"),
        (["predict", str(folder / "a.png"), "--bundle", str(folder)], "no config.json"),
    ):
        with pytest.raises(SystemExit) as exit_:
            cli.main(argv)
        err = capsys.readouterr().err.strip()
        assert exit_.value.code == 2 and len(err.splitlines()) == 1, (argv, err)
        assert err.startswith("attrgan predict: error: ") and expected in err, err


def test_summary_lines_show_names_without_credentials_or_terminal_codes():
    row = pd.Series({"crop_id": "s3://AKIA:secret@b/evil\x1b]0;title\x07\n.jpg", "status": "error",
                     "error": "missing object"})
    line = summary_line(row)
    assert "secret" not in line and not any(c in line for c in "\x1b\x07\n"), line
    assert line == "s3://***@b/evil\\x1b]0;title\\x07\\n.jpg: error: missing object"

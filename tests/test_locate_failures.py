"""``geocells locate`` never loses a failure or a previous result (issue 16, cases 3, 5, 6)."""

import csv
import errno
import io
import json
import shutil
from pathlib import Path

import pytest

from geocells.cli import main


@pytest.fixture
def photos(micro_dataset, tmp_path):
    """A folder: 2 good JPEGs, a broken one, a broken symlink, an extensionless JPEG, an
    extensionless non-image, a hidden file and a text file."""
    folder = tmp_path / "photos"
    (folder / "nested").mkdir(parents=True)
    images = sorted((micro_dataset / "ground" / "images").glob("*.jpg"))
    shutil.copy(images[0], folder / "a.jpg")
    shutil.copy(images[1], folder / "nested" / "b.jpg")
    shutil.copy(images[2], folder / "IMG_0003")  # an image without a suffix: located
    (folder / "README").write_text("not an image either")  # tried, and reported
    (folder / "broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    (folder / "gone.jpg").symlink_to(folder / "deleted.jpg")
    (folder / ".DS_Store").write_bytes(b"\0")
    (folder / "notes.txt").write_text("not an image suffix: ignored")
    return folder


def _names(paths):
    return sorted(Path(p).name for p in paths)


FAILED = ["README", "broken.jpg", "gone.jpg"]
LOCATED = ["IMG_0003", "a.jpg", "b.jpg"]


def test_failures_are_rows_in_every_format_and_the_exit_code(micro_db, photos, tmp_path, capsys):
    argv = ["locate", str(micro_db), str(photos), "--top-k", "2", "--no-progress"]
    outputs = {fmt: tmp_path / f"out.{fmt}" for fmt in ("json", "csv", "geojson")}
    for fmt, out in outputs.items():
        assert main([*argv, "--format", fmt, "--out", str(out)]) == 1
        err = capsys.readouterr().err
        assert "gone.jpg: broken symbolic link" in err and "3 of 6 images failed" in err

    result = json.loads(outputs["json"].read_text())
    assert _names(r["image"] for r in result["results"] if r["error"] is None) == LOCATED
    assert _names(r["image"] for r in result["results"] if r["error"]) == FAILED
    assert all(r["predictions"] == [] for r in result["results"] if r["error"])

    rows = list(csv.DictReader(io.StringIO(outputs["csv"].read_text())))
    errors = {Path(r["image"]).name: r["error"] for r in rows if r["error"]}
    assert sorted(errors) == FAILED and errors["gone.jpg"] == "broken symbolic link"
    assert _names({r["image"] for r in rows if not r["error"]}) == LOCATED

    features = json.loads(outputs["geojson"].read_text())["features"]
    failed = [f for f in features if f["properties"]["kind"] == "failure"]
    assert _names(f["properties"]["image"] for f in failed) == FAILED
    assert all(f["geometry"] is None and f["properties"]["error"] for f in failed)
    points = {f["properties"]["image"] for f in features if f["properties"]["kind"] == "prediction"}
    assert _names(points) == LOCATED


def test_locate_help_names_the_exit_codes(capsys):
    with pytest.raises(SystemExit):
        main(["locate", "--help"])
    assert "1 when any image failed" in " ".join(capsys.readouterr().out.split())


@pytest.mark.parametrize(
    ("option", "value"), [("--batch-size", "-1"), ("--batch-size", "0"), ("--top-k", "0")]
)
def test_non_positive_sizes_are_refused_before_anything_runs(
    micro_db, micro_dataset, tmp_path, capsys, option, value
):
    image = str(micro_dataset / "ground" / "images" / "000.jpg")
    out = tmp_path / "previous.json"
    out.write_text("previous results\n")
    assert main(["locate", str(micro_db), image, option, value, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"geocells locate: error: argument {option}: must be >= 1, got {value}" in err
    assert out.read_text() == "previous results\n"


def test_a_full_disk_keeps_the_previous_results(
    micro_db, micro_dataset, tmp_path, monkeypatch, capsys
):
    image = str(micro_dataset / "ground" / "images" / "000.jpg")
    out = tmp_path / "results.json"
    assert main(["locate", str(micro_db), image, "--out", str(out), "--no-progress"]) == 0
    before = out.read_bytes()
    real_write_text = Path.write_text

    def disk_full(self, text, *args, **kwargs):
        real_write_text(self, text[: len(text) // 2], *args, **kwargs)  # half, then full
        raise OSError(errno.ENOSPC, "No space left on device", str(self))

    monkeypatch.setattr(Path, "write_text", disk_full)
    argv = ["locate", str(micro_db), image, "--top-k", "3", "--out", str(out), "--no-progress"]
    assert main(argv) == 2
    assert "No space left on device" in capsys.readouterr().err
    assert out.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.json"]  # no temporary left

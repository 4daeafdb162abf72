"""Manifest rows that lead outside the dataset, and how ``dataset check`` and training
report bad rows and broken images (issue 16, case 8)."""

import shutil

import pytest

from fixtures_logs import captured_warnings
from geocells.cli import main
from geocells.data.dataset import IMAGE_ROOTS_FILE, Dataset

HEADER = "image_id,path,lat,lon,split"


@pytest.fixture
def dataset(micro_dataset, tmp_path):
    """A copy of the micro dataset whose CSV manifest holds 3 good rows, a truncated JPEG,
    2 paths leading out of the dataset and 13 missing files (15 bad rows)."""
    root = shutil.copytree(micro_dataset, tmp_path / "data")
    (root / "ground" / "manifest.parquet").unlink()
    images = root / "ground" / "images"
    whole = (images / "003.jpg").read_bytes()
    (images / "003.jpg").write_bytes(whole[: len(whole) // 2])
    lat, lon = 48.003, 2.004
    rows = [f"{i:03d},images/{i:03d}.jpg,{lat},{lon},val" for i in range(4)]
    rows += [f"up,../../etc/passwd,{lat},{lon},val", f"abs,/etc/passwd,{lat},{lon},val"]
    rows += [f"gone{i},images/gone{i}.jpg,{lat},{lon},val" for i in range(13)]
    (root / "ground" / "manifest.csv").write_text("\n".join([HEADER, *rows]) + "\n")
    return root


def _snapshot(root):
    return {p: p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_paths_outside_the_dataset_are_refused_naming_the_row(dataset):
    before = _snapshot(dataset)
    manifest = Dataset.open(dataset).manifest
    assert list(manifest.image_id) == ["000", "001", "002", "003"]
    outside = [b for b in manifest.bad_rows if "outside the dataset folder" in b.reason]
    assert [(b.row, b.image_id) for b in outside] == [(5, "up"), (6, "abs")]
    assert "'../../etc/passwd'" in outside[0].reason and "'/etc/passwd'" in outside[1].reason
    with pytest.raises(ValueError, match=r"row 5 \(image_id 'up'\): path '../../etc/passwd'"):
        _ = Dataset.open(dataset, strict=True).manifest
    assert _snapshot(dataset) == before


def test_declared_image_roots_admit_their_folder_only(dataset, tmp_path):
    outside = tmp_path / "photos"
    outside.mkdir()
    shutil.copy(dataset / "ground" / "images" / "000.jpg", outside / "p.jpg")
    (outside / "secret.txt").write_text("x")
    rows = [
        "p,../../photos/p.jpg,48.003,2.004,val",
        "escape,../../photos/../data/../secret.txt,48.003,2.004,val",
    ]
    (dataset / "ground" / "manifest.csv").write_text("\n".join([HEADER, *rows]) + "\n")
    refused = Dataset.open(dataset).manifest
    assert len(refused) == 0 and "ground/image_roots.txt" in refused.bad_rows[0].reason
    (dataset / IMAGE_ROOTS_FILE).write_text("# comment\n../../photos\n")
    manifest = Dataset.open(dataset).manifest
    assert list(manifest.image_id) == ["p"]
    assert [b.image_id for b in manifest.bad_rows] == ["escape"]


def test_dataset_check_lists_every_kind_the_first_rows_and_how_many_more(dataset, capsys):
    assert main(["dataset", "check", str(dataset)]) == 1
    out = capsys.readouterr().out
    assert "bad rows    15 (13 × missing file, 2 × path outside the dataset)" in out
    assert "row 5 (image_id 'up')" in out and "... and 5 more" in out
    assert "unreadable images              1 of 4 checked (decode" in out
    assert "003: corrupt or truncated" in out or "003: truncated" in out
    assert "PROBLEM: 15 bad manifest rows (13 × missing file, 2 × path outside" in out
    assert main(["dataset", "check", str(dataset), "--fast"]) == 1
    assert "1 of 4 checked (header" in capsys.readouterr().out
    assert main(["dataset", "check", str(dataset), "--strict"]) == 2


def test_training_logs_every_kind_and_the_first_rows(dataset, caplog):
    with captured_warnings(caplog, "geocells.data.manifest"):
        _ = Dataset.open(dataset).manifest
    message = caplog.records[-1].getMessage()
    assert "skipped 15 of 19 rows (13 × missing file, 2 × path outside the dataset)" in message
    assert "row 5 (image_id 'up')" in message and "row 19 (image_id 'gone12')" in message

"""CSV files that are not what they claim (issue 22, item 12): not UTF-8, binary, a 60 MB
field, a time no calendar holds — each named by file, row and column."""

import re
import zipfile

import pytest

from fixtures_import import image_bytes, write_image
from geocells.cli import main
from geocells.data.csvfile import CsvError, diagnose
from geocells.data.dataset import Dataset
from geocells.data.importers import get_importer

HEADER = b"file,lat,lon,captured_at\n"
GOOD = b"a.jpg,45,5,2020\n"
CASES = {
    "latin-1": (
        HEADER + GOOD + "a.jpg,45,5,caf\xe9\n".encode("latin-1"),
        r"row 2 \(line 3\), column 'captured_at' \(byte 15 of the line\): byte 0xe9 is not UTF-8",
    ),
    "binary": (
        HEADER + GOOD + b"\x00\x01\x02\xff\xfe garbage\n",
        r"row 2 \(line 3\), column 'file' \(byte 1 of the line\): binary data \(a NUL byte\)",
    ),
    "png-renamed": (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", r"the header \(line 1\), byte 1"),
    "60-MB-field": (
        HEADER + GOOD + b"a.jpg,45,5," + b"9" * (60 << 20) + b"\n",
        r"row 2 \(line 3\), column 'captured_at': a line longer than the 1,048,576 bytes",
    ),
}


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_import_csv_names_file_row_and_column(tmp_path, capsys, case):
    content, message = CASES[case]
    write_image(tmp_path / "a.jpg")
    table = tmp_path / "places.csv"
    table.write_bytes(content)
    assert main(["import", "csv", str(table), "--out", str(tmp_path / "ds")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"cannot read {table}: " in err
    assert re.search(message, err), err
    assert diagnose(table) is not None


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ("caf\xe9".encode("latin-1"), r"column 'split' \(byte 17 of the line\): byte 0xe9"),
        (b"\x00\xff", r"column 'split' \(byte 14 of the line\): binary data"),
    ],
    ids=["latin-1", "binary"],
)
def test_a_manifest_csv_names_file_row_and_column(tmp_path, bad, message):
    (tmp_path / "ground").mkdir()
    manifest = tmp_path / "ground" / "manifest.csv"
    rows = b"image_id,path,lat,lon,split\na,a.jpg,45,5,train\nb,b.jpg,45,5," + bad + b"\n"
    manifest.write_bytes(rows)
    with pytest.raises(CsvError, match=f"cannot read {re.escape(str(manifest))}: row 2 "):
        Dataset.open(tmp_path).manifest  # noqa: B018
    with pytest.raises(CsvError, match=message):
        Dataset.open(tmp_path).manifest  # noqa: B018


def test_a_time_out_of_every_calendar_is_a_bad_row_named_by_file_row_and_column(tmp_path):
    root = tmp_path / "osv5m"
    (root / "images" / "train").mkdir(parents=True)
    rows = ["1,45.0,5.0,1600000000000", "2,45.1,5.1,99999999999999999999999"]
    (root / "train.csv").write_text("id,latitude,longitude,captured_at\n" + "\n".join(rows))
    with zipfile.ZipFile(root / "images" / "train" / "00.zip", "w") as archive:
        for name in ("1", "2"):
            archive.writestr(f"00/{name}.jpg", image_bytes())
    imported = get_importer("osv5m")(root)
    assert imported.columns["image_id"].tolist() == ["1"]
    [(item, reason)] = imported.skipped
    assert item == "train/2" and reason.startswith("train.csv row 2: captured_at 99999")
    assert "out of range" in reason

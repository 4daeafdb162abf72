"""GroundManifest: reading Parquet/CSV, validation of every kind of bad row, writing."""

import logging

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from geocells.data.manifest import GroundManifest

HEADER = "image_id,path,lat,lon,heading,fov,captured_at,split"


def _images(folder, names):
    (folder / "img").mkdir(exist_ok=True)
    for name in names:
        (folder / "img" / name).write_bytes(b"jpeg")


def _write_csv(folder, rows, header=HEADER):
    path = folder / "manifest.csv"
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


def test_good_csv_resolves_paths_and_parses_columns(tmp_path):
    _images(tmp_path, ["a.jpg", "b.jpg", "c.jpg"])
    path = _write_csv(
        tmp_path,
        [
            "0001,img/a.jpg,47.5,8.25,370,90,2024-05-01T10:00:00Z,train",
            "0002,img/b.jpg,-33.9,151.2,,,,val",
            f"0003,{tmp_path}/img/c.jpg,0,-180,-90,60,,test",
        ],
    )
    manifest = GroundManifest.read(path, strict=True)
    assert len(manifest) == 3 and manifest.bad_rows == []
    assert manifest.image_id.tolist() == ["0001", "0002", "0003"]  # ids stay text
    assert manifest.path.tolist() == [
        str(tmp_path / "img" / n) for n in ("a.jpg", "b.jpg", "c.jpg")
    ]
    np.testing.assert_allclose(manifest.lat, [47.5, -33.9, 0.0])
    assert manifest.heading[0] == 10.0 and manifest.heading[2] == 270.0  # wrapped to [0, 360)
    assert np.isnan(manifest.heading[1]) and np.isnan(manifest.fov[1])
    assert manifest.captured_at.tolist() == ["2024-05-01T10:00:00Z", "", ""]
    assert manifest.counts() == {"train": 1, "val": 1, "test": 1}
    val = manifest.split("val")
    assert len(val) == 1 and val.image_id[0] == "0002"
    with pytest.raises(ValueError, match="unknown split 'dev'"):
        manifest.split("dev")


def test_every_kind_of_bad_row_is_reported_with_row_and_reason(tmp_path, caplog):
    _images(tmp_path, ["a.jpg", "b.jpg"])
    rows = [
        "a,img/a.jpg,47.0,8.0,,,,train",  # 1 good
        "b,img/missing.jpg,47.0,8.0,,,,train",  # 2 missing file
        "c,img/a.jpg,NaN,8.0,,,,train",  # 3 NaN latitude
        "d,img/a.jpg,91.0,8.0,,,,train",  # 4 latitude out of range
        "e,img/a.jpg,47.0,181,,,,train",  # 5 longitude out of range
        "a,img/b.jpg,47.0,8.0,,,,val",  # 6 duplicate id
        "f,img/b.jpg,47.0,8.0,,,,holdout",  # 7 unknown split
        "g,img/b.jpg,north,8.0,,,,test",  # 8 latitude not a number
        "h,img/b.jpg,47.0,,,,,test",  # 9 longitude missing
        "i,img/b.jpg,47.0,8.0,,-5,,test",  # 10 bad fov
        "j,img/b.jpg,47.0,8.0,,,,test",  # 11 good
    ]
    path = _write_csv(tmp_path, rows)
    with caplog.at_level(logging.WARNING):
        manifest = GroundManifest.read(path)
    assert manifest.image_id.tolist() == ["a", "j"]
    reasons = {bad.row: bad.reason for bad in manifest.bad_rows}
    assert sorted(reasons) == list(range(2, 11))
    assert "file not found" in reasons[2] and "missing.jpg" in reasons[2]
    assert reasons[3] == "lat is NaN"
    assert "lat 91.0 outside" in reasons[4]
    assert "lon 181.0 outside" in reasons[5]
    assert "duplicate image_id 'a' (first at row 1)" in reasons[6]
    assert "unknown split 'holdout'" in reasons[7]
    assert "lat is not a number: 'north'" in reasons[8]
    assert reasons[9] == "lon is missing"
    assert "fov -5.0" in reasons[10]
    assert "skipped 9 of 11 rows" in caplog.text

    with pytest.raises(ValueError, match="9 of 11 rows are bad") as info:
        GroundManifest.read(path, strict=True)
    message = str(info.value)
    assert "row 2 (image_id 'b')" in message and "row 10 (image_id 'i')" in message


def test_missing_required_column_is_named(tmp_path):
    path = _write_csv(tmp_path, ["a,img/a.jpg,47,train"], header="image_id,path,lat,split")
    with pytest.raises(ValueError, match="lacks required column"):
        GroundManifest.read(path)
    with pytest.raises(ValueError, match=r"column\(s\) lon"):
        GroundManifest.read(path)


def test_file_check_can_be_switched_off(tmp_path):
    path = _write_csv(tmp_path, ["a,img/nope.jpg,47,8,,,,train"])
    assert len(GroundManifest.read(path)) == 0
    assert len(GroundManifest.read(path, check_files=False)) == 1


def test_parquet_round_trip_keeps_paths_relative(tmp_path):
    _images(tmp_path, ["a.jpg", "b.jpg"])
    manifest = GroundManifest.from_columns(
        tmp_path,
        image_id=["x", "y"],
        path=["img/a.jpg", "img/b.jpg"],
        lat=[10.0, 20.0],
        lon=[30.0, 40.0],
        heading=[15.0, np.nan],
        split=["train", "test"],
    )
    out = manifest.write(tmp_path / "ground" / "manifest.parquet")
    table = pq.read_table(out)
    assert table.column("path").to_pylist() == ["../img/a.jpg", "../img/b.jpg"]
    assert table.column("heading").to_pylist() == [15.0, None]
    again = GroundManifest.read(out, strict=True)
    assert again.path.tolist() == manifest.path.tolist()
    np.testing.assert_array_equal(again.lon, manifest.lon)
    assert again.split_name.tolist() == ["train", "test"]


def test_parquet_with_numeric_ids_and_typed_columns(tmp_path):
    _images(tmp_path, ["a.jpg"])
    table = pa.table(
        {
            "image_id": pa.array([7, 7], pa.int64()),
            "path": ["img/a.jpg", "img/a.jpg"],
            "lat": pa.array([1.0, None]),
            "lon": pa.array([2.0, 3.0]),
            "split": ["train", "train"],
        }
    )
    pq.write_table(table, tmp_path / "m.parquet")
    manifest = GroundManifest.read(tmp_path / "m.parquet")
    assert manifest.image_id.tolist() == ["7"]
    assert "lat is missing" in manifest.bad_rows[0].reason
    assert "duplicate image_id '7'" in manifest.bad_rows[0].reason


def test_unreadable_inputs(tmp_path):
    with pytest.raises(FileNotFoundError):
        GroundManifest.read(tmp_path / "none.parquet")
    (tmp_path / "m.json").write_text("{}")
    with pytest.raises(ValueError, match=r"\.parquet or \.csv"):
        GroundManifest.read(tmp_path / "m.json")

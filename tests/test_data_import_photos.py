"""Photo folders and image listings as users (and attackers) have them (issue 22, items
7, 11, 12): HEIC photos, FIFOs named like photos, symbolically linked sub-folders, EXIF
GPS positions that are not positions."""

import os
import re
import threading

import pytest
from PIL import Image

from fixtures_import import write_image
from geocells.data.dataset import Dataset
from geocells.data.images import ImageLoadError, check_image, load_image
from geocells.data.importers import get_importer
from geocells.locate.formats import find_images


def _gps(lat=(45, 30, 0), lat_ref="N", lon=(5, 15, 0), lon_ref="E") -> Image.Exif:
    exif = Image.Exif()
    exif[0x8825] = {1: lat_ref, 2: tuple(map(float, lat)), 3: lon_ref, 4: tuple(map(float, lon))}
    return exif


def _within(seconds: float, function, *args):
    """``function(*args)``, failing the test instead of hanging past ``seconds``."""
    result: dict = {}

    def call():
        try:
            result["value"] = function(*args)
        except BaseException as err:  # handed to the test thread below
            result["error"] = err

    worker = threading.Thread(target=call, daemon=True)
    worker.start()
    worker.join(seconds)
    assert not worker.is_alive(), f"{function.__name__} hung for {seconds} s"
    if "error" in result:
        raise result["error"]
    return result["value"]


def test_heic_photos_are_read_with_their_exif(tmp_path):
    import pillow_heif  # writes the file without registering PIL's opener: geocells must

    photo = tmp_path / "photos" / "iphone.heic"
    photo.parent.mkdir()
    image = pillow_heif.from_pillow(Image.new("RGB", (40, 30), (10, 200, 10)))
    image.save(photo, exif=_gps().tobytes())
    rows = get_importer("photos")(tmp_path / "photos")
    assert rows.columns["image_id"].tolist() == ["iphone.heic"] and not rows.skipped
    assert rows.columns["lat"].tolist() == pytest.approx([45.5])
    assert rows.columns["lon"].tolist() == pytest.approx([5.25])
    assert check_image(photo) == (40, 30)
    assert load_image(photo).getpixel((5, 5))[1] > 150


@pytest.mark.parametrize(
    ("exif", "reason"),
    [
        (_gps(lat=(45, 75, 0)), "GPSLatitude .* minutes and seconds must be below 60"),
        (_gps(lon=(5, 15, 60)), "GPSLongitude .* minutes and seconds must be below 60"),
        (_gps(lat_ref="X"), "GPSLatitudeRef 'X' is none of N/S"),
        (_gps(lon_ref="N"), "GPSLongitudeRef 'N' is none of E/W"),
    ],
    ids=["minutes-75", "seconds-60", "lat-ref-X", "lon-ref-N"],
)
def test_exif_positions_that_are_no_positions_are_reported(tmp_path, exif, reason):
    write_image(tmp_path / "photos" / "good.jpg", exif=_gps(lat_ref="S", lon_ref="W"))
    write_image(tmp_path / "photos" / "bad.jpg", exif=exif)
    rows = get_importer("photos")(tmp_path / "photos")
    assert rows.columns["lat"].tolist() == pytest.approx([-45.5])
    assert rows.columns["lon"].tolist() == pytest.approx([-5.25])
    [(item, why)] = rows.skipped
    assert item.endswith("bad.jpg")
    assert re.search(reason, why), why


def test_a_fifo_named_like_a_photo_is_skipped_with_its_reason(tmp_path):
    photos = tmp_path / "photos"
    write_image(photos / "a.jpg", exif=_gps())
    os.mkfifo(photos / "x.jpg")
    rows = _within(30, get_importer("photos"), photos)
    assert rows.columns["image_id"].tolist() == ["a.jpg"]
    [(item, reason)] = rows.skipped
    assert item == str(photos / "x.jpg") and "named pipe (FIFO), not a regular file" in reason
    for read in (load_image, check_image):
        with pytest.raises(ImageLoadError, match="named pipe"):
            _within(30, read, photos / "x.jpg")


def test_locate_lists_a_fifo_as_a_failure_given_or_in_a_folder(tmp_path):
    write_image(tmp_path / "in" / "a.jpg")
    os.mkfifo(tmp_path / "in" / "x.jpg")
    os.mkfifo(tmp_path / "y.png")
    paths, failures = find_images([tmp_path / "in", tmp_path / "y.png"])
    assert paths == [tmp_path / "in" / "a.jpg"]
    assert [item for item, _ in failures] == [
        str(tmp_path / "in" / "x.jpg"),
        str(tmp_path / "y.png"),
    ]
    assert all("named pipe (FIFO), not a regular file" in reason for _, reason in failures)


def test_a_symlinked_sub_folder_is_reported_not_silently_skipped(tmp_path):
    photos, elsewhere = tmp_path / "photos", tmp_path / "elsewhere"
    write_image(photos / "a.jpg", exif=_gps())
    write_image(elsewhere / "b.jpg", exif=_gps())
    os.symlink(elsewhere, photos / "trip")
    out = tmp_path / "ds"
    from geocells.cli import main

    assert main(["import", "photos", str(photos), "--out", str(out)]) == 0
    assert Dataset.open(out).manifest.image_id.tolist() == ["a.jpg"]
    report = (out / "ground" / "import_report.csv").read_text()
    assert str(photos / "trip") in report and "symbolic link to a folder" in report
    assert str(elsewhere) in report


def test_a_fifo_in_a_csv_or_manifest_is_a_bad_row_saying_what_it_is(tmp_path):
    images = tmp_path / "images"
    write_image(images / "a.jpg")
    os.mkfifo(images / "x.jpg")
    (tmp_path / "p.csv").write_text("file,lat,lon\na.jpg,45,5\nx.jpg,45.1,5.1\n")
    rows = get_importer("csv")(tmp_path / "p.csv", images=images)
    from geocells.data.importers import ImportOptions, finish_import

    result = _within(60, finish_import, tmp_path / "ds", rows, ImportOptions())
    assert result.counts["train"] + result.counts["val"] + result.counts["test"] == 1
    [(item, reason)] = result.skipped
    assert item == "x.jpg" and "is a named pipe (FIFO), not a regular file" in reason
    manifest = tmp_path / "ds" / "ground" / "manifest.csv"
    manifest.write_text("image_id,path,lat,lon,split\nx,../../images/x.jpg,45,5,train\n")
    (tmp_path / "ds" / "ground" / "manifest.parquet").unlink()
    bad = _within(60, lambda: Dataset.open(tmp_path / "ds").manifest.bad_rows)
    assert "named pipe (FIFO)" in bad[0].reason

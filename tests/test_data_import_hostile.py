"""An attacker's dataset cannot lead an import out of the folders the user gave (issue 22,
item 9): zip members and keys with ``..``, absolute paths and symbolic links are bad rows,
named in the report, and ``image_roots.txt`` names only the given folders."""

import os
import zipfile

from fixtures_import import image_bytes, write_image
from geocells.cli import main
from geocells.data.dataset import IMAGE_ROOTS_FILE, Dataset, read_image_roots

OSV_HEADER = "id,latitude,longitude,captured_at\n"


def _report(out) -> str:
    return (out / "ground" / "import_report.csv").read_text()


def _import(*argv) -> None:
    assert main(["import", *map(str, argv)]) == 0


def test_osv5m_members_with_dot_dot_and_links_out_are_bad_rows(tmp_path):
    secret = write_image(tmp_path / "outside" / "secret.png", kind="PNG")
    root = tmp_path / "osv5m"
    ids = ["1", "1100", "1101", "1102"]
    (root / "images" / "train").mkdir(parents=True)
    (root / "train.csv").write_text(
        OSV_HEADER + "".join(f"{i},45.{k},5.{k},1600000000000\n" for k, i in enumerate(ids))
    )
    write_image(root / "images" / "1101.jpg")  # what "../../1101.jpg" would resolve to
    climb = "/".join([".."] * (len(secret.parents) + 2))
    with zipfile.ZipFile(root / "images" / "train" / "00.zip", "w") as archive:
        archive.writestr("00/1.jpg", image_bytes())
        archive.writestr(f"00/{climb}{secret.with_name('1100.png')}", image_bytes(kind="PNG"))
        archive.writestr("../../1101.jpg", image_bytes())
    write_image(tmp_path / "outside" / "1100.png", kind="PNG")
    os.makedirs(root / "images" / "train" / "01")
    os.symlink(secret, root / "images" / "train" / "01" / "1102.png")
    os.symlink(secret.parent, root / "images" / "train" / "02")  # a folder: not followed
    out = tmp_path / "ds"
    _import("osv5m", root, "--out", out, "--val-fraction", "0")
    manifest = Dataset.open(out, strict=True).manifest
    assert manifest.image_id.tolist() == ["1"]
    report = _report(out)
    assert "1100.png" in report and "zip member name has a '..' part" in report
    assert "../../1101.jpg" in report
    assert "1102" in report and f"symbolic link to {secret}" in report
    assert f"{root / 'images' / 'train' / '02'},symbolic link to a folder" in report
    assert read_image_roots(out) == [root]


def test_an_msls_key_leading_out_is_a_bad_row_and_roots_stay_as_given(tmp_path):
    root = tmp_path / "msls"
    folder = root / "train_val" / "london" / "query"
    write_image(folder / "images" / "a.jpg")
    write_image(tmp_path / "outside.jpg")
    climb = "../" * 5  # from msls/train_val/london/query/images/ to tmp_path
    rows = ["0,a,-0.1,51.5,0,1500000000000,False", f"1,{climb}outside,-0.1,51.5,0,0,False"]
    (folder / "raw.csv").write_text(",key,lon,lat,ca,captured_at,pano\n" + "\n".join(rows))
    out = tmp_path / "ds"
    _import("msls", root, "--out", out)
    assert Dataset.open(out, strict=True).manifest.image_id.tolist() == ["london/a"]
    assert "leads outside the folders given" in _report(out)
    lines = (out / IMAGE_ROOTS_FILE).read_text().splitlines()[1:]
    assert lines == [os.path.relpath(root, out / "ground")]


def test_a_csv_row_with_an_absolute_path_elsewhere_is_a_bad_row(tmp_path):
    images = tmp_path / "images"
    write_image(images / "a.jpg")
    elsewhere = write_image(tmp_path / "private" / "b.jpg")
    table = tmp_path / "places.csv"
    table.write_text(f"path,lat,lon\na.jpg,45,5\n{elsewhere},45.1,5.1\n")
    out = tmp_path / "ds"
    _import("csv", table, "--images", images, "--out", out)
    assert Dataset.open(out, strict=True).manifest.image_id.tolist() == ["a.jpg"]
    assert f"path '{elsewhere}' leads outside the folders given ({images}" in _report(out)
    assert read_image_roots(out) == [images]


def test_escaping_rows_follows_links_of_files_and_folders(tmp_path):
    from geocells.data.importers.confine import escaping_rows

    root, outside = tmp_path / "root", tmp_path / "outside"
    write_image(root / "ok" / "a.jpg")
    write_image(outside / "b.jpg")
    os.symlink(outside, root / "linked")  # a folder leading out
    os.symlink(outside / "b.jpg", root / "ok" / "b.jpg")  # a file leading out
    os.symlink(root / "ok" / "a.jpg", root / "ok" / "c.jpg")  # a link that stays inside
    paths = [
        str(root / "ok" / "a.jpg"),
        str(root / "linked" / "b.jpg"),
        str(root / "ok" / "b.jpg"),
        str(root / "ok" / "c.jpg"),
        f"{root / 'ok' / 'x.zip'}!/..\\\\b.jpg",
        f"{root / 'ok' / 'x.zip'}!/C:/b.jpg",
        str(outside / "b.jpg"),
        "",
    ]
    bad = dict(escaping_rows(paths, [root], "the folders given"))
    assert sorted(bad) == [1, 2, 4, 5, 6]
    assert f"symbolic link to {outside / 'b.jpg'}, outside the folders given" in bad[1]
    assert "symbolic link to" in bad[2]
    assert "backslashes" in bad[4] and "absolute path" in bad[5]
    assert "leads outside the folders given" in bad[6]

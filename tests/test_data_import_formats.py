"""Formats users have (issue 22, item 7): MSLS test cities without coordinates and its
query/database roles; 16-bit orthophotos."""

from fixtures_import import write_image
from geocells.cli import main
from geocells.data.dataset import Dataset

MSLS_HEADER = ",key,lon,lat,ca,captured_at,pano\n"


def _msls_role(folder, keys, lat):
    rows = []
    for k, key in enumerate(keys):
        write_image(folder / "images" / f"{key}.jpg")
        rows.append(f"{k},{key},-0.1,{lat + k * 1e-4},0,1500000000000,False")
    (folder / "raw.csv").write_text(MSLS_HEADER + "\n".join(rows) + "\n")


def test_msls_reports_cities_without_raw_csv_and_keeps_query_and_database_apart(tmp_path):
    root = tmp_path / "msls"
    _msls_role(root / "train_val" / "london" / "query", ["q1", "q2"], 51.5)
    _msls_role(root / "train_val" / "london" / "database", ["d1"], 51.6)
    (root / "test" / "miami" / "query" / "images").mkdir(parents=True)  # no coordinates
    (root / "test" / "miami" / "database").mkdir(parents=True)
    out = tmp_path / "ds"
    assert main(["import", "msls", str(root), "--out", str(out)]) == 0
    manifest = Dataset.open(out, strict=True).manifest
    roles = dict(zip(manifest.image_id.tolist(), manifest.role.tolist()))
    assert roles == {"london/q1": "query", "london/q2": "query", "london/d1": "database"}
    report = (out / "ground" / "import_report.csv").read_text()
    for role in ("query", "database"):
        assert f"test/miami/{role},no {role}/raw.csv (MSLS's test cities come without" in report
    assert manifest.split("train").role.tolist().count("query") == 2  # kept through take()

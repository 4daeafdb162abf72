"""``geocells cells``: Parquet output, counting, region specs and bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from geocells import cli
from geocells.geo import Region, cell_to_latlng, cell_to_token, count_cells, region_cells

_BBOX = "bbox:50.0,5.0,50.2,5.3"


def test_cells_to_parquet_and_resume(tmp_path):
    out = tmp_path / "cells.parquet"
    assert cli.main(["cells", "--region", _BBOX, "--level", "13", "--out", str(out)]) == 0
    table = pq.read_table(out)
    assert table.column_names == ["cell", "token", "lat", "lon"]
    cells = table["cell"].to_numpy()
    expected = region_cells(Region.parse(_BBOX), 13)
    assert np.array_equal(cells, expected)
    assert table["token"].to_pylist() == cell_to_token(cells).tolist()
    lat, lon = cell_to_latlng(cells)
    assert np.array_equal(table["lat"].to_numpy(), lat)
    assert np.array_equal(table["lon"].to_numpy(), lon)
    # A second run skips the finished file unless --overwrite.
    out.write_bytes(b"sentinel")
    assert cli.main(["cells", "--region", _BBOX, "--level", "13", "--out", str(out)]) == 0
    assert out.read_bytes() == b"sentinel"
    args = ["cells", "--region", _BBOX, "--level", "12", "--out", str(out), "--overwrite"]
    assert cli.main(args) == 0
    assert pq.read_table(out).num_rows == count_cells(Region.parse(_BBOX), 12)


def test_cells_count_with_geojson_region(tmp_path, capsys):
    path = tmp_path / "area.geojson"
    Region.from_bbox(50.0, 5.0, 50.2, 5.3).to_geojson(path)
    assert cli.main(["cells", "--region", str(path), "--level", "14", "--count"]) == 0
    printed = capsys.readouterr().out
    expected = count_cells(Region.from_geojson(path), 14)
    assert f"{expected} level-14 cells" in printed
    assert "km²" in printed and " s" in printed


@pytest.mark.parametrize(
    ("region", "level", "message"),
    [
        ("bedenl", "31", "argument --level: S2 levels are 0..30, got 31"),
        ("atlantis", "10", "unknown region 'atlantis'"),
        ("bbox:1,2,3", "10", "expected bbox:south,west,north,east"),
        ("LINE", "10", "'LineString' is not a Polygon or MultiPolygon"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, region, level, message):
    if region == "LINE":
        region = str(tmp_path / "line.geojson")
        line = {"type": "LineString", "coordinates": [[0, 0], [1, 1]]}
        (tmp_path / "line.geojson").write_text(json.dumps(line))
    assert cli.main(["cells", "--region", region, "--level", level, "--count"]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_cells_needs_out_or_count(capsys):
    assert cli.main(["cells", "--region", "bedenl", "--level", "10"]) == 2
    err = capsys.readouterr().err.strip()
    assert "one of the arguments --out --count is required" in err and "\n" not in err


def test_cells_help(capsys):
    with pytest.raises(SystemExit):
        cli.main(["cells", "--help"])
    assert "--land-only" in capsys.readouterr().out


def test_cell_counts_say_what_they_count_and_match_the_readme(capsys):
    """`cells --count` prints the covering with sea cells, the README quotes land cells:
    both say which, and the README's numbers are what the command prints (issue 22, 6)."""
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    region = Region.preset("bedenl")
    for flag, count in (([], count_cells(region, 16)), (["--land-only"], None)):
        argv = ["cells", "--region", "bedenl", "--level", "16", "--count", *flag]
        assert cli.main(argv) == 0
        printed = capsys.readouterr().out
        if count is None:
            count = int(printed.split(": ")[1].split()[0])
            assert "level-16 land cells" in printed
            assert f"holds {count / 1e6:.1f} M land cells at level 16" in readme
            assert f"`geocells {' '.join(argv)}`" in readme.replace("\n", " ")
        else:
            assert f"{count} level-16 cells (land and sea; --land-only: land)" in printed
            assert f"without `--land-only` the count, {count / 1e6:.1f} M" in readme.replace(
                "\n", " "
            )

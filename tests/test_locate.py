"""Localizer API and ``geocells locate`` on a small hand-made database."""

import itertools
import json

import numpy as np
import pytest
from PIL import Image

from geocells.cli import main
from geocells.data import GroundManifest
from geocells.db.store import DATABASE_OUTPUT, Database, DatabaseError
from geocells.geo import cell_to_latlng, token_to_cell
from geocells.locate import Localizer, Prediction
from geocells.locate.formats import CSV_COLUMNS
from geocells.outputs import OutputFolder
from geocells.scoring.exact import exact_search


@pytest.fixture(scope="module")
def localizer(micro_db):
    return Localizer.load(micro_db, batch_size=4)


@pytest.fixture(scope="module")
def image_paths(micro_dataset):
    manifest = GroundManifest.read(micro_dataset / "ground" / "manifest.parquet")
    return [str(p) for p in manifest.path[:6]]


def test_locate_accepts_paths_pil_and_arrays(localizer, image_paths):
    from_paths = localizer.locate(image_paths, top_k=3)
    pil_images = [Image.open(p).convert("RGB") for p in image_paths]
    from_pil = localizer.locate(pil_images, top_k=3)
    from_arrays = localizer.locate([np.asarray(im) for im in pil_images], top_k=3)
    assert len(from_paths) == len(image_paths)
    for a, b, c in zip(from_paths, from_pil, from_arrays):
        assert [p.token for p in a] == [p.token for p in b] == [p.token for p in c]
    assert localizer.locate(image_paths[0], top_k=1)[0][0].token == from_paths[0][0].token
    stack = np.stack([np.asarray(im.resize((64, 48))) for im in pil_images])
    assert len(localizer.locate(stack, top_k=1)) == len(image_paths)


def test_predictions_are_the_exact_top_k(localizer, image_paths, micro_db):
    database = Database.open(micro_db)
    predictions = localizer.locate(image_paths, top_k=4)
    queries = localizer.embed(image_paths)
    kw = {"aerial": database.aerial, "proto": database.proto, "kappa": database.kappa}
    scores, rows = exact_search(queries, **kw, top_k=4)
    for ranked, row_scores, row_ids in zip(predictions, scores, rows):
        assert len(ranked) == 4 and all(isinstance(p, Prediction) for p in ranked)
        cells = token_to_cell(np.array([p.token for p in ranked]))
        np.testing.assert_array_equal(cells, database.cells[row_ids])
        np.testing.assert_allclose([p.score for p in ranked], row_scores, rtol=1e-4)
        lat, _lon = cell_to_latlng(cells)
        np.testing.assert_allclose([p.lat for p in ranked], lat)
        assert all(0 <= p.confidence <= 1 for p in ranked)


def test_calibration_is_stored(micro_db):
    meta = Database.open(micro_db).meta
    assert meta.kappa_calibrated and 0.05 <= meta.kappa <= 20
    assert (micro_db / "calibration.csv").read_text().startswith("kappa,recall_100m")
    assert (micro_db / "calibration.png").stat().st_size > 1000
    assert 0 <= meta.calibration.ece <= 1 and meta.calibration.queries == 16


def test_cli_reports_bad_files_and_goes_on(micro_db, micro_dataset, image_paths, tmp_path, capsys):
    folder = tmp_path / "photos"
    (folder / "nested").mkdir(parents=True)
    for i, path in enumerate(image_paths[:3]):
        (folder / "nested" / f"{i}.jpg").write_bytes(open(path, "rb").read())
    (folder / "broken.jpg").write_bytes(b"not a jpeg")
    (folder / "notes.txt").write_text("ignored: not an image suffix")
    out = tmp_path / "result.json"
    code = main(["locate", str(micro_db), str(folder), str(tmp_path / "missing.jpg"),
                 "--top-k", "2", "--out", str(out), "--no-progress"])  # fmt: skip
    assert code == 1
    result = json.loads(out.read_text())
    located = [r for r in result["results"] if r["error"] is None]
    assert sorted(r["image"].rsplit("/", 1)[1] for r in located) == ["0.jpg", "1.jpg", "2.jpg"]
    assert all(len(r["predictions"]) == 2 for r in located)
    failed = {r["image"].rsplit("/", 1)[1] for r in result["results"] if r["error"]}
    assert failed == {"broken.jpg", "missing.jpg"}
    assert (result["located"], result["failed"], result["top_k"]) == (3, 2, 2)
    assert [r["index"] for r in result["results"]] == list(range(5))
    assert "broken.jpg" in capsys.readouterr().err
    assert main(["locate", str(micro_db), image_paths[0], "--format", "csv", "--no-progress"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0] == ",".join(CSV_COLUMNS) and len(lines) == 6


def _ring_area(ring):
    return 0.5 * sum(x0 * y1 - x1 * y0 for (x0, y0), (x1, y1) in itertools.pairwise(ring))


def test_geojson_is_valid(micro_db, image_paths, tmp_path):
    out = tmp_path / "result.geojson"
    code = main(["locate", str(micro_db), *image_paths[:2], "--top-k", "3",
                 "--format", "geojson", "--out", str(out), "--no-progress"])  # fmt: skip
    assert code == 0
    collection = json.loads(out.read_text())
    assert collection["type"] == "FeatureCollection"
    kinds = [f["properties"]["kind"] for f in collection["features"]]
    assert kinds.count("prediction") == kinds.count("cell") == 6
    for feature in collection["features"]:
        assert feature["type"] == "Feature" and isinstance(feature["properties"], dict)
        geometry = feature["geometry"]
        if geometry["type"] == "Point":
            lon, lat = geometry["coordinates"]
            assert (lat, lon) == pytest.approx(
                (feature["properties"]["lat"], feature["properties"]["lon"])
            )
            continue
        assert geometry["type"] == "Polygon" and len(geometry["coordinates"]) == 1
        ring = geometry["coordinates"][0]
        assert len(ring) == 5 and ring[0] == ring[-1]  # closed linear ring
        assert all(-180 <= x <= 180 and -90 <= y <= 90 for x, y in ring)
        assert _ring_area(ring) > 0  # RFC 7946: exterior rings counterclockwise
        lon, lat = feature["properties"]["lon"], feature["properties"]["lat"]
        xs, ys = zip(*ring)
        assert min(xs) < lon < max(xs) and min(ys) < lat < max(ys)


def test_bad_arguments_raise_clear_errors(localizer, tmp_path):
    with pytest.raises(ValueError, match="top_k"):
        localizer.search(np.zeros((1, localizer.database.dim), np.float32), top_k=0)
    with pytest.raises(ValueError, match=r"image 0: expected uint8 HxWx3"):
        localizer.locate([np.zeros((8, 8), np.float32)], errors="raise")
    with pytest.raises(ValueError, match="errors must be one of"):
        localizer.locate([np.zeros((8, 8), np.float32)], errors="ignore")
    with pytest.raises(DatabaseError, match="not a geocells database"):
        Localizer.load(tmp_path)


def test_stored_compressed_index_is_used_and_agrees(micro_db, image_paths, tmp_path):
    import shutil

    from geocells.search.index_file import write_search_index

    db = shutil.copytree(micro_db, tmp_path / "db")
    assert write_search_index(db, "auto") is None  # small: exact search, no file
    path = write_search_index(db, "ivfpq")
    assert path == db / "index.faiss" and path.is_file()
    compressed = Localizer.load(db)
    assert compressed.searcher.backend == "ivfpq"
    exact = Localizer.load(db, backend="exact")
    assert exact.searcher.backend == "exact"
    # The shortlist (64) exceeds the database, so re-ranking makes the results exact.
    for a, b in zip(compressed.locate(image_paths, 3), exact.locate(image_paths, 3)):
        assert [p.token for p in a] == [p.token for p in b]
    stale = OutputFolder(db, DATABASE_OUTPUT)
    Database.open(db).update_meta(stale, kappa=exact.database.kappa * 2)  # stale index: refused
    with pytest.raises(ValueError, match="kappa"):
        Localizer.load(db)


def test_confidence_is_nan_only_for_queries_with_fewer_than_two_hits(localizer):
    """A query with a single hit gets NaN confidence; the rest of its batch keeps theirs."""
    scores = np.array([[0.9, 0.5], [0.8, -np.inf]], dtype=np.float32)
    rows = np.array([[0, 1], [2, -1]])
    first, second = localizer.predictions(scores, rows, top_k=2)
    assert len(first) == 2 and all(0 <= p.confidence <= 1 for p in first)
    assert len(second) == 1 and np.isnan(second[0].confidence)

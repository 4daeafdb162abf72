"""``geocells export milvus`` then ``locate`` and ``serve`` on the remote database (milvus-lite)."""

from __future__ import annotations

import io
import json
import shutil

import httpx
import numpy as np
import pytest

pytest.importorskip("pymilvus")
pytest.importorskip("milvus_lite")

from fixtures_serve import serve_app
from geocells.cli import main
from geocells.data import GroundManifest
from geocells.locate import Localizer


@pytest.fixture(scope="module")
def remote_db(micro_db, tmp_path_factory):
    """micro_db exported through the CLI to a milvus-lite file, with its remote folder."""
    root = tmp_path_factory.mktemp("remote")
    args = ["export", "milvus", str(micro_db), "--uri", str(root / "cells.db"),
            "--collection", "micro", "--out", str(root / "remote"), "--partition-level", "14",
            "--no-progress"]  # fmt: skip
    assert main(args) == 0
    return root / "remote"


@pytest.fixture(scope="module")
def images(micro_dataset):
    manifest = GroundManifest.read(micro_dataset / "ground" / "manifest.parquet")
    return [str(path) for path in manifest.path[:6]]


def _values(node, key: str) -> list:
    """Every ``key`` value in a JSON document, in document order (schema-independent)."""
    if isinstance(node, dict):
        found = [node[key]] if key in node else []
        return found + [v for child in node.values() for v in _values(child, key)]
    if isinstance(node, list):
        return [v for child in node for v in _values(child, key)]
    return []


def test_locate_answers_from_the_collection_as_from_the_local_database(
    remote_db, micro_db, images, capsys
):
    capsys.readouterr()
    assert main(["locate", str(micro_db), *images, "--top-k", "3", "--no-progress"]) == 0
    local = json.loads(capsys.readouterr().out)
    assert main(["locate", str(remote_db), *images, "--top-k", "3", "--no-progress"]) == 0
    remote = json.loads(capsys.readouterr().out)
    assert _values(remote, "token") == _values(local, "token")
    assert len(_values(local, "token")) == 3 * len(images)
    for a, b in zip(_values(remote, "score"), _values(local, "score"), strict=True):
        assert abs(a - b) < 1e-4
    assert _values(remote, "confidence") == pytest.approx(_values(local, "confidence"), abs=1e-4)
    assert (remote_db / "meta.json").is_file() and not (remote_db / "aerial.npy").exists()
    for name in ("confidence.npy", "region.geojson"):  # what the Localizer and serve read
        assert (remote_db / name).is_file() == (micro_db / name).is_file()


def test_a_missing_collection_is_one_line_and_exit_2(remote_db, images, tmp_path, capsys):
    broken = tmp_path / "broken"
    shutil.copytree(remote_db, broken)
    meta = json.loads((broken / "meta.json").read_text())
    meta["milvus"]["collection"] = "gone"
    (broken / "meta.json").write_text(json.dumps(meta))
    capsys.readouterr()
    assert main(["locate", str(broken), images[0], "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "collection 'gone'" in err[0] and "not found" in err[0], err


def test_export_cli_refuses_a_bad_index_type_in_one_line(micro_db, tmp_path, capsys):
    args = ["export", "milvus", str(micro_db), "--uri", str(tmp_path / "x.db"),
            "--collection", "c", "--index-type", "DISKANN"]  # fmt: skip
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "milvus-lite cannot load a DISKANN index" in err[0], err


def test_serve_answers_from_the_collection(remote_db, micro_db, images):
    from PIL import Image

    from geocells.serve import ServeConfig

    data = [open(path, "rb").read() for path in images[:3]]
    files = [("files", (f"{i}.jpg", d, "image/jpeg")) for i, d in enumerate(data)]
    with serve_app(ServeConfig(db=str(remote_db))) as url:
        response = httpx.post(f"{url}/locate", params={"top_k": 2}, files=files)
        assert response.status_code == 200, response.text
        tokens = _values(response.json(), "token")
        assert httpx.get(f"{url}/cells/{tokens[0]}").status_code == 200
    expected = Localizer.load(micro_db, backend="exact").locate(
        [Image.open(io.BytesIO(d)) for d in data], 2
    )
    assert tokens == [prediction.token for predictions in expected for prediction in predictions]


@pytest.mark.slow
def test_the_tiny_database_exported_agrees_with_its_exact_search(tiny_db, tiny_dataset, tmp_path):
    from geocells.search import export

    cfg = export.MilvusExportConfig(
        uri=str(tmp_path / "tiny.db"), collection="tiny", partition_level=12, progress=False
    )
    remote = export.run(cfg, tiny_db, tmp_path / "remote")
    manifest = GroundManifest.read(tiny_dataset / "ground" / "manifest.parquet")
    paths = [str(path) for path in manifest.split("test").path[:64]]
    local = Localizer.load(tiny_db, backend="exact")
    queries = local.embed(paths)
    _, exact_rows = local.searcher.search(queries, 5)
    _, rows = Localizer.load(remote).searcher.search(queries, 5)
    assert len(paths) >= 10 and local.searcher.num_cells > 100
    assert np.mean(rows[:, 0] == exact_rows[:, 0]) >= 0.99

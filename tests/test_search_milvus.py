"""The Milvus backend on milvus-lite: export, agreement with the exact search, resume, errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pymilvus")
pytest.importorskip("milvus_lite")

import itertools

from geocells.db.store import DATABASE_OUTPUT, Database, DatabaseError, new_arrays
from geocells.geo import cell_parent, latlng_to_cell
from geocells.io import DatabaseMeta, sha256_file
from geocells.outputs import OutputFolder
from geocells.scoring.exact import exact_search, fused_codes
from geocells.search import export
from geocells.search.index_file import open_searcher
from geocells.search.milvus import MilvusError, MilvusSearcher, partitions_covering

DIM, KAPPA = 32, 0.7


def write_database(out: Path, count: int = 3000, dim: int = DIM, seed: int = 0) -> Path:
    """A real database folder of ``count`` level-16 cells with random unit codes."""
    rng = np.random.default_rng(seed)
    lat, lon = rng.uniform(48.0, 48.4, 4 * count), rng.uniform(2.0, 2.5, 4 * count)
    cells = np.unique(latlng_to_cell(lat, lon, 16))[:count]
    assert len(cells) == count
    out.mkdir(parents=True)
    with new_arrays(OutputFolder(out, DATABASE_OUTPUT), count, dim) as arrays:
        arrays["cells"][:] = cells
        for name in ("aerial", "proto"):
            codes = rng.standard_normal((count, dim)).astype(np.float32)
            arrays[name][:] = codes / np.linalg.norm(codes, axis=1, keepdims=True)
    model = out / "model" / "last.safetensors"
    model.parent.mkdir()
    model.write_bytes(b"a stand-in model file")
    DatabaseMeta(
        count=count, dim=dim, cell_level=16, proto_level=15, tile_size_m=154.0, tile_px=64,
        model_sha256=sha256_file(model), kappa=KAPPA, kappa_calibrated=True,
    ).save(out)  # fmt: skip
    return out


def noisy_queries(database: Database, count: int = 400, noise: float = 1.0, seed: int = 1):
    """Queries near random cells' fused codes (cosine about 0.5 to them)."""
    rng = np.random.default_rng(seed)
    rows = rng.choice(len(database), count, replace=False)
    codes = fused_codes(database.aerial, database.proto, database.kappa, 0, len(database))[rows]
    codes /= np.linalg.norm(codes, axis=1, keepdims=True)
    queries = codes + noise * rng.standard_normal(codes.shape) / np.sqrt(DIM)
    return (queries / np.linalg.norm(queries, axis=1, keepdims=True)).astype(np.float32)


def config(tmp_path: Path, **changes) -> export.MilvusExportConfig:
    settings = dict(
        uri=str(tmp_path / "cells.db"), collection="cells", partitions=8, partition_level=10,
        batch_size=512, progress=False,
    )  # fmt: skip
    return export.MilvusExportConfig(**{**settings, **changes})


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """(local database, remote database) of a 3,000-cell database exported to milvus-lite."""
    root = tmp_path_factory.mktemp("milvus")
    local = write_database(root / "db")
    remote = export.run(config(root), local, root / "remote")
    return Database.open(local), Database.open(remote)


def test_top1_agrees_with_the_exact_search(exported):
    local, remote = exported
    searcher = open_searcher(remote)
    assert isinstance(searcher, MilvusSearcher) and searcher.kappa == KAPPA
    queries = noisy_queries(local)
    scores, rows = searcher.search(queries, top_k=5)
    exact_scores, exact_rows = exact_search(
        queries, aerial=local.aerial, proto=local.proto, kappa=KAPPA, top_k=5
    )
    agreement = np.mean(rows[:, 0] == exact_rows[:, 0])
    assert agreement >= 0.99, agreement
    same = rows[:, 0] == exact_rows[:, 0]
    # The collection holds float32 codes of the float16 rows: scores match to rounding.
    np.testing.assert_allclose(scores[same, 0], exact_scores[same, 0], atol=1e-4)
    assert np.all(np.diff(scores, axis=1) <= 0)


def test_remote_database_holds_no_codes_and_refuses_another_kappa(exported):
    local, remote = exported
    assert remote.remote and not (remote.path / "aerial.npy").exists()
    np.testing.assert_array_equal(remote.cells, local.cells)
    with pytest.raises(DatabaseError, match="remote database holds no aerial codes"):
        remote.aerial  # noqa: B018
    searcher = open_searcher(remote)
    with pytest.raises(ValueError, match="re-export"):
        searcher.kappa = 1.5
    with pytest.raises(DatabaseError, match="Milvus collection, not 'exact'"):
        open_searcher(remote, "exact")
    meta = remote.meta.milvus
    assert meta["index"] == {"type": "HNSW", "params": {"M": 32, "efConstruction": 128},
                             "metric": "IP"}  # fmt: skip
    assert meta["search_params"] == {"ef": 128} and meta["kappa"] == KAPPA


def test_partitions_are_s2_parent_ranges_and_restrict_a_search(exported):
    local, remote = exported
    parts = remote.meta.milvus["partitions"]
    assert 4 <= len(parts) <= 8
    bounds = [part["rows"] for part in parts]
    assert bounds[0][0] == 0 and bounds[-1][1] == len(local)
    assert all(a[1] == b[0] for a, b in itertools.pairwise(bounds))
    parents = [set(cell_parent(local.cells[a:b], 10).tolist()) for a, b in bounds]
    for first, second in itertools.pairwise(parents):
        assert not first & second  # no parent cell is split between two partitions
    start, stop = parts[2]["rows"]
    searcher = open_searcher(remote)
    queries = noisy_queries(local, 50)
    chosen = partitions_covering(parts, cell_parent(local.cells[start : start + 1], 10))
    assert chosen == [parts[2]["name"]]
    _, rows = searcher.search(queries, top_k=3, partitions=chosen)
    assert np.all((rows >= start) & (rows < stop))


_KILL_AFTER_TWO_BATCHES = """
import os, signal, sys
from pathlib import Path
import pymilvus
from geocells.search import export
calls = []
upsert = pymilvus.MilvusClient.upsert
def dying_upsert(self, *args, **kwargs):
    calls.append(1)
    if len(calls) == 3:
        os.kill(os.getpid(), signal.SIGKILL)
    return upsert(self, *args, **kwargs)
pymilvus.MilvusClient.upsert = dying_upsert
cfg = export.MilvusExportConfig(uri=sys.argv[2], collection="cells", partitions=8,
    partition_level=10, batch_size=256, progress=False)
export.run(cfg, Path(sys.argv[1]))
"""


def test_a_killed_export_resumes(tmp_path, monkeypatch):
    local = write_database(tmp_path / "db", count=2000)
    cfg = config(tmp_path, batch_size=256)
    killed = subprocess.run(
        [sys.executable, "-c", _KILL_AFTER_TWO_BATCHES, str(local), cfg.uri],
        capture_output=True, text=True, env={**os.environ}, timeout=300,
    )  # fmt: skip
    assert killed.returncode == -9, killed.stderr[-2000:]
    import pymilvus

    upserts = []
    upsert = pymilvus.MilvusClient.upsert

    def counting_upsert(self, name, entities, **kwargs):
        upserts.append(len(entities))
        return upsert(self, name, entities, **kwargs)

    monkeypatch.setattr(pymilvus.MilvusClient, "upsert", counting_upsert)
    remote = export.run(cfg, local, tmp_path / "remote")
    # The batches the killed run finished (the first two) are not written again.
    cells = np.load(local / "cells.npy")
    batches = [
        min(start + 256, stop) - start
        for start_part, stop in export.partition_ranges(cells, 10, 8)
        for start in range(start_part, stop, 256)
    ]
    assert sum(upserts) == 2000 - batches[0] - batches[1]
    searcher = open_searcher(Database.open(remote))
    database = Database.open(local)
    queries = noisy_queries(database, 200)
    _, rows = searcher.search(queries, top_k=1)
    _, exact_rows = exact_search(
        queries, aerial=database.aerial, proto=database.proto, kappa=KAPPA, top_k=1
    )
    assert np.mean(rows[:, 0] == exact_rows[:, 0]) >= 0.99
    upserts.clear()
    export.run(cfg, local)  # finished: nothing is written again
    assert upserts == []


def test_another_export_into_the_same_collection_is_refused(exported, tmp_path):
    _local, remote = exported
    other = write_database(tmp_path / "other", count=500, dim=16, seed=3)
    cfg = config(Path(remote.meta.milvus["uri"]).parent)
    with pytest.raises(MilvusError, match=r"holds another export .*dim.*--overwrite"):
        export.run(cfg, other)


def _remote_copy(remote: Database, tmp_path: Path, **milvus) -> Path:
    """A copy of the remote database folder whose meta.milvus has ``milvus`` changed."""
    import shutil

    out = tmp_path / "remote-copy"
    shutil.copytree(remote.path, out)
    meta = json.loads((out / "meta.json").read_text())
    meta["milvus"].update(milvus)
    meta.update({k: v for k, v in milvus.items() if k in ("dim",)})
    (out / "meta.json").write_text(json.dumps(meta))
    return out


def test_missing_collection_is_one_clear_error(exported, tmp_path):
    _, remote = exported
    copy = _remote_copy(remote, tmp_path, collection="nowhere")
    with pytest.raises(MilvusError, match=r"collection 'nowhere' at .* not found; export it"):
        open_searcher(Database.open(copy))


def test_wrong_dimension_is_one_clear_error(exported, tmp_path):
    _, remote = exported
    copy = _remote_copy(remote, tmp_path, dim=16)
    with pytest.raises(MilvusError, match="holds 32-d codes, the database 16-d"):
        open_searcher(Database.open(copy))
    with pytest.raises(ValueError, match=r"queries must be \[Q, 32\]"):
        open_searcher(remote).search(np.ones((2, 16), np.float32))


def test_unreachable_server_is_one_clear_error(exported, tmp_path):
    _, remote = exported
    copy = _remote_copy(remote, tmp_path, uri="http://127.0.0.1:9")
    started = time.monotonic()
    with pytest.raises(MilvusError, match=r"cannot reach Milvus at http://127.0.0.1:9"):
        open_searcher(Database.open(copy))
    assert time.monotonic() - started < 30
    with pytest.raises(MilvusError, match="cannot reach Milvus"):
        export.run(config(tmp_path, uri="http://127.0.0.1:9"), exported[0].path)


def test_bad_export_settings_name_the_setting(tmp_path):
    with pytest.raises(ValueError, match="milvus-lite cannot load a IVF_PQ index"):
        config(tmp_path, index_type="IVF_PQ").resolved()
    with pytest.raises(ValueError, match="collection name 'a-b'"):
        config(tmp_path, collection="a-b").resolved()
    with pytest.raises(ValueError, match="float32 vectors only"):
        config(tmp_path, vector_dtype="float16").resolved()
    assert config(tmp_path, uri="http://h:19530").resolved().index_type == "DISKANN"


def test_benchmark_script_runs_at_a_small_size(tmp_path):
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "milvus_bench.py"
    spec = importlib.util.spec_from_file_location("milvus_bench", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    args = ["--cells", "3000", "--queries", "60", "--single", "5", "--dim", "32",
            "--out", str(tmp_path)]  # fmt: skip
    assert bench.main(args) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    for name in ("faiss_ivfpq", "milvus_lite"):
        assert results[name]["top1_agreement"] >= 0.9, results[name]
        assert results[name]["ms_batch1_mean"] > 0
    assert results["milvus_lite"]["index"]["type"] == "IVF_SQ8"


def test_out_must_not_be_the_database_or_another_one(exported, tmp_path):
    local, remote = exported
    cfg = config(Path(remote.meta.milvus["uri"]).parent)
    with pytest.raises(ValueError, match="is the database being exported"):
        export.run(cfg, local.path, local.path, overwrite=True)
    other = write_database(tmp_path / "other", count=50)
    with pytest.raises(ValueError, match="holds another database; pass --overwrite"):
        export.run(cfg, local.path, other)
    assert Database.open(other).remote is False
    foreign = tmp_path / "notes"
    foreign.mkdir()
    (foreign / "todo.txt").write_text("mine")
    with pytest.raises(ValueError, match=r"todo.txt, which geocells did not write"):
        export.run(cfg, local.path, foreign, overwrite=True)  # --overwrite never deletes it
    assert sorted(p.name for p in foreign.iterdir()) == ["todo.txt"]

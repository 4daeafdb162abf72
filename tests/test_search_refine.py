"""The sq8 refine file's page-cache handling: warm at load, per-query prefetch, damage."""

import logging
import mmap
import shutil

import numpy as np
import pytest
from PIL import Image

from geocells.search import pagecache
from geocells.search.ivfpq import CellSearcher
from geocells.search.refine import refine_path
from test_search_ivfpq import perturbed_queries, structured_codes


@pytest.fixture(scope="module")
def saved_index(tmp_path_factory):
    """A saved HNSW + sq8 index over 12,000 codes of D = 64, and queries near them."""
    import faiss

    previous = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    aerial, proto, rng = structured_codes(12_000)
    searcher = CellSearcher.build(aerial, proto, 1.0, backend="ivfpq", nlist=256, coarse="hnsw")
    path = searcher.save(tmp_path_factory.mktemp("refine") / "index.faiss")
    queries, _ = perturbed_queries(aerial, proto, rng, 200)
    yield path, aerial, proto, queries
    faiss.omp_set_num_threads(previous)


def test_every_warm_mode_gives_the_same_results(saved_index, monkeypatch, caplog):
    path, aerial, proto, queries = saved_index
    calls = []
    real_prefetch = pagecache.prefetch_rows

    def counting_prefetch(array, rows):
        calls.append(len(rows))
        return real_prefetch(array, rows)

    monkeypatch.setattr(pagecache, "prefetch_rows", counting_prefetch)
    results = {}
    for mode in ("off", "load", "query", "auto"):
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="geocells.search.refine"):
            loaded = CellSearcher.load(path, aerial, proto, 1.0, warm=mode)
        assert loaded.refiner.prefetch == (mode == "query")
        read_logged = "into the page cache" in caplog.text
        assert read_logged == (mode in ("load", "auto")), (mode, caplog.text)  # auto: it fits
        before = len(calls)
        single = [loaded.search(query[None], 5) for query in queries[:20]]
        batch = loaded.search(queries, 5, batch_size=64)
        # Prefetching: one call per search (20 single + 4 batches), none otherwise.
        assert len(calls) - before == (24 if mode == "query" else 0)
        results[mode] = (np.concatenate([s for s, _ in single]), batch)
        np.testing.assert_array_equal(np.concatenate([r for _, r in single]), batch[1][:20])
    for mode in ("load", "query", "auto"):
        np.testing.assert_array_equal(results[mode][0], results["off"][0])
        for got, want in zip(results[mode][1], results["off"][1], strict=True):
            np.testing.assert_array_equal(got, want)


def test_auto_prefetches_per_query_when_the_file_does_not_fit(saved_index, monkeypatch, caplog):
    path, aerial, proto, _ = saved_index
    size = refine_path(path).stat().st_size
    monkeypatch.setattr(pagecache, "mem_available", lambda: size)  # file > half of it
    with caplog.at_level(logging.INFO, logger="geocells.search.refine"):
        loaded = CellSearcher.load(path, aerial, proto, 1.0)
    assert loaded.refiner.prefetch and "not read at load" in caplog.text
    monkeypatch.setattr(pagecache, "mem_available", lambda: 2 * size)  # exactly half: fits
    assert not CellSearcher.load(path, aerial, proto, 1.0).refiner.prefetch
    monkeypatch.setattr(pagecache, "mem_available", lambda: None)  # unknown: do not read
    assert CellSearcher.load(path, aerial, proto, 1.0).refiner.prefetch
    with pytest.raises(ValueError, match=r"unknown refine warm mode 'hot'.*'auto', 'load'"):
        CellSearcher.load(path, aerial, proto, 1.0, warm="hot")


def test_page_runs_merge_adjacent_pages():
    # Rows of 256 B after a 128 B header: row 15 straddles pages 0 and 1, row 17 is in
    # page 1, row 100 in page 6; duplicates and order do not matter.
    starts, lengths = pagecache.page_runs(np.array([100, 17, 0, 1, 17]), 256, 128, page=4096)
    assert starts.tolist() == [0, 6 * 4096] and lengths.tolist() == [2 * 4096, 4096]
    starts, lengths = pagecache.page_runs(np.array([15, 50]), 256, 128, page=4096)
    assert starts.tolist() == [0, 3 * 4096] and lengths.tolist() == [2 * 4096, 4096]
    starts, lengths = pagecache.page_runs(np.array([15, 40]), 256, 128, page=4096)  # page 2
    assert starts.tolist() == [0] and lengths.tolist() == [3 * 4096]
    assert pagecache.page_runs(np.array([], np.int64), 256, 0)[0].size == 0


def test_prefetch_read_and_evict_on_a_real_file(tmp_path):
    path = tmp_path / "codes.npy"
    rows = 64 * mmap.PAGESIZE // 256
    np.save(path, np.arange(rows * 256, dtype=np.int64).astype(np.uint8).reshape(rows, 256))
    codes = np.load(path, mmap_mode="r")
    assert pagecache.prefetch_rows(codes, np.array([0, 1, rows - 1])) == 2
    assert pagecache.prefetch_rows(np.zeros((4, 4), np.uint8), np.array([0])) == 0
    assert pagecache.read_into_cache(path) == path.stat().st_size
    assert pagecache.resident_fraction(codes) == 1.0
    del codes
    pagecache.evict(path)
    codes = np.load(path, mmap_mode="r")
    fraction = pagecache.resident_fraction(codes)
    if fraction == 1.0 and _on_tmpfs(path):
        pytest.skip("tmpfs keeps every page in memory")
    assert fraction is not None and fraction < 0.5
    assert pagecache.populate(codes) and pagecache.resident_fraction(codes) == 1.0


def _on_tmpfs(path) -> bool:
    """Whether ``path`` lies on a tmpfs mount (longest matching mount point)."""
    mounts = [line.split() for line in open("/proc/mounts")]
    found = max((m for m in mounts if str(path).startswith(m[1])), key=lambda m: len(m[1]))
    return found[2] == "tmpfs"


def test_a_missing_or_truncated_refine_file_is_one_clear_error(micro_db, tmp_path):
    from geocells.db.store import DatabaseError
    from geocells.locate import Localizer
    from geocells.search.index_file import write_search_index

    db = shutil.copytree(micro_db, tmp_path / "db")
    write_search_index(db, "ivfpq")
    refine = refine_path(db / "index.faiss")
    size = refine.stat().st_size
    assert Localizer.load(db).searcher.refiner is not None
    with refine.open("r+b") as handle:  # a copy that stopped early
        handle.truncate(size - 100)
    with pytest.raises(DatabaseError) as raised:
        Localizer.load(db)
    text = str(raised.value)
    assert text.startswith(f"{refine}: is truncated: {size - 100:,} bytes, expected {size:,}")
    assert text.endswith("rebuild it: geocells calibrate DB") and text.count("\n") == 0
    refine.write_bytes(b"not numpy")
    with pytest.raises(DatabaseError, match=r"sq8\.npy: is not a \.npy refine file"):
        Localizer.load(db)
    refine.unlink()
    with pytest.raises(DatabaseError) as raised:
        Localizer.load(db)
    assert f"refine file {refine} not found" in str(raised.value)
    assert "geocells calibrate DB" in str(raised.value)


def test_the_warm_mode_reaches_the_refine_file_from_localizer_locate_and_serve(
    micro_db, tmp_path, capsys
):
    from geocells.cli import main
    from geocells.locate import Localizer
    from geocells.search.index_file import write_search_index
    from geocells.serve import ServeConfig

    db = shutil.copytree(micro_db, tmp_path / "db")
    write_search_index(db, "ivfpq")
    assert Localizer.load(db, warm="query").searcher.refiner.prefetch
    assert not Localizer.load(db, warm="off").searcher.refiner.prefetch
    with pytest.raises(ValueError, match="unknown refine warm mode 'soon'"):
        Localizer.load(db, warm="soon")
    assert ServeConfig(db=str(db), warm="query").warm == "query"
    with pytest.raises(ValueError, match="serve: warm must be one of auto, load, query, off"):
        ServeConfig(db=str(db), warm="soon")
    image = tmp_path / "q.jpg"
    Image.fromarray(np.full((40, 40, 3), 120, np.uint8)).save(image)
    assert main(["locate", str(db), str(image), "--warm", "load", "--no-progress"]) == 0
    assert "lat" in capsys.readouterr().out
    assert main(["locate", str(db), str(image), "--warm", "soon"]) == 2
    assert "argument --warm: invalid choice: 'soon'" in capsys.readouterr().err

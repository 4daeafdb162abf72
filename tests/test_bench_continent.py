"""The continent benchmark at a small size: real pipeline, covering through search."""

import itertools
import json

import numpy as np
import pytest

from geocells.bench.codes import CodeField, CodeGenerator, parent_aligned_chunks, write_codes
from geocells.bench.report import growth_table
from geocells.cli import main
from geocells.geo import Region, cell_parent, region_cells


def small_cells(count: int = 4_000) -> np.ndarray:
    """Sorted level-16 cells of a small bbox (Brussels)."""
    cells = region_cells(Region.from_bbox(50.80, 4.30, 50.86, 4.42), 16)
    return cells[:count]


def test_codes_share_parent_prototype_and_vary_smoothly():
    cells = small_cells()
    aerial, proto = CodeGenerator(CodeField(dim=64)).codes(cells, chunk_seed=0)
    assert aerial.dtype == np.float16 and aerial.shape == (len(cells), 64)
    np.testing.assert_allclose(np.linalg.norm(aerial.astype(np.float32), axis=1), 1, atol=2e-3)
    parents = cell_parent(cells, 15)
    same = parents[1:] == parents[:-1]
    assert same.any() and np.array_equal(proto[1:][same], proto[:-1][same])
    # Neighbours in S2 order are more alike than random pairs of the same 8 km box.
    a32 = aerial.astype(np.float32)
    near = np.mean(np.sum(a32[1:] * a32[:-1], axis=1))
    far = np.mean(np.sum(a32 * np.random.default_rng(0).permutation(a32), axis=1))
    assert near > far + 0.05, (near, far)
    # Deterministic: the same cells give the same smooth part whatever the chunk.
    again, _ = CodeGenerator(CodeField(dim=64)).codes(cells, chunk_seed=0)
    np.testing.assert_array_equal(aerial, again)


def test_parent_aligned_chunks_never_split_a_parent():
    cells = small_cells()
    ranges = list(parent_aligned_chunks(cells, 15, chunk=999))
    assert ranges[0][0] == 0 and ranges[-1][1] == len(cells)
    assert all(a[1] == b[0] for a, b in itertools.pairwise(ranges))
    parents = cell_parent(cells, 15)
    for _, stop in ranges[:-1]:
        assert parents[stop - 1] != parents[stop]


def test_bench_continent_small(tmp_path, capsys):
    out = tmp_path / "bench"
    argv = ["bench", "continent", "--max-cells", "20000", "--out", str(out), "--threads", "1"]
    assert main([*argv, "queries=200", "exact_single=1", "nlist=64"]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["cells"]["cells"] == 20_000 and not results["cells"]["covering_complete"]
    search = results["search"]
    assert search["queries"] == 200
    assert search["top1_agreement"] >= 0.98
    assert search["exact_top1_is_target"] >= 0.9
    assert 30 < search["resident_bytes_per_cell"] < 200
    # The pre-issue-23 defaults are built and timed beside the current ones.
    baseline = results["baseline_search"]
    assert baseline["params"]["refine"] == "none" and search["params"]["refine"] == "sq8"
    assert results["baseline"]["params"]["pq_m"] == 2 * results["index"]["params"]["pq_m"]
    assert baseline["top1_agreement"] >= 0.98
    assert (out / "baseline" / "index.faiss").is_file()
    assert (out / "index.faiss.sq8.npy").is_file()
    # Cold starts: the refine file evicted, then loaded with each warm mode; same answers.
    cold = {row["warm"]: row for row in search["cold_start"]}
    assert list(cold) == ["off", "query", "auto"]
    agreements = {row["top1_agreement"] for row in cold.values()}
    assert len(agreements) == 1 and agreements.pop() >= 0.96
    assert cold["auto"]["refine_cached_after"] == 1.0 and cold["off"]["first_query_ms"] > 0
    printed = capsys.readouterr().out
    assert "| warm | load s (CPU) |" in printed
    assert "| top-1 agreement with exact |" in printed and "| before (baseline) |" in printed
    assert "| 20,000 | 64 |" in growth_table([results])
    cells = np.load(out / "cells.npy", mmap_mode="r")
    assert np.all(np.diff(cells.astype(np.int64)) > 0)
    # A second run with new search settings reuses cells, codes and index.
    stages_before = (out / "stages.json").read_text()
    exact_before = (out / "exact.json").read_text()
    rerun = [*argv, "queries=200", "exact_single=1", "nlist=64", "nprobe=4", "sweep=[2x8]"]
    assert main(rerun) == 0
    assert (out / "stages.json").read_text() == stages_before
    assert (out / "exact.json").read_text() == exact_before  # exact search reused
    again = json.loads((out / "results.json").read_text())
    assert again["config"]["nprobe"] == 4
    (row,) = again["search"]["sweep"]
    assert (row["nprobe"], row["rerank"]) == (2, 8) and 0 < row["top1_agreement"] <= 1
    # Timed beside the index's own setting (nprobe 4), query by query.
    assert row["own_ms_batch1_mean"] > 0 and row["ann_ms_batch1_mean"] > 0
    assert main([*argv, "sweep=[fast]"]) == 2


def test_bench_rejects_unknown_override(tmp_path, capsys):
    argv = ["bench", "continent", "--max-cells", "100", "--out", str(tmp_path), "nprob=3"]
    assert main(argv) == 2
    assert "nprob" in capsys.readouterr().err


class _Killed(RuntimeError):
    pass


class _DiesAtChunk(CodeGenerator):
    """Generator that fails at chunk 2, like a killed run."""

    def codes(self, cells, chunk_seed):
        if chunk_seed == 2:
            raise _Killed
        return super().codes(cells, chunk_seed)


def test_write_codes_resumes_after_a_kill(tmp_path):
    cells = small_cells()
    field = CodeField(dim=32)
    (tmp_path / "full").mkdir()
    (tmp_path / "resumed").mkdir()
    full = write_codes(cells, tmp_path / "full", CodeGenerator(field), chunk=999, progress=False)
    with pytest.raises(_Killed):
        write_codes(cells, tmp_path / "resumed", _DiesAtChunk(field), chunk=999, progress=False)
    done = json.loads((tmp_path / "resumed" / "codes.progress.json").read_text())["rows_done"]
    assert 0 < done < len(cells)
    resumed = write_codes(
        cells, tmp_path / "resumed", CodeGenerator(field), chunk=999, progress=False
    )
    for got, want in zip(resumed, full):
        np.testing.assert_array_equal(got, want)

"""Database build with a stand-in encoder: resume after a kill, shards + merge."""

import re

import numpy as np
import pytest

from geocells.db.build import (
    CellSources,
    IndexConfig,
    build_cells,
    fixed_chunks,
    parse_shard,
    shard_range,
)
from geocells.db.merge import merge
from geocells.db.store import Database
from geocells.geo import cell_parent, latlng_to_cell

DIM = 8
PX = 6


class NoAerial(ValueError):
    pass


def _cells():
    lat, lon = np.meshgrid(np.linspace(48.0, 48.03, 30), np.linspace(2.0, 2.04, 30))
    return np.unique(latlng_to_cell(lat.ravel(), lon.ravel(), 16))


def _stream(cells, size=37):
    for start in range(0, len(cells), size):
        yield cells[start : start + size]


def _crop(lat, lon, size_m, px, rotation_deg=0.0):
    if lon > 2.038:
        raise NoAerial(f"no aerial at {lat}, {lon}")
    base = np.array([(lat * 1e4) % 251, (lon * 1e4) % 241, rotation_deg % 239])
    return np.broadcast_to(base.astype(np.uint8), (px, px, 3)).copy()


def _encoder(fail_after=None):
    projection = np.random.default_rng(0).normal(size=(3, DIM))
    calls = {"n": 0}

    def encode(tiles):
        calls["n"] += 1
        if fail_after is not None and calls["n"] > fail_after:
            raise KeyboardInterrupt("simulated kill")
        pixels = np.stack(tiles).reshape(len(tiles), -1, 3).mean(axis=1)
        vectors = np.sin(pixels @ projection + 0.5)
        return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)

    return encode


def _sources(cells, fail_after=None):
    proto_cells = np.unique(cell_parent(cells, 15))
    prototypes = np.random.default_rng(1).normal(size=(len(proto_cells), DIM))
    return CellSources(_encoder(fail_after), _crop, PX, proto_cells, prototypes, (NoAerial,))


CFG = IndexConfig(chunk_size=50, batch_size=16, tile_size_m=154.0, rotations=4, progress=False)
IDENTITY = {
    "cell_level": 16,
    "proto_level": 15,
    "tile_size_m": 154.0,
    "tile_px": 16,
    "model_sha256": "x",
}


def _build(out, cells, shard=(0, 1), fail_after=None, cfg=CFG):
    return build_cells(
        out, _stream(cells), len(cells), _sources(cells, fail_after), cfg, IDENTITY, shard
    )


def _same_database(a, b):
    da, db = Database.open(a), Database.open(b)
    np.testing.assert_array_equal(da.cells, db.cells)
    np.testing.assert_array_equal(da.aerial, db.aerial)
    np.testing.assert_array_equal(da.proto, db.proto)
    assert da.meta == db.meta


def test_fixed_chunks_and_shards():
    stream = [np.arange(i * 7, i * 7 + 7, dtype=np.uint64) for i in range(5)]
    chunks = list(fixed_chunks(stream, 10))
    assert [k for k, _ in chunks] == [0, 1, 2, 3]
    np.testing.assert_array_equal(np.concatenate([c for _, c in chunks]), np.arange(35))
    assert [len(c) for _, c in chunks] == [10, 10, 10, 5]
    ranges = [shard_range(35, 10, (i, 3)) for i in range(3)]
    assert [list(r) for r in ranges] == [[0], [1], [2, 3]]
    assert parse_shard("2/4") == (2, 4)
    with pytest.raises(ValueError, match="i/n"):
        parse_shard("2-4")
    with pytest.raises(ValueError, match="0 <= i < n"):
        parse_shard("4/4")


def test_build_writes_a_consistent_database(tmp_path):
    cells = _cells()
    out = _build(tmp_path / "db", cells)
    database = Database.open(out)
    np.testing.assert_array_equal(database.cells, cells)
    assert database.aerial.dtype == np.float16 and database.aerial.shape == (len(cells), DIM)
    covered = database.aerial.any(axis=1)
    assert 0 < database.meta.cells_without_aerial == np.count_nonzero(~covered)
    np.testing.assert_allclose(
        np.linalg.norm(database.aerial[covered].astype(float), axis=1), 1, atol=2e-3
    )
    np.testing.assert_allclose(np.linalg.norm(database.proto.astype(float), axis=1), 1, atol=2e-3)
    assert not (out / "chunks").exists() and not (out / "build.json").exists()
    assert (database.meta.cell_level, database.meta.proto_level) == (16, 15)
    assert database.kappa == 1.0 and database.meta.format_version == 2


def test_killed_build_resumes_to_the_identical_database(tmp_path):
    cells = _cells()
    clean = _build(tmp_path / "clean", cells)
    with pytest.raises(KeyboardInterrupt):
        _build(tmp_path / "killed", cells, fail_after=30)
    chunk_dir = tmp_path / "killed" / "chunks"
    finished = sorted(chunk_dir.glob("chunk-*.npz"))
    assert 0 < len(finished) < -(-len(cells) // CFG.chunk_size)
    (chunk_dir / ".chunk-00000099.tmp.npz").write_bytes(b"half written")  # killed mid-write
    with pytest.raises(ValueError, match="unfinished"):
        Database.open(tmp_path / "killed")
    unfinished = rf"^{re.escape(str(tmp_path / 'killed'))} holds an unfinished build with other"
    with pytest.raises(ValueError, match=unfinished + r" settings.*index"):
        _build(
            tmp_path / "killed",
            cells,
            cfg=IndexConfig(chunk_size=50, tile_size_m=154.0, progress=False),
        )
    _build(tmp_path / "killed", cells)
    _same_database(clean, tmp_path / "killed")
    other = IndexConfig(chunk_size=50, tile_size_m=154.0, upsample="parent", progress=False)
    with pytest.raises(ValueError, match="database built with other settings"):
        _build(tmp_path / "killed", cells, cfg=other)


def test_sharded_build_and_merge_equal_a_single_build(tmp_path):
    cells = _cells()
    single = _build(tmp_path / "single", cells)
    parts = [_build(tmp_path / f"part{i}", cells, shard=(i, 3)) for i in (2, 0, 1)]
    assert sum(len(Database.open(p)) for p in parts) == len(cells)
    with pytest.raises(ValueError, match=r"shards 0\.\.2 of 3"):
        merge(parts[:2], tmp_path / "broken")
    merged = merge(parts, tmp_path / "merged")
    _same_database(single, merged)


CHILD = """
import sys, time
sys.path.insert(0, {tests!r})
import test_db_build as t
cells = t._cells()
sources = t._sources(cells)
encode = sources.encode_tiles
def slow(tiles):
    time.sleep(0.05)
    return encode(tiles)
sources.encode_tiles = slow
t.build_cells({out!r}, t._stream(cells), len(cells), sources, t.CFG, t.IDENTITY)
"""


def test_sigkilled_build_resumes_to_the_identical_database(tmp_path):
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    cells = _cells()
    clean = _build(tmp_path / "clean", cells)
    out = tmp_path / "killed"
    script = CHILD.format(tests=str(Path(__file__).parent), out=str(out))
    child = subprocess.Popen([sys.executable, "-c", script])
    deadline = time.monotonic() + 60
    while not list((out / "chunks").glob("chunk-*.npz")) and time.monotonic() < deadline:
        time.sleep(0.05)
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert not (out / "meta.json").exists()
    _build(out, cells)
    _same_database(clean, out)


def test_cli_shards_and_merge_reproduce_the_micro_database(micro_db, tmp_path, capsys):
    from geocells.cli import main

    run, dataset = micro_db.parent / "run", micro_db.parent / "dataset"
    common = ["--dataset", str(dataset), "--no-progress"]
    for i in range(2):  # key=value in any order with the options (here: before and after)
        argv = ["index", "chunk_size=16", str(run), "--out", str(tmp_path / f"part{i}")]
        assert main([*argv, "--shard", f"{i}/2", *common, "upsample=bilinear"]) == 0
    assert Database.open(tmp_path / "part0").meta.index["chunk_size"] == 16
    parts = [str(tmp_path / "part0"), str(tmp_path / "part1")]
    assert main(["index", "merge", *parts, "--out", str(tmp_path / "merged")]) == 0
    merged, reference = Database.open(tmp_path / "merged"), Database.open(micro_db)
    for name in ("cells", "aerial", "proto"):
        np.testing.assert_array_equal(getattr(merged, name), getattr(reference, name))
    assert (tmp_path / "merged" / "model" / "last.safetensors").is_file()
    assert main(["index", str(run), "--out", str(tmp_path / "x"), "--shard", "2/2"]) == 2
    assert "--shard 2/2: need 0 <= i < n" in capsys.readouterr().err


def test_cli_index_takes_a_preset_and_key_value_overrides(micro_db, tmp_path, capsys):
    from geocells.cli import main

    run, dataset = micro_db.parent / "run", micro_db.parent / "dataset"
    out = tmp_path / "db"
    argv = ["index", str(run), "--out", str(out), "--dataset", str(dataset), "--no-progress"]
    assert main([*argv, "--config", "default", "upsample=parent", "chunk_size=16"]) == 0
    settings = Database.open(out).meta.index
    assert settings["upsample"] == "parent" and settings["chunk_size"] == 16
    assert settings["rotations"] == 1  # from the preset
    assert main([*argv, "--overwrite", "upsampel=parent"]) == 2
    err = capsys.readouterr().err
    assert "unknown config key 'upsampel'" in err and "upsample" in err
    assert main([*argv, "--config", "nope"]) == 2
    assert "unknown preset 'nope'; valid presets: default, rotations4" in capsys.readouterr().err


def test_the_same_run_gives_the_same_database_bytes(micro_db, tmp_path):
    """``geocells index`` of one run twice (and again over a finished folder, skipped)
    writes the same bytes (arrays, meta.json, model copy); the arrays equal those of the
    session's database (built by the fixture, perhaps by another geocells version)."""
    from geocells.db import build

    run, dataset = micro_db.parent / "run", micro_db.parent / "dataset"
    cfg = build.IndexConfig(chunk_size=16, progress=False)
    first = build.run(cfg, run, tmp_path / "a", dataset=dataset)
    second = build.run(cfg, run, tmp_path / "b", dataset=dataset)
    assert build.run(cfg, run, first, dataset=dataset) == first  # finished: skipped
    names = ["cells.npy", "aerial.npy", "proto.npy", "meta.json", "model/last.safetensors"]
    for name in names:
        assert (first / name).read_bytes() == (second / name).read_bytes(), name
    for name in names[:3]:
        assert (first / name).read_bytes() == (micro_db / name).read_bytes(), name

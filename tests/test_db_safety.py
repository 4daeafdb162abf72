"""Issue 16, database side: nothing lost (index/merge --overwrite, the lock), every damaged
database file named with the command that rebuilds it, aerial that misses the region."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest

from geocells.db.build import build_cells
from geocells.db.merge import merge
from geocells.db.store import DATABASE_OUTPUT, Database, DatabaseError
from geocells.outputs import MARKER, OutputError, output_lock, read_marker
from test_db_build import IDENTITY, _cells, _sources, _stream
from test_outputs import snapshot

REBUILD = "geocells index RUN --out DB --overwrite"


def _fake_build(out, cells, shard=(0, 1), overwrite=False):
    from test_db_build import CFG

    sources = _sources(cells)
    return build_cells(out, _stream(cells), len(cells), sources, CFG, IDENTITY, shard, overwrite)


def _user_folder(path):
    (path / "trip").mkdir(parents=True)
    (path / "trip" / "holiday.jpg").write_bytes(b"\xff\xd8 not lost")
    (path / "notes.txt").write_text("mine")
    return snapshot(path)


# --- case 1: --overwrite deletes only what geocells wrote -----------------------------------


def test_index_overwrite_refuses_a_folder_of_user_files(micro_db, tmp_path, capsys):
    from geocells.cli import main

    out = tmp_path / "mine"
    before = _user_folder(out)
    run, dataset = micro_db.parent / "run", micro_db.parent / "dataset"
    argv = ["index", str(run), "--out", str(out), "--dataset", str(dataset), "--no-progress"]
    for extra in ([], ["--overwrite"]):
        assert main([*argv, *extra]) == 2
        err = capsys.readouterr().err
        assert str(out) in err and "notes.txt" in err and "did not write" in err
    assert snapshot(out) == before
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt", "trip"]  # no marker, no lock


def test_index_overwrite_replaces_an_old_unmarked_database(micro_db, tmp_path):
    from geocells.cli import main

    out = shutil.copytree(micro_db, tmp_path / "db")
    (out / MARKER).unlink(missing_ok=True)  # as an older geocells left it
    run, dataset = micro_db.parent / "run", micro_db.parent / "dataset"
    argv = ["index", str(run), "--out", str(out), "--dataset", str(dataset), "--no-progress"]
    assert main([*argv, "--overwrite", "chunk_size=16"]) == 0
    assert read_marker(out) == "index"
    assert not (out / "calibration.csv").exists()  # the old database's files are gone
    np.testing.assert_array_equal(Database.open(out).cells, Database.open(micro_db).cells)


# --- case 2: merge needs --overwrite and never writes into one of its inputs ----------------


def test_merge_needs_overwrite_and_refuses_its_own_input(tmp_path, capsys):
    from geocells.cli import main

    cells = _cells()
    parts = [str(_fake_build(tmp_path / f"part{i}", cells, shard=(i, 2))) for i in range(2)]
    merged = tmp_path / "merged"
    merge(parts, merged)
    kept = snapshot(merged)
    assert main(["index", "merge", *parts, "--out", str(merged)]) == 2
    assert f"{merged} already holds a database; pass --overwrite" in capsys.readouterr().err
    part0 = snapshot(tmp_path / "part0")
    assert main(["index", "merge", *parts, "--out", parts[0], "--overwrite"]) == 2
    assert f"--out {parts[0]} is the shard" in capsys.readouterr().err
    assert snapshot(tmp_path / "part0") == part0
    mine = tmp_path / "mine"
    before = _user_folder(mine)
    assert main(["index", "merge", *parts, "--out", str(mine), "--overwrite"]) == 2
    assert "notes.txt, which geocells did not write" in capsys.readouterr().err
    assert snapshot(mine) == before and snapshot(merged) == kept
    assert main(["index", "merge", *parts, "--out", str(merged), "--overwrite"]) == 0
    assert snapshot(merged) == kept  # the same shards give the same bytes


# --- case 4: a second writer is refused by the lock -----------------------------------------


def test_a_second_index_run_is_refused_while_the_first_writes(tmp_path):
    cells = _cells()
    out = _fake_build(tmp_path / "db", cells)
    before = snapshot(out)
    with output_lock(out, DATABASE_OUTPUT):  # the first `index` run, still writing
        for overwrite in (False, True):
            with pytest.raises(OutputError, match=rf"{out} is being written.*PID {os.getpid()}"):
                _fake_build(out, cells[::-1].copy(), overwrite=overwrite)
    assert snapshot(out) == before
    _fake_build(out, cells, overwrite=True)  # once it is done, --overwrite rebuilds
    assert snapshot(out) == before


# --- case 7: index refuses aerial imagery that misses the region ----------------------------


def test_index_refuses_a_dataset_whose_aerial_misses_the_region(micro_db, tmp_path):
    import rasterio
    from rasterio.transform import Affine

    from geocells.db import build

    dataset = shutil.copytree(micro_db.parent / "dataset", tmp_path / "dataset")
    (dataset / "aerial" / "mosaic.tif").unlink()
    profile = dict(driver="GTiff", width=64, height=64, count=3, dtype="uint8", crs="EPSG:4326")
    far = Affine(1e-4, 0, 10.0, 0, -1e-4, 40.0)  # Sardinia, not the region near Paris
    with rasterio.open(dataset / "aerial" / "far.tif", "w", transform=far, **profile) as tif:
        tif.write(np.full((3, 64, 64), 90, np.uint8))
    out = tmp_path / "db"
    with pytest.raises(ValueError, match=rf"dataset {dataset}: no region cell has aerial"):
        build.run(None, micro_db.parent / "run", out, dataset=dataset)
    assert not out.exists()


# --- cases 9 and 10: a damaged database names the file and the command that rebuilds it -----


def _damage_array(db, name):
    path = db / f"{name}.npy"
    if name == "cells":
        path.write_bytes(b"")  # 0 bytes
    elif name == "aerial":
        path.write_bytes(path.read_bytes()[:-100])  # truncated
    else:
        np.save(path, np.load(path).astype(np.float32))  # another dtype


def _damage_meta(db, how):
    path = db / "meta.json"
    meta = json.loads(path.read_text())
    if how == "garbage":
        path.write_text("{not json")
    elif how == "list":
        path.write_text("[1, 2]")
    elif how == "count":
        path.write_text(json.dumps({**meta, "count": meta["count"] + 1}))
    elif how == "kappa":
        path.write_text(json.dumps({**meta, "kappa": "abc"}))


@pytest.mark.parametrize(
    ("damage", "file", "message", "command"),
    [
        (lambda db: _damage_array(db, "cells"), "cells.npy", "unreadable .npy of 0 bytes", REBUILD),
        (lambda db: _damage_array(db, "aerial"), "aerial.npy", "unreadable .npy", REBUILD),
        (lambda db: _damage_array(db, "proto"), "proto.npy", "holds float32", REBUILD),
        (lambda db: _damage_meta(db, "garbage"), "meta.json", "not valid JSON", REBUILD),
        (lambda db: _damage_meta(db, "list"), "meta.json", "expected a JSON object", REBUILD),
        (lambda db: _damage_meta(db, "count"), "cells.npy", "meta.json says", REBUILD),
        (lambda db: _damage_meta(db, "kappa"), "meta.json", "kappa must be a finite number", ""),
        (lambda db: (db / "meta.json").unlink(), "", "not a geocells database", REBUILD),
    ],
)
def test_a_damaged_database_names_the_file_and_the_rebuild_command(
    micro_db, tmp_path, damage, file, message, command
):
    db = shutil.copytree(micro_db, tmp_path / "db")
    damage(db)
    with pytest.raises(DatabaseError) as raised:
        Database.open(db)
    text = str(raised.value)
    assert f"{db / file}: " in text and message in text
    assert (command or "geocells calibrate DB") in text


@pytest.mark.parametrize(
    ("file", "content", "message"),
    [
        ("index.faiss", b"\x00garbage, not a faiss index", "faiss cannot read it"),
        ("index.faiss.json", b"{truncated", "not valid JSON"),
        ("index.faiss.json", b"[]", "expected a JSON object, got list"),
        (
            "index.faiss.json",
            b'{"format_version": 1, "backend": "ivfpq"}',
            "search index description has format_version 1, this geocells reads version 3",
        ),
        (
            "index.faiss.json",
            b'{"format_version": 2, "backend": "ivfpq"}',
            "search index description lacks dim, index_kappa, num_cells, params",
        ),
        (
            "index.faiss.json",
            b'{"format_version": 2, "backend": "ivfpq", "dim": 8, '
            b'"index_kappa": 1, "num_cells": 9, "params": 3}',
            "params must be an object, got 3",
        ),
    ],
)
def test_a_damaged_search_index_names_the_file_and_calibrate(
    micro_db, tmp_path, file, content, message
):
    from geocells.locate import Localizer
    from geocells.search.index_file import write_search_index

    db = shutil.copytree(micro_db, tmp_path / "db")
    write_search_index(db, "ivfpq")
    (db / file).write_bytes(content)
    with pytest.raises(DatabaseError) as raised:
        Localizer.load(db)
    text = str(raised.value)
    assert f"{db / file}: " in text and message in text and "geocells calibrate DB" in text
    assert Localizer.load(db, backend="exact").searcher.backend == "exact"  # the rest is fine


def test_a_search_index_without_its_sidecar_names_it_and_calibrate(micro_db, tmp_path):
    from geocells.locate import Localizer
    from geocells.search.index_file import write_search_index

    db = shutil.copytree(micro_db, tmp_path / "db")
    write_search_index(db, "ivfpq")
    (db / "index.faiss.json").unlink()
    with pytest.raises(DatabaseError) as raised:
        Localizer.load(db)
    text = str(raised.value)
    assert f"{db / 'index.faiss.json'} not found" in text and "geocells calibrate DB" in text


def test_locate_and_calibrate_refuse_a_damaged_database_in_one_line(micro_db, tmp_path, capsys):
    from geocells.cli import main

    db = shutil.copytree(micro_db, tmp_path / "db")
    (db / "cells.npy").write_bytes(b"")
    image = next((micro_db.parent / "dataset" / "ground" / "images").iterdir())
    for argv in (["locate", str(db), str(image)], ["calibrate", str(db)]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert f"{db / 'cells.npy'}: unreadable .npy of 0 bytes" in err and REBUILD in err
        assert "Traceback" not in err

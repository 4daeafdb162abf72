"""Database build: encode every level-Lc cell of a region into ``aerial.npy`` + ``proto.npy``.

The cells are streamed from ``cover_region`` and cut into fixed chunks (chunk ``k`` holds
cells ``[k·C, (k+1)·C)`` of the sorted covering), so a chunk's content does not depend
on how the work is split. Each chunk is encoded and stored atomically under ``chunks/``;
a killed build resumes by skipping the chunks already there. ``shard=(i, n)`` builds the
i-th contiguous range of chunks into its own database; ``merge`` concatenates the parts.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from geocells.data.aerial import OutOfCoverageError, crop_many
from geocells.data.dataset import Dataset
from geocells.db.store import DATABASE_OUTPUT, assemble, save_chunk
from geocells.geo import Region, cell_to_latlng, count_cells, cover_region, region_cells
from geocells.io import (
    DatabaseMeta,
    dataset_of_run,
    read_json,
    sha256_file,
)
from geocells.models import load_model
from geocells.models.device import batch_size_for, check_device, resolve_device
from geocells.models.geomodel import resolve_checkpoint
from geocells.outputs import OutputFolder, stage_output
from geocells.scoring.codes import DEFAULT_UPSAMPLE, aerial_codes, cell_codes
from geocells.scoring.upsample import METHODS

log = logging.getLogger(__name__)

ROTATIONS = (1, 4)


@dataclass
class IndexConfig:
    """Settings of a database build."""

    chunk_size: int = 2048  # cells per resumable chunk file
    batch_size: int = 0  # tiles per encoder call; 0: 64 on the CPU, 256 on CUDA
    tile_size_m: float = 0.0  # aerial footprint per cell (m); 0: the model's training tile
    rotations: int = 1  # 4: average the embeddings of the tile turned by 0/90/180/270°
    upsample: str = DEFAULT_UPSAMPLE  # prototype upsampling: parent | bilinear
    cell_level: int = -1  # Lc; -1: one level below the model's prototypes
    land_only: bool = False
    progress: bool = True
    device: str = "auto"  # auto (cuda when available) | cpu | cuda[:N]; bf16 autocast on cuda

    def check(self) -> None:
        """Raise ValueError naming the first bad setting."""
        if self.chunk_size < 1 or self.batch_size < 0:
            raise ValueError(f"chunk_size must be >= 1 and batch_size >= 0: {self}")
        check_device(self.device)
        if self.rotations not in ROTATIONS:
            raise ValueError(f"rotations must be one of {ROTATIONS}, got {self.rotations}")
        if self.upsample not in METHODS:
            raise ValueError(f"upsample must be one of {METHODS}, got {self.upsample!r}")
        if self.tile_size_m <= 0:
            raise ValueError(f"tile_size_m must be positive, got {self.tile_size_m}")


@dataclass
class CellSources:
    """Everything a chunk of cells is encoded from (a model plus an aerial source)."""

    encode_tiles: Callable[[list[np.ndarray]], np.ndarray]  # uint8 tiles -> float32 [B, D]
    crop: Callable[..., np.ndarray]  # crop(lat, lon, size_m, px, rotation_deg) -> uint8
    tile_px: int
    proto_cells: np.ndarray  # uint64 [P] sorted, level Lp
    prototypes: np.ndarray  # float32 [P, D]
    no_coverage: tuple[type[Exception], ...] = field(default=())  # crop errors: no aerial there


def parse_shard(text: str | None) -> tuple[int, int]:
    """``"i/n"`` -> ``(i, n)`` with ``0 <= i < n``; None -> ``(0, 1)``."""
    if text is None:
        return 0, 1
    try:
        index, count = (int(part) for part in text.split("/"))
    except ValueError:
        raise ValueError(f"--shard must look like i/n (e.g. 0/4), got {text!r}") from None
    if not 0 <= index < count:
        raise ValueError(f"--shard {text}: need 0 <= i < n")
    return index, count


def shard_range(total_cells: int, chunk_size: int, shard: tuple[int, int]) -> range:
    """Chunk indices of shard ``(i, n)``: the i-th of n contiguous, near-equal ranges."""
    chunks = -(-total_cells // chunk_size)
    index, count = shard
    return range(index * chunks // count, (index + 1) * chunks // count)


def fixed_chunks(stream: Iterable[np.ndarray], size: int) -> Iterator[tuple[int, np.ndarray]]:
    """Re-cut a stream of cell arrays into ``(k, cells)`` chunks of ``size`` (last shorter)."""
    pending: list[np.ndarray] = []
    held = 0
    k = 0
    for part in stream:
        pending.append(np.asarray(part, dtype=np.uint64))
        held += len(part)
        while held >= size:
            joined = np.concatenate(pending)
            yield k, joined[:size]
            k += 1
            pending, held = [joined[size:]], held - size
    if held:
        yield k, np.concatenate(pending)


def encode_aerial(
    cells: np.ndarray,
    sources: CellSources,
    cfg: IndexConfig,
    on_batch: Callable[[int], object] | None = None,
) -> np.ndarray:
    """Aerial embeddings ``float32 [n, D]`` of the tiles centred on ``cells`` (mean over
    ``cfg.rotations`` turns, re-normalised); zero rows where there is no aerial coverage."""

    lat, lon = cell_to_latlng(cells)
    angles = [0.0, 90.0, 180.0, 270.0][: cfg.rotations]
    parts = []
    batch = cfg.batch_size if cfg.batch_size > 0 else 64  # 0 left unresolved: the CPU's
    for start in range(0, len(cells), batch):
        rows = slice(start, start + batch)
        total = 0.0
        for angle in angles:
            tiles, covered = crop_many(
                sources, lat[rows], lon[rows], cfg.tile_size_m, sources.tile_px, angle,
                no_coverage=sources.no_coverage,
            )  # fmt: skip
            total = total + np.asarray(sources.encode_tiles(list(tiles)), dtype=np.float32)
        parts.append(aerial_codes(total, covered))
        if on_batch is not None:
            on_batch(len(tiles))
    return np.concatenate(parts)


def encode_chunk(
    cells: np.ndarray,
    sources: CellSources,
    cfg: IndexConfig,
    on_batch: Callable[[int], object] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """``(aerial float16 [n, D], proto float16 [n, D])`` for one chunk of cells."""
    aerial = encode_aerial(cells, sources, cfg, on_batch)
    return cell_codes(cells, aerial, sources.proto_cells, sources.prototypes, cfg.upsample)


def _changed_keys(new: dict[str, Any], old: dict[str, Any]) -> str:
    """Comma-separated keys whose values differ ("" when none do)."""
    return ", ".join(sorted(k for k in new.keys() | old.keys() if new.get(k) != old.get(k)))


def _finished(plan: dict[str, Any]):
    """``stage_output``'s check: a finished database of ``plan`` is in ``out`` (built with
    other settings: refused, ``--overwrite`` replaces it)."""

    def finished(out: Path) -> bool:
        if not (out / "meta.json").is_file():
            return False
        meta = DatabaseMeta.load(out).to_dict()
        same = {k: v for k, v in plan.items() if k not in ("shard", "total_cells")}
        changed = _changed_keys(same, {k: meta.get(k) for k in same})
        if changed:
            raise ValueError(
                f"{out} holds a database built with other settings ({changed}); use --overwrite"
            )
        return True

    return finished


def _start_or_resume(out: OutputFolder, plan: dict[str, Any]) -> None:
    """Record ``plan`` in ``out/build.json``, or check that an unfinished build there has it."""
    plan_path = out.path / "build.json"
    if plan_path.is_file():
        changed = _changed_keys(plan, read_json(plan_path))
        if changed:
            raise ValueError(
                f"{out.path} holds an unfinished build with other settings ({changed}); "
                "use --overwrite"
            )
        log.info("index: resuming the build in %s", out.path)
    (out.path / "chunks").mkdir(parents=True, exist_ok=True)
    out.write_json("build.json", plan)


def build_cells(
    out: Path,
    cell_stream: Iterable[np.ndarray],
    total_cells: int,
    sources: CellSources,
    cfg: IndexConfig,
    identity: dict[str, Any],
    shard: tuple[int, int] = (0, 1),
    overwrite: bool = False,
    attach: Callable[[OutputFolder], None] | None = None,
) -> Path:
    """Encode the cells of ``cell_stream`` (``total_cells`` of them, sorted) into database ``out``.

    ``identity`` (``DatabaseMeta`` fields: model and dataset hashes, levels, ...) goes into
    ``meta.json``;
    ``attach(out)`` adds files (the model copy) just before the database is marked finished.
    """

    cfg.check()
    out = Path(out)
    chunks = shard_range(total_cells, cfg.chunk_size, shard)
    if len(chunks) == 0:
        raise ValueError(
            f"shard {shard[0]}/{shard[1]} holds no cells ({total_cells} cells in chunks of "
            f"{cfg.chunk_size}): use fewer shards or a smaller chunk size"
        )
    # Where and in what batches it runs does not change what a chunk holds: a build
    # started on the CPU may be resumed on a GPU.
    unused = ("progress", "device", "batch_size")
    settings = {key: value for key, value in asdict(cfg).items() if key not in unused}
    plan = {**identity, "index": settings, "shard": list(shard)}
    plan["total_cells"] = total_cells
    # The lock: a second build into ``out`` (with --overwrite or not) is refused while this
    # one runs, so no database mixes the rows of two builds.
    finished = _finished(plan)
    with stage_output(out, DATABASE_OUTPUT, overwrite=overwrite, finished=finished) as folder:
        if not folder.skip:
            _start_or_resume(folder, plan)
            _encode_and_finish(folder, plan, total_cells, cell_stream, sources, cfg, chunks, attach)
    return out


def _encode_and_finish(
    out: OutputFolder,
    plan: dict[str, Any],
    total_cells: int,
    cell_stream: Iterable[np.ndarray],
    sources: CellSources,
    cfg: IndexConfig,
    chunks: range,
    attach: Callable[[OutputFolder], None] | None,
) -> None:
    """Encode the missing chunks of ``chunks``, assemble the arrays and mark ``out`` done."""
    from tqdm import tqdm

    names = {k: f"chunks/chunk-{k:08d}.npz" for k in chunks}
    files = [out.path / names[k] for k in chunks]
    count = min(chunks.stop * cfg.chunk_size, total_cells) - chunks.start * cfg.chunk_size
    done = sum(
        min(cfg.chunk_size, total_cells - k * cfg.chunk_size)
        for k, path in zip(chunks, files)
        if path.is_file()
    )
    bar = tqdm(
        total=count, initial=done, unit="cell", desc="index", disable=None if cfg.progress else True
    )
    dim = None
    for k, cells in fixed_chunks(cell_stream, cfg.chunk_size):
        if k >= chunks.stop:
            break
        if k < chunks.start or files[k - chunks.start].is_file():
            continue
        aerial, proto = encode_chunk(cells, sources, cfg, bar.update)
        save_chunk(out, names[k], cells, aerial, proto)
        dim = aerial.shape[1]
    bar.close()
    missing = [path.name for path in files if not path.is_file()]
    if missing:
        raise ValueError(
            f"the cell stream ended before chunk {missing[0]} ({total_cells} expected)"
        )
    if dim is None:
        dim = int(sources.prototypes.shape[1])
    assemble(out, files, count, dim)
    if attach is not None:
        attach(out)
    _finish(out, plan, count, dim)


def _finish(out: OutputFolder, plan: dict[str, Any], count: int, dim: int) -> None:
    """Write ``meta.json`` (which marks the database finished) and drop the chunk files."""
    aerial = np.load(out.path / "aerial.npy", mmap_mode="r")
    without_aerial = sum(
        int(np.count_nonzero(~aerial[start : start + 65536].any(axis=1)))
        for start in range(0, count, 65536)
    )
    if without_aerial:
        log.warning("index: %d of %d cells lie outside the aerial coverage", without_aerial, count)
    meta = DatabaseMeta(**plan, count=count, dim=dim, cells_without_aerial=without_aerial)
    if plan["shard"] == [0, 1]:  # only shards keep these, for `merge`
        meta.shard = meta.total_cells = None
    out.save(meta)
    shutil.rmtree(out.path / "chunks")
    (out.path / "build.json").unlink()


def parse_region(text: str) -> Any:
    """A ``Region`` from a preset name, a GeoJSON file or ``south,west,north,east``."""

    parts = text.split(",")
    if len(parts) == 4:
        try:
            south, west, north, east = (float(part) for part in parts)
        except ValueError:
            raise ValueError(f"--region {text!r}: a bbox must be four numbers") from None
        return Region.from_bbox(south, west, north, east)
    if text.endswith((".geojson", ".json")):
        return Region.from_geojson(Path(text))
    return Region.preset(text)


def run(
    cfg: IndexConfig | None,
    run_dir: str | Path,
    out: str | Path,
    *,
    dataset: Dataset | str | Path | None = None,
    region: Any = None,
    shard: tuple[int, int] = (0, 1),
    overwrite: bool = False,
) -> Path:
    """Build the cell-code database of ``run_dir``'s model over ``region`` (default: the
    region of ``dataset``, default the run's) into ``out``; ``shard=(i, n)`` builds part i
    of n for ``merge``. A finished database of the same settings is kept. ``dataset`` is a
    folder or an open ``Dataset`` (the pipeline passes the one it trained on)."""

    cfg = cfg or IndexConfig()
    device = resolve_device(cfg.device)  # a bad name fails before anything is read
    checkpoint = resolve_checkpoint(run_dir)
    model = load_model(checkpoint, device=device)
    data = Dataset.of(dataset if dataset is not None else dataset_of_run(run_dir))
    region = data.region if region is None else region
    if isinstance(region, str):
        region = parse_region(region)
    cell_level = model.cell_level if cfg.cell_level < 0 else cfg.cell_level
    tile_size_m = model.aerial_tile_m if cfg.tile_size_m <= 0 else cfg.tile_size_m
    resolved = {"cell_level": cell_level, "tile_size_m": tile_size_m}
    resolved["batch_size"] = batch_size_for(device, cfg.batch_size, cpu=64)
    cfg = IndexConfig(**{**asdict(cfg), **resolved})
    if cell_level < model.prototype_level:
        raise ValueError(
            f"cell level {cell_level} is coarser than the prototypes' {model.prototype_level}"
        )
    # As `train` does: aerial imagery that misses the region would give all-zero codes.
    data.aerial_coverage(region_cells(region, model.prototype_level, land_only=cfg.land_only))
    sources = CellSources(
        encode_tiles=lambda tiles: model.aerial.encode(tiles, batch_size=cfg.batch_size),
        crop=data.aerial.crop,
        tile_px=model.aerial_px,
        proto_cells=model.prototypes.cells,
        prototypes=model.prototypes.normalized().cpu().numpy(),
        no_coverage=(OutOfCoverageError,),
    )
    identity = {
        "cell_level": cell_level,
        "proto_level": model.prototype_level,
        "tile_size_m": tile_size_m,
        "tile_px": model.aerial_px,
        "model_file": "model/last.safetensors",
        "model_sha256": sha256_file(checkpoint),
        "dataset": str(data.root),
        "dataset_sha256": data.fingerprint,
        "region": {
            "name": region.name,
            "bounds": list(region.bounds),
            "area_km2": region.area_km2(),
        },
    }
    total = count_cells(region, cell_level, land_only=cfg.land_only)
    log.info(
        "index: %d level-%d cells over %s (shard %d/%d)", total, cell_level, region.name, *shard
    )

    def attach(folder: OutputFolder) -> None:
        folder.copy(checkpoint, "model/last.safetensors")
        folder.write_text("region.geojson", json.dumps(region.to_geojson()))

    stream = cover_region(region, cell_level, land_only=cfg.land_only)
    return build_cells(Path(out), stream, total, sources, cfg, identity, shard, overwrite, attach)

"""Aerial crop throughput: crops per second on one core, per backend.

Writes a textured test raster (UTM, 0.5 m/px by default) and the same area as XYZ tiles
and MBTiles into a temporary folder, then times ``crop()`` at random positions and
rotations (the training access pattern)::

    .venv/bin/python benchmarks/aerial_bench.py --px 128 --size-m 154 --n 2000

Target (issue 3): >= 500 crops/s of 128 px from a cached raster on one core.
"""

from __future__ import annotations

import argparse
import io
import math
import os
import sqlite3
import tempfile
import time
from pathlib import Path

import mercantile
import numpy as np
from PIL import Image

from geocells.data.aerial import open_aerial
from geocells.data.aerial.base import metres_per_degree
from geocells.data.aerial.geotiff import GeoTiffSource

CENTER_LAT, CENTER_LON = 47.3769, 8.5417


def write_raster(path: Path, size_px: int, resolution: float) -> None:
    """A random-texture 3-band UTM GeoTIFF centred on the benchmark point (tiled, deflate)."""
    import rasterio
    from affine import Affine
    from pyproj import Transformer

    x, y = Transformer.from_crs("EPSG:4326", "EPSG:32632", always_xy=True).transform(
        CENTER_LON, CENTER_LAT
    )
    half = size_px * resolution / 2
    rng = np.random.default_rng(0)
    small = rng.integers(0, 256, (3, size_px // 8, size_px // 8), dtype=np.uint8)
    bands = np.repeat(np.repeat(small, 8, axis=1), 8, axis=2)
    profile = dict(
        driver="GTiff", width=size_px, height=size_px, count=3, dtype="uint8",
        crs="EPSG:32632", transform=Affine(resolution, 0, x - half, 0, -resolution, y + half),
        tiled=True, compress="deflate",
    )  # fmt: skip
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(bands)


def write_tiles(folder: Path, zoom: int, half_m: float) -> Path:
    """Random tiles over the area as an XYZ folder and an MBTiles file; returns the latter."""
    metres_lat, metres_lon = metres_per_degree(CENTER_LAT)
    box = (CENTER_LON - half_m / metres_lon, CENTER_LAT - half_m / metres_lat,
           CENTER_LON + half_m / metres_lon, CENTER_LAT + half_m / metres_lat)  # fmt: skip
    rng = np.random.default_rng(1)
    mbtiles = folder / "tiles.mbtiles"
    with sqlite3.connect(mbtiles) as db:
        db.execute("CREATE TABLE metadata (name TEXT, value TEXT)")
        db.execute(
            "CREATE TABLE tiles (zoom_level INT, tile_column INT, tile_row INT, tile_data BLOB)"
        )
        db.execute("INSERT INTO metadata VALUES ('bounds', ?)", (",".join(map(str, box)),))
        for tile in mercantile.tiles(*box, [zoom]):
            buffer = io.BytesIO()
            Image.fromarray(rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)).save(buffer, "PNG")
            path = folder / "xyz" / str(zoom) / str(tile.x) / f"{tile.y}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(buffer.getvalue())
            row = 2**zoom - 1 - tile.y
            db.execute(
                "INSERT INTO tiles VALUES (?, ?, ?, ?)", (zoom, tile.x, row, buffer.getvalue())
            )
    (folder / "xyz" / "tiles.json").write_text(
        f'{{"zoom": {zoom}, "bounds": [{box[0]}, {box[1]}, {box[2]}, {box[3]}]}}'
    )
    return mbtiles


def time_crops(source, n: int, px: int, size_m: float, reach_m: float) -> tuple[float, float]:
    """Crops per wall-clock second and per CPU second of this process (the fairer number on
    a shared machine), at random positions within ``reach_m`` and random rotations."""
    rng = np.random.default_rng(2)
    metres_lat, metres_lon = metres_per_degree(CENTER_LAT)
    lats = CENTER_LAT + rng.uniform(-reach_m, reach_m, n) / metres_lat
    lons = CENTER_LON + rng.uniform(-reach_m, reach_m, n) / metres_lon
    rotations = rng.uniform(0, 360, n)
    for i in range(min(n, 20)):  # warm-up: caches, pyramid levels
        source.crop(lats[i], lons[i], size_m, px, rotations[i])
    start, start_cpu = time.perf_counter(), time.process_time()
    for lat, lon, rotation in zip(lats, lons, rotations, strict=True):
        source.crop(lat, lon, size_m, px, rotation)
    return n / (time.perf_counter() - start), n / (time.process_time() - start_cpu)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--px", type=int, default=128)
    parser.add_argument("--size-m", type=float, default=154.0)
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--raster-px", type=int, default=8192, help="test raster side")
    parser.add_argument("--resolution", type=float, default=0.5, help="raster metres/pixel")
    parser.add_argument("--zoom", type=int, default=17, help="tile zoom (XYZ/MBTiles)")
    args = parser.parse_args()
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        write_raster(folder / "ortho.tif", args.raster_px, args.resolution)
        half_m = args.raster_px * args.resolution / 2
        reach = half_m - args.size_m
        mbtiles = write_tiles(folder, args.zoom, min(half_m, 1500.0))
        tile_reach = min(half_m, 1500.0) - args.size_m
        sources = {
            "geotiff cached": GeoTiffSource([folder / "ortho.tif"]),
            "geotiff windowed": GeoTiffSource([folder / "ortho.tif"], max_cached_bytes=0),
            "xyz folder": open_aerial(folder / "xyz"),
            "mbtiles": open_aerial(mbtiles),
        }
        print(f"{args.px} px crops of {args.size_m:g} m, random positions and rotations:")
        for name, source in sources.items():
            n = args.n if "cached" in name else max(args.n // 4, 50)
            reach_m = reach if "geo" in name else tile_reach
            wall, cpu = time_crops(source, n, args.px, args.size_m, reach_m)
            print(f"  {name:<18} {wall:6.0f} crops/s wall, {cpu:6.0f} per CPU-second ({n} crops)")
        metres_per_px = args.size_m / args.px
        level = max(math.floor(math.log2(metres_per_px / args.resolution)), 0)
        print(f"(raster {args.resolution} m/px, crop {metres_per_px:.2f} m/px, level {level})")


if __name__ == "__main__":
    main()

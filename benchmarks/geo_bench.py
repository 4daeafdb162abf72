"""Benchmark geocells.geo: latlng_to_cell throughput and region covering time / memory.

    .venv/bin/python benchmarks/geo_bench.py [--region europe-west] [--level 16]

Peak memory is the process's peak RSS (ru_maxrss); "covering extra" is the growth of
that peak during the covering, divided by the number of cells. CPU seconds are printed
next to wall seconds because shared machines make wall time noisy.
"""

from __future__ import annotations

import argparse
import resource
import time

import numpy as np

from geocells.geo import Region, count_cells, cover_region, latlng_to_cell


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MiB (Linux: ru_maxrss is KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def bench_points(n: int, repeats: int = 3) -> None:
    """Points per second of latlng_to_cell at levels 16 and 30 (best of ``repeats``)."""
    rng = np.random.default_rng(0)
    lat = np.degrees(np.arcsin(rng.uniform(-1, 1, n)))
    lon = rng.uniform(-180, 180, n)
    for level in (16, 30):
        runs = [_timed(lambda level=level: latlng_to_cell(lat, lon, level)) for _ in range(repeats)]
        wall, cpu = min(r[0] for r in runs), min(r[1] for r in runs)
        print(
            f"latlng_to_cell level {level}: {n / wall / 1e6:.2f} M points/s wall, "
            f"{n / cpu / 1e6:.2f} M points/s CPU ({n:,} points)"
        )


def _timed(function) -> tuple[float, float]:
    """(wall, CPU) seconds of one call."""
    wall, cpu = time.perf_counter(), time.process_time()
    function()
    return time.perf_counter() - wall, time.process_time() - cpu


def bench_cover(region_spec: str, level: int, chunk_size: int) -> None:
    """Count time, full streaming time and the peak-RSS growth of covering a region."""
    region = Region.parse(region_spec)
    count_cells(Region.from_bbox(50, 5, 50.1, 5.1), 10)  # warm-up: imports, lookup tables
    baseline = peak_rss_mb()
    count_seconds = _timed(lambda: count_cells(region, level))
    count = count_cells(region, level)
    streamed = 0

    def stream() -> None:
        nonlocal streamed
        for chunk in cover_region(region, level, chunk_size=chunk_size):
            streamed += chunk.size

    stream_seconds = _timed(stream)
    extra = peak_rss_mb() - baseline
    assert streamed == count, (streamed, count)
    print(f"{region.name} level {level}: {count:,} cells, area {region.area_km2():,.0f} km²")
    print(f"  count_cells: {count_seconds[0]:.2f} s wall, {count_seconds[1]:.2f} s CPU")
    print(
        f"  cover_region (all chunks of {chunk_size:,}): {stream_seconds[0]:.2f} s wall, "
        f"{stream_seconds[1]:.2f} s CPU"
    )
    print(
        f"  peak RSS {peak_rss_mb():.0f} MiB, covering extra {extra:.0f} MiB "
        f"= {extra * 2**20 / max(count, 1):.2f} bytes/cell"
    )


def main() -> None:
    """Parse arguments and run both benchmarks."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--region", default="europe-west")
    parser.add_argument("--level", type=int, default=16)
    parser.add_argument("--points", type=int, default=2_000_000)
    parser.add_argument("--chunk-size", type=int, default=1 << 20)
    args = parser.parse_args()
    bench_points(args.points)
    bench_cover(args.region, args.level, args.chunk_size)


if __name__ == "__main__":
    main()

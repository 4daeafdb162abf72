"""How long exact evaluation takes: queries/s of ``evaluate_method`` (scores, top-k, rank).

Every query is scored against every cell (the paper's rank needs all scores), so the cost
is O(queries × cells). Run: ``python benchmarks/eval_bench.py --cells 100000 --queries 1000``.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from geocells.eval.methods import MethodDatabase, codes_scorer, evaluate_method


def main() -> None:
    """Build a random cell database around one point and time one method's evaluation."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=1_000)
    parser.add_argument("--dim", type=int, default=256)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    codes = rng.normal(size=(args.cells, args.dim)).astype(np.float32)
    codes /= np.linalg.norm(codes, axis=1, keepdims=True)
    lat = 47.0 + rng.uniform(0, 0.5, args.cells)
    lon = 8.0 + rng.uniform(0, 0.7, args.cells)
    method = MethodDatabase("bench", "bench", lat, lon, codes_scorer((codes, 1.0)), 0)
    rows = rng.integers(0, args.cells, args.queries)
    queries = codes[rows] + 0.5 * rng.normal(size=(args.queries, args.dim)).astype(np.float32)
    start = time.perf_counter()
    result = evaluate_method(method, queries, lat[rows], lon[rows], top_k=10)
    seconds = time.perf_counter() - start
    print(
        f"{args.queries} queries x {args.cells} cells (D={args.dim}): {seconds:.2f} s, "
        f"{args.queries / seconds:.0f} queries/s, "
        f"{args.queries * args.cells / seconds / 1e6:.1f} M query-cell pairs/s; "
        f"R@1 within 100 m {np.mean(result.errors_m <= 100):.3f}"
    )


if __name__ == "__main__":
    main()

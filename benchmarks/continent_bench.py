"""Continent database benchmark (issue 7) — the same code as ``geocells bench continent``.

Usage (from the repository root):

    OMP_WAIT_POLICY=PASSIVE python benchmarks/continent_bench.py --max-cells 1000000 \
        --out bench/continent-1m
    python benchmarks/continent_bench.py --out bench/continent-full   # whole bedenl, ~25 M

Everything after the options is passed through as ``key=value`` config overrides
(``nprobe=16``, ``rerank=128``, ``region=europe-west``, ``codes.aerial_noise=0.8``).
"""

import os
import sys

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before faiss/numpy start threads

from geocells.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", "continent", *sys.argv[1:]]))

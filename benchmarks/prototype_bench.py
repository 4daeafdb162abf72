"""Prototype tables at continent scale (issue 7 §2): step time, peak RSS, bytes per prototype.

Runs the prototype side of a training step (real PrototypeTable, candidate rows, MS loss,
sparse optimizer; encoders left out — their cost does not depend on the table size) for
each requested configuration, and writes ``prototypes.json`` + ``prototypes.md``:

    OMP_WAIT_POLICY=PASSIVE python benchmarks/prototype_bench.py --out bench/prototypes \
        --runs 15:1000000:ram:sparse_adam 15:0:ram:row_adagrad 16:0:disk:row_adagrad

A run is LEVEL:MAX_PROTOTYPES(0 = whole region):STORAGE(ram|disk):OPTIMIZER[:DTYPE], DTYPE
float32 (default), bfloat16 or float16 for the weights in RAM. Runs that would not fit the
RAM available right now are recorded as skipped, not attempted.
"""

import argparse
import json
import logging
import os
import sys
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

DEFAULT_RUNS = [
    "15:1000000:ram:sparse_adam",
    "15:1000000:ram:row_adagrad",
    "15:0:ram:row_adagrad",
    "15:0:ram:sparse_adam",
    "16:0:ram:row_adagrad",
    "16:0:ram:row_adagrad:bfloat16",
    "16:0:disk:row_adagrad",
]


def parse_run(text: str, region: str, steps: int):
    """LEVEL:MAX:STORAGE:OPTIMIZER[:DTYPE] -> PrototypeBenchConfig."""
    from geocells.bench.prototypes import PrototypeBenchConfig

    try:
        level, cap, storage, optimizer, *dtype = text.split(":")
        if len(dtype) > 1:
            raise ValueError("too many fields")
        return PrototypeBenchConfig(
            region=region, level=int(level), max_prototypes=int(cap), storage=storage,
            optimizer=optimizer, dtype=dtype[0] if dtype else "float32", steps=steps,
        )  # fmt: skip
    except ValueError as err:
        raise SystemExit(
            f"bad run {text!r} (want LEVEL:MAX:STORAGE:OPTIMIZER[:DTYPE]): {err}"
        ) from None


def markdown(results: list[dict]) -> str:
    """One row per run."""
    lines = [
        "| level | prototypes | storage | optimizer | dtype | step ms (mean / p50) | step CPU ms "
        "| rows/step | peak RSS GiB | peak anon GiB | anon B/prototype |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        cfg = r["config"]
        head = (
            f"| {cfg['level']} | {r['prototypes']:,} | {cfg['storage']} | {cfg['optimizer']} "
            f"| {cfg.get('dtype', 'float32')} |"
        )
        if "skipped" in r:
            lines.append(f"{head} skipped: {r['skipped']} | | | | | |")
            continue
        lines.append(
            f"{head} {r['step_ms_mean']:.0f} / {r['step_ms_p50']:.0f} | "
            f"{r.get('step_cpu_ms', float('nan')):.0f} | "
            f"{r['rows_touched_per_step']:,.0f} | {r['peak_rss_bytes'] / 1024**3:.2f} | "
            f"{r['peak_anon_bytes'] / 1024**3:.2f} | {r['anon_bytes_per_prototype']:.0f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for results + disk tables")
    parser.add_argument("--region", default="bedenl")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--runs", nargs="+", default=DEFAULT_RUNS)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from geocells.bench.prototypes import run

    args.out.mkdir(parents=True, exist_ok=True)
    results = []
    for text in args.runs:
        results.append(run(parse_run(text, args.region, args.steps), args.out))
        print(json.dumps(results[-1]), flush=True)
        (args.out / "prototypes.json").write_text(json.dumps(results, indent=2))
        (args.out / "prototypes.md").write_text(markdown(results))
    print(markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())

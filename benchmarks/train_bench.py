"""Training-step benchmarks (not tests).

    python benchmarks/train_bench.py steps --config cpu-small [key=value ...]
        samples/s of full training steps (both encoders, the three loss terms, both
        optimisers) on random pixels: what the trainer can do when data loading keeps up.
        With a preset that trains on the trunk cache (cache.enabled, e.g. cpu-pretrained)
        the steps run on random float16 trunk outputs of the right shape, and the one-off
        cost of building the cache is reported as trunk images/s.
    python benchmarks/train_bench.py prototypes --rows 1000000 8000000 [--dim 256]
        step time and peak memory of the prototype side alone (mining over the table,
        sparse gradient, sparse optimiser) for big tables.

Numbers depend on the machine and its load; report them with the command line.
"""

from __future__ import annotations

import argparse
import resource
import time
from dataclasses import replace

import numpy as np
import torch


def _peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6


def bench_steps(preset: str, overrides: list[str], steps: int, threads: int) -> None:
    """Samples/s of ``train_step`` with random pixels for a train preset."""
    from geocells.models import build_model
    from geocells.train.config import experiment_config
    from geocells.train.distributed import DistInfo
    from geocells.train.optim import encoder_optimizer, prototype_optimizer
    from geocells.train.step import Encoders, train_step

    torch.set_num_threads(threads)
    cfg = experiment_config(preset, overrides)
    rows = 2000
    model = build_model(cfg, np.arange(1, rows + 1, dtype=np.uint64))
    encoders = Encoders(model)
    optimizers = {
        "encoders": encoder_optimizer([encoders], cfg.optim),
        "prototypes": prototype_optimizer(model.prototypes.embedding, cfg.optim),
    }
    batch_size, extra = cfg.train.batch_size, cfg.data.aerial_only_per_batch
    rng = np.random.default_rng(0)
    ground_size, aerial_size = model.ground.input_size, model.aerial_px
    cells = torch.from_numpy(rng.permutation(10_000)[: batch_size + extra].astype(np.int64))
    ground = torch.randint(0, 255, (batch_size, ground_size, ground_size, 3), dtype=torch.uint8)
    aerial = torch.randint(
        0, 255, (batch_size + extra, aerial_size, aerial_size, 3), dtype=torch.uint8
    )
    cached = cfg.cache.enabled
    if cached:
        ground, aerial = _trunk_outputs(model, cfg, ground, aerial)
    batch = {
        "cached": cached,
        "ground": ground,
        "aerial": aerial,
        "ground_cells": cells[:batch_size],
        "aerial_cells": cells,
        "ground_rows": torch.from_numpy(rng.integers(0, rows, batch_size)),
        "aerial_rows": torch.from_numpy(rng.integers(0, rows, batch_size + extra)),
    }
    generator = torch.Generator().manual_seed(0)
    times = []
    for _ in range(steps):
        tick = time.perf_counter()
        train_step(
            model, encoders, optimizers, batch, cfg, generator, torch.device("cpu"), DistInfo()
        )
        times.append(time.perf_counter() - tick)
    best = sorted(times[1:])[len(times[1:]) // 2]  # median after the first step
    images = 2 * batch_size + extra
    print(
        f"{preset} {' '.join(overrides)}: {ground_size}/{aerial_size} px, "
        f"batch {batch_size}+{extra}; "
        f"median step {best:.3f} s = {images / best:.1f} images/s "
        f"({batch_size / best:.1f} pairs/s) on {threads} threads"
    )


def _trunk_outputs(model, cfg, ground: torch.Tensor, aerial: torch.Tensor):
    """float16 trunk outputs of the pixels (what the trunk cache holds); prints the trunk's
    images/s, the one-off cost per cached view."""
    model.eval()
    outputs = []
    for encoder, pixels in ((model.ground, ground), (model.aerial, aerial)):
        autocast = torch.autocast("cpu", torch.bfloat16, enabled=cfg.train.bf16)
        with autocast:
            encoder.forward_trunk(encoder.normalize(pixels[:8]))  # warm-up
            tick = time.perf_counter()
            out = encoder.forward_trunk(encoder.normalize(pixels))
            seconds = time.perf_counter() - tick
        print(
            f"trunk cache build: {len(pixels) / seconds:.1f} images/s at "
            f"{encoder.input_size} px -> {tuple(out.shape[1:])} float16"
        )
        outputs.append(out.float().to(torch.float16))
    model.train()
    return outputs


def bench_prototypes(
    rows_list: list[int], dim: int, batch: int, steps: int, optimizer: str
) -> None:
    """Step time and peak memory of mining + sparse update for big prototype tables."""
    from geocells.models import PrototypeTable
    from geocells.train.config import LossConfig, OptimConfig
    from geocells.train.loss import MSParams, prototype_loss
    from geocells.train.negatives import candidate_rows
    from geocells.train.optim import prototype_optimizer

    loss_cfg = LossConfig()
    mining = replace(loss_cfg, neighbor_rings=0)  # stand-in ids have no S2 neighbours
    params = MSParams(loss_cfg.alpha, loss_cfg.beta, loss_cfg.base, loss_cfg.mining_margin)
    for rows in rows_list:
        # Consecutive level-30 ids stand in for cells (no S2 neighbours: rings = 0).
        table = PrototypeTable(np.arange(1, rows + 1, dtype=np.uint64), 15, dim)
        opt = prototype_optimizer(table.embedding, OptimConfig(prototype_optimizer=optimizer))
        generator = torch.Generator().manual_seed(0)
        times = []
        for _ in range(steps):
            anchors = torch.nn.functional.normalize(torch.randn(batch, dim), dim=1)
            anchor_rows = torch.randint(rows, (batch,))
            tick = time.perf_counter()
            candidates = candidate_rows(anchors, anchor_rows, table, params, mining, generator)
            loss = prototype_loss(anchors, anchor_rows, table(candidates), candidates, params)
            opt.zero_grad()
            loss.backward()
            opt.step()
            times.append(time.perf_counter() - tick)
        print(
            f"{rows:,} prototypes x D={dim}, {optimizer}, {batch} anchors: "
            f"median step {sorted(times)[len(times) // 2] * 1000:.0f} ms, "
            f"peak RSS {_peak_rss_gb():.2f} GB (weights {rows * dim * 4 / 1e9:.2f} GB)"
        )
        del table, opt


def main() -> None:
    """Parse the command line and run one benchmark."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="what", required=True)
    steps = sub.add_parser("steps")
    steps.add_argument("--config", default="cpu-small")
    steps.add_argument("--steps", type=int, default=6)
    steps.add_argument("--threads", type=int, default=2)
    steps.add_argument("overrides", nargs="*")
    protos = sub.add_parser("prototypes")
    protos.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 8_000_000])
    protos.add_argument("--dim", type=int, default=256)
    protos.add_argument("--batch", type=int, default=96)
    protos.add_argument("--steps", type=int, default=5)
    protos.add_argument("--optimizer", default="row_adagrad")
    args = parser.parse_args()
    if args.what == "steps":
        bench_steps(args.config, args.overrides, args.steps, args.threads)
    else:
        bench_prototypes(args.rows, args.dim, args.batch, args.steps, args.optimizer)


if __name__ == "__main__":
    main()

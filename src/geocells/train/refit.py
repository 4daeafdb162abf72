"""Prototype refit: re-optimise the prototype table against frozen encoders.

Under short training the prototypes lag the encoders (they were fitted to earlier
embeddings), and rows of cells without ground images see only a few aerial-only tiles.
The refit embeds every training ground image and ``aerial_per_row`` north-up aerial tiles
per prototype cell (tiles of level-Lc descendants, as in the database) once, then
optimises the table alone with the two triangle terms that touch prototypes
(ground -> prototype, aerial -> prototype; ``geocells.train.loss``) for many cheap epochs.

Only rows with anchors are optimised (``refit.rows=uncovered``: only rows without ground
images); other rows take part as fixed negatives. Negatives come from the trainer's
candidate selection (``geocells.train.negatives``), so big tables never form a dense
``[anchors x rows]`` matrix. The result goes to ``checkpoints/refit.safetensors`` (the
training checkpoints are not touched) with ``refit.json``, which records the SHA-256 of
the ``last.safetensors`` it was made from; ``resolve_checkpoint(RUN)`` uses the refit only
while that still matches.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from geocells.models import geomodel as _geomodel
from geocells.models.prototypes import PrototypeTable
from geocells.train.config import LossConfig, OptimConfig, RefitConfig
from geocells.train.loss import MSParams, prototype_term
from geocells.train.negatives import candidate_rows

logger = logging.getLogger(__name__)

# File names are the model layer's (``resolve_checkpoint`` prefers a current refit).
REFIT_WEIGHTS, REFIT_INFO = _geomodel.REFIT_WEIGHTS, _geomodel.REFIT_INFO
SOURCE = _geomodel.REFIT_SOURCE


@dataclass
class Anchors:
    """Frozen embeddings that pull on the prototypes: unit ``vectors [N, D]``, ``rows [N]``."""

    vectors: torch.Tensor  # float32 [N, D]
    rows: torch.Tensor  # int64 [N], prototype row of each anchor's cell

    def __len__(self) -> int:
        return len(self.rows)

    @classmethod
    def empty(cls, dim: int) -> Anchors:
        """No anchors (e.g. a term with weight 0)."""
        return cls(torch.zeros(0, dim), torch.zeros(0, dtype=torch.int64))


def trainable_mask(table_size: int, ground: Anchors, aerial: Anchors, rows: str) -> torch.Tensor:
    """bool [P]: rows the refit optimises (``all``: any anchor; ``covered``: with ground
    anchors; ``uncovered``: with aerial anchors only)."""
    has_ground = torch.zeros(table_size, dtype=torch.bool)
    has_ground[ground.rows] = True
    has_aerial = torch.zeros(table_size, dtype=torch.bool)
    has_aerial[aerial.rows] = True
    if rows == "all":
        return has_ground | has_aerial
    if rows == "covered":
        return has_ground
    if rows == "uncovered":
        return has_aerial & ~has_ground
    raise ValueError(f"refit rows {rows!r}; valid: all, covered, uncovered")


def seeded_rows(table_size: int, ground: Anchors, aerial: Anchors, init: str) -> torch.Tensor:
    """bool [P]: rows that ``init`` re-seeds (aerial anchors, no ground anchor)."""
    seeded = torch.zeros(table_size, dtype=torch.bool)
    if init != "keep":
        seeded[aerial.rows] = True
        seeded[ground.rows] = False
    return seeded


@torch.no_grad()
def prepare_rows(
    table: PrototypeTable, trainable: torch.Tensor, ground: Anchors, aerial: Anchors, init: str
) -> None:
    """Rescale the rows to refit to unit length; re-seed uncovered rows from aerial anchors.

    Unit length makes ``refit.lr`` mean the same whatever the table's init scale; the
    direction (all that the normalised prototypes use) is unchanged for ``keep``.
    ``aerial_mean``: rows without ground anchors become the mean of their aerial anchors;
    ``aerial_gap``: that mean plus the average (prototype - aerial mean) of the covered
    rows, i.e. moved across the ground/aerial modality gap into prototype space.
    """
    if init not in ("keep", "aerial_mean", "aerial_gap"):
        raise ValueError(f"refit init {init!r}; valid: keep, aerial_mean, aerial_gap")
    weight = table.embedding.weight
    if init != "keep" and len(aerial):
        aerial_mean = F.normalize(
            torch.zeros_like(weight).index_add_(0, aerial.rows, aerial.vectors), dim=1
        )
        uncovered = seeded_rows(len(table), ground, aerial, init)
        both = torch.zeros(len(table), dtype=torch.bool)
        both[aerial.rows] = True
        both &= ~uncovered
        seed = aerial_mean
        if init == "aerial_gap" and both.any():
            gap = (F.normalize(weight[both], dim=1) - aerial_mean[both]).mean(dim=0)
            seed = aerial_mean + gap
        weight[uncovered] = F.normalize(seed[uncovered], dim=1)
    rows = trainable.nonzero().squeeze(1)
    weight[rows] = F.normalize(weight[rows], dim=1)


def _candidates(
    table: PrototypeTable,
    trainable: torch.Tensor,
    anchors: torch.Tensor,
    anchor_rows: torch.Tensor,
    params: MSParams,
    loss_cfg: LossConfig,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(candidate vectors [K, D], their rows [K]); gradients flow into trainable rows only."""
    rows = candidate_rows(
        anchors,
        anchor_rows,
        table,
        params,
        loss_cfg,
        generator,
    )
    learn = trainable[rows]
    vectors = torch.cat([table(rows[learn]), table.normalized(rows[~learn])])
    return vectors, torch.cat([rows[learn], rows[~learn]])


def batch_loss(
    table: PrototypeTable,
    trainable: torch.Tensor,
    ground: Anchors,
    aerial: Anchors,
    cfg: RefitConfig,
    params: MSParams,
    loss_cfg: LossConfig,
    generator: torch.Generator,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Weighted ground->prototype + aerial->prototype MS loss of one batch of anchors."""
    anchors = torch.cat([ground.vectors, aerial.vectors])
    anchor_rows = torch.cat([ground.rows, aerial.rows])
    vectors, rows = _candidates(table, trainable, anchors, anchor_rows, params, loss_cfg, generator)
    terms = {}
    total = vectors.sum() * 0.0
    for name, part, weight in (
        ("ground_prototype", ground, cfg.weight_ground_prototype),
        ("aerial_prototype", aerial, cfg.weight_aerial_prototype),
    ):
        if len(part) == 0 or weight == 0:
            continue
        term = prototype_term(part.vectors, part.rows, vectors, rows, params, loss_cfg)
        terms[name] = float(term.detach())
        total = total + weight * term
    return total, terms


def _epoch_batches(
    ground: Anchors, aerial: Anchors, batch_size: int, generator: torch.Generator
) -> list[tuple[Anchors, Anchors]]:
    """Shuffled batches; each holds a proportional share of ground and aerial anchors."""
    steps = max(1, -(-(len(ground) + len(aerial)) // batch_size))
    batches = []
    orders = [torch.randperm(len(part), generator=generator) for part in (ground, aerial)]
    splits = [torch.tensor_split(order, steps) for order in orders]
    for ground_idx, aerial_idx in zip(*splits, strict=True):
        batches.append(
            (
                Anchors(ground.vectors[ground_idx], ground.rows[ground_idx]),
                Anchors(aerial.vectors[aerial_idx], aerial.rows[aerial_idx]),
            )
        )
    return batches


@torch.no_grad()
def mean_loss(
    table: PrototypeTable,
    ground: Anchors,
    aerial: Anchors,
    cfg: RefitConfig,
    params: MSParams,
    loss_cfg: LossConfig,
    seed: int = 0,
) -> float:
    """The refit objective over all anchors (batches of ``cfg.batch_size``, no updates)."""
    generator = torch.Generator().manual_seed(seed)
    trainable = torch.zeros(len(table), dtype=torch.bool)
    batches = _epoch_batches(ground, aerial, cfg.batch_size, generator)
    total = 0.0
    for batch_ground, batch_aerial in batches:
        loss, _ = batch_loss(
            table, trainable, batch_ground, batch_aerial, cfg, params, loss_cfg, generator
        )
        total += float(loss) * (len(batch_ground) + len(batch_aerial))
    return total / max(1, len(ground) + len(aerial))


def refit_table(
    table: PrototypeTable,
    ground: Anchors,
    aerial: Anchors,
    cfg: RefitConfig,
    params: MSParams,
    loss_cfg: LossConfig,
    prototype_optimizer: str = "sparse_adam",
    seed: int = 0,
    progress: bool = True,
) -> dict:
    """Optimise ``table`` in place against fixed anchors; returns a summary of the fit.

    Deterministic for a given ``seed``. Rows outside ``trainable_mask`` keep their bytes,
    except uncovered rows re-seeded by ``cfg.init``. ``cfg.epochs == 0``: only the re-seed.
    """
    from tqdm import tqdm

    from geocells.train.optim import lr_factor
    from geocells.train.optim import prototype_optimizer as make_optimizer

    trainable = trainable_mask(len(table), ground, aerial, cfg.rows)
    prepare_rows(table, trainable, ground, aerial, cfg.init)
    summary = {
        "rows_total": len(table),
        "rows_refitted": int(trainable.sum()) if cfg.epochs > 0 else 0,
        "rows_reseeded": int(seeded_rows(len(table), ground, aerial, cfg.init).sum()),
        "ground_anchors": len(ground),
        "aerial_anchors": len(aerial),
        "steps": 0,
        "loss_before": None,
        "loss_after": None,
    }
    if cfg.epochs == 0:
        return summary
    optim_cfg = OptimConfig(
        prototype_optimizer=prototype_optimizer,
        prototype_lr=cfg.lr,
        warmup_steps=0,
        schedule="cosine",
    )
    optimizer = make_optimizer(table.embedding, optim_cfg)
    generator = torch.Generator().manual_seed(seed)
    steps_per_epoch = max(1, -(-(len(ground) + len(aerial)) // cfg.batch_size))
    total_steps = cfg.epochs * steps_per_epoch
    before = mean_loss(table, ground, aerial, cfg, params, loss_cfg, seed)
    bar = tqdm(total=total_steps, desc="refit", unit="step", disable=None if progress else True)
    step = 0
    for _epoch in range(cfg.epochs):
        for batch_ground, batch_aerial in _epoch_batches(ground, aerial, cfg.batch_size, generator):
            for group in optimizer.param_groups:
                group["lr"] = cfg.lr * lr_factor(step, total_steps, optim_cfg)
            optimizer.zero_grad(set_to_none=True)
            loss, _terms = batch_loss(
                table, trainable, batch_ground, batch_aerial, cfg, params, loss_cfg, generator
            )
            if loss.requires_grad:
                loss.backward()
                optimizer.step()
            step += 1
            bar.update(1)
            bar.set_postfix(loss=f"{float(loss.detach()):.4f}")
    bar.close()
    after = mean_loss(table, ground, aerial, cfg, params, loss_cfg, seed)
    return {**summary, "loss_before": before, "loss_after": after, "steps": total_steps}

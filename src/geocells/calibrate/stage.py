"""``geocells calibrate``: choose κ on a validation split and fit the confidence model.

Similarities of the val queries against every cell are computed once, in chunks; the κ
of the grid with the best recall@1 within 100 m is written to ``meta.json`` (κ = 1 when
that best κ beats it by fewer than ``min_gain_z`` standard errors), the whole curve to
``calibration.csv`` and ``calibration.png``. At that κ a logistic confidence
model is fitted on the val top-k and stored in ``meta.json`` with its calibration error.
"""

from __future__ import annotations

import csv
import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from geocells.config import ConfigError, require_at_least
from geocells.data.dataset import Dataset
from geocells.db.store import DATABASE_OUTPUT, Database
from geocells.geo import cell_to_latlng, haversine_m
from geocells.io import CalibrationReport
from geocells.models.device import batch_size_for, check_device, resolve_device
from geocells.outputs import OutputFolder, output_lock
from geocells.scoring.confidence import (
    REFERENCE_FILE,
    ConfidenceModel,
    aspect_ratios,
    cross_fitted_ece,
    expected_calibration_error,
    fit_confidence_model,
    reference_embeddings,
    typicality,
)
from geocells.scoring.exact import exact_search
from geocells.scoring.kappa import (
    guard_kappa,
    kappa_grid,
    recall_by_kappa,
    select_kappa,
    similarity_chunks,
    sweep_top1,
    top1_errors,
)
from geocells.search.index_file import write_search_index

log = logging.getLogger(__name__)

CURVE_CSV = "calibration.csv"
CURVE_PNG = "calibration.png"


@dataclass
class CalibrateConfig:
    """Settings of the κ sweep and the confidence fit."""

    kappa_min: float = 0.05
    kappa_max: float = 20.0
    kappa_steps: int = 41
    radius_m: float = 100.0
    # Keep κ = 1 unless the best κ beats it on the val queries by this many standard errors
    # (paired, per query); 0 = always the grid's maximum.
    min_gain_z: float = 2.0
    top_k: int = 5  # candidates per query the confidence model is fitted on
    max_queries: int = 0  # > 0: use at most this many val images (first ones)
    chunk_size: int = 65536  # cells per similarity chunk
    batch_size: int = 0  # images per encoder call; 0: 32 on the CPU, 256 on CUDA
    device: str = "auto"  # auto (cuda when available) | cpu | cuda[:N]; bf16 autocast on cuda
    ann: str = "auto"  # index for the chosen κ: auto (IVF-PQ above 200k cells) | exact | ivfpq
    progress: bool = True

    def __post_init__(self) -> None:
        require_at_least(self, 1, ("kappa_steps", "top_k", "chunk_size"), "calibrate")
        require_at_least(self, 0, ("max_queries", "batch_size"), "calibrate")
        try:
            check_device(self.device)
        except ValueError as err:
            raise ConfigError(f"calibrate: {err}") from None
        if not 0 < self.kappa_min <= self.kappa_max:
            kappas = f"{self.kappa_min} and {self.kappa_max}"
            raise ConfigError(f"calibrate: want 0 < kappa_min <= kappa_max, got {kappas}")


@dataclass
class Sweep:
    """Outcome of a κ sweep on one set of query embeddings."""

    kappas: np.ndarray
    recall: np.ndarray
    median_error_m: np.ndarray
    best: int  # the chosen κ's index (the maximum, or κ = 1 when the guard keeps it)
    maximum: int  # index of the grid's best recall
    gain: float = 0.0  # recall of the maximum minus that of κ = 1, same queries
    gain_z: float = 0.0  # that gain in standard errors of the paired differences

    @property
    def kappa(self) -> float:
        """The chosen κ."""
        return float(self.kappas[self.best])


def top1_errors_by_kappa(
    database: Database, queries: np.ndarray, lat: np.ndarray, lon: np.ndarray, cfg: CalibrateConfig
) -> tuple[np.ndarray, np.ndarray]:
    """The κ grid and the distance (m) of every query's top-1 cell at each κ: ``[K], [K, Q]``."""

    kappas = kappa_grid(cfg.kappa_min, cfg.kappa_max, cfg.kappa_steps)
    chunks = similarity_chunks(queries, database.aerial, database.proto, cfg.chunk_size)
    rows, _ = sweep_top1(chunks, kappas)
    used, inverse = np.unique(rows, return_inverse=True)
    cell_lat, cell_lon = cell_to_latlng(np.asarray(database.cells)[used])
    return kappas, top1_errors(inverse.reshape(rows.shape), cell_lat, cell_lon, lat, lon)


def sweep(
    database: Database, queries: np.ndarray, lat: np.ndarray, lon: np.ndarray, cfg: CalibrateConfig
) -> Sweep:
    """Recall@1 within ``cfg.radius_m`` for every κ of the grid, and the best κ."""
    kappas, errors = top1_errors_by_kappa(database, queries, lat, lon, cfg)
    hits, recall, median = recall_by_kappa(errors, cfg.radius_m)
    maximum = select_kappa(kappas, recall, median)
    best, gain, z = guard_kappa(kappas, hits, maximum, cfg.min_gain_z)
    return Sweep(kappas, recall, median, best, maximum, gain, z)


def fit_confidence(
    database: Database,
    queries: np.ndarray,
    aspect: np.ndarray | None,
    lat: np.ndarray,
    lon: np.ndarray,
    kappa: float,
    cfg: CalibrateConfig,
) -> tuple[ConfidenceModel, dict[str, float]]:
    """Confidence model on the val top-k at ``kappa`` (``aspect``: the val images' width /
    height), with its in-sample and cross-fitted ECE."""

    top_k = max(cfg.top_k, 2)
    scores, rows = exact_search(
        queries, aerial=database.aerial, proto=database.proto, kappa=kappa, top_k=top_k
    )
    cell_lat, cell_lon = cell_to_latlng(np.asarray(database.cells)[rows.reshape(-1)])
    errors = haversine_m(cell_lat, cell_lon, np.repeat(lat, top_k), np.repeat(lon, top_k))
    correct = (errors <= cfg.radius_m).reshape(rows.shape)
    if correct.all() or not correct.any():
        log.warning(
            "calibrate: %s of the val top-%d candidates are within %.0f m; the confidence "
            "model has nothing to separate and will say %s",
            "all" if correct.all() else "none", top_k, cfg.radius_m,
            "~1" if correct.all() else "~0",
        )  # fmt: skip
    model = fit_confidence_model(scores, correct, queries, aspect, radius_m=cfg.radius_m)
    reference = reference_embeddings(queries)
    own = typicality(queries, reference, model.neighbours)
    in_sample = expected_calibration_error(model.predict(scores, own)[:, 0], correct[:, 0])
    report = {"ece": in_sample, "top1_accuracy": float(correct[:, 0].mean())}
    if len(scores) >= 20:
        report["ece_cross_fitted"] = cross_fitted_ece(scores, correct, queries)
    return model, report


def write_curve(out: OutputFolder, result: Sweep, split: str) -> None:
    """``calibration.csv`` and ``calibration.png`` of recall against κ, written to ``out``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with out.file(CURVE_CSV) as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["kappa", "recall_100m", "median_error_m"])
        for row in zip(result.kappas, result.recall, result.median_error_m):
            writer.writerow([f"{row[0]:.6g}", f"{row[1]:.6f}", f"{row[2]:.2f}"])
    figure, axis = plt.subplots(figsize=(6, 4), dpi=120)
    axis.semilogx(result.kappas, 100 * result.recall, marker=".", label=f"{split} recall@1 ≤ 100 m")
    axis.axvline(
        result.kappa, color="tab:red", linestyle="--", label=f"chosen κ = {result.kappa:.3g}"
    )
    axis.axvline(1.0, color="grey", linestyle=":", label="κ = 1")
    if result.maximum != result.best:
        axis.plot(
            result.kappas[result.maximum], 100 * result.recall[result.maximum], "o",
            color="tab:orange", label=f"maximum κ = {result.kappas[result.maximum]:.3g} "
            f"(+{100 * result.gain:.2f} points, z = {result.gain_z:.1f}: noise)",
        )  # fmt: skip
    axis.set_xlabel("κ (weight of the prototype similarity)")
    axis.set_ylabel("recall@1 within 100 m (%)")
    axis.grid(True, which="both", alpha=0.3)
    axis.legend()
    figure.tight_layout()
    with out.file(CURVE_PNG) as tmp:
        figure.savefig(tmp)
    plt.close(figure)


def embed_queries(model: Any, manifest: Any, cfg: CalibrateConfig) -> tuple[np.ndarray, ...]:
    """Ground embeddings of the manifest's images; unreadable images are skipped (logged).

    Returns ``(embeddings [Q, D], kept row indices [Q], width / height of the images [Q])``.
    """
    count = len(manifest) if cfg.max_queries <= 0 else min(cfg.max_queries, len(manifest))
    embedded = model.ground.embed_files(
        manifest.path[:count],
        cfg.batch_size,
        progress=cfg.progress,
        desc="calibrate: queries",
        extra=aspect_ratios,
    )
    if len(embedded.kept) == 0:
        raise ValueError("calibrate: no readable validation images")
    return embedded.embeddings, embedded.kept, embedded.extra


def run(
    cfg: CalibrateConfig | None,
    db: Database | str | Path,
    dataset: Dataset | str | Path | None = None,
    *,
    split: str = "val",
) -> Path:
    """Calibrate ``db`` on ``split`` of ``dataset`` (default: the dataset it was built from);
    the database folder is its output (κ, the confidence model and the index in it).

    ``db`` and ``dataset`` are folders or handles already open (``Database``, ``Dataset``:
    the pipeline passes its own, and ``db``'s ``meta`` is updated in place).

    ``test`` is refused (κ and the confidence fitted on the test queries would make every
    test number optimistic); ``train`` is accepted with a warning (the model has seen those
    images, so κ and the confidence come out overconfident).
    """
    if split == "test":
        raise ValueError(
            "calibrate --split test: refused, κ and the confidence fitted on the test split "
            "would make every test result optimistic; calibrate on val (the default)"
        )
    if split == "train":
        log.warning(
            "calibrate --split train: the model was trained on these images, so κ and the "
            "confidence fitted on them are optimistic; val (the default) is what they are for"
        )
    cfg = cfg or CalibrateConfig()
    database = Database.of(db, recalibrating=True)
    # calibrate rewrites meta.json and the index: refused while `index` writes the folder.
    with output_lock(database.path, DATABASE_OUTPUT) as folder:
        return _calibrate(database, folder, dataset, split, cfg)


def _calibrate(database: Database, out: OutputFolder, dataset, split: str, cfg: CalibrateConfig):
    """The body of ``run``, under the database's lock (its files written through ``out``)."""
    data = database.open_dataset(dataset)
    manifest = data.manifest.split(split)
    if len(manifest) == 0:
        raise ValueError(f"dataset {data.root} has no {split!r} images to calibrate on")
    device = resolve_device(cfg.device)
    model = database.load_model(device)
    cfg = replace(cfg, batch_size=batch_size_for(device, cfg.batch_size))
    queries, kept, aspect = embed_queries(model, manifest, cfg)
    lat, lon = manifest.lat[kept], manifest.lon[kept]
    result = sweep(database, queries, lat, lon, cfg)
    confidence, report = fit_confidence(database, queries, aspect, lat, lon, result.kappa, cfg)
    write_curve(out, result, split)
    with out.file(REFERENCE_FILE) as tmp:
        np.save(tmp, reference_embeddings(queries))
    at_one = int(np.flatnonzero(result.kappas == 1.0)[0])
    calibration = CalibrationReport(
        split=split,
        # Which queries the recall below was measured on: eval warns when it differs.
        dataset=str(Path(data.root).resolve()),
        dataset_sha256=data.fingerprint,
        queries=len(kept),
        radius_m=cfg.radius_m,
        recall=float(result.recall[result.best]),
        recall_kappa_1=float(result.recall[at_one]),
        median_error_m=float(result.median_error_m[result.best]),
        grid=[cfg.kappa_min, cfg.kappa_max, cfg.kappa_steps],
        kappa_max_recall=float(result.kappas[result.maximum]),
        max_gain_over_kappa_1=result.gain,
        max_gain_z=result.gain_z,
        min_gain_z=cfg.min_gain_z,
        **report,
    )
    database.update_meta(
        out,
        kappa=result.kappa,
        kappa_calibrated=True,
        confidence=confidence.to_dict(),
        calibration=calibration,
    )
    write_search_index(database, cfg.ann, rebuild=True)
    if result.best != result.maximum:
        log.warning(
            "calibrate: the best κ on %s (%.3g) beats κ = 1 by %+.2f points on %d queries, "
            "z = %.1f < %.1f: within noise, so κ = 1 is kept (min_gain_z = 0 takes the maximum)",
            split, calibration.kappa_max_recall, 100 * result.gain, len(kept), result.gain_z,
            cfg.min_gain_z,
        )  # fmt: skip
    log.info(
        "calibrate: κ = %.3g, %s recall@1 ≤ %.0f m on %s: %.1f%% (κ = 1: %.1f%%), "
        "confidence ECE %.3f",
        result.kappa,
        split,
        cfg.radius_m,
        calibration.dataset,
        100 * calibration.recall,
        100 * calibration.recall_kappa_1,
        calibration.ece,
    )
    return database.path

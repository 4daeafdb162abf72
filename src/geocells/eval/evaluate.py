"""The ``eval`` stage: every method on the same queries and cells -> metrics.json + report.html.

``run(options, db, dataset, out, split=...)`` embeds the split's ground images once with the
database's model, scores them against each method's database (see ``methods``), writes
``metrics.json`` (overall and stratified metrics, database sizes) and a self-contained
``report.html``. Query and training-image embeddings are cached under ``out/cache``;
a finished report is skipped unless ``overwrite``.
"""

from __future__ import annotations

import logging
import shutil
import zipfile
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from geocells.config import ConfigError, require_at_least
from geocells.data.dataset import Dataset
from geocells.data.manifest import SPLITS
from geocells.db.store import Database
from geocells.eval.build_methods import CACHE, build_methods, search_comparison
from geocells.eval.histogram import colour_histograms
from geocells.eval.methods import MethodDatabase, MethodResult, evaluate_method
from geocells.eval.predictions import PREDICTIONS_FILE, write_predictions
from geocells.eval.report import render_html
from geocells.eval.summary import METRICS_FILE, CalibrationSource, EvalSummary
from geocells.eval.visuals import build_report
from geocells.geo import latlng_to_cell
from geocells.models.device import batch_size_for, check_device, resolve_device
from geocells.outputs import OutputFolder, OutputKind, stage_output
from geocells.scoring import metrics

logger = logging.getLogger(__name__)

REPORT_FILE = "report.html"
# What `eval` writes into its --out folder; a folder holding other files is refused.
REPORT_OUTPUT = OutputKind(
    stage="eval",
    known=(METRICS_FILE, REPORT_FILE, PREDICTIONS_FILE, CACHE),
    signature=(METRICS_FILE, REPORT_FILE, CACHE),
)


@dataclass
class EvalOptions:
    """Knobs of the evaluation (none of them changes a method, only what is measured)."""

    top_k: int = 10
    batch_size: int = 0  # images per encoder call; 0: 64 on the CPU, 256 on CUDA
    device: str = "auto"  # auto (cuda when available) | cpu | cuda[:N]; bf16 autocast on cuda
    urban_threshold_per_km2: float = 100.0  # training images per km² within density_radius_m
    density_radius_m: float = 300.0
    histogram_px: int = 64
    ground_retrieval: bool = True
    colour_histogram: bool = True
    examples_per_kind: int = 4
    interactive_map: bool = True
    # Searcher of the hybrid's answers, as `geocells locate --backend`: auto = the
    # database's IVF-PQ index when it has one (exact up to 200k cells).
    search: str = "auto"
    # Also measure R@1 through a fresh IVF-PQ index over the same codes (metrics.json "search").
    compare_ivfpq: bool = True
    progress: bool = True

    def __post_init__(self) -> None:
        require_at_least(self, 1, ("top_k", "histogram_px"), "eval")
        require_at_least(self, 0, ("examples_per_kind", "batch_size"), "eval")
        try:
            check_device(self.device)
        except ValueError as err:
            raise ConfigError(f"eval: {err}") from None


@dataclass
class QuerySet:
    """Embedded images of one split: positions, embeddings, colour histograms, paths."""

    image_id: np.ndarray
    path: np.ndarray
    lat: np.ndarray
    lon: np.ndarray
    embeddings: np.ndarray
    histograms: np.ndarray

    def features(self, kind: str) -> np.ndarray:
        """The query features a method scores: ``embedding`` or ``histogram``."""
        return self.embeddings if kind == "embedding" else self.histograms


def embed_split(
    encoder, manifest, out: OutputFolder, options: EvalOptions, tag: str, model_tag: str = ""
) -> QuerySet:
    """Embed (and colour-histogram) every image of ``manifest``; unreadable ones are dropped.

    Results are cached in ``out``'s ``cache/{tag}-{model_tag}.npz`` (so a new model is
    re-embedded).
    """

    cache_name = f"{CACHE}/{tag}-{model_tag}.npz"
    cache_file = out.path / cache_name
    if cache_file.is_file():
        try:
            with np.load(cache_file, allow_pickle=False) as data:
                if data["image_id"].tolist() == [str(i) for i in manifest.image_id]:
                    logger.info("reusing cached embeddings %s", cache_file)
                    return _query_set(manifest, np.ones(len(manifest), bool), data)
                ok = np.isin(manifest.image_id.astype(str), data["image_id"])
                if ok.sum() == len(data["image_id"]):
                    return _query_set(manifest, ok, data)
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as err:  # a cache
            logger.warning("ignoring unreadable cache %s (%s): embedding again", cache_file, err)
    n = len(manifest)
    if n == 0:
        logger.warning("the %s split has no images", tag)
        empty = {"embeddings": np.zeros((0, encoder.dim), np.float32)}
        return _query_set(manifest, np.zeros(0, bool), {**empty, "histograms": np.zeros((0, 1))})
    embedded = encoder.embed_files(
        manifest.path,
        options.batch_size,
        fov=manifest.fov,
        heading=manifest.heading,
        extra=colour_histograms,
        progress=options.progress,
        desc=f"embed {tag}",
    )
    ok = np.zeros(n, dtype=bool)
    ok[embedded.kept] = True
    if not ok.any():
        raise ValueError(f"no image of the {tag} split could be read")
    data = {
        "image_id": manifest.image_id[ok].astype(str),
        "embeddings": embedded.embeddings,
        "histograms": embedded.extra.astype(np.float32),
    }
    with out.file(cache_name) as partial:
        np.savez(partial, **data)
    return _query_set(manifest, ok, data)


def _query_set(manifest, ok: np.ndarray, data) -> QuerySet:
    return QuerySet(
        image_id=manifest.image_id[ok],
        path=manifest.path[ok],
        lat=manifest.lat[ok],
        lon=manifest.lon[ok],
        embeddings=np.asarray(data["embeddings"]),
        histograms=np.asarray(data["histograms"]),
    )


def _positions_only(manifest) -> QuerySet:
    """A split's positions without embedding it (no method searches its images)."""
    n = len(manifest)
    nothing = {"embeddings": np.zeros((n, 0), np.float32), "histograms": np.zeros((n, 0))}
    return _query_set(manifest, np.ones(n, bool), nothing)


def _strata(queries: QuerySet, train: QuerySet, levels: dict[str, int], options: EvalOptions):
    """Stratum labels per query, and what each stratification means.

    ``level-L cell``: covered/uncovered by training ground images at Lc and Lp;
    ``density``: urban/rural by training images per km² around the query.
    """

    strata, definitions = {}, {}
    for level in (levels["cell"], levels["proto"]):
        query_cells = latlng_to_cell(queries.lat, queries.lon, level)
        train_cells = latlng_to_cell(train.lat, train.lon, level)
        key = f"level-{level} cell"
        strata[key] = metrics.covered_strata(query_cells, train_cells)
        definitions[key] = f"covered: the query's level-{level} cell holds a training ground image"
    density = metrics.coverage_density_per_km2(
        queries.lat, queries.lon, train.lat, train.lon, options.density_radius_m
    )
    strata["density"] = metrics.density_strata(density, options.urban_threshold_per_km2)
    definitions["density"] = (
        f"urban: ≥ {options.urban_threshold_per_km2:g} training ground images per km² within "
        f"{options.density_radius_m:g} m of the query; rural: fewer"
    )
    return strata, definitions


def summarise_methods(
    methods: list[MethodDatabase],
    results: dict[str, MethodResult],
    strata: dict[str, np.ndarray],
    area_km2: float,
    top_k: int,
) -> dict:
    """The metrics.json body: per-method metrics and sizes, and every stratification."""
    ks = tuple(k for k in metrics.DEFAULT_TOP_K if k <= top_k)
    out = {"methods": {}, "strata": {}}
    for method in methods:
        result = results[method.name]
        out["methods"][method.name] = {
            "label": method.label,
            "database_items": len(method),
            "storage_bytes": int(method.storage_bytes),
            "bytes_per_km2": method.storage_bytes / area_km2,
            "metrics": metrics.summarize(
                result.errors_m, result.topk_errors_m, result.ranks, top_k=ks
            ),
        }
    for kind, labels in strata.items():
        by_label: dict[str, dict] = {}
        for method in methods:
            result = results[method.name]
            per = metrics.stratified(
                labels, result.errors_m, result.topk_errors_m, result.ranks, top_k=ks
            )
            for label, values in per.items():
                by_label.setdefault(label, {})[method.name] = values
        out["strata"][kind] = by_label
    return out


def run(
    options: EvalOptions | None,
    db: Database | str | Path,
    dataset: Dataset | str | Path | None,
    out: str | Path,
    *,
    split: str = "test",
    overwrite: bool = False,
) -> Path:
    """Evaluate every method of ``db`` on ``split`` of ``dataset`` (None: the database's)
    and write ``out/metrics.json`` + ``out/report.html``; a finished report of ``split`` is
    kept (``overwrite`` redoes it, dropping the cache; the old report stays until the new
    one is complete: both files are written atomically). ``db`` and ``dataset`` are folders
    or handles already open (the pipeline passes the ones calibrate used)."""

    options = options or EvalOptions()
    out = Path(out)
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; valid: {', '.join(SPLITS)}")
    done = _report_done(split)
    with stage_output(
        out, REPORT_OUTPUT, overwrite=overwrite, finished=done, clear=False
    ) as folder:
        if folder.skip:
            return out
        if overwrite:
            shutil.rmtree(out / CACHE, ignore_errors=True)
        return _evaluate(db, dataset, split, folder, options)


def _report_done(split: str):
    """``stage_output``'s check: a report of ``split`` is there (of another: refused)."""

    def done(out: Path) -> bool:
        if not ((out / METRICS_FILE).is_file() and (out / REPORT_FILE).is_file()):
            return False
        found = EvalSummary.load(out).split
        if found != split:
            raise ValueError(f"{out} holds a report of the {found!r} split; use --overwrite")
        return True

    return done


def _evaluate(db, dataset, split: str, out: OutputFolder, options: EvalOptions) -> Path:
    """The body of ``run``, under the folder's lock, the folder claimed (written through
    ``out``)."""
    database = Database.of(db)
    data = database.open_dataset(dataset)
    if not database.meta.kappa_calibrated:
        logger.warning("eval: κ of %s is not calibrated (run `geocells calibrate`)", database.path)
    summary, results, queries = evaluate_all(database, data, split, out, options)
    source = summary.calibration
    if source is not None and not source.same_dataset:
        logger.warning(
            "eval: κ = %.3g was calibrated on the %s split of another dataset (%s), not on %s: "
            "the calibration recall in %s/meta.json is not comparable with this report",
            database.kappa, source.split, source.dataset, data.root, database.path,
        )  # fmt: skip
    out.save(summary)
    labels = {name: method["label"] for name, method in summary.methods.items()}
    write_predictions(out, queries, results, labels, database.cell_level, split)
    report = build_report(summary, results, queries, data, database, options)
    out.write_text(REPORT_FILE, render_html(report))
    logger.info("eval: wrote %s, %s and %s in %s", METRICS_FILE, PREDICTIONS_FILE, REPORT_FILE,
                out.path)  # fmt: skip
    return out.path


def evaluate_all(database, data, split: str, out: OutputFolder, options: EvalOptions):
    """Embed, build every method, score -> (EvalSummary, results by name, queries); the
    embeddings are cached in ``out``."""

    device = resolve_device(options.device)
    model = database.load_model(device)
    options = replace(options, batch_size=batch_size_for(device, options.batch_size, cpu=64))
    query_manifest = data.manifest.split(split)
    if len(query_manifest) == 0:
        raise ValueError(f"dataset {data.root} has no {split!r} images")
    model_tag = database.meta.model_sha256[:12]
    queries = embed_split(model.ground, query_manifest, out, options, split, model_tag)
    train_manifest = data.manifest.split("train")
    if options.ground_retrieval:
        train = embed_split(model.ground, train_manifest, out, options, "train", model_tag)
    else:  # the strata need only where the training images are, not what they look like
        train = _positions_only(train_manifest)
    methods = build_methods(database, model, data, train, options, out)
    results = {}
    for method in methods:
        logger.info("eval: scoring %s (%d items)", method.label, len(method))
        results[method.name] = evaluate_method(
            method, queries.features(method.query_kind), queries.lat, queries.lon, options.top_k
        )
    search = search_comparison(database, results["hybrid"], queries, options)
    levels = {"cell": database.cell_level, "proto": database.meta.proto_level}
    strata, definitions = _strata(queries, train, levels, options)
    scores = summarise_methods(methods, results, strata, data.region.area_km2(), options.top_k)
    summary = EvalSummary(
        split=split,
        queries=len(queries.lat),
        train_images=len(train.lat),
        database=str(database.path.resolve()),
        dataset=str(Path(data.root).resolve()),
        region_area_km2=data.region.area_km2(),
        levels=levels,
        kappa=database.kappa,
        kappa_calibrated=database.meta.kappa_calibrated,
        calibration=CalibrationSource.of(database.meta, data.fingerprint),
        methods=scores["methods"],
        strata=scores["strata"],
        strata_definitions=definitions,
        search=search,
        options=asdict(options),
    )
    return summary, results, queries

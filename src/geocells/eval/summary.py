"""``metrics.json``: the eval stage's summary, one typed and versioned artifact.

``geocells eval`` writes it (``EvalSummary.save``), and everything that reads a report
back — the skip-if-done check, the text tables of ``geocells eval`` and ``geocells demo``,
the benchmarks — reads it through ``EvalSummary.load``. Per-method metrics and strata stay
maps (metric name -> value), as ``scoring.metrics.summarize`` returns them.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from geocells.io import Artifact, ArtifactError, CalibrationReport, DatabaseMeta

log = logging.getLogger(__name__)

METRICS_FILE = "metrics.json"


@dataclass
class CalibrationSource:
    """Where the κ a report was measured with came from (``metrics.json`` ``calibration``)."""

    split: str  # the split κ was chosen on
    dataset: str  # the dataset of those queries
    dataset_sha256: str
    recall_100m: float  # calibrate's recall@1 there
    same_dataset: bool  # that dataset is the one evaluated
    # The best κ of the grid and its val gain over κ = 1 (z in standard errors; None when
    # not measured): when z fell short of min_gain_z, calibrate kept κ = 1.
    kappa_max_recall: float | None  # None: not recorded (a summary of an earlier eval)
    max_gain_z: float | None
    kept_kappa_1: bool

    @classmethod
    def of(cls, meta: DatabaseMeta, fingerprint: str) -> CalibrationSource | None:
        """The source of ``meta``'s κ, compared with the evaluated dataset's ``fingerprint``;
        None for an uncalibrated database."""
        report = meta.calibration
        if not meta.kappa_calibrated or report is None:
            return None
        return cls.from_report(report, meta.kappa, fingerprint)

    @classmethod
    def from_report(
        cls, report: CalibrationReport, kappa: float, fingerprint: str
    ) -> CalibrationSource:
        """The source described by calibrate's ``report`` for a database at ``kappa``."""
        return cls(
            split=report.split,
            dataset=report.dataset,
            dataset_sha256=report.dataset_sha256,
            recall_100m=report.recall,
            same_dataset=report.dataset_sha256 == fingerprint,
            kappa_max_recall=report.kappa_max_recall,
            max_gain_z=report.max_gain_z,
            kept_kappa_1=report.kappa_max_recall != 1.0 and kappa == 1.0,
        )


@dataclass
class EvalSummary(Artifact):
    """``report/metrics.json``: every method's metrics on one split, and what they mean."""

    FILE: ClassVar[str] = METRICS_FILE
    KIND: ClassVar[str] = "evaluation summary"
    REBUILD: ClassVar[str] = "geocells eval DB --out REPORT --overwrite"

    split: str
    queries: int  # readable query images
    train_images: int  # readable training images (strata, ground retrieval)
    database: str  # absolute path of the database
    dataset: str  # absolute path of the dataset
    region_area_km2: float
    levels: dict[str, int]  # {"cell": Lc, "proto": Lp}
    kappa: float
    kappa_calibrated: bool
    calibration: CalibrationSource | None
    # name -> {label, database_items, storage_bytes, bytes_per_km2, metrics: {key: value}}
    # in the order of the report's table.
    methods: dict[str, dict[str, Any]]
    strata: dict[str, dict[str, dict[str, dict[str, float]]]]  # kind -> label -> method
    strata_definitions: dict[str, str] = field(default_factory=dict)
    search: dict[str, Any] | None = None  # the hybrid through IVF-PQ vs exact
    options: dict[str, Any] = field(default_factory=dict)  # the EvalOptions used

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "") -> EvalSummary:
        """As ``Artifact.from_dict``, with ``calibration`` typed."""
        summary = super().from_dict(data, source)
        if isinstance(summary.calibration, dict):
            names = {f.name for f in dataclasses.fields(CalibrationSource)}
            try:
                summary.calibration = CalibrationSource(
                    **{k: v for k, v in summary.calibration.items() if k in names}
                )
            except TypeError as err:
                raise ArtifactError(
                    f"{source or cls.KIND}: calibration {err}; rebuild it: {cls.REBUILD}"
                ) from None
        return summary

    @classmethod
    def migrate(cls, data: dict[str, Any], version: Any, where: str) -> dict[str, Any]:
        """A version-less ``metrics.json`` (earlier eval) reads: what it lacks was not
        measured then (no strata definitions, no search comparison, no calibration source)."""
        if version is not None:
            raise cls.refusal(version, where)
        migrated = {"strata_definitions": {}, "search": None, "calibration": None}
        migrated.update(data, format_version=cls.VERSION)
        if migrated["calibration"] is not None:
            migrated["calibration"].setdefault("max_gain_z", None)
            migrated["calibration"].setdefault("kappa_max_recall", None)
            migrated["calibration"].setdefault("kept_kappa_1", False)
        log.info("%s: read a version-less evaluation summary", where)
        return migrated

    def to_json(self) -> str:
        """``metrics.json``'s text: methods in table order (not sorted)."""
        return json.dumps(self.to_dict(), indent=2, allow_nan=True) + "\n"

    @classmethod
    def of(cls, report: EvalSummary | str | Path) -> EvalSummary:
        """``report`` itself, or the summary in a report folder or its ``metrics.json``."""
        if isinstance(report, EvalSummary):
            return report
        path = Path(report)
        return cls.read(path) if path.suffix == ".json" else cls.load(path)

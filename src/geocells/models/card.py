"""ModelCard: everything a trained model needs to be rebuilt, stored in its checkpoint.

The card holds the model config, the two S2 levels and the aerial tile footprint
(``CellGeometry``, whose defaults are the only ones: a card without them is refused, with
the fix, never filled in). The
experiment config a run was trained with rides along as ``experiment`` (provenance: a
plain dict, never parsed on load), so renaming or adding a trainer setting can never
break loading a checkpoint or a database built from one.

Checkpoint metadata (safetensors): ``geocells_format = geocells-model-v2`` and
``geocells_card`` (the card's JSON). Version-1 checkpoints stored the whole experiment
config under ``geocells_config``; ``card_from_metadata`` reads those too.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any, ClassVar

from geocells.config import ConfigError, config_to_dict, resolve_config
from geocells.geo import DEFAULT_CELL_LEVEL, DEFAULT_PROTOTYPE_LEVEL
from geocells.io import Artifact, ArtifactError
from geocells.models.config import ModelConfig

FORMAT_METADATA_KEY = "geocells_format"
CARD_METADATA_KEY = "geocells_card"
V1_CONFIG_METADATA_KEY = "geocells_config"
FORMAT = "geocells-model-v2"
FORMAT_V1 = "geocells-model-v1"


@dataclass
class CellGeometry:
    """The S2 levels and aerial tile footprint a model is trained for: the one home of
    their defaults and checks (the training config's ``data`` section extends it, the
    ModelCard records them without defaults)."""

    cell_level: int = DEFAULT_CELL_LEVEL  # Lc: database cells and ground<->aerial labels
    prototype_level: int = DEFAULT_PROTOTYPE_LEVEL  # Lp: one prototype per cell of this level
    aerial_tile_m: float = 154.0  # footprint (edge, metres) of an aerial tile

    def cross_check(self) -> None:
        """``geocells.config.check_settings``'s hook: the geometry check."""
        self.check_geometry()

    def check_geometry(self) -> None:
        """Raise ConfigError naming the first level or size that cannot be used."""
        for name in GEOMETRY_FIELDS[:2]:
            if not 0 <= getattr(self, name) <= 30:
                raise ConfigError(f"data.{name} must be in 0..30, got {getattr(self, name)}")
        if self.prototype_level > self.cell_level:
            raise ConfigError(
                f"data.prototype_level ({self.prototype_level}) must not exceed "
                f"data.cell_level ({self.cell_level})"
            )
        if self.aerial_tile_m <= 0:
            raise ConfigError(f"data.aerial_tile_m must be positive, got {self.aerial_tile_m}")


GEOMETRY_FIELDS = tuple(f.name for f in dataclasses.fields(CellGeometry))


def missing_geometry(where: str, missing: list[str]) -> ArtifactError:
    """The refusal of a checkpoint whose card lacks levels or tile size, with the fix."""
    fields = ", ".join(f"data.{name}" for name in missing)
    example = ", ".join(f"{name}={getattr(CellGeometry(), name):g}" for name in GEOMETRY_FIELDS)
    return ArtifactError(
        f"{where}: the model card does not record {fields} (the S2 levels and aerial tile "
        f"size the model was trained with, which no default can stand for); retrain it "
        f"({ModelCard.REBUILD}), or write the values it was trained with into it: "
        f"python -c 'from geocells.models.geomodel import record_geometry; "
        f'record_geometry("{where}", {example})\''
    )


@dataclass
class ModelCard(Artifact):
    """Model config + levels + tile size: all ``build_model`` needs; ``experiment``: provenance."""

    VERSION: ClassVar[int] = 2
    KIND: ClassVar[str] = "model card"
    REBUILD: ClassVar[str] = "geocells train DATASET --out RUN"

    model: ModelConfig = field(default_factory=ModelConfig)
    cell_level: int = field(kw_only=True)  # Lc (CellGeometry)
    prototype_level: int = field(kw_only=True)  # Lp
    aerial_tile_m: float = field(kw_only=True)  # aerial tile footprint (edge, metres)
    experiment: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        super().__post_init__()
        self.check()

    @property
    def geometry(self) -> CellGeometry:
        """The card's levels and tile size."""
        return CellGeometry(**{name: getattr(self, name) for name in GEOMETRY_FIELDS})

    def check(self) -> None:
        """Raise ConfigError naming the first level or size that cannot be used."""
        self.geometry.check_geometry()

    @classmethod
    def from_experiment(cls, experiment: Any) -> ModelCard:
        """The card of an experiment config (any dataclass with ``model`` and ``data``)."""
        data = experiment.data
        return cls(
            model=experiment.model,
            cell_level=data.cell_level,
            prototype_level=data.prototype_level,
            aerial_tile_m=data.aerial_tile_m,
            experiment=config_to_dict(experiment),
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return config_to_dict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "") -> ModelCard:
        """Rebuild from ``to_dict`` output; unknown *model* keys are errors (they would build
        another network), anything under ``experiment`` is kept unread."""
        where = source or cls.KIND
        if not isinstance(data, dict) or data.get("format_version") != cls.VERSION:
            raise cls.refusal(data.get("format_version") if isinstance(data, dict) else None, where)
        if not isinstance(data.get("model"), dict):
            raise ArtifactError(
                f"{where}: the model card has no model config (the network it describes); "
                f"retrain it: {cls.REBUILD}"
            )
        try:
            model = resolve_config(ModelConfig, data["model"])
        except ConfigError as err:
            raise ArtifactError(f"{where}: the model config cannot be used: {err}") from None
        missing = [name for name in GEOMETRY_FIELDS if name not in data]
        if missing:
            raise missing_geometry(where, missing)
        keys = (*GEOMETRY_FIELDS, "experiment")
        return cls(model=model, **{key: data[key] for key in keys if key in data})

    @classmethod
    def from_experiment_dict(cls, experiment: dict[str, Any], where: str) -> ModelCard:
        """The card of a version-1 checkpoint: its ``model`` and ``data`` sections only."""
        if not isinstance(experiment, dict) or not isinstance(experiment.get("model"), dict):
            raise ArtifactError(f"{where}: the stored config has no model section")
        data = experiment.get("data")
        data = data if isinstance(data, dict) else {}
        card = {
            "format_version": cls.VERSION,
            "model": experiment["model"],
            **{name: data[name] for name in GEOMETRY_FIELDS if name in data},
            "experiment": experiment,
        }
        return cls.from_dict(card, where)

    def metadata(self) -> dict[str, str]:
        """safetensors metadata that lets ``load_model`` rebuild the model from the file."""
        return {FORMAT_METADATA_KEY: FORMAT, CARD_METADATA_KEY: json.dumps(self.to_dict())}


def card_from_metadata(metadata: dict[str, str], where: str) -> ModelCard:
    """The card stored in a checkpoint's metadata (format v2, or v1's experiment config)."""
    kind = metadata.get(FORMAT_METADATA_KEY)
    try:
        if kind == FORMAT and CARD_METADATA_KEY in metadata:
            return ModelCard.from_dict(json.loads(metadata[CARD_METADATA_KEY]), where)
        if kind == FORMAT_V1 and V1_CONFIG_METADATA_KEY in metadata:
            return ModelCard.from_experiment_dict(
                json.loads(metadata[V1_CONFIG_METADATA_KEY]), where
            )
    except json.JSONDecodeError as err:
        raise ArtifactError(f"{where}: the model card is not valid JSON ({err})") from None
    raise ArtifactError(
        f"{where} is not a geocells model checkpoint (format {kind!r}; this geocells reads "
        f"{FORMAT} and {FORMAT_V1}); retrain with: {ModelCard.REBUILD}"
    )


def card_with_geometry(metadata: dict[str, str], geometry: CellGeometry, where: str) -> ModelCard:
    """The card of a checkpoint's ``metadata`` (v2 or v1) with ``geometry`` recorded in it:
    the repair of a card that lacks its levels or tile size (``record_geometry``)."""
    kind = metadata.get(FORMAT_METADATA_KEY)
    values = dataclasses.asdict(geometry)
    try:
        if kind == FORMAT and CARD_METADATA_KEY in metadata:
            stored = json.loads(metadata[CARD_METADATA_KEY])
            return ModelCard.from_dict({**stored, **values}, where)
        if kind == FORMAT_V1 and V1_CONFIG_METADATA_KEY in metadata:
            experiment = json.loads(metadata[V1_CONFIG_METADATA_KEY])
            data = experiment.get("data") if isinstance(experiment, dict) else None
            data = {**(data if isinstance(data, dict) else {}), **values}
            return ModelCard.from_experiment_dict({**experiment, "data": data}, where)
    except (json.JSONDecodeError, TypeError) as err:
        raise ArtifactError(f"{where}: the model card is not valid JSON ({err})") from None
    return card_from_metadata(metadata, where)  # not a geocells checkpoint: its refusal


@dataclass
class RefitRecord(Artifact):
    """``checkpoints/refit.json``: what ``geocells refit`` made ``refit.safetensors`` from.

    Written by the refit stage, read by ``resolve_checkpoint`` (which uses the refit only
    while ``source_sha256`` is that of the present ``last.safetensors``) and by the refit
    stage's skip check. In the file, ``stats`` (anchor and row counts, losses) stand at the
    top level beside the fields; a version-less file of an earlier refit reads the same.
    """

    FILE: ClassVar[str] = "refit.json"
    KIND: ClassVar[str] = "prototype refit record"
    REBUILD: ClassVar[str] = "geocells refit RUN --overwrite"

    source: str  # the checkpoint refitted, in the same folder (last.safetensors)
    source_sha256: str
    settings: dict[str, Any]  # the refit and loss settings it was made with
    seconds: float
    stats: dict[str, Any] = field(default_factory=dict)  # refit_table's summary

    def to_dict(self) -> dict[str, Any]:
        """The fields, with ``stats`` spread at the top level."""
        data = dataclasses.asdict(self)
        return {**data.pop("stats"), **data}

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "") -> RefitRecord:
        """Rebuild from ``to_dict`` output (keys other than the fields are the stats)."""
        names = {f.name for f in dataclasses.fields(cls)}
        if isinstance(data, dict):
            stats = {k: v for k, v in data.items() if k not in names}
            data = {**{k: v for k, v in data.items() if k in names}, "stats": stats}
        return super().from_dict(data, source)

    @classmethod
    def migrate(cls, data: dict[str, Any], version: Any, where: str) -> dict[str, Any]:
        """A version-less refit.json (the same keys) reads as version 1."""
        if version is None:
            return {**data, "format_version": cls.VERSION}
        raise cls.refusal(version, where)

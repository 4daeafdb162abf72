"""``index.faiss.json``: what a saved search index was built for (one typed, versioned file).

``CellSearcher.save`` writes it beside the faiss file, ``CellSearcher.load`` reads it back
through ``SearchIndexMeta.read`` and nowhere else; a file of another version, or one that
does not describe an index, is an ``ArtifactError`` naming it and ``geocells calibrate``
(which rebuilds the index of a database).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from geocells.io import Artifact, ArtifactError

SEARCH_BACKENDS = ("exact", "ivfpq")
# What a version-2 index (before the sq8 refine file) was built and searched with.
FORMAT_2_PARAMS = {"finder": "flat", "refine": "none", "exact_rerank": 0, "residual": False}


@dataclass
class SearchIndexMeta(Artifact):
    """The sidecar of a saved searcher: backend, the κ a ``sum`` index holds, its size, the
    resolved ``IVFPQParams`` (as a dict; None for exact search) and the trained range of the
    sq8 refine codes (``index.faiss.sq8.npy``; None without that refine).

    Version 3 added the refine file, the list finder and ``exact_rerank``; a version-2 file
    migrates with the parameters it was built with, so an old index searches as built."""

    VERSION: ClassVar[int] = 3
    KIND: ClassVar[str] = "search index description"
    REBUILD: ClassVar[str] = "geocells calibrate DB"

    backend: str  # exact | ivfpq
    index_kappa: float | None  # the κ baked into a "sum" index (None: exact)
    num_cells: int  # database rows it was built over
    dim: int  # code dimension D
    params: dict[str, Any] | None  # IVFPQParams fields (ivfpq), None (exact)
    refine_trained: list[float] | None = None  # sq8 refine: faiss SQ8 trained vmin/vdiff

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.backend not in SEARCH_BACKENDS:
            raise ArtifactError(f"unknown search backend {self.backend!r}")
        if self.backend == "ivfpq" and not isinstance(self.params, dict):
            raise ArtifactError(f"params must be an object, got {self.params!r}")

    @classmethod
    def migrate(cls, data: dict[str, Any], version: Any, where: str) -> dict[str, Any]:
        """Version 2 (no refine file): its params gain what it was built with."""
        if version != 2:
            raise cls.refusal(version, where)
        if isinstance(data.get("params"), dict):
            data["params"] = {**FORMAT_2_PARAMS, **data["params"]}
        return {**data, "format_version": cls.VERSION}

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "") -> SearchIndexMeta:
        """As ``Artifact.from_dict``; a bad backend or params names ``source`` and calibrate."""
        try:
            return super().from_dict(data, source)
        except ArtifactError as err:
            text = str(err)
            if text.startswith(source or cls.KIND):
                raise
            raise ArtifactError(
                f"{source or cls.KIND}: {text}; rebuild it: {cls.REBUILD}"
            ) from None

    @staticmethod
    def path_of(index_path: str | Path) -> Path:
        """The sidecar of an index file: ``index.faiss`` -> ``index.faiss.json``."""
        index_path = Path(index_path)
        return index_path.with_name(index_path.name + ".json")

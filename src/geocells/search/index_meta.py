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


@dataclass
class SearchIndexMeta(Artifact):
    """The sidecar of a saved searcher: backend, the κ a ``sum`` index holds, its size and
    the resolved ``IVFPQParams`` (as a dict; None for exact search)."""

    VERSION: ClassVar[int] = 2
    KIND: ClassVar[str] = "search index description"
    REBUILD: ClassVar[str] = "geocells calibrate DB"

    backend: str  # exact | ivfpq
    index_kappa: float | None  # the κ baked into a "sum" index (None: exact)
    num_cells: int  # database rows it was built over
    dim: int  # code dimension D
    params: dict[str, Any] | None  # IVFPQParams fields (ivfpq), None (exact)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.backend not in SEARCH_BACKENDS:
            raise ArtifactError(f"unknown search backend {self.backend!r}")
        if self.backend == "ivfpq" and not isinstance(self.params, dict):
            raise ArtifactError(f"params must be an object, got {self.params!r}")

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

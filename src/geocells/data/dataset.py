"""A dataset folder: region, ground manifest (+ images), aerial imagery, optional world.

Layout (docs/architecture.md)::

    DATASET/region.geojson           the region (WGS84 Polygon/MultiPolygon)
    DATASET/world.json               synthetic worlds only: seed + resolved synth config
    DATASET/ground/manifest.parquet  (or manifest.csv) paths relative to the manifest
    DATASET/ground/images/...
    DATASET/aerial/                  GeoTIFFs, an XYZ folder, MBTiles, or tileset.json

Parts are loaded lazily on first access, so a dataset with only some parts (an imported
ground set waiting for its aerial imagery) still opens; a missing part raises an error
naming the path and what belongs there.
"""

from __future__ import annotations

import json
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from geocells.data.aerial import AerialSource, open_aerial
from geocells.data.manifest import GroundManifest

if TYPE_CHECKING:
    from geocells.geo.region import Region

REGION_FILE = "region.geojson"
WORLD_FILE = "world.json"
GROUND_DIR = "ground"
IMAGES_DIR = "ground/images"
MANIFEST_FILES = ("ground/manifest.parquet", "ground/manifest.csv")
AERIAL_DIR = "aerial"


class Dataset:
    """Handle on a dataset folder; ``.region``, ``.manifest``, ``.aerial``, ``.world`` load
    on first use."""

    def __init__(self, root: Path, strict: bool = False, check_files: bool | None = None):
        self.root = root
        self.strict = strict
        self.check_files = check_files

    @classmethod
    def open(
        cls, root: str | Path, strict: bool = False, check_files: bool | None = None
    ) -> Dataset:
        """Open a dataset folder (``strict``/``check_files`` apply to the manifest)."""
        root = Path(root).expanduser().resolve()
        if not root.is_dir():
            raise FileNotFoundError(f"dataset folder not found: {root}")
        parts = [root / REGION_FILE, root / AERIAL_DIR, *(root / m for m in MANIFEST_FILES)]
        if not any(part.exists() for part in parts):
            raise ValueError(
                f"{root} is not a geocells dataset: it has none of {REGION_FILE}, "
                f"{MANIFEST_FILES[0]}, {AERIAL_DIR}/"
            )
        return cls(root, strict, check_files)

    def __repr__(self) -> str:
        return f"Dataset({self.root})"

    @property
    def manifest_path(self) -> Path:
        """The ground manifest file (Parquet preferred over CSV)."""
        for name in MANIFEST_FILES:
            if (self.root / name).is_file():
                return self.root / name
        raise FileNotFoundError(
            f"dataset {self.root} has no ground manifest ({' or '.join(MANIFEST_FILES)}); "
            "create one with `geocells import` or `geocells synth`"
        )

    @cached_property
    def manifest(self) -> GroundManifest:
        """The validated ground manifest (bad rows skipped unless ``strict``)."""
        return GroundManifest.read(self.manifest_path, self.strict, self.check_files)

    @property
    def has_aerial(self) -> bool:
        """Whether the ``aerial/`` folder exists and is not empty."""
        folder = self.root / AERIAL_DIR
        return folder.is_dir() and any(folder.iterdir())

    @cached_property
    def aerial(self) -> AerialSource:
        """The aerial source opened from ``aerial/``."""
        folder = self.root / AERIAL_DIR
        if not self.has_aerial:
            raise FileNotFoundError(
                f"dataset {self.root} has no aerial imagery: put GeoTIFF/COG files, an XYZ "
                "tile folder (tiles.json or gdal2tiles' tilemapresource.xml), one .mbtiles "
                f"file or a tileset.json of centred tiles in {folder}"
            )
        return open_aerial(folder)

    def aerial_coverage(self, cells: Any) -> Any:
        """Whether each S2 cell's centre has aerial imagery: ``bool [N]`` for ``uint64 [N]``
        ids. ValueError when none has (``train`` and ``index`` refuse such a dataset)."""
        from geocells.geo import cell_to_latlng

        lat, lon = cell_to_latlng(cells)
        covered = self.aerial.contains(lat, lon)
        if not covered.any():
            bounds = ", ".join(f"{value:.5g}" for value in self.aerial.bounds)
            raise ValueError(
                f"dataset {self.root}: no region cell has aerial imagery (the {len(covered)} "
                f"cell centres lie outside the aerial bounds (S, W, N, E) {bounds}; check the "
                f"CRS and extent of the files in {self.root / AERIAL_DIR})"
            )
        return covered

    @cached_property
    def region(self) -> Region:
        """The region polygon from ``region.geojson``."""
        from geocells.geo.region import Region

        path = self.root / REGION_FILE
        if not path.is_file():
            raise FileNotFoundError(
                f"dataset {self.root} has no {REGION_FILE} (a WGS84 Polygon/MultiPolygon)"
            )
        return Region.from_geojson(path)

    @cached_property
    def world(self) -> dict[str, Any] | None:
        """``world.json`` of a synthetic dataset, None for real data."""
        path = self.root / WORLD_FILE
        if not path.is_file():
            return None
        try:
            return json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise ValueError(f"{path} is not valid JSON: {err}") from err

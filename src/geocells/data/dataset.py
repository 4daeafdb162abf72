"""A dataset folder: region, ground manifest (+ images), aerial imagery, optional world.

Layout (docs/architecture.md)::

    DATASET/region.geojson           the region (WGS84 Polygon/MultiPolygon)
    DATASET/world.json               synthetic worlds only: seed + resolved synth config
    DATASET/ground/manifest.parquet  (or manifest.csv; with both, Parquet is read and the
                                     CSV named in a warning) paths relative to the manifest
    DATASET/ground/images/...
    DATASET/ground/image_roots.txt   optional: image folders outside DATASET (one per line,
                                     relative to ground/ like manifest paths; imports write it)
    DATASET/aerial/                  GeoTIFFs, an XYZ folder, MBTiles, or tileset.json

Parts are loaded lazily on first access, so a dataset with only some parts (an imported
ground set waiting for its aerial imagery) still opens; a missing part raises an error
naming the path and what belongs there. Manifest paths must stay inside the dataset
folder or a folder of ``ground/image_roots.txt`` (where imports keep their images); a row
leading elsewhere (``../../etc/passwd``) is a bad row.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from geocells.data.aerial import AerialSource, open_aerial
from geocells.data.manifest import GroundManifest
from geocells.io import dataset_fingerprint

if TYPE_CHECKING:
    from geocells.geo.region import Region

logger = logging.getLogger(__name__)

REGION_FILE = "region.geojson"
WORLD_FILE = "world.json"
GROUND_DIR = "ground"
IMAGES_DIR = "ground/images"
MANIFEST_FILES = ("ground/manifest.parquet", "ground/manifest.csv")
IMAGE_ROOTS_FILE = "ground/image_roots.txt"
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

    @classmethod
    def of(cls, dataset: Dataset | str | Path) -> Dataset:
        """``dataset`` itself when it is an open handle, else ``Dataset.open(dataset)``.

        How a stage takes its dataset: the CLI passes a folder, the pipeline the one
        handle it opened, so the region, manifest, aerial source and fingerprint are read
        once per run of the demo, not once per stage.
        """
        return dataset if isinstance(dataset, Dataset) else cls.open(dataset)

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
        """The validated ground manifest (bad rows skipped unless ``strict``); a
        ``manifest.csv`` beside ``manifest.parquet`` is named in a warning (it is not read)."""
        parquet, csv = (self.root / name for name in MANIFEST_FILES)
        if parquet.is_file() and csv.is_file():
            logger.warning(
                "dataset %s has both %s and %s: reading the Parquet one, the CSV is ignored "
                "(remove or rename whichever is stale)", self.root, MANIFEST_FILES[0],
                MANIFEST_FILES[1],
            )  # fmt: skip
        inside = [self.root, *read_image_roots(self.root)]
        return GroundManifest.read(self.manifest_path, self.strict, self.check_files, inside)

    @cached_property
    def fingerprint(self) -> str:
        """``io.dataset_fingerprint`` of this folder (region, world, aerial file list), once
        per handle: the stages record it in what they write and compare it on reading."""
        return dataset_fingerprint(self.root)

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


def read_image_roots(root: Path) -> list[Path]:
    """The image folders outside ``root`` that its ``ground/image_roots.txt`` declares."""
    path = root / IMAGE_ROOTS_FILE
    if not path.is_file():
        return []
    lines = [line.strip() for line in path.read_text().splitlines()]
    folders = [line for line in lines if line and not line.startswith("#")]
    return [Path(os.path.normpath(root / GROUND_DIR / folder)) for folder in folders]


def write_image_roots(path: Path, folders: Sequence[Path], root: Path) -> None:
    """Write ``folders`` to ``path`` (an ``image_roots.txt`` of dataset ``root``)."""
    ground = root / GROUND_DIR
    lines = [os.path.relpath(folder, ground) for folder in folders]
    header = "# image folders outside this dataset its manifest may use (relative to ground/)"
    path.write_text("\n".join([header, *lines]) + "\n")

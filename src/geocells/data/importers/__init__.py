"""Importers: datasets as they are distributed -> a geocells dataset folder.

Images stay where they are; the manifest points at them by paths relative to
``DATASET/ground/`` (source roots are made absolute first, so a relative root works from
any working directory). One module per format (layouts in each module's docstring and in
docs/datasets.md): ``vigor``, ``osv5m``, ``table`` (any CSV; MP-16 and GeoCLIP presets),
``msls`` (Mapillary Street-level Sequences), ``photos`` (a folder of EXIF-geotagged
photos). Each returns ``ImportRows``; ``finish.finish_import`` validates, checks images,
fits the region and writes the dataset atomically with its import report.

    run("vigor", "/data/VIGOR", "datasets/vigor", ImportOptions(), protocol="same-area")
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from geocells.data.importers.common import (
    ImportOptions,
    ImportResult,
    ImportRows,
    assign_splits,
    carve_val,
    hash_fraction,
)
from geocells.data.importers.finish import IMPORT_REGION_NAME, check_out, finish_import
from geocells.data.importers.msls import import_msls
from geocells.data.importers.osv5m import import_osv5m
from geocells.data.importers.photos import import_photos
from geocells.data.importers.table import PRESETS, import_csv
from geocells.data.importers.vigor import import_vigor
from geocells.outputs import OutputKind, output_lock

IMPORT_OUTPUT = OutputKind(stage="import", known=(), signature=())

IMPORTERS: dict[str, Callable[..., ImportRows]] = {
    "vigor": import_vigor,
    "osv5m": import_osv5m,
    "csv": import_csv,
    "msls": import_msls,
    "photos": import_photos,
}

__all__ = [
    "IMPORTERS",
    "IMPORT_REGION_NAME",
    "PRESETS",
    "ImportOptions",
    "ImportResult",
    "ImportRows",
    "assign_splits",
    "carve_val",
    "check_out",
    "finish_import",
    "hash_fraction",
    "run",
]


def get_importer(source: str) -> Callable[..., ImportRows]:
    """The reader of one source format; an unknown name lists the valid ones."""
    if source not in IMPORTERS:
        raise ValueError(f"unknown import source {source!r}; valid: {', '.join(IMPORTERS)}")
    return IMPORTERS[source]


def run(
    options: ImportOptions | None,
    source: str,
    root: str | Path,
    out: str | Path,
    *,
    overwrite: bool = False,
    **source_options,
) -> ImportResult | None:
    """Import ``root`` (format ``source``) into the dataset folder ``out``; None when
    ``out`` is already done. Unlike the other stages it returns what it imported and
    skipped (``ImportResult``, with the report file), since that is what its caller shows."""
    reader = get_importer(source)
    # The lock only: an import adds to a folder that may hold the user's own region and
    # aerial imagery, and replaces only the files it writes itself (finish.py).
    with output_lock(out, IMPORT_OUTPUT):
        if check_out(Path(out), overwrite):
            return None
        rows = reader(root, **source_options)
        return finish_import(Path(out), rows, options or ImportOptions())

"""What every importer shares: options, the rows it found, splits by hash, time stamps."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from geocells.data.images import IMAGE_CHECKS
from geocells.geo import DEFAULT_CELL_LEVEL

# Ceiling on the cells at ``cell_level`` of a region fitted to the images (a worldwide
# scatter of photos is refused in seconds, not covered square by square), and the size above
# which a region given with ``--region`` gets a warning: the continent benchmark holds 24.6 M
# level-16 cells in memory on one machine (docs/scaling.md). An import itself never holds
# the region's cells: their number is estimated from the area.
DEFAULT_MAX_REGION_CELLS = 30_000_000


@dataclass
class ImportOptions:
    """Choices shared by all importers (the CLI flags of the same names)."""

    strict: bool = False  # fail, writing nothing, when any row or image would be skipped
    check_images: str = "header"  # header | decode | off (geocells.data.images.check_image)
    region: str | None = None  # preset, GeoJSON file or bbox:...; None: derived from points
    region_pad_m: float = 500.0  # derived region: distance kept around every point
    cell_level: int = DEFAULT_CELL_LEVEL  # level whose cell count the memory guard checks
    # None: fitted regions are refused above DEFAULT_MAX_REGION_CELLS, a region you give is
    # accepted (with a warning above it); a number: every region above it is refused.
    max_region_cells: int | None = None
    workers: int = 4  # threads reading image headers
    progress: bool = True  # a bar over the image check (drawn on a terminal only)

    def __post_init__(self) -> None:
        if self.check_images not in IMAGE_CHECKS:
            raise ValueError(
                f"unknown image check {self.check_images!r}; valid: {', '.join(IMAGE_CHECKS)}"
            )
        if not 0 <= self.cell_level <= 30:
            raise ValueError(f"cell level must be in 0..30, got {self.cell_level}")
        if self.max_region_cells is not None and self.max_region_cells < 1:
            raise ValueError(f"max region cells must be >= 1, got {self.max_region_cells}")


@dataclass
class ImportRows:
    """Rows an importer found (absolute paths) and what it skipped (item, reason).

    ``columns`` holds manifest columns by name (``image_id, path, lat, lon, split`` and
    any of ``heading, fov, captured_at``); ``aerial`` is an aerial source description to
    write into ``DATASET/aerial/`` (VIGOR's satellite tile set), or None. ``roots``: the
    folders the user gave (absolute) — the only ones outside the dataset its images may be
    in; a row leading elsewhere is a bad row (``confine``).
    """

    columns: dict[str, np.ndarray]
    skipped: list[tuple[str, str]] = field(default_factory=list)
    aerial: dict | None = None
    source: str = ""
    roots: tuple[Path, ...] = ()


@dataclass
class ImportResult:
    """What an import wrote and what it skipped (item, reason)."""

    dataset: Path
    counts: dict[str, int]
    skipped: list[tuple[str, str]] = field(default_factory=list)
    region: str = ""
    region_cells: int = 0  # estimated cells at the guard's level
    report: Path | None = None


def absolute_root(root: str | Path, what: str) -> Path:
    """``root`` made absolute (relative roots are taken from the working directory once,
    here, so every path below it is absolute whatever reads the manifest later)."""
    root = Path(os.path.abspath(Path(root).expanduser()))
    if not root.exists():
        raise FileNotFoundError(f"{what} not found: {root}")
    return root


def hash_fraction(ids: Iterable[str]) -> np.ndarray:
    """A stable number in [0, 1) per id (SHA-1 based; independent of order and machine)."""
    values = [int.from_bytes(hashlib.sha1(str(i).encode()).digest()[:8], "big") for i in ids]
    return np.array(values, dtype=np.float64) / 2.0**64


def assign_splits(ids: np.ndarray, fractions: tuple[float, float, float]) -> np.ndarray:
    """Deterministic train/val/test per id from its hash; ``fractions`` sum to 1."""
    train, val, test = fractions
    if min(fractions) < 0 or abs(train + val + test - 1.0) > 1e-6:
        raise ValueError(f"split fractions must be >= 0 and sum to 1, got {fractions}")
    draw = hash_fraction(ids)
    return np.where(draw < train, "train", np.where(draw < train + val, "val", "test")).astype(
        object
    )


def carve_val(ids: np.ndarray, splits: np.ndarray, val_fraction: float) -> np.ndarray:
    """Move a deterministic ``val_fraction`` of the train rows to val (by hash of id)."""
    if not 0 <= val_fraction < 1:
        raise ValueError(f"val fraction must be in [0, 1), got {val_fraction}")
    splits = np.asarray(splits, dtype=object).copy()
    splits[(splits == "train") & (hash_fraction(ids) < val_fraction)] = "val"
    return splits


def iso_time(values: Iterable, problems: list[tuple[int, str]] | None = None) -> np.ndarray:
    """Epoch milliseconds (OSV-5M, Mapillary) -> ISO 8601 UTC; other text is kept.

    A number no calendar holds (``99999999999999999999``) becomes '' and, with
    ``problems``, ``(index, reason)`` is recorded there (else it raises ValueError).
    """
    from datetime import UTC, datetime

    out = []
    for index, value in enumerate(values):
        if value is None or value == "" or (isinstance(value, float) and np.isnan(value)):
            out.append("")
        elif isinstance(value, (int, float, np.integer, np.floating)) or str(value).isdigit():
            try:
                out.append(datetime.fromtimestamp(float(value) / 1000.0, tz=UTC).isoformat())
            except (OverflowError, OSError, ValueError):
                reason = f"captured_at {value} is no time (epoch milliseconds out of range)"
                if problems is None:
                    raise ValueError(reason) from None
                problems.append((index, reason))
                out.append("")
        else:
            out.append(str(value))
    return np.array(out, dtype=object)

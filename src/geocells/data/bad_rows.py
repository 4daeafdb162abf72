"""Bad manifest rows: what is wrong with each, and the summaries that report them."""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

_MAX_LISTED = 20


@dataclass(frozen=True)
class BadRow:
    """One rejected manifest row: 1-based data row number, its id (if any) and why."""

    row: int
    image_id: str
    reason: str
    kinds: tuple[str, ...] = ()  # the problem kinds of the row ("missing file", ...)

    def __str__(self) -> str:
        return f"row {self.row} (image_id {self.image_id!r}): {self.reason}"


class Problems(dict):
    """Row index -> [(kind, message)] for the rows that have problems (sparse)."""

    def add(self, row: int, kind: str, message: str) -> None:
        """Record one problem of a row; ``kind`` groups problems in the summary."""
        self.setdefault(int(row), []).append((kind, message))

    def mentions(self, row: int, column: str) -> bool:
        """Whether a problem about ``column`` was already recorded for ``row``."""
        return any(message.startswith(column + " ") for _, message in self.get(int(row), ()))


def bad_row_kinds(bad: Sequence[BadRow]) -> Counter:
    """How many bad rows have each problem kind."""
    return Counter(kind for row in bad for kind in row.kinds)


def describe_bad_rows(bad: Sequence[BadRow], limit: int = _MAX_LISTED) -> str:
    """``(10 × missing file, 5 × ...):`` then the first ``limit`` rows, one per line, and
    ``... and K more``."""
    summary = ", ".join(f"{count} × {kind}" for kind, count in bad_row_kinds(bad).most_common())
    listed = "\n  ".join(str(b) for b in bad[:limit])
    more = f"\n  ... and {len(bad) - limit} more" if len(bad) > limit else ""
    return f"({summary}):\n  {listed}{more}"


def check_inside(
    written: np.ndarray, paths: np.ndarray, folders: list[str], problems: Problems
) -> np.ndarray:
    """Report the (absolute, normalised) ``paths`` that are in none of ``folders``; -> mask."""
    if not len(paths) or not folders:
        return np.zeros(len(paths), dtype=bool)
    text = pa.array(paths.tolist(), pa.string())
    inside = paths == ""
    for folder in folders:
        prefix = os.path.normpath(os.path.abspath(folder)).rstrip(os.sep) + os.sep
        inside |= pc.starts_with(text, prefix).to_numpy(zero_copy_only=False)
    where = f"the dataset folder {folders[0]}"
    if len(folders) > 1:
        where += f" and the {len(folders) - 1} image folder(s) it declares"
    for i in np.flatnonzero(~inside):
        message = (
            f"path {written[i]!r} is outside {where} (move the image into the dataset, or "
            "list its folder in ground/image_roots.txt)"
        )
        problems.add(i, "path outside the dataset", message)
    return ~inside

"""Ground manifest: one row per ground image (Parquet or CSV), read and validated.

Columns: ``image_id, path, lat, lon, heading, fov, captured_at, split, role``;
``heading``, ``fov``, ``captured_at`` and ``role`` are optional. ``role`` keeps a source's
own query/database distinction (MSLS: ``query`` or ``database``; '' when the source has
none) and is written only when some row has one. ``path`` is relative to the manifest file
(absolute paths are kept). Row numbers in messages are 1-based data rows (the header is
not counted), so CSV row ``n`` is on line ``n + 1``.

Bad rows (missing file, missing/NaN/out-of-range coordinate, duplicate id, unknown split,
bad heading/fov, unknown role) are reported with their row number and reason; by default they are
skipped and counted (``.bad_rows``), with ``strict=True`` reading fails listing them all.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from geocells.data.bad_rows import BadRow, Problems, check_inside, describe_bad_rows
from geocells.data.files import missing_files, missing_reason

logger = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
REQUIRED_COLUMNS = ("image_id", "path", "lat", "lon", "split")
OPTIONAL_COLUMNS = ("heading", "fov", "captured_at", "role")
COLUMNS = ("image_id", "path", "lat", "lon", "heading", "fov", "captured_at", "split", "role")
ROLES = ("query", "database")  # values of the optional ``role`` column ('' = none)
# Manifests up to this many rows have their files checked when check_files is None.
AUTO_CHECK_FILES_MAX_ROWS = 2_000_000


def _string_column(table: pa.Table, name: str) -> np.ndarray:
    """Column as an object array of str, nulls as ''."""
    if name not in table.column_names:
        return np.full(table.num_rows, "", dtype=object)
    values = pc.fill_null(pc.cast(table.column(name), pa.string()), "")
    return values.to_numpy(zero_copy_only=False).astype(object)


def _float_column(table: pa.Table, name: str, problems: Problems) -> tuple[np.ndarray, np.ndarray]:
    """Column as float64 and a mask of missing (null/empty) entries; text that is no number
    becomes NaN and is reported in ``problems``."""
    n = table.num_rows
    if name not in table.column_names:
        return np.full(n, np.nan), np.ones(n, dtype=bool)
    column = table.column(name)
    missing = column.is_null().to_numpy(zero_copy_only=False)
    if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
        try:
            values = pc.cast(column, pa.float64()).to_numpy(zero_copy_only=False)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as err:
            raise ValueError(
                f"manifest column {name!r} of type {column.type} is not numeric"
            ) from err
        return np.asarray(values, dtype=np.float64), missing
    text = pc.utf8_trim_whitespace(column)
    missing = missing | pc.equal(text, "").to_numpy(zero_copy_only=False)
    try:
        values = pc.cast(pc.if_else(pc.equal(text, ""), None, text), pa.float64())
        return np.asarray(values.to_numpy(zero_copy_only=False), dtype=np.float64), missing
    except pa.ArrowInvalid:
        pass  # some entry is not a number: parse one by one to say which
    text = text.to_numpy(zero_copy_only=False)
    values = np.full(n, np.nan)
    for i in np.flatnonzero(~missing):
        try:
            values[i] = float(text[i])
        except ValueError:
            problems.add(i, "bad number", f"{name} is not a number: {text[i]!r}")
            missing[i] = True  # marked "missing" so it is not reported as NaN too
    return values, missing


def _check_range(
    values: np.ndarray,
    missing: np.ndarray,
    name: str,
    low: float,
    high: float,
    problems: Problems,
) -> None:
    """Report missing, NaN and out-of-range values of a required numeric column."""
    for i in np.flatnonzero(missing):
        if not problems.mentions(i, name):
            problems.add(i, "missing value", f"{name} is missing")
    for i in np.flatnonzero(~missing & np.isnan(values)):
        problems.add(i, "NaN coordinate", f"{name} is NaN")
    with np.errstate(invalid="ignore"):
        outside = ~np.isnan(values) & ~((values >= low) & (values <= high))
    for i in np.flatnonzero(outside):
        message = f"{name} {float(values[i])!r} outside [{low:g}, {high:g}]"
        problems.add(i, f"{name} out of range", message)


class GroundManifest:
    """Validated ground images: numpy columns, absolute paths, ``.bad_rows`` that were dropped.

    Columns: ``image_id`` (object str), ``path`` (object str, absolute), ``lat``, ``lon``
    (float64 degrees), ``heading``, ``fov`` (float64 degrees, NaN when unknown),
    ``captured_at`` (object str, '' when unknown), ``split`` (object str), ``role`` (object
    str: ``query``, ``database`` or '').
    """

    def __init__(
        self,
        columns: dict[str, np.ndarray],
        bad_rows: Sequence[BadRow] = (),
        source: Path | None = None,
    ) -> None:
        self.image_id = columns["image_id"]
        self.path = columns["path"]
        self.lat = columns["lat"]
        self.lon = columns["lon"]
        self.heading = columns["heading"]
        self.fov = columns["fov"]
        self.captured_at = columns["captured_at"]
        self.split_name = columns["split"]
        self.role = columns["role"]
        self.bad_rows = list(bad_rows)
        self.source = source

    # -- construction ---------------------------------------------------------------------

    @classmethod
    def read(
        cls,
        path: str | Path,
        strict: bool = False,
        check_files: bool | None = None,
        inside: Sequence[str | Path] | None = None,
    ) -> GroundManifest:
        """Read a Parquet (``.parquet``) or CSV (``.csv``) manifest and validate every row.

        ``check_files=None`` checks that image files exist when the manifest has at most
        ``AUTO_CHECK_FILES_MAX_ROWS`` rows; ``inside``: see ``from_table``.
        """
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"manifest not found: {path}")
        table = _read_table(path)
        base = path.resolve().parent
        return cls.from_table(table, base, strict, check_files, source=path, inside=inside)

    @classmethod
    def from_table(
        cls,
        table: pa.Table,
        base_dir: str | Path,
        strict: bool = False,
        check_files: bool | None = None,
        source: Path | None = None,
        inside: Sequence[str | Path] | None = None,
    ) -> GroundManifest:
        """Validate an Arrow table; relative paths are resolved against ``base_dir``.

        ``inside``: the folders image paths must stay in (a dataset folder first, then the
        image folders it declares); a path leading elsewhere (``../../etc/passwd``, an
        absolute path) is a bad row. None: no such check.
        """
        where = f"manifest {source}" if source else "manifest"
        missing_columns = [c for c in REQUIRED_COLUMNS if c not in table.column_names]
        if missing_columns:
            raise ValueError(
                f"{where} lacks required column(s) {', '.join(missing_columns)} "
                f"(has: {', '.join(table.column_names)})"
            )
        unknown = sorted(set(table.column_names) - set(COLUMNS))
        if unknown:
            logger.debug("%s: ignoring extra columns %s", where, unknown)
        n = table.num_rows
        problems = Problems()
        columns = {name: _string_column(table, name) for name in ("image_id", "path", "split")}
        columns["captured_at"] = _string_column(table, "captured_at")
        columns["role"] = _string_column(table, "role")
        lat, lat_missing = _float_column(table, "lat", problems)
        lon, lon_missing = _float_column(table, "lon", problems)
        _check_range(lat, lat_missing, "lat", -90.0, 90.0, problems)
        _check_range(lon, lon_missing, "lon", -180.0, 180.0, problems)
        heading, _ = _float_column(table, "heading", problems)
        fov, _ = _float_column(table, "fov", problems)
        for i in np.flatnonzero(np.isinf(heading)):
            problems.add(i, "bad heading", f"heading {float(heading[i])!r} is not finite")
        with np.errstate(invalid="ignore"):
            bad_fov = ~np.isnan(fov) & ~((fov > 0) & (fov <= 360))
        for i in np.flatnonzero(bad_fov):
            problems.add(i, "bad fov", f"fov {float(fov[i])!r} outside (0, 360]")
        columns.update(lat=lat, lon=lon, heading=np.mod(heading, 360.0), fov=fov)
        _check_ids_and_splits(columns, problems)
        written = columns["path"]
        columns["path"] = _absolute_paths(written, str(base_dir))
        outside = np.zeros(n, dtype=bool)
        if inside is not None:  # such a row is refused without looking at its file
            folders = [str(folder) for folder in inside]
            outside = check_inside(written, columns["path"], folders, problems)
        if check_files is None:
            check_files = n <= AUTO_CHECK_FILES_MAX_ROWS
        if check_files:
            has_path = (columns["path"] != "") & ~outside
            missing = np.zeros(n, dtype=bool)
            missing[has_path] = missing_files(columns["path"][has_path])
            for i in np.flatnonzero(missing):
                problems.add(i, "missing file", missing_reason(columns["path"][i]))
        bad = [
            BadRow(
                i + 1,
                str(columns["image_id"][i]),
                "; ".join(m for _, m in problems[i]),
                tuple(dict.fromkeys(kind for kind, _ in problems[i])),
            )
            for i in sorted(problems)
        ]
        _report_bad_rows(bad, where, strict, n)
        keep = np.ones(n, dtype=bool)
        keep[list(problems)] = False
        return cls({k: v[keep] for k, v in columns.items()}, bad, source)

    @classmethod
    def from_columns(
        cls,
        base_dir: str | Path,
        strict: bool = True,
        check_files: bool | None = None,
        **columns: Sequence | np.ndarray,
    ) -> GroundManifest:
        """Build from column arrays (``image_id=..., path=..., lat=...``) and validate them."""
        unknown = sorted(set(columns) - set(COLUMNS))
        if unknown:
            raise ValueError(f"unknown manifest column(s) {unknown}; valid: {list(COLUMNS)}")
        table = pa.table({k: pa.array(np.asarray(v).tolist()) for k, v in columns.items()})
        return cls.from_table(table, base_dir, strict, check_files)

    # -- access ---------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.image_id)

    def __repr__(self) -> str:
        counts = ", ".join(f"{s}={int((self.split_name == s).sum())}" for s in SPLITS)
        return f"GroundManifest({len(self)} images: {counts}; {len(self.bad_rows)} bad rows)"

    def take(self, rows: np.ndarray) -> GroundManifest:
        """The manifest restricted to ``rows`` (indices or a boolean mask)."""
        columns = {name: getattr(self, _attribute(name))[rows] for name in COLUMNS}
        return GroundManifest(columns, self.bad_rows, self.source)

    def split(self, name: str) -> GroundManifest:
        """Rows of one split (``train``, ``val`` or ``test``)."""
        if name not in SPLITS:
            raise ValueError(f"unknown split {name!r}; valid: {', '.join(SPLITS)}")
        return self.take(self.split_name == name)

    def counts(self) -> dict[str, int]:
        """Number of images per split."""
        return {s: int((self.split_name == s).sum()) for s in SPLITS}

    def to_table(self, relative_to: str | Path | None = None) -> pa.Table:
        """Arrow table; paths made relative to ``relative_to`` where possible."""
        paths = self.path
        if relative_to is not None:
            paths = _relative_paths(self.path, os.path.abspath(relative_to))
        roles = {}
        if (self.role != "").any():
            roles = {"role": pa.array([r or None for r in self.role.tolist()], pa.string())}
        return pa.table(
            {
                "image_id": pa.array(self.image_id.tolist(), pa.string()),
                "path": pa.array(paths.tolist(), pa.string()),
                "lat": pa.array(self.lat, pa.float64()),
                "lon": pa.array(self.lon, pa.float64()),
                "heading": pa.array(self.heading, pa.float64(), mask=np.isnan(self.heading)),
                "fov": pa.array(self.fov, pa.float64(), mask=np.isnan(self.fov)),
                "captured_at": pa.array(
                    [c or None for c in self.captured_at.tolist()], pa.string()
                ),
                "split": pa.array(self.split_name.tolist(), pa.string()),
                **roles,
            }
        )

    def write(self, path: str | Path, relative_to: str | Path | None = None) -> Path:
        """Write as Parquet (or CSV for a ``.csv`` name), paths relative to the file's folder
        (or to ``relative_to``: a file written elsewhere and moved into place later).

        Parquet files carry GeoParquet point metadata (``geocells.data.geoparquet``).
        """
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        table = self.to_table(relative_to=path.parent if relative_to is None else relative_to)
        if path.suffix.lower() == ".csv":
            import pyarrow.csv as pacsv

            pacsv.write_csv(table, path)
        else:
            import pyarrow.parquet as pq

            from geocells.data.geoparquet import with_point_geometry

            pq.write_table(with_point_geometry(table, self.lon, self.lat), path)
        return path


def _attribute(column: str) -> str:
    return "split_name" if column == "split" else column


def _relative_paths(paths: np.ndarray, base: str) -> np.ndarray:
    """Paths relative to ``base``: a prefix cut for those below it, relpath for the rest."""
    prefix = base.rstrip(os.sep) + os.sep
    out = np.empty(len(paths), dtype=object)
    for i, path in enumerate(paths.tolist()):
        if path.startswith(prefix):
            out[i] = path[len(prefix) :]
        else:
            try:
                out[i] = os.path.relpath(path, base)
            except ValueError:  # another drive on Windows: keep it absolute
                out[i] = path
    return out


def _read_table(path: Path) -> pa.Table:
    """Parquet or CSV as an Arrow table; CSV columns are read as text and parsed later."""
    suffix = path.suffix.lower()
    try:
        if suffix == ".parquet":
            import pyarrow.parquet as pq

            return pq.read_table(path)
        if suffix == ".csv":  # errors name the file, row and column (csvfile)
            import pyarrow.csv as pacsv

            from geocells.data.csvfile import read_csv, read_header

            types = {name: pa.string() for name in read_header(path)}
            return read_csv(path, pacsv.ConvertOptions(column_types=types))
    except pa.ArrowInvalid as err:
        raise ValueError(f"cannot read manifest {path}: {err}") from err
    raise ValueError(f"manifest {path} must be .parquet or .csv, not {suffix or 'no suffix'!r}")


def _check_ids_and_splits(columns: dict[str, np.ndarray], problems: Problems) -> None:
    """Report empty ids and paths, duplicate ids (the first one is kept), unknown splits."""
    ids = columns["image_id"]
    for i in np.flatnonzero(ids == ""):
        problems.add(i, "missing value", "image_id is missing")
    for i in np.flatnonzero(columns["path"] == ""):
        problems.add(i, "missing value", "path is missing")
    if len(ids):
        _, first, inverse = np.unique(ids.astype(str), return_index=True, return_inverse=True)
        duplicate = (first[inverse] != np.arange(len(ids))) & (ids != "")
        for i in np.flatnonzero(duplicate):
            message = f"duplicate image_id {ids[i]!r} (first at row {first[inverse[i]] + 1})"
            problems.add(i, "duplicate id", message)
    unknown = ~np.isin(columns["split"].astype(str), SPLITS)
    for i in np.flatnonzero(unknown):
        message = f"unknown split {columns['split'][i]!r} (valid: {', '.join(SPLITS)})"
        problems.add(i, "unknown split", message)
    for i in np.flatnonzero(~np.isin(columns["role"].astype(str), ("", *ROLES))):
        message = f"unknown role {columns['role'][i]!r} (valid: {', '.join(ROLES)} or empty)"
        problems.add(i, "unknown role", message)


def _absolute_paths(paths: np.ndarray, base_dir: str) -> np.ndarray:
    """Join relative paths to ``base_dir`` and normalise; empty paths stay empty."""
    if not len(paths):
        return paths
    text = pa.array(paths.tolist(), pa.string())
    relative = pc.and_(pc.invert(pc.starts_with(text, os.sep)), pc.not_equal(text, ""))
    joined = pc.if_else(relative, pc.binary_join_element_wise(base_dir, text, os.sep), text)
    joined = joined.to_numpy(zero_copy_only=False).astype(object)
    # normpath is slow per row: only for paths with '.', '..' or doubled separators in them
    suspicious = pc.match_substring_regex(pa.array(joined.tolist()), r"(^|/)\.\.?(/|$)|//")
    for i in np.flatnonzero(suspicious.to_numpy(zero_copy_only=False)):
        joined[i] = os.path.normpath(joined[i])
    if os.name == "nt":  # drive letters and backslashes: the plain, slower way
        joined = np.array(
            [os.path.normpath(os.path.join(base_dir, p)) if p else "" for p in paths], dtype=object
        )
    return joined


def _report_bad_rows(bad: list[BadRow], where: str, strict: bool, n: int) -> None:
    """Raise (strict) or log every kind of bad row with its count and the first rows."""
    if not bad:
        return
    if strict:
        raise ValueError(f"{where}: {len(bad)} of {n} rows are bad {describe_bad_rows(bad)}")
    logger.warning("%s: skipped %d of %d rows %s", where, len(bad), n, describe_bad_rows(bad))

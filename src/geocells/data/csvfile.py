"""CSV files as users have them: say *where* one is unreadable (file, row, column).

pyarrow's CSV reader is fast, but its errors for a file that is not UTF-8 text, holds
binary data or has a field of many megabytes name neither the row nor the column
("straddling object straddles two block boundaries"). ``read_csv`` reads with pyarrow and,
only when that fails, scans the file once (``diagnose``) to name the first problem:

- bytes that are not UTF-8: ``line 3, column 'captured_at' (byte 22): byte 0xe9 is not
  UTF-8 (save the file as UTF-8)``;
- binary data (a NUL byte);
- a line longer than ``MAX_LINE_BYTES`` (a 60 MB field): its line, column and size.

Rows are counted as in manifests: row ``n`` is on line ``n + 1`` (the header is line 1).
"""

from __future__ import annotations

import codecs
from pathlib import Path

MAX_LINE_BYTES = 1 << 20  # pyarrow's block size: a line longer than this cannot be read
_CHUNK = 1 << 20


class CsvError(ValueError):
    """A CSV file that cannot be read; the message names the file, row and column."""


def read_header(path: Path) -> list[str]:
    """The column names of the first line (UTF-8, a BOM allowed); CsvError naming the
    problem when the first line is no UTF-8 text."""
    with open(path, "rb") as handle:
        line = handle.readline(MAX_LINE_BYTES + 1)
    try:
        text = line.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise CsvError(f"cannot read {path}: {diagnose(path) or 'not UTF-8 text'}") from None
    if b"\0" in line:
        raise CsvError(f"cannot read {path}: {diagnose(path)}")
    return [name.strip() for name in text.rstrip("\r\n").split(",")]


def read_csv(path: Path, convert_options=None):
    """``pyarrow.csv.read_csv`` whose failures name the file, and the row and column where
    ``diagnose`` finds the cause."""
    import pyarrow.csv as pacsv

    try:
        return pacsv.read_csv(path, convert_options=convert_options)
    except Exception as err:  # pyarrow raises its own error kinds for bad CSVs
        found = diagnose(path)
        raise CsvError(f"cannot read {path}: {found or err}") from err


def diagnose(path: Path) -> str | None:
    """The first problem of a CSV file, with line and column, or None when none is found."""
    header = _names(path)
    decoder = codecs.getincrementaldecoder("utf-8-sig")()
    line, line_start, offset = 1, 0, 0  # line number, offset of its first byte, chunk offset
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            try:
                decoder.decode(chunk)
                bad = len(chunk)
            except UnicodeDecodeError as err:
                bad = err.start
            nul = chunk.find(b"\0", 0, bad)
            stop = nul if nul >= 0 else bad
            position = 0
            while (newline := chunk.find(b"\n", position, stop)) >= 0:
                if offset + newline - line_start > MAX_LINE_BYTES:
                    return _too_long(path, header, line, line_start, offset + newline)
                line, line_start, position = line + 1, offset + newline + 1, newline + 1
            if stop < len(chunk):
                where = _where(path, header, offset + stop, line, line_start)
                if nul >= 0:
                    return f"{where}: binary data (a NUL byte), not CSV text"
                return f"{where}: byte 0x{chunk[stop]:02x} is not UTF-8 (save it as UTF-8)"
            offset += len(chunk)
            if offset - line_start > MAX_LINE_BYTES:
                return _too_long(path, header, line, line_start, None)
    return None


def _names(path: Path) -> list[str]:
    """The header's column names, undecodable bytes replaced (only to name columns)."""
    with open(path, "rb") as handle:
        line = handle.readline(MAX_LINE_BYTES).split(b"\0")[0]
    return [name.strip() for name in line.decode("utf-8-sig", "replace").rstrip("\r\n").split(",")]


def _prefix(path: Path, start: int, end: int) -> bytes:
    with open(path, "rb") as handle:
        handle.seek(start)
        return handle.read(min(end - start, MAX_LINE_BYTES))


def _column(header: list[str] | None, prefix: bytes) -> str:
    """The column a byte lies in, from the commas before it on its line (quotes ignored)."""
    index = prefix.count(b",")
    if header and index < len(header):
        return f"column {header[index]!r}"
    return f"column {index + 1}"


def _row(line: int) -> str:
    return "the header (line 1)" if line == 1 else f"row {line - 1} (line {line})"


def _where(path, header, bad, line, line_start) -> str:
    """``row R (line L), column NAME (byte B)`` of the byte at file offset ``bad`` (on
    ``line``, which starts at ``line_start``)."""
    byte = f"byte {bad - line_start + 1} of the line"
    if line == 1:
        return f"{_row(line)}, {byte}"
    return f"{_row(line)}, {_column(header, _prefix(path, line_start, bad))} ({byte})"


def _too_long(path, header, line, line_start, end) -> str:
    prefix = _prefix(path, line_start, line_start + MAX_LINE_BYTES)
    fields = prefix.split(b",")
    longest = max(range(len(fields)), key=lambda i: len(fields[i]))
    column = _column(header, b"," * longest)
    size = f"of {end - line_start:,} bytes" if end is not None else "longer than"
    return (
        f"{_row(line)}, {column}: a line {size} the {MAX_LINE_BYTES:,} bytes a CSV line may "
        "have (a corrupt or binary file?)"
    )

"""Which image files of a manifest exist: plain files and ``ARCHIVE.zip!/MEMBER`` paths;
which paths are no regular file at all (a FIFO would hang whoever opens it)."""

from __future__ import annotations

import os
import stat

import numpy as np

from geocells.data.images import ARCHIVE_SEPARATOR, archive_members, split_archive_path

_SPECIAL_KINDS = (
    (stat.S_ISFIFO, "a named pipe (FIFO)"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
)


def special_file(path: str | os.PathLike) -> str | None:
    """What ``path`` is when it exists but is neither a regular file nor a folder ("a named
    pipe (FIFO)", "a socket", a device), else None. Symbolic links are followed.

    Opening such a path to read an image would block (a FIFO) or never end (a device), so
    callers skip it with ``not_regular_reason``.
    """
    try:
        mode = os.stat(path).st_mode
    except (OSError, ValueError):
        return None
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
        return None
    for test, kind in _SPECIAL_KINDS:
        if test(mode):
            return kind
    return "a special file"


def not_regular_reason(kind: str) -> str:
    """The reason a special file is skipped: ``"is a named pipe (FIFO), not a regular file"``."""
    return f"is {kind}, not a regular file (skipped: reading it could hang)"


def missing_reason(path: str) -> str:
    """Why a path ``missing_files`` flagged is unusable: "file not found: PATH", or what it
    is when it exists but is no regular file (a FIFO named ``x.jpg``)."""
    kind = special_file(path) if ARCHIVE_SEPARATOR not in path else None
    return f"{path} {not_regular_reason(kind)}" if kind else f"file not found: {path}"


def missing_files(paths: np.ndarray) -> np.ndarray:
    """Mask of paths that are not existing files (or archive members); one directory
    listing per folder, one member list per archive."""
    missing = np.zeros(len(paths), dtype=bool)
    if not len(paths):
        return missing
    in_archive = np.array([ARCHIVE_SEPARATOR in p for p in paths.tolist()], dtype=bool)
    if in_archive.any():
        missing[in_archive] = _missing_members(paths[in_archive])
        plain = np.flatnonzero(~in_archive)
        missing[plain] = missing_files(paths[plain])
        return missing
    split = np.frompyfunc(os.path.split, 1, 1)(paths)
    folders = np.array([f for f, _ in split], dtype=object)
    names = [n for _, n in split]
    unique_folders, inverse = np.unique(folders.astype(str), return_inverse=True)
    order = np.argsort(inverse, kind="stable")
    bounds = np.searchsorted(inverse[order], np.arange(len(unique_folders) + 1))
    for k, folder in enumerate(unique_folders.tolist()):
        rows = order[bounds[k] : bounds[k + 1]]
        try:  # a plain str: os.scandir(np.str_) lists bytes names
            with os.scandir(folder or ".") as entries:
                present = {e.name for e in entries if e.is_file()}
        except OSError:
            missing[rows] = True
            continue
        missing[rows] = [names[i] not in present for i in rows]
    return missing


def _missing_members(paths: np.ndarray) -> np.ndarray:
    """Mask of ``ARCHIVE.zip!/MEMBER`` paths whose archive or member does not exist."""
    missing = np.ones(len(paths), dtype=bool)
    members: dict[str, set[str] | None] = {}
    for i, path in enumerate(paths.tolist()):
        parts = split_archive_path(path)
        if parts is None:
            continue
        archive, member = parts
        if archive not in members:
            try:
                members[archive] = archive_members(archive)
            except OSError:
                members[archive] = None
        found = members[archive]
        missing[i] = found is None or member not in found
    return missing

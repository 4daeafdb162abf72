"""Imported images stay in the folders the user gave (issue 22, item 9).

An attacker's dataset can try to lead an import elsewhere: a zip member named
``00/../../../../usr/share/x.png`` or ``../../1100.jpg``, an MSLS key
``../../../../outside``, an absolute path in a CSV, or a symbolic link inside the source
folder pointing out of it. Every such row is a bad row, named with its reason in the
import report, and ``ground/image_roots.txt`` names only folders the user gave
(``ImportRows.roots``), never a folder derived from the rows.

- ``unsafe_member``: a zip member name with a ``..`` part, an absolute path, a drive
  letter or backslashes — refused where the archive is listed (``osv5m``), so such a
  member never becomes a manifest path;
- ``escaping_rows``: rows whose path (for ``ARCHIVE.zip!/MEMBER`` the archive, and the
  member name too) is not below one of the allowed folders, either as written (after
  ``..`` is resolved) or once symbolic links are followed (``os.path.realpath`` once per
  folder and per file that is itself a link; about 1 s per million rows).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from geocells.data.images import split_archive_path


def unsafe_member(member: str) -> str | None:
    """Why a zip member name would leave its archive's folder, or None when it is safe."""
    if "\\" in member:
        return "has backslashes (a Windows path)"
    if member.startswith("/") or (len(member) > 1 and member[1] == ":"):
        return "is an absolute path"
    if ".." in member.split("/"):
        return "has a '..' part"
    return None


def _below(path: str, prefixes: Sequence[str]) -> bool:
    return any(path == p[:-1] or path.startswith(p) for p in prefixes)


def _prefixes(folders: Sequence[Path], resolve: bool) -> list[str]:
    """``folder/`` strings (normalised, or with links resolved)."""
    convert = os.path.realpath if resolve else os.path.normpath
    return [convert(os.path.abspath(folder)).rstrip(os.sep) + os.sep for folder in folders]


# ``ARCHIVE.zip!/MEMBER`` (images.ARCHIVE_SEPARATOR) whose member leaves the archive
_UNSAFE_MEMBER = r"(?i)\.zip!/(/|.*\\|(.*/)?\.\.(/|$)|[A-Za-z]:)"


def escaping_rows(
    paths: Sequence[str], allowed: Sequence[Path], given: str
) -> list[tuple[int, str]]:
    """[(row index, reason)] for the absolute, normalised ``paths`` (as manifests hold
    them) that lead out of every ``allowed`` folder (``given`` names these folders in the
    reason, e.g. "the folders given (...)"). Vectorised: string tests in Arrow, then one
    ``realpath`` and one listing (for the symbolic links in it) per folder."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    text = pa.array(list(paths), pa.string())
    files = pc.replace_substring_regex(text, r"(?i)(\.zip)!/.*$", r"\1")  # the archive
    written = _prefixes(allowed, resolve=False)
    inside = pc.equal(text, "").to_numpy(zero_copy_only=False)
    for prefix in written:
        inside |= pc.starts_with(files, prefix).to_numpy(zero_copy_only=False)
    unsafe = pc.match_substring_regex(text, _UNSAFE_MEMBER).to_numpy(zero_copy_only=False)
    bad: dict[int, str] = {}
    for index in np.flatnonzero(unsafe):
        member = split_archive_path(paths[index])
        bad[int(index)] = f"zip member {member[1]!r} {unsafe_member(member[1]) or 'is unsafe'}"
    for index in np.flatnonzero(~inside & ~unsafe):
        bad[int(index)] = f"path {paths[index]!r} leads outside {given}"
    resolved = _prefixes(allowed, resolve=True)
    check = inside & ~unsafe & pc.not_equal(text, "").to_numpy(zero_copy_only=False)
    rows = np.flatnonzero(check)
    if len(rows):
        chosen = files.take(pa.array(rows))
        folders = pc.replace_substring_regex(chosen, r"/[^/]*$", "")
        unique = pc.unique(folders)
        group = pc.index_in(folders, value_set=unique).to_numpy(zero_copy_only=False)
        order = np.argsort(group, kind="stable")
        bounds = np.searchsorted(group[order], np.arange(len(unique) + 1))
        for k, folder in enumerate(unique.to_pylist()):
            members = rows[order[bounds[k] : bounds[k + 1]]]
            bad.update(_linked_out(folder or os.sep, members, paths, files, resolved, given))
    return sorted(bad.items())


def _linked_out(folder, rows, paths, files, resolved, given) -> dict[int, str]:
    """The ``rows`` (all in ``folder``) whose file, links followed, is in no ``resolved``
    folder: one ``realpath`` for the folder, one listing for the links in it."""
    real_folder = os.path.realpath(folder)
    folder_inside = _below(real_folder + os.sep, resolved)
    try:
        with os.scandir(folder) as entries:
            links = {entry.name for entry in entries if entry.is_symlink()}
    except OSError:
        links = set()
    if folder_inside and not links:
        return {}
    bad = {}
    for index in rows.tolist():
        name = os.path.basename(files[index].as_py())
        real = os.path.join(real_folder, name)
        if name in links:
            real = os.path.realpath(real)
        elif folder_inside:
            continue
        if not _below(real, resolved):
            bad[index] = (
                f"path {paths[index]!r} is a symbolic link to {real}, outside {given}: import "
                "from the real folder, or copy the image in"
            )
    return bad

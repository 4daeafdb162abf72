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
  ``..`` is resolved) or once symbolic links are followed (``os.path.realpath``; one call
  per folder and per file that is itself a link, so millions of rows stay cheap).
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


def escaping_rows(
    paths: Sequence[str], allowed: Sequence[Path], given: str
) -> list[tuple[int, str]]:
    """[(row index, reason)] for the absolute ``paths`` that lead out of every ``allowed``
    folder (``given`` says in the reason which folders these are, e.g. the CLI flag)."""
    written = _prefixes(allowed, resolve=False)
    resolved = _prefixes(allowed, resolve=True)
    real_folders: dict[str, str] = {}
    bad: list[tuple[int, str]] = []
    for index, path in enumerate(paths):
        if not path:
            continue
        parts = split_archive_path(path)
        file = parts[0] if parts else path
        if parts and unsafe_member(parts[1]):
            bad.append((index, f"zip member {parts[1]!r} {unsafe_member(parts[1])}"))
            continue
        plain = os.path.normpath(file)
        if not _below(plain, written):
            bad.append((index, f"path {path!r} leads outside {given}"))
            continue
        folder, name = os.path.split(plain)
        if folder not in real_folders:
            real_folders[folder] = os.path.realpath(folder)
        real = os.path.join(real_folders[folder], name)
        if os.path.islink(real):
            real = os.path.realpath(real)
        if not _below(real, resolved):
            bad.append((index, f"path {path!r} is a symbolic link to {real}, outside {given}: "
                               "import from the real folder, or copy the image in"))  # fmt: skip
    return bad

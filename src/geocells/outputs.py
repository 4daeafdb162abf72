"""Output folders every stage writes through: an owner marker, ``--overwrite`` and a lock.

A stage that writes a folder (``index``, ``index merge``, ``train``, ``eval``, ``synth``)
declares an ``OutputKind``: its name and the top-level names it writes. ``claim_output``
then, under the folder's lock:

- creates a missing or empty folder and writes the marker ``.geocells-output.json``
  (``{"stage": "index"}``);
- accepts a folder carrying this stage's marker; ``overwrite`` removes the stage's known
  names there and nothing else;
- accepts a folder an older geocells wrote (no marker) when it holds one of the stage's
  signature files (or a known sub-folder with a marker) and only names the stage writes,
  and marks it;
- refuses everything else with one ``OutputError`` naming the folder and the first file
  geocells did not write (or the stage whose marker it carries): ``--overwrite`` never
  deletes a user's files.

``stage_output`` is the one helper stages use: lock + ownership + skip-if-done + claim;
it hands the stage an ``OutputFolder``, the one writer of the stage's files (each written
atomically, by a name the stage's ``OutputKind`` knows, so ``--overwrite`` clears all of
them and nothing else).

``output_lock`` is an advisory ``flock`` on ``.geocells.lock``, which records the holder's
PID: a second writer is refused with that PID; the kernel drops the lock of a killed
process, so its leftover file is taken over (with a warning) by the next writer.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shutil
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from geocells.io import Artifact, atomic_write, json_text, temporary_path

log = logging.getLogger(__name__)

MARKER = ".geocells-output.json"
LOCK = ".geocells.lock"


class OutputError(ValueError):
    """An output folder that geocells refuses to write into, clear or share."""


@dataclass(frozen=True)
class OutputKind:
    """What one stage writes at the top of its output folder."""

    stage: str  # the command, for messages and the marker: "index", "train", ...
    known: tuple[str, ...]  # top-level files and folders the stage writes
    signature: tuple[str, ...]  # one of these marks a folder an older geocells wrote

    def owns(self, name: str) -> bool:
        """True for a name this stage writes, an ``atomic_write`` temporary of one, or ours."""
        if name in (MARKER, LOCK) or name in self.known:
            return True
        return any(name == temporary_path(known).name for known in (*self.known, MARKER))


@dataclass(frozen=True)
class OutputFolder:
    """A stage's output folder as ``stage_output`` hands it over: ``skip`` (the finished
    output is there) and the writer of every file the stage puts in it.

    Files are named relative to ``path`` (``"checkpoints/step-00000010.json"``); the first
    part must be one of the stage's known names (or the owner marker), so what a stage
    writes is what ``--overwrite`` clears; each file is written atomically
    (``io.atomic_write``).
    """

    path: Path
    kind: OutputKind
    skip: bool = False

    def target(self, name: str) -> Path:
        """``path / name``; ``OutputError`` for a name outside what the stage writes."""
        parts = PurePosixPath(name).parts
        known = bool(parts) and (parts[0] in self.kind.known or name == MARKER)
        if not known or ".." in parts or parts[0] == "/":
            raise OutputError(
                f"{self.kind.stage} writes only {', '.join(self.kind.known)} in {self.path}, "
                f"not {name!r}"
            )
        return self.path / name

    @contextlib.contextmanager
    def file(self, name: str) -> Iterator[Path]:
        """A temporary path for ``name``; it replaces ``path / name`` when the block succeeds."""
        with atomic_write(self.target(name)) as temporary:
            yield temporary

    def write_text(self, name: str, text: str) -> Path:
        """Write ``text`` to ``name`` (UTF-8)."""
        with self.file(name) as temporary:
            temporary.write_text(text, encoding="utf-8")
        return self.path / name

    def write_json(self, name: str, data: Any, indent: int | None = 2) -> Path:
        """Write ``data`` to ``name`` as JSON (``io.json_text``: sorted keys)."""
        return self.write_text(name, json_text(data, indent))

    def copy(self, source: str | Path, name: str) -> Path:
        """Copy the file ``source`` to ``name``."""
        with self.file(name) as temporary:
            shutil.copyfile(source, temporary)
        return self.path / name

    def save(self, artifact: Artifact, name: str | None = None) -> Path:
        """Write a typed artifact to ``name`` (default: its ``FILE``), as ``Artifact.save``."""
        return self.write_text(name or artifact.FILE, artifact.to_json())


def read_marker(folder: str | Path) -> str | None:
    """The stage named by ``folder``'s marker; None when there is none."""
    path = Path(folder) / MARKER
    if not path.is_file():
        return None
    try:
        stage = json.loads(path.read_text()).get("stage")
    except (ValueError, AttributeError):
        stage = None
    if not isinstance(stage, str):
        raise OutputError(f"{path} is not a geocells output marker; remove it or use another --out")
    return stage


def _refusal(folder: Path, kind: OutputKind, reason: str) -> OutputError:
    return OutputError(
        f"{folder} {reason}; geocells {kind.stage} writes only into an empty folder or one it "
        "wrote itself (--overwrite never deletes other files): choose another --out"
    )


def check_ownership(folder: str | Path, kind: OutputKind) -> bool:
    """True when ``folder`` is ``kind``'s (marked, or an older geocells'); False when it is
    missing or empty; ``OutputError`` naming the first foreign file or the other stage."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise _refusal(folder, kind, "is a file, not a folder")
    listed = sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []
    names = [name for name in listed if name not in (MARKER, LOCK)]
    if not names:
        return False
    owner = read_marker(folder)
    if owner is not None and owner != kind.stage:
        raise _refusal(folder, kind, f"holds the output of geocells {owner}")
    if owner is None and not _signed(folder, names, kind):
        raise _refusal(folder, kind, f"holds {folder / names[0]}, which geocells did not write")
    if owner is None:
        foreign = [name for name in names if not kind.owns(name)]
        if foreign:
            raise _refusal(
                folder, kind, f"holds {folder / foreign[0]}, which geocells did not write"
            )
    return True


def _signed(folder: Path, names: list[str], kind: OutputKind) -> bool:
    """An unmarked folder holds a signature file, or a known sub-folder some stage marked
    (the demo's ``dataset/`` and ``run/`` before its own ``demo.json``)."""
    if any(name in names for name in kind.signature):
        return True
    folders = [folder / name for name in names if kind.owns(name) and (folder / name).is_dir()]
    return any(read_marker(path) is not None for path in folders)


def claim_output(folder: str | Path, kind: OutputKind, overwrite: bool = False) -> bool:
    """Make ``folder`` ``kind``'s output (see the module docstring); ``overwrite`` clears the
    stage's own files. True when the folder already held this stage's (kept) output.

    Call it while holding ``output_lock(folder, kind)``.
    """
    folder = Path(folder)
    existing = check_ownership(folder, kind)
    folder.mkdir(parents=True, exist_ok=True)
    if existing and overwrite:
        remove_known(folder, kind)
        existing = False
    OutputFolder(folder, kind).write_text(MARKER, json.dumps({"stage": kind.stage}) + "\n")
    return existing


def remove_known(folder: str | Path, kind: OutputKind) -> None:
    """Delete the names ``kind`` writes in ``folder`` (other files stay, with a warning)."""
    folder = Path(folder)
    for path in sorted(folder.iterdir()):
        if path.name in (MARKER, LOCK):
            continue
        if not kind.owns(path.name):
            log.warning("%s: keeping %s (geocells %s did not write it)", folder, path, kind.stage)
        elif path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True


def _read_holder(handle) -> dict:
    handle.seek(0)
    try:
        holder = json.loads(handle.read() or "{}")
    except ValueError:
        return {}
    return holder if isinstance(holder, dict) else {}


def _holder_text(holder: dict) -> str:
    pid = holder.get("pid", "unknown")
    stage = holder.get("stage", "?")
    host = holder.get("host", "?")
    return f"geocells {stage} (PID {pid} on {host}, since {holder.get('started', '?')})"


def _open_locked(path: Path):
    """Open ``path`` and take its exclusive ``flock``; None when another process holds it."""
    while True:
        handle = open(path, "a+")  # held open as long as the lock is
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return handle, False
        try:
            same = os.fstat(handle.fileno()).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return handle, True
        handle.close()  # released and removed by its holder meanwhile: try again


@contextlib.contextmanager
def output_lock(folder: str | Path, kind: OutputKind) -> Iterator[OutputFolder]:
    """Hold ``folder/.geocells.lock`` while writing ``folder`` (through the ``OutputFolder``
    the block gets); ``OutputError`` naming the holder's PID when another process writes
    it. A killed holder's lock is taken over."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise _refusal(folder, kind, "is a file, not a folder")
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK
    handle, locked = _open_locked(path)
    try:
        if not locked:
            holder = _read_holder(handle)
            raise OutputError(
                f"{folder} is being written by {_holder_text(holder)}; wait for it to finish "
                f"or stop it (its lock: {path})"
            )
        stale = _read_holder(handle)
        if stale.get("pid") not in (None, os.getpid()):
            pid = stale["pid"]
            alive = isinstance(pid, int) and _pid_alive(pid)
            dead = "lock released" if alive else "no longer running"
            log.warning(
                "%s: taking over the stale lock of %s (%s)", folder, _holder_text(stale), dead
            )
        handle.seek(0)
        handle.truncate()
        started = time.strftime("%Y-%m-%dT%H:%M:%S")
        me = {"pid": os.getpid(), "host": socket.gethostname(), "stage": kind.stage}
        handle.write(json.dumps({**me, "started": started}) + "\n")
        handle.flush()
        try:
            yield OutputFolder(folder, kind)
        finally:
            path.unlink(missing_ok=True)  # before the unlock: a waiter re-checks the inode
    finally:
        handle.close()


@contextlib.contextmanager
def stage_output(
    folder: str | Path,
    kind: OutputKind,
    *,
    overwrite: bool = False,
    finished: Callable[[Path], bool] | None = None,
    clear: bool = True,
) -> Iterator[OutputFolder]:
    """The one way a stage takes its output folder: lock, ownership, skip-if-done, claim.

    ``with stage_output(out, KIND, overwrite=overwrite, finished=done) as folder:``
    ``if folder.skip: return out`` — under the folder's lock (held for the whole block), a
    folder of foreign files is refused; unless ``overwrite``, ``finished(folder)`` is asked
    whether the stage's finished output for these inputs is there (it raises when the
    folder holds output made with other settings) and, when it is, the block gets an
    ``OutputFolder`` with ``skip`` True and nothing is claimed; otherwise the folder is
    claimed for ``kind`` — ``overwrite`` (and ``clear``) removing the stage's own files
    first — and the block writes its files through the ``OutputFolder`` it gets. A stage
    whose old output must stay until the new one is complete passes ``clear=False``.
    """
    folder = Path(folder)
    with output_lock(folder, kind):
        check_ownership(folder, kind)
        skip = finished is not None and not overwrite and finished(folder)
        if skip:
            log.info("%s: %s is already done; skipping (use --overwrite)", kind.stage, folder)
        else:
            claim_output(folder, kind, overwrite and clear)
        yield OutputFolder(folder, kind, skip)

"""Where a database came from: model and dataset fingerprints, and the model copy."""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from pathlib import Path

log = logging.getLogger(__name__)


def sha256_file(path: Path, block: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(block):
            digest.update(chunk)
    return digest.hexdigest()


def dataset_fingerprint(root: Path) -> str:
    """Hex SHA-256 of a dataset's region and world description and its aerial file list.

    Aerial rasters can be many gigabytes, so they enter by relative path and size only.
    """
    digest = hashlib.sha256()
    for name in ("region.geojson", "world.json"):
        path = root / name
        if path.is_file():
            digest.update(name.encode() + b"\0" + path.read_bytes())
    aerial = root / "aerial"
    files = sorted(p for p in aerial.rglob("*") if p.is_file()) if aerial.is_dir() else []
    for path in files:
        digest.update(f"{path.relative_to(root)}\0{path.stat().st_size}\0".encode())
    return digest.hexdigest()


def dataset_of_run(run_dir: Path) -> Path:
    """The dataset a training run used, as recorded in its folder (else ask for --dataset)."""
    for name in ("dataset.json", "state.json", "run.json"):
        for folder in (run_dir, run_dir / "checkpoints"):
            path = folder / name
            if path.is_file():
                data = json.loads(path.read_text())
                for key in ("dataset", "dataset_root", "dataset_path"):
                    if isinstance(data.get(key), str):
                        return Path(data[key])
    raise ValueError(f"run {run_dir} does not record its dataset; pass --dataset")


def copy_model(checkpoint: Path, folder: Path) -> Path:
    """Copy the checkpoint into the database (``model/last.safetensors``): self-contained."""
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / "last.safetensors"
    tmp = folder / ".last.safetensors.tmp"
    shutil.copyfile(checkpoint, tmp)
    tmp.replace(target)
    return target

"""The cell codes as the database stores them: unit aerial rows (zero without imagery),
upsampled prototypes, both float16.

``db.build`` writes codes through these functions and ``train.validate`` scores its
gallery through them, so the hybrid chosen on val is the hybrid that is served.
"""

from __future__ import annotations

import numpy as np

from geocells.scoring.upsample import upsample_prototypes

CODE_DTYPE = np.float16  # what aerial.npy / proto.npy hold
DEFAULT_UPSAMPLE = "bilinear"  # the database build's default prototype upsampling


def aerial_codes(summed: np.ndarray, covered: np.ndarray) -> np.ndarray:
    """Aerial rows ``float32 [N, D]`` from embeddings summed over rotations: L2-normalised,
    and zero where ``covered`` (bool [N]) is False (no aerial imagery at the cell)."""
    codes = np.array(summed, dtype=np.float32)
    codes /= np.maximum(np.linalg.norm(codes, axis=1, keepdims=True), 1e-12)
    codes[~np.asarray(covered, dtype=bool)] = 0.0
    return codes


def cell_codes(
    cells: np.ndarray,
    aerial: np.ndarray,
    proto_cells: np.ndarray,
    prototypes: np.ndarray,
    upsample: str = DEFAULT_UPSAMPLE,
) -> tuple[np.ndarray, np.ndarray]:
    """``(aerial, proto)`` as stored, ``CODE_DTYPE [N, D]`` each, for level-Lc ``cells [N]``.

    ``aerial [N, D]``: ``aerial_codes`` output; ``proto_cells [P]`` sorted level-Lp ids with
    their L2-normalised ``prototypes [P, D]``. A cell whose parent has no prototype is a
    ValueError (``upsample_prototypes``).
    """
    proto = upsample_prototypes(cells, proto_cells, prototypes, upsample)
    if aerial.shape != proto.shape:
        raise ValueError(f"aerial codes {aerial.shape} and prototypes {proto.shape} differ")
    return aerial.astype(CODE_DTYPE), proto.astype(CODE_DTYPE)

"""Prototype upsampling from level Lp to the database level Lc through the S2 hierarchy.

Two methods:

- ``parent``: every level-Lc cell takes the prototype of its level-Lp ancestor.
- ``bilinear``: every level-Lc cell interpolates between the four level-Lp cells whose
  centres surround its own centre (its parent, the two edge neighbours on its side, and
  the diagonal cell between them). Weights are bilinear in the local tangent-plane frame
  spanned by the parent centre and the two edge-neighbour centres, so a field that is
  linear in position is reproduced up to the (tiny) curvature of the S2 grid.

Neighbours that have no prototype (outside the trained region) get weight zero and the
remaining weights are rescaled to sum to one; a cell whose own parent has no prototype is
an error.
"""

from __future__ import annotations

import logging

import numpy as np

from geocells.geo import cell_level, cell_neighbors, cell_parent, cell_to_latlng, cell_to_token

log = logging.getLogger(__name__)

METHODS = ("parent", "bilinear")


def unit_vectors(lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
    """Points on the unit sphere for WGS84 degrees: ``[...] -> [..., 3]``."""
    lat_rad = np.radians(np.asarray(lat, dtype=np.float64))
    lon_rad = np.radians(np.asarray(lon, dtype=np.float64))
    cos_lat = np.cos(lat_rad)
    return np.stack([cos_lat * np.cos(lon_rad), cos_lat * np.sin(lon_rad), np.sin(lat_rad)], -1)


def bilinear_weights(
    point: np.ndarray, origin: np.ndarray, axis_u: np.ndarray, axis_v: np.ndarray
) -> np.ndarray:
    """Bilinear weights of ``point`` in the cell frame of four centres.

    ``point, origin, axis_u, axis_v: [N, 3]`` (3-D positions; ``axis_u``/``axis_v`` are the
    centres next to ``origin`` along the two grid axes). Solves
    ``point - origin = a (axis_u - origin) + b (axis_v - origin)`` in the least-squares
    sense and returns ``[N, 4]`` weights for (origin, axis_u, axis_v, diagonal):
    ``(1-a)(1-b), a(1-b), (1-a)b, ab``.
    """
    du = axis_u - origin
    dv = axis_v - origin
    dx = point - origin
    uu = np.einsum("nk,nk->n", du, du)
    vv = np.einsum("nk,nk->n", dv, dv)
    uv = np.einsum("nk,nk->n", du, dv)
    xu = np.einsum("nk,nk->n", dx, du)
    xv = np.einsum("nk,nk->n", dx, dv)
    det = uu * vv - uv * uv
    if np.any(det <= 0):
        raise ValueError("degenerate interpolation frame: neighbour centres are collinear")
    a = (xu * vv - xv * uv) / det
    b = (xv * uu - xu * uv) / det
    return np.stack([(1 - a) * (1 - b), a * (1 - b), (1 - a) * b, a * b], axis=1)


def _lookup_rows(proto_cells: np.ndarray, cells: np.ndarray) -> np.ndarray:
    """Row of each cell in the sorted ``proto_cells``, or -1 where it has no prototype."""
    rows = np.searchsorted(proto_cells, cells)
    rows = np.minimum(rows, len(proto_cells) - 1)
    return np.where(proto_cells[rows] == cells, rows, -1)


def _closest(candidates: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Index along axis 1 of the candidate cell whose centre is nearest ``target`` ([N, 3])."""

    lat, lon = cell_to_latlng(candidates.reshape(-1))
    centres = unit_vectors(lat, lon).reshape(*candidates.shape, 3)
    distance = np.linalg.norm(centres - target[:, None, :], axis=2)
    return np.argmin(distance, axis=1)


def surrounding_cells(cells: np.ndarray, level: int) -> tuple[np.ndarray, np.ndarray]:
    """The four level-``level`` cells whose centres surround each cell's centre.

    ``cells: uint64[N]`` (finer than ``level``) -> ``(neighbours uint64[N, 4],
    weights float64[N, 4])`` ordered (parent, u-neighbour, v-neighbour, diagonal).
    """

    rows = np.arange(len(cells))
    parent = cell_parent(cells, level)
    point = unit_vectors(*cell_to_latlng(cells))
    origin = unit_vectors(*cell_to_latlng(parent))
    edge = cell_neighbors(parent)  # [N, 4]
    edge_centres = unit_vectors(*cell_to_latlng(edge.reshape(-1))).reshape(-1, 4, 3)
    offsets = edge_centres - origin[:, None, :]
    # Project the cell's offset onto each neighbour direction; the two neighbours on the
    # cell's side of the parent have positive projections, the opposite two negative.
    reach = np.einsum("nk,nmk->nm", point - origin, offsets) / np.einsum(
        "nmk,nmk->nm", offsets, offsets
    )
    order = np.argsort(-reach, axis=1)
    neighbour_u = edge[rows, order[:, 0]]
    neighbour_v = edge[rows, order[:, 1]]
    centre_u = edge_centres[rows, order[:, 0]]
    centre_v = edge_centres[rows, order[:, 1]]
    around_u = cell_neighbors(neighbour_u)
    diagonal = around_u[rows, _closest(around_u, centre_u + centre_v - origin)]
    weights = bilinear_weights(point, origin, centre_u, centre_v)
    # Near a cube corner only three cells meet: the "diagonal" is then one of the others.
    corner = (diagonal == neighbour_v) | (diagonal == parent)
    if np.any(corner):
        linear = weights[corner]
        linear[:, 1] += linear[:, 3]
        linear[:, 2] += linear[:, 3]
        linear[:, 0] -= linear[:, 3]
        linear[:, 3] = 0.0
        weights[corner] = linear
    neighbours = np.stack([parent, neighbour_u, neighbour_v, diagonal], axis=1)
    return neighbours, weights


def upsample_prototypes(
    cells: np.ndarray,
    proto_cells: np.ndarray,
    prototypes: np.ndarray,
    method: str = "parent",
    normalize: bool = True,
) -> np.ndarray:
    """Prototype vectors at the level of ``cells`` from a coarser prototype table.

    ``cells: uint64[N]`` (one level, finer than or equal to the table's),
    ``proto_cells: uint64[P]`` sorted, ``prototypes: [P, D]`` -> ``float32 [N, D]``,
    L2-normalised when ``normalize``.
    """

    if method not in METHODS:
        raise ValueError(f"unknown upsampling method {method!r}; valid: {', '.join(METHODS)}")
    cells = np.asarray(cells, dtype=np.uint64)
    proto_cells = np.asarray(proto_cells, dtype=np.uint64)
    if len(cells) == 0:
        return np.zeros((0, prototypes.shape[1]), dtype=np.float32)
    if len(proto_cells) != len(prototypes):
        raise ValueError(f"{len(proto_cells)} prototype cells but {len(prototypes)} vectors")
    if np.any(proto_cells[1:] <= proto_cells[:-1]):
        raise ValueError("prototype cells must be sorted and unique")
    proto_level = int(cell_level(proto_cells[:1])[0])
    if method == "parent":
        neighbours, weights = _parents(cells, proto_level), np.ones((len(cells), 1))
    else:
        neighbours, weights = surrounding_cells(cells, proto_level)
    rows = _lookup_rows(proto_cells, neighbours.reshape(-1)).reshape(neighbours.shape)
    if np.any(rows[:, 0] < 0):
        missing = neighbours[rows[:, 0] < 0, 0]
        raise ValueError(
            f"{len(missing)} cells have no level-{proto_level} prototype (first: "
            f"{cell_to_token(missing[:1])[0]}); build the database over the model's region"
        )
    weights = np.where(rows >= 0, weights, 0.0)
    weights /= weights.sum(axis=1, keepdims=True)
    vectors = np.einsum(
        "nk,nkd->nd", weights, np.asarray(prototypes, dtype=np.float64)[np.maximum(rows, 0)]
    )
    if normalize:
        vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    return vectors.astype(np.float32)


def _parents(cells: np.ndarray, level: int) -> np.ndarray:
    """Level-``level`` ancestors as an ``[N, 1]`` array."""

    return cell_parent(cells, level)[:, None]

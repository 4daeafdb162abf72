"""Prototype upsampling on hand-made prototype fields."""

import numpy as np
import pytest

from geocells.geo import cell_children, cell_parent, cell_to_latlng, latlng_to_cell
from geocells.scoring.upsample import (
    bilinear_weights,
    surrounding_cells,
    unit_vectors,
    upsample_prototypes,
)

PROTO_LEVEL = 12


def _prototype_cells(south, west, north, east):
    """Sorted level-12 cells hit by a dense grid of points over a box."""
    lat, lon = np.meshgrid(np.linspace(south, north, 80), np.linspace(west, east, 80))
    return np.unique(latlng_to_cell(lat.ravel(), lon.ravel(), PROTO_LEVEL))


def _linear_field(cells, matrix):
    return unit_vectors(*cell_to_latlng(cells)) @ matrix


def test_bilinear_weights_on_a_square():
    origin = np.zeros((2, 3))
    axis_u = np.array([[1.0, 0, 0]] * 2)
    axis_v = np.array([[0, 1.0, 0]] * 2)
    point = np.array([[0.25, 0.25, 0], [1.0, 1.0, 0]])
    weights = bilinear_weights(point, origin, axis_u, axis_v)
    np.testing.assert_allclose(weights[0], [0.5625, 0.1875, 0.1875, 0.0625])
    np.testing.assert_allclose(weights[1], [0, 0, 0, 1], atol=1e-12)


def test_parent_copy_takes_the_parent_row():
    proto_cells = _prototype_cells(50.0, 4.0, 50.2, 4.3)
    prototypes = np.random.default_rng(0).normal(size=(len(proto_cells), 8))
    cells = cell_children(proto_cells[10:20], PROTO_LEVEL + 2).reshape(-1)
    upsampled = upsample_prototypes(cells, proto_cells, prototypes, "parent", normalize=False)
    rows = np.searchsorted(proto_cells, cell_parent(cells, PROTO_LEVEL))
    np.testing.assert_allclose(upsampled, prototypes[rows], rtol=1e-6)


def test_bilinear_reproduces_a_linear_field():
    proto_cells = _prototype_cells(50.0, 4.0, 50.4, 4.6)
    matrix = np.random.default_rng(1).normal(size=(3, 4)) * 1000
    prototypes = _linear_field(proto_cells, matrix)
    interior = _prototype_cells(50.1, 4.15, 50.3, 4.45)
    cells = cell_children(interior, PROTO_LEVEL + 1).reshape(-1)
    truth = _linear_field(cells, matrix)
    interpolated = upsample_prototypes(cells, proto_cells, prototypes, "bilinear", False)
    copied = upsample_prototypes(cells, proto_cells, prototypes, "parent", False)
    interp_error = np.abs(interpolated - truth).max()
    copy_error = np.abs(copied - truth).max()
    assert interp_error < 0.01 * copy_error


def test_surrounding_cells_bracket_the_child():
    proto_cells = _prototype_cells(50.0, 4.0, 50.2, 4.3)
    cells = cell_children(proto_cells[40:41], PROTO_LEVEL + 1).reshape(-1)
    neighbours, weights = surrounding_cells(cells, PROTO_LEVEL)
    assert len(np.unique(neighbours)) == 9  # 4 children share the parent, each its own side
    np.testing.assert_allclose(weights.sum(axis=1), 1.0)
    assert np.all(weights > 0)
    np.testing.assert_allclose(np.sort(weights[0]), [0.0625, 0.1875, 0.1875, 0.5625], atol=0.01)


def test_missing_neighbours_are_dropped_and_missing_parents_refused():
    proto_cells = _prototype_cells(50.0, 4.0, 50.2, 4.3)
    prototypes = np.ones((len(proto_cells), 4))
    edge_cells = cell_children(proto_cells[:5], PROTO_LEVEL + 1).reshape(-1)
    upsampled = upsample_prototypes(edge_cells, proto_cells, prototypes, "bilinear")
    np.testing.assert_allclose(upsampled, 0.5)  # normalised ones in 4-D
    outside = latlng_to_cell(np.array([10.0]), np.array([10.0]), PROTO_LEVEL + 1)
    with pytest.raises(ValueError, match="no level-12 prototype"):
        upsample_prototypes(outside, proto_cells, prototypes)
    with pytest.raises(ValueError, match="unknown upsampling method"):
        upsample_prototypes(edge_cells, proto_cells, prototypes, "nearest")

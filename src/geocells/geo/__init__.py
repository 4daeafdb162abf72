"""geocells.geo: S2 cells, regions, coverings and distances in pure numpy (no torch)."""

from geocells.geo.cells import (
    DEFAULT_CELL_LEVEL,
    DEFAULT_PROTOTYPE_LEVEL,
    MAX_LEVEL,
    cell_children,
    cell_level,
    cell_neighbors,
    cell_parent,
    cell_to_latlng,
    cell_to_token,
    cell_vertices,
    latlng_to_cell,
    token_to_cell,
)
from geocells.geo.cover import count_cells, cover_region, region_cells
from geocells.geo.distance import (
    EARTH_RADIUS_M,
    haversine_m,
    latlng_to_local_m,
    local_m_to_latlng,
)
from geocells.geo.land import LandMask
from geocells.geo.region import Region, preset_names

__all__ = [
    "DEFAULT_CELL_LEVEL",
    "DEFAULT_PROTOTYPE_LEVEL",
    "EARTH_RADIUS_M",
    "MAX_LEVEL",
    "LandMask",
    "Region",
    "cell_children",
    "cell_level",
    "cell_neighbors",
    "cell_parent",
    "cell_to_latlng",
    "cell_to_token",
    "cell_vertices",
    "count_cells",
    "cover_region",
    "haversine_m",
    "latlng_to_cell",
    "latlng_to_local_m",
    "local_m_to_latlng",
    "preset_names",
    "region_cells",
    "token_to_cell",
]

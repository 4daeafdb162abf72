"""geocells.data: ground manifests, image loading, aerial sources, datasets, importers."""

from geocells.data.aerial import AerialSource, OutOfCoverageError, open_aerial
from geocells.data.dataset import Dataset
from geocells.data.images import ImageLoadError, load_image
from geocells.data.manifest import SPLITS, BadRow, GroundManifest

__all__ = [
    "SPLITS",
    "AerialSource",
    "BadRow",
    "Dataset",
    "GroundManifest",
    "ImageLoadError",
    "OutOfCoverageError",
    "load_image",
    "open_aerial",
]

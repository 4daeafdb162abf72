"""geocells.models: encoders (timm backbone + SALAD + projection), prototype table, GeoModel.

Importing this package imports torch; use it from library code, not at CLI import time.
"""

from geocells.models.config import ModelConfig
from geocells.models.encoder import Encoder
from geocells.models.geomodel import GeoModel, build_model, load_model, save_model
from geocells.models.prototypes import PrototypeTable
from geocells.models.salad import SALAD

__all__ = [
    "SALAD",
    "Encoder",
    "GeoModel",
    "ModelConfig",
    "PrototypeTable",
    "build_model",
    "load_model",
    "save_model",
]

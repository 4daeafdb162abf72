"""geocells.locate: the public inference API (``Localizer``) and the output formats."""

from geocells.locate.localizer import Localizer, Prediction

__all__ = ["Localizer", "Prediction"]

"""geocells.locate: the public inference API (``Localizer``), its result record
(``ImageResult`` of ``Prediction``s) and the output formats."""

from geocells.locate.localizer import Localizer
from geocells.locate.record import ImageResult, Prediction

__all__ = ["ImageResult", "Localizer", "Prediction"]

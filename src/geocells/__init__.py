"""geocells: continent-scale image geo-localization with S2-cell prototypes and aerial codes."""

__version__ = "0.1.0"

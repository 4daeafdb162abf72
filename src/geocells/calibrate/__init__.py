"""geocells.calibrate: choose κ on a validation split (``stage.run``), the confidence model."""

"""geocells.index."""

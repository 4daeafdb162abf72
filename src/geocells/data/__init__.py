"""geocells.data."""

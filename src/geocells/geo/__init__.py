"""geocells.geo."""

"""geocells.train."""

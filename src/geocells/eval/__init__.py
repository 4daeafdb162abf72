"""geocells.eval."""

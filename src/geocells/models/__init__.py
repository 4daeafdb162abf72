"""geocells.models."""

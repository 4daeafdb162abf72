"""geocells.synth."""

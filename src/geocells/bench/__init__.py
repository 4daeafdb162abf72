"""geocells.bench: scale benchmarks (continent-size database, prototypes at scale)."""

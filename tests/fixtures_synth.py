"""Shared pytest fixtures owned by the synth tests (session-scoped, built once per worker)."""

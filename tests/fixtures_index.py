"""Shared pytest fixtures owned by the index tests (session-scoped, built once per worker)."""

"""Shared pytest fixtures owned by the train tests (session-scoped, built once per worker)."""

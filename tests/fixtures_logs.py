"""Capturing a library logger's warnings reliably under pytest-xdist."""

import contextlib
import logging

__all__: list[str] = []


@contextlib.contextmanager
def captured_warnings(caplog, name: str, level: int = logging.WARNING):
    """``caplog`` sees logger ``name``'s warnings (or records from ``level`` up) even when
    another test in the same worker reconfigured logging (a disabled logger, or one that
    does not propagate)."""
    log = logging.getLogger(name)
    log.disabled = False
    log.addHandler(caplog.handler)
    try:
        with caplog.at_level(level, logger=name):
            yield
    finally:
        log.removeHandler(caplog.handler)

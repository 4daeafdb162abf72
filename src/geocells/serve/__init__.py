"""``geocells serve``: an HTTP service and a web page over one database.

```python
from geocells.serve import ServeConfig, create_app
app = create_app(ServeConfig(db="db/"))  # any ASGI server; `geocells serve db/` uses uvicorn
```

Routes, limits and errors are documented in docs/serve.md.
"""

from geocells.serve.config import ServeConfig


def create_app(cfg: ServeConfig, localizer=None):
    """The FastAPI app of ``cfg`` (imports FastAPI only when called)."""
    from geocells.serve.app import create_app as build

    return build(cfg, localizer)


__all__ = ["ServeConfig", "create_app"]

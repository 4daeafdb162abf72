"""What one server process holds: the Localizer, the batcher, the tile renderer, metrics.

``Service.load`` opens the database and its model off the event loop; until it finishes
``/health`` answers 503 and the API refuses work, so a load balancer never sends traffic
to a process that is still reading its model.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from geocells.serve.batching import Batcher
from geocells.serve.config import ServeConfig
from geocells.serve.metrics import Metrics
from geocells.serve.tiles import TileRenderer
from geocells.serve.uploads import DecodeBudget, release_large_buffers

if TYPE_CHECKING:
    from geocells.data.aerial import AerialSource
    from geocells.io import DatabaseMeta
    from geocells.locate import Localizer, Prediction

log = logging.getLogger(__name__)

# Leaflet ships inside folium-offline as strings keyed by the CDN address they replace.
LEAFLET_KEYS = {
    "leaflet.js": "https://cdn.jsdelivr.net/npm/leaflet@1.9.3/dist/leaflet.js",
    "leaflet.css": "https://cdn.jsdelivr.net/npm/leaflet@1.9.3/dist/leaflet.css",
}
PAGE_FILES = ("index.html", "app.js", "app.css")
MEDIA_TYPES = {".html": "text/html", ".js": "text/javascript", ".css": "text/css"}


def static_assets() -> dict[str, tuple[bytes, str]]:
    """Every file the page needs: name -> (bytes, media type); nothing from the network."""
    from offlinefolium import elements

    assets = {}
    folder = resources.files("geocells.serve") / "static"
    for name in PAGE_FILES:
        assets[name] = ((folder / name).read_bytes(), MEDIA_TYPES[Path(name).suffix])
    for name, key in LEAFLET_KEYS.items():
        text = getattr(elements, "_res", {}).get(key)
        if text is None:
            raise OSError(f"folium-offline no longer ships {key}; pin folium_offline==0.20.0.2")
        assets[name] = (text.encode(), MEDIA_TYPES[Path(name).suffix])
    return assets


def open_tile_source(cfg: ServeConfig, meta: DatabaseMeta) -> AerialSource | None:
    """The aerial source for map tiles: ``cfg.aerial``, else the DB's dataset imagery."""
    from geocells.data.aerial import open_aerial

    if cfg.aerial:
        return open_aerial(cfg.aerial)
    folder = Path(meta.dataset) / "aerial"
    if meta.dataset and folder.is_dir() and any(folder.iterdir()):
        return open_aerial(folder)
    log.warning("serve: no aerial imagery at %s; the map has no tiles (use --aerial)", folder)
    return None


class Service:
    """The loaded state of one server process."""

    def __init__(self, cfg: ServeConfig, localizer: Localizer | None = None) -> None:
        self.cfg = cfg
        self.localizer = localizer
        self.metrics = Metrics()
        self.batcher: Batcher | None = None
        self.tiles: TileRenderer | None = None
        # The page is served from the first moment (it waits for /info itself).
        self.assets: dict[str, tuple[bytes, str]] = static_assets()
        self.error: str | None = None
        self.ready = False
        # Uploads decode on their own few threads, under one pixel budget for all requests.
        self.decoder = ThreadPoolExecutor(cfg.decode_threads, thread_name_prefix="geocells-decode")
        self.decode_budget = DecodeBudget(cfg.decode_pixels)

    async def load(self) -> None:
        """Open everything (off the event loop), then start batching; errors are kept."""
        try:
            await self._load()
        except Exception as err:  # reported by /health; the process stays up to say so
            # One line; the traceback only with -v (debug logging), as the CLI does.
            log.error("serve: loading %s failed: %s", self.cfg.db, " ".join(str(err).split()))
            log.debug("serve: loading %s failed", self.cfg.db, exc_info=True)
            self.error = f"{type(err).__name__}: {err}"

    async def _load(self) -> None:
        from geocells.locate import Localizer

        # Freed image buffers go back to the system instead of staying in the heap.
        release_large_buffers()

        if self.localizer is None:
            self.localizer = await asyncio.to_thread(
                Localizer.load,
                self.cfg.db,
                self.cfg.backend,
                self.cfg.device,
                self.cfg.batch_size,
                self.cfg.warm,
            )
        source = await asyncio.to_thread(open_tile_source, self.cfg, self.localizer.database.meta)
        if source is not None:
            self.tiles = TileRenderer(source, self.cfg.tile_cache)
        self.batcher = Batcher(
            self.run_batch,
            self.cfg.batch_size,
            self.cfg.batch_window_ms / 1000.0,
            self.cfg.queue_size,
            on_batch=self.metrics.batch,
        )
        self.batcher.start()
        self.ready = True
        log.info("serve: ready, %d cells from %s", len(self.localizer.database), self.cfg.db)

    async def close(self) -> None:
        """Stop the batcher, the tile thread and the decode threads."""
        if self.batcher is not None:
            await self.batcher.stop()
        if self.tiles is not None:
            self.tiles.close()
        self.decoder.shutdown(wait=False, cancel_futures=True)

    def run_batch(self, images: list[Any], top_k: int) -> list[list[Prediction]]:
        """One encoder call and one search for a batch (runs on the batch thread)."""
        from geocells.scoring.confidence import aspect_ratios

        queries = self.localizer.embed(images)
        return self.localizer.search(queries, top_k, aspect_ratios(images))

    def info(self) -> dict[str, Any]:
        """What the page needs to know about the database and the limits."""
        database = self.localizer.database
        meta = database.meta
        return {
            "cells": len(database),
            "levels": {"cell": meta.cell_level, "proto": meta.proto_level},
            "kappa": database.kappa,
            "calibrated": meta.confidence is not None,
            "region": meta.region,
            "tile_size_m": meta.tile_size_m,
            "tiles": self.tiles is not None,
            "tile_bounds": list(self.tiles.source.bounds) if self.tiles else None,
            "limits": {
                "max_files": self.cfg.max_files,
                "max_top_k": self.cfg.max_top_k,
                "max_upload_mb": self.cfg.max_upload_mb,
            },
        }

    def find_cell(self, cell: int) -> int | None:
        """Row of ``cell`` in the (sorted) database, or None."""
        cells = self.localizer.database.cells
        row = int(np.searchsorted(cells, np.uint64(cell)))
        return row if row < len(cells) and int(cells[row]) == cell else None

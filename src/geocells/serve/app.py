"""The FastAPI app of ``geocells serve``: routes over a ``Service``.

``create_app(cfg)`` builds it; ``app_from_env()`` is the factory uvicorn's worker
processes call (the config travels as JSON in ``GEOCELLS_SERVE_CONFIG``). Every error is
``{"error": "<what is wrong>"}`` with a 4xx/5xx status; see docs/serve.md.
"""

# No `from __future__ import annotations`: FastAPI reads the route signatures at runtime.

import asyncio
import io
import logging
import os
from contextlib import asynccontextmanager
from typing import Annotated, Literal

from fastapi import FastAPI, File, HTTPException, Path, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from geocells import __version__
from geocells.serve import results
from geocells.serve.batching import QueueFullError, RequestTooLargeError
from geocells.serve.config import ServeConfig
from geocells.serve.guard import Guard
from geocells.serve.service import Service
from geocells.serve.tiles import TileRequestError
from geocells.serve.uploads import UploadError, decode_upload

log = logging.getLogger(__name__)

CONFIG_ENV = "GEOCELLS_SERVE_CONFIG"
PNG = {"content": {"image/png": {}}}


def _error(status: int, message: str, **extra) -> JSONResponse:
    headers = extra.pop("headers", None)
    return JSONResponse({"error": message, **extra}, status_code=status, headers=headers)


def _ready(request: Request) -> Service:
    service: Service = request.app.state.service
    if not service.ready:
        detail = service.error or "still loading the database and model"
        raise HTTPException(503, f"not ready: {detail}", headers={"Retry-After": "2"})
    return service


def _describe_validation(err: RequestValidationError) -> str:
    parts = []
    for item in err.errors():
        where = ".".join(str(part) for part in item.get("loc", ()) if part != "body")
        parts.append(f"{where}: {item.get('msg')}")
    return "; ".join(parts) or "invalid request"


def add_error_handlers(app: FastAPI) -> None:
    """Every error as ``{"error": ...}``: HTTP errors, validation errors, crashes."""

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, err: StarletteHTTPException):
        return _error(err.status_code, str(err.detail), headers=getattr(err, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, err: RequestValidationError):
        return _error(422, _describe_validation(err))

    @app.exception_handler(Exception)
    async def crash(request: Request, err: Exception):
        log.exception("serve: %s %s failed", request.method, request.url.path)
        return _error(500, f"internal error ({type(err).__name__})")


async def _decode_all(files: list[UploadFile], service: Service):
    """(decoded images or UploadError) and the EXIF GPS position (or None) per file, decoded
    on the service's decode threads under its pixel budget, one file's bytes in memory at a
    time (the position is read from the header before the pixels are thrown away)."""
    cfg, loop = service.cfg, asyncio.get_running_loop()
    decoded, positions = [], []
    for upload in files:
        data = await upload.read()
        positions.append(results.exif_position(io.BytesIO(data)))
        try:
            image = await loop.run_in_executor(
                service.decoder,
                decode_upload,
                data,
                upload.content_type,
                cfg.max_pixels,
                cfg.max_side,
                service.decode_budget,
                service.localizer.model.ground.resize,  # queued: the model's input, not more
            )
            decoded.append(image)
        except UploadError as err:
            decoded.append(err)
        del data
    return decoded, positions


def add_api_routes(app: FastAPI, cfg: ServeConfig) -> None:
    """POST /locate, GET /cells/{token}[/tile.png], GET /tiles/{z}/{x}/{y}.png."""

    @app.post("/locate", summary="Locate one or more photos")
    async def locate(
        request: Request,
        files: Annotated[list[UploadFile], File(description="image files (multipart)")],
        top_k: Annotated[int, Query(ge=1, le=cfg.max_top_k)] = 5,
        format: Literal["json", "geojson"] = "json",
    ):
        """Top-k cells per image; a bad image gets an ``error`` entry, the rest go on."""
        service = _ready(request)
        if len(files) > cfg.max_files:
            raise HTTPException(413, f"{len(files)} files: at most {cfg.max_files} per request")
        try:
            reservation = service.batcher.reserve(len(files))
        except RequestTooLargeError as err:
            return _error(413, str(err))
        except QueueFullError as err:
            return _error(503, str(err), headers={"Retry-After": str(cfg.retry_after_s)})
        with reservation:  # decoded images count against the queue from here on
            decoded, positions = await _decode_all(files, service)
            good = [image for image in decoded if not isinstance(image, UploadError)]
            ranked = iter(await service.batcher.submit(good, top_k, reservation) if good else [])
        items = []
        for index, (upload, image) in enumerate(zip(files, decoded)):
            name = upload.filename or f"file {index}"
            if isinstance(image, UploadError):
                items.append(results.ImageResult(index, name, error=f"{name}: {image}"))
            else:
                position = positions[index] or (None, None)
                items.append(results.ImageResult(index, name, next(ranked), None, *position))
        errors = [image.kind for image in decoded if isinstance(image, UploadError)]
        service.metrics.images_done(len(good), errors)
        render = results.to_geojson if format == "geojson" else results.to_json
        body = render(items, top_k)
        if not good:
            message = "; ".join(item.error for item in items)
            return _error(422, f"no image could be located: {message}", **body)
        return JSONResponse(body)  # already plain JSON types: skip FastAPI's slow encoder

    @app.get("/cells/{token}", summary="A database cell: centre, polygon, tile address")
    async def cell(request: Request, token: Annotated[str, Path(max_length=16)]):
        service = _ready(request)
        cell_id, row = _database_cell(service, token)
        from geocells.geo import cell_level, cell_to_latlng, cell_to_token

        lat, lon = cell_to_latlng([cell_id])
        canonical = str(cell_to_token([cell_id])[0])
        return {
            "token": canonical,
            "level": int(cell_level([cell_id])[0]),
            "row": row,
            "lat": float(lat[0]),
            "lon": float(lon[0]),
            "polygon": results.cell_polygons([canonical])[0],
            "tile": f"/cells/{canonical}/tile.png",
            "tile_size_m": service.localizer.database.meta.tile_size_m,
        }

    @app.get("/cells/{token}/tile.png", summary="The aerial tile of a cell", responses={200: PNG})
    async def cell_tile(
        request: Request,
        token: Annotated[str, Path(max_length=16)],
        px: Annotated[int | None, Query(ge=16, le=1024)] = None,
    ):
        service = _ready(request)
        cell_id, _ = _database_cell(service, token)
        if service.tiles is None:
            raise HTTPException(404, "this server has no aerial imagery (start it with --aerial)")
        from geocells.geo import cell_to_latlng

        meta = service.localizer.database.meta
        lat, lon = cell_to_latlng([cell_id])
        size_m, size_px = float(meta.tile_size_m), px or int(meta.tile_px or 256)
        loop = asyncio.get_running_loop()
        data = await loop.run_in_executor(
            service.tiles.executor,
            service.tiles.cell_png,
            float(lat[0]),
            float(lon[0]),
            size_m,
            size_px,
        )
        if data is None:
            raise HTTPException(404, f"cell {token} lies outside the aerial imagery")
        return Response(data, media_type="image/png", headers={"Cache-Control": "max-age=3600"})

    @app.get(
        "/tiles/{z}/{x}/{y}.png", summary="XYZ map tile of the aerial imagery", responses={200: PNG}
    )
    async def tile(request: Request, z: int, x: int, y: int):
        service = _ready(request)
        if service.tiles is None:
            raise HTTPException(404, "this server has no aerial imagery (start it with --aerial)")
        loop = asyncio.get_running_loop()
        try:
            data = await loop.run_in_executor(
                service.tiles.executor, service.tiles.tile_png, z, x, y
            )
        except TileRequestError as err:
            raise HTTPException(400, str(err)) from None
        return Response(data, media_type="image/png", headers={"Cache-Control": "max-age=3600"})


def _database_cell(service: Service, token: str) -> tuple[int, int]:
    """(cell id, row) of a token naming a database cell; 400 / 404 otherwise."""
    from geocells.geo import token_to_cell

    try:
        cell_id = int(token_to_cell([token])[0])
    except ValueError:
        raise HTTPException(400, f"{token!r} is not an S2 cell token") from None
    row = service.find_cell(cell_id)
    if row is None:
        level = service.localizer.database.cell_level
        raise HTTPException(404, f"cell {token} is not in the database (level-{level} cells)")
    return cell_id, row


def add_service_routes(app: FastAPI) -> None:
    """The page, its static files, /health, /info and /metrics."""

    @app.get("/", include_in_schema=False)
    async def page(request: Request):
        return _asset(request, "index.html")

    @app.get("/static/{name}", include_in_schema=False)
    async def static(request: Request, name: str):
        return _asset(request, name)

    @app.get("/health", summary="200 once the database and model are loaded, else 503")
    async def health(request: Request):
        service: Service = request.app.state.service
        if service.ready:
            return {"status": "ready", "cells": len(service.localizer.database)}
        status = "failed" if service.error else "loading"
        return JSONResponse({"status": status, "error": service.error}, status_code=503)

    @app.get("/info", summary="The database, its region and the service's limits")
    async def info(request: Request):
        return _ready(request).info()

    @app.get("/metrics", summary="Prometheus metrics", response_class=PlainTextResponse)
    async def metrics(request: Request):
        service: Service = request.app.state.service
        waiting = service.batcher.waiting if service.batcher else 0
        return PlainTextResponse(
            service.metrics.render(waiting), media_type="text/plain; version=0.0.4"
        )


def _asset(request: Request, name: str) -> Response:
    service: Service = request.app.state.service
    # A lookup in a dict filled at start-up: a client's name is never a path.
    if name not in service.assets:
        raise HTTPException(404, f"no static file {name!r}")
    data, media_type = service.assets[name]
    return Response(data, media_type=media_type, headers={"Cache-Control": "no-cache"})


def create_app(cfg: ServeConfig, localizer=None) -> FastAPI:
    """The app for ``cfg``; ``localizer`` (optional) replaces loading ``cfg.db``."""
    service = Service(cfg, localizer)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        loading = asyncio.create_task(service.load())
        try:
            yield
        finally:
            loading.cancel()
            await service.close()

    app = FastAPI(
        title="geocells",
        version=__version__,
        description="Locate ground-level photos on the cells of a geocells database.",
        lifespan=lifespan,
    )
    app.state.service = service
    add_error_handlers(app)
    add_api_routes(app, cfg)
    add_service_routes(app)
    app.add_middleware(
        Guard,
        token=cfg.token,
        max_body=cfg.max_upload_bytes,
        metrics=service.metrics,
        body_timeout_s=cfg.body_timeout_s,
    )
    return app


def app_from_env() -> FastAPI:
    """Factory for uvicorn worker processes: the config comes from ``GEOCELLS_SERVE_CONFIG``."""
    text = os.environ.get(CONFIG_ENV)
    if not text:
        raise OSError(f"{CONFIG_ENV} is not set; start the service with `geocells serve`")
    cfg = ServeConfig.from_json(text)
    if cfg.threads > 0:
        import torch

        torch.set_num_threads(cfg.threads)
    return create_app(cfg)

"""The FastAPI application: routes, error shapes, metrics, and the embedded worker pool's lifecycle."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

import marionet
from marionet.api.errors import error_response, install_error_handlers
from marionet.api.metrics import LatencyMiddleware, make_registry
from marionet.api.routes import files, meta, results, tasks
from marionet.api.routes.meta import STATIC
from marionet.config import Settings, get_settings
from marionet.media.ingest import VIDEO_MAX_BYTES
from marionet.tasks.db import migrate
from marionet.tasks.queue import make_dispatcher
from marionet.tasks.retention import Janitor
from marionet.tasks.store import Store

UPLOAD_OVERHEAD = 1024 * 1024


def bootstrap_key(store: Store, settings: Settings) -> str | None:
    """With no active key, create one and print it once: there is no open mode."""
    if store.count_active_keys():
        return None
    _, token = store.create_key("bootstrap")
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "::", "") else settings.host
    base = settings.public_url or f"http://{host}:{settings.port}"
    print(
        "\nNo API keys existed, so one was created. It is shown only this once; keep it:\n\n"
        f"  {token}\n\n"
        "Try it:\n"
        f"  curl -s {base}/v1/models -H 'Authorization: Bearer {token}'\n"
        "Make a video (upload a character photo and a dance clip, then create the task with their URLs):\n"
        f"  curl -s {base}/v1/files -H 'Authorization: Bearer {token}' -F file=@character.png\n"
        f"  curl -s {base}/v1/files -H 'Authorization: Bearer {token}' -F file=@dance.mp4\n"
        f"  curl -s {base}/v1/videos/generations -H 'Authorization: Bearer {token}' "
        '-H \'Content-Type: application/json\' -d \'{"image_url": "<image url>", "video_url": "<video url>"}\'\n'
        f"Or open the playground: {base}/\n",
        file=sys.stdout,
        flush=True,
    )
    return token


class BodyLimitMiddleware:
    """413 for a body past the cap (uploads get the video cap): at once when Content-Length declares it,
    else the moment the bytes received pass it, so a chunked body cannot stream unbounded before auth."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.settings = settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = (
            VIDEO_MAX_BYTES + UPLOAD_OVERHEAD
            if scope["path"] == "/v1/files"
            else self.settings.max_request_bytes
        )

        def too_large() -> JSONResponse:  # built only for the rare request that needs it
            return error_response(413, "request_too_large", f"The request body is larger than {limit} bytes.")

        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            await too_large()(scope, receive, send)
            return
        received = 0
        started = rejected = False

        async def limited_receive() -> Message:
            nonlocal received, rejected
            message = await receive()
            if message["type"] == "http.request" and not rejected:
                received += len(message.get("body", b""))
                if received > limit:
                    rejected = True
                    if not started:
                        await too_large()(scope, receive, send)
            # The app sees a disconnect and stops reading; what it answers then is dropped.
            return {"type": "http.disconnect"} if rejected else message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if rejected:
                return
            started = started or message["type"] == "http.response.start"
            await send(message)

        await self.app(scope, limited_receive, guarded_send)


def _openapi_without_422(app: FastAPI) -> None:
    """The schema documents what clients get: bad input is a 400 in the contract's error shape, never a 422."""

    def openapi() -> dict:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title, version=app.version, description=app.description, routes=app.routes
            )
            for path in schema.get("paths", {}).values():
                for operation in path.values():
                    operation.get("responses", {}).pop("422", None)
            for name in ("HTTPValidationError", "ValidationError"):
                schema.get("components", {}).get("schemas", {}).pop(name, None)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def create_app(settings: Settings | None = None, *, run_workers: bool = True) -> FastAPI:
    """The app for `settings` (default: from MARIONET_* env). run_workers=False serves the API only."""
    settings = settings or get_settings()
    store = Store(settings)
    registry, latency = make_registry(store)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        migrate(settings)
        bootstrap_key(store, settings)
        janitor = Janitor(settings, store)
        janitor.start()
        if run_workers:
            app.state.dispatcher.start()
        try:
            yield
        finally:
            janitor.stop()
            if run_workers:
                app.state.dispatcher.stop()

    app = FastAPI(
        title="marionet",
        version=marionet.__version__,
        description="Self-hosted, Kling-compatible motion-control video API: a character photo performs the "
        'motion of a driving video. Every error is `{"error": {code, message, type, param}}`.',
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.store = store
    app.state.registry = registry
    app.state.dispatcher = make_dispatcher(settings, store)
    install_error_handlers(app)
    for module in (tasks, files, results, meta):
        app.include_router(module.router)
    app.mount("/static", StaticFiles(directory=STATIC, check_dir=False), name="static")
    _openapi_without_422(app)
    app.add_middleware(BodyLimitMiddleware, settings=settings)
    app.add_middleware(LatencyMiddleware, latency=latency)
    return app


def app_factory() -> FastAPI:
    """For `uvicorn --factory marionet.api.app:app_factory`."""
    return create_app()

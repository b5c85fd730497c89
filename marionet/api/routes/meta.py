"""Models, health, metrics, and the playground page at /."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import FileResponse, HTMLResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy.exc import SQLAlchemyError

from marionet.api.deps import current_key, get_settings, get_store
from marionet.api.routes.tasks import accepted_models
from marionet.api.schemas import ERROR_RESPONSES, ErrorResponse, Health, ModelList
from marionet.config import Settings
from marionet.errors import ServiceUnavailable
from marionet.tasks.models import ApiKey
from marionet.tasks.store import Store

router = APIRouter()
# The playground: index.html at /, its CSS and JS under /static (mounted in marionet.api.app).
STATIC = Path(__file__).resolve().parents[2] / "static"
INDEX = STATIC / "index.html"
PLACEHOLDER = """<!doctype html><html><head><meta charset="utf-8"><title>marionet</title></head>
<body><h1>marionet</h1><p>A self-hosted motion-control video API. See <a href="/docs">/docs</a>.</p></body></html>"""


@router.get("/v1/models", response_model=ModelList, responses=ERROR_RESPONSES, summary="Accepted model names")
def list_models(
    key: ApiKey = Depends(current_key), settings: Settings = Depends(get_settings)
) -> dict[str, Any]:
    return {
        "object": "list",
        "data": [
            {"id": name, "object": "model", "engine": engine, "owned_by": "marionet"}
            for name, engine in accepted_models(settings).items()
        ],
    }


@router.get(
    "/healthz",
    response_model=Health,
    responses={503: {"model": ErrorResponse, "description": "The database does not answer"}},
    summary="Liveness and database check",
)
def healthz(
    request: Request, store: Store = Depends(get_store), settings: Settings = Depends(get_settings)
) -> dict[str, Any]:
    try:
        counts = store.counts_by_status()
    except SQLAlchemyError as exc:
        raise ServiceUnavailable(
            f"The database does not answer ({type(exc.orig or exc).__name__}).", code="database_unavailable"
        ) from exc
    return {
        "status": "ok",
        "database": "ok",
        "queue": settings.queue,
        "workers": settings.workers,
        "pending": counts["pending"],
        "processing": counts["processing"],
    }


@router.get("/metrics", response_class=Response, summary="Prometheus metrics")
def metrics(request: Request) -> Response:
    return Response(generate_latest(request.app.state.registry), media_type=CONTENT_TYPE_LATEST)


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
def index() -> Response:
    if INDEX.is_file():
        return FileResponse(INDEX, media_type="text/html")
    return HTMLResponse(PLACEHOLDER)

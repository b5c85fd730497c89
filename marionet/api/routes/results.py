"""Result downloads through signed, expiring links: no bearer needed; tampered -> 403, expired -> 410."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query
from fastapi.responses import FileResponse

from marionet.api.deps import get_settings, get_store
from marionet.api.schemas import ERROR_RESPONSES
from marionet.config import Settings
from marionet.errors import Gone, NotFound
from marionet.tasks.models import COMPLETED
from marionet.tasks.signing import verify_result_link
from marionet.tasks.store import Store

router = APIRouter(responses=ERROR_RESPONSES)


@router.get(
    "/v1/results/{name}",
    response_class=FileResponse,
    responses={
        200: {"content": {"video/mp4": {}}, "description": "The MP4"},
        403: ERROR_RESPONSES[400],
        410: ERROR_RESPONSES[400],
    },
    summary="Download a result (signed link)",
)
def download_result(
    name: str,
    expires: str = Query(..., description="Unix time the link expires."),
    signature: str = Query(..., description="HMAC of the task id and expiry."),
    settings: Settings = Depends(get_settings),
    store: Store = Depends(get_store),
) -> FileResponse:
    task_id = name.removesuffix(".mp4")
    verify_result_link(task_id, expires, signature, settings)
    task = store.get_task(task_id)
    if task.status != COMPLETED or not task.result_path:
        raise NotFound("This task has no result.", code="result_not_found")
    path = settings.resolved_storage_dir() / task.result_path
    if task.result_deleted or not path.is_file():
        raise Gone("This result was deleted after the retention period.", code="result_deleted")
    return FileResponse(path, media_type="video/mp4", filename=f"{task_id}.mp4")

"""POST /v1/files: upload an image or a video once, then use the returned URL as image_url or video_url."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Depends, File, UploadFile

from marionet.api.deps import base_url, current_key, get_settings
from marionet.api.schemas import ERROR_RESPONSES, FileObject
from marionet.config import Settings
from marionet.media.uploads import store_upload, upload_url
from marionet.tasks.models import ApiKey

router = APIRouter(responses=ERROR_RESPONSES)


@router.post("/v1/files", response_model=FileObject, summary="Upload an image or a video")
def upload_file(
    file: UploadFile = File(..., description="A JPG/PNG image (10 MB max) or an MP4/MOV video (100 MB max)."),
    key: ApiKey = Depends(current_key),
    settings: Settings = Depends(get_settings),
    base: str = Depends(base_url),
) -> dict[str, Any]:
    stored = store_upload(file.file, settings)
    return {
        "id": stored.file_id,
        "object": "file",
        "created": int(time.time()),
        "bytes": stored.bytes,
        "kind": stored.kind,
        "filename": file.filename,
        "url": upload_url(stored.file_id, base),
    }

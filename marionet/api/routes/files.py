"""POST /v1/files: upload an image or a video once, then use the returned URL as image_url or video_url."""

from __future__ import annotations

import shutil
import time
from typing import Any

from fastapi import APIRouter, Depends, File, UploadFile

from marionet.api.deps import base_url, current_key, get_settings
from marionet.api.schemas import ERROR_RESPONSES, FileObject
from marionet.config import Settings
from marionet.errors import InputError, MarionetError, PayloadTooLarge
from marionet.media.ingest import IMAGE_MAX_BYTES, VIDEO_MAX_BYTES, check_image, check_video
from marionet.media.uploads import new_upload_id, upload_path, upload_url
from marionet.tasks.models import ApiKey

router = APIRouter(responses=ERROR_RESPONSES)


def _kind_of(head: bytes) -> str:
    """Images are recognised by their magic bytes; anything else must be a video."""
    return "image" if head.startswith((b"\x89PNG", b"\xff\xd8")) else "video"


@router.post("/v1/files", response_model=FileObject, summary="Upload an image or a video")
def upload_file(
    file: UploadFile = File(..., description="A JPG/PNG image (10 MB max) or an MP4/MOV video (100 MB max)."),
    key: ApiKey = Depends(current_key),
    settings: Settings = Depends(get_settings),
    base: str = Depends(base_url),
) -> dict[str, Any]:
    file_id = new_upload_id()
    dest = upload_path(file_id, settings)
    try:
        with dest.open("wb") as out:
            shutil.copyfileobj(file.file, out, 1024 * 1024)
        size = dest.stat().st_size
        if size == 0:
            raise InputError("The uploaded file is empty.", code="file_empty", param="file")
        with dest.open("rb") as f:
            kind = _kind_of(f.read(8))
        limit = IMAGE_MAX_BYTES if kind == "image" else VIDEO_MAX_BYTES
        if size > limit:
            raise PayloadTooLarge(f"The {kind} is larger than {limit // (1024 * 1024)} MB.", param="file")
        if kind == "image":
            check_image(dest)
        else:
            # The looser 30 s limit: the task's own orientation decides later.
            check_video(dest, "video")
    except MarionetError as exc:
        dest.unlink(missing_ok=True)
        if exc.param in ("image_url", "video_url"):
            exc.param = "file"
        raise
    except Exception:
        dest.unlink(missing_ok=True)
        raise InputError(
            "The file is neither a JPG/PNG image nor a readable video.", code="file_invalid", param="file"
        ) from None
    return {
        "id": file_id,
        "object": "file",
        "created": int(time.time()),
        "bytes": size,
        "kind": kind,
        "filename": file.filename,
        "url": upload_url(file_id, base),
    }

"""Files uploaded with POST /v1/files: stored under storage_dir/files, addressed by a URL the API accepts.

`store_upload` streams an upload to disk under its byte cap, recognises image or video by content and
validates it (the video against the 30 s ceiling: the task's orientation is not known yet), so a bad file is
refused at upload time and a good one is never probed again (its verdict is cached by content hash).
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO
from urllib.parse import ParseResult, urlparse

from marionet.config import Settings
from marionet.errors import InputError, MarionetError, PayloadTooLarge
from marionet.media.cache import InputCache, file_sha256
from marionet.media.validate import (
    IMAGE_MAX_BYTES,
    VIDEO_MAX_BYTES,
    ImageInfo,
    check_video_limits,
    sniff_kind,
)
from marionet.media.video import VideoInfo

_UPLOAD_PATH = re.compile(r"^/v1/files/(file-[a-z0-9]{24})$")
_CHUNK = 1024 * 1024


@dataclass(frozen=True)
class StoredUpload:
    file_id: str
    path: Path
    kind: str  # "image" | "video"
    bytes: int
    sha256: str
    info: ImageInfo | VideoInfo


def uploads_dir(settings: Settings) -> Path:
    path = settings.resolved_storage_dir() / "files"
    path.mkdir(parents=True, exist_ok=True)
    return path


def new_upload_id() -> str:
    alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
    return "file-" + "".join(secrets.choice(alphabet) for _ in range(24))


def upload_path(file_id: str, settings: Settings) -> Path:
    return uploads_dir(settings) / file_id


def upload_url(file_id: str, base_url: str) -> str:
    return f"{base_url.rstrip('/')}/v1/files/{file_id}"


def _parse(source: str) -> ParseResult:
    """urlparse that turns its ValueError (e.g. "http://[::1/x") into the user's 400."""
    try:
        parsed = urlparse(source)
        parsed.port  # noqa: B018 - raises on an out-of-range port
    except ValueError as exc:
        raise InputError(f"Not a valid URL ({exc}).", code="unsupported_url") from exc
    return parsed


def _points_here(source: str, settings: Settings) -> bool:
    """Whether an upload-shaped URL names this server (relative, our public URL, or a loopback host)."""
    parsed = _parse(source)
    if not parsed.netloc:
        return True
    if settings.public_url and urlparse(settings.public_url).netloc == parsed.netloc:
        return True
    return (parsed.hostname or "") in ("localhost", "127.0.0.1", "::1")


def find_upload(source: str, settings: Settings) -> Path | None:
    """The stored file behind a URL returned by POST /v1/files, or None if `source` is not one.

    Raises InputError(upload_not_found) for an upload URL of this server whose file is gone.
    """
    match = _UPLOAD_PATH.match(_parse(source).path or "")
    if not match:
        return None
    path = upload_path(match.group(1), settings)
    if path.is_file():
        return path
    if _points_here(source, settings):
        raise InputError(
            f"The uploaded file {match.group(1)} does not exist (it may have expired); upload it again.",
            code="upload_not_found",
        )
    return None


def _copy_capped(stream: BinaryIO, dest: Path, max_bytes: int) -> int:
    size = 0
    with dest.open("wb") as out:
        while chunk := stream.read(_CHUNK):
            size += len(chunk)
            if size > max_bytes:
                raise PayloadTooLarge(
                    f"The upload is larger than the limit of {max_bytes} bytes ({max_bytes // 2**20} MB).",
                    param="file",
                )
            out.write(chunk)
    return size


def store_upload(
    stream: BinaryIO, settings: Settings, *, only: str | None = None, param: str = "file"
) -> StoredUpload:
    """Store and validate an uploaded image (10 MB max) or video (100 MB max); raise InputError/413 if bad.

    `only` ("image" | "video") refuses the other kind; errors name `param`.
    """
    file_id = new_upload_id()
    final = upload_path(file_id, settings)
    partial = final.with_name(f".{file_id}.part")
    try:
        size = _copy_capped(stream, partial, VIDEO_MAX_BYTES)
        if size == 0:
            raise InputError("The uploaded file is empty (0 bytes).", code="file_empty", param="file")
        with partial.open("rb") as f:
            kind = sniff_kind(f.read(16))
        if kind is None:
            raise InputError(
                "The upload must be a JPEG/PNG image or an MP4/MOV video; its content is neither.",
                code="unsupported_file_type",
            )
        if only is not None and kind != only:
            raise InputError(
                f"The content must be a{'n' if only == 'image' else ''} {only}; it is a {kind}.",
                code=f"{only}_invalid",
            )
        if kind == "image" and size > IMAGE_MAX_BYTES:
            raise PayloadTooLarge(f"The image is {size} bytes; the limit is {IMAGE_MAX_BYTES} bytes (10 MB).")
        sha256 = file_sha256(partial)
        info = InputCache(settings).validate(sha256, partial, kind)
        if isinstance(info, VideoInfo):
            check_video_limits(info, None)
        partial.replace(final)
    except MarionetError as exc:
        exc.param = param
        raise
    finally:
        partial.unlink(missing_ok=True)
    return StoredUpload(file_id=file_id, path=final, kind=kind, bytes=size, sha256=sha256, info=info)

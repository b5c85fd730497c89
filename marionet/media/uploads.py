"""Files uploaded with POST /v1/files: stored under storage_dir/files, addressed by a URL the API accepts."""

from __future__ import annotations

import re
import secrets
from pathlib import Path
from urllib.parse import urlparse

from marionet.config import Settings

_UPLOAD_PATH = re.compile(r"^/v1/files/(file-[a-z0-9]{24})$")


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


def find_upload(source: str, settings: Settings) -> Path | None:
    """The stored file behind a URL returned by POST /v1/files, or None if `source` is not one."""
    match = _UPLOAD_PATH.match(urlparse(source).path or "")
    if not match:
        return None
    path = upload_path(match.group(1), settings)
    return path if path.is_file() else None

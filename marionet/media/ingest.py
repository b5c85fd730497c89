"""Turn an `image_url` / `video_url` value into a checked local file, inside a per-task folder.

Sources: http(s) URLs (fetched through `media.fetch`'s safety rules), URLs returned by POST /v1/files,
and, for images only, `data:` URIs or bare base64. Anything else is `unsupported_url`.
- `check_source_at_request(source, kind, settings, orientation)`: uploads and data URIs are fully validated
  (a bad one is a 400 at once); remote URLs get their syntax and address checked, not fetched.
- `inline_image(source)` / `store_inline_image(data, settings)`: a data: URI or base64 image decoded once,
  then stored as an upload (validated in the sandbox), so a task keeps a URL and not megabytes.
- `ingest_input(...)` / `load_input(...)`: fetch or copy into the task's folder through the content-hash
  cache (`media.cache`), validated once per content.
- `check_image(path)` / `check_video(path, orientation)`: content validation of a file (`media.validate`).
- `task_workdir(settings, task_id, attempt)`: the attempt's own folder, removed whatever happens
  (`workdir_path` names it, for a supervisor cleaning up after a crashed attempt).
"""

from __future__ import annotations

import base64
import binascii
import io
import re
import secrets
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from marionet.config import Settings
from marionet.errors import InputError, PayloadTooLarge
from marionet.media.cache import InputCache, file_sha256, link_or_copy
from marionet.media.fetch import check_url, fetch_to_file, parse_url
from marionet.media.uploads import StoredUpload, find_upload, store_upload
from marionet.media.validate import (
    IMAGE_MAX_BYTES,
    VIDEO_MAX_BYTES,
    ImageInfo,
    check_image,
    check_video,
    check_video_limits,
)
from marionet.media.video import VideoInfo

__all__ = [
    "IMAGE_MAX_BYTES",
    "VIDEO_MAX_BYTES",
    "ImageInfo",
    "Kind",
    "LoadedInput",
    "VideoInfo",
    "check_image",
    "check_source_at_request",
    "check_video",
    "ingest_input",
    "inline_image",
    "load_input",
    "store_inline_image",
    "task_workdir",
    "workdir_path",
]

Kind = Literal["image", "video"]

_TASK_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
_BASE64_CHARS = re.compile(r"^[A-Za-z0-9+/=_-]+$")
# Shortest bare base64 taken for an image: anything shorter cannot hold a 300x300 JPEG or PNG anyway.
_MIN_BARE_BASE64 = 64


@dataclass(frozen=True)
class LoadedInput:
    """An input in the task's folder, with what validation learnt about it."""

    path: Path
    kind: Kind
    sha256: str
    info: ImageInfo | VideoInfo


def _param(kind: Kind) -> str:
    return f"{kind}_url"


def workdir_path(settings: Settings, task_id: str, attempt: int) -> Path:
    """storage_dir/work/<task_id>.a<attempt>: one folder per attempt, so a stale attempt that wakes up late
    never empties or writes into the folder of the attempt that took the task over."""
    if not _TASK_ID.match(task_id) or ".." in task_id:
        raise ValueError(f"not a usable task id for a folder name: {task_id!r}")
    return settings.resolved_storage_dir() / "work" / f"{task_id}.a{int(attempt)}"


@contextmanager
def task_workdir(settings: Settings, task_id: str, attempt: int) -> Iterator[Path]:
    """The attempt's folder (workdir_path), emptied on entry (a crashed run's leftovers), removed on exit."""
    path = workdir_path(settings, task_id, attempt)
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True, mode=0o700)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _inline_payload(source: str, kind: Kind) -> str | None:
    """The base64 text of a data: URI or bare base64 source, or None when `source` is neither."""
    if source[:5].lower() == "data:":
        header, sep, payload = source.partition(",")
        if kind != "image":
            raise InputError(
                "video_url cannot be a data: URI; upload the video with POST /v1/files and pass its URL.",
                code="unsupported_url",
                param=_param(kind),
            )
        if not sep or ";base64" not in header.lower():
            raise InputError(
                "A data: URI image must be base64-encoded (data:image/png;base64,...).",
                code="invalid_data_uri",
                param="image_url",
            )
        return payload
    compact = "".join(source.split())
    if kind == "image" and len(compact) >= _MIN_BARE_BASE64 and _BASE64_CHARS.match(compact):
        return compact
    return None


def _decode_inline(payload: str) -> bytes:
    payload = "".join(payload.split())
    # Refuse before decoding: base64 is 4 characters per 3 bytes.
    approx = len(payload) * 3 // 4
    if approx > IMAGE_MAX_BYTES + 3:
        raise PayloadTooLarge(
            f"The image is about {approx} bytes; the limit is {IMAGE_MAX_BYTES} bytes (10 MB).",
            param="image_url",
        )
    try:
        if "-" in payload or "_" in payload:
            return base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
        return base64.b64decode(payload + "=" * (-len(payload) % 4), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InputError(
            f"The image is not valid base64 ({exc}).", code="invalid_data_uri", param="image_url"
        ) from exc


def check_source_at_request(
    source: str, kind: Kind, settings: Settings, orientation: str | None = "image"
) -> None:
    """Raise InputError (400, or 413) now for anything that can be known bad without fetching."""
    param = _param(kind)
    if not isinstance(source, str) or not source.strip():
        raise InputError(f"{param} is empty.", code="unsupported_url", param=param)
    upload = _find_upload(source, kind, settings)
    if upload is not None:
        cache = InputCache(settings)
        info = cache.validate(file_sha256(upload), upload, kind)
        if isinstance(info, VideoInfo):
            check_video_limits(info, orientation)
        return
    payload = _inline_payload(source, kind)
    if payload is not None:
        cache = InputCache(settings)
        sha256 = cache.add_bytes(_decode_inline(payload))
        cache.validate(sha256, cache.blob(sha256), "image")
        return
    _unsupported_unless_url(source, kind)
    check_url(source, settings, param)


def inline_image(source: str) -> bytes | None:
    """The bytes of a data: URI or bare base64 image (decoded once, size-capped), or None for other sources."""
    payload = _inline_payload(source, "image")
    return None if payload is None else _decode_inline(payload)


def store_inline_image(data: bytes, settings: Settings) -> StoredUpload:
    """Store inline image bytes as an upload, validated in the sandbox; errors name image_url."""
    return store_upload(io.BytesIO(data), settings, only="image", param="image_url")


def _find_upload(source: str, kind: Kind, settings: Settings) -> Path | None:
    try:
        return find_upload(source, settings)
    except InputError as exc:
        exc.param = _param(kind)
        raise


def _unsupported_unless_url(source: str, kind: Kind) -> None:
    """parse_url with a message listing every accepted kind of source."""
    try:
        parse_url(source, _param(kind))
    except InputError as exc:
        if exc.code == "unsupported_url" and "scheme" in exc.message:
            extra = ", a data: URI or base64" if kind == "image" else ""
            exc.message = f"{exc.message[:-1]}; accepted: an http(s) URL{extra} or a URL from POST /v1/files."
            exc.args = (exc.message,)
        raise


def _fetch_cached(url: str, kind: Kind, cache: InputCache, settings: Settings) -> str:
    """Content hash of `url`'s bytes, fetching only when no fresh copy is cached."""
    check_url(url, settings, _param(kind))
    sha256 = cache.lookup_url(url)
    if sha256 is not None:
        return sha256
    with cache.url_lock(url):
        sha256 = cache.lookup_url(url)  # another task may have fetched it while this one waited
        if sha256 is not None:
            return sha256
        partial = cache.tmp / f"{secrets.token_hex(8)}.download"
        max_bytes = IMAGE_MAX_BYTES if kind == "image" else VIDEO_MAX_BYTES
        fetch_to_file(url, partial, settings, max_bytes=max_bytes, param=_param(kind))
        sha256 = cache.add_file(partial)
        cache.remember_url(url, sha256)
        return sha256


def ingest_input(
    source: str,
    kind: Kind,
    dest_dir: Path,
    settings: Settings,
    *,
    orientation: str | None = None,
    allow_local: bool = False,
) -> LoadedInput:
    """Materialise a validated input in dest_dir (video limits for `orientation`; None = 30 s ceiling)."""
    dest_dir.mkdir(parents=True, exist_ok=True)
    cache = InputCache(settings)
    upload = _find_upload(source, kind, settings)
    payload = None if upload is not None else _inline_payload(source, kind)
    if upload is not None:
        origin, sha256 = upload, file_sha256(upload)
    elif payload is not None:
        sha256 = cache.add_bytes(_decode_inline(payload))
        origin = cache.blob(sha256)
    elif allow_local and "://" not in source:
        # The command line takes files: a name that is none is a missing file, not a URL without a scheme.
        if not Path(source).is_file():
            raise InputError(
                f"{kind} file not found: {source} (working directory {Path.cwd()}); give a file or an http(s) URL.",
                code="file_not_found",
                param=_param(kind),
            )
        sha256 = cache.copy_in(Path(source))
        origin = cache.blob(sha256)
    else:
        _unsupported_unless_url(source, kind)
        sha256 = _fetch_cached(source, kind, cache, settings)
        origin = cache.blob(sha256)
    info = cache.validate(sha256, origin, kind)
    if isinstance(info, VideoInfo):
        check_video_limits(info, orientation)
        suffix = ".mp4"
    else:
        suffix = ".png" if info.format == "png" else ".jpg"
    dest = dest_dir / f"{kind}{suffix}"
    link_or_copy(origin, dest)
    cache.touch(sha256)
    cache.maybe_prune()
    return LoadedInput(path=dest, kind=kind, sha256=sha256, info=info)


def load_input(
    source: str, kind: Kind, dest_dir: Path, settings: Settings, *, allow_local: bool = False
) -> Path:
    """Materialise the input in dest_dir and return its path: fetched once, validated (30 s ceiling)."""
    return ingest_input(source, kind, dest_dir, settings, allow_local=allow_local).path

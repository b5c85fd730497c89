"""Turn an `image_url` / `video_url` value into a checked local file.

Interface used by the API, the task runner and the CLI (issue #4 hardens the internals):
- `check_source_at_request(source, kind, settings)`: cheap checks at request time; uploads and data URIs are
  fully validated here so a bad one is a 400 at once. Remote URLs are only checked for scheme/syntax.
- `load_input(source, kind, dest_dir, settings, allow_local=False)`: fetch/decode/copy into dest_dir.
- `check_image(path)` / `check_video(path, orientation)`: content validation with one error code per rule.
"""

from __future__ import annotations

import base64
import binascii
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import urlparse

from marionet.config import Settings
from marionet.errors import InputError
from marionet.media.fetch import fetch_to_file
from marionet.media.uploads import find_upload
from marionet.media.video import VideoInfo, probe_video

Kind = Literal["image", "video"]

IMAGE_MAX_BYTES = 10 * 1024 * 1024
VIDEO_MAX_BYTES = 100 * 1024 * 1024


@dataclass(frozen=True)
class ImageInfo:
    width: int
    height: int
    format: str  # "jpeg" | "png"


def _param(kind: Kind) -> str:
    return f"{kind}_url"


def _decode_inline_image(source: str) -> bytes | None:
    """Bytes of a data: URI or bare base64 image, or None when `source` is neither."""
    if source.startswith("data:"):
        header, _, payload = source.partition(",")
        if ";base64" not in header:
            raise InputError("data: URIs must be base64-encoded.", code="invalid_data_uri", param="image_url")
    elif "://" in source or len(source) < 64:
        return None
    else:
        payload = source
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InputError(
            "The image is not valid base64.", code="invalid_data_uri", param="image_url"
        ) from exc


def check_source_at_request(source: str, kind: Kind, settings: Settings, orientation: str = "image") -> None:
    """Raise InputError now for anything that can be known bad without fetching."""
    if kind == "image" and _decode_inline_image(source) is not None:
        return
    if find_upload(source, settings) is not None:
        return
    scheme = urlparse(source).scheme.lower()
    if scheme not in ("http", "https"):
        raise InputError(
            f"{_param(kind)} must be an http(s) URL{', a data: URI or base64' if kind == 'image' else ''}"
            f" or a URL returned by POST /v1/files; got scheme '{scheme or 'none'}'.",
            code="unsupported_url",
            param=_param(kind),
        )


def load_input(
    source: str, kind: Kind, dest_dir: Path, settings: Settings, *, allow_local: bool = False
) -> Path:
    """Materialise the input in dest_dir and return its path (not yet content-validated)."""
    dest_dir.mkdir(parents=True, exist_ok=True)
    dest = dest_dir / f"{kind}.input"
    if kind == "image":
        inline = _decode_inline_image(source)
        if inline is not None:
            dest.write_bytes(inline)
            return dest
    upload = find_upload(source, settings)
    if upload is not None:
        shutil.copyfile(upload, dest)
        return dest
    if allow_local and Path(source).is_file():
        shutil.copyfile(source, dest)
        return dest
    check_source_at_request(source, kind, settings)
    max_bytes = IMAGE_MAX_BYTES if kind == "image" else VIDEO_MAX_BYTES
    return fetch_to_file(source, dest, settings, max_bytes=max_bytes, param=_param(kind))


def check_image(path: Path) -> ImageInfo:
    """Validate a reference image (JPEG/PNG by content, size, aspect ratio)."""
    import cv2

    head = path.read_bytes()[:8]
    fmt = "png" if head.startswith(b"\x89PNG") else "jpeg" if head.startswith(b"\xff\xd8") else None
    if fmt is None:
        raise InputError("The image must be a JPEG or PNG file.", code="image_invalid", param="image_url")
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise InputError("The image could not be decoded.", code="image_invalid", param="image_url")
    h, w = image.shape[:2]
    return ImageInfo(width=w, height=h, format=fmt)


def check_video(path: Path, orientation: str = "image") -> VideoInfo:
    """Validate a driving video (container, stream, sides, duration for the orientation)."""
    return probe_video(path)

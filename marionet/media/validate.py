"""Content validation of input files: one rule, one error code, a message naming the limit and the value.

Images are recognised by their bytes (JPEG/PNG) and measured from the header before any decoding, so a
decompression bomb is refused without allocating it. Videos are probed by the container (MP4/MOV), their
first frame decoded and their packet index walked so a truncated file is caught here, not mid-animation.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import av

from marionet.errors import InputError, PayloadTooLarge
from marionet.media.video import VideoInfo, probe_video

if TYPE_CHECKING:
    import numpy as np

IMAGE_MAX_BYTES = 10 * 1024 * 1024
VIDEO_MAX_BYTES = 100 * 1024 * 1024
IMAGE_MAX_PIXELS = 40_000_000
IMAGE_MIN_SIDE = 300
IMAGE_MAX_ASPECT = 2.5
VIDEO_MIN_SIDE = 340
VIDEO_MAX_SIDE = 3850
VIDEO_MIN_S = 3.0
VIDEO_MAX_S = {"image": 10.0, "video": 30.0}
# Container timestamps round to the time base; a video of exactly 10 s may probe a hair longer.
_DURATION_SLACK_S = 0.01

_JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_MP4_BOXES = (b"ftyp", b"moov", b"mdat", b"wide", b"free", b"skip", b"pnot")


@dataclass(frozen=True)
class ImageInfo:
    width: int
    height: int
    format: str  # "jpeg" | "png"


def sniff_kind(head: bytes) -> str | None:
    """'image' for JPEG/PNG bytes, 'video' for an ISO-BMFF (MP4/MOV) start, else None."""
    if head.startswith(_PNG_SIGNATURE) or head.startswith(b"\xff\xd8\xff"):
        return "image"
    if head[4:8] in _MP4_BOXES:
        return "video"
    return None


def _image_error(message: str, code: str = "image_invalid") -> InputError:
    return InputError(message, code=code, param="image_url")


def _describe(head: bytes) -> str:
    """A short guess at what non-JPEG/PNG bytes are, for the error message."""
    if not head:
        return "an empty file"
    for magic, name in ((b"GIF8", "GIF"), (b"RIFF", "WebP/RIFF"), (b"BM", "BMP"), (b"<", "HTML/XML text")):
        if head.lstrip().startswith(magic):
            return f"a {name} file"
    if head[4:8] in _MP4_BOXES:
        return "an MP4/MOV video"
    return "an unrecognised format"


def _jpeg_size(data: bytes) -> tuple[int, int]:
    """(width, height) from the first SOF marker of a JPEG."""
    i = 2
    while i + 4 <= len(data):
        if data[i] != 0xFF:
            raise _image_error("The JPEG is malformed: a marker was expected.")
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in (0x01, 0xD8) or 0xD0 <= marker <= 0xD7:
            i += 2
            continue
        (length,) = struct.unpack(">H", data[i + 2 : i + 4])
        if length < 2:
            raise _image_error("The JPEG is malformed: a segment has an invalid length.")
        if marker in _JPEG_SOF:
            if i + 9 > len(data):
                break
            height, width = struct.unpack(">HH", data[i + 5 : i + 9])
            if width == 0 or height == 0:
                raise _image_error("The JPEG declares a zero width or height.")
            return width, height
        if marker in (0xDA, 0xD9):
            break
        i += 2 + length
    raise _image_error("The JPEG has no frame header (it is truncated or malformed).")


def read_image_header(data: bytes) -> ImageInfo:
    """Format and declared size, from the first bytes alone. Raises InputError(image_invalid)."""
    if data.startswith(_PNG_SIGNATURE):
        if len(data) < 24 or data[12:16] != b"IHDR":
            raise _image_error("The PNG has no IHDR header (it is truncated or malformed).")
        width, height = struct.unpack(">II", data[16:24])
        if width == 0 or height == 0:
            raise _image_error("The PNG declares a zero width or height.")
        return ImageInfo(width=width, height=height, format="png")
    if data.startswith(b"\xff\xd8\xff"):
        width, height = _jpeg_size(data)
        return ImageInfo(width=width, height=height, format="jpeg")
    raise _image_error(f"The image must be a JPEG or PNG file; this is {_describe(data[:16])}.")


def check_image_limits(info: ImageInfo) -> None:
    """Pixel count, smallest side and aspect ratio, each with its own code."""
    pixels = info.width * info.height
    if pixels > IMAGE_MAX_PIXELS:
        raise _image_error(
            f"The image is {info.width}x{info.height} = {pixels / 1e6:.1f} megapixels; "
            f"at most {IMAGE_MAX_PIXELS / 1e6:g} megapixels are accepted.",
            "image_too_large",
        )
    if min(info.width, info.height) < IMAGE_MIN_SIDE:
        raise _image_error(
            f"The image is {info.width}x{info.height}; each side must be at least {IMAGE_MIN_SIDE} px.",
            "image_too_small",
        )
    ratio = info.width / info.height
    if ratio > IMAGE_MAX_ASPECT or ratio < 1 / IMAGE_MAX_ASPECT:
        shown = f"{ratio:.3f}:1" if ratio >= 1 else f"1:{1 / ratio:.3f}"
        raise _image_error(
            f"The image is {info.width}x{info.height}, an aspect ratio of {shown}; it must lie between "
            f"1:{IMAGE_MAX_ASPECT:g} and {IMAGE_MAX_ASPECT:g}:1.",
            "image_aspect_ratio",
        )


def check_image_bytes(data: bytes) -> ImageInfo:
    """Validate an image in memory: size cap, format, header limits, then a real decode."""
    if len(data) > IMAGE_MAX_BYTES:
        raise PayloadTooLarge(
            f"The image is {len(data)} bytes; the limit is {IMAGE_MAX_BYTES} bytes (10 MB).",
            param="image_url",
        )
    header = read_image_header(data)
    check_image_limits(header)
    image = _decoded_colour(data)  # its shape is all the check needs: no transparency laid on white
    if image is None:
        raise _image_error(f"The {header.format.upper()} image could not be decoded (corrupt or truncated).")
    height, width = image.shape[:2]
    if {width, height} != {header.width, header.height}:
        raise _image_error(
            f"The image decodes to {width}x{height} but declares {header.width}x{header.height}."
        )
    return ImageInfo(width=width, height=height, format=header.format)


def _decoded_colour(data: bytes) -> np.ndarray | None:
    """The image decoded to 8-bit BGR (EXIF orientation applied), or None if it does not decode."""
    import cv2
    import numpy as np

    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    return bgr if bgr is not None and bgr.ndim == 3 else None


def decode_image(data: bytes) -> np.ndarray | None:
    """An image file's pixels as a viewer shows them, RGB 8-bit; None if it does not decode. See decode_with_alpha."""
    decoded = decode_with_alpha(data)
    return None if decoded is None else decoded[0]


def decode_with_alpha(data: bytes) -> tuple[np.ndarray, np.ndarray | None] | None:
    """An image file's pixels as a viewer shows them, RGB 8-bit, and its opacity 0..1 where it has transparent
    pixels (else None); None if it does not decode. EXIF orientation is applied, and a PNG with transparency is
    laid on white: the colours under transparent pixels are not part of the picture (editors keep whatever was
    there, the background cut away or black), and read as they are a cut-out character would dance in front of
    a scene its owner never saw."""
    import cv2
    import numpy as np

    bgr = _decoded_colour(data)
    if bgr is None:
        return None
    alpha = None
    if data.startswith(_PNG_SIGNATURE):
        raw = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
        # An orientation tag that turned the picture leaves the alpha plane unturned: only the same shape is used.
        if raw is not None and raw.ndim == 3 and raw.shape[2] == 4 and raw.shape[:2] == bgr.shape[:2]:
            opacity = raw[..., 3].astype(np.float32) / np.iinfo(raw.dtype).max
            if opacity.min() < 1.0:
                alpha = opacity
                bgr = (bgr * alpha[..., None] + 255.0 * (1.0 - alpha[..., None]) + 0.5).astype(np.uint8)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), alpha


def check_image(path: Path) -> ImageInfo:
    """Validate a reference image file (see check_image_bytes)."""
    size = path.stat().st_size
    if size > IMAGE_MAX_BYTES:
        raise PayloadTooLarge(
            f"The image is {size} bytes; the limit is {IMAGE_MAX_BYTES} bytes (10 MB).", param="image_url"
        )
    return check_image_bytes(path.read_bytes())


def _video_error(message: str, code: str = "video_invalid") -> InputError:
    return InputError(message, code=code, param="video_url")


def _open_error(exc: BaseException) -> InputError:
    reason = getattr(exc, "strerror", None) or type(exc).__name__
    return _video_error(f"The video could not be read as MP4/MOV ({reason}).")


def _scan_container(path: Path) -> tuple[int, float]:
    """Open with the MP4/MOV demuxer only, require a video stream and every indexed frame in the file.

    Returns (frames, seconds the frames' timestamps span, one average frame interval included).
    """
    try:
        with av.open(str(path), format="mov", metadata_errors="ignore") as container:
            if not container.streams.video:
                held = "audio only" if container.streams.audio else "no stream at all"
                raise _video_error(f"The file has no video stream ({held}).", "video_no_stream")
            stream = container.streams.video[0]
            declared = int(stream.frames or 0)
            time_base = float(stream.time_base or 0)
            found, first, last = 0, None, None
            try:
                for packet in container.demux(stream):
                    if not packet.size:
                        continue
                    found += 1
                    if packet.pts is not None:
                        first = packet.pts if first is None else min(first, packet.pts)
                        last = packet.pts if last is None else max(last, packet.pts)
            except (av.FFmpegError, OSError):
                pass  # a read error mid-file is what truncation looks like: counted below
    except InputError:
        raise
    except (av.FFmpegError, OSError, ValueError, IndexError) as exc:
        raise _open_error(exc) from exc
    if declared and found < declared:
        raise _video_error(f"The video is truncated: {found} of its {declared} frames are in the file.")
    if found < 2 or first is None or last is None or last <= first:
        return found, 0.0
    span = (last - first) * time_base
    return found, span + span / (found - 1)


def inspect_video(path: Path) -> VideoInfo:
    """Everything about a video that does not depend on the task: size, container, stream, integrity."""
    size = path.stat().st_size
    if size > VIDEO_MAX_BYTES:
        raise PayloadTooLarge(
            f"The video is {size} bytes; the limit is {VIDEO_MAX_BYTES} bytes (100 MB).", param="video_url"
        )
    if size == 0:
        raise _video_error("The video file is empty (0 bytes).")
    with path.open("rb") as f:
        head = f.read(16)
    # Only ISO-BMFF bytes reach a demuxer: FFmpeg's format guessing would also open playlists and the like.
    if sniff_kind(head) != "video":
        raise _video_error(f"The video must be an MP4 or MOV file; this is {_describe(head)}.")
    frames, span_s = _scan_container(path)
    info = probe_video(path)
    if span_s > 0 and abs(span_s - info.duration_s) > 1.5 / max(info.fps, 1.0):
        # The container's duration disagrees with its frames' timestamps (seen with variable frame rates):
        # the timestamps are what plays.
        info = replace(info, duration_s=span_s, frame_count=frames, fps=frames / span_s)
    if info.duration_s <= 0 or info.fps <= 0:
        raise _video_error("The video has no usable duration or frame rate.")
    return info


def check_video_limits(info: VideoInfo, orientation: str | None = "image") -> None:
    """Sides and duration; `orientation` None applies the 30 s ceiling of any task."""
    for side_name, side in (("width", info.width), ("height", info.height)):
        if not VIDEO_MIN_SIDE <= side <= VIDEO_MAX_SIDE:
            raise _video_error(
                f"The video is {info.width}x{info.height}; its {side_name} must be between "
                f"{VIDEO_MIN_SIDE} and {VIDEO_MAX_SIDE} px.",
                "video_dimensions",
            )
    if info.duration_s < VIDEO_MIN_S - _DURATION_SLACK_S:
        raise _video_error(
            f"The video is {info.duration_s:.2f} s long; it must be at least {VIDEO_MIN_S:g} s.",
            "video_too_short",
        )
    limit = VIDEO_MAX_S["video"] if orientation is None else VIDEO_MAX_S.get(orientation)
    if limit is None:
        raise InputError(
            f"character_orientation must be one of {', '.join(VIDEO_MAX_S)}; got '{orientation}'.",
            param="character_orientation",
        )
    if info.duration_s > limit + _DURATION_SLACK_S:
        hint = " (with character_orientation=image; up to 30 s with video)" if orientation == "image" else ""
        raise _video_error(
            f"The video is {info.duration_s:.2f} s long; at most {limit:g} s are accepted{hint}.",
            "video_too_long",
        )


def check_video(path: Path, orientation: str | None = "image") -> VideoInfo:
    """Validate a driving video file; None = the 30 s ceiling (an upload whose task is not known yet)."""
    info = inspect_video(path)
    check_video_limits(info, orientation)
    return info

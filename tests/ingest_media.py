"""Media made on the fly for the ingestion tests (nothing binary is committed): PyAV videos, OpenCV images."""

from __future__ import annotations

import struct
import zlib
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np


def frame_pattern(width: int, height: int, index: int = 0) -> np.ndarray:
    """RGB frame, black with a white band over the top quarter (shows which way is up)."""
    image = np.zeros((height, width, 3), np.uint8)
    image[: height // 4] = 255
    image[height // 2 :, : width // 8] = (index * 7) % 256
    return image


def make_video(
    path: Path,
    *,
    width: int = 360,
    height: int = 360,
    seconds: float = 3.5,
    fps: int = 10,
    codec: str = "libx264",
    pix_fmt: str = "yuv420p",
    container: str = "mp4",
    rotation: int | None = None,
    audio: bool = False,
    frame_times: list[float] | None = None,
    faststart: bool = False,
    keyframe_every: int | None = None,
) -> Path:
    """An encoded video; `frame_times` (seconds) makes it variable-frame-rate; `rotation` adds a display matrix;
    `keyframe_every` frames a keyframe (the encoder's default: 250).

    With a rotation, the stored frames are the upright pattern turned so that the matrix shows it upright.
    """
    times = frame_times if frame_times is not None else [i / fps for i in range(round(seconds * fps))]
    options = {"movflags": "+faststart"} if faststart else {}
    stored_w, stored_h = (height, width) if rotation in (90, -90, 270) else (width, height)
    with av.open(str(path), mode="w", format=container, options=options) as out:
        stream = out.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = stored_w, stored_h, pix_fmt
        if codec == "libx265":
            stream.options = {"x265-params": "log-level=error"}
        if keyframe_every is not None:
            stream.options = {**stream.options, "g": str(keyframe_every), "keyint_min": str(keyframe_every)}
        if frame_times is not None:
            stream.time_base = Fraction(1, 1000)
        if rotation is not None:
            stream.set_display_rotation(rotation)
        audio_stream = out.add_stream("aac", rate=48000) if audio else None
        for i, t in enumerate(times):
            upright = frame_pattern(width, height, i)
            # The display matrix turns stored frames counter-clockwise by `rotation` degrees.
            stored = np.rot90(upright, k=-(rotation or 0) // 90) if rotation else upright
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(stored), format="rgb24")
            frame.pts = round(t * 1000) if frame_times is not None else i
            if frame_times is not None:
                frame.time_base = Fraction(1, 1000)
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
        if audio_stream is not None:
            _write_tone(out, audio_stream, seconds=times[-1] if times else seconds)
    return path


def _write_tone(
    out: av.container.OutputContainer, stream: av.audio.stream.AudioStream, seconds: float
) -> None:
    rate, size = 48000, 1024
    total = int(seconds * rate)
    for start in range(0, total, size):
        t = (np.arange(start, start + size) / rate).astype(np.float32)
        samples = (0.1 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
        frame = av.AudioFrame.from_ndarray(np.stack([samples, samples]), format="fltp", layout="stereo")
        frame.sample_rate = rate
        frame.pts = start
        for packet in stream.encode(frame):
            out.mux(packet)
    for packet in stream.encode(None):
        out.mux(packet)


def make_audio_only(path: Path, container: str = "mov", seconds: float = 3.5) -> Path:
    with av.open(str(path), mode="w", format=container) as out:
        stream = out.add_stream("aac", rate=48000)
        _write_tone(out, stream, seconds)
    return path


def make_wav(path: Path, seconds: float = 3.5) -> Path:
    with av.open(str(path), mode="w", format="wav") as out:
        stream = out.add_stream("pcm_s16le", rate=48000)
        stream.layout = "mono"
        total = int(seconds * 48000)
        samples = (np.sin(np.arange(total) / 20) * 3000).astype(np.int16)[None, :]
        frame = av.AudioFrame.from_ndarray(samples, format="s16", layout="mono")
        frame.sample_rate = 48000
        for packet in stream.encode(frame):
            out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return path


def image_bytes(width: int, height: int, ext: str = ".png") -> bytes:
    image = np.full((height, width, 3), 128, np.uint8)
    image[: height // 4] = 255
    ok, encoded = cv2.imencode(ext, image)
    assert ok
    return encoded.tobytes()


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return (
        struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    )


def png_declaring(width: int, height: int) -> bytes:
    """A small PNG file whose header declares width x height (a decompression bomb's header)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * (1 + 3 * 64) * 4)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", idat)
        + _png_chunk(b"IEND", b"")
    )

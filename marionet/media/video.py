"""The one video reader and the one video writer (PyAV). Frames stream; a whole video is never in memory.

Frames are RGB uint8 arrays of shape (height, width, 3), already turned upright by the stream's rotation
metadata, so phone videos read the way they play.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from marionet.errors import InputError

MAX_OUTPUT_FPS = 30.0


@dataclass(frozen=True)
class VideoInfo:
    """What a probe learns about a video file. width/height are the displayed (rotated) size."""

    width: int
    height: int
    fps: float
    duration_s: float
    frame_count: int
    rotation: int
    codec: str
    has_audio: bool
    container: str

    @property
    def output_fps(self) -> float:
        """Frame rate of the output: the driving video's, at most 30 fps."""
        return min(self.fps, MAX_OUTPUT_FPS)

    @property
    def output_frame_count(self) -> int:
        """Frames of the output: the driving video's duration to the frame at output_fps."""
        if self.fps <= MAX_OUTPUT_FPS:
            return self.frame_count
        return max(1, round(self.duration_s * self.output_fps))


def _rotation_of(frame: av.VideoFrame) -> int:
    """The display rotation (degrees, counter-clockwise) a frame carries from the stream's display matrix."""
    return int(round(getattr(frame, "rotation", 0) or 0)) % 360


def _upright(image: np.ndarray, rotation: int) -> np.ndarray:
    # Display-matrix rotation is counter-clockwise; np.rot90 turns counter-clockwise too.
    k = (rotation // 90) % 4
    return np.ascontiguousarray(np.rot90(image, k=k)) if k else image


def probe_video(path: str | Path) -> VideoInfo:
    """Open the container, decode its first frame and describe the video. Raises InputError(video_invalid)."""
    try:
        with av.open(str(path), metadata_errors="ignore") as container:
            if not container.streams.video:
                raise InputError(
                    "The video file has no video stream.", code="video_no_stream", param="video_url"
                )
            stream = container.streams.video[0]
            first = next(container.decode(stream), None)
            if first is None:
                raise InputError(
                    "The video stream has no decodable frame.", code="video_invalid", param="video_url"
                )
            rotation = _rotation_of(first)
            width, height = first.width, first.height
            if rotation in (90, 270):
                width, height = height, width
            rate = stream.average_rate or stream.guessed_rate or Fraction(25)
            fps = float(rate)
            if stream.duration is not None and stream.time_base is not None:
                duration = float(stream.duration * stream.time_base)
            elif container.duration is not None:
                duration = container.duration / av.time_base
            else:
                duration = 0.0
            frames = stream.frames or max(1, round(duration * fps))
            return VideoInfo(
                width=width,
                height=height,
                fps=fps,
                duration_s=duration,
                frame_count=int(frames),
                rotation=rotation,
                codec=stream.codec_context.name,
                has_audio=bool(container.streams.audio),
                container=container.format.name,
            )
    except InputError:
        raise
    except (av.FFmpegError, ValueError, OSError, StopIteration, ZeroDivisionError, OverflowError) as exc:
        # FFmpeg's message names the file's path on this server: say what went wrong, not where.
        reason = getattr(exc, "strerror", None) or type(exc).__name__
        raise InputError(
            f"The video could not be read ({reason}).", code="video_invalid", param="video_url"
        ) from exc


# How far before the first frame wanted a read from the middle of a video starts decoding (from the keyframe at
# or before that time): the frames just before it decide which source frame it shows.
SEEK_LEAD_S = 1.0


def read_frames(
    path: str | Path, info: VideoInfo | None = None, *, max_side: int | None = None, first: int = 0
) -> Iterator[tuple[int, float, np.ndarray]]:
    """Yield (index, timestamp_s, rgb) at the output frame rate (the source's, at most 30 fps).

    Output frame i shows the source frame nearest i / output_fps by its own timestamp: above 30 fps frames
    are dropped, and in a variable-frame-rate video (a phone that slowed down in the dark, a screen capture)
    sparse stretches repeat frames and dense ones drop some, so motion keeps the source's timing and the
    audio stays in sync. A constant-rate video at 30 fps or less maps one to one.
    `max_side` shrinks frames while converting them, for analysis that needs no full size. Shrunk to half or
    less, frames are decoded without H.264's deblocking filter (a fifth of the decoder's time): the shrink
    averages away the block edges it would have smoothed.
    `first`: start at that output frame, decoding from a keyframe SEEK_LEAD_S before it rather than from the
    start of the file; the frames yielded are those a whole read yields from there on.
    """
    info = info or probe_video(path)
    scale = min(1.0, max_side / max(info.width, info.height)) if max_side else 1.0
    out_fps = info.output_fps
    total = info.output_frame_count

    def converted(frame: av.VideoFrame) -> np.ndarray:
        if scale < 1.0:
            rgb = _shrunk_rgb(frame, max(2, round(frame.width * scale)), max(2, round(frame.height * scale)))
        else:
            rgb = frame.to_ndarray(format="rgb24")
        return _upright(rgb, info.rotation)

    index = 0

    def shown(frame: av.VideoFrame, before: Callable[[int], bool]) -> Iterator[tuple[int, float, np.ndarray]]:
        """The output frames from `index` on that show `frame`, while `before(index)`; from `first` on."""
        nonlocal index
        rgb = None
        while index < total and before(index):
            if index >= first:
                rgb = converted(frame) if rgb is None else rgb
                yield index, index / out_fps, rgb
            index += 1

    with av.open(str(path), metadata_errors="ignore") as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        if scale <= 0.5:
            stream.codec_context.options = {"skip_loop_filter": "all"}
        start = None  # the first frame's timestamp: output times count from it
        decoded: Iterator[av.VideoFrame] = container.decode(stream)
        if first / out_fps > SEEK_LEAD_S and stream.time_base is not None:
            start = _first_frame_time(path)
            if start is not None:
                decoded = _decoded_from(container, stream, start, start + first / out_fps - SEEK_LEAD_S)
        held: tuple[float, av.VideoFrame] | None = None  # the latest source frame, not yet past its turn
        for position, frame in enumerate(decoded):
            t = float(frame.time) if frame.time is not None else position / info.fps
            if start is None:
                start = t
            t -= start
            if held is not None:
                # Output frames whose time is nearer the held frame than this one show the held frame.
                midpoint = (held[0] + t) / 2
                yield from shown(held[1], lambda i, midpoint=midpoint: i / out_fps <= midpoint)
            if index >= total:
                break
            held = (t, frame)
        # The last frame shows for one source frame interval, as a player would show it.
        if held is not None:
            end = held[0] + 1 / info.fps
            yield from shown(held[1], lambda i: i / out_fps < end)


def _decoded_from(
    container: av.container.InputContainer, stream: av.VideoStream, start: float, target: float
) -> Iterator[av.VideoFrame]:
    """Frames decoded from the keyframe at or before `target` (seconds on the stream's clock), or from `start`,
    the video's first frame, where the demuxer cannot land at or before it."""
    container.seek(int(target / stream.time_base), stream=stream, backward=True)
    frames = container.decode(stream)
    head = next(frames, None)
    if head is not None and head.time is not None and head.time <= target:
        yield head
        yield from frames
        return
    container.seek(int(start / stream.time_base), stream=stream, backward=True)
    yield from container.decode(stream)


def _first_frame_time(path: str | Path) -> float | None:
    """The timestamp of a video's first frame; None when it has none (that video is then read from its start)."""
    with av.open(str(path), metadata_errors="ignore") as container:
        frame = next(container.decode(video=0), None)
    return float(frame.time) if frame is not None and frame.time is not None else None


def _yuv_to_rgb(kr: float, kb: float) -> np.ndarray:
    """3x4 matrix from limited-range Y'CbCr (as uint8 Y, U, V) to RGB, for luma coefficients kr, kb."""
    kg = 1.0 - kr - kb
    y, c = 255 / 219, 255 / 112
    linear = np.array(
        [
            [y, 0.0, c * (1 - kr)],
            [y, -c * (1 - kb) * kb / kg, -c * (1 - kr) * kr / kg],
            [y, c * (1 - kb), 0.0],
        ]
    )
    return np.hstack([linear, -linear @ np.array([[16.0], [128.0], [128.0]])]).astype(np.float32)


_BT709, _BT601 = _yuv_to_rgb(0.2126, 0.0722), _yuv_to_rgb(0.299, 0.114)
# FFmpeg's (ISO/IEC 23091-2) codes: AVCOL_SPC_BT709, AVCOL_SPC_SMPTE170M (the BT.601 matrix), AVCOL_RANGE_MPEG,
# AVCOL_PRI_BT709, AVCOL_TRC_BT709.
_COLORSPACE_BT709, _SPC_SMPTE170M, _RANGE_LIMITED, _PRIMARIES_BT709, _TRC_BT709 = 1, 6, 1, 1, 1


def _shrunk_rgb(frame: av.VideoFrame, width: int, height: int) -> np.ndarray:
    """The frame as RGB at width x height. Limited-range yuv420p (nearly every phone and camera clip) is shrunk
    plane by plane (cv2, area filter) before conversion: about twice as fast as swscale's one pass."""
    if frame.format.name != "yuv420p" or frame.color_range not in (0, _RANGE_LIMITED):
        return frame.to_ndarray(format="rgb24", width=width, height=height)
    import cv2  # here and in VideoWriter, not at the top: the API process probes videos and needs no OpenCV

    planes = [np.frombuffer(p, np.uint8).reshape(p.height, p.line_size)[:, : p.width] for p in frame.planes]
    yuv = cv2.merge([cv2.resize(plane, (width, height), interpolation=cv2.INTER_AREA) for plane in planes])
    # FFmpeg's own default for an untagged clip is BT.601, as are the SMPTE 170M / BT.470BG tags.
    return cv2.transform(yuv, _BT709 if frame.colorspace == _COLORSPACE_BT709 else _BT601)


class VideoWriter:
    """H.264 yuv420p MP4 with faststart; optionally carries another file's audio (AAC), cut to the video.

    Audio is interleaved as frames are written, so memory stays flat however long the video is.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        width: int,
        height: int,
        fps: float,
        crf: int = 23,
        preset: str = "veryfast",
        audio_from: str | Path | None = None,
    ) -> None:
        if width % 2 or height % 2:
            raise ValueError("yuv420p needs even width and height")
        self.path = Path(path)
        self.fps = Fraction(fps).limit_denominator(1001)
        self.frames_written = 0
        self._container = av.open(str(path), mode="w", format="mp4", options={"movflags": "+faststart"})
        self._stream = self._container.add_stream("libx264", rate=self.fps)
        self._stream.width = width
        self._stream.height = height
        self._stream.pix_fmt = "yuv420p"
        self._stream.time_base = Fraction(1, 1) / self.fps
        self._stream.options = {"crf": str(crf), "preset": preset}
        # Say how the pixels were made (BT.601 matrix, limited range, sRGB/BT.709 primaries and curve):
        # untagged HD video is shown with the BT.709 matrix by most players, a visible shift in skin and reds.
        context = self._stream.codec_context
        context.colorspace, context.color_range = _SPC_SMPTE170M, _RANGE_LIMITED
        context.color_primaries, context.color_trc = _PRIMARIES_BT709, _TRC_BT709
        self._audio: _AudioCarrier | None = None
        if audio_from is not None:
            carrier = _AudioCarrier(audio_from, self._container)
            self._audio = carrier if carrier.stream is not None else None

    @property
    def has_audio(self) -> bool:
        return self._audio is not None

    def write(self, rgb: np.ndarray) -> None:
        import cv2

        # cv2's BT.601 limited-range I420 matches swscale's default to within rounding, ten times faster.
        frame = av.VideoFrame.from_ndarray(cv2.cvtColor(rgb, cv2.COLOR_RGB2YUV_I420), format="yuv420p")
        frame.pts = self.frames_written
        for packet in self._stream.encode(frame):
            self._container.mux(packet)
        self.frames_written += 1
        if self._audio is not None:
            self._audio.mux_until(self.frames_written / float(self.fps))

    def close(self) -> None:
        for packet in self._stream.encode(None):
            self._container.mux(packet)
        if self._audio is not None:
            self._audio.finish(self.frames_written / float(self.fps))
        self._container.close()

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            if self._audio is not None:
                self._audio.source.close()
            self._container.close()
            self.path.unlink(missing_ok=True)


class _AudioCarrier:
    """Decodes a source's first audio track and re-encodes it as AAC into an output container, in step."""

    def __init__(self, source: str | Path, container: av.container.OutputContainer) -> None:
        self.source = av.open(str(source), metadata_errors="ignore")
        self.stream = None
        if not self.source.streams.audio:
            self.source.close()
            return
        in_stream = self.source.streams.audio[0]
        self.rate = in_stream.codec_context.sample_rate or 48000
        self.stream = container.add_stream("aac", rate=self.rate)
        self.stream.layout = "stereo"
        self.stream.time_base = Fraction(1, self.rate)
        self._container = container
        self._resampler = av.AudioResampler(format="fltp", layout="stereo", rate=self.rate, frame_size=1024)
        self._frames = self.source.decode(in_stream)
        self._written = 0
        self._done = False

    def mux_until(self, seconds: float) -> None:
        limit = math.floor(seconds * self.rate)
        while not self._done and self._written < limit:
            frame = next(self._frames, None)
            chunks = self._resampler.resample(frame)  # None flushes the resampler
            if frame is None:
                self._done = True
            for chunk in chunks:
                chunk.pts = self._written
                self._written += chunk.samples
                for packet in self.stream.encode(chunk):
                    self._container.mux(packet)

    def finish(self, seconds: float) -> None:
        self.mux_until(seconds)
        for packet in self.stream.encode(None):
            self._container.mux(packet)
        self.source.close()

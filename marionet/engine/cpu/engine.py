"""The CPU engine, top to bottom: pose -> character -> retarget -> render -> MP4.

Pass 1 reads the driving video once into a pose track (cached by the file's content hash) while the character's
rig is built (cached by the image's); pass 2 renders from the track without decoding the video again, so memory
stays flat whatever the clip's length.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from marionet.engine import task_warnings
from marionet.engine.base import AnimationRequest, AnimationResult, ProgressFn, no_progress
from marionet.engine.cpu import pose as pose_stage
from marionet.engine.cpu.prefetch import drawn_frames
from marionet.engine.cpu.render import RenderSettings, render_frame
from marionet.engine.cpu.retarget import retarget
from marionet.engine.cpu.rig import CharacterRig, build_character
from marionet.engine.cpu.rigcache import load_rig, rig_key, save_rig
from marionet.errors import EngineError, InputError
from marionet.media.cache import file_sha256
from marionet.media.validate import decode_with_alpha
from marionet.media.video import VideoWriter, probe_video

POSE_SHARE = 0.5  # fraction of the progress bar spent on the pose pass when it is not cached
CLOSER_SHARE = 0.25  # and on a second pass over the region a small person moves in, when one is needed
# And on reading a clip with several people again, to follow one of them, when it has them.
OTHERS_SHARE = 0.15
OTHERS_MESSAGE = "following one of several people"
# Of OTHERS_SHARE: the first person read beside the one found takes this much, each further one half the rest.
FIRST_OTHER = 0.75
MIN_PERSON_SHARE = 0.5
BATCH = 16
RENDER_WORKERS = 2  # frames drawn side by side, beside the encoder
RENDERERS = ("mesh", "parts")  # skinned triangle mesh; or rigid part layers with joint caps (the older one)


@dataclass(frozen=True)
class Quality:
    """What `mode` changes: canvas size, resampling filter and the encoder's effort."""

    short_side: int
    interpolation: int
    crf: int
    preset: str
    mesh_cells: float  # mesh grid cells per body size (pelvis to neck): finer in pro


QUALITY = {
    "std": Quality(short_side=720, interpolation=cv2.INTER_LINEAR, crf=20, preset="superfast", mesh_cells=10),
    "pro": Quality(short_side=1080, interpolation=cv2.INTER_CUBIC, crf=18, preset="faster", mesh_cells=16),
}


def canvas_size(image_width: int, image_height: int, short_side: int) -> tuple[int, int]:
    """The image's framing at `short_side` pixels on its short side, both sides even."""
    scale = short_side / min(image_width, image_height)
    return (max(2, round(image_width * scale / 2) * 2), max(2, round(image_height * scale / 2) * 2))


class CpuEngine:
    """marionet's built-in engine: BlazePose + a 2D skinned puppet of the character; no GPU, no downloads."""

    name = "marionet-cpu"

    def __init__(self, cache_dir: Path | None = None, renderer: str | None = None) -> None:
        if renderer is None or cache_dir is None:
            # Standalone use (tests, scripts): the environment's settings; servers pass both explicitly.
            from marionet.config import get_settings
            from marionet.media.cache import pose_cache_dir

            settings = get_settings()
            renderer = renderer or settings.cpu_renderer
            cache_dir = cache_dir or pose_cache_dir(settings)
        if renderer not in RENDERERS:
            raise ValueError(f"unknown renderer {renderer!r}: one of {RENDERERS}")
        self.renderer = renderer
        self.cache_dir = Path(cache_dir)

    def animate(self, request: AnimationRequest, progress: ProgressFn = no_progress) -> AnimationResult:
        warnings = task_warnings(self.name, request.prompt)
        quality = QUALITY[request.mode]
        image_bytes = request.image_path.read_bytes()
        image, opacity = _read_image(image_bytes)
        info = probe_video(request.video_path)
        canvas = canvas_size(image.shape[1], image.shape[0], quality.short_side)
        use_mesh = self.renderer == "mesh"
        cells = quality.mesh_cells if use_mesh else None
        rig_path = self.cache_dir / rig_key(hashlib.sha256(image_bytes).hexdigest(), canvas, cells)
        # The image's pose, cut-out and rig (from the cache, when this image was animated before) run in a
        # thread beside the video's pose pass (its decoder and two BlazePose graphs); a character that fails
        # stops the pose pass at its next batch.
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="marionet-rig") as pool:
            character = pool.submit(_cached_character, rig_path, image, opacity, canvas, cells)

            def stop_if_character_failed() -> None:
                if character.done() and character.exception() is not None:
                    character.result()

            track, pose_share = self._pose_track(request, info, progress, stop_if_character_failed)
            rig = character.result()
        if track.person_share < MIN_PERSON_SHARE:
            raise EngineError(
                f"A person was found in only {track.person_share:.0%} of the video's frames: use a video of one "
                "person, whole or half-body, with the head visible.",
                code="no_person_in_video",
                param="video_url",
            )

        motion = retarget(track, rig, request.character_orientation)
        settings = RenderSettings(interpolation=quality.interpolation, mesh=use_mesh)
        total = info.output_frame_count
        audio = request.video_path if request.keep_original_sound else None
        progress(pose_share, "rendering")
        with VideoWriter(
            request.output_path,
            width=canvas[0],
            height=canvas[1],
            fps=info.output_fps,
            crf=quality.crf,
            preset=quality.preset,
            audio_from=audio,
        ) as writer:
            last = track.frame_count - 1
            frames = drawn_frames(
                lambda index: render_frame(rig, motion, min(index, last), settings),
                total,
                (canvas[1], canvas[0], 3),
                RENDER_WORKERS,
            )
            # closing(): a cancel raised by progress() stops the drawing processes at once.
            with contextlib.closing(frames) as rendered:
                for index, frame in enumerate(rendered, start=1):
                    writer.write(frame)
                    if index % BATCH == 0 or index == total:
                        progress(pose_share + (1 - pose_share) * index / total, "rendering")
        return AnimationResult(
            output_path=request.output_path,
            duration_s=total / info.output_fps,
            frame_count=total,
            fps=info.output_fps,
            width=canvas[0],
            height=canvas[1],
            warnings=warnings,
        )

    def _pose_track(
        self, request: AnimationRequest, info, progress: ProgressFn, check: Callable[[], None]
    ) -> tuple[pose_stage.PoseTrack, float]:
        """The driving video's pose track from the cache, or from a pose pass that then fills the cache.

        The cache key is the video's content hash: the same dance uploaded twice is analysed once. Reading a
        track marks it used, so the retention janitor (marionet.media.cache) keeps the tracks still in demand.
        """
        video_path = request.video_path
        digest = request.video_sha256 or file_sha256(video_path)
        cached = pose_stage.cached_track(self.cache_dir, digest, info.output_frame_count)
        if cached is not None:
            return cached, 0.0
        total = info.output_frame_count
        progress(0.0, "analysing motion")

        def reporter(start: float, share: float, message: str) -> Callable[[int], None]:
            def report(done: int) -> None:
                check()
                progress(start + share * min(1.0, done / total), message)

            return report

        def read(
            start: float, size: float, message: str, region: tuple[int, int, int, int] | None = None
        ) -> tuple[pose_stage.PoseTrack, float]:
            """A pose pass taking `size` of the bar from `start`, and the share it took: OTHERS_SHARE more where
            the clip has several people and is read again."""
            several, shown = False, 0.0
            span: list[float] = []  # the frames read again from, to; the bar's share from, to

            def others(done: int, expected: int) -> None:
                # A further person to read (`expected` grew) gets half of what is left of the bar.
                nonlocal several, shown
                several = True
                check()
                if not span:
                    span[:] = [0, expected, 0.0, FIRST_OTHER]
                elif expected != span[1]:
                    span[:] = [done, expected, shown, shown + (1.0 - shown) / 2]
                within = min(1.0, (done - span[0]) / max(span[1] - span[0], 1))
                shown = max(shown, span[2] + (span[3] - span[2]) * within)
                progress(start + size + OTHERS_SHARE * shown, OTHERS_MESSAGE)

            track = pose_stage.extract_pose_track(
                video_path,
                info,
                reporter(start, size, message),
                BATCH,
                region=region,
                on_others=others,
            )
            return track, size + (OTHERS_SHARE if several else 0.0)

        track, share = read(0.0, POSE_SHARE, "analysing motion")
        if track.person_share < MIN_PERSON_SHARE:
            # Nobody, or someone too small for the detector: look for them, and read only where they are.
            progress(share, "looking for a small person")
            region = pose_stage.find_person_region(video_path, info)
            if region is not None:
                closer, took = read(share, CLOSER_SHARE, "analysing motion where they are", region)
                share += took
                if closer.person_share > track.person_share:
                    track = closer
        # A read-only or full cache only costs speed next time.
        with contextlib.suppress(OSError):
            pose_stage.save_track(track, self.cache_dir / pose_stage.track_file(digest))
        return track, share


def _character(
    image: np.ndarray, opacity: np.ndarray | None, canvas: tuple[int, int], mesh_cells: float | None
) -> CharacterRig:
    """The image's pose, then its cut-out, filled background and rig; no person is a clear error."""
    image_pose = pose_stage.detect_image_pose(image)
    if image_pose is None:
        raise EngineError(
            "No person was found in the image: use a photo or drawing of one character, whole and unobstructed.",
            code="no_person_in_image",
            param="image_url",
        )
    return build_character(image, image_pose, canvas, mesh_cells, opacity=opacity)


def _cached_character(
    path: Path, image: np.ndarray, opacity: np.ndarray | None, canvas: tuple[int, int], cells: float | None
) -> CharacterRig:
    """The rig cached at `path`, or one built now and cached there."""
    rig = load_rig(path)
    if rig is None:
        rig = _character(image, opacity, canvas, cells)
        with contextlib.suppress(OSError):  # a read-only or full cache only costs speed next time
            save_rig(rig, path)
    return rig


def _read_image(data: bytes | Path) -> tuple[np.ndarray, np.ndarray | None]:
    """The image (its bytes, or its file) as RGB and, for a cut-out (a PNG with transparency), its opacity."""
    decoded = decode_with_alpha(data.read_bytes() if isinstance(data, Path) else data)
    if decoded is None:
        raise InputError("The image could not be decoded.", code="image_invalid", param="image_url")
    return decoded

"""Run one claimed task's whole pipeline in this process: inputs -> engine -> stored MP4 -> callback.

`execute_task` is what every dispatcher calls (the embedded pool in a child process, a Celery worker...).
`error_for` is the single place where an exception becomes a task's error code.
"""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from marionet.config import Settings
from marionet.engine import AnimationRequest, AnimationResult, ProgressFn, load_engine, no_progress
from marionet.errors import EngineError, MarionetError, TaskCancelled
from marionet.media.ingest import ingest_input, task_workdir
from marionet.media.video import VideoInfo
from marionet.tasks.callbacks import deliver_callback
from marionet.tasks.models import PROCESSING
from marionet.tasks.store import Store

log = logging.getLogger("marionet.runner")

# Progress is 0..INPUT_PROGRESS while inputs are fetched and checked, then the engine's share up to 99.
INPUT_PROGRESS = 5
_PROGRESS_CHECK_S = 0.5


def error_for(exc: BaseException) -> tuple[str, str]:
    """(code, message) of a failed task for any exception raised while running it."""
    if isinstance(exc, MarionetError):
        return exc.code, exc.message
    if isinstance(exc, httpx.HTTPError):
        return "fetch_failed", f"An input could not be fetched: {exc}."
    if isinstance(exc, MemoryError):
        return "out_of_memory", "The server ran out of memory while making this video."
    log.exception("task failed unexpectedly", exc_info=exc)
    return "internal_error", f"The task failed unexpectedly ({type(exc).__name__}); this is a server fault."


def results_dir(settings: Settings) -> Path:
    path = settings.resolved_storage_dir() / "results"
    path.mkdir(parents=True, exist_ok=True)
    return path


@dataclass(frozen=True)
class Inputs:
    image_path: Path
    video_path: Path
    video: VideoInfo
    video_sha256: str  # content hash ingestion already computed: the engine's pose-cache key


def prepare_inputs(
    image_source: str,
    video_source: str,
    orientation: str,
    dest_dir: Path,
    settings: Settings,
    *,
    allow_local: bool = False,
) -> Inputs:
    """Fetch or copy both inputs into dest_dir, validated (the video against the orientation's limit)."""
    image = ingest_input(image_source, "image", dest_dir, settings, allow_local=allow_local)
    video = ingest_input(
        video_source, "video", dest_dir, settings, orientation=orientation, allow_local=allow_local
    )
    assert isinstance(video.info, VideoInfo)
    return Inputs(image.path, video.path, video.info, video.sha256)


def run_engine(
    engine_name: str,
    request: AnimationRequest,
    progress: ProgressFn = no_progress,
    settings: Settings | None = None,
) -> AnimationResult:
    try:
        engine = load_engine(engine_name, settings)
    except KeyError:
        raise EngineError(
            f"The engine '{engine_name}' is not installed on this server.", code="engine_unavailable"
        ) from None
    return engine.animate(request, progress)


class ProgressReporter:
    """Engine progress callback: writes rising `progress` and raises TaskCancelled once cancel is asked."""

    def __init__(self, store: Store, task_id: str, attempt: int | None = None) -> None:
        self.store = store
        self.task_id = task_id
        self.attempt = attempt
        self.written = -1
        self.checked_at = 0.0

    def set(self, progress: int) -> None:
        now = time.monotonic()
        if progress <= self.written and now - self.checked_at < _PROGRESS_CHECK_S:
            return
        self.checked_at = now
        self.written = max(self.written, progress)
        if self.store.report_progress(self.task_id, progress, attempt=self.attempt):
            raise TaskCancelled()

    def engine_progress(self, fraction: float, message: str = "") -> None:
        """The engine's ProgressFn; `message` is part of that signature, but the task object has no field for it."""
        fraction = min(max(fraction, 0.0), 1.0)
        self.set(INPUT_PROGRESS + int(fraction * (99 - INPUT_PROGRESS)))


def execute_task(task_id: str, settings: Settings) -> None:
    """Run one task already claimed (status `processing`) to its end, then deliver its callback."""
    store = Store(settings)
    task = store.get_task(task_id)
    if task.status != PROCESSING:
        return
    # One file per attempt: a stale attempt that wakes up late can never overwrite or delete the file of the
    # attempt that took the task over, and completion only counts for the attempt that still owns the task.
    attempt = task.attempts
    final = results_dir(settings) / f"{task_id}.a{attempt}.mp4"
    try:
        with task_workdir(settings, task_id, attempt) as scratch:
            reporter = ProgressReporter(store, task_id, attempt)
            reporter.set(0)
            inputs = prepare_inputs(
                task.image_url, task.video_url, task.character_orientation, scratch, settings
            )
            store.record_input(task_id, inputs.video.duration_s)
            reporter.set(INPUT_PROGRESS)
            request = AnimationRequest(
                image_path=inputs.image_path,
                video_path=inputs.video_path,
                output_path=scratch / "output.mp4",
                mode=task.mode,  # type: ignore[arg-type]
                character_orientation=task.character_orientation,  # type: ignore[arg-type]
                keep_original_sound=task.keep_original_sound,
                prompt=task.prompt,
                video_sha256=inputs.video_sha256,
            )
            started = time.monotonic()
            result = run_engine(task.engine, request, reporter.engine_progress, settings)
            engine_seconds = time.monotonic() - started
            shutil.move(str(result.output_path), final)
        relative = str(final.relative_to(settings.resolved_storage_dir()))
        ended = store.complete(task_id, relative, engine_seconds, result.warnings, attempt=attempt)
        if not ended:
            final.unlink(missing_ok=True)  # ended or taken over meanwhile (timeout, cancel, a newer attempt)
    except BaseException as exc:
        code, message = error_for(exc)
        ended = store.fail(task_id, code, message, attempt=attempt)
        if not isinstance(exc, Exception):
            raise
    # Only the attempt that ended the task calls back: whoever else ended it (a timeout, a newer attempt)
    # delivers its own callback.
    if ended:
        deliver_callback(task_id, settings, store)

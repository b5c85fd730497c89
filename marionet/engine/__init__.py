"""Engines: each turns a character image and a driving video into an MP4 (see `base.Engine`)."""

from __future__ import annotations

from marionet.config import Settings
from marionet.engine.base import AnimationRequest, AnimationResult, Engine, ProgressFn, no_progress

CPU_ENGINE = "marionet-cpu"
PROMPT_WARNING = (
    "The marionet-cpu engine does not read the prompt: the output follows the image and the video only."
)


def engine_names() -> list[str]:
    """Names of the engines this installation can run."""
    return [CPU_ENGINE]


def task_warnings(engine: str, prompt: str) -> list[str]:
    """What the task's engine will not do with the request, said when the task is created and again in its
    result: the CPU engine does not read the prompt."""
    return [PROMPT_WARNING] if engine == CPU_ENGINE and prompt.strip() else []


def preload_engines() -> None:
    """Load the engines' models and libraries (mediapipe, cv2: about a second), so a process started ahead
    of its task has done it before the task arrives. Its callers have imported the task runner already."""
    from marionet.engine.cpu import pose

    pose.pose_solution()


def load_engine(name: str, settings: Settings | None = None) -> Engine:
    """Construct the engine called `name`; imports are lazy so the API starts without loading models.

    With `settings`, the engine follows that server's configuration (not the environment's): its caches live
    under the storage dir shared by a cluster's workers, and its renderer is the configured one.
    """
    if name == CPU_ENGINE:
        from marionet.engine.cpu import CpuEngine
        from marionet.media.cache import pose_cache_dir

        if settings is None:
            return CpuEngine()
        return CpuEngine(cache_dir=pose_cache_dir(settings), renderer=settings.cpu_renderer)
    raise KeyError(name)


__all__ = [
    "AnimationRequest",
    "AnimationResult",
    "CPU_ENGINE",
    "PROMPT_WARNING",
    "Engine",
    "ProgressFn",
    "engine_names",
    "load_engine",
    "preload_engines",
    "no_progress",
    "task_warnings",
]

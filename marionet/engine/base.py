"""The one small interface every engine implements: inputs, parameters, progress, cancel -> output file.

The engine knows nothing of HTTP, SQL or Celery. Cancellation travels through the progress callback: the
caller's callback raises `marionet.errors.TaskCancelled` once a cancel was requested, so an engine only has to
report progress after every batch of frames and let that exception propagate.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol

Mode = Literal["std", "pro"]
Orientation = Literal["image", "video"]

# progress(fraction in 0..1, short message); may raise TaskCancelled.
ProgressFn = Callable[[float, str], None]


def no_progress(fraction: float, message: str = "") -> None:
    """A progress callback for callers that do not track progress."""


@dataclass(frozen=True)
class AnimationRequest:
    """Validated local inputs and the user's parameters."""

    image_path: Path
    video_path: Path
    output_path: Path
    mode: Mode = "std"
    character_orientation: Orientation = "image"
    keep_original_sound: bool = True
    prompt: str = ""
    video_sha256: str | None = None  # the video's content hash when the caller already has it


@dataclass
class AnimationResult:
    output_path: Path
    duration_s: float
    frame_count: int
    fps: float
    width: int
    height: int
    warnings: list[str] = field(default_factory=list)


class Engine(Protocol):
    """An engine turns one AnimationRequest into one MP4 at request.output_path."""

    name: str

    def animate(self, request: AnimationRequest, progress: ProgressFn = no_progress) -> AnimationResult: ...

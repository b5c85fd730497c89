"""The task object exactly as the contract shows it (used by the API and by callbacks)."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from marionet.config import Settings
from marionet.tasks.models import COMPLETED, FAILED, PENDING, PROCESSING, TERMINAL, Task
from marionet.tasks.signing import result_link
from marionet.tasks.store import Store

# Seconds a task spends outside the engine (child start, fetch, validation, encode).
TASK_OVERHEAD_S = 5.0


@dataclass(frozen=True)
class Pace:
    """Measured engine speed (engine s per video s) and the video length to assume before probing."""

    speed: float
    typical_duration: float

    @classmethod
    def measure(cls, store: Store) -> Pace:
        return cls(store.engine_speed(), store.typical_duration())


def estimated_time(task: Task, store: Store, pace: Pace | None = None) -> int:
    """Seconds until done: own remaining work plus the work queued ahead, from measured engine speed."""
    if task.status in TERMINAL:
        return 0
    pace = pace or Pace.measure(store)
    speed, typical = pace.speed, pace.typical_duration

    def remaining(duration: float | None, progress: int) -> float:
        return ((duration or typical) * speed + TASK_OVERHEAD_S) * (1 - progress / 100)

    own = remaining(task.video_duration_s, task.progress)
    if task.status == PROCESSING:
        return max(1, math.ceil(own))
    ahead = sum(remaining(d, p) for d, p in store.work_ahead(task.seq))
    return max(1, math.ceil(own + ahead / store.settings.workers))


def task_object(task: Task, store: Store, settings: Settings, pace: Pace | None = None) -> dict[str, Any]:
    """The contract's task object; pass one `pace` when rendering many tasks."""
    body: dict[str, Any] = {
        "created": task.created,
        "id": task.id,
        "model": task.model,
        "object": "video.generation.task",
        "progress": task.progress,
        "status": task.status,
        "task_info": {
            "can_cancel": task.status in (PENDING, PROCESSING) and not task.cancel_requested,
            "estimated_time": estimated_time(task, store, pace),
        },
        "type": "video",
        "usage": {"billing_rule": "per_second", "billed_seconds": task.billed_seconds, "mode": task.mode},
        "warnings": json.loads(task.warnings or "[]"),
    }
    if task.status == COMPLETED:
        body["results"] = [result_link(task.id, task.base_url, settings)]
    if task.status == FAILED:
        body["error"] = {"code": task.error_code, "message": task.error_message}
    return body

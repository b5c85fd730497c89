"""The task object exactly as the contract shows it (used by the API and by callbacks)."""

from __future__ import annotations

import json
import math
from typing import Any

from marionet.config import Settings
from marionet.tasks.models import COMPLETED, FAILED, PENDING, PROCESSING, TERMINAL, Task
from marionet.tasks.signing import result_link
from marionet.tasks.store import Store

# Seconds a task spends outside the engine (child start, fetch, validation, encode).
TASK_OVERHEAD_S = 5.0


def estimated_time(task: Task, store: Store) -> int:
    """Seconds until done: own remaining work plus the work queued ahead, from measured engine speed."""
    if task.status in TERMINAL:
        return 0
    speed = store.engine_speed()
    typical = store.typical_duration()

    def remaining(duration: float | None, progress: int) -> float:
        return ((duration or typical) * speed + TASK_OVERHEAD_S) * (1 - progress / 100)

    own = remaining(task.video_duration_s, task.progress)
    if task.status == PROCESSING:
        return max(1, math.ceil(own))
    ahead = sum(remaining(d, p) for d, p, _ in store.work_ahead(task.seq))
    return max(1, math.ceil(own + ahead / store.settings.workers))


def task_object(task: Task, store: Store, settings: Settings) -> dict[str, Any]:
    body: dict[str, Any] = {
        "created": task.created,
        "id": task.id,
        "model": task.model,
        "object": "video.generation.task",
        "progress": task.progress,
        "status": task.status,
        "task_info": {
            "can_cancel": task.status in (PENDING, PROCESSING) and not task.cancel_requested,
            "estimated_time": estimated_time(task, store),
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

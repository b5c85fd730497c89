"""Create, read, list and cancel tasks (the contract's task object)."""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any

from fastapi import APIRouter, Depends, Query

from marionet.api.deps import base_url, current_key, get_dispatcher, get_settings, get_store
from marionet.api.schemas import ERROR_RESPONSES, CreateTaskRequest, TaskList, TaskObject
from marionet.config import DEFAULT_MODEL, UPSTREAM_MODELS, Settings
from marionet.engine import engine_names, task_warnings
from marionet.errors import InvalidRequest
from marionet.media import ingest
from marionet.media.fetch import check_url
from marionet.media.ingest import check_source_at_request
from marionet.media.uploads import upload_url
from marionet.tasks.callbacks import deliver_callback_in_background
from marionet.tasks.models import TERMINAL, ApiKey
from marionet.tasks.queue import Dispatcher
from marionet.tasks.store import NewTask, Store
from marionet.tasks.view import Pace, task_object

log = logging.getLogger("marionet.api")
router = APIRouter(responses=ERROR_RESPONSES)
TASK = {"response_model": TaskObject, "response_model_exclude_unset": True}


def accepted_models(settings: Settings) -> dict[str, str]:
    """Every model name a request may use, mapped to the engine that runs it."""
    names = {model: settings.engine_for_model(model) for model in UPSTREAM_MODELS}
    names.update({engine: engine for engine in engine_names()})
    return names


def _new_task(body: CreateTaskRequest, settings: Settings, base: str) -> tuple[NewTask, bytes | None]:
    """The checked task, and the bytes of an inline image still to be stored (last, once all else passed)."""
    model = body.model or DEFAULT_MODEL
    models = accepted_models(settings)
    if model not in models:
        raise InvalidRequest(f"model must be one of {', '.join(models)}", param="model")
    if models[model] not in engine_names():
        raise InvalidRequest(
            f"model '{model}' maps to engine '{models[model]}', which is not installed.",
            code="engine_unavailable",
            param="model",
        )
    orientation = body.character_orientation or "image"
    inline = ingest.inline_image(body.image_url)
    if inline is None:
        check_source_at_request(body.image_url, "image", settings, orientation=orientation)
    check_source_at_request(body.video_url, "video", settings, orientation=orientation)
    if body.callback_url:
        check_url(body.callback_url, settings, "callback_url")
    sound = body.keep_original_sound
    new = NewTask(
        model=model,
        engine=models[model],
        mode=body.mode or "std",
        prompt=body.prompt or "",
        character_orientation=orientation,
        keep_original_sound=sound in (None, True, "yes"),
        image_url=body.image_url,
        video_url=body.video_url,
        callback_url=body.callback_url or None,
        base_url=base,
        warnings=tuple(task_warnings(models[model], body.prompt or "")),
    )
    return new, inline


@router.post("/v1/videos/generations", summary="Create a motion-control task", **TASK)
def create_task(
    body: CreateTaskRequest,
    key: ApiKey = Depends(current_key),
    settings: Settings = Depends(get_settings),
    store: Store = Depends(get_store),
    dispatcher: Dispatcher = Depends(get_dispatcher),
    base: str = Depends(base_url),
) -> dict[str, Any]:
    new, inline = _new_task(body, settings, base)
    stored = None
    if inline is not None:
        # Decoded once, validated once (in the sandbox) while stored, so the row keeps a short URL.
        stored = ingest.store_inline_image(inline, settings)
        new = replace(new, image_url=upload_url(stored.file_id, base))
    try:
        task = store.create_task(key.id, new)
    except BaseException:
        if stored is not None:  # e.g. 429: no task will ever read it
            stored.path.unlink(missing_ok=True)
        raise
    try:
        dispatcher.submit(task.id)
    except Exception:  # the task is saved: it is sent again once it has waited a lease (cluster.leases)
        log.exception("task %s saved but not sent to the queue", task.id)
    return task_object(task, store, settings)


@router.get("/v1/videos/generations/{task_id}", summary="Read a task", **TASK)
@router.get("/v1/tasks/{task_id}", summary="Read a task", **TASK)
def read_task(
    task_id: str,
    key: ApiKey = Depends(current_key),
    settings: Settings = Depends(get_settings),
    store: Store = Depends(get_store),
) -> dict[str, Any]:
    return task_object(store.get_task(task_id, key.id), store, settings)


@router.get(
    "/v1/tasks",
    response_model=TaskList,
    response_model_exclude_unset=True,
    summary="List your tasks, newest first",
)
def list_tasks(
    limit: int = Query(20, ge=1, le=100, description="Tasks per page."),
    after: str | None = Query(None, description="The `next_after` of the previous page."),
    key: ApiKey = Depends(current_key),
    settings: Settings = Depends(get_settings),
    store: Store = Depends(get_store),
) -> dict[str, Any]:
    tasks, has_more = store.list_tasks(key.id, limit, after)
    # One pace for the page, measured only if a task on it is still running (finished ones need none).
    pace = Pace.measure(store) if any(task.status not in TERMINAL for task in tasks) else None
    return {
        "object": "list",
        "data": [task_object(task, store, settings, pace) for task in tasks],
        "has_more": has_more,
        "next_after": tasks[-1].id if has_more else None,
    }


@router.post("/v1/tasks/{task_id}/cancel", summary="Cancel a pending or processing task", **TASK)
def cancel_task(
    task_id: str,
    key: ApiKey = Depends(current_key),
    settings: Settings = Depends(get_settings),
    store: Store = Depends(get_store),
) -> dict[str, Any]:
    if store.request_cancel(task_id, key.id):
        deliver_callback_in_background(task_id, settings)
    return task_object(store.get_task(task_id, key.id), store, settings)

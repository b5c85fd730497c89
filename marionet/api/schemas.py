"""Request and response schemas of the HTTP API (they generate /openapi.json and /docs)."""

from __future__ import annotations

from typing import Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, field_validator

Mode = Literal["std", "pro"]
Orientation = Literal["image", "video"]
Sound = Literal["yes", "no"]
# The allowed values that a 400 lists, read from the very types the request is validated with.
ENUMS: dict[str, tuple[str, ...]] = {
    "mode": get_args(Mode),
    "character_orientation": get_args(Orientation),
    "keep_original_sound": (*get_args(Sound), "true", "false"),
}
PROMPT_MAX = 2500


class CreateTaskRequest(BaseModel):
    """Body of POST /v1/videos/generations. Unknown fields are ignored; null means the default."""

    model_config = ConfigDict(extra="ignore", protected_namespaces=())

    model: str | None = Field(
        None,
        description="kling-v3-motion-control (default), kling-v2-6-motion-control, or an engine name.",
        examples=["kling-v3-motion-control"],
    )
    image_url: str = Field(
        ...,
        min_length=1,
        description="Reference image (JPG/PNG): http(s) URL, data: URI, bare base64, or a POST /v1/files URL.",
    )
    video_url: str = Field(
        ..., min_length=1, description="Driving video (MP4/MOV): http(s) URL or a POST /v1/files URL."
    )
    mode: Mode | None = Field(None, description="std (default) or pro.")
    prompt: str | None = Field(
        None, max_length=PROMPT_MAX, description="Optional text, at most 2500 characters."
    )
    character_orientation: Orientation | None = Field(
        None, description="image (default, video up to 10 s) or video (up to 30 s)."
    )
    keep_original_sound: Sound | bool | None = Field(
        None, description="yes (default) keeps the driving video's audio, no mutes; true/false accepted."
    )
    callback_url: str | None = Field(None, description="POSTed the task object when the task ends.")

    @field_validator("model", "image_url", "video_url", "prompt", "callback_url")
    @classmethod
    def _no_nul(cls, value: str | None) -> str | None:
        if value is not None and "\x00" in value:
            raise ValueError("must not contain NUL characters")
        return value


class TaskInfo(BaseModel):
    can_cancel: bool
    estimated_time: int = Field(description="Seconds until done, estimated.")


class Usage(BaseModel):
    billing_rule: Literal["per_second"]
    billed_seconds: int | None = Field(description="Driving video seconds, rounded up; null until known.")
    mode: Mode


class TaskError(BaseModel):
    code: str
    message: str


class TaskObject(BaseModel):
    model_config = ConfigDict(protected_namespaces=())

    created: int
    id: str = Field(examples=["task-unified-1757165031-uyujaw3d"])
    model: str
    object: Literal["video.generation.task"]
    progress: int = Field(ge=0, le=100)
    status: Literal["pending", "processing", "completed", "failed"]
    task_info: TaskInfo
    type: Literal["video"]
    usage: Usage
    warnings: list[str] = Field(default_factory=list, description="Extension: non-fatal remarks.")
    results: list[str] | None = Field(None, description="Once completed: signed, expiring MP4 links.")
    error: TaskError | None = Field(None, description="Once failed.")


class TaskList(BaseModel):
    object: Literal["list"]
    data: list[TaskObject]
    has_more: bool
    next_after: str | None = Field(description="Pass as `after` for the next page; null on the last.")


class FileObject(BaseModel):
    id: str
    object: Literal["file"]
    created: int
    bytes: int
    kind: Literal["image", "video"]
    filename: str | None
    url: str = Field(description="Usable as image_url or video_url.")


class ModelObject(BaseModel):
    id: str
    object: Literal["model"]
    engine: str
    owned_by: str


class ModelList(BaseModel):
    object: Literal["list"]
    data: list[ModelObject]


class ErrorDetail(BaseModel):
    code: str
    message: str
    type: str
    param: str | None


class ErrorResponse(BaseModel):
    error: ErrorDetail


class Health(BaseModel):
    status: Literal["ok"]
    database: Literal["ok"]
    queue: str
    workers: int
    pending: int
    processing: int


ERROR_RESPONSES: dict[int | str, dict] = {
    status: {"model": ErrorResponse, "description": description}
    for status, description in {
        400: "Bad parameters",
        401: "Missing or wrong key",
        404: "No such task for this key",
        409: "The action does not fit the task's state",
        413: "Too large",
        429: "Too many tasks",
        500: "Our fault",
    }.items()
}

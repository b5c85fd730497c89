"""One exception hierarchy: every error a user can see has a stable `code` and a sentence they can act on.

Raise the most specific class where the problem is known; `marionet.api.errors` turns any of them into the
contract's `{"error": {code, message, type, param}}` body, and the task runner turns them into a failed task.
"""

from __future__ import annotations


class MarionetError(Exception):
    """Base class. `status` is the HTTP status when raised during a request."""

    status: int = 500
    code: str = "internal_error"
    type: str = "api_error"

    def __init__(self, message: str, *, code: str | None = None, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.param = param

    def to_dict(self) -> dict[str, str | None]:
        return {"code": self.code, "message": self.message, "type": self.type, "param": self.param}


class InvalidRequest(MarionetError):
    """400: a parameter is missing or out of its allowed values."""

    status = 400
    code = "invalid_parameter"
    type = "invalid_request_error"


class InputError(InvalidRequest):
    """400 at request time, or a failed task when found later: an input file or URL is unusable.

    Codes: unsupported_url, url_not_allowed, fetch_failed, fetch_timeout, image_invalid, image_too_small,
    image_too_large, image_aspect_ratio, video_invalid, video_dimensions, video_too_short, video_too_long...
    """

    code = "invalid_input"

    def to_record(self) -> dict[str, str | int | None]:
        """A JSON-safe record of this error (a validation child's answer, a cached verdict)."""
        return {"code": self.code, "message": self.message, "param": self.param, "status": self.status}

    @staticmethod
    def from_record(record: dict) -> InputError:
        """The error `to_record` wrote, of its own class (a 413 comes back as PayloadTooLarge)."""
        cls = PayloadTooLarge if record.get("status") == PayloadTooLarge.status else InputError
        return cls(str(record.get("message")), code=str(record.get("code")), param=record.get("param"))


class PayloadTooLarge(InputError):
    """413: a body, upload or fetched file passed its byte cap."""

    status = 413
    code = "file_too_large"


class AuthenticationError(MarionetError):
    status = 401
    code = "invalid_api_key"
    type = "authentication_error"


class PermissionDenied(MarionetError):
    """403: e.g. a tampered result link."""

    status = 403
    code = "invalid_signature"
    type = "permission_error"


class NotFound(MarionetError):
    status = 404
    code = "not_found"
    type = "invalid_request_error"


class Gone(MarionetError):
    """410: an expired result link or a deleted result."""

    status = 410
    code = "expired"
    type = "invalid_request_error"


class Conflict(MarionetError):
    """409: the action does not fit the task's state."""

    status = 409
    code = "invalid_state"
    type = "invalid_request_error"


class RateLimited(MarionetError):
    status = 429
    code = "too_many_tasks"
    type = "rate_limit_error"


class ServiceUnavailable(MarionetError):
    """503: a service the server needs (its database) does not answer; retrying later may work."""

    status = 503
    code = "service_unavailable"
    type = "api_error"


class EngineError(MarionetError):
    """The engine could not make a video from these inputs (no_person_in_image, no_person_in_video...).

    Not the server's fault: a task failed with this code is the user's to fix.
    """

    status = 400
    code = "engine_failed"
    type = "invalid_request_error"


class TaskCancelled(MarionetError):
    """Raised inside a running task (from its progress callback) once a cancel was requested; also the one
    source of a cancelled task's error code and sentence."""

    status = 409
    code = "task_cancelled"
    type = "invalid_request_error"

    def __init__(self, message: str = "The task was cancelled by its owner.") -> None:
        super().__init__(message)


class TaskTimedOut(MarionetError):
    """A task that ran past task_timeout_s: the code and sentence its failure records."""

    status = 500
    code = "task_timeout"
    type = "api_error"

    def __init__(self, limit_s: float) -> None:
        super().__init__(f"The task ran longer than {limit_s:.0f} s and was stopped.")

"""Every non-2xx answer as the contract's {"error": {code, message, type, param}}; FastAPI's 422 becomes a 400."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from marionet.api.schemas import ENUMS
from marionet.errors import MarionetError

log = logging.getLogger("marionet.api")

_LOCATIONS = ("body", "query", "path", "header", "cookie")


def error_response(
    status: int, code: str, message: str, type_: str = "invalid_request_error", param: str | None = None
) -> JSONResponse:
    return JSONResponse(
        status_code=status,
        content={"error": {"code": code, "message": message, "type": type_, "param": param}},
    )


def _validation_message(err: dict) -> tuple[str, str, str | None]:
    """(code, message, param) for the first pydantic error of a request."""
    kind = err.get("type", "")
    loc = [str(part) for part in err.get("loc", ()) if part not in _LOCATIONS]
    param = loc[0] if loc else None
    if kind == "json_invalid":
        return "invalid_json", "The request body is not valid JSON.", None
    if param is None or kind in ("model_attributes_type", "dict_type", "model_type"):
        return (
            "invalid_request_body",
            "The request body must be a JSON object (Content-Type: application/json).",
            None,
        )
    if kind == "missing":
        return "missing_parameter", f"{param} is required.", param
    if param in ENUMS:
        return "invalid_parameter", f"{param} must be one of {', '.join(ENUMS[param])}", param
    if kind == "string_too_long":
        return "invalid_parameter", f"{param} must be at most {err['ctx']['max_length']} characters.", param
    if kind == "string_too_short":
        return "invalid_parameter", f"{param} must not be empty.", param
    return "invalid_parameter", f"{param}: {err.get('msg', 'invalid value')}.", param


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(MarionetError)
    async def _marionet(_: Request, exc: MarionetError) -> JSONResponse:
        return JSONResponse(status_code=exc.status, content={"error": exc.to_dict()})

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        code, message, param = _validation_message(errors[0] if errors else {})
        return error_response(400, code, message, param=param)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        codes = {404: "not_found", 405: "method_not_allowed"}
        message = exc.detail if isinstance(exc.detail, str) else "Request failed."
        response = error_response(exc.status_code, codes.get(exc.status_code, "http_error"), message)
        if exc.headers:
            response.headers.update(exc.headers)
        return response

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error", exc_info=exc)
        return error_response(500, "internal_error", "The server failed; this is our fault.", "api_error")

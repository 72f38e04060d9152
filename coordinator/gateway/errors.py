"""OpenAI-shaped error responses and the exception handlers that produce them.

Every error leaves as `{"error": {"message", "type", "param", "code"}}`; bad
input is always a 4xx, never a 500.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from coordinator.gateway.backend import Failure, RequestFailed, UpstreamError
from parallax.errors import (
    CapacityError,
    ContextOverflow,
    InvalidArgument,
    ModelNotFound,
    NotCovered,
    ParallaxError,
)
from parallax.failures import FailureKind

log = logging.getLogger(__name__)

RETRY_AFTER_S = 1


class ApiError(Exception):
    """An error with its HTTP status and OpenAI fields, raised by route handlers."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers)


def bad_request(message: str, param: str | None = None) -> ApiError:
    return ApiError(400, message, param=param, code="invalid_value" if param else None)


def from_parallax_error(exc: ParallaxError) -> ApiError:
    """The one mapping from typed errors to HTTP statuses."""
    if isinstance(exc, ContextOverflow):
        return ApiError(400, str(exc), code="context_length_exceeded")
    if isinstance(exc, InvalidArgument):
        return ApiError(400, str(exc), code="invalid_value")
    if isinstance(exc, ModelNotFound):
        return ApiError(404, str(exc), param="model", code="model_not_found")
    if isinstance(exc, RequestFailed):
        return from_failure(exc.failure)
    if isinstance(exc, CapacityError):
        return saturated(str(exc))
    if isinstance(exc, NotCovered):
        return ApiError(503, str(exc), type="service_unavailable", code="layers_not_covered")
    if isinstance(exc, UpstreamError):
        return ApiError(503, str(exc), type="service_unavailable", code="upstream_error")
    return ApiError(500, f"internal error: {type(exc).__name__}", type="server_error")


def saturated(why: str) -> ApiError:
    """HTTP 429 with Retry-After: the cluster is full now, a later try may succeed."""
    return ApiError(
        429,
        f"the cluster is saturated, retry shortly: {why}",
        type="rate_limit_error",
        code="rate_limit_exceeded",
        headers={"Retry-After": str(RETRY_AFTER_S)},
    )


def from_failure(failure: Failure) -> ApiError:
    """A request the cluster gave up on, by why: its own fault (400), a full cluster
    (429, retry later), or a cluster fault (503)."""
    message = f"generation failed on the cluster ({failure.kind}): {failure.message}"
    if failure.kind is FailureKind.INVALID:
        return ApiError(400, message, code="invalid_value")
    if failure.kind in (FailureKind.KV_FULL, FailureKind.OVERLOADED):
        return saturated(message)
    return ApiError(503, message, type="service_unavailable", code=f"upstream_{failure.kind}")


_TYPE_TAGS = {"str", "int", "float", "bool", "dict", "list", "none", "null"}


def _validation_param(loc: tuple[Any, ...]) -> str | None:
    """`body.stop.list[str].3` -> `stop.3`: drop pydantic's union-branch tags."""
    parts = [
        str(p)
        for p in loc
        if p != "body" and not (isinstance(p, str) and ("[" in p or p in _TYPE_TAGS))
    ]
    return ".".join(parts) or None


def _most_telling(errors: list[Any]) -> dict[str, Any]:
    """Of a union's per-branch errors, one that is not a plain type mismatch, if any.

    `stop=["a"] * 5` fails both as a string (wrong type) and as a list (too
    long): the second is the one that helps the caller.
    """
    return min(errors, key=lambda e: str(e.get("type", "")).endswith("_type"), default={})


async def _on_validation(_req: Request, exc: RequestValidationError) -> JSONResponse:
    first = _most_telling(list(exc.errors()))
    param = _validation_param(tuple(first.get("loc", ())))
    kind = first.get("type", "")
    if kind == "json_invalid":
        return ApiError(400, "request body is not valid JSON", code="invalid_json").response()
    if kind == "extra_forbidden":
        msg = f"unsupported parameter {param!r}: this server does not implement it"
        return ApiError(400, msg, param=param, code="unsupported_parameter").response()
    msg = str(first.get("msg", "invalid request")).removeprefix("Value error, ")
    text = f"invalid parameter {param}: {msg}" if param else f"invalid request: {msg}"
    return ApiError(400, text, param=param, code="invalid_value").response()


async def _on_http(_req: Request, exc: StarletteHTTPException) -> JSONResponse:
    status = exc.status_code
    kind = "not_found_error" if status == 404 else "invalid_request_error"
    code = "request_too_large" if status == 413 else None
    err = ApiError(status, str(exc.detail), type=kind, code=code, headers=dict(exc.headers or {}))
    return err.response()


async def _on_api_error(_req: Request, exc: ApiError) -> JSONResponse:
    return exc.response()


async def _on_parallax_error(_req: Request, exc: ParallaxError) -> JSONResponse:
    err = from_parallax_error(exc)
    if err.status >= 500:
        log.warning("request failed", extra={"error": type(exc).__name__, "status": err.status})
    return err.response()


async def _on_unexpected(_req: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error in the gateway", extra={"error": type(exc).__name__})
    return ApiError(500, "internal server error", type="server_error").response()


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, _on_validation)
    app.add_exception_handler(StarletteHTTPException, _on_http)
    app.add_exception_handler(ApiError, _on_api_error)
    app.add_exception_handler(ParallaxError, _on_parallax_error)
    app.add_exception_handler(Exception, _on_unexpected)

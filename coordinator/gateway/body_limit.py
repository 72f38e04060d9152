"""A cap on request bodies, so no client can make the gateway buffer gigabytes.

Checked twice: a declared Content-Length over the cap is refused before a byte is read,
and a body sent without one (chunked) is cut off once it passes the cap.
"""

from __future__ import annotations

from typing import Any

from fastapi import HTTPException

from coordinator.gateway.errors import ApiError


def too_large(max_bytes: int) -> str:
    return (
        f"request body is over this server's limit of {max_bytes:,} bytes "
        "(the coordinator's --max-request-mb)"
    )


class BodyLimit:
    """ASGI middleware: 413 with an OpenAI-style error past `max_bytes`."""

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers", ())).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            err = ApiError(413, too_large(self.max_bytes), code="request_too_large")
            await err.response()(scope, receive, send)
            return
        seen = 0

        async def counted() -> dict:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    # An HTTPException passes FastAPI's body reading untouched, and the
                    # app's handler turns it into the OpenAI-shaped 413.
                    raise HTTPException(413, too_large(self.max_bytes))
            return message

        await self.app(scope, counted, send)

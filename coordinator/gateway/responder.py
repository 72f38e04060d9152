"""Turn a `Generation` into an HTTP response: one JSON body, or an SSE stream."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from fastapi import Request, Response
from fastapi.responses import JSONResponse
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from coordinator.gateway.errors import from_failure
from coordinator.gateway.generation import (
    SYSTEM_FINGERPRINT,
    ChoiceResult,
    Generation,
    unless_disconnected,
)
from coordinator.gateway.textstream import Piece

DONE = b"data: [DONE]\n\n"


def sse_event(payload: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"


class SSEResponse(StreamingResponse):
    """A stream whose `on_close` runs however the response ends.

    The body generator's own `finally` is not enough: if the client leaves
    before the first chunk, the generator never starts and so never cleans up.
    `on_close` is synchronous because it may run inside a cancelled scope.
    """

    def __init__(self, content: AsyncIterator[bytes], on_close: Callable[[], None]) -> None:
        super().__init__(
            content,
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
        self._on_close = on_close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._on_close()


@dataclass(frozen=True)
class Envelope:
    """Fields every response and chunk of one request repeats."""

    id: str
    object: str
    created: int
    model: str

    def wrap(self, choices: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": self.object,
            "created": self.created,
            "model": self.model,
            "system_fingerprint": SYSTEM_FINGERPRINT,
            "choices": choices,
            **extra,
        }


# nginx's "client closed request": only logged, the client is gone.
CLIENT_CLOSED = 499


class Format(Protocol):
    """How one endpoint spells its choices."""

    def opening(self, index: int) -> dict[str, Any] | None: ...

    def delta(self, index: int, piece: Piece) -> dict[str, Any]: ...

    def finish(self, index: int, finish_reason: str) -> dict[str, Any]: ...

    def whole(self, index: int, result: ChoiceResult) -> dict[str, Any]: ...


async def respond(
    request: Request,
    gen: Generation,
    env: Envelope,
    fmt: Format,
    *,
    stream: bool,
    include_usage: bool,
    n_choices: int,
) -> Response:
    if stream:
        # Started before the 200 goes out, so a request that cannot run gets its
        # status; a client that leaves during a long prefill still aborts it.
        async def start() -> bool:
            await gen.start()
            return True

        if not await unless_disconnected(request, start()):
            gen.close()
            return Response(status_code=CLIENT_CLOSED)
        body = _sse_body(gen, env, fmt, include_usage, n_choices)
        return SSEResponse(body, on_close=gen.close)

    async def run() -> list[ChoiceResult]:
        await gen.start()
        return await gen.collect()

    try:
        results = await unless_disconnected(request, run())
    finally:
        gen.close()
    if results is None:
        return Response(status_code=CLIENT_CLOSED)
    choices = [fmt.whole(i, r) for i, r in enumerate(results)]
    return JSONResponse(env.wrap(choices, usage=gen.usage()))


async def _sse_body(
    gen: Generation, env: Envelope, fmt: Format, include_usage: bool, n_choices: int
) -> AsyncIterator[bytes]:
    # With include_usage, OpenAI sends "usage": null on every chunk but the last.
    extra: dict[str, Any] = {"usage": None} if include_usage else {}
    try:
        for index in range(n_choices):
            opening = fmt.opening(index)
            if opening is not None:
                yield sse_event(env.wrap([opening], **extra))
        async for index, piece in gen.pieces():
            if piece.failure is not None:
                yield sse_event(from_failure(piece.failure).body())
                return
            if piece.text or piece.logprobs:
                yield sse_event(env.wrap([fmt.delta(index, piece)], **extra))
            if piece.finish_reason is not None:
                yield sse_event(env.wrap([fmt.finish(index, piece.finish_reason)], **extra))
        if include_usage:
            yield sse_event(env.wrap([], usage=gen.usage()))
        yield DONE
    finally:
        gen.close()

"""The choices of one HTTP request: one is read in place (`SingleChoice`, no queue
and no task on the token path); n > 1 run concurrently and merge (`FanOut`).

Each of n choices is pumped by its own task, so one slow choice does not hold the
others back. Cancelling a pump closes its backend iterator, which aborts that
request on every node. Closing never awaits: it may run inside a cancelled
scope (client disconnect), so pumps are cancelled and kept alive by a
`TaskKeeper` until their cleanup has run.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Protocol

from coordinator.gateway.backend import Backend, GenerationRequest, TokenOut
from coordinator.gateway.tasks import TaskKeeper

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ChoiceEvent:
    index: int
    token: TokenOut | None = None
    error: BaseException | None = None  # the backend raised instead of yielding


class Choices(Protocol):
    async def start(self) -> None:
        """Raise the first error any choice hit before its first token."""
        ...

    def events(self) -> AsyncIterator[ChoiceEvent]: ...

    def stop(self, index: int) -> None:
        """End one choice early (a stop string matched): aborts it upstream."""
        ...

    def close(self) -> None:
        """Abort whatever still runs. Synchronous: it may run in a cancelled scope."""
        ...


def choices(backend: Backend, requests: list[GenerationRequest], keeper: TaskKeeper) -> Choices:
    if len(requests) == 1:
        return SingleChoice(backend, requests[0], keeper)
    return FanOut(backend, requests, keeper)


class SingleChoice:
    """One choice, read straight from the backend's stream by the HTTP response."""

    def __init__(self, backend: Backend, request: GenerationRequest, keeper: TaskKeeper):
        self._stream = backend.generate(request)
        self._keeper = keeper
        self._first: TokenOut | None = None
        self._stopped = False

    async def start(self) -> None:
        try:
            self._first = await anext(self._stream)
        except StopAsyncIteration:
            raise RuntimeError("the backend ended a request without a finished token") from None

    async def events(self) -> AsyncIterator[ChoiceEvent]:
        token, stream = self._first, self._stream
        async with _closing(stream):
            while token is not None and not self._stopped:
                yield ChoiceEvent(0, token=token)
                if token.finished or self._stopped:
                    return
                try:
                    token = await anext(stream)
                except StopAsyncIteration:
                    missing = RuntimeError("the backend ended a request without a finished token")
                    yield ChoiceEvent(0, error=missing)
                    return
                except Exception as e:  # handed to the HTTP layer, which maps it
                    yield ChoiceEvent(0, error=e)
                    return

    def stop(self, index: int) -> None:
        self._stopped = True  # `events` closes the stream at its next turn

    def close(self) -> None:
        # Never awaited here (see the module docstring); closing a stream that already
        # ended, or that a cancelled reader closed, is a no-op.
        self._stopped = True
        self._keeper.spawn(_aclose(self._stream))


async def _aclose(stream: AsyncIterator[TokenOut]) -> None:
    aclose = getattr(stream, "aclose", None)
    if aclose is None:
        return
    try:
        await aclose()
    except RuntimeError:  # still running in a reader being cancelled: it closes it
        pass


class FanOut:
    def __init__(
        self, backend: Backend, requests: list[GenerationRequest], keeper: TaskKeeper
    ) -> None:
        self._backend = backend
        self._requests = requests
        self._keeper = keeper
        self._queue: asyncio.Queue[ChoiceEvent] = asyncio.Queue()
        self._pumps: list[asyncio.Task[Any]] = []
        self._early: list[ChoiceEvent] = []
        self._open = set(range(len(requests)))

    async def start(self) -> None:
        """Start every choice; raise the first error any of them hit before its first token.

        Waiting for each choice's first event keeps the HTTP status meaningful:
        NotCovered or CapacityError become 503/429 instead of a broken stream.
        """
        self._pumps = [
            self._keeper.spawn(self._pump(i, req)) for i, req in enumerate(self._requests)
        ]
        seen: set[int] = set()
        try:
            while len(seen) < len(self._requests):
                ev = await self._queue.get()
                if ev.error is not None:
                    raise ev.error
                seen.add(ev.index)
                self._early.append(ev)
        except BaseException:
            self.close()
            raise

    def stop(self, index: int) -> None:
        """End one choice early (stop string matched): aborts it upstream."""
        self._open.discard(index)
        self._pumps[index].cancel()

    async def events(self) -> AsyncIterator[ChoiceEvent]:
        """Events of open choices until each has finished."""
        early, self._early = self._early, []
        for ev in early:
            if ev.index in self._open:
                yield self._note(ev)
        while self._open:
            ev = await self._queue.get()
            if ev.index in self._open:
                yield self._note(ev)

    def _note(self, ev: ChoiceEvent) -> ChoiceEvent:
        if ev.error is not None or (ev.token is not None and ev.token.finished):
            self._open.discard(ev.index)
        return ev

    def close(self) -> None:
        """Abort whatever still runs. Synchronous on purpose (see the module docstring)."""
        self._open.clear()
        for task in self._pumps:
            task.cancel()

    async def _pump(self, index: int, req: GenerationRequest) -> None:
        try:
            stream = self._backend.generate(req)
            async with _closing(stream):
                async for token in stream:
                    self._queue.put_nowait(ChoiceEvent(index, token=token))
                    if token.finished:
                        return
            missing = RuntimeError("the backend ended a request without a finished token")
            self._queue.put_nowait(ChoiceEvent(index, error=missing))
        except asyncio.CancelledError:
            raise
        except Exception as e:  # handed to the HTTP layer, which maps it to a status
            self._queue.put_nowait(ChoiceEvent(index, error=e))


@contextlib.asynccontextmanager
async def _closing(stream: AsyncIterator[TokenOut]) -> AsyncIterator[None]:
    try:
        yield
    finally:
        aclose = getattr(stream, "aclose", None)
        if aclose is not None:
            await aclose()

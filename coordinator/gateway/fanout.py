"""Run the n choices of one HTTP request concurrently and merge their tokens.

Each choice is pumped by its own task, so one slow choice does not hold the
others back. Cancelling a pump closes its backend iterator, which aborts that
request on every node. Closing never awaits: it may run inside a cancelled
scope (client disconnect), so pumps are cancelled and kept alive by a
`TaskKeeper` until their cleanup has run.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Coroutine
from dataclasses import dataclass
from typing import Any

from coordinator.gateway.backend import Backend, GenerationRequest, TokenOut

log = logging.getLogger(__name__)


class TaskKeeper:
    """Strong references to background tasks (asyncio keeps only weak ones)."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def __len__(self) -> int:
        return len(self._tasks)

    async def drain(self) -> None:
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)


@dataclass(frozen=True)
class ChoiceEvent:
    index: int
    token: TokenOut | None = None
    error: BaseException | None = None  # the backend raised instead of yielding


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

"""Admission control: a request starts only when a chain has room for it; otherwise it
waits in a bounded queue, fair across API keys, and is refused (HTTP 429 with
Retry-After) when the queue is full or its wait runs out.

"Room" is the caller's test (`ClusterBackend.has_room`: a route whose every hop has a
running slot and KV for the request). Waiters are tried again whenever an admitted
request ends, and every `POLL_S` (heartbeats change the cluster's room too). The
queue is served round-robin over clients (API keys): one client's flood waits behind
its own requests, not in front of everyone else's.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace

from coordinator.gateway.backend import GenerationRequest
from coordinator.scheduler.types import ClusterState, Route
from parallax.errors import CapacityError, ContextOverflow, ParallaxError

POLL_S = 0.25
UNBOUNDED = 1 << 62  # a node that did not report its KV capacity bounds nothing
# A node's first hop starts a request only when its prompt fits plus one KV block to
# decode into (node/engine/scheduler.py): its reported block, or 16 tokens (the default
# --kv-block-size) from a node that did not report one.
DECODE_SLACK_TOKENS = 16


class QueueFull(CapacityError):
    """The gateway's wait queue is full or the wait ran out: HTTP 429, retry later."""


@dataclass
class _Waiter:
    has_room: Callable[[], bool]
    admitted: asyncio.Future[None]


@dataclass
class AdmissionStats:
    queued: int = 0  # requests waiting now
    admitted: int = 0  # ever admitted
    rejected: dict[str, int] = field(default_factory=lambda: {"queue_full": 0, "timeout": 0})


class Admission:
    def __init__(
        self,
        max_queue: int,
        max_queue_s: float,
        on_change: Callable[[AdmissionStats], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_queue = max_queue
        self.max_queue_s = max_queue_s
        self.stats = AdmissionStats()
        self._queues: OrderedDict[str, deque[_Waiter]] = OrderedDict()  # client -> waiters
        self._on_change = on_change or (lambda _s: None)
        self._poller: asyncio.Task[None] | None = None
        self._clock = clock

    @property
    def queued(self) -> int:
        return sum(len(q) for q in self._queues.values())

    @contextlib.asynccontextmanager
    async def slot(self, client: str, has_room: Callable[[], bool]) -> AsyncIterator[None]:
        """Hold an admitted request's place; raises QueueFull instead of admitting, or
        the ParallaxError `has_room` raised to say the wait cannot end well."""
        await self._enter(client, has_room)
        try:
            yield
        finally:
            self.wake()  # its room is free: try the waiters

    async def _enter(self, client: str, has_room: Callable[[], bool]) -> None:
        if not self._queues and has_room():
            self._admitted()
            return
        if self.queued >= self.max_queue:
            self._reject("queue_full")
            raise QueueFull(
                f"the cluster is saturated and {self.queued} requests are already waiting "
                f"(--max-queue {self.max_queue}); retry shortly"
            )
        waiter = _Waiter(has_room, asyncio.get_running_loop().create_future())
        self._queues.setdefault(client, deque()).append(waiter)
        self._changed()
        self._ensure_poller()
        try:
            await asyncio.wait_for(asyncio.shield(waiter.admitted), self.max_queue_s)
        except TimeoutError:
            self._drop(client, waiter)
            if waiter.admitted.done():  # admitted at the very last moment: take it
                return
            self._reject("timeout")
            raise QueueFull(
                f"no room on the cluster within {self.max_queue_s:g} s (--max-queue-s); "
                "retry shortly"
            ) from None
        except BaseException:  # the client left, or its wait failed (`_ask`)
            self._drop(client, waiter)
            done = waiter.admitted
            if done.done() and not done.cancelled() and done.exception() is None:
                self.wake()  # it was admitted and will never run: pass its room on
            raise

    def wake(self) -> None:
        """Admit waiters, round-robin over clients, while the head of each has room."""
        progressed = True
        while progressed and self._queues:
            progressed = False
            for client in list(self._queues):
                queue = self._queues[client]
                waiter = queue[0]
                if waiter.admitted.done():  # cancelled meanwhile
                    queue.popleft()
                else:
                    room = self._ask(waiter)
                    if room is False:
                        continue
                    queue.popleft()
                    if room:
                        waiter.admitted.set_result(None)
                        self._admitted()
                    progressed = True  # admitted, or its wait failed: try the next one
                if not queue:
                    del self._queues[client]
                else:  # this client goes to the back of the round
                    self._queues.move_to_end(client)
        self._changed()

    @staticmethod
    def _ask(waiter: _Waiter) -> bool | None:
        """Its `has_room`; None when that raised a ParallaxError (say, layers nobody
        will serve again), which is then the waiter's answer instead of a longer wait."""
        try:
            return waiter.has_room()
        except ParallaxError as e:
            waiter.admitted.set_exception(e)
            return None

    def _drop(self, client: str, waiter: _Waiter) -> None:
        queue = self._queues.get(client)
        if queue is not None and waiter in queue:
            queue.remove(waiter)
            if not queue:
                del self._queues[client]
        self._changed()

    def _admitted(self) -> None:
        self.stats.admitted += 1
        self._changed()

    def _reject(self, reason: str) -> None:
        self.stats.rejected[reason] += 1
        self._changed()

    def _changed(self) -> None:
        self.stats.queued = self.queued
        self._on_change(self.stats)

    def _ensure_poller(self) -> None:
        if self._poller is None or self._poller.done():
            self._poller = asyncio.get_running_loop().create_task(self._poll())

    async def _poll(self) -> None:
        while self._queues:
            await asyncio.sleep(POLL_S)
            self.wake()


def route_has_room(route: Route, state: ClusterState, need_tokens: int) -> bool:
    """Whether every hop of `route` can take one more request of `need_tokens` KV tokens.

    A hop's running count is the larger of its last report and the gateway's own open
    requests on it (`state.running_floor`); the KV its report shows free is lowered by
    the requests this gateway opened there since (each taken to need as much). A node
    that reported neither its slots nor its KV, or that the state does not list, is not
    held back.
    """
    by_id = {n.node_id: n for n in state.nodes}
    for hop in route.hops:
        node = by_id.get(hop.node_id)
        if node is None:  # not in the state (a router that knows more): not held back
            continue
        running = max(node.running, state.running_floor.get(node.node_id, 0))
        if node.max_running and running >= node.max_running:
            return False
        if node.kv_capacity_tokens:
            unseen = max(0, running - node.running)
            if node.kv_free_tokens - unseen * need_tokens < need_tokens:
                return False
    return True


def kv_token_limit(state: ClusterState) -> int | None:
    """The most KV tokens one request can hold on the best chain: for each layer the
    largest KV capacity among the nodes serving it, and the smallest of those over the
    layers. None when that is not bounded: a layer has no server, or one that did not
    report its capacity."""
    num_layers = state.num_layers
    best = [0] * num_layers
    for node in state.nodes:
        reported = node.kv_capacity_tokens
        slack = node.kv_block_tokens or DECODE_SLACK_TOKENS
        cap = max(1, reported - slack) if reported else UNBOUNDED
        for layer in range(node.range.start, min(node.range.end, num_layers)):
            best[layer] = max(best[layer], cap)
    limit = min(best, default=0)
    return None if limit in (0, UNBOUNDED) else limit


class KvLimit:
    """`kv_token_limit` of the live state, computed again only when the state object
    changes (the registry keeps one until the cluster does)."""

    def __init__(self, state_fn: Callable[[], ClusterState]) -> None:
        self._state_fn = state_fn
        self._of: ClusterState | None = None
        self._limit: int | None = None

    def __call__(self) -> int | None:
        state = self._state_fn()
        if state is not self._of:
            self._of, self._limit = state, kv_token_limit(state)
        return self._limit


def fit_to_kv(req: GenerationRequest, limit: int | None) -> GenerationRequest:
    """`req` with max_tokens lowered to what the cluster's KV cache can hold beside its
    prompt (it then ends with finish_reason "length", as at the end of the context);
    ContextOverflow (HTTP 400) when even the prompt cannot fit: waiting for room would
    never help."""
    if limit is None:
        return req
    prompt = len(req.prompt_ids)
    if prompt >= limit:
        raise ContextOverflow(
            f"the prompt has {prompt} tokens, and the nodes serving this model hold at most "
            f"{limit} tokens of KV cache per request: shorten the prompt, or restart nodes "
            "with a larger --kv-cache-mb (or add nodes with more memory)"
        )
    if req.sampling.max_tokens <= limit - prompt:
        return req
    return replace(req, sampling=replace(req.sampling, max_tokens=limit - prompt))

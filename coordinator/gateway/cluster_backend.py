"""`ClusterBackend`: runs requests on a chain of nodes picked by the scheduler.

gateway --Submit--> first node ... last node --Deliver--> gateway. Each request
has a queue that `Deliver` fills; when the request ends in any way (finished,
client gone, stalled) every hop of its route is told to `Release` it.

Load spreading: nodes report how many requests they run in heartbeats, about once a
second, so a burst of requests in between would all see the same loads and take the
same chain. The backend counts its own open chains per node and routes on the larger
of that count and the heartbeat's.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace

from coordinator.gateway.admission import Admission, KvLimit, QueueFull, fit_to_kv, route_has_room
from coordinator.gateway.backend import GenerationRequest, TokenOut
from coordinator.gateway.replay import Budget, Replay, Used, plan_replay
from coordinator.gateway.tasks import TaskKeeper
from coordinator.gateway.upstream import (
    DeliverServicer,
    DeliveryBoard,
    NodeClients,
    deliver_check,
    event_to_token,
    route_to_proto,
)
from coordinator.scheduler import route as schedule_route
from coordinator.scheduler.types import ClusterState, Route, RouteRequest
from parallax.errors import NotCovered, ParallaxError
from parallax.failures import FailureKind
from parallax.rpc import parallax_pb2 as pb
from parallax.rpc.grants import RouteSigner
from parallax.rpc.tls import Tls
from parallax.types import NodeId

log = logging.getLogger(__name__)

RouteFn = Callable[[RouteRequest, ClusterState], Route]
# Silence that ends an attempt: until its first token (a long prompt's prefill on slow
# nodes, or a re-prefill after a replay), and between tokens, where a decode step of
# every hop is all that is awaited, so a hung hop shows much sooner.
DEFAULT_STALL_S = 60.0
DEFAULT_TOKEN_STALL_S = 20.0
# A request whose chain fails (a hop died or was reassigned) is replayed on a new chain:
# prompt plus the tokens generated so far, so the client sees one uninterrupted stream.
DEFAULT_MAX_REPLAYS = 2
DEFAULT_CAPACITY_RETRIES = 30  # a full chain is retried about once a second
DEFAULT_REPLAY_WAIT_S = 30.0  # how long to wait for the coordinator to re-cover layers
REROUTE_POLL_S = 0.5
ROUTE_EXPECTED_NEW_TOKENS = 512
# Admission: requests waiting for room on the cluster, and how long one may wait.
DEFAULT_MAX_QUEUE = 256
DEFAULT_MAX_QUEUE_S = 30.0


def _expected_new_tokens(req: GenerationRequest) -> int:
    return min(req.sampling.max_tokens, ROUTE_EXPECTED_NEW_TOKENS)


def _kv_need(req: GenerationRequest) -> int:
    return len(req.prompt_ids) + _expected_new_tokens(req)


@dataclass
class _Flight:
    """A request in flight. Prompt plus generated ids are kept so it can be replayed."""

    request: GenerationRequest
    route: Route
    generated: list[int] = field(default_factory=list)
    used: Used = field(default_factory=Used)


class ClusterBackend:
    def __init__(
        self,
        state_fn: Callable[[], ClusterState],
        num_layers: int,
        self_address: str,
        route_fn: RouteFn = schedule_route,
        *,
        stall_s: float = DEFAULT_STALL_S,
        token_stall_s: float = DEFAULT_TOKEN_STALL_S,
        max_replays: int = DEFAULT_MAX_REPLAYS,
        replay_wait_s: float = DEFAULT_REPLAY_WAIT_S,
        capacity_retries: int = DEFAULT_CAPACITY_RETRIES,
        max_queue: int = DEFAULT_MAX_QUEUE,
        max_queue_s: float = DEFAULT_MAX_QUEUE_S,
        tls: Tls | None = None,
        signer: RouteSigner | None = None,
        secret_of: Callable[[str], bytes | None] | None = None,
        recovering: Callable[[], bool] = lambda: False,
    ) -> None:
        # Layers assigned but still loading: a request waits for them (as for room),
        # where with nothing assigned it fails at once (HTTP 503).
        self._recovering = recovering
        # Route grants and who may deliver: both off only where no node has joined a
        # coordinator (tests with fake nodes).
        self._signer = signer
        self._secret_of = secret_of
        self.admission = Admission(max_queue, max_queue_s)
        self._budget = Budget(max_replays, capacity_retries, replay_wait_s)
        self._state_fn = state_fn
        self._num_layers = num_layers
        self._kv_limit = KvLimit(state_fn)
        self._self_address = self_address
        self._route_fn = route_fn
        self._stall_s = stall_s
        self._token_stall_s = token_stall_s
        self._board = DeliveryBoard()
        self._clients = NodeClients(tls)
        self._releases = TaskKeeper()
        self._open: Counter[NodeId] = Counter()  # chains this gateway has open, per node
        self.servicer = DeliverServicer(self._board)

    @property
    def in_flight(self) -> int:
        return len(self._board)

    @property
    def denied_deliveries(self) -> int:
        """Deliver events refused: not from a hop the request's grant names."""
        return self._board.denied

    @property
    def node_in_flight(self) -> dict[NodeId, int]:
        """Requests this gateway has open on each node."""
        return dict(self._open)

    def _state(self) -> ClusterState:
        """The live state, each node's `running` raised to this gateway's own open
        requests on it: those are known now, the heartbeat's count up to a second late."""
        state = self._state_fn()
        floor = {nid: k for nid, k in self._open.items() if k > 0}
        return replace(state, running_floor=floor) if floor else state

    def _unless_recovering(self, route: Callable[[], Route]) -> Route | None:
        """`route()`, or None while the layers it lacks are coming back (the registry
        recovers: layers assigned and loading, a re-solve under way, `--dead-after-s`
        after the cover was lost): a request then waits in admission, as a 503 would fail
        every request that arrives during a reload. NotCovered (HTTP 503, naming the
        gaps) when nothing is bringing them back."""
        try:
            return route()
        except NotCovered:
            if not self._recovering():
                raise
            return None

    def check_ready(self) -> None:
        probe = RouteRequest("readiness-probe", 1, 1)
        self._unless_recovering(lambda: self._route_fn(probe, self._state_fn()))

    async def generate(self, req: GenerationRequest) -> AsyncIterator[TokenOut]:
        req = fit_to_kv(req, self._kv_limit())
        first = self._unless_recovering(lambda: self._route(req))
        # With nobody waiting, admission asks at once, in this turn: that route is current.
        fresh = [first] if first is not None and not self.admission.queued else []
        reserved: list[Route] = []

        def has_room() -> bool:
            # The route is taken, and its slots held, at admission: waiters admitted
            # together must each see the others' requests.
            try:
                route = fresh.pop() if fresh else self._unless_recovering(lambda: self._route(req))
            except NotCovered:
                raise  # nobody will serve those layers again: HTTP 503 now, no longer wait
            except ParallaxError:
                return False
            if route is None or not route_has_room(route, self._state(), _kv_need(req)):
                return False
            self._hold(route)
            reserved.append(route)
            return True

        try:
            async with self._admitted(req, has_room):
                route = reserved.pop()
                self._unhold(route)  # the attempt holds it from here, in the same turn
                run = self._run(_Flight(req, route))
                try:
                    async for token in run:
                        yield token
                finally:
                    await run.aclose()  # now, not at garbage collection: it releases KV
        finally:
            for route in reserved:  # admitted, then cancelled before it could start
                self._unhold(route)

    async def generate_on(self, req: GenerationRequest, route: Route) -> AsyncIterator[TokenOut]:
        """One attempt on exactly `route`: no admission, no replay (the verifier compares
        what two given chains compute; a failure is its answer)."""
        stream = self._attempt(_Flight(req, route), req.request_id)
        try:
            async for token in stream:
                yield token
        finally:
            await stream.aclose()

    @contextlib.asynccontextmanager
    async def _admitted(self, req: GenerationRequest, has_room) -> AsyncIterator[None]:
        try:
            async with self.admission.slot(req.client, has_room):
                yield
        except QueueFull:
            self._route(req)  # still uncovered after the wait: HTTP 503, not 429
            raise

    async def _run(self, flight: _Flight) -> AsyncIterator[TokenOut]:
        """Attempts on chains until one ends the request (replays per the failure kinds)."""
        req = flight.request
        attempt = 0
        while True:
            # A replay runs under its own wire id: late events of the failed chain can
            # never be taken for tokens of the new one.
            wire_id = req.request_id if attempt == 0 else f"{req.request_id}~r{attempt}"
            failure = None
            stream = self._attempt(flight, wire_id)
            try:
                async for token in stream:
                    if token.failure is not None:
                        failure = token.failure
                        break
                    yield token
            finally:
                # Close now, not at garbage collection: closing releases the chain's KV.
                await stream.aclose()
            if failure is None:
                return
            plan = plan_replay(failure.kind, flight.used, self._budget)
            route = await self._reroute(flight, plan, failure.hop) if plan is not None else None
            if route is None:
                yield TokenOut.failed(failure.kind, failure.message)
                return
            log.warning(
                "replaying request on a new chain",
                extra={
                    "request_id": req.request_id,
                    "generated": len(flight.generated),
                    "route": [h.node_id for h in route.hops],
                    "failure": failure.kind,
                    "error": failure.message,
                },
            )
            flight.route = route
            attempt += 1

    def _hold(self, route: Route) -> None:
        self._open.update({h.node_id for h in route.hops})

    def _unhold(self, route: Route) -> None:
        for node in {h.node_id for h in route.hops}:
            self._open[node] -= 1
            if not self._open[node]:
                del self._open[node]

    def _route(self, req: GenerationRequest) -> Route:
        # Route on the KV a request will likely hold, not its cap: a missing max_tokens
        # means "the rest of the context" and would make every node look full.
        expected = _expected_new_tokens(req)
        route = self._route_fn(
            RouteRequest(req.request_id, len(req.prompt_ids), expected), self._state()
        )
        if not route.covers(self._num_layers):
            raise ValueError(f"router returned a route that does not cover {self._num_layers}")
        return route

    async def _reroute(self, flight: _Flight, plan: Replay, avoid: str = "") -> Route | None:
        """The chain to replay on, per `plan` (coordinator/gateway/replay.py): after its
        back-off, any chain, or one that differs from the failed one (the coordinator
        notices a dead node within its dead-after time and re-covers its layers), or at
        last the same chain once, when the router still offers it."""
        failed = [(h.node_id, h.range) for h in flight.route.hops]
        loop = asyncio.get_running_loop()
        await asyncio.sleep(plan.backoff_s)
        deadline = loop.time() + plan.wait_s
        route = None
        while True:
            try:
                route = self._route(flight.request)
            except ParallaxError:  # layers not covered yet: nodes still reloading
                route = None
            # A chain through the hop that was unreachable would fail again: not before
            # the coordinator declares it dead (or as the last resort below).
            usable = route is not None and all(h.address != avoid for h in route.hops)
            if usable and (plan.any_chain or [(h.node_id, h.range) for h in route.hops] != failed):
                flight.used = plan.used
                return route
            if loop.time() >= deadline:
                break
            await asyncio.sleep(REROUTE_POLL_S)
        if plan.same_at_last and route is not None:
            flight.used = replace(plan.used, same_chain_fallback=True)
            return route
        return None

    async def _attempt(self, flight: _Flight, wire_id: str) -> AsyncIterator[TokenOut]:
        req, route = flight.request, flight.route
        submit = self._submit_message(flight, wire_id)
        # Open the queue before Submit: the first token may arrive before its Ack.
        queue = self._board.open(wire_id, deliver_check(route, self._secret_of))
        log.info(
            "request routed",
            extra={
                "request_id": req.request_id,
                "client": req.client,
                "prompt_tokens": len(req.prompt_ids),
                "max_tokens": req.sampling.max_tokens,
                "route": [h.node_id for h in route.hops],
            },
        )
        finished = False
        # Counted from here (no await since it was routed) until the attempt ends in any way.
        self._hold(route)
        try:
            refused = await self._clients.submit(route, submit)
            if refused is not None:
                yield TokenOut.failed(refused.kind, refused.message, refused.hop)
                return
            with_logprobs = req.sampling.logprobs >= 0
            wait = self._stall_s
            while True:
                try:
                    ev = await asyncio.wait_for(queue.get(), wait)
                except TimeoutError:
                    yield self._stalled(flight, wait)
                    return
                wait = self._token_stall_s
                token = event_to_token(ev, with_logprobs)
                if token.carries_token:
                    # Tokens come in order (one ordered queue per peer on the node), so
                    # an index already taken is a replayed event: dropped. One ahead of
                    # the next means a token was lost: replay from what arrived.
                    if ev.index < len(flight.generated):
                        self._board.denied += 1
                        continue
                    if ev.index > len(flight.generated):
                        why = f"token {len(flight.generated)} never arrived (got {ev.index})"
                        yield TokenOut.failed(FailureKind.INTERNAL, why)
                        return
                    flight.generated.append(token.token_id)
                # Only a clean end is "finished"; after an error the hops are told to abort.
                finished = token.finished and token.carries_token
                yield token
                if token.finished:
                    return
        finally:
            self._unhold(route)
            self._board.close(wire_id)
            reason = "finished" if finished else "abort"
            # A task, not an await: this may run while the caller is being cancelled.
            signature = submit.capability.signature
            self._releases.spawn(self._clients.release(route, wire_id, reason, signature))

    def _submit_message(self, flight: _Flight, wire_id: str) -> pb.SubmitRequest:
        req = flight.request
        submit = pb.SubmitRequest(
            request_id=wire_id,
            prompt_ids=[*req.prompt_ids, *flight.generated],
            sampling=req.sampling.to_proto(),
            route=route_to_proto(flight.route),
            reply_to=self._self_address,
            generated_offset=len(flight.generated),
        )
        if self._signer is not None:  # this request may run on these hops, nowhere else
            submit.capability.CopyFrom(self._signer.sign(submit))
        return submit

    def _stalled(self, flight: _Flight, waited_s: float) -> TokenOut:
        log.warning(
            "request stalled",
            extra={
                "request_id": flight.request.request_id,
                "stall_s": waited_s,
                "generated": len(flight.generated),
                "route": [h.node_id for h in flight.route.hops],
            },
        )
        return TokenOut.failed(FailureKind.STALLED, f"no token from the cluster for {waited_s:g} s")

    async def close(self) -> None:
        """Wait for pending releases, then close the node channels."""
        await self._releases.drain()
        await self._clients.close()

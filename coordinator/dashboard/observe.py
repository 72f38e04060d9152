"""Watching requests from the coordinator: a Backend wrapper and a router wrapper.

The gateway stays unaware of metrics: `ObservedBackend` wraps whatever backend it
is given and times each token; `observed_route` wraps the scheduler's router so
the route a request takes is known while it runs.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable

from coordinator.dashboard.traffic import Traffic
from coordinator.gateway.backend import Backend, GenerationRequest, TokenOut
from coordinator.metrics import CoordinatorMetrics
from coordinator.scheduler.types import ClusterState, Route, RouteRequest

RouteFn = Callable[[RouteRequest, ClusterState], Route]


def observed_route(route_fn: RouteFn, traffic: Traffic) -> RouteFn:
    def route(req: RouteRequest, state: ClusterState) -> Route:
        chosen = route_fn(req, state)
        traffic.routed(req.request_id, chosen)
        return chosen

    return route


class ObservedBackend:
    """A Backend that records every request it passes on into `traffic` and `metrics`."""

    def __init__(
        self,
        inner: Backend,
        traffic: Traffic,
        metrics: CoordinatorMetrics,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._inner = inner
        self._traffic = traffic
        self._metrics = metrics
        self._clock = clock

    def check_ready(self) -> None:
        self._inner.check_ready()

    async def generate(self, req: GenerationRequest) -> AsyncIterator[TokenOut]:
        rid, m = req.request_id, self._metrics
        started = last = self._clock()
        self._traffic.started(rid, started)
        m.active.inc()
        outcome = "rejected"  # raised before the first token: never started
        first = True
        stream = self._inner.generate(req)
        try:
            async for token in stream:
                now = self._clock()
                if first:
                    m.prompt_tokens.inc(len(req.prompt_ids))
                    outcome = "abort"  # started; a client leaving mid-stream ends it here
                if token.carries_token:
                    self._traffic.token(rid, now)
                    m.generated_tokens.inc()
                    (m.ttft if first else m.inter_token).observe(now - last)
                first, last = False, now
                if token.finished:
                    outcome = "error" if token.failure else (token.finish_reason or "stop")
                    m.duration.observe(now - started)
                yield token
        finally:
            m.active.dec()
            m.requests.labels(outcome=outcome).inc()
            self._traffic.ended(rid, outcome)
            await stream.aclose()

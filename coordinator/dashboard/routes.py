"""The dashboard's HTTP routes: the page, its assets, live events, info and metrics.

GET /, /dashboard          the page (static HTML; it fetches everything else)
GET /dashboard/static/F    app.js, style.css, ... shipped in this package
GET /cluster/events        SSE: the dashboard view every `interval_s`
GET /cluster/info          how to join this cluster
GET /metrics               Prometheus exposition of the coordinator

The page and its assets hold no cluster data and are open; everything else takes
`guard` (coordinator/dashboard/access.py: a key once any is configured).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from importlib import resources
from typing import Any

from fastapi import Depends, FastAPI, HTTPException, Request, Response
from fastapi.responses import HTMLResponse, StreamingResponse

from coordinator.dashboard.traffic import Traffic
from coordinator.dashboard.view import ClusterInfo, dashboard_view
from coordinator.gateway.admission import AdmissionStats
from coordinator.metrics import CONTENT_TYPE, CoordinatorMetrics
from coordinator.registry_types import Decision

MEDIA_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".html": "text/html; charset=utf-8",
    ".svg": "image/svg+xml",
}
# The browser retries a lost event stream after this long (a coordinator restart).
RETRY_MS = 1000


def _assets() -> dict[str, bytes]:
    """Every file shipped under static/, read once: nothing on disk is served by name."""
    root = resources.files("coordinator.dashboard") / "static"
    return {f.name: f.read_bytes() for f in root.iterdir() if f.is_file()}


class Dashboard:
    def __init__(
        self,
        snapshot: Callable[[], dict[str, Any]],
        decisions: Callable[[], Sequence[Decision]],
        info: ClusterInfo,
        *,
        interval_s: float = 1.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.traffic = Traffic()
        self.metrics = CoordinatorMetrics(snapshot)
        self.info = info
        self.interval_s = interval_s
        self._snapshot = snapshot
        self._decisions = decisions
        self._clock = clock
        self._assets = _assets()
        self._closing = asyncio.Event()
        self._admission: Callable[[], AdmissionStats] | None = None

    def watch_admission(self, stats: Callable[[], AdmissionStats]) -> None:
        """Show the gateway's wait queue and its refusals (and export them in /metrics)."""
        self._admission = stats
        self.metrics.watch_admission(stats)

    def view(self) -> dict[str, Any]:
        """`/cluster/status`: the registry snapshot with traffic, layer map and join info."""
        self.metrics.count_decisions(self._decisions())
        traffic = self.traffic.snapshot(self._clock())
        st = self._admission() if self._admission is not None else AdmissionStats()
        traffic["queue"] = {"waiting": st.queued, "rejected": sum(st.rejected.values())}
        return dashboard_view(self._snapshot(), traffic, self.info)

    def close(self) -> None:
        """End every event stream, so a shutdown need not wait for browsers to leave."""
        self._closing.set()

    async def _events(self, request: Request) -> AsyncIterator[str]:
        yield f"retry: {RETRY_MS}\n\n"
        while not self._closing.is_set() and not await request.is_disconnected():
            yield f"data: {json.dumps(self.view(), separators=(',', ':'))}\n\n"
            try:
                await asyncio.wait_for(self._closing.wait(), self.interval_s)
            except TimeoutError:
                pass

    def mount(
        self, app: FastAPI, guard: Callable[[Request], Awaitable[None]] | None = None
    ) -> FastAPI:
        page = self._assets["index.html"]
        guarded = [Depends(guard)] if guard is not None else []

        async def index() -> HTMLResponse:
            return HTMLResponse(page)

        async def static(name: str) -> Response:
            body = self._assets.get(name)
            suffix = name[name.rfind(".") :] if "." in name else ""
            if body is None or suffix not in MEDIA_TYPES:
                raise HTTPException(404, f"no dashboard asset {name!r}")
            return Response(body, media_type=MEDIA_TYPES[suffix])

        async def events(request: Request) -> StreamingResponse:
            return StreamingResponse(
                self._events(request),
                media_type="text/event-stream",
                headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
            )

        async def info() -> dict[str, Any]:
            return self.info.to_json()

        async def metrics() -> Response:
            self.metrics.count_decisions(self._decisions())
            return Response(self.metrics.exposition(), media_type=CONTENT_TYPE)

        for path in ("/", "/dashboard"):
            app.add_api_route(path, index, methods=["GET"], include_in_schema=False)
        app.add_api_route(
            "/dashboard/static/{name}", static, methods=["GET"], include_in_schema=False
        )
        app.add_api_route(
            "/cluster/events",
            events,
            dependencies=guarded,
            methods=["GET"],
            tags=["cluster"],
            summary="Server-sent events: the cluster status every second",
        )
        app.add_api_route(
            "/cluster/info",
            info,
            dependencies=guarded,
            methods=["GET"],
            tags=["cluster"],
            summary="The coordinator's gRPC address and the command that joins a node",
        )
        app.add_api_route(
            "/metrics",
            metrics,
            dependencies=guarded,
            methods=["GET"],
            tags=["cluster"],
            summary="Prometheus metrics of the coordinator",
        )
        return app

"""The coordinator's HTTP side: the OpenAI gateway, `GET /cluster/status` and the dashboard.

With keys configured, every cluster read (`/cluster/*`, `/metrics`, the event
stream) needs an API key or a read-only dashboard key (coordinator/dashboard/access.py).
"""

from __future__ import annotations

import socket
import ssl
import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from fastapi import Depends, FastAPI, Request

from coordinator.dashboard.access import read_guard
from coordinator.dashboard.observe import ObservedBackend, observed_route
from coordinator.dashboard.routes import Dashboard
from coordinator.dashboard.view import ClusterInfo
from coordinator.gateway.app import create_app
from coordinator.gateway.cluster_backend import ClusterBackend
from coordinator.registry import Registry
from coordinator.scheduler import route as schedule_route
from coordinator.snapshot import prometheus_targets
from parallax.config.coordinator import CoordinatorConfig
from parallax.errors import ConfigError
from parallax.models.registry import ResolvedModel
from parallax.rpc import parallax_pb2_grpc as pb_grpc
from parallax.rpc.grants import RouteSigner
from parallax.rpc.tls import Tls
from parallax.tokenizer.tokenizer import Tokenizer
from parallax.types import NodeId


def add_status_route(
    app: FastAPI,
    snapshot: Callable[[], dict[str, Any]],
    guard: Callable[[Request], Awaitable[None]] | None = None,
) -> FastAPI:
    guarded = [Depends(guard)] if guard is not None else []

    async def cluster_status() -> dict[str, Any]:
        return snapshot()

    async def prometheus_sd() -> list[dict[str, Any]]:
        return prometheus_targets(snapshot())

    app.add_api_route(
        "/cluster/status",
        cluster_status,
        methods=["GET"],
        dependencies=guarded,
        tags=["cluster"],
        summary="Nodes, their layers and load, the allocation, coverage gaps and decisions",
    )
    app.add_api_route(
        "/cluster/prometheus-sd",
        prometheus_sd,
        methods=["GET"],
        dependencies=guarded,
        tags=["cluster"],
        summary="Every live node's /metrics address, for Prometheus http_sd_configs",
    )
    return app


def build_gateway(
    config: CoordinatorConfig,
    resolved: ResolvedModel,
    registry: Registry,
    server: grpc.aio.Server,
    self_address: str,
    context_length: int,
    snapshot: Callable[[], dict[str, Any]],
    tls: Tls | None = None,
    signer: RouteSigner | None = None,
    clock: Callable[[], float] = time.time,
) -> tuple[FastAPI, ClusterBackend]:
    """The gateway app over the cluster. Call before `server.start()`: it adds Deliver.

    The dashboard (`app.state.dashboard`) watches requests by wrapping the backend
    and the router; `/cluster/status` serves its view: the snapshot plus traffic.
    """
    info = ClusterInfo(
        self_address,
        resolved.name,
        join_token_required=bool(config.join_token),
        tls=tls is not None,
    )
    dashboard = Dashboard(snapshot, lambda: registry.decisions, info)
    backend = ClusterBackend(
        registry.cluster_state,
        resolved.spec.num_layers,
        self_address,
        route_fn=observed_route(schedule_route, dashboard.traffic),
        stall_s=config.stall_s,
        token_stall_s=config.token_stall_s,
        max_queue=config.max_queue,
        max_queue_s=config.max_queue_s,
        tls=tls,
        signer=signer,
        secret_of=lambda node_id: registry.node_secret(NodeId(node_id)),
        recovering=lambda: registry.recovering(clock()),
    )
    dashboard.watch_admission(lambda: backend.admission.stats)
    dashboard.metrics.watch_denied(lambda: backend.denied_deliveries)
    pb_grpc.add_GatewayServicer_to_server(backend.servicer, server)
    app = create_app(
        ObservedBackend(backend, dashboard.traffic, dashboard.metrics),
        config,
        Tokenizer.from_model(resolved),
        model_id=resolved.name,
        context_length=context_length,
    )
    app.state.dashboard = dashboard
    guard = read_guard(tuple(config.api_key), tuple(config.dashboard_key))
    dashboard.mount(app, guard)
    return add_status_route(app, dashboard.view, guard), backend


def check_https(cert: str, key: str) -> None:
    """Load the HTTPS pair once at start-up, so a bad file fails with the flag to fix."""
    if not cert:
        return
    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as e:
        raise ConfigError(
            f"--https-cert={cert!r} / --https-key={key!r}: cannot load them ({e}); give a "
            "PEM certificate and its unencrypted private key"
        ) from None


def bind_http_socket(host: str, port: int) -> socket.socket:
    """Bind before serving: a taken port fails here with the flag to change."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise ConfigError(
            f"--port={port}: cannot listen on {host}:{port} ({e.strerror}); "
            "choose another --port, or 0 to pick a free one"
        ) from None
    sock.listen(512)
    return sock

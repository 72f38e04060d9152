"""The coordinator's HTTP side: the gateway app plus `GET /cluster/status`.

The OpenAI gateway (`coordinator.gateway.app.create_app`) is used when it is
installed; until then a minimal app serves health and status only.
"""

from __future__ import annotations

import importlib.util
import socket
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI

from parallax.config.coordinator import CoordinatorConfig
from parallax.errors import ConfigError

GATEWAY_APP = "coordinator.gateway.app"


def add_status_route(app: FastAPI, snapshot: Callable[[], dict[str, Any]]) -> FastAPI:
    async def cluster_status() -> dict[str, Any]:
        return snapshot()

    app.add_api_route(
        "/cluster/status",
        cluster_status,
        methods=["GET"],
        summary="Nodes, their layers and load, the allocation, coverage gaps and decisions",
    )
    return app


def minimal_app(snapshot: Callable[[], dict[str, Any]]) -> FastAPI:
    app = FastAPI(title="Parallax coordinator")

    async def health() -> dict[str, Any]:
        coverage = snapshot()["coverage"]
        return {"status": "ok", "serving": coverage["serving"]}

    app.add_api_route("/health", health, methods=["GET"])
    return add_status_route(app, snapshot)


def build_app(
    config: CoordinatorConfig,
    snapshot: Callable[[], dict[str, Any]],
    make_gateway: Callable[[], FastAPI] | None,
) -> FastAPI:
    """The gateway's app (if given) with the status route added, else the minimal app."""
    if make_gateway is None or importlib.util.find_spec(GATEWAY_APP) is None:
        return minimal_app(snapshot)
    return add_status_route(make_gateway(), snapshot)


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
    sock.set_inheritable(True)
    return sock

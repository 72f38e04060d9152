"""`parallax run`: one asyncio process with the coordinator's gRPC service, the node
expiry task and the HTTP gateway.

Prints one stable line per listener (`coordinator grpc listening on HOST:PORT`,
`gateway http listening on http://HOST:PORT`), which tests and `parallax demo`
parse. SIGINT and SIGTERM stop everything and the process exits 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import grpc
import uvicorn

from coordinator.control import CoordinatorService
from coordinator.http import bind_http_socket, build_gateway, check_https
from coordinator.registry import Registry
from coordinator.scheduler import AllocateOptions
from coordinator.state_file import StateFile
from coordinator.verify.verifier import Verifier, build_verifier
from coordinator.weights import add_weights_service
from parallax.config.coordinator import CoordinatorConfig
from parallax.config.tls import load_tls
from parallax.errors import ConfigError
from parallax.models.identity import model_identity
from parallax.models.registry import ResolvedModel, resolve_model
from parallax.models.spec import DTYPE_BYTES
from parallax.rpc import parallax_pb2_grpc as pb_grpc
from parallax.rpc.grants import RouteSigner
from parallax.rpc.tls import Tls, add_port

log = logging.getLogger(__name__)

# Never share a port with another process: a second coordinator must fail, not split traffic.
GRPC_SERVER_OPTIONS = (("grpc.so_reuseport", 0),)
SHUTDOWN_GRACE_S = 2.0


def max_model_len(config: CoordinatorConfig, resolved: ResolvedModel) -> int:
    """--max-model-len, or the model's maximum positions when it is 0. The cluster's
    memory is not known at start (nodes join later), so it is not a cap here: the
    planner reserves one full context of KV per layer and stands by a node that cannot
    hold it, which `parallax plan` explains."""
    positions = resolved.spec.max_position_embeddings
    if config.max_model_len > positions:
        raise ConfigError(
            f"--max-model-len={config.max_model_len}: {resolved.name} has "
            f"{positions} positions; give at most {positions} (or 0 for the model's)"
        )
    return config.max_model_len or positions


def allocate_options(config: CoordinatorConfig, resolved: ResolvedModel) -> AllocateOptions:
    wire = config.wire_dtype or resolved.spec.torch_dtype
    return AllocateOptions(
        wire_dtype_bytes=DTYPE_BYTES.get(wire, 2),
        # The KV each node reserves per layer, and the longest request the gateway takes.
        context_tokens=max_model_len(config, resolved),
        solver=config.solver,
        min_stages_when_possible=config.min_stages,
        # Joins wait for the allocator: keep it well inside the time a node may be silent.
        time_limit_s=min(10.0, config.dead_after_s / 2),
    )


def advertised(host: str, port: int) -> str:
    # Nodes dial this address back (Deliver); a wildcard bind is not dialable.
    if host in ("0.0.0.0", "::", ""):
        host = socket.gethostname()
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def bind_grpc(server: grpc.aio.Server, host: str, port: int, tls: Tls | None = None) -> int:
    target = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        bound = add_port(server, target, tls)
    except RuntimeError:
        bound = 0
    if bound == 0:
        raise ConfigError(
            f"--grpc-port={port}: cannot listen on {target} (address in use, or not an "
            "interface of this machine); choose another --grpc-port (0 picks a free one) "
            "or fix --grpc-host"
        )
    return bound


class _Http(uvicorn.Server):
    """uvicorn without its own signal handlers: this process handles SIGINT/SIGTERM."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def _expire_loop(registry: Registry, period_s: float, clock: Callable[[], float]) -> None:
    while True:
        await asyncio.sleep(period_s)
        # A death re-runs the allocator: off the loop, like Join and Leave.
        await asyncio.to_thread(registry.expire, clock())


async def _save_loop(registry: Registry, state_file: StateFile | None, period_s: float) -> None:
    """Write the registry's nodes whenever they changed (at most once a period), so a
    coordinator killed at any moment restarts with them."""
    if state_file is None:
        return
    saved = -1
    try:
        while True:
            version, records = registry.records()
            if version != saved:
                await asyncio.to_thread(state_file.save, registry.model_name, records)
                saved = version
            await asyncio.sleep(period_s)
    finally:
        version, records = registry.records()
        if version != saved:
            state_file.save(registry.model_name, records)


@dataclass
class Listeners:
    grpc_address: str
    http_url: str


async def serve(
    config: CoordinatorConfig,
    *,
    on_listening: Callable[[Listeners], None] | None = None,
    clock: Callable[[], float] = time.time,
) -> int:
    tls = load_tls(config)  # before the model: a missing file fails at once
    check_https(config.https_cert, config.https_key)
    resolved = resolve_model(config.model)
    options = allocate_options(config, resolved)
    registry = Registry(
        resolved.name,
        resolved.spec,
        dead_after_s=config.dead_after_s,
        options=options,
        policy=config.allocation_policy,
        # The expiry loop runs every heartbeat period: a round this late means this
        # process stalled, and heartbeats it missed meanwhile are not the nodes' fault.
        stall_after_s=max(2 * config.heartbeat_s, config.dead_after_s / 2),
    )
    state_file = StateFile(config.state_dir) if config.state_dir else None
    if state_file is not None:
        restored = state_file.load(resolved.name, clock())
        if restored:
            registry.restore(restored, clock())
            print(f"coordinator restored {len(restored)} nodes from {state_file.path}")
    server = grpc.aio.server(options=GRPC_SERVER_OPTIONS)
    # The key that signs route grants: kept with the state, so that nodes which keep
    # serving across a restart still trust the grants of the restarted gateway.
    signer = (
        RouteSigner.load_or_create(state_file.path.parent / "route-key")
        if state_file is not None
        else RouteSigner.generate()
    )
    identity = model_identity(resolved)
    service = CoordinatorService(
        registry,
        join_token=config.join_token,
        heartbeat_s=config.heartbeat_s,
        clock=clock,
        route_key=signer.public_key,
        model_identity=identity,
    )
    pb_grpc.add_CoordinatorServicer_to_server(service, server)
    # The weight manifest, and the model's chunks within --share-mbps (0: none).
    add_weights_service(server, config.share_mbps, resolved, identity, registry)
    grpc_port = bind_grpc(server, config.grpc_host, config.grpc_port, tls)
    sock = bind_http_socket(config.http_host, config.port)
    grpc_address = advertised(config.advertise_host or config.grpc_host, grpc_port)

    verifier: Verifier | None = None  # built with the gateway, below

    def snapshot() -> dict:
        snap = registry.status_snapshot(clock())
        if verifier is not None:
            snap["verification"] = verifier.report()
        return snap

    # Requests may only be as long as the KV every node reserves per layer.
    context = options.context_tokens
    app, backend = build_gateway(
        config, resolved, registry, server, grpc_address, context, snapshot, tls, signer, clock
    )
    verifier = build_verifier(config, resolved, registry, backend, clock)
    await server.start()
    http = _Http(
        uvicorn.Config(
            app,
            log_config=None,
            access_log=False,
            timeout_graceful_shutdown=SHUTDOWN_GRACE_S,
            # Past this many open connections uvicorn answers 503 at once, before a
            # request is read: the gateway's own queue (429) sits well inside it.
            limit_concurrency=config.max_connections,
            ssl_certfile=config.https_cert or None,
            ssl_keyfile=config.https_key or None,
        )
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    http_task = asyncio.create_task(http.serve(sockets=[sock]))
    expire_task = asyncio.create_task(_expire_loop(registry, config.heartbeat_s, clock))
    save_task = asyncio.create_task(_save_loop(registry, state_file, config.heartbeat_s))
    verify_task = asyncio.create_task(verifier.run_forever())
    host, port = sock.getsockname()[:2]
    scheme = "https" if config.https_cert else "http"
    listeners = Listeners(grpc_address, f"{scheme}://{advertised(host, port)}")
    # The HTTP socket already listens, so clients may connect as soon as this is printed.
    print(f"coordinator grpc listening on {config.grpc_host}:{grpc_port}", flush=True)
    print(f"gateway http listening on {listeners.http_url}", flush=True)
    log.info(
        "coordinator started",
        extra={"model": resolved.name, "grpc": grpc_address, "http": listeners.http_url},
    )
    if on_listening is not None:
        on_listening(listeners)
    stopper = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait({stopper, http_task}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        log.info("coordinator stopping")
        app.state.dashboard.close()  # ends open event streams: shutdown need not wait on them
        http.should_exit = True
        expire_task.cancel()
        save_task.cancel()
        verify_task.cancel()
        stopper.cancel()
        await asyncio.gather(
            http_task, expire_task, save_task, verify_task, stopper, return_exceptions=True
        )
        await backend.close()
        await server.stop(SHUTDOWN_GRACE_S)
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        sock.close()
    if not stop.is_set():
        log.error("http server stopped on its own; shutting down")
        return 1
    return 0


def run(config: CoordinatorConfig) -> int:
    return asyncio.run(serve(config))

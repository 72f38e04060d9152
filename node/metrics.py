"""Prometheus metrics of one node, served on a small HTTP port (`--metrics-port`).

The engine loop and peer senders record into these; the scrape runs on the
exporter's own thread and only reads them. Gauges that describe the node's
state are set from `NodeServer.status()`, which the heartbeat calls every
second, so a scrape never touches the pipeline while a step runs. Each
`NodeMetrics` owns its registry: several nodes may live in one test process.
"""

from __future__ import annotations

import threading
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from parallax.errors import ParallaxError
from parallax.rpc import parallax_pb2 as pb

STATES = ("joining", "loading", "ready", "standby", "leaving")
# Seconds. A step is one batched forward over this node's layers; a send is one RPC to a peer.
STEP_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5)
SEND_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1)


class NodeMetrics:
    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        self.steps = Counter("parallax_node_steps", "engine steps run", registry=r)
        self.step_seconds = Histogram(
            "parallax_node_step_seconds", "one engine step", buckets=STEP_BUCKETS, registry=r
        )
        self.tokens = Counter(
            "parallax_node_tokens",
            "token rows this node finished: sampled (last hop) or forwarded",
            ["kind"],
            registry=r,
        )
        self.denied = Counter(
            "parallax_node_denied",
            "calls or chunks refused for want of a valid route grant (PERMISSION_DENIED), by method",
            ["method"],
            registry=r,
        )
        self.received = Counter(
            "parallax_node_messages_received", "RPCs received, by method", ["method"], registry=r
        )
        self.send_seconds = Histogram(
            "parallax_node_send_seconds",
            "per-hop latency: one RPC to the next node or the gateway, by kind",
            ["kind"],
            buckets=SEND_BUCKETS,
            registry=r,
        )
        self.send_failures = Counter(
            "parallax_node_send_failures",
            "RPCs to peers that failed, by kind",
            ["kind"],
            registry=r,
        )
        self.state = Gauge("parallax_node_state", "1 for the node's state", ["state"], registry=r)
        self.running = Gauge(
            "parallax_node_running_requests", "requests running or waiting here", registry=r
        )
        self.queue_depth = Gauge(
            "parallax_node_queue_depth",
            "work not yet stepped: inbox operations plus queued hidden-state batches",
            registry=r,
        )
        self.kv_free = Gauge("parallax_node_kv_free_tokens", "free KV cache, tokens", registry=r)
        self.kv_total = Gauge("parallax_node_kv_total_tokens", "KV cache size, tokens", registry=r)
        self.layers = Gauge(
            "parallax_node_layers",
            "the served layer range; 0 and 0 when none",
            ["bound"],
            registry=r,
        )
        self.tokens_per_s = Gauge(
            "parallax_node_tokens_per_second", "tokens per second over the last seconds", registry=r
        )
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None

    # ---- recording ----
    def on_step(self, seconds: float, sampled: int, forwarded: int, queue_depth: int) -> None:
        self.steps.inc()
        self.step_seconds.observe(seconds)
        self.tokens.labels(kind="sampled").inc(sampled)
        self.tokens.labels(kind="forwarded").inc(forwarded)
        self.queue_depth.set(queue_depth)

    def on_sent(self, kind: str, seconds: float, ok: bool) -> None:
        self.send_seconds.labels(kind=kind).observe(seconds)
        if not ok:
            self.send_failures.labels(kind=kind).inc()

    def on_status(self, st: pb.NodeStatus) -> None:
        for s in STATES:
            self.state.labels(state=s).set(1.0 if st.state == s else 0.0)
        self.running.set(st.running_requests)
        self.kv_free.set(st.kv_free_tokens)
        self.kv_total.set(st.kv_total_tokens)
        self.layers.labels(bound="start").set(st.start)
        self.layers.labels(bound="end").set(st.end)
        self.tokens_per_s.set(st.tokens_per_s)

    # ---- the exporter ----
    def serve(self, host: str, port: int) -> int:
        """Serve `/metrics` on host:port (0 picks a free port); returns the port."""
        try:
            self._server, self._thread = start_http_server(port, host, registry=self.registry)
        except OSError as e:
            raise ParallaxError(
                f"--metrics-port={port}: cannot listen on {host}:{port} ({e.strerror}); "
                "choose another port, or 0 to pick a free one"
            ) from None
        return self._server.server_port

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=2)
            self._thread = None

"""Config of `parallax join`: a volunteer node serving a layer range."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from parallax.config.base import opt
from parallax.config.generate import EngineConfig
from parallax.config.tls import tls_ca_opt, tls_cert_opt, tls_key_opt


# kw_only: `coordinator` has no default but follows EngineConfig's defaulted fields.
@dataclass(frozen=True, kw_only=True)
class NodeConfig(EngineConfig):
    command_help: ClassVar[str] = "join a Parallax cluster and serve the layers it assigns"

    coordinator: str = opt(help="coordinator gRPC address, HOST:PORT")
    name: str = opt("", help="display name; default: hostname-port")
    host: str = opt("127.0.0.1", help="interface the node's gRPC server binds to")
    port: int = opt(0, help="gRPC port; 0 = pick a free one")
    advertise_host: str = opt("", help="host other nodes use to reach this one; default --host")
    memory_gb: float = opt(0.0, help="memory offered for weights plus KV; 0 = measure", unit="GiB")
    model: str = opt("", help="model to serve; default: the coordinator's")
    join_token: str = opt(
        "", help="shared secret the coordinator requires", env="PARALLAX_JOIN_TOKEN"
    )
    heartbeat_s: float = opt(1.0, help="heartbeat period", unit="s")
    drain_s: float = opt(
        30.0,
        help="on SIGTERM/SIGINT, how long in-flight requests may run to their end before "
        "those left are handed back to their gateways (which replay them elsewhere)",
        unit="s",
    )
    metrics_port: int = opt(
        0, help="port of the Prometheus /metrics HTTP server (on --host); 0 = pick a free one"
    )
    wire_dtype: str = opt(
        "",
        help="dtype of activations on the wire; default the model's",
        choices=("", "bfloat16", "float16", "float32"),
    )
    fetch_weights: str = opt(
        "auto",
        help="where the weights come from without --model: 'auto' uses the coordinator's "
        "model path when it exists on this machine, else fetches the assigned layers from "
        "peers (a Hugging Face repo id: their files from the hub); 'always' fetches from "
        "peers; 'never' needs the local file",
        choices=("auto", "always", "never"),
    )
    cache_dir: str = opt(
        "",
        help="folder of fetched weights (a sparse copy of the model file per model plus a "
        "journal of verified chunks; reused by a re-join); default $XDG_CACHE_HOME/parallax "
        "or ~/.cache/parallax",
    )
    share_mbps: float = opt(
        200.0,
        help="bandwidth this node spends serving the weights it holds to nodes that join "
        "without the model; 0 = serve none",
        unit="Mbit/s",
    )
    tls_cert: str = tls_cert_opt()
    tls_key: str = tls_key_opt()
    tls_ca: str = tls_ca_opt()

    def validate(self) -> None:
        super().validate()
        host, sep, port = self.coordinator.rpartition(":")
        self.require(
            bool(sep and host and port.isdigit()),
            "coordinator",
            "expected HOST:PORT, e.g. 127.0.0.1:7000",
        )
        self.require(0 <= self.port < 65536, "port", "must be 0..65535")
        self.require(self.drain_s >= 0, "drain_s", "must be >= 0")
        self.require(0 <= self.metrics_port < 65536, "metrics_port", "must be 0..65535")
        self.require(self.memory_gb >= 0, "memory_gb", "must be >= 0")
        self.require(self.heartbeat_s > 0, "heartbeat_s", "must be positive")
        self.require(self.share_mbps >= 0, "share_mbps", "must be >= 0 (0 = serve none)")

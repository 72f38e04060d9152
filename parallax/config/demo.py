"""Config of `parallax demo`: a coordinator plus local nodes, on this machine."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from parallax.config.base import ConfigBase, opt
from parallax.config.generate import DEFAULT_MODEL


@dataclass(frozen=True)
class DemoConfig(ConfigBase):
    command_help: ClassVar[str] = "start a coordinator and N local nodes; Ctrl-C stops all"

    model: str = opt(DEFAULT_MODEL, help="model the cluster serves")
    nodes: int = opt(3, help="local `parallax join` processes to start")
    grpc_port: int = opt(7000, help="coordinator gRPC port; 0 = pick")
    port: int = opt(8000, help="gateway and dashboard HTTP port; 0 = pick")
    threads: int = opt(1, help="torch threads per node")
    kv_cache_mb: float = opt(256.0, help="KV cache per node", unit="MiB")
    max_model_len: int = opt(
        0,
        help="longest sequence (prompt + completion) a request may reach; 0 = the model's",
        unit="tokens",
    )
    ready_timeout_s: float = opt(300.0, help="how long to wait for the cluster", unit="s")

    def validate(self) -> None:
        self.require(1 <= self.nodes <= 64, "nodes", "must be 1..64")
        self.require(self.threads >= 1, "threads", "must be >= 1")
        self.require(self.max_model_len >= 0, "max_model_len", "must be >= 0 (0 = the model's)")

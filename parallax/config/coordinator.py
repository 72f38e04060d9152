"""Config of `parallax run`: the coordinator's gRPC service plus the HTTP gateway."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import ClassVar

from parallax.config.base import ConfigBase, opt
from parallax.config.generate import DEFAULT_MODEL
from parallax.config.tls import tls_ca_opt, tls_cert_opt, tls_key_opt


@dataclass(frozen=True)
class CoordinatorConfig(ConfigBase):
    command_help: ClassVar[str] = "run the coordinator, its gateway and dashboard"

    model: str = opt(DEFAULT_MODEL, help="model the cluster serves: name, GGUF file or HF folder")
    grpc_host: str = opt("127.0.0.1", help="interface of the coordinator gRPC service")
    grpc_port: int = opt(7000, help="port of the coordinator gRPC service; 0 = pick")
    host: str = opt(
        "",
        help="HTTP interface; default 127.0.0.1; any other needs --api-key (or --insecure-open)",
    )
    port: int = opt(8000, help="HTTP port of the gateway and dashboard; 0 = pick")
    api_key: tuple[str, ...] = opt(
        (), help="accepted Bearer API key; repeat for several", env="PARALLAX_API_KEYS"
    )
    dashboard_key: tuple[str, ...] = opt(
        (),
        help="read-only key: the dashboard, /cluster/*, /metrics and the event stream, "
        "not the completions API (open the dashboard at /?key=KEY); repeat for several",
        env="PARALLAX_DASHBOARD_KEYS",
    )
    insecure_open: bool = opt(
        False,
        help="serve a non-loopback --host without API keys: anyone who reaches it may use "
        "the API and read the cluster",
    )
    join_token: str = opt("", help="secret nodes must present to join", env="PARALLAX_JOIN_TOKEN")
    heartbeat_s: float = opt(1.0, help="heartbeat period asked of nodes", unit="s")
    dead_after_s: float = opt(4.0, help="a node silent this long is dead", unit="s")
    min_stages: int = opt(
        1, help="split the model over at least this many nodes when they can hold it"
    )
    solver: str = opt("auto", help="layer allocation solver", choices=("auto", "exact", "fast"))
    allocation_policy: str = opt(
        "ours",
        help="who places layers: our scheduler, or a baseline for comparison: parallax "
        "(GradientHQ Parallax: k disjoint pipelines maximising k^2/stages, weights in 65%% "
        "of memory) or petals (each node in join order takes the least-served span that "
        "fits); the gateway routes with our router under every policy",
        choices=("ours", "parallax", "petals"),
    )
    advertise_host: str = opt(
        "",
        help="host nodes dial to reach the coordinator's gRPC service (deliveries); "
        "default --grpc-host. Set it when nodes reach this machine by another address "
        "(a port forward, a proxy)",
    )
    stall_s: float = opt(60.0, help="a request with no first token this long is replayed", unit="s")
    token_stall_s: float = opt(
        20.0, help="a request with no next token this long is replayed", unit="s"
    )
    wire_dtype: str = opt(
        "",
        help="activation dtype on the wire; default the model's",
        choices=("", "bfloat16", "float16", "float32"),
    )
    max_request_mb: float = opt(
        8.0, help="largest HTTP request body accepted (413 above it)", unit="MiB"
    )
    max_model_len: int = opt(
        0,
        help="longest sequence (prompt + completion) a request may reach; the planner "
        "reserves this much KV per layer on each node and the gateway refuses longer "
        "requests (400 context_length_exceeded); 0 = the model's maximum positions",
        unit="tokens",
    )
    served_model_name: str = opt(
        "", help="model name clients see in /v1/models and send as `model`; default --model's"
    )
    strict_params: bool = opt(
        False, help="answer 400 to unknown request fields instead of logging a warning"
    )
    share_mbps: float = opt(
        1000.0,
        help="bandwidth the coordinator spends serving weight chunks of its model file to "
        "nodes that join without the model; 0 = serve none (it still hands out the "
        "manifest, and nodes fetch from the nodes that hold layers)",
        unit="Mbit/s",
    )
    tls_cert: str = tls_cert_opt()
    tls_key: str = tls_key_opt()
    tls_ca: str = tls_ca_opt()
    https_cert: str = opt(
        "",
        help="PEM certificate (chain) to serve the API and dashboard over HTTPS; it must "
        "name the host clients use",
        env="PARALLAX_HTTPS_CERT",
    )
    https_key: str = opt("", help="PEM private key of --https-cert", env="PARALLAX_HTTPS_KEY")
    state_dir: str = opt(
        "",
        help="directory where the coordinator keeps its nodes (ids, identities, "
        "assignments) so that after a restart they serve again without reloading; "
        "'' = keep nothing",
        env="PARALLAX_STATE_DIR",
    )
    max_queue: int = opt(
        256,
        help="requests that may wait for room on the cluster; past it, HTTP 429 with Retry-After",
        unit="requests",
    )
    max_queue_s: float = opt(
        30.0, help="longest a request waits for room before HTTP 429", unit="s"
    )
    max_connections: int = opt(
        2048,
        help="open HTTP connections the gateway serves at once; past it, HTTP 503 at once",
        unit="connections",
    )
    verify_rate: float = opt(
        0.05,
        help="spot checks: share of requests after which the coordinator sends a greedy "
        "request of its own down two chains with no node in common and compares the "
        "tokens; a node found lying is quarantined; 0 = only idle checks",
        unit="fraction",
    )
    verify_idle_s: float = opt(
        60.0, help="run a spot check when none ran this long; 0 = never", unit="s"
    )
    verify_tokens: int = opt(
        8, help="tokens each spot-check chain generates and compares", unit="tokens"
    )
    verify_prompts: str = opt(
        "",
        help="file of spot-check prompts, one per line, kept private to this cluster (nodes "
        "cannot learn them from the source); empty = built-in varied prompts",
    )
    verify_tolerance: float = opt(
        0.5,
        help="where two chains pick different tokens, a log-probability gap at most this "
        "is a rounding tie, not a lie (docs/SECURITY.md: per dtype)",
        unit="nats",
    )

    def validate(self) -> None:
        self.require(0 <= self.verify_rate <= 1, "verify_rate", "must be in [0, 1]")
        self.require(self.verify_idle_s >= 0, "verify_idle_s", "must be >= 0 (0 = never)")
        self.require(1 <= self.verify_tokens <= 64, "verify_tokens", "must be in [1, 64]")
        self.require(self.verify_tolerance >= 0, "verify_tolerance", "must be >= 0")
        self.require(self.share_mbps >= 0, "share_mbps", "must be >= 0 (0 = serve none)")
        self.require(
            is_loopback(self.http_host) or bool(self.api_key) or self.insecure_open,
            "host",
            "serving beyond this machine needs API keys: add --api-key KEY (or set "
            "PARALLAX_API_KEYS), or pass --insecure-open to serve the API and cluster data open",
        )
        self.require(self.min_stages >= 1, "min_stages", "must be >= 1")
        self.require(self.max_model_len >= 0, "max_model_len", "must be >= 0 (0 = the model's)")
        self.require(self.max_queue >= 0, "max_queue", "must be >= 0")
        self.require(self.max_queue_s > 0, "max_queue_s", "must be positive")
        self.require(
            self.max_connections > self.max_queue, "max_connections", "must exceed --max-queue"
        )
        for name in ("grpc_port", "port"):
            self.require(0 <= getattr(self, name) < 65536, name, "must be 0..65535")
        self.require(
            self.dead_after_s > self.heartbeat_s, "dead_after_s", "must exceed --heartbeat-s"
        )
        for name in ("stall_s", "token_stall_s", "max_request_mb"):
            self.require(getattr(self, name) > 0, name, "must be positive")
        self.require(
            bool(self.https_cert) == bool(self.https_key),
            "https_cert" if self.https_key else "https_key",
            "HTTPS needs --https-cert and --https-key together",
        )

    @property
    def http_host(self) -> str:
        return self.host or "127.0.0.1"


def is_loopback(host: str) -> bool:
    """Whether `host` is reachable from this machine only (`localhost`, 127/8, ::1)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a name: it may resolve to anything

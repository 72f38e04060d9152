"""Frozen records of the node registry: what a node offers, reports and is assigned.

Validated at construction, so a malformed Join or Heartbeat fails before it can
reach the registry's state.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import StrEnum

from parallax.errors import InvalidArgument, ParallaxError
from parallax.models.footprint import Footprint
from parallax.types import LayerRange, NodeId, is_host_port

MAX_NAME_CHARS = 64
DEVICES = ("cpu", "cuda", "mps")


class NodeState(StrEnum):
    JOINING = "joining"  # joined, no heartbeat yet
    LOADING = "loading"  # loading the weights of its assignment
    READY = "ready"  # serving its loaded range
    STANDBY = "standby"  # holds no layers
    LEAVING = "leaving"  # draining before it goes
    DEAD = "dead"  # silent for longer than dead_after_s


# States a node may report about itself; the registry sets joining and dead.
REPORTABLE = frozenset({NodeState.LOADING, NodeState.READY, NodeState.STANDBY, NodeState.LEAVING})


@dataclass(frozen=True)
class HardwareInfo:
    """What a node offers, measured on the node (see node/hardware.py)."""

    device: str
    flops: float  # dense matmul FLOP/s
    mem_bandwidth: float  # bytes/s
    memory_bytes: float  # offered for weights plus KV
    device_name: str = ""
    region: str = "default"
    # Its bytes of the model in its dtype and weight format, checked at join (None: an
    # older node, planned with the cluster-wide dtype).
    footprint: Footprint | None = None

    def __post_init__(self) -> None:
        if self.device not in DEVICES:
            raise InvalidArgument(
                f"hardware.device={self.device!r} is not one of {', '.join(DEVICES)}"
            )
        for name in ("flops", "mem_bandwidth", "memory_bytes"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise InvalidArgument(
                    f"hardware.{name}={value!r} must be a positive finite number; "
                    "the node measures it at start (node/hardware.py) or takes --memory-gb"
                )


@dataclass(frozen=True)
class NodeReport:
    """The latest NodeStatus a node sent in a heartbeat."""

    state: NodeState = NodeState.JOINING
    loaded: LayerRange | None = None  # the range whose weights the node has loaded
    running_requests: int = 0
    kv_free_tokens: int = 0
    kv_total_tokens: int = 0
    layer_latency_ms: float = 0.0
    tokens_per_s: float = 0.0
    max_running: int = 0  # most requests it runs at once; 0 = unknown
    kv_block_tokens: int = 0  # tokens per KV block; 0 = unknown

    def __post_init__(self) -> None:
        if self.state not in REPORTABLE and self.state is not NodeState.JOINING:
            raise InvalidArgument(
                f"node status state={self.state!r}: a node reports one of "
                f"{', '.join(sorted(REPORTABLE))}"
            )
        counts = (
            "running_requests",
            "kv_free_tokens",
            "kv_total_tokens",
            "max_running",
            "kv_block_tokens",
        )
        rates = ("layer_latency_ms", "tokens_per_s")
        for name in counts + rates:
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise InvalidArgument(f"node status {name}={value!r} must be >= 0")


@dataclass(frozen=True)
class Assignment:
    """The layers a node must serve; `range is None` means standby. `epoch` counts changes."""

    model: str
    range: LayerRange | None
    epoch: int

    @property
    def standby(self) -> bool:
        return self.range is None


@dataclass(frozen=True)
class Decision:
    """One line of the scheduler's log, shown on the dashboard."""

    time: float
    kind: str  # "join" | "leave" | "drain" | "dead" | "allocate" | "not_covered" | "restore"
    message: str


@dataclass(frozen=True)
class NodeRecord:
    node_id: NodeId
    name: str
    address: str
    hardware: HardwareInfo
    assignment: Assignment
    joined_at: float
    last_heartbeat: float
    state: NodeState = NodeState.JOINING
    report: NodeReport = field(default_factory=NodeReport)
    rtt_ms: tuple[tuple[NodeId, float], ...] = ()  # to peers, as last measured
    metrics_address: str = ""  # HOST:PORT of its Prometheus /metrics ("" if none)
    # Decode capacity, layer-tokens/s, from the performance model of its hardware and
    # reported layer latency: kept here, computed when those change, not per state read.
    decode_speed: float = 0.0
    # Its identity: the secret its JoinReply carried (b"": none, so it can prove nothing)
    # and the counter of the last call it proved; never shown anywhere.
    secret: bytes = field(default=b"", repr=False, compare=False)
    counter: int = field(default=0, repr=False, compare=False)
    # Why spot checks found it lying ("" = never): it gets no traffic and no layers
    # (coordinator/verify).
    quarantined: str = ""
    # Measured over modelled per-layer step time, once it ran far slower than the
    # hardware it claimed at join (0.0: not flagged); the planner already uses the
    # measured time, this tells people (dashboard, `parallax status`).
    slower_than_claimed: float = 0.0

    @property
    def alive(self) -> bool:
        return self.state not in (NodeState.DEAD, NodeState.LEAVING)

    @property
    def serving(self) -> bool:
        """Ready, and what it loaded is exactly what it is assigned: routable."""
        return (
            not self.quarantined
            and self.state is NodeState.READY
            and self.assignment.range is not None
            and self.report.loaded == self.assignment.range
        )


class AddressTaken(ParallaxError):
    """A join names the address of a live node without proving it is that node."""


class Proof(StrEnum):
    """The registry's verdict on a call a node signed."""

    OK = "ok"
    UNKNOWN = "unknown"  # no such node (the coordinator forgot it): it must re-join
    DENIED = "denied"  # wrong secret, or a counter already used: not that node


def check_address(address: str) -> str:
    if not is_host_port(address):
        raise InvalidArgument(
            f"node address {address!r} is not HOST:PORT; set --advertise-host to a host "
            "other nodes can reach"
        )
    return address


def check_name(name: str) -> str:
    if len(name) > MAX_NAME_CHARS or not name.isprintable():
        raise InvalidArgument(
            f"node name {name[:MAX_NAME_CHARS]!r}... must be printable and at most "
            f"{MAX_NAME_CHARS} characters; choose a shorter --name"
        )
    return name

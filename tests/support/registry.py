"""A tiny model and small nodes for registry and control-plane tests, and checks on them."""

from __future__ import annotations

from coordinator.registry import Registry
from coordinator.registry_types import HardwareInfo, NodeReport, NodeState
from coordinator.scheduler import AllocateOptions
from coordinator.scheduler.memory import MemoryModel
from parallax.models.spec import ModelSpec

SPEC = ModelSpec(
    family="llama",
    num_layers=8,
    hidden_size=64,
    intermediate_size=128,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=16,
    vocab_size=100,
)
# The fast solver keeps these tests quick and independent of the exact solver's time limit.
OPTS = AllocateOptions(context_tokens=64, solver="fast")
MEM = MemoryModel.of(SPEC, OPTS)
WHOLE = MEM.total_need()  # bytes one node needs to hold the whole model


def hw(memory: float = 4 * WHOLE) -> HardwareInfo:
    return HardwareInfo(device="cpu", flops=1e11, mem_bandwidth=2e10, memory_bytes=memory)


def registry() -> Registry:
    return Registry("tiny", SPEC, dead_after_s=4.0, options=OPTS)


def ready(reg: Registry, node_id, now: float) -> None:
    """Heartbeat as a node that loaded exactly what it was assigned."""
    a = reg.get(node_id).assignment
    reg.heartbeat(node_id, NodeReport(state=NodeState.READY, loaded=a.range), {}, now)


def covers(ranges) -> bool:
    ends = sorted((r.start, r.end) for r in ranges if r is not None)
    at = 0
    for s, e in ends:
        if s > at:
            return False
        at = max(at, e)
    return at == SPEC.num_layers


HALF = 0.6 * WHOLE  # no node of this size holds the model alone; any two do

"""Memory accounting of a node's layer range: weights, embedding/head, KV reserve.

Every method that takes a node's `memory` keeps `reserve_fraction` of it back first
(activations, the runtime, allocator slack): a range "fits" when its weights and one
full context of KV fit in the rest. Callers pass the node's whole memory.

The model is built from the cluster-wide `AllocateOptions` (one dtype for all); a node
that reported its own bytes (its dtype and weight format, `NodeCapacity.footprint`) is
measured with `at(node)`: a bfloat16 node fits twice the layers of a float32 one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

from coordinator.scheduler.options import AllocateOptions
from coordinator.scheduler.types import NodeCapacity
from parallax.models.footprint import Footprint
from parallax.models.spec import ModelSpec
from parallax.types import LayerRange


@dataclass(frozen=True)
class MemoryModel:
    """Bytes a range costs. `layer_bytes` already includes the KV reserve of one layer."""

    num_layers: int
    weight_bytes: float  # one layer's weights
    kv_bytes_per_token: float  # one layer, one token
    reserve_tokens: int
    embedding_bytes: float
    head_bytes: float
    reserve_fraction: float = 0.0
    # Per-footprint models `at` has built: solvers ask per node in their inner loops.
    _by_footprint: dict[Footprint, MemoryModel] = field(
        default_factory=dict, compare=False, hash=False, repr=False
    )

    @classmethod
    def of(cls, model: ModelSpec, options: AllocateOptions) -> MemoryModel:
        return cls(
            num_layers=model.num_layers,
            weight_bytes=float(model.bytes_per_layer(options.dtype_bytes)),
            kv_bytes_per_token=float(model.kv_bytes_per_token_per_layer(options.kv_bytes)),
            reserve_tokens=options.reserve_tokens,
            embedding_bytes=float(model.embedding_bytes(options.dtype_bytes)),
            head_bytes=float(model.head_bytes(options.dtype_bytes)),
            reserve_fraction=options.memory_reserve,
        )

    def at(self, node: NodeCapacity) -> MemoryModel:
        """The model in the node's own bytes (dtype, weight format) when it reported
        them; this one otherwise. Layer count and reserves are the cluster's."""
        fp = node.footprint
        if fp is None:
            return self
        got = self._by_footprint.get(fp)
        if got is None:
            got = replace(
                self,
                weight_bytes=fp.weight_bytes,
                kv_bytes_per_token=fp.kv_bytes_per_token,
                embedding_bytes=fp.embedding_bytes,
                head_bytes=fp.head_bytes,
                _by_footprint={},
            )
            self._by_footprint[fp] = got
        return got

    def usable_equivalent(self, node: NodeCapacity) -> float:
        """The node's usable memory in this model's bytes: the same share of a whole
        copy. Sums of it over nodes of mixed formats compare with `total_need()`."""
        own = self.at(node)
        return own.usable(node.memory_bytes) * self.total_need() / own.total_need()

    def usable(self, memory: float) -> float:
        """Bytes of `memory` the plan may fill with weights and KV."""
        return memory * (1.0 - self.reserve_fraction)

    @property
    def layer_bytes(self) -> float:
        return self.weight_bytes + self.kv_bytes_per_token * self.reserve_tokens

    def extras(self, first: bool, last: bool) -> float:
        # A tied head still needs its own copy on a node that does not hold layer 0,
        # and we count both when one node holds both ends: conservative, never over.
        return (self.embedding_bytes if first else 0.0) + (self.head_bytes if last else 0.0)

    def need(self, r: LayerRange) -> float:
        return len(r) * self.layer_bytes + self.extras(r.start == 0, r.end == self.num_layers)

    def fits(self, memory: float, r: LayerRange) -> bool:
        return self.need(r) <= self.usable(memory)

    def max_layers(self, memory: float, first: bool = False, last: bool = False) -> int:
        """Most layers that fit in `memory` with the given ends, capped at the model size."""
        room = self.usable(memory) - self.extras(first, last)
        if room < self.layer_bytes:
            return 0
        return min(self.num_layers, math.floor(room / self.layer_bytes + 1e-9))

    def total_need(self) -> float:
        """Usable bytes one whole copy needs (compare with `usable`, not raw memory)."""
        return self.need(LayerRange(0, self.num_layers))

    def weights(self, r: LayerRange) -> float:
        """Weight bytes of a range alone: its layers plus the embedding and head it holds."""
        return len(r) * self.weight_bytes + self.extras(r.start == 0, r.end == self.num_layers)

    def kv_room(self, memory: float, r: LayerRange) -> float:
        """Usable bytes left for KV beside the range's weights."""
        return self.usable(memory) - self.weights(r)

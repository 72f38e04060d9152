"""Small value types shared by every side: node ids and half-open layer ranges."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NewType

from parallax.errors import InvalidArgument

NodeId = NewType("NodeId", str)


@dataclass(frozen=True, slots=True, order=True)
class LayerRange:
    """Transformer layers `[start, end)`: `start` is held, `end` is not."""

    start: int
    end: int

    def __post_init__(self) -> None:
        if not (isinstance(self.start, int) and isinstance(self.end, int)):
            raise InvalidArgument(f"layer range bounds must be integers, got {self!r}")
        if self.start < 0 or self.end <= self.start:
            raise InvalidArgument(
                f"layer range [{self.start}, {self.end}) is empty or negative; "
                "a range is half-open and needs 0 <= start < end"
            )

    def __len__(self) -> int:
        return self.end - self.start

    def __contains__(self, layer: object) -> bool:
        return isinstance(layer, int) and self.start <= layer < self.end

    def __str__(self) -> str:
        return f"[{self.start},{self.end})"

    def overlaps(self, other: LayerRange) -> bool:
        return self.start < other.end and other.start < self.end

    def covers(self, other: LayerRange) -> bool:
        return self.start <= other.start and other.end <= self.end

    def intersect(self, other: LayerRange) -> LayerRange | None:
        lo, hi = max(self.start, other.start), min(self.end, other.end)
        return LayerRange(lo, hi) if lo < hi else None

    def is_first(self) -> bool:
        return self.start == 0

    def is_last(self, num_layers: int) -> bool:
        return self.end == num_layers


def is_host_port(address: str) -> bool:
    """`HOST:PORT` with a port in 1..65535: how nodes and gateways name each other."""
    host, sep, port = address.rpartition(":")
    return bool(sep and host and port.isdigit() and 0 < int(port) < 65536)

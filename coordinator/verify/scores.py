"""Each node's record of spot checks: exponentially weighted agreements and blames.

Every observation of a node first multiplies both of its weights by `decay`, then
adds 1 to the one it is: an agreement (its chain matched, or a majority sided with
it) or a blame (it was the minority against two other holders of the same layers).
A node whose blame weight reaches `threshold` is to be quarantined: with decay 0.95
and threshold 1.5, two blames within about a dozen of its checks (three over a longer
span). One blame never suffices: a single fluke (a node restarted mid-check with
other weights, a bit flip) must not cost an honest node its place.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from parallax.errors import InvalidArgument
from parallax.types import NodeId


@dataclass(frozen=True)
class NodeScore:
    agree: float = 0.0  # weighted agreements
    blame: float = 0.0  # weighted blames
    checks: int = 0  # observations, all time
    blames: int = 0  # blames, all time
    unverified: str = ""  # why its last disagreement could not be settled ("" none)
    last_blame: str = ""  # why it was last blamed

    def to_json(self) -> dict[str, Any]:
        return {
            "agree": round(self.agree, 3),
            "blame": round(self.blame, 3),
            "checks": self.checks,
            "blames": self.blames,
            "unverified": self.unverified,
            "last_blame": self.last_blame,
        }


class Ledger:
    def __init__(self, decay: float = 0.95, threshold: float = 1.5) -> None:
        if not 0 < decay <= 1:
            raise InvalidArgument(f"score decay {decay!r} must be in (0, 1]")
        if threshold <= 1:
            raise InvalidArgument(f"quarantine threshold {threshold!r} must exceed 1 blame")
        self.decay = decay
        self.threshold = threshold
        self._scores: dict[NodeId, NodeScore] = {}

    def get(self, node: NodeId) -> NodeScore:
        return self._scores.get(node, NodeScore())

    def _observe(self, node: NodeId) -> NodeScore:
        s = self.get(node)
        return replace(
            s, agree=s.agree * self.decay, blame=s.blame * self.decay, checks=s.checks + 1
        )

    def agree(self, node: NodeId) -> None:
        s = self._observe(node)
        self._scores[node] = replace(s, agree=s.agree + 1, unverified="")

    def blame(self, node: NodeId, why: str) -> bool:
        """Record a blame; True when the node's blame weight reached the threshold."""
        s = self._observe(node)
        s = self._scores[node] = replace(s, blame=s.blame + 1, blames=s.blames + 1, last_blame=why)
        return s.blame >= self.threshold

    def unverified(self, node: NodeId, why: str) -> None:
        self._scores[node] = replace(self.get(node), unverified=why)

    def forget(self, keep: set[NodeId]) -> None:
        """Drop nodes no longer in the cluster (ids are not reused)."""
        for node in [n for n in self._scores if n not in keep]:
            del self._scores[node]

    def to_json(self) -> dict[str, Any]:
        return {n: s.to_json() for n, s in sorted(self._scores.items())}

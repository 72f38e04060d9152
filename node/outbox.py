"""What one node step sends: messages grouped by the peer they go to."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from parallax.rpc import parallax_pb2 as pb


@dataclass
class Outbox:
    # One message per (next hop, layer group): a step may run several layer groups
    # whose hidden states go to the same next hop (requests cut at different layers).
    forwards: dict[str, list[pb.ForwardRequest]] = field(default_factory=lambda: defaultdict(list))
    pushes: dict[str, pb.TokenBatch] = field(default_factory=lambda: defaultdict(pb.TokenBatch))
    delivers: dict[str, pb.TokenBatch] = field(default_factory=lambda: defaultdict(pb.TokenBatch))
    releases: dict[str, pb.ReleaseRequest] = field(
        default_factory=lambda: defaultdict(pb.ReleaseRequest)
    )
    # KV-only releases: requests this first hop preempted, whose KV the others can free.
    frees: dict[str, pb.ReleaseRequest] = field(
        default_factory=lambda: defaultdict(pb.ReleaseRequest)
    )
    ran: int = 0  # chunks the step took up (run or failed): 0 = it could do nothing

    def merge(self, other: Outbox) -> None:
        """Add `other`'s messages to this outbox (the step's to the inbox's)."""
        for addr, msgs in other.forwards.items():
            self.forwards[addr].extend(msgs)
        for addr, batch in other.pushes.items():
            self.pushes[addr].events.extend(batch.events)
        for addr, batch in other.delivers.items():
            self.delivers[addr].events.extend(batch.events)
        for addr, rel in other.releases.items():
            self.releases[addr].request_ids.extend(rel.request_ids)
            self.releases[addr].grant_signatures.update(rel.grant_signatures)
            self.releases[addr].reason = rel.reason
        for addr, rel in other.frees.items():
            self.frees[addr].kv_only.update(rel.kv_only)
            self.frees[addr].grant_signatures.update(rel.grant_signatures)


def split_rows(items: list, cap: int) -> list[list]:
    """Consecutive runs of (chunk, rows) items of at most `cap` rows each, for one Forward
    each (a chunk is never cut)."""
    runs: list[list] = [[]]
    rows = 0
    for item in items:
        if runs[-1] and rows + item[0].n > cap:
            runs.append([])
            rows = 0
        runs[-1].append(item)
        rows += item[0].n
    return runs

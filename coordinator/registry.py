"""The node registry: who is in the cluster, what each node holds, and why.

A plain state machine with no I/O and no clock of its own: every method that
depends on time takes `now` (seconds, any origin, the same for every call).

Thread-safe, so that membership changes can run off the event loop: an exact
allocation may take seconds, and heartbeats, routing and status reads must not
wait for it. Two locks: `_membership` serializes join/leave/expire (held while
the allocator runs), `_lock` guards the records and is only ever held briefly.

Membership changes (join, leave, death) re-run phase-1 allocation with the
previous allocation as a hint; a node whose range changes gets its epoch bumped,
which its next heartbeat reply carries, so it reloads.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

from coordinator.liveness import Listening, silent_nodes
from coordinator.registry_types import (
    AddressTaken,
    Assignment,
    Decision,
    HardwareInfo,
    NodeRecord,
    NodeReport,
    NodeState,
    Proof,
    check_address,
    check_name,
)
from coordinator.registry_views import (
    assignments_cover,
    calibrated,
    capacity_of,
    closest_peers,
    node_slug,
    range_text,
    routable_state,
)
from coordinator.scheduler import AllocateOptions, Allocation, ClusterState, NodeCapacity
from coordinator.scheduler.baselines import allocate_by, check_policy
from coordinator.scheduler.perf import PerfModel
from coordinator.snapshot import build_snapshot
from parallax.errors import NotCovered
from parallax.models.spec import ModelSpec
from parallax.types import NodeId

log = logging.getLogger(__name__)

MAX_DECISIONS = 200
MAX_PEERS = 16  # RTT probes per heartbeat stay bounded in big clusters


class Registry:
    def __init__(
        self,
        model_name: str,
        spec: ModelSpec,
        *,
        dead_after_s: float,
        options: AllocateOptions | None = None,
        forget_after_s: float = 300.0,
        state_max_age_s: float = 0.1,
        policy: str = "ours",  # or a baseline's (coordinator/scheduler/baselines.py)
        stall_after_s: float = math.inf,  # see coordinator/liveness.py
    ) -> None:
        self.model_name = model_name
        self.spec = spec
        self.dead_after_s = dead_after_s
        self.forget_after_s = forget_after_s
        self._listening = Listening(stall_after_s)
        self._cover_lost_at = -math.inf  # when a re-allocation last left layers to nobody
        self._replan = False  # a node's measured speed belies its claim: `expire` re-plans
        self.options = options or AllocateOptions()
        self.policy = check_policy(policy)
        self._perf = PerfModel.of(spec, self.options)
        self.allocation = Allocation(assignments={}, reason="no nodes yet")
        self._nodes: dict[NodeId, NodeRecord] = {}
        # `cluster_state()` is read on every request and costs O(nodes) to build: it is
        # kept until membership, an assignment or a node's routability changes, and
        # for load figures (heartbeats) at most `state_max_age_s` seconds.
        self.state_max_age_s = state_max_age_s
        self._version = 0  # bumped by every change that a cached state must not miss
        self._state_cache: tuple[ClusterState, int, float] | None = None
        self._decisions: deque[Decision] = deque(maxlen=MAX_DECISIONS)
        self._membership = threading.Lock()
        self._lock = threading.RLock()

    # ---- membership ----
    def join(
        self,
        name: str,
        address: str,
        hardware: HardwareInfo,
        now: float,
        metrics_address: str = "",  # HOST:PORT of its Prometheus /metrics, "" if none
        *,
        secret: bytes = b"",  # the node's identity (JoinReply.node_secret)
        may_replace: Callable[[NodeRecord], bool] = lambda old: False,
    ) -> tuple[NodeId, Assignment]:
        """Add a node. A live node at the same address is replaced only when
        `may_replace(its record)` (the joiner proved it is that node); otherwise
        AddressTaken, and the record stays. A dead one's address is free."""
        check_address(address)
        if metrics_address:
            check_address(metrics_address)
        name = check_name(name) or address
        with self._membership:
            with self._lock:
                same = [r for r in self._nodes.values() if r.address == address]
                for old in same:
                    if old.state is not NodeState.DEAD and not may_replace(old):
                        raise AddressTaken(
                            f"{address} is the address of live node {old.node_id}; only that "
                            "node may join from it again. If it is this node before a restart, "
                            f"the address is free once it is declared dead ({self.dead_after_s:g}"
                            " s of silence); otherwise choose another --port/--advertise-host"
                        )
                for old in same:
                    # Same address: the same node restarted (or the coordinator forgot it).
                    del self._nodes[old.node_id]
                    self._version += 1
                    self._decide(now, "leave", f"{old.node_id} replaced by a re-join")
                node_id = NodeId(f"{node_slug(name)}-{secrets.token_hex(3)}")
                self._version += 1
                self._nodes[node_id] = NodeRecord(
                    node_id=node_id,
                    name=name,
                    address=address,
                    hardware=hardware,
                    assignment=Assignment(self.model_name, None, 0),
                    joined_at=now,
                    last_heartbeat=now,
                    metrics_address=metrics_address,
                    secret=secret,
                    # A re-join from its address does not lift a quarantine.
                    quarantined=next((o.quarantined for o in same if o.quarantined), ""),
                )
                rec = self._nodes[node_id]
                self._nodes[node_id] = dataclasses.replace(
                    rec, decode_speed=self._perf.speed(capacity_of(rec))
                )
                self._decide(
                    now,
                    "join",
                    f"{node_id} joined from {address} offering "
                    f"{hardware.memory_bytes / 2**30:.2f} GiB, "
                    f"{hardware.flops / 1e9:.0f} GFLOP/s on {hardware.device}",
                )
            self._reallocate(now)
            with self._lock:
                return node_id, self._nodes[node_id].assignment

    def restore(self, records: list[NodeRecord], now: float) -> None:
        """Take back the nodes a previous coordinator saved (coordinator/state_file.py),
        with their assignments as the current allocation: they serve again once their
        heartbeats say they still hold those ranges, and nothing moves."""
        with self._membership, self._lock:
            for rec in records:
                self._nodes[rec.node_id] = dataclasses.replace(
                    rec, decode_speed=self._perf.speed(capacity_of(rec))
                )
            assignments = {r.node_id: r.assignment.range for r in records}
            self.allocation = Allocation(
                assignments=assignments, reason="restored from the state file"
            )
            self._version += 1
            self._decide(now, "restore", f"{len(records)} nodes restored from the state file")

    def records(self) -> tuple[int, list[NodeRecord]]:
        """(version, every node record): what a state file saves."""
        with self._lock:
            return self._version, list(self._nodes.values())

    def authenticate(self, node_id: NodeId, counter: int, check: Callable[[bytes], bool]) -> Proof:
        """Whether a call is the node's own: `check(its secret)` holds and `counter` is
        above every counter it used before (so no call can be replayed)."""
        with self._lock:
            rec = self._nodes.get(node_id)
            if rec is None:
                return Proof.UNKNOWN
            if not rec.secret or counter <= rec.counter or not check(rec.secret):
                return Proof.DENIED
            self._nodes[node_id] = dataclasses.replace(rec, counter=counter)
            return Proof.OK

    def heartbeat(
        self, node_id: NodeId, report: NodeReport, rtts: Mapping[NodeId, float], now: float
    ) -> Assignment | None:
        """The node's assignment, or None if unknown or declared dead: it must re-join.
        A report of LEAVING (a drain) re-allocates: call it off the event loop."""
        if report.state is NodeState.LEAVING:
            # Under the membership lock before the node stops counting as alive, so
            # `recovering()` holds until others are assigned its layers.
            with self._membership:
                return self._beat(node_id, report, rtts, now)
        return self._beat(node_id, report, rtts, now)

    def _beat(
        self, node_id: NodeId, report: NodeReport, rtts: Mapping[NodeId, float], now: float
    ) -> Assignment | None:
        with self._lock:
            rec = self._nodes.get(node_id)
            if rec is None or rec.state is NodeState.DEAD:
                return None
            known = tuple(sorted((p, float(ms)) for p, ms in rtts.items() if p in self._nodes))
            new = self._nodes[node_id] = dataclasses.replace(
                rec,
                last_heartbeat=now,
                state=report.state if report.state is not NodeState.JOINING else rec.state,
                report=report,
                rtt_ms=known,
            )
            if new.report.layer_latency_ms != rec.report.layer_latency_ms:
                new, flag = calibrated(self._perf, rec, new)
                self._nodes[node_id] = new
                if flag:  # planned on a claim far from the truth: the next round re-plans
                    self._decide(now, "flag", flag)
                    self._replan = True
            if new.serving != rec.serving:  # routable or not: the cached state must go
                self._version += 1
            draining = new.state is NodeState.LEAVING and rec.state is not NodeState.LEAVING
        if draining:
            # It takes no new requests while its own run out: others take over its layers
            # now, so new requests find a chain meanwhile (it keeps its assignment).
            with self._lock:
                self._decide(now, "drain", f"{node_id} is draining; it held {range_text(rec)}")
            self._reallocate(now)
        return rec.assignment

    def leave(self, node_id: NodeId, now: float) -> bool:
        with self._membership:
            with self._lock:
                rec = self._nodes.pop(node_id, None)
                if rec is None:
                    return False
                self._version += 1
                self._decide(now, "leave", f"{node_id} left; it held {range_text(rec)}")
            self._reallocate(now)
            return True

    def expire(self, now: float) -> list[NodeId]:
        """Mark nodes silent for `dead_after_s` (while this coordinator listened) dead,
        re-allocate; forget long-dead ones. Called once per period."""
        with self._membership:
            with self._lock:
                heard_since = self._listening.round(now)
                died = silent_nodes(self._nodes.values(), now, self.dead_after_s, heard_since)
                for node_id in died:
                    rec = self._nodes[node_id]
                    self._nodes[node_id] = dataclasses.replace(rec, state=NodeState.DEAD)
                    self._version += 1
                    silence = now - max(rec.last_heartbeat, heard_since)
                    self._decide(
                        now,
                        "dead",
                        f"{node_id} silent for {silence:.1f} s "
                        f"(limit {self.dead_after_s:g} s); it held {range_text(rec)}",
                    )
                for rec in list(self._nodes.values()):
                    if (
                        rec.state is NodeState.DEAD
                        and now - rec.last_heartbeat > self.forget_after_s
                    ):
                        del self._nodes[rec.node_id]
            if died or self._replan:
                self._replan = False
                self._reallocate(now)
            return died

    def quarantine(self, node_id: NodeId, reason: str, now: float) -> bool:
        """Take a node found lying (coordinator/verify) off every route and out of the
        allocation: it is told to stand by and its layers are re-covered."""
        with self._membership:
            with self._lock:
                rec = self._nodes.get(node_id)
                if rec is None or rec.quarantined:
                    return False
                standby = Assignment(self.model_name, None, rec.assignment.epoch + 1)
                self._nodes[node_id] = dataclasses.replace(
                    rec, quarantined=reason, assignment=standby
                )
                self._version += 1
                self._decide(now, "quarantine", f"{node_id} quarantined: {reason}")
            self._reallocate(now)
            return True

    # ---- views ----
    def recovering(self, now: float) -> bool:
        """Wait rather than fail: assignments cover every layer (some may be loading),
        a membership change (a death's seconds of re-solving) is being applied, or the
        cover was lost under `dead_after_s` ago (nodes taken for dead re-join at once)."""
        if self._membership.locked() or now - self._cover_lost_at < self.dead_after_s:
            return True
        return assignments_cover(self.nodes, self.spec.num_layers)

    def node_secret(self, node_id: NodeId) -> bytes | None:
        """A live node's secret (the gateway checks what it delivers); None if unknown."""
        with self._lock:
            rec = self._nodes.get(node_id)
        return rec.secret if rec is not None and rec.state is not NodeState.DEAD else None

    def get(self, node_id: NodeId) -> NodeRecord | None:
        with self._lock:
            return self._nodes.get(node_id)

    @property
    def nodes(self) -> tuple[NodeRecord, ...]:
        with self._lock:
            return tuple(self._nodes.values())

    @property
    def decisions(self) -> tuple[Decision, ...]:
        with self._lock:
            return tuple(self._decisions)

    def node_capacities(self) -> list[NodeCapacity]:
        with self._lock:
            records = list(self._nodes.values())
        return [capacity_of(r) for r in records if r.alive and not r.quarantined]

    def cluster_state(self) -> ClusterState:
        """Routable nodes only: ready, with the assigned range loaded. Load figures may
        be up to `state_max_age_s` old; anything else is current."""
        with self._lock:
            version, cached = self._version, self._state_cache
        now = time.monotonic()
        if cached is not None and cached[1] == version and now - cached[2] < self.state_max_age_s:
            return cached[0]
        # Built from records read after `version`: newer than it, never older.
        state = routable_state(self.nodes, self.spec.num_layers)
        with self._lock:
            self._state_cache = (state, version, now)
        return state

    def peers_of(self, node_id: NodeId) -> list[NodeRecord]:
        """Other live nodes this one should measure RTT to, closest in the pipeline first."""
        return closest_peers(self.nodes, node_id, MAX_PEERS)

    def status_snapshot(self, now: float) -> dict[str, Any]:
        with self._lock:
            nodes, allocation, decisions = self.nodes, self.allocation, self.decisions
        return build_snapshot(
            model_name=self.model_name,
            num_layers=self.spec.num_layers,
            nodes=nodes,
            allocation=allocation,
            decisions=decisions,
            now=now,
        )

    # ---- internals ----
    def _decide(self, now: float, kind: str, message: str) -> None:
        self._decisions.append(Decision(time=now, kind=kind, message=message))
        log.info("scheduler decision", extra={"kind": kind, "decision": message})

    def _reallocate(self, now: float) -> None:
        """Re-run allocation; the caller holds `_membership`, so membership cannot change."""
        capacities = self.node_capacities()
        was_covered = self.allocation.covers(self.spec.num_layers)
        if not capacities:
            with self._lock:
                self.allocation = Allocation(assignments={}, reason="no live nodes")
            if was_covered:
                self._cover_lost_at = now
            return
        options = dataclasses.replace(self.options, previous=self.allocation)
        kind = "allocate"
        try:
            alloc = allocate_by(self.policy, capacities, self.spec, options)  # no `_lock`: slow
        except NotCovered as e:
            # Keep what survivors hold (they need not reload when help arrives);
            # newcomers stand by until the cluster can hold the whole model.
            kept = {c.node_id: c.current for c in capacities}
            alloc = Allocation(assignments=kept, reason=f"waiting for more nodes: {e}")
            kind = "not_covered"
        if alloc.covers(self.spec.num_layers):
            self._cover_lost_at = -math.inf
        elif was_covered:
            self._cover_lost_at = now
        with self._lock:
            self._decide(now, kind, alloc.reason)
            self.allocation = alloc
            for c in capacities:
                rec = self._nodes[c.node_id]
                new = alloc.assignments.get(c.node_id)
                if new != rec.assignment.range:
                    assignment = Assignment(self.model_name, new, rec.assignment.epoch + 1)
                    self._nodes[c.node_id] = dataclasses.replace(rec, assignment=assignment)
                    self._version += 1

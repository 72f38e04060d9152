"""Prometheus metrics of the coordinator, served at `GET /metrics`.

Request figures (counts, tokens, TTFT, per-token latency) are observed as
requests run. Cluster figures (node state, KV, load, per-hop RTT, coverage) are
read from the registry snapshot at scrape time, so they are never stale and
cost nothing between scrapes. Each `CoordinatorMetrics` owns its registry:
several coordinators may live in one test process.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from coordinator.gateway.admission import AdmissionStats
from coordinator.registry_types import Decision, NodeState

# Seconds. TTFT spans a prefill over several hops; a token is one decode step.
TTFT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
TOKEN_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5)
DURATION_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class _ClusterCollector(Collector):
    """Gauges read from the registry snapshot when Prometheus scrapes."""

    def __init__(self, snapshot: Callable[[], dict[str, Any]]) -> None:
        self._snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        snap = self._snapshot()
        state = GaugeMetricFamily(
            "parallax_node_state", "1 for the state each node is in", labels=["node", "state"]
        )
        per_node = {
            "running_requests": "requests running on the node",
            "kv_free_tokens": "free KV cache, in tokens",
            "kv_total_tokens": "KV cache size, in tokens",
            "tokens_per_s": "tokens the node produced per second, as it reports",
        }
        gauges = {
            k: GaugeMetricFamily(f"parallax_node_{k}", h, labels=["node"])
            for k, h in per_node.items()
        }
        layer_s = GaugeMetricFamily(
            "parallax_node_layer_latency_seconds", "step time per layer", labels=["node"]
        )
        beat = GaugeMetricFamily(
            "parallax_node_heartbeat_age_seconds", "since the last heartbeat", labels=["node"]
        )
        rtt = GaugeMetricFamily(
            "parallax_hop_rtt_seconds",
            "RTT between nodes, as measured by src",
            labels=["src", "dst"],
        )
        for n in snap["nodes"]:
            node = n["node_id"]
            for s in NodeState:
                state.add_metric([node, str(s)], 1.0 if n["state"] == s else 0.0)
            for k, g in gauges.items():
                g.add_metric([node], float(n["status"][k]))
            layer_s.add_metric([node], n["status"]["layer_latency_ms"] / 1000)
            beat.add_metric([node], n["heartbeat_age_s"])
            for peer, ms in sorted(n["rtt_ms"].items()):
                rtt.add_metric([node, peer], ms / 1000)
        gaps = snap["coverage"]["serving_gaps"]
        yield state
        yield from gauges.values()
        yield layer_s
        yield beat
        yield rtt
        yield GaugeMetricFamily(
            "parallax_uncovered_layers",
            "layers no serving node holds; requests fail while > 0",
            value=sum(b - a for a, b in gaps),
        )
        yield GaugeMetricFamily(
            "parallax_quarantined_nodes",
            "nodes spot checks found lying: no traffic, no layers",
            value=sum(1 for n in snap["nodes"] if n.get("quarantined")),
        )
        yield from _verify_metrics(snap.get("verification"))


def _verify_metrics(report: dict[str, Any] | None) -> Iterator[Metric]:
    """Spot checks (coordinator/verify): checks by outcome, chains run, quarantines."""
    if report is None:
        return
    checks = CounterMetricFamily(
        "parallax_verify_checks",
        "spot checks, by outcome (agree, disagree, undecided, failed: a chain gave no "
        "answer, skipped)",
        labels=["outcome"],
    )
    for outcome, n in sorted(report["checks"].items()):
        checks.add_metric([outcome], n)
    yield checks
    yield CounterMetricFamily("parallax_verify_runs", "chains run by spot checks", report["runs"])
    yield CounterMetricFamily(
        "parallax_verify_quarantines", "nodes quarantined by spot checks", report["quarantined"]
    )


class _AdmissionCollector(Collector):
    def __init__(self, stats: Callable[[], AdmissionStats]) -> None:
        self._stats = stats

    def collect(self) -> Iterator[Metric]:
        st = self._stats()
        yield GaugeMetricFamily(
            "parallax_queued_requests", "requests waiting for room on the cluster", st.queued
        )
        yield CounterMetricFamily(
            "parallax_admitted_requests", "requests admitted to the cluster", st.admitted
        )
        rejected = CounterMetricFamily(
            "parallax_rejected_requests",
            "requests refused with HTTP 429, by why (queue_full, timeout)",
            labels=["reason"],
        )
        for reason, n in sorted(st.rejected.items()):
            rejected.add_metric([reason], n)
        yield rejected


class _DeniedCollector(Collector):
    def __init__(self, denied: Callable[[], int]) -> None:
        self._denied = denied

    def collect(self) -> Iterator[Metric]:
        yield CounterMetricFamily(
            "parallax_denied_deliveries",
            "Deliver events refused with PERMISSION_DENIED: not MACed by the request's hop",
            self._denied(),
        )


class CoordinatorMetrics:
    def __init__(self, snapshot: Callable[[], dict[str, Any]] | None = None) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "parallax_requests", "generation requests, by how they ended", ["outcome"], registry=r
        )
        self.prompt_tokens = Counter(
            "parallax_prompt_tokens", "prompt tokens of started requests", registry=r
        )
        self.generated_tokens = Counter(
            "parallax_generated_tokens", "tokens generated and streamed back", registry=r
        )
        self.ttft = Histogram(
            "parallax_time_to_first_token_seconds",
            "from routing a request to its first token",
            buckets=TTFT_BUCKETS,
            registry=r,
        )
        self.inter_token = Histogram(
            "parallax_inter_token_seconds",
            "between consecutive tokens of a request",
            buckets=TOKEN_BUCKETS,
            registry=r,
        )
        self.duration = Histogram(
            "parallax_request_duration_seconds",
            "from routing to the last token",
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.active = Gauge("parallax_active_requests", "requests in flight", registry=r)
        self.decisions = Counter(
            "parallax_scheduler_decisions", "scheduler decisions, by kind", ["kind"], registry=r
        )
        self._last_decision: Decision | None = None
        self._decisions_lock = threading.Lock()
        if snapshot is not None:
            r.register(_ClusterCollector(snapshot))

    def watch_admission(self, stats: Callable[[], AdmissionStats]) -> None:
        """Export the gateway's wait queue and its refusals, read at each scrape."""
        self.registry.register(_AdmissionCollector(stats))

    def watch_denied(self, denied: Callable[[], int]) -> None:
        """Export the Deliver events the gateway refused (not from the request's hops)."""
        self.registry.register(_DeniedCollector(denied))

    def count_decisions(self, decisions: Sequence[Decision]) -> None:
        """Count decisions not seen before. `decisions` is the registry's log, oldest first.

        The log is bounded, so counting its length would go down; the last decision
        counted is found by identity and only later ones are added.
        """
        with self._decisions_lock:
            start = 0
            for i in range(len(decisions) - 1, -1, -1):
                if decisions[i] is self._last_decision:
                    start = i + 1
                    break
            for d in decisions[start:]:
                self.decisions.labels(kind=d.kind).inc()
            if decisions:
                self._last_decision = decisions[-1]

    def exposition(self) -> bytes:
        return generate_latest(self.registry)

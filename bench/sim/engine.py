"""Discrete-event simulation of a cluster serving requests over chains of nodes.

Each node runs continuous batching: when idle with work queued it takes everything
queued (up to its batch limit) as one step, whose time comes from the simulator's own
cost model (`cost.py`: the layers any of its hops use, kernels in sequence, attention
over each sequence's real length, the head for sampled rows), never from the planner's
estimate. A finished item travels to the next hop after half the link RTT plus its
serialisation; the last hop's output is a token, and the next decode step starts again
at the first hop. KV blocks for prompt + output are reserved on every hop at admission;
a request waits at the gateway until all its hops have room and run fewer than the
engine's --max-running requests (no preemption).
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from statistics import median

from bench.sim.cost import KV_BLOCK_TOKENS, SimCost
from bench.sim.workload import SimRequest
from coordinator.scheduler.types import Assignments, NodeCapacity
from parallax.types import LayerRange, NodeId

Chain = list[tuple[NodeId, LayerRange]]
# (request, live view) -> chain; the view exposes running counts and KV room.
Policy = Callable[[SimRequest, "SimView"], Chain]
MAX_BATCH_TOKENS = 2048  # prefill tokens one step may take
# Waiting requests the gateway tries per admission pass before it takes the cluster as
# full: a full cluster does not re-route its whole queue at every completion.
ADMIT_TRIES = 8


@dataclass
class NodeSim:
    node: NodeCapacity
    range: LayerRange
    kv_blocks: int  # blocks (of every layer of the range) that fit
    kv_used: int = 0
    running: int = 0
    busy: bool = False
    queue: list = field(default_factory=list)
    # Per-layer step time the node measured, ms: a moving average, as its heartbeat.
    layer_ms: float = 0.0

    @property
    def kv_free_tokens(self) -> int:
        return (self.kv_blocks - self.kv_used) * KV_BLOCK_TOKENS


@dataclass
class SimView:
    nodes: dict[NodeId, NodeSim]
    cost: SimCost


@dataclass
class SimResult:
    throughput_tok_s: float
    tpot_p50_ms: float
    tpot_p99_ms: float
    ttft_p50_ms: float
    ttft_p99_ms: float
    completed: int
    makespan_s: float


def percentile(xs: Sequence[float], q: float) -> float:
    if not xs:
        return math.nan
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * len(s)))]


def union_len(ranges) -> int:
    """Layers in the union of half-open ranges."""
    total, reach = 0, 0
    for r in sorted(ranges):
        lo = max(r.start, reach)
        if r.end > lo:
            total += r.end - lo
        reach = max(reach, r.end)
    return total


def simulate(
    nodes: Sequence[NodeCapacity],
    assignments: Assignments,
    cost: SimCost,
    requests: Sequence[SimRequest],
    policy: Policy,
    horizon_s: float = 3600.0,
    saturated: bool = False,
    batching: bool = True,
) -> SimResult:
    """Run to completion (or `horizon_s`). Throughput is tokens over the makespan; with
    `saturated` (every request queued at the start, so admission keeps the cluster full)
    it counts only the steady phase between the 10th and 50th percentile completions.
    Without `batching` a node runs one request's step at a time, first come first
    served, as a Petals server does (`designs.BATCHING`)."""
    sims: dict[NodeId, NodeSim] = {}
    for n in nodes:
        r = assignments.get(n.node_id)
        if r is None:
            continue
        # Before any traffic a node reports its warm-up step (one sequence, short context).
        first = cost.step_s(n, len(r), [(1, 64)], 0) / len(r) * 1e3
        sims[n.node_id] = NodeSim(n, r, cost.kv_blocks(n, r), layer_ms=first)
    view = SimView(sims, cost)
    # The engine's --max-running: a node keeps at most this many requests (KV and all),
    # whatever room its KV has left; the rest wait at the gateway.
    max_running = cost.max_running
    step_limit = max_running if batching else 1
    events: list = []
    tick = itertools.count()
    push = lambda t, kind, data: heapq.heappush(events, (t, next(tick), kind, data))  # noqa: E731
    for req in requests:
        push(req.arrival_s, "arrive", req)
    waiting: list[SimRequest] = []
    chains: dict[int, Chain] = {}
    emitted: dict[int, int] = {}
    last_token: dict[int, float] = {}
    ttft: list[float] = []
    tpot: list[float] = []
    done, tokens, t_end = 0, 0, 0.0
    token_times: list[float] = []
    finish_times: list[float] = []

    def kv_need(req: SimRequest) -> int:
        return SimCost.blocks_for(req.prompt_tokens + req.output_tokens)

    def try_admit(now: float) -> None:
        still: list[SimRequest] = []
        misses = 0
        for i, req in enumerate(waiting):
            if misses >= ADMIT_TRIES:
                still.extend(waiting[i:])
                break
            chain = policy(req, view)
            if all(
                sims[nid].kv_used + kv_need(req) <= sims[nid].kv_blocks
                and sims[nid].running < max_running
                for nid, r in chain
            ):
                for nid, _r in chain:
                    sims[nid].kv_used += kv_need(req)
                    sims[nid].running += 1
                chains[req.request_id] = chain
                emitted[req.request_id] = 0
                enqueue(now, req, 0, req.prompt_tokens)
            else:
                still.append(req)
                misses += 1
        waiting[:] = still

    def enqueue(now: float, req: SimRequest, hop: int, ntok: int) -> None:
        nid, _r = chains[req.request_id][hop]
        s = sims[nid]
        s.queue.append((req, hop, ntok))
        if not s.busy:
            start_step(now, s)

    def start_step(now: float, s: NodeSim) -> None:
        batch, budget, decode = [], MAX_BATCH_TOKENS, 0
        rest = []
        # Decodes first, then prefills within the token budget (as vLLM schedules); one
        # at a time, in arrival order, without batching.
        order = sorted(s.queue, key=lambda it: it[2] != 1) if batching else s.queue
        for item in order:
            ntok = item[2]
            if len(batch) < step_limit and (ntok == 1 or ntok <= budget or not batch):
                batch.append(item)
                budget -= ntok
                decode += ntok == 1
            else:
                rest.append(item)
        s.queue = rest
        # The engine runs a step's layer groups in one pass: each layer once, over the
        # rows of the hops that use it, so a step costs the union of their ranges.
        hops = {chains[i[0].request_id][i[1]][1] for i in batch}
        rows = [(ntok, req.prompt_tokens + emitted[req.request_id]) for req, _h, ntok in batch]
        sampled = sum(1 for req, h, _n in batch if h == len(chains[req.request_id]) - 1)
        layers = union_len(hops)
        dt = cost.step_s(s.node, layers, rows, sampled)
        s.layer_ms = 0.9 * s.layer_ms + 0.1 * dt / max(1, layers) * 1e3
        s.busy = True
        push(now + dt, "step_done", (s, batch))

    while events:
        now, _k, kind, data = heapq.heappop(events)
        if now > horizon_s:
            break
        if kind == "arrive":
            waiting.append(data)
            try_admit(now)
        elif kind == "step_done":
            s, batch = data
            s.busy = False
            for req, hop, ntok in batch:
                chain = chains[req.request_id]
                nxt = hop + 1 if hop + 1 < len(chain) else 0
                link = cost.hop_s(s.node, sims[chain[nxt][0]].node) if len(chain) > 1 else 0.0
                if hop + 1 < len(chain):
                    push(now + link, "hop", (req, nxt, ntok))
                    continue
                rid = req.request_id
                emitted[rid] += 1
                tokens += 1
                token_times.append(now)
                if emitted[rid] == 1:
                    ttft.append(now - req.arrival_s)
                else:
                    tpot.append(now - last_token[rid])
                last_token[rid] = now
                if emitted[rid] >= req.output_tokens:
                    for nid, _r in chain:
                        sims[nid].kv_used -= kv_need(req)
                        sims[nid].running -= 1
                    done += 1
                    t_end = now
                    finish_times.append(now)
                    try_admit(now)
                else:
                    push(now + link, "hop", (req, 0, 1))
            if s.queue:
                start_step(now, s)
        elif kind == "hop":
            req, hop, ntok = data
            enqueue(now, req, hop, ntok)
    t0 = requests[0].arrival_s if requests else 0.0
    span = max(t_end - t0, 1e-9)
    rate = tokens / span
    if saturated and len(finish_times) >= 10:
        lo, hi = finish_times[len(finish_times) // 10], finish_times[len(finish_times) // 2]
        inside = sum(1 for t in token_times if lo <= t <= hi)
        rate = inside / max(hi - lo, 1e-9)
    return SimResult(
        throughput_tok_s=rate,
        tpot_p50_ms=median(tpot) * 1e3 if tpot else math.nan,
        tpot_p99_ms=percentile(tpot, 0.99) * 1e3,
        ttft_p50_ms=median(ttft) * 1e3 if ttft else math.nan,
        ttft_p99_ms=percentile(ttft, 0.99) * 1e3,
        completed=done,
        makespan_s=span,
    )

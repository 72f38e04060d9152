"""One spot check: run a pair of chains, and when they disagree, find who is lying.

Two chains that disagree say only that some node on one of them computed something
else. Each span where they use different nodes (x on chain A, y on chain B) is
tried alone: chain A with that span moved to y. If that changes nothing, the span is
not the cause. If it does, x and y disagree on those layers, in the same context,
and a third holder z of the span settles it: the one of x and y that z contradicts
is blamed, the other two are credited. With no third holder (or when z agrees with
neither) nobody is blamed: x and y are marked unverified and later checks go on.

Pure but for `run`, the one way it reaches the cluster, so tests drive it with a
fake comparer.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from coordinator.scheduler.types import ClusterState, Route
from coordinator.verify.chains import Pair, Segment, holders, nodes_of, segments, swap
from coordinator.verify.compare import Generated, Match, compare, same
from parallax.types import NodeId

# Runs a greedy verification request down exactly that chain; None when it failed.
Runner = Callable[[Route], Awaitable[Generated | None]]
MAX_REFEREES = 2  # third holders tried per disputed span (one whose chain fails is skipped)


@dataclass
class Verdict:
    match: Match
    credit: set[NodeId] = field(default_factory=set)
    blame: dict[NodeId, str] = field(default_factory=dict)  # node -> why
    unverified: dict[NodeId, str] = field(default_factory=dict)  # node -> why
    runs: int = 0  # chains run
    failed: bool = False  # a chain of the pair gave no answer: nothing was verified


async def check_pair(pair: Pair, state: ClusterState, run: Runner, tolerance: float) -> Verdict:
    ga, gb = await asyncio.gather(run(pair.a), run(pair.b))
    if ga is None or gb is None:
        return Verdict(Match.UNDECIDED, runs=2, failed=True)
    match = compare(ga, gb, tolerance)
    verdict = Verdict(match, runs=2)
    if match is Match.AGREE:
        verdict.credit = set(nodes_of(pair.a) | nodes_of(pair.b))
    elif match is Match.DISAGREE:
        for seg in segments(pair.a, pair.b, state.num_layers):
            await _settle(seg, pair, (ga, gb), state, run, tolerance, verdict)
    return verdict


async def _settle(
    seg: Segment,
    pair: Pair,
    outputs: tuple[Generated, Generated],
    state: ClusterState,
    run: Runner,
    tolerance: float,
    verdict: Verdict,
    split: bool = True,
) -> None:
    """Whether the span's two holders disagree, and if so which one a third sides with.
    With no third holder of the whole span, its pieces between other holders' range
    ends are tried alone (once: `split`), so a lie in a long span is still settled."""
    nodes = {n.node_id: n for n in state.nodes}
    # Try the span on the other holder within chain A, or else within chain B (a node
    # takes one hop per request, so one of the two may not fit).
    options = (
        (pair.a, outputs[0], seg.a_node, seg.b_node),
        (pair.b, outputs[1], seg.b_node, seg.a_node),
    )
    fits = [
        (base, out, mine, other, moved)
        for base, out, mine, other in options
        if other in nodes
        and (moved := swap(base, seg.start, seg.end, nodes[other], state.num_layers)) is not None
    ]
    if not fits:
        return  # cannot isolate this span: other spans may still settle the dispute
    base, base_out, mine, other, moved = fits[0]
    moved_out = await run(moved)
    verdict.runs += 1
    if moved_out is None or same(base_out, moved_out, tolerance):
        return  # these layers are not where the chains part
    span = f"layers [{seg.start}, {seg.end})"
    tried = 0
    for z in holders(state, seg.start, seg.end, exclude={mine, other}):
        if tried == MAX_REFEREES:
            break
        ref = swap(base, seg.start, seg.end, z, state.num_layers)
        if ref is None:
            continue
        tried += 1
        ref_out = await run(ref)
        verdict.runs += 1
        if ref_out is None:
            continue
        with_mine, with_other = (
            same(ref_out, base_out, tolerance),
            same(ref_out, moved_out, tolerance),
        )
        if with_mine != with_other:
            liar, honest = (other, mine) if with_mine else (mine, other)
            verdict.blame[liar] = f"{span} differ from {honest} and {z.node_id}, which agree"
            verdict.credit |= {honest, z.node_id}
            return
        side = "agrees with both" if with_mine else "agrees with neither"
        why = f"{span}: {mine} and {other} differ and a third holder, {z.node_id}, {side}"
        for n in (mine, other, z.node_id):
            verdict.unverified[n] = why
        return
    pieces = _pieces(seg, state, exclude={mine, other}) if split and not tried else []
    for piece in pieces:
        await _settle(piece, pair, outputs, state, run, tolerance, verdict, split=False)
        if verdict.blame:
            return
    why = f"{span}: {mine} and {other} differ and no third holder could settle it"
    verdict.unverified[mine] = verdict.unverified[other] = why


def _pieces(seg: Segment, state: ClusterState, exclude: set[NodeId]) -> list[Segment]:
    """`seg` cut where other nodes' ranges start or end inside it (pieces a third holder
    may hold whole); [] when nothing cuts it."""
    cuts = {seg.start, seg.end}
    for n in state.nodes:
        if n.node_id not in exclude:
            cuts |= {c for c in (n.range.start, n.range.end) if seg.start < c < seg.end}
    if len(cuts) == 2:
        return []
    ends = sorted(cuts)
    return [Segment(lo, hi, seg.a_node, seg.b_node) for lo, hi in itertools.pairwise(ends)]

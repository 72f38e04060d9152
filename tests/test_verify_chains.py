"""Chains for spot checks (coordinator/verify/chains.py), against brute force.

Every layout of up to 5 nodes over up to 6 layers that hypothesis draws is checked
against an enumeration of every chain: a pair is found exactly when one exists, and
the pair found shares no more nodes than the best pair there is.
"""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coordinator.scheduler.types import ClusterState, NodeLoad, Route
from coordinator.verify.chains import (
    Segment,
    cover,
    holders,
    nodes_of,
    pick_pair,
    segments,
    swap,
)
from parallax.types import LayerRange, NodeId


def node(name: str, start: int, end: int) -> NodeLoad:
    return NodeLoad(NodeId(name), f"127.0.0.1:{7000 + ord(name[-1])}", LayerRange(start, end))


def state(num_layers: int, *spans: tuple[str, int, int]) -> ClusterState:
    return ClusterState(num_layers=num_layers, nodes=tuple(node(*s) for s in spans))


def valid(route: Route, num_layers: int, st_: ClusterState) -> bool:
    held = {n.node_id: n.range for n in st_.nodes}
    names = [h.node_id for h in route.hops]
    return (
        route.covers(num_layers)
        and len(set(names)) == len(names)
        and all(held[h.node_id].covers(h.range) for h in route.hops)
        and all(
            h.address == next(n.address for n in st_.nodes if n.node_id == h.node_id)
            for h in route.hops
        )
    )


def all_chains(st_: ClusterState) -> list[tuple[tuple[NodeId, int, int], ...]]:
    """Every chain, cut anywhere, no node twice: (node, start, end) per hop."""
    out = []

    def walk(at: int, used: tuple[tuple[NodeId, int, int], ...]) -> None:
        if at == st_.num_layers:
            out.append(used)
            return
        for n in st_.nodes:
            if n.range.start <= at < n.range.end and all(n.node_id != u[0] for u in used):
                for end in range(at + 1, n.range.end + 1):
                    walk(end, (*used, (n.node_id, at, end)))

    walk(0, ())
    return out


def best_shared(st_: ClusterState, focus: NodeLoad) -> int | None:
    chains = all_chains(st_)
    through = [c for c in chains if (focus.node_id, focus.range.start, focus.range.end) in c]
    around = [c for c in chains if all(h[0] != focus.node_id for h in c)]
    pairs = [
        len({h[0] for h in a} & {h[0] for h in b}) for a, b in itertools.product(through, around)
    ]
    return min(pairs) if pairs else None


@st.composite
def layouts(draw):
    num_layers = draw(st.integers(2, 6))
    n = draw(st.integers(1, 5))
    spans = []
    for i in range(n):
        start = draw(st.integers(0, num_layers - 1))
        end = draw(st.integers(start + 1, num_layers))
        spans.append((f"n{i}", start, end))
    return state(num_layers, *spans)


@settings(max_examples=400, deadline=None)
@given(layouts(), st.data())
def test_pick_pair_matches_brute_force(st_, data):
    focus = data.draw(st.sampled_from(st_.nodes))
    pair = pick_pair(st_, focus.node_id)
    want = best_shared(st_, focus)
    if want is None:
        assert pair is None
        return
    assert pair is not None
    assert valid(pair.a, st_.num_layers, st_) and valid(pair.b, st_.num_layers, st_)
    assert any(h.node_id == focus.node_id and h.range == focus.range for h in pair.a.hops)
    assert focus.node_id not in nodes_of(pair.b)
    assert len(pair.shared) == want, (pair, want)


def test_disjoint_chains_where_the_cluster_allows():
    st_ = state(30, ("a", 0, 15), ("b", 15, 30), ("c", 0, 10), ("d", 10, 30), ("e", 0, 30))
    pair = pick_pair(st_, NodeId("b"))
    assert pair is not None and not pair.shared
    assert [h.node_id for h in pair.a.hops][-1] == "b"
    # The cheapest B is the single node holding everything.
    assert [h.node_id for h in pair.b.hops] == ["e"]


def test_chains_share_nodes_only_outside_the_focus_layers():
    # Only "a" holds the first layers: both chains need it, and differ on b's layers.
    st_ = state(4, ("a", 0, 2), ("b", 2, 4), ("c", 2, 4))
    pair = pick_pair(st_, NodeId("b"))
    assert pair is not None and pair.shared == {"a"}
    assert segments(pair.a, pair.b, 4) == [Segment(2, 4, NodeId("b"), NodeId("c"))]


def test_a_sole_holder_cannot_be_checked():
    st_ = state(4, ("a", 0, 2), ("b", 2, 4), ("c", 0, 2))
    assert pick_pair(st_, NodeId("b")) is None
    assert pick_pair(st_, NodeId("a")) is not None
    assert pick_pair(st_, NodeId("nobody")) is None


def test_cover_prefers_fewer_hops_and_avoids_discouraged_nodes():
    nodes = state(6, ("a", 0, 3), ("b", 3, 6), ("c", 0, 6)).nodes
    assert [h.node_id for h in cover(nodes, 0, 6)] == ["c"]
    hops = cover(nodes, 0, 6, discourage={"c"})
    assert [(h.node_id, h.range) for h in hops] == [
        ("a", LayerRange(0, 3)),
        ("b", LayerRange(3, 6)),
    ]
    assert cover(nodes, 0, 6, forbid={"c", "b"}) is None
    assert cover(nodes, 2, 2) == ()


def test_segments_and_swap():
    st_ = state(6, ("a", 0, 4), ("b", 4, 6), ("c", 0, 2), ("d", 2, 6))
    a = Route(tuple(cover(st_.nodes, 0, 6, forbid={"c", "d"})))
    b = Route(tuple(cover(st_.nodes, 0, 6, forbid={"a", "b"})))
    segs = segments(a, b, 6)
    assert segs == [
        Segment(0, 2, NodeId("a"), NodeId("c")),
        Segment(2, 4, NodeId("a"), NodeId("d")),
        Segment(4, 6, NodeId("b"), NodeId("d")),
    ]
    moved = swap(a, 0, 2, st_.nodes[2], 6)
    assert [(h.node_id, h.range.start, h.range.end) for h in moved.hops] == [
        ("c", 0, 2),
        ("a", 2, 4),
        ("b", 4, 6),
    ]
    assert [h.node_id for h in swap(a, 2, 4, st_.nodes[3], 6).hops] == ["a", "d", "b"]
    # c on [1, 2) would split a's hop in two: a node takes one hop per request.
    assert swap(a, 1, 2, st_.nodes[2], 6) is None
    # Next to its own hop, the span merges into it.
    merged = swap(b, 0, 2, node("d", 0, 6), 6)
    assert [(h.node_id, h.range.start, h.range.end) for h in merged.hops] == [("d", 0, 6)]
    # A node that does not hold the span cannot take it.
    assert swap(a, 0, 4, st_.nodes[2], 6) is None


def test_holders_excludes_and_orders():
    st_ = state(6, ("z", 0, 6), ("a", 0, 4), ("b", 2, 6), ("c", 0, 6))
    assert [n.node_id for n in holders(st_, 2, 4, exclude={"a"})] == ["b", "c", "z"]
    assert [n.node_id for n in holders(st_, 0, 6, exclude=())] == ["c", "z"]


@pytest.mark.parametrize("n", [40, 200])
def test_pick_pair_is_quick_on_big_clusters(n):
    import time

    spans = [(f"n{i:03d}", (i * 7) % 30, min(30, (i * 7) % 30 + 10)) for i in range(n)]
    spans += [(f"f{i}", 0, 30) for i in range(2)]
    st_ = state(30, *spans)
    t = time.perf_counter()
    pair = pick_pair(st_, NodeId("n003"))
    assert pair is not None and not pair.shared
    assert time.perf_counter() - t < 2.0

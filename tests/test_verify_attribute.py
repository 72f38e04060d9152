"""Spot checks without a cluster: comparison, blame, scores and quarantine.

A fake comparer stands for the cluster: a chain's tokens are a function of which
lying (node, layer) pairs it ran, so honest chains always agree and a liar's chain
differs exactly where it lies. The registry is the real one.
"""

from __future__ import annotations

import asyncio
import math
import random
import re
from collections.abc import AsyncIterator

import pytest

from coordinator.gateway.backend import GenerationRequest, TokenOut
from coordinator.registry import Registry
from coordinator.scheduler.types import ClusterState, NodeLoad, Route
from coordinator.verify.attribute import check_pair
from coordinator.verify.chains import pick_pair
from coordinator.verify.compare import Generated, Match, compare
from coordinator.verify.scores import Ledger
from coordinator.verify.verifier import Verifier, VerifyOptions
from parallax.errors import InvalidArgument
from parallax.types import LayerRange, NodeId
from tests.support.registry import hw, ready, registry

HONEST = (11, 12, 13, 14)


def outcome(route: Route, lies: dict[str, set[int]]) -> tuple[int, ...]:
    """Tokens a chain generates: the honest ones unless it ran a lying layer."""
    bad = sorted(
        (h.node_id, layer)
        for h in route.hops
        for layer in range(h.range.start, h.range.end)
        if layer in lies.get(h.node_id, ())
    )
    if not bad:
        return HONEST
    return (11, 100 + hash(tuple(bad)) % 1000, 13, 14)


def fake_run(lies: dict[str, set[int]], calls: list[Route] | None = None, fail: str = ""):
    async def run(route: Route) -> Generated | None:
        if calls is not None:
            calls.append(route)
        if fail and any(h.node_id == fail for h in route.hops):
            return None
        return Generated(outcome(route, lies))

    return run


def state(num_layers: int, *spans: tuple[str, int, int]) -> ClusterState:
    return ClusterState(
        num_layers,
        tuple(
            NodeLoad(NodeId(n), f"127.0.0.1:{9000 + i}", LayerRange(s, e))
            for i, (n, s, e) in enumerate(spans)
        ),
    )


def check(st: ClusterState, focus: str, lies, **kw):
    pair = pick_pair(st, NodeId(focus))
    assert pair is not None
    return asyncio.run(check_pair(pair, st, fake_run(lies, **kw), tolerance=0.5))


# ---- comparing two chains ----
def test_compare_tokens_with_near_ties():
    a = Generated((1, 2, 3), ({1: -0.1}, {2: -0.5, 7: -0.6}, {3: -0.1}))
    b = Generated((1, 7, 9), ({1: -0.1}, {7: -0.55, 2: -0.58}, {9: -0.1}))
    # Position 1 differs but both chains rate the other's token within 0.1 nats: a tie.
    assert compare(a, b, tolerance=0.5) is Match.AGREE
    assert compare(a, b, tolerance=0.01) is Match.DISAGREE
    sure = Generated((1, 8, 3), ({1: -0.1}, {8: -0.01}, {3: -0.1}))  # 2 not even in its top
    assert compare(a, sure, tolerance=0.5) is Match.DISAGREE
    first = Generated((5,), ({5: -0.69, 1: -0.70},))
    assert compare(a, first, tolerance=0.5) is Match.UNDECIDED  # a tie at the very first token
    assert compare(a, Generated(()), 0.5) is Match.UNDECIDED
    assert compare(a, a, 0.0) is Match.AGREE
    assert a.margin(1, 99) == math.inf and a.margin(9, 1) == math.inf


# ---- blame ----
def test_the_minority_holder_is_blamed_and_the_majority_credited():
    st = state(8, ("a", 0, 8), ("b", 0, 8), ("c", 0, 8))
    v = check(st, "b", {"b": {5}})
    assert v.match is Match.DISAGREE
    assert set(v.blame) == {"b"} and "layers [0, 8)" in v.blame["b"]
    assert v.credit == {"a", "c"} and not v.unverified


def test_a_liar_on_the_other_chain_is_blamed_too():
    st = state(8, ("a", 0, 8), ("b", 0, 8), ("c", 0, 8))
    v = check(st, "a", {"b": {5}})  # a is the focus; b sits on chain B
    assert set(v.blame) == {"b"} and v.credit == {"a", "c"}


def test_a_liar_inside_a_pipeline_is_found_by_its_span():
    # Two disjoint pipelines with different cuts, and third holders of every span.
    st = state(
        8, ("a1", 0, 5), ("a2", 5, 8), ("b1", 0, 3), ("b2", 3, 8), ("c1", 0, 4), ("c2", 4, 8)
    )
    calls: list[Route] = []
    v = check(st, "a2", {"b2": {6}}, calls=calls)
    assert v.match is Match.DISAGREE and set(v.blame) == {"b2"}, v
    assert "b2" not in v.credit and v.credit >= {"a2"}
    assert v.runs == len(calls) <= 2 + 3 * 2  # the pair, then per span a swap and a referee


def test_two_holders_only_blame_neither_and_mark_both_unverified():
    st = state(8, ("a", 0, 8), ("b", 0, 8))
    v = check(st, "a", {"b": {2}})
    assert v.match is Match.DISAGREE and not v.blame and not v.credit
    assert set(v.unverified) == {"a", "b"}
    assert "no third holder" in v.unverified["a"]


def test_honest_chains_agree_and_every_node_is_credited():
    st = state(8, ("a", 0, 4), ("b", 4, 8), ("c", 0, 8), ("d", 0, 8))
    v = check(st, "b", {})
    assert v.match is Match.AGREE and not v.blame
    assert v.credit == {"a", "b", "c"} and v.runs == 2


def test_a_failed_chain_decides_nothing():
    st = state(8, ("a", 0, 8), ("b", 0, 8), ("c", 0, 8))
    v = check(st, "a", {"b": {1}}, fail="b")
    assert v.match is Match.UNDECIDED and not v.blame and not v.credit
    assert v.failed  # counted apart: a quarantine's "after N checks" counts verified ones
    assert not check(st, "a", {"b": {1}}).failed


def test_two_liars_telling_different_lies_blame_nobody_honest():
    st = state(8, ("a", 0, 8), ("b", 0, 8), ("c", 0, 8))
    v = check(st, "a", {"a": {1}, "b": {2}})
    assert "c" not in v.blame


# ---- scores ----
def test_ledger_needs_two_recent_blames():
    led = Ledger(decay=0.95, threshold=1.5)
    assert not led.blame(NodeId("x"), "once")
    for _ in range(30):  # a long honest record lets an old blame fade
        led.agree(NodeId("x"))
    assert not led.blame(NodeId("x"), "again, much later")
    assert led.blame(NodeId("x"), "and again")
    s = led.get(NodeId("x"))
    assert s.blames == 3 and s.checks == 33 and s.last_blame == "and again"
    led.unverified(NodeId("y"), "two holders")
    assert led.to_json()["y"]["unverified"] == "two holders"
    led.agree(NodeId("y"))
    assert led.get(NodeId("y")).unverified == ""
    led.forget({NodeId("x")})
    assert list(led.to_json()) == ["x"]
    with pytest.raises(InvalidArgument):
        Ledger(threshold=1.0)


# ---- the loop, over the real registry ----
class FakeBackend:
    """`generate_on` answers from the fake comparer; records request ids and prompts."""

    def __init__(self, lies: dict[str, set[int]]) -> None:
        self.lies = lies
        self.requests: list[GenerationRequest] = []

    async def generate_on(self, req: GenerationRequest, route: Route) -> AsyncIterator[TokenOut]:
        self.requests.append(req)
        ids = {}
        names = {n: n.split("-")[0] for n in (h.node_id for h in route.hops)}
        lies = {nid: self.lies.get(names[nid], set()) for nid in names}
        ids = outcome(route, lies)
        for i, t in enumerate(ids):
            last = i == len(ids) - 1
            yield TokenOut(
                t, logprob=-0.01, finished=last, finish_reason="length" if last else None
            )


def cluster(n: int) -> tuple[Registry, dict[str, NodeId]]:
    reg = registry()
    ids = {f"n{i}": reg.join(f"n{i}", f"127.0.0.1:{9100 + i}", hw(), 0.0)[0] for i in range(n)}
    for nid in ids.values():
        ready(reg, nid, 1.0)
    return reg, ids


def test_verifier_quarantines_the_liar_and_its_layers_are_re_covered():
    reg, ids = cluster(4)
    backend = FakeBackend({"n2": {3}})
    opts = VerifyOptions(rate=1.0, idle_s=0, tokens=4, tolerance=0.5)
    v = Verifier(
        reg, backend, lambda: 0, [(1, 2, 3)], opts, rng=random.Random(0), clock=lambda: 5.0
    )
    checks = 0
    while not reg.get(ids["n2"]).quarantined:
        checks += 1
        assert checks <= 6, v.report()
        asyncio.run(v.check_once())
    rec = reg.get(ids["n2"])
    assert "spot checks" in rec.quarantined and "differ from" in rec.quarantined
    assert rec.assignment.range is None and not rec.serving
    assert ids["n2"] not in {n.node_id for n in reg.cluster_state().nodes}
    assert ids["n2"] not in reg.allocation.assignments
    assert [d.kind for d in reg.decisions].count("quarantine") == 1
    assert not any(reg.get(ids[n]).quarantined for n in ("n0", "n1", "n3"))
    report = v.report()
    assert report["quarantined"] == 1 and report["checks"]["disagree"] >= 2
    # Shaped like a user's chat id, and no sampling flag a user would not send.
    assert all(re.fullmatch(r"chatcmpl-[0-9a-f]{32}-0", r.request_id) for r in backend.requests)
    assert len({r.request_id for r in backend.requests}) == len(backend.requests)
    assert not any(r.sampling.ignore_eos for r in backend.requests)
    assert {r.prompt_ids for r in backend.requests} == {(1, 2, 3)}
    assert all(r.sampling.greedy for r in backend.requests)
    snap = reg.status_snapshot(6.0)
    assert [n["quarantined"] != "" for n in snap["nodes"]].count(True) == 1
    # A re-join from its address (it proves it is that node) stays quarantined.
    new_id, assignment = reg.join("n2", "127.0.0.1:9102", hw(), 7.0, may_replace=lambda old: True)
    assert reg.get(new_id).quarantined and assignment.range is None


def test_an_honest_cluster_is_never_quarantined():
    reg, _ = cluster(4)
    opts = VerifyOptions(rate=1.0, idle_s=0, tokens=4, tolerance=0.5)
    v = Verifier(reg, FakeBackend({}), lambda: 0, [(1, 2)], opts, rng=random.Random(1))
    for _ in range(12):
        asyncio.run(v.check_once())
    assert v.report()["checks"]["agree"] == 12 and v.report()["quarantined"] == 0
    assert not any(r.quarantined for r in reg.nodes)
    # Every node was the focus of a check: least-checked first.
    assert all(s["checks"] >= 3 for s in v.report()["nodes"].values())


def test_checks_follow_requests_capped_and_idle_checks_run_anyway(monkeypatch):
    monkeypatch.setattr("coordinator.verify.verifier.TICK_S", 0.02)
    reg, _ = cluster(3)
    served = [0]
    opts = VerifyOptions(rate=1.0, idle_s=0, tokens=2, tolerance=0.5)
    v = Verifier(reg, FakeBackend({}), lambda: served[0], [(1,)], opts, rng=random.Random(2))

    async def drive(n: int) -> int:
        task = asyncio.create_task(v.run_forever())
        await asyncio.sleep(0.1)
        assert not v.outcomes  # no traffic, no idle checks: nothing
        served[0] += n
        await asyncio.sleep(0.5)
        task.cancel()
        return sum(v.outcomes.values())

    assert asyncio.run(drive(3)) == 3  # at rate 1, a check per request
    v.outcomes.clear()
    assert asyncio.run(drive(1000)) == 4  # at most MAX_PENDING owed, whatever the burst
    clock = [0.0]
    idle = Verifier(
        reg,
        FakeBackend({}),
        lambda: 0,
        [(1,)],
        VerifyOptions(rate=0.0, idle_s=1.0, tokens=2, tolerance=0.5),
        clock=lambda: clock[0],
    )

    async def quiet() -> int:
        task = asyncio.create_task(idle.run_forever())
        await asyncio.sleep(0.2)
        assert not idle.outcomes
        clock[0] = 5.0  # no traffic at all, and the idle time has passed
        await asyncio.sleep(0.2)
        task.cancel()
        return sum(idle.outcomes.values())

    assert asyncio.run(quiet()) == 1


@pytest.mark.parametrize(
    ("field", "value"),
    [("verify_rate", 1.5), ("verify_rate", -0.1), ("verify_idle_s", -1.0), ("verify_tokens", 0)]
    + [("verify_tokens", 65), ("verify_tolerance", -0.5)],
)
def test_bad_verify_settings_name_the_flag(field, value):
    from parallax.config.coordinator import CoordinatorConfig
    from parallax.errors import ConfigError

    with pytest.raises(ConfigError, match="--" + field.replace("_", "-")):
        CoordinatorConfig(**{field: value})
    assert CoordinatorConfig(verify_rate=0, verify_idle_s=0).verify_tokens == 8


def test_a_lie_in_a_span_no_third_node_holds_whole_is_settled_piece_by_piece():
    # a and b both hold [0, 6); nobody else holds all of it, but c holds [0, 3) and d
    # [3, 8): the disputed span is tried in pieces and d settles the piece with the lie.
    st = state(8, ("a", 0, 6), ("b", 0, 6), ("c", 0, 3), ("d", 3, 8), ("e", 6, 8))
    calls: list[Route] = []
    v = check(st, "a", {"b": {4}}, calls=calls)
    assert v.match is Match.DISAGREE and set(v.blame) == {"b"}, v
    assert "layers [3, 6)" in v.blame["b"] and v.credit >= {"a", "d"}
    assert v.runs == len(calls) <= 2 + 1 + 2 * 2  # the pair, the span, per piece 2
    # Where no piece has a third holder either, nobody is blamed.
    st = state(8, ("a", 0, 6), ("b", 0, 6), ("e", 6, 8))
    v = check(st, "a", {"b": {4}})
    assert not v.blame and "no third holder" in v.unverified["a"]

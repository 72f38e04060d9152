"""The coordinator's state file: a restarted registry knows its nodes (ids, secrets,
assignments), they serve again on their first heartbeat without moving, and a node
that does not come back is declared dead as usual. Also: a drained node's layers move."""

from __future__ import annotations

import os
import stat

import pytest

from coordinator.registry_types import NodeReport, NodeState
from coordinator.state_file import StateFile
from parallax.errors import ConfigError
from tests.support.registry import hw, ready, registry


def _cluster(n: int):
    reg = registry()
    ids = [
        reg.join(f"n{i}", f"127.0.0.1:{7100 + i}", hw(), now=0.0, secret=bytes([i]) * 32)[0]
        for i in range(n)
    ]
    for node_id in ids:
        ready(reg, node_id, now=0.5)
    return reg, ids


def test_a_restarted_registry_serves_its_saved_nodes_on_their_first_heartbeat(tmp_path):
    reg, ids = _cluster(3)
    reg.quarantine(ids[2], "computed other tokens than two holders", now=1.0)
    file = StateFile(str(tmp_path / "state"))
    _, records = reg.records()
    file.save(reg.model_name, records)
    assert stat.S_IMODE(os.stat(file.path).st_mode) == 0o600  # it holds secrets

    again = registry()
    again.restore(file.load(again.model_name, now=100.0), now=100.0)
    assert not again.cluster_state().nodes  # nothing is routable before they report
    for node_id in ids:
        old, new = reg.get(node_id), again.get(node_id)
        assert (new.assignment, new.secret, new.address) == (
            old.assignment,
            old.secret,
            old.address,
        )
    for node_id in ids[1:]:  # the first never comes back
        report = NodeReport(state=NodeState.READY, loaded=reg.get(node_id).assignment.range)
        assert again.heartbeat(node_id, report, {}, now=101.0) == reg.get(node_id).assignment
    # The quarantined node came back quarantined: it serves nothing.
    assert again.get(ids[2]).quarantined == reg.get(ids[2]).quarantined != ""
    assert {n.node_id for n in again.cluster_state().nodes} == {ids[1]}
    # The one that never came back is dead after the usual silence; the others stay.
    assert again.expire(now=104.5) == [ids[0]]


def test_a_state_file_of_another_model_is_ignored_and_a_broken_one_is_an_error(tmp_path):
    reg, _ = _cluster(1)
    file = StateFile(str(tmp_path))
    file.save("another-model", reg.records()[1])
    assert file.load(reg.model_name, now=0.0) == []
    file.path.write_text("{not json")
    with pytest.raises(ConfigError, match="move it away"):
        file.load(reg.model_name, now=0.0)


def test_a_draining_node_hands_its_layers_to_the_others_at_once():
    reg, ids = _cluster(3)
    before = {i: reg.get(i).assignment.range for i in ids}
    leaving = next(i for i in ids if before[i] is not None)
    reg.heartbeat(leaving, NodeReport(state=NodeState.LEAVING, loaded=before[leaving]), {}, now=1.0)
    after = {i: reg.get(i).assignment.range for i in ids if i != leaving}
    assert reg.get(leaving).assignment.range == before[leaving]  # it keeps what it runs out on
    covered = sorted((r.start, r.end) for r in after.values() if r is not None)
    at = 0
    for start, end in covered:
        assert start <= at
        at = max(at, end)
    assert at == reg.spec.num_layers  # the others cover every layer without it
    assert any(d.kind == "drain" for d in reg.decisions)


def test_a_node_far_slower_than_it_claimed_is_flagged_and_an_honest_one_is_not():
    from coordinator.registry_views import capacity_of

    reg, ids = _cluster(2)
    honest, liar = ids
    for node_id, factor in ((honest, 1.2), (liar, 10.0)):
        rec = reg.get(node_id)
        modelled_ms = reg._perf.roofline_s(capacity_of(rec), 1.0) * 1000
        report = NodeReport(
            state=NodeState.READY,
            loaded=rec.assignment.range,
            layer_latency_ms=modelled_ms * factor,
            running_requests=0,
        )
        reg.heartbeat(node_id, report, {}, now=2.0)
    assert reg.get(honest).slower_than_claimed == 0.0
    assert reg.get(liar).slower_than_claimed == pytest.approx(10.0, rel=0.01)
    flags = [d.message for d in reg.decisions if d.kind == "flag"]
    assert len(flags) == 1 and liar in flags[0]
    assert reg.status_snapshot(3.0)["nodes"][1]["slower_than_claimed"] in (0.0, 10.0)


def test_a_node_flagged_slower_than_it_claimed_gets_fewer_layers_at_the_next_round():
    # Planned on its claim, it holds a full share; once its measured layer time is in,
    # the next expiry round re-plans (off the event loop) instead of waiting for the
    # next join or death.
    from coordinator.registry_views import capacity_of
    from tests.support.registry import HALF, hw

    reg = registry()
    ids = [reg.join(f"n{i}", f"127.0.0.1:{7200 + i}", hw(HALF), now=0.0)[0] for i in range(3)]
    for node_id in ids:
        ready(reg, node_id, now=0.5)
    before = {i: reg.get(i).assignment.range for i in ids}
    liar = max(ids, key=lambda i: len(before[i]))
    for node_id in ids:
        rec = reg.get(node_id)
        slow = 10.0 if node_id == liar else 1.0
        report = NodeReport(
            state=NodeState.READY,
            loaded=rec.assignment.range,
            layer_latency_ms=reg._perf.roofline_s(capacity_of(rec), 1.0) * 1000 * slow,
        )
        reg.heartbeat(node_id, report, {}, now=1.0)
    assert [d.kind for d in reg.decisions][-1] == "flag"
    assert reg.expire(now=1.5) == []
    assert [d.kind for d in reg.decisions][-1] == "allocate"
    after = reg.get(liar).assignment.range
    assert after is None or len(after) < len(before[liar]), (before, after)
    n = len(reg.decisions)
    reg.expire(now=2.5)
    assert len(reg.decisions) == n  # once: no re-plan without a new flag

"""The simulator and the baselines run end to end on a small pool (not a benchmark)."""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st

from bench.sim import designs
from bench.sim.cost import SimCost
from bench.sim.engine import simulate, union_len
from bench.sim.scenarios import OUTPUT, PROMPT, make_scenario, with_solver
from bench.sim.workload import poisson_requests
from coordinator.scheduler import allocate
from coordinator.scheduler.perf import PerfModel
from parallax.types import LayerRange

ranges = st.lists(
    st.tuples(st.integers(0, 40), st.integers(1, 20)).map(lambda t: LayerRange(t[0], t[0] + t[1])),
    max_size=8,
)


@given(ranges)
def test_a_step_costs_the_union_of_its_hops_layers(rs) -> None:
    # The engine runs a step's layer groups in one pass over the layers they use.
    assert union_len(rs) == len({i for r in rs for i in range(r.start, r.end)})


def test_every_design_serves_every_request() -> None:
    s = make_scenario("t", 6, 1, seed=3, model="llama3-8b")
    perf = PerfModel.of(s.model, s.options)
    reqs = poisson_requests(12, 5.0, 0, PROMPT, OUTPUT)
    ours = allocate(s.nodes, s.model, with_solver(s, "fast", 1.0))
    px, pipes = designs.parallax_allocation(s.nodes, perf)
    exo, ring = designs.exo_allocation(s.nodes, perf)
    runs = {
        "ours": (dict(ours.assignments), designs.ours_policy()),
        "parallax": (px, designs.round_robin_policy(pipes)),
        "petals": (designs.petals_allocation(s.nodes, perf), designs.dijkstra_policy(0)),
        "exo": (exo, designs.round_robin_policy([ring])),
    }
    for name, (assign, policy) in runs.items():
        res = simulate(s.nodes, assign, SimCost.of(s.model, s.options), reqs, policy)
        assert res.completed == len(reqs), name
        assert res.throughput_tok_s > 0 and math.isfinite(res.tpot_p50_ms), name
        assert res.ttft_p50_ms > 0, name


def test_cluster_json_round_trips_through_the_parser() -> None:
    from bench.sim.scenarios import as_cluster_json
    from coordinator.scheduler.cluster_file import parse_cluster

    s = make_scenario("t", 5, 2, seed=1, model="llama3-8b")
    c = parse_cluster(as_cluster_json(s))
    assert [n.node_id for n in c.nodes] == [n.node_id for n in s.nodes]
    assert c.options.link("us", "eu").rtt_ms == s.options.link("us", "eu").rtt_ms
    assert c.model.num_layers == s.model.num_layers


def test_an_unbatched_server_runs_one_request_per_step() -> None:
    # Petals' servers do not batch sessions together: with 8 requests decoding on one
    # memory-bound node, each token waits for the other 7 requests' steps; continuous
    # batching runs them together.
    s = make_scenario("t", 4, 1, seed=3, model="llama3-8b")
    cost = SimCost.of(s.model, s.options)
    perf = PerfModel.of(s.model, s.options)
    node = max(s.nodes, key=lambda n: n.memory_bytes)
    assert perf.mem.max_layers(node.memory_bytes) >= s.model.num_layers
    whole = {node.node_id: LayerRange(0, s.model.num_layers)}

    def one_chain(_req, _view):
        return [(node.node_id, whole[node.node_id])]

    def run(n: int, batching: bool):
        reqs = poisson_requests(n, 1e6, 0, (64, 64), (32, 32))
        res = simulate([node], whole, cost, reqs, one_chain, batching=batching)
        assert res.completed == n
        return res.tpot_p50_ms

    alone = run(1, True)
    assert run(1, False) == alone
    assert run(8, False) > 7.0 * alone
    assert run(8, True) < 3.0 * alone

"""The route-feasible flow: equal to an LP over every (node, entry, exit) hop on tiny
layouts, never above the window bound, exact on pipelines, fast at a thousand holders."""

from __future__ import annotations

import random
import time

import numpy as np
import pytest
from scipy.optimize import linprog

from coordinator.scheduler.estimate import window_flow
from coordinator.scheduler.flow import routable_flow
from parallax.types import LayerRange

Supply = list[tuple[LayerRange, float]]


def hop_lp(supply: Supply, num_layers: int) -> float:
    """Max flow 0 -> L over hops (node, entry, exit): any entry < exit inside the
    node's range, a hop entering where the previous one ended, each node's hops
    together within its capacity in layer-tokens/s. Independent of `flow.py`."""
    hops = [
        (k, a, b)
        for k, (r, _x) in enumerate(supply)
        for a in range(r.start, r.end)
        for b in range(a + 1, r.end + 1)
    ]
    n = len(hops) + 1  # last variable: the flow F
    c = np.zeros(n)
    c[-1] = -1.0
    # Conservation at every layer boundary: out - in = F at 0, = -F at L, 0 elsewhere.
    a_eq = np.zeros((num_layers + 1, n))
    for j, (_k, a, b) in enumerate(hops):
        a_eq[a, j] += 1.0
        a_eq[b, j] -= 1.0
    a_eq[0, -1] = -1.0
    a_eq[num_layers, -1] = 1.0
    a_ub = np.zeros((len(supply), n))
    for j, (k, a, b) in enumerate(hops):
        a_ub[k, j] = b - a
    b_ub = np.array([x for _r, x in supply])
    got = linprog(c, A_ub=a_ub, b_ub=b_ub, A_eq=a_eq, b_eq=np.zeros(num_layers + 1))
    assert got.status == 0, got.message
    return float(-got.fun)


def random_layout(rng: random.Random, num_layers: int, holders: int) -> Supply:
    out: Supply = []
    for _ in range(holders):
        a = rng.randrange(num_layers)
        b = rng.randrange(a + 1, num_layers + 1)
        out.append((LayerRange(a, b), rng.choice([0.0, 1.0, 2.5, 7.0, rng.uniform(0.1, 10)])))
    return out


@pytest.mark.parametrize("seed", range(60))
def test_equals_the_hop_lp_and_never_exceeds_the_window_bound(seed: int) -> None:
    rng = random.Random(seed)
    num_layers = rng.randint(1, 6)
    supply = random_layout(rng, num_layers, rng.randint(1, 5))
    got = routable_flow(supply, num_layers)
    assert got == pytest.approx(hop_lp(supply, num_layers), rel=1e-5, abs=1e-9)
    assert got <= window_flow(supply, num_layers) * (1 + 1e-9)


def test_a_large_node_is_not_credited_to_every_window_it_meets() -> None:
    # A big node over [0, 3) beside small ones on [0, 1) and [2, 3) and a fast one on
    # [1, 2). Every contiguous window sees enough (the tightest, [0, 1) and [2, 3),
    # 1 + 3 each: bound 4), but both ends draw on the same big node: it gives F - 1 to
    # each, 2(F - 1) <= 3, so routes carry 2.5.
    supply = [
        (LayerRange(0, 3), 3.0),
        (LayerRange(0, 1), 1.0),
        (LayerRange(1, 2), 10.0),
        (LayerRange(2, 3), 1.0),
    ]
    assert window_flow(supply, 3) == pytest.approx(4.0)
    assert routable_flow(supply, 3) == pytest.approx(2.5, rel=1e-5)
    assert hop_lp(supply, 3) == pytest.approx(2.5, rel=1e-6)


def test_exact_on_pipelines_and_replicas() -> None:
    rng = random.Random(7)
    for _ in range(30):
        num_layers = rng.randint(2, 80)
        cuts = sorted(rng.sample(range(1, num_layers), rng.randint(0, min(6, num_layers - 1))))
        supply: Supply = []
        for _replica in range(rng.randint(1, 3)):
            for a, b in zip([0, *cuts], [*cuts, num_layers], strict=True):
                supply.append((LayerRange(a, b), rng.uniform(1, 100) * (b - a)))
        want = window_flow(supply, num_layers)
        assert routable_flow(supply, num_layers) == pytest.approx(want, rel=1e-5)


def test_replicas_cut_differently_stitch_as_the_hop_lp_says() -> None:
    # Pipelines whose cuts do not line up: routes stitch across them, and the window
    # bound may credit more than they carry.
    rng = random.Random(11)
    for _ in range(15):
        num_layers = rng.randint(2, 10)
        supply: Supply = []
        for _replica in range(rng.randint(2, 3)):
            k = rng.randint(0, min(3, num_layers - 1))
            cuts = sorted(rng.sample(range(1, num_layers), k))
            for a, b in zip([0, *cuts], [*cuts, num_layers], strict=True):
                supply.append((LayerRange(a, b), rng.uniform(1, 100) * (b - a)))
        got = routable_flow(supply, num_layers)
        assert got == pytest.approx(hop_lp(supply, num_layers), rel=1e-5)
        assert got <= window_flow(supply, num_layers) * (1 + 1e-9)


def test_uncovered_layers_carry_nothing() -> None:
    assert routable_flow([(LayerRange(0, 2), 5.0)], 4) == 0.0
    assert routable_flow([], 4) == 0.0
    assert routable_flow([(LayerRange(0, 4), 0.0)], 4) == 0.0


def test_a_thousand_overlapping_holders_in_well_under_a_second() -> None:
    rng = random.Random(3)
    supply = random_layout(rng, 80, 1000)
    t = time.process_time()
    got = routable_flow(supply, 80)
    assert time.process_time() - t < 0.5
    assert 0 < got <= window_flow(supply, 80) * (1 + 1e-9)

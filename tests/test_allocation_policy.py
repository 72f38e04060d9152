"""`parallax run --allocation-policy ours|parallax|petals`: the baselines' placements on a
live registry, for the testbed benchmark; bad values are config errors naming the flag."""

from __future__ import annotations

import argparse

import pytest

from coordinator.registry import Registry
from coordinator.registry_types import HardwareInfo
from coordinator.scheduler import NodeCapacity, allocate
from coordinator.scheduler.baselines import (
    allocate_baseline,
    allocate_by,
    parallax_allocation,
    petals_allocation,
)
from coordinator.scheduler.perf import PerfModel
from parallax.cli import add_config_arguments
from parallax.config.coordinator import CoordinatorConfig
from parallax.errors import ConfigError, InvalidArgument, NotCovered
from tests.support.registry import OPTS, SPEC, WHOLE, covers

# Unequal memory; none holds the model alone; within Parallax's 65% weight share the
# first two together hold it, and so do the last two: two disjoint pipelines.
MEMORY = (0.95 * WHOLE, 0.6 * WHOLE, 0.8 * WHOLE, 0.7 * WHOLE)
FLOPS = (2e11, 1e11, 1.5e11, 1e11)


def capacities() -> list[NodeCapacity]:
    return [
        NodeCapacity(f"n{i}", memory_bytes=m, flops=f, mem_bandwidth=2e10)
        for i, (m, f) in enumerate(zip(MEMORY, FLOPS, strict=True))
    ]


def test_parallax_policy_gives_disjoint_whole_pipelines() -> None:
    alloc = allocate_baseline("parallax", capacities(), SPEC, OPTS)
    _, pipes = parallax_allocation(capacities(), PerfModel.of(SPEC, OPTS))
    assert len(pipes) >= 2  # two disjoint pipelines fit these nodes
    for pipe in pipes:
        assert pipe[0][1].start == 0 and pipe[-1][1].end == SPEC.num_layers
    held = [n for pipe in pipes for n, _r in pipe]
    assert len(held) == len(set(held))  # no node in two pipelines
    assert alloc.assignments == {n: r for pipe in pipes for n, r in pipe} | {
        n: None for n in alloc.assignments if n not in held
    }
    assert alloc.solver == "parallax" and "--allocation-policy parallax" in alloc.reason
    assert alloc.throughput_tok_s > 0


def test_petals_policy_gives_spans_in_join_order() -> None:
    alloc = allocate_baseline("petals", capacities(), SPEC, OPTS)
    assert alloc.assignments == petals_allocation(capacities(), PerfModel.of(SPEC, OPTS))
    assert covers(alloc.assignments.values())
    # The first joiner starts at layer 0 (every block bare), as Petals' block selection does.
    assert alloc.assignments["n0"].start == 0


def test_ours_is_the_scheduler_and_the_policies_differ() -> None:
    got = {p: allocate_by(p, capacities(), SPEC, OPTS).assignments for p in ("ours", "petals")}
    assert got["ours"] == allocate(capacities(), SPEC, OPTS).assignments
    assert got["ours"] != got["petals"]


def test_a_baseline_that_cannot_cover_the_model_is_not_covered() -> None:
    small = [NodeCapacity("a", 0.4 * WHOLE, 1e11, 2e10)]
    with pytest.raises(NotCovered, match="petals policy leaves layers"):
        allocate_baseline("petals", small, SPEC, OPTS)


def test_registry_allocates_by_its_policy_on_every_join() -> None:
    reg = Registry("tiny", SPEC, dead_after_s=4.0, options=OPTS, policy="parallax")
    for i, (m, f) in enumerate(zip(MEMORY, FLOPS, strict=True)):
        reg.join(f"n{i}", f"127.0.0.1:{7100 + i}", HardwareInfo("cpu", f, 2e10, m), now=0.0)
    by_name = {r.name: r.assignment.range for r in reg.nodes}
    want = allocate_baseline("parallax", capacities(), SPEC, OPTS).assignments
    assert by_name == want
    assert reg.allocation.solver == "parallax"


def test_unknown_policy_is_refused_with_the_flag_named() -> None:
    with pytest.raises(InvalidArgument, match="--allocation-policy"):
        Registry("tiny", SPEC, dead_after_s=4.0, options=OPTS, policy="helix")
    with pytest.raises(ConfigError, match="allocation_policy|allocation-policy"):
        CoordinatorConfig(allocation_policy="helix")
    parser = argparse.ArgumentParser(exit_on_error=False)
    add_config_arguments(parser, CoordinatorConfig)
    ns = parser.parse_args(["--allocation-policy", "petals", "--advertise-host", "h"])
    assert (ns.allocation_policy, ns.advertise_host) == ("petals", "h")
    with pytest.raises(argparse.ArgumentError):
        parser.parse_args(["--allocation-policy", "helix"])

"""The testbed benchmark's bookkeeping (no root needed): its config refuses what cannot
run, and ratios are taken within a round, then their median, the right way up."""

from __future__ import annotations

import math

import pytest

from deploy.testbed.config import ExperimentConfig
from deploy.testbed.experiment import METRICS, format_summary, settled, summarize
from parallax.errors import ConfigError


def run(tok_s: float, ms: float) -> dict:
    return {m: tok_s if m == "output_throughput" else ms for m in METRICS}


def test_ratios_are_within_a_round_and_latency_ratios_say_how_much_faster_ours_is() -> None:
    cfg = ExperimentConfig(rounds=3, policies=("ours", "parallax"), request_rates=(math.inf,))
    # The box slows down round by round; ours is 2x the throughput, half the latency.
    results = [
        {"policy": p, "round": k, "runs": [run(speed * (2 if p == "ours" else 1), 100 / speed
                                                   / (2 if p == "ours" else 1))]}
        for k, speed in enumerate((10.0, 5.0, 1.0))
        for p in ("ours", "parallax")
    ]  # fmt: skip
    got = summarize(cfg, results)["inf"]
    assert got["median"]["ours"]["output_throughput"] == 10.0
    assert got["median"]["parallax"]["median_tpot_ms"] == 20.0
    for m in METRICS:
        assert got["ours_vs"]["parallax"][m] == pytest.approx(2.0)
    assert "ours vs parallax: throughput 2.00x" in format_summary(summarize(cfg, results))


@pytest.mark.parametrize(
    "change",
    [
        {"policies": ("ours", "helix")},
        {"rounds": 0},
        {"request_rates": (0.0,)},
        {"max_model_len": 64},
        {"memory_gb": (0.5, 0.3)},  # 2 values for 4 nodes
        {"coordinator_delay_ms": -1.0},
    ],
)
def test_config_refuses_what_cannot_run(change: dict) -> None:
    with pytest.raises(ConfigError):
        ExperimentConfig(**change)


def test_a_cluster_is_not_settled_until_the_last_join_is_allocated() -> None:
    node = {"name": "n0", "serving": True, "assignment": {"range": [0, 30]}, "loaded": [0, 30]}
    late = {"name": "n1", "serving": False, "assignment": {"range": None}, "loaded": None}
    st = {
        "nodes": [node, late],
        "coverage": {"serving": True},
        # Newest first: n1 joined; its allocation (seconds of solving) is not made yet.
        "decisions": [{"kind": "join"}, {"kind": "allocate"}],
    }
    assert not settled(st, 2)
    assert settled(st | {"decisions": [{"kind": "allocate"}, *st["decisions"]]}, 2)
    loading = dict(node, loaded=None)
    assert not settled(st | {"nodes": [loading, late], "decisions": [{"kind": "allocate"}]}, 2)

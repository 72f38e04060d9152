"""The cluster file parser names bad fields; `parallax plan` prints tables and JSON."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from coordinator.planner_cli import plan_command
from coordinator.scheduler.cluster_file import parse_cluster
from parallax.config.plan import PlanConfig
from parallax.errors import InvalidArgument
from tests.support.plan import SMALL_MODEL

MODEL = SMALL_MODEL


def cluster(**over) -> dict:
    base = {
        "model": MODEL,
        "context_tokens": 512,
        "nodes": [
            {"id": "a", "memory_gb": 1, "mem_bw_gbps": 100, "tflops": 10, "region": "us"},
            {"id": "b", "memory_gb": 1, "mem_bw_gbps": 100, "tflops": 10, "region": "eu"},
        ],
        "regions": {
            "intra_rtt_ms": 1,
            "intra_gbps": 10,
            "inter": {"us-eu": {"rtt_ms": 80, "gbps": 1}},
        },
    }
    base.update(over)
    return base


@pytest.mark.parametrize(
    ("patch", "field"),
    [
        (
            {"nodes": [{"id": "a", "memory_gb": -1, "mem_bw_gbps": 1, "tflops": 1}]},
            "nodes[0].memory_gb",
        ),
        ({"nodes": [{"memory_gb": 1, "mem_bw_gbps": 1, "tflops": 1}]}, "nodes[0].id"),
        ({"nodes": []}, "nodes"),
        ({"model": {**MODEL, "hidden_size": "big"}}, "model.hidden_size"),
        ({"model": "some-name"}, "model"),
        ({"regions": {"inter": {"useu": {"rtt_ms": 1, "gbps": 1}}}}, "regions.inter.useu"),
        ({"context_tokens": 0}, "cluster.context_tokens"),
    ],
)
def test_malformed_field_is_named(patch: dict, field: str) -> None:
    with pytest.raises(InvalidArgument, match=field.replace("[", r"\[").replace("]", r"\]")):
        parse_cluster(cluster(**patch))


def test_links_and_regions_parsed() -> None:
    c = parse_cluster(cluster())
    assert c.options.link("eu", "us").rtt_ms == 80
    assert c.options.link("us", "us").rtt_ms == 1
    assert [n.region for n in c.nodes] == ["us", "eu"]


def test_plan_json_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "c.json"
    path.write_text(json.dumps(cluster()))
    assert plan_command.run(PlanConfig(cluster=str(path), solver="fast", json=True)) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out) >= {"assignments", "throughput_tok_s", "latency_ms_per_token", "solve_s"}
    spans = sorted(tuple(r) for r in out["assignments"].values() if r)
    assert spans[0][0] == 0 and max(e for _s, e in spans) == MODEL["num_layers"]
    assert out["throughput_tok_s"] > 0
    for nid, r in out["assignments"].items():
        e = out["nodes"][nid]
        assert e["layers"] == r and e["why"]
        if r:  # the split adds up to the node's memory (rounded to a thousandth GiB)
            parts = e["weights_gib"] + e["kv_gib"] + e["reserve_gib"]
            assert abs(parts - e["memory_gib"]) < 0.005, e


def test_plan_table_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "c.json"
    path.write_text(json.dumps(cluster()))
    plan_command.run(PlanConfig(cluster=str(path), solver="simple"))
    text = capsys.readouterr().out
    assert "throughput" in text and "why:" in text
    # Every node's row splits its memory: weights, KV room and the reserve.
    assert "weights" in text and "reserve" in text and "batch" in text

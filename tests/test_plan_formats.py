"""`parallax plan` with per-node weight formats: a node spec may say "weights" (fp32,
bf16, fp16, q8, q4) and/or "dtype"; the plan sizes the node with them and shows them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from coordinator.planner_cli import plan_command
from coordinator.scheduler.cluster_file import parse_cluster
from parallax.config.plan import PlanConfig
from parallax.errors import InvalidArgument
from parallax.models.footprint import footprint
from tests.support.plan import SMALL_MODEL

GIB = float(1 << 30)


def node(nid: str, gb: float, **fmt) -> dict:
    return {"id": nid, "memory_gb": gb, "mem_bw_gbps": 100, "tflops": 10, **fmt}


def cluster(nodes: list[dict]) -> dict:
    return {"model": {**SMALL_MODEL, "dtype_bytes": 4}, "context_tokens": 512, "nodes": nodes}


def test_a_node_spec_names_its_format() -> None:
    c = parse_cluster(
        cluster(
            [
                node("a", 1),
                node("b", 1, weights="bf16"),
                node("c", 1, weights="q4"),
                node("d", 1, weights="q8", dtype="float32"),
                node("e", 1, dtype="float16"),
            ]
        )
    )
    fps = {n.node_id: n.footprint for n in c.nodes}
    assert fps["a"] is None  # the model's dtype_bytes
    assert fps["b"] == footprint(c.model, "bfloat16")
    assert fps["c"] == footprint(c.model, "bfloat16", "q4")
    assert fps["d"] == footprint(c.model, "float32", "q8")
    assert fps["e"] is not None and fps["e"].weights == "fp16"


@pytest.mark.parametrize(
    ("fmt", "match"),
    [
        ({"weights": "q3"}, r"nodes\[0\].*q3"),
        ({"dtype": "float64"}, r"nodes\[0\]\.dtype"),
        ({"weights": "fp32", "dtype": "bfloat16"}, r"nodes\[0\].*--dtype"),
    ],
)
def test_a_bad_format_names_the_field(fmt: dict, match: str) -> None:
    with pytest.raises(InvalidArgument, match=match):
        parse_cluster(cluster([node("a", 1, **fmt)]))


def test_plan_gives_a_bf16_node_about_twice_an_fp32_nodes_layers(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Same memory: the bf16 node takes about twice the layers; the table and the JSON
    say each node's format."""
    spec = parse_cluster(cluster([node("x", 1)])).model
    fp32 = footprint(spec, "float32")
    # Neither holds the model alone in bf16: about 0.4 of a float32 copy each.
    whole = spec.num_layers * (fp32.weight_bytes + 512 * fp32.kv_bytes_per_token)
    gb = 0.45 * (whole + fp32.embedding_bytes + fp32.head_bytes) / 0.9 / GIB
    path = tmp_path / "c.json"
    path.write_text(
        json.dumps(cluster([node("f32", gb, weights="fp32"), node("b16", gb, weights="bf16")]))
    )
    assert plan_command.run(PlanConfig(cluster=str(path), solver="fast", json=True)) == 0
    out = json.loads(capsys.readouterr().out)
    a, b = out["assignments"]["f32"], out["assignments"]["b16"]
    assert a is not None and b is not None, out
    assert (b[1] - b[0]) >= 1.7 * (a[1] - a[0]), out["assignments"]
    assert out["nodes"]["f32"]["format"] == "fp32" and out["nodes"]["b16"]["format"] == "bf16"
    assert plan_command.run(PlanConfig(cluster=str(path), solver="fast")) == 0
    text = capsys.readouterr().out
    assert "format" in text and " bf16 " in text and " fp32 " in text

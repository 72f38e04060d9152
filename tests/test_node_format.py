"""A node's dtype, weight format and bytes at join, over a real Coordinator gRPC server
on 127.0.0.1: planned with, shown, kept across a restart, and refused when implausible."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from rich.console import Console

from coordinator.registry_types import NodeRecord
from coordinator.snapshot import node_json
from coordinator.state_file import StateFile
from coordinator.status_cli import nodes_table
from node.control import ControlClient, JoinRefused
from node.model_format import model_format
from parallax.config.node import NodeConfig
from parallax.models.footprint import footprint
from parallax.rpc import parallax_pb2 as pb
from tests.support.control import HW, coordinator, run
from tests.support.registry import SPEC, WHOLE


def _record(reg, node_id) -> NodeRecord:
    rec = reg.get(node_id)
    assert rec is not None
    return rec


def test_the_join_carries_the_nodes_format_and_the_coordinator_plans_with_it() -> None:
    async def main():
        async with coordinator() as (reg, address):
            client = ControlClient(address)
            cfg = NodeConfig(coordinator=address, name="n")
            # With the model's shape (--model): its own bytes; bfloat16 floats.
            bf16 = model_format(torch.bfloat16, "auto", SPEC)
            nid, _, _ = await client.join(cfg, "127.0.0.1:5901", HW, model_format=bf16)
            assert _record(reg, nid).hardware.footprint == footprint(SPEC, "bfloat16")
            # Without it (the model comes from the coordinator): the formula's bytes.
            q4 = model_format(torch.float32, "q4", None)
            assert q4.layer_bytes == 0 and q4.weights == "q4"
            nid2, _, _ = await ControlClient(address).join(
                cfg, "127.0.0.1:5902", HW, model_format=q4
            )
            got = _record(reg, nid2).hardware.footprint
            assert got == footprint(SPEC, "float32", "q4")
            assert node_json(_record(reg, nid2), 0.0)["hardware"]["format"]["label"] == (
                "q4/float32"
            )
            # `parallax status` shows it beside the memory.
            console = Console(width=240, record=True, no_color=True)
            console.print(nodes_table({"nodes": [node_json(r, 0.0) for r in reg.nodes]}))
            text = console.export_text()
            assert "bf16" in text and "q4/float32" in text
            # An older node sends none: the cluster-wide dtype.
            nid3, _, _ = await ControlClient(address).join(cfg, "127.0.0.1:5903", HW)
            assert _record(reg, nid3).hardware.footprint is None
            assert node_json(_record(reg, nid3), 0.0)["hardware"]["format"] is None
            await client.close()

    run(main())


@pytest.mark.parametrize(
    ("fmt", "match"),
    [
        # Claims fp32 weights with q4's bytes per layer: a quarter of what it would hold.
        (
            lambda: pb.ModelFormat(
                dtype="float32",
                weights="fp32",
                layer_bytes=footprint(SPEC, "float32", "q4").weight_bytes,
                kv_bytes_per_token=footprint(SPEC, "float32").kv_bytes_per_token,
                embedding_bytes=footprint(SPEC, "float32").embedding_bytes,
                head_bytes=footprint(SPEC, "float32").head_bytes,
            ),
            "weight_bytes=.*fp32",
        ),
        (lambda: pb.ModelFormat(dtype="float64", weights="fp32"), "float64"),
        (lambda: pb.ModelFormat(dtype="bfloat16", weights="fp32"), "--dtype"),
        (lambda: pb.ModelFormat(dtype="float32", weights="q3"), "q3"),
        (lambda: pb.ModelFormat(dtype="float32", weights="fp32", layer_bytes=1e6), "positive"),
    ],
)
def test_an_implausible_format_is_refused_saying_why(fmt, match: str) -> None:
    async def main():
        async with coordinator() as (reg, address):
            client = ControlClient(address)
            cfg = NodeConfig(coordinator=address, name="liar")
            with pytest.raises(JoinRefused, match=match):
                await client.join(cfg, "127.0.0.1:5911", HW, model_format=fmt())
            assert not reg.nodes
            # The coordinator keeps serving honest nodes.
            ok = model_format(torch.float32, "auto", SPEC)
            await client.join(cfg, "127.0.0.1:5912", HW, model_format=ok)
            assert len(reg.nodes) == 1
            await client.close()

    run(main())


def test_a_bf16_node_holds_about_twice_the_layers_of_an_fp32_node_with_its_memory() -> None:
    """Through the registry: neither node holds the model alone; planned both in float32
    (no format sent) they could not hold it at all."""
    memory = 0.5 * WHOLE
    hw = dataclasses.replace(HW, memory_bytes=memory)

    async def main():
        async with coordinator() as (reg, address):
            cfg = NodeConfig(coordinator=address, name="n")
            a, b = ControlClient(address), ControlClient(address)
            fp32 = model_format(torch.float32, "auto", SPEC)
            bf16 = model_format(torch.bfloat16, "auto", SPEC)
            n32, _, _ = await a.join(cfg, "127.0.0.1:5921", hw, model_format=fp32)
            n16, _, _ = await b.join(cfg, "127.0.0.1:5922", hw, model_format=bf16)
            r32, r16 = _record(reg, n32).assignment.range, _record(reg, n16).assignment.range
            assert r32 is not None and r16 is not None, reg.nodes
            covered = {*range(r32.start, r32.end), *range(r16.start, r16.end)}
            assert covered == set(range(SPEC.num_layers))  # they may overlap
            assert len(r16) >= 1.7 * len(r32), (r32, r16)
            await a.close()
            await b.close()
        async with coordinator() as (reg, address):
            cfg = NodeConfig(coordinator=address, name="old")
            a, b = ControlClient(address), ControlClient(address)
            await a.join(cfg, "127.0.0.1:5923", hw)
            await b.join(cfg, "127.0.0.1:5924", hw)
            assert all(r.assignment.range is None for r in reg.nodes)
            await a.close()
            await b.close()

    run(main())


def test_the_format_survives_a_coordinator_restart(tmp_path) -> None:
    async def main():
        async with coordinator() as (reg, address):
            client = ControlClient(address)
            cfg = NodeConfig(coordinator=address, name="n")
            fmt = model_format(torch.bfloat16, "q8", SPEC)
            await client.join(cfg, "127.0.0.1:5931", HW, model_format=fmt)
            await client.close()
            return list(reg.nodes)

    records = run(main())
    file = StateFile(str(tmp_path))
    file.save("tiny", records)
    (back,) = file.load("tiny", 0.0)
    assert back.hardware.footprint == footprint(SPEC, "bfloat16", "q8")

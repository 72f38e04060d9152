"""`parallax bench hop`: per-hop overhead of a decode message on loopback gRPC.

Times serialise + send + receive + deserialise (+ the ack) of a Forward message
carrying `[batch, hidden]` activations, against a server that decodes and
validates it with the same codec the nodes use.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
from typing import Any

import grpc
import torch

from node.peers import CHANNEL_OPTIONS
from parallax.config.bench import BenchConfig
from parallax.rpc import parallax_pb2 as pb
from parallax.rpc import parallax_pb2_grpc as pb_grpc
from parallax.wire.codec import decode_tensor, encode_tensor


class DecodingNode(pb_grpc.NodeServicer):
    def __init__(self, hidden: int):
        self.hidden = hidden

    async def Forward(self, request, context):
        rows = sum(c.num_tokens for c in request.chunks)
        decode_tensor(
            request.hidden,
            hidden_size=self.hidden,
            rows=rows,
            max_bytes=2**30,
            out_dtype=torch.float32,
        )
        return pb.Ack(ok=True)


def percentile(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


async def measure(hidden: int, batch: int, iters: int, wire: torch.dtype | None) -> dict:
    server = grpc.aio.server(options=CHANNEL_OPTIONS)
    pb_grpc.add_NodeServicer_to_server(DecodingNode(hidden), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=CHANNEL_OPTIONS) as ch:
        stub = pb_grpc.NodeStub(ch)
        x = torch.randn(batch, hidden)
        chunks = [
            pb.SeqChunk(request_id=f"r{i}", start_pos=100, num_tokens=1) for i in range(batch)
        ]
        times = []
        for i in range(iters + 20):
            t0 = time.perf_counter()
            msg = pb.ForwardRequest(chunks=chunks, hidden=encode_tensor(x, wire))
            await stub.Forward(msg, timeout=10)
            if i >= 20:  # warm-up excluded
                times.append((time.perf_counter() - t0) * 1000)
    await server.stop(0)
    return {
        "hidden": hidden,
        "batch": batch,
        "wire_dtype": str(wire or torch.float32).replace("torch.", ""),
        "p50_ms": statistics.median(times),
        "p99_ms": percentile(times, 0.99),
        "bytes": batch * hidden * (2 if wire else 4),
    }


def bench_hop(config: BenchConfig) -> dict[str, Any]:
    iters = 200 if config.quick else 2000
    rows = []
    for hidden in (576, 4096):
        for batch in (1, 16):
            for wire in (None, torch.bfloat16):
                r = asyncio.run(measure(hidden, batch, iters, wire))
                rows.append(r)
                print(
                    f"hidden {hidden:5d} batch {batch:2d} {r['wire_dtype']:8s} "
                    f"p50 {r['p50_ms']:.3f} ms  p99 {r['p99_ms']:.3f} ms",
                    file=sys.stderr,
                    flush=True,
                )
    target = next(
        r for r in rows if r["hidden"] == 4096 and r["batch"] == 1 and r["wire_dtype"] == "float32"
    )
    return {"iters": iters, "rows": rows, "target_p50_le_1ms": target["p50_ms"] <= 1.0}

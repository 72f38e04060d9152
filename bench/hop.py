"""`parallax bench hop`: per-hop overhead of a decode message on loopback gRPC.

Times serialise + send + receive + deserialise (+ the ack) of a Forward message
carrying `[batch, hidden]` activations, against a server that decodes and
validates it with the same codec the nodes use.
"""

from __future__ import annotations

import asyncio
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import grpc
import torch

from node.peers import CHANNEL_OPTIONS
from parallax.config.bench import BenchConfig
from parallax.rpc import parallax_pb2 as pb
from parallax.rpc import parallax_pb2_grpc as pb_grpc
from parallax.rpc.grants import RouteSigner, RouteVerifier, event_mac, event_mac_ok, same_signature
from parallax.rpc.tls import CLUSTER_NAME, Tls, add_port, open_channel
from parallax.wire.codec import decode_tensor, encode_tensor


class DecodingNode(pb_grpc.NodeServicer):
    def __init__(self, hidden: int, held: dict[str, bytes] | None = None):
        self.hidden = hidden
        self.held = held  # request id -> grant signature: check every chunk as nodes do

    async def Forward(self, request, context):
        if self.held is not None and not all(
            same_signature(self.held[c.request_id], c.grant_signature) for c in request.chunks
        ):
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, "no grant")
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


def ephemeral_tls(directory: Path) -> Tls | None:
    """A throwaway cluster CA and one certificate, made with the openssl commands that
    deploy/README.md gives; None when openssl is not installed."""
    if shutil.which("openssl") is None:
        return None
    d = str(directory)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
    for cmd in (
        ["req", "-x509", *ec, "-days", "1", "-subj", "/CN=bench-ca"]
        + ["-keyout", f"{d}/ca.key", "-out", f"{d}/ca.pem"],
        ["req", *ec, "-subj", "/CN=bench", "-addext", f"subjectAltName=DNS:{CLUSTER_NAME}"]
        + ["-keyout", f"{d}/node.key", "-out", f"{d}/node.csr"],
        ["x509", "-req", "-in", f"{d}/node.csr", "-CA", f"{d}/ca.pem", "-CAkey", f"{d}/ca.key"]
        + ["-CAcreateserial", "-days", "1", "-copy_extensions", "copy", "-out", f"{d}/node.pem"],
    ):
        subprocess.run(["openssl", *cmd], check=True, capture_output=True)
    return Tls.from_files(f"{d}/node.pem", f"{d}/node.key", f"{d}/ca.pem")


async def measure(
    hidden: int,
    batch: int,
    iters: int,
    wire: torch.dtype | None,
    tls: Tls | None = None,
    grants: bool = False,
) -> dict:
    signatures = {f"r{i}": bytes([i % 256]) * 64 for i in range(batch)}
    server = grpc.aio.server(options=CHANNEL_OPTIONS)
    node = DecodingNode(hidden, signatures if grants else None)
    pb_grpc.add_NodeServicer_to_server(node, server)
    port = add_port(server, "127.0.0.1:0", tls)
    await server.start()
    async with open_channel(f"127.0.0.1:{port}", tls, CHANNEL_OPTIONS) as ch:
        stub = pb_grpc.NodeStub(ch)
        x = torch.randn(batch, hidden)
        chunks = [
            pb.SeqChunk(
                request_id=f"r{i}",
                start_pos=100,
                num_tokens=1,
                grant_signature=signatures[f"r{i}"] if grants else b"",
            )
            for i in range(batch)
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
        "tls": tls is not None,
        "grants": grants,
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
    # Mutual TLS against plain, interleaved in the same run (absolute times are noise).
    with tempfile.TemporaryDirectory() as tmp:
        tls = ephemeral_tls(Path(tmp))
        if tls is None:
            print("openssl is not installed: TLS rows skipped", file=sys.stderr)
        for batch in (1, 16) if tls else ():
            pair = [asyncio.run(measure(4096, batch, iters, None, t)) for t in (None, tls)]
            rows.append(pair[1])
            print(
                f"hidden  4096 batch {batch:2d} float32 TLS p50 {pair[1]['p50_ms']:.3f} ms "
                f"vs plain {pair[0]['p50_ms']:.3f} ms ({pair[1]['p50_ms'] / pair[0]['p50_ms']:.2f}x)",
                file=sys.stderr,
                flush=True,
            )
            pair[1]["plain_p50_ms_same_run"] = pair[0]["p50_ms"]
    grants = grant_costs(iters, rows)
    target = next(
        r
        for r in rows
        if r["hidden"] == 4096
        and r["batch"] == 1
        and r["wire_dtype"] == "float32"
        and not r["tls"]
        and not r["grants"]
    )
    return {
        "iters": iters,
        "rows": rows,
        "grants": grants,
        "target_p50_le_1ms": target["p50_ms"] <= 1.0,
    }


def grant_costs(iters: int, rows: list[dict]) -> dict[str, Any]:
    """What route grants cost (issue 11: at most 5% of a loopback hop). Per message:
    every chunk shows its grant's signature and the node compares it (hop p50 with and
    without, interleaved in rounds). Per request: the gateway signs once, each hop
    verifies once. Per token: the last hop MACs its event and the gateway checks it."""
    ratios = []
    for _ in range(3):
        for batch in (1, 16):
            pair = [asyncio.run(measure(4096, batch, iters, None, grants=g)) for g in (False, True)]
            rows.append(pair[1])
            pair[1]["plain_p50_ms_same_run"] = pair[0]["p50_ms"]
            ratios.append((batch, pair[1]["p50_ms"] / pair[0]["p50_ms"]))
    signer = RouteSigner.generate()
    verifier = RouteVerifier(signer.public_key)
    submit = pb.SubmitRequest(request_id="r", prompt_ids=list(range(64)), reply_to="127.0.0.1:1")
    for k in range(3):
        submit.route.hops.add(node_id=f"n{k}", address=f"127.0.0.1:{k + 2}", start=k, end=k + 1)
    submit.capability.CopyFrom(signer.sign(submit))
    secret, ev = b"s" * 32, pb.TokenEvent(request_id="r", token_id=7, index=3)
    ev.mac = event_mac(secret, ev)
    n = max(200, iters)
    us = {
        "sign_us": _timed_us(lambda: signer.sign(submit), n),
        "verify_us": _timed_us(lambda: verifier.verify(submit), n),
        "event_mac_us": _timed_us(lambda: event_mac(secret, ev), n),
        "event_check_us": _timed_us(lambda: event_mac_ok(secret, ev), n),
    }
    hop_us = 1000 * statistics.median(
        r["plain_p50_ms_same_run"] for r in rows if r.get("grants") and r["batch"] == 1
    )
    per_token = us["event_mac_us"] + us["event_check_us"]
    out = {
        **us,
        "hop_p50_us_same_run": hop_us,
        "chunk_check_ratio_median": {
            b: statistics.median(r for bb, r in ratios if bb == b) for b in (1, 16)
        },
        "per_token_mac_vs_hop": per_token / hop_us,
        "per_request_sign_verify_vs_hop": (us["sign_us"] + us["verify_us"]) / hop_us,
    }
    for k, v in out.items():
        print(f"grants {k}: {v}", file=sys.stderr, flush=True)
    return out


def _timed_us(fn, n: int) -> float:
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e6)
    return statistics.median(times)

"""`parallax generate` (one local process) and `parallax join` (a volunteer node)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys

import torch

from parallax.cli import Command
from parallax.config.generate import GenerateConfig
from parallax.config.node import NodeConfig
from parallax.config.tls import load_tls
from parallax.errors import ParallaxError
from parallax.sampling import SamplingParams
from parallax.types import LayerRange

log = logging.getLogger(__name__)


def generate(cfg: GenerateConfig) -> int:
    from node.engine.engine import LocalEngine, compute_dtype
    from node.weights import load_shard_model
    from parallax.models.registry import resolve_model
    from parallax.tokenizer import IncrementalDetokenizer, Tokenizer

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    resolved = resolve_model(cfg.model)
    tok = Tokenizer.from_model(resolved)
    model = load_shard_model(
        resolved,
        LayerRange(0, resolved.spec.num_layers),
        compute_dtype(cfg),
        cfg.device,
        weights=cfg.weights,
    )
    engine = LocalEngine(model, cfg, tok.eos_token_ids, vocab_limit=tok.vocab_size)
    if cfg.raw:
        prompt = tok.encode(cfg.prompt, add_special_tokens=True)
    else:
        prompt = tok.encode_chat([{"role": "user", "content": cfg.prompt}])
    params = SamplingParams(
        temperature=cfg.temperature,
        top_p=cfg.top_p,
        top_k=cfg.top_k,
        seed=cfg.seed,
        max_tokens=cfg.max_tokens,
    )
    engine.add_request("cli", prompt, params)
    detok = IncrementalDetokenizer(tok, prompt)
    while engine.has_work():
        for r in engine.step():
            finished_by_eos = r.finish_reason == "stop" and r.sampled.token_id in tok.eos_token_ids
            if not finished_by_eos:
                sys.stdout.write(detok.add(r.sampled.token_id))
                sys.stdout.flush()
    sys.stdout.write(detok.flush() + "\n")
    return 0


async def _check_identity(client, resolved) -> None:
    """Without --model the node serves the coordinator's path, found on this machine:
    refuse before loading anything if that is other bytes, and leave at once so the
    layers it was given go back to the others. (A --model was compared at the join.)"""
    from parallax.models.identity import ModelIdentity, check_same_model, model_identity

    if client.model_parts is None:
        return
    served = ModelIdentity.of_parts(client.model_parts)
    ours = await asyncio.to_thread(model_identity, resolved)
    try:
        check_same_model(ours, served, resolved.path, client.assignment.model)
    except ParallaxError:
        await client.leave()
        raise


async def run_node(cfg: NodeConfig) -> int:
    from node.control import ControlClient
    from node.hardware import measure_hardware
    from node.model_format import model_format
    from node.server import NodeServer
    from node.weights.peer_model import file_store, local_model, open_remote
    from parallax.models.identity import ModelIdentity, model_identity
    from parallax.models.registry import resolve_model
    from parallax.tokenizer import Tokenizer
    from parallax.weights.serve import WeightsService

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    tls = load_tls(cfg)  # before the slow part: a missing file fails at once
    hardware = await asyncio.to_thread(measure_hardware, cfg.device, 1.5, cfg.memory_gb)
    server = NodeServer(cfg, name=cfg.name, wire_dtype=cfg.wire_dtype, tls=tls)
    weights = WeightsService(cfg.share_mbps)  # serves what this node holds to peers
    port = await server.start(cfg.host, cfg.port, weights)
    address = f"{cfg.advertise_host or cfg.host}:{port}"
    print(f"node grpc listening on {address}", flush=True)
    client = ControlClient(cfg.coordinator, tls=tls)
    remote = None  # a PeerModel or HubModel when the weights come from elsewhere
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        metrics_port = server.start_metrics(cfg.host, cfg.metrics_port)
        # Advertised like the gRPC address, so Prometheus can find it from the coordinator.
        metrics_address = f"{cfg.advertise_host or cfg.host}:{metrics_port}"
        print(f"node metrics listening on http://{metrics_address}", flush=True)
        # A --model is hashed before the join: the coordinator compares its identity
        # (so any path to the same bytes is accepted) and refuses other bytes.
        own = await asyncio.to_thread(resolve_model, cfg.model) if cfg.model else None
        parts = (await asyncio.to_thread(model_identity, own)).parts if own else None
        # Its dtype, weight format and bytes per layer: the coordinator plans with them.
        fmt = model_format(server.dtype, cfg.weights, own.spec if own else None)
        node_id, assignment, _ = await client.join(
            cfg, address, hardware, metrics_address, model_parts=parts, model_format=fmt
        )
        server.set_identity(node_id, client.secret, client.route_key)
        served = ModelIdentity.of_parts(client.model_parts) if client.model_parts else None
        resolved = own or await local_model(cfg.fetch_weights, assignment.model)
        if resolved is None:  # fetched from peers (each chunk checked) or the hub
            remote = await open_remote(
                assignment.model,
                cfg.fetch_weights,
                cfg.coordinator,
                address,
                cfg.cache_dir,
                served,
                weights,
                tls,
            )
            resolved = remote.resolved
        else:
            if own is None:
                await _check_identity(client, resolved)
            store = file_store(resolved)
            if served is not None and store is not None:
                weights.hold(store, served.digest)
        tok = Tokenizer.from_model(resolved)
        server.set_model(resolved, tok.eos_token_ids, vocab_limit=tok.vocab_size)
        print(f"node {node_id} joined; serving {resolved.name}", flush=True)

        loading = asyncio.Lock()  # the first load and a heartbeat's change must not overlap

        async def on_assignment(a) -> None:
            if server.draining:  # its requests run out on what it holds, then it leaves
                return
            layers = None if a.standby or a.end <= a.start else LayerRange(a.start, a.end)
            # A coordinator restart re-joins us under a new id: always take the current one.
            server.set_identity(client.node_id, client.secret, client.route_key)
            async with loading:
                if remote is not None:  # fetch what these layers lack first
                    await remote.ensure(layers)
                await server.load(layers)
            if server.pipeline is not None:
                server.pipeline.node_id = client.node_id
            print(f"node {client.node_id} state {server.state} layers {layers}", flush=True)

        # Heartbeats start before the first load: a slow load must not look like a crash.
        beat = asyncio.create_task(client.heartbeat_loop(server.status, on_assignment))
        await on_assignment(assignment)
        await stop.wait()
        # Heartbeats go on while it drains: they tell the coordinator it is leaving, so
        # others take its layers and no new request is routed to it.
        print(f"node {client.node_id} draining (up to {cfg.drain_s:g} s)", flush=True)
        handed_back = await server.drain(cfg.drain_s)
        print(f"node {client.node_id} drained; {handed_back} requests handed back", flush=True)
        beat.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await beat
        await client.leave()
    finally:
        await client.close()
        await server.stop()
        if remote is not None:
            await remote.close()
    return 0


def join(cfg: NodeConfig) -> int:
    try:
        return asyncio.run(run_node(cfg))
    except ParallaxError as e:
        print(f"parallax join: error: {e}", file=sys.stderr)
        return 2


generate_command = Command("generate", GenerateConfig, generate, GenerateConfig.command_help)
join_command = Command("join", NodeConfig, join, NodeConfig.command_help)

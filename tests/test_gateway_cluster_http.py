"""The whole gateway path over gRPC: openai client -> HTTP -> ClusterBackend -> fake nodes."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import grpc

from coordinator.gateway.app import create_app
from coordinator.gateway.cluster_backend import ClusterBackend
from coordinator.scheduler.types import ClusterState
from parallax.config.coordinator import CoordinatorConfig
from parallax.rpc import parallax_pb2_grpc as pb_grpc
from tests.support.fake_nodes import FakeNode, LoopThread, chain, start_nodes
from tests.support.gateway import MODEL_ID, TEST_CONTEXT, ServerThread
from tests.support.wait import wait_until

LAYERS = 30
USER = [{"role": "user", "content": "Hi"}]
TEXT = "Hello there, friend"


@dataclass
class Stack:
    nodes: list[FakeNode]
    http: ServerThread

    def client(self):
        import openai

        return openai.OpenAI(api_key="x", base_url=self.http.base_url + "/v1", max_retries=0)


@contextmanager
def _stack(tokenizer, hang: bool) -> Iterator[Stack]:
    script = tuple(tokenizer.encode(TEXT))
    nodes = [FakeNode(n, script=script, hang=hang, delay_s=0.02) for n in "abc"]
    with LoopThread() as loop:
        servers = loop.run(start_nodes(nodes))
        gateway = loop.run(_grpc_server())
        port = gateway.add_insecure_port("127.0.0.1:0")
        route = chain(nodes, LAYERS)
        backend = ClusterBackend(
            lambda: ClusterState(LAYERS, ()),
            LAYERS,
            f"127.0.0.1:{port}",
            route_fn=lambda _r, _s: route,
        )
        pb_grpc.add_GatewayServicer_to_server(backend.servicer, gateway)
        loop.run(gateway.start())
        app = create_app(backend, CoordinatorConfig(), tokenizer, MODEL_ID, TEST_CONTEXT)
        try:
            with ServerThread(app) as http:
                yield Stack(nodes, http)
        finally:
            loop.run(gateway.stop(None))
            for s in servers:
                loop.run(s.stop(None))


async def _grpc_server() -> grpc.aio.Server:
    return grpc.aio.server()


def test_chat_over_grpc_finishes_and_releases(tokenizer):
    with _stack(tokenizer, hang=False) as stack:
        out = stack.client().chat.completions.create(model=MODEL_ID, messages=USER)
        assert out.choices[0].message.content == TEXT
        rid = stack.nodes[0].submits[0].request_id
        wait_until(
            lambda: all(n.releases == [((rid,), "finished")] for n in stack.nodes),
            what="every node to release the finished request",
        )


def test_closing_the_stream_releases_on_every_hop(tokenizer):
    with _stack(tokenizer, hang=True) as stack:
        stream = stack.client().chat.completions.create(model=MODEL_ID, messages=USER, stream=True)
        seen = ""
        for chunk in stream:
            seen += chunk.choices[0].delta.content or ""
            if seen.startswith("Hello"):
                break
        stream.close()
        rid = stack.nodes[0].submits[0].request_id
        wait_until(
            lambda: all(n.releases == [((rid,), "abort")] for n in stack.nodes),
            what="every node to release the aborted request",
        )

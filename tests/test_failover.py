"""Live coordinator: a killed node is re-covered; smaller nodes get fewer layers."""

from __future__ import annotations

import os
import signal

from coordinator.scheduler.memory import MemoryModel
from coordinator.server import allocate_options
from parallax.config.coordinator import CoordinatorConfig
from parallax.models.registry import resolve_model
from tests.support.chat import chat
from tests.support.cluster import Cluster, routed_hops
from tests.support.tiny_models import make_tiny_model
from tests.support.wait import wait_until


def test_killed_node_is_recovered_and_the_cluster_serves_again(tiny_models):
    with Cluster(str(tiny_models["llama"]), nodes=3, min_stages=3) as cluster:
        before = chat(cluster.http_url, "hello there")
        victim = cluster.workers[1]
        os.killpg(victim.popen.pid, signal.SIGKILL)

        def recovered():
            st = cluster.status()
            dead = [n for n in st["nodes"] if n["state"] == "dead"]
            return dead and st["coverage"]["serving"] and st

        st = wait_until(recovered, 90, "the lost layers to be served again")
        assert (
            any(d["kind"] in ("dead", "realloc", "allocation") for d in st["decisions"])
            or st["allocation"]["reason"]
        )
        assert chat(cluster.http_url, "hello there") == before


def test_node_with_less_memory_gets_fewer_layers(tmp_path):
    model = make_tiny_model(tmp_path / "deep", "llama", num_layers=12)
    # Sized from what the coordinator will plan with (its context, its KV per layer), so
    # that the small node cannot hold the whole model and the big one holds it twice.
    resolved = resolve_model(str(model))
    opts = allocate_options(CoordinatorConfig(model=str(model)), resolved)
    whole_gib = MemoryModel.of(resolved.spec, opts).total_need() / 2**30
    with Cluster(str(model), nodes=0, min_stages=1) as cluster:
        cluster.add_node("big", "--memory-gb", f"{2.0 * whole_gib:.6f}")
        cluster.add_node("small", "--memory-gb", f"{0.6 * whole_gib:.6f}")
        st = cluster.wait_ready(2)
        size = {
            n["name"]: n["assignment"]["range"][1] - n["assignment"]["range"][0]
            for n in st["nodes"]
        }
        assert size["small"] < size["big"], size
        assert chat(cluster.http_url, "hi")


def test_stream_survives_a_killed_hop_by_replay(tiny_models):
    import json

    import httpx

    from parallax.models.registry import resolve_model
    from parallax.sampling import SamplingParams
    from parallax.tokenizer import Tokenizer
    from tests.support.engine import local_engine

    path = tiny_models["llama"]
    tok = Tokenizer.from_model(resolve_model(str(path)))
    prompt = tok.encode_chat([{"role": "user", "content": "keep talking"}])
    eng = local_engine(path, eos_ids=(), vocab_limit=tok.vocab_size)
    want = tok.decode(eng.generate([prompt], SamplingParams(max_tokens=450))[0])
    with Cluster(str(path), nodes=3, min_stages=3) as cluster:
        mid = httpx.get(f"{cluster.http_url}/v1/models", timeout=10).json()["data"][0]["id"]
        body = {
            "model": mid,
            "messages": [{"role": "user", "content": "keep talking"}],
            "max_tokens": 450,
            "temperature": 0,
            "ignore_eos": True,
            "stream": True,
        }
        text, finish, chunks = "", None, 0
        with httpx.stream(
            "POST", f"{cluster.http_url}/v1/chat/completions", json=body, timeout=120
        ) as r:
            for line in r.iter_lines():
                if not line.startswith("data: {"):
                    continue
                for ch in json.loads(line[6:])["choices"]:
                    text += ch["delta"].get("content") or ""
                    finish = ch.get("finish_reason") or finish
                chunks += 1
                if chunks == 3:
                    # Mid-stream, kill the request's second hop: the chain breaks, and the
                    # gateway must replay prompt + tokens so far on a re-covered chain.
                    # (A one-hop chain, where one node's range holds the whole model:
                    # that node, and the replay goes to another replica.)
                    hops = routed_hops(cluster)
                    victim_id = hops[1] if len(hops) > 1 else hops[0]
                    victim = next(
                        w
                        for w in cluster.workers
                        if any(x.startswith(f"node {victim_id} joined") for x in w.lines)
                    )
                    os.killpg(victim.popen.pid, signal.SIGKILL)
        assert finish == "length"
        assert text == want
        # The stream really crossed a failure: the gateway replayed it on a new chain.
        replayed = any("replaying request on a new chain" in x for x in cluster.coordinator.lines)
        logs = [x for w in [cluster.coordinator, *cluster.workers] for x in w.lines]
        noted = [x for x in logs if "warn" in x or "error" in x or "routed" in x]
        assert replayed, f"victim {victim_id}\n" + "\n".join(noted)[-3000:]
        wait_until(
            lambda: (
                [n["node_id"] for n in cluster.status()["nodes"] if n["state"] == "dead"]
                == [victim_id]
            ),
            30,
            "the killed node to be marked dead",
        )

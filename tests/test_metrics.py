"""Prometheus `/metrics` of a live 2-node cluster: it parses, and counters move with traffic."""

from __future__ import annotations

import time

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.cluster import Cluster, routed_hops

PROMPT = "metrics-canary prompt: count to five"


def scrape(url: str) -> dict[tuple[str, frozenset], float]:
    """Every sample as (name, labels) -> value; raises if the exposition does not parse."""
    text = httpx.get(url, timeout=5).raise_for_status().text
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def total(samples: dict, name: str, **labels: str) -> float:
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= ls)


def chat(url: str, stream: bool) -> int:
    model = httpx.get(f"{url}/v1/models", timeout=5).json()["data"][0]["id"]
    body = {
        "model": model,
        "messages": [{"role": "user", "content": PROMPT}],
        "max_tokens": 8,
        "temperature": 0,
        "stream": stream,
    }
    if stream:
        body["stream_options"] = {"include_usage": True}
    r = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=60)
    r.raise_for_status()
    if not stream:
        return r.json()["usage"]["completion_tokens"]
    return sum(1 for line in r.text.splitlines() if '"content":"' in line)


@pytest.fixture(scope="module")
def cluster(tiny_models):
    # No spot checks: they would step nodes off the chat's chain between two scrapes.
    no_checks = ("--verify-rate", "0", "--verify-idle-s", "0")
    with Cluster(str(tiny_models["llama"]), nodes=2, min_stages=2, coordinator_args=no_checks) as c:
        yield c


def node_metrics_urls(cluster) -> list[str]:
    urls = [w.wait_for(r"node metrics listening on (\S+)", 10).group(1) for w in cluster.workers]
    return [f"{u}/metrics" for u in urls]


def test_coordinator_counters_move_with_requests(cluster):
    url = f"{cluster.http_url}/metrics"
    before = scrape(url)
    tokens = chat(cluster.http_url, stream=False) + chat(cluster.http_url, stream=True)
    after = scrape(url)

    def moved(name: str, **labels: str) -> float:
        return total(after, name, **labels) - total(before, name, **labels)

    ended = moved("parallax_requests_total", outcome="length") + moved(
        "parallax_requests_total", outcome="stop"
    )
    assert ended == 2
    assert moved("parallax_generated_tokens_total") >= tokens > 0
    assert moved("parallax_prompt_tokens_total") > 0
    assert moved("parallax_time_to_first_token_seconds_count") == 2
    assert moved("parallax_inter_token_seconds_count") >= tokens - 2
    assert total(after, "parallax_active_requests") == 0
    # Cluster figures come from the registry: both nodes ready, nothing uncovered.
    nodes = {n["node_id"] for n in cluster.status()["nodes"]}
    for node in nodes:
        assert total(after, "parallax_node_state", node=node, state="ready") == 1
        assert total(after, "parallax_node_kv_total_tokens", node=node) > 0
    assert total(after, "parallax_uncovered_layers") == 0
    assert total(after, "parallax_scheduler_decisions_total", kind="join") == 2
    assert total(after, "parallax_scheduler_decisions_total", kind="allocate") >= 1
    # Logs say what happened, never what was asked.
    assert not any("metrics-canary" in line for line in cluster.coordinator.lines)


def node_id_of(worker) -> str:
    return worker.wait_for(r"node (\S+) joined", 10).group(1)


def test_node_metrics_record_steps_hops_and_state(cluster):
    urls = node_metrics_urls(cluster)
    before = [scrape(u) for u in urls]
    chat(cluster.http_url, stream=False)
    time.sleep(1.5)  # state gauges follow the heartbeat's status reads
    after = [scrape(u) for u in urls]
    # Every node on the chat's chain stepped (the allocation may let one node's range
    # cover the whole model, and the router then takes a one-hop chain).
    hops = routed_hops(cluster)
    ids = [node_id_of(w) for w in cluster.workers]
    for node_id, a, b in zip(ids, after, before, strict=True):
        moved = total(a, "parallax_node_steps_total") > total(b, "parallax_node_steps_total")
        assert moved == (node_id in hops), (node_id, hops)
    sampled = sum(total(a, "parallax_node_tokens_total", kind="sampled") for a in after)
    forwarded = sum(total(a, "parallax_node_tokens_total", kind="forwarded") for a in after)
    assert sampled > 0 and (forwarded > 0) == (len(hops) > 1)
    # Per-hop latency: the first hop forwards hidden states, the last delivers tokens.
    kinds = {
        dict(ls)["kind"]
        for a in after
        for (n, ls), v in a.items()
        if n == "parallax_node_send_seconds_count" and v > 0
    }
    assert "deliver" in kinds and ("forward" in kinds) == (len(hops) > 1)
    for a in after:
        assert total(a, "parallax_node_state", state="ready") == 1
        assert total(a, "parallax_node_kv_total_tokens") > 0
        assert total(a, "parallax_node_layers", bound="end") > 0
        assert total(a, "parallax_node_send_failures_total") == 0
    assert not any("metrics-canary" in line for w in cluster.workers for line in w.lines)


def test_prometheus_discovers_every_node_from_the_coordinator(cluster):
    # What a Prometheus `http_sd_configs` entry pointed at the coordinator would read.
    groups = httpx.get(f"{cluster.http_url}/cluster/prometheus-sd", timeout=5).json()
    status = cluster.status()
    by_id = {n["node_id"]: n for n in status["nodes"]}
    assert sorted(g["labels"]["parallax_node_id"] for g in groups) == sorted(by_id)
    printed = sorted(
        u.removeprefix("http://").removesuffix("/metrics") for u in node_metrics_urls(cluster)
    )
    assert sorted(t for g in groups for t in g["targets"]) == printed
    for g in groups:
        node = by_id[g["labels"]["parallax_node_id"]]
        assert g["labels"]["parallax_node_name"] == node["name"]
        assert g["labels"]["parallax_model"] == status["model"]["name"]
        (target,) = g["targets"]
        samples = scrape(f"http://{target}/metrics")  # a real scrape of what was found
        assert total(samples, "parallax_node_state", state="ready") == 1

"""Serving under load on a live SmolLM2 cluster (real processes, the official client).

- Burst: 300 concurrent chats end each in 200 (text equal to the same prompt run
  alone) or 429 with Retry-After; no 5xx, no hang; the cluster serves normally after.
- Drain: SIGTERM on the middle node while 16 streams run: all 16 end with the text of
  an undisturbed run, and the node exits within --drain-s.
"""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import os
import signal
import time

import openai
import pytest

from tests.support.cluster import Cluster
from tests.support.wait import wait_until

pytestmark = pytest.mark.e2e

MODEL = "smollm2-135m"
PROMPTS = [f"Say the number {i} in words." for i in range(12)]


def _ask(prompt: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": prompt}]


async def _burst(url: str, n: int, max_tokens: int) -> list[tuple[int, str, str | None]]:
    """(status, text, Retry-After) of `n` concurrent chats."""
    client = openai.AsyncOpenAI(api_key="none", base_url=url, max_retries=0, timeout=300)

    async def one(i: int) -> tuple[int, str, str | None]:
        try:
            r = await client.chat.completions.create(
                model=MODEL,
                messages=_ask(PROMPTS[i % len(PROMPTS)]),
                max_tokens=max_tokens,
                temperature=0,
            )
            return 200, r.choices[0].message.content or "", None
        except openai.APIStatusError as e:
            return e.status_code, e.message, e.response.headers.get("retry-after")

    try:
        return await asyncio.gather(*(one(i) for i in range(n)))
    finally:
        await client.close()


def test_a_burst_of_300_ends_in_answers_or_429s_and_the_cluster_serves_after():
    args = ("--max-queue", "100", "--max-queue-s", "20")
    with Cluster(MODEL, nodes=3, min_stages=3, coordinator_args=args) as cluster:
        client = openai.OpenAI(api_key="none", base_url=cluster.http_url + "/v1", max_retries=0)

        def alone(p: str) -> str:
            r = client.chat.completions.create(
                model=MODEL, messages=_ask(p), max_tokens=6, temperature=0
            )
            return r.choices[0].message.content or ""

        want = {p: alone(p) for p in PROMPTS}
        t0 = time.monotonic()
        results = asyncio.run(_burst(cluster.http_url + "/v1", 300, 6))
        took = time.monotonic() - t0
        statuses = [s for s, _, _ in results]
        assert set(statuses) <= {200, 429}, sorted(set(statuses))
        assert statuses.count(200) >= 100, (statuses.count(200), statuses.count(429))
        for i, (status, text, retry_after) in enumerate(results):
            if status == 200:
                assert text == want[PROMPTS[i % len(PROMPTS)]]
            else:
                assert retry_after and int(retry_after) > 0
        print(f"burst: {statuses.count(200)} answered, {statuses.count(429)} 429 in {took:.0f} s")
        assert alone(PROMPTS[0]) == want[PROMPTS[0]]  # serves normally right after
        assert not any("Traceback" in line for line in cluster.coordinator.lines)


def test_sigterm_drains_a_middle_node_and_16_streams_keep_their_text():
    prompts = [f"Count from {i} to {i + 30}." for i in range(16)]
    with Cluster(MODEL, nodes=3, min_stages=3, node_args=("--drain-s", "20")) as cluster:
        client = openai.OpenAI(api_key="none", base_url=cluster.http_url + "/v1", max_retries=0)

        def run(p: str) -> str:
            stream = client.chat.completions.create(
                model=MODEL, messages=_ask(p), max_tokens=40, temperature=0, stream=True
            )
            return "".join(c.choices[0].delta.content or "" for c in stream if c.choices)

        undisturbed = [run(p) for p in prompts[:4]]  # enough to compare; all 16 run below
        middle = _middle_worker(cluster)
        with cf.ThreadPoolExecutor(16) as pool:
            futures = [pool.submit(run, p) for p in prompts]
            time.sleep(2.0)  # streams are under way
            t0 = time.monotonic()
            os.killpg(middle.popen.pid, signal.SIGTERM)
            texts = [f.result(timeout=240) for f in futures]
        wait_until(lambda: middle.popen.poll() is not None, 30, "the drained node to exit")
        assert time.monotonic() - t0 < 20 + 5
        assert middle.popen.returncode == 0, middle.lines[-20:]
        assert texts[:4] == undisturbed
        alone = [run(p) for p in prompts[4:]]
        assert texts[4:] == alone
        assert any("drained" in line for line in middle.lines)


def _middle_worker(cluster: Cluster):
    """The worker whose layers start neither at 0 nor end at the last layer."""
    st = cluster.status()
    layers = st["model"]["num_layers"] if "model" in st else None
    by_name = {n["name"]: n for n in st["nodes"]}
    for w, name in zip(cluster.workers, (f"node{i}" for i in range(3)), strict=True):
        start, end = by_name[name]["assignment"]["range"]
        if (
            start > 0
            and (layers is None or end < layers)
            and end
            != max(n["assignment"]["range"][1] for n in st["nodes"] if n["assignment"]["range"])
        ):
            return w
    raise AssertionError(f"no middle node in {by_name}")

"""`parallax bench serve`: its metrics against hand-computed values, its arrival times,
its datasets, and runs through the CLI against a real gateway that fails some requests."""

from __future__ import annotations

import json
import math
import random
import statistics
from collections.abc import AsyncIterator
from dataclasses import dataclass

import numpy as np
import pytest

from bench.serve.arrivals import send_offsets
from bench.serve.datasets import SHIPPED_SHAREGPT, random_requests, sharegpt_requests
from bench.serve.metrics import RequestOutcome, compute_metrics, percentile
from coordinator.gateway.backend import GenerationRequest, TokenOut
from parallax.cli import main
from parallax.errors import CapacityError, InvalidArgument, ParallaxError
from parallax.failures import FailureKind
from tests.support.gateway import ScriptedBackend, running_gateway

OUTCOMES = (
    RequestOutcome(True, 10, 5, ttft_s=0.1, itl_s=(0.05, 0.05, 0.1, 0.1), latency_s=0.4),
    RequestOutcome(True, 20, 3, ttft_s=0.3, itl_s=(0.2, 0.2), latency_s=0.7),
    RequestOutcome(True, 5, 1, ttft_s=0.2, latency_s=0.2),  # one token: no TPOT
    RequestOutcome(False, 7, status="429", retry_after_s=1.0, error="429: saturated"),
    RequestOutcome(False, 9, status="500", error="500: boom"),
)


def test_metrics_match_hand_computed_values():
    m = compute_metrics(OUTCOMES, duration_s=2.0, slos_ms={"ttft": 250, "tpot": 100})
    assert (m["completed"], m["failed"]) == (3, 2)
    assert m["failures_by_status"] == {"429": 1, "500": 1}
    assert m["retry_after_s"] == [1.0]
    assert m["error_samples"] == ["429: saturated", "500: boom"]
    assert (m["total_input_tokens"], m["total_output_tokens"]) == (35, 9)
    assert m["request_throughput"] == pytest.approx(1.5)
    assert m["output_throughput"] == pytest.approx(4.5)
    assert m["total_token_throughput"] == pytest.approx(22.0)
    # Good: #1 (ttft 100, tpot 75) and #3 (ttft 200, one token); #2's ttft is 300.
    assert m["request_goodput"] == pytest.approx(1.0)
    expected = {
        "ttft": (200.0, 200.0, 298.0),  # 100, 300, 200 ms
        "tpot": (137.5, 137.5, 198.75),  # (400-100)/4 = 75, (700-300)/2 = 200 ms
        "itl": (700 / 6, 100.0, 200.0),  # 50, 50, 100, 100, 200, 200 ms pooled
        "e2el": (1300 / 3, 400.0, 694.0),  # 400, 700, 200 ms
    }
    for key, (mean, median, p99) in expected.items():
        assert m[f"mean_{key}_ms"] == pytest.approx(mean), key
        assert m[f"median_{key}_ms"] == pytest.approx(median), key
        assert m[f"p99_{key}_ms"] == pytest.approx(p99), key


def test_goodput_is_none_without_slos_and_failures_count_in_no_latency():
    m = compute_metrics(OUTCOMES[3:], duration_s=1.0, slos_ms={})
    assert m["request_goodput"] is None
    assert (m["completed"], m["failed"], m["mean_ttft_ms"], m["p99_e2el_ms"]) == (0, 2, 0, 0)
    e2el_only = compute_metrics(OUTCOMES, duration_s=1.0, slos_ms={"e2el": 400})
    assert e2el_only["request_goodput"] == pytest.approx(2.0)


def test_percentile_is_numpys_linear_interpolation():
    rng = random.Random(3)
    for n in (1, 2, 7, 100):
        values = [rng.expovariate(1.0) for _ in range(n)]
        for q in (0, 50, 90, 99, 100):
            assert percentile(values, q) == pytest.approx(float(np.percentile(values, q)))


@pytest.mark.parametrize("burstiness", [1.0, 0.25, 4.0])
def test_arrival_gaps_average_one_over_rate_and_spread_with_burstiness(burstiness):
    offsets = send_offsets(20001, rate=4.0, burstiness=burstiness, rng=random.Random(0))
    gaps = [b - a for a, b in zip(offsets, offsets[1:], strict=False)]
    assert offsets[0] == 0.0 and all(g >= 0 for g in gaps)
    assert statistics.fmean(gaps) == pytest.approx(0.25, rel=0.05)
    # A gamma's coefficient of variation is 1/sqrt(shape): 1 for Poisson arrivals.
    cv = statistics.pstdev(gaps) / statistics.fmean(gaps)
    assert cv == pytest.approx(1 / math.sqrt(burstiness), rel=0.05)


def test_infinite_rate_sends_everything_at_once_and_seeds_repeat():
    assert send_offsets(5, math.inf, 1.0, random.Random(0)) == [0.0] * 5
    assert send_offsets(9, 2.0, 1.0, random.Random(7)) == send_offsets(
        9, 2.0, 1.0, random.Random(7)
    )


def test_shipped_sharegpt_file_loads_and_prunes_like_vllm(tokenizer):
    samples = sharegpt_requests(SHIPPED_SHAREGPT, tokenizer, 100, 0, random.Random(0))
    entries = json.loads(SHIPPED_SHAREGPT.read_text())
    questions = {e["conversations"][0]["value"]: e["conversations"][1]["value"] for e in entries}
    assert len(samples) == 100
    assert "hi" not in {s.prompt for s in samples}  # under 4 tokens: pruned
    assert len({s.prompt for s in samples}) == len(entries) - 1
    for s in samples:
        assert s.prompt_len == len(tokenizer.encode(s.prompt))
        assert s.output_len == len(tokenizer.encode(questions[s.prompt]))
    fixed = sharegpt_requests(SHIPPED_SHAREGPT, tokenizer, 5, 16, random.Random(0))
    assert [s.output_len for s in fixed] == [16] * 5


def test_sharegpt_loader_refuses_bad_files(tmp_path, tokenizer):
    bad = {"not a list": {"a": 1}, "no conversations": [{"id": 1}], "not json": "{"}
    for name, content in bad.items():
        path = tmp_path / f"{name}.json"
        path.write_text(content if isinstance(content, str) else json.dumps(content))
        with pytest.raises(InvalidArgument):
            sharegpt_requests(path, tokenizer, 3, 0, random.Random(0))


def test_random_prompts_have_the_asked_token_counts(tokenizer):
    samples = random_requests(tokenizer, 20, 64, 8, 0.0, random.Random(1))
    for s in samples:
        assert s.prompt_len == len(tokenizer.encode(s.prompt))
        assert abs(s.prompt_len - 64) <= 1 and s.output_len == 8
    spread = random_requests(tokenizer, 30, 40, 10, 0.5, random.Random(2))
    assert all(5 <= s.output_len <= 15 for s in spread)
    assert len({s.output_len for s in spread}) > 3


@dataclass
class FlakyBackend(ScriptedBackend):
    """Of every 8 requests: #1 and #5 get 429, #2 a 500, #6 fails mid-stream."""

    calls: int = 0

    async def generate(self, req: GenerationRequest) -> AsyncIterator[TokenOut]:
        k = self.calls % 8
        self.calls += 1
        if k in (1, 5):
            raise CapacityError("test: the cluster is full")
        if k == 2:
            raise ParallaxError("test: boom")
        if k == 6:
            yield TokenOut(self.script[0])
            yield TokenOut.failed(FailureKind.UNREACHABLE, "test: node died")
            return
        async for tok in super().generate(req):
            yield tok


def bench_args(base_url: str, out: str, *extra: str) -> list[str]:
    return [
        "bench", "serve", "--base-url", base_url, "--output", out,
        "--num-prompts", "8", "--random-input-len", "16", "--random-output-len", "6",
        "--goodput", "ttft:5000,tpot:5000", *extra,
    ]  # fmt: skip


def test_bench_serve_counts_every_failure_by_status(tokenizer, tmp_path, capsys):
    backend = FlakyBackend(tokenizer, token_delay_s=0.005)
    out = tmp_path / "serve.json"
    with running_gateway(tokenizer, backend) as gw:
        assert main(bench_args(gw.base_url, str(out), "--request-rate", "50")) == 0
    r = json.loads(out.read_text())
    assert (r["completed"], r["failed"]) == (4, 4)
    assert r["failures_by_status"] == {"429": 2, "500": 1, "stream_error": 1}
    assert r["retry_after_s"] == [1.0]
    assert r["model"] == "smollm2-135m" and r["request_rate"] == 50.0
    # The script is longer than 6 tokens: each good answer is cut at max_tokens.
    assert r["total_output_tokens"] == 4 * 6
    assert r["request_goodput"] == pytest.approx(r["request_throughput"])
    assert 0 < r["mean_ttft_ms"] <= r["mean_e2el_ms"] and r["mean_tpot_ms"] > 0
    assert r["p99_itl_ms"] >= r["median_itl_ms"] > 0
    printed = capsys.readouterr().out
    assert "Failed requests:" in printed and "HTTP 429:" in printed and "Mean TPOT (ms):" in printed
    assert "POST" not in printed  # no per-request lines


def test_bench_serve_sweep_plots_and_finds_where_429s_begin(tokenizer, tmp_path):
    out = tmp_path / "sweep.json"
    with running_gateway(tokenizer, FlakyBackend(tokenizer)) as gw:
        args = bench_args(gw.base_url, str(out), "--sweep", "--request-rates", "20,inf")
        assert main(args) == 0
    r = json.loads(out.read_text())
    assert [run["request_rate"] for run in r["sweep"]] == [20.0, "inf"]
    assert all(run["failed"] == 4 for run in r["sweep"])
    assert r["rate_429_begins"] == 20.0
    png = tmp_path / "sweep.png"
    assert r["plot"] == str(png) and png.read_bytes()[:4] == b"\x89PNG"


def test_bench_serve_names_an_unreachable_server(tmp_path, capsys):
    args = bench_args("http://127.0.0.1:9", str(tmp_path / "x.json"))
    assert main(args) == 2
    assert "--base-url" in capsys.readouterr().err

"""The testbed benchmark: our allocation against Parallax's and Petals' on the same nodes.

    sudo .venv/bin/python -m deploy.testbed bench [--rounds 3 ...]

Each round starts, for each policy in turn (ours, parallax, petals, ours, ...), a fresh
testbed with `parallax run --allocation-policy POLICY`, waits until every node that
holds layers serves, sends a few warm-up requests, then runs `parallax bench serve`
inside the coordinator's namespace, once per request rate. Medians over rounds, and
ratios of ours to each baseline taken within a round, then their median: the box's
load drifts between rounds, a ratio within one round cancels much of that.
"""

from __future__ import annotations

import json
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from deploy.testbed.bed import ROOT, Testbed
from deploy.testbed.config import ExperimentConfig
from deploy.testbed.netns import TestbedError

READY_TIMEOUT_S = 300
SERVE_TIMEOUT_S = 900
METRICS = (
    "output_throughput",
    "median_ttft_ms",
    "p90_ttft_ms",
    "median_tpot_ms",
    "p90_tpot_ms",
    "p99_tpot_ms",
)


def say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def settled(st: dict, nodes: int) -> bool:
    """Every node joined, the allocation after the last join is made (the registry logs
    the join before it allocates, which may take seconds), and every node that holds
    layers serves them."""
    holders = [n for n in st["nodes"] if n["assignment"]["range"] is not None]
    return (
        len(st["nodes"]) == nodes
        and bool(st["decisions"])
        and st["decisions"][0]["kind"] != "join"  # newest first
        and st["coverage"]["serving"]
        and all(n["serving"] and n["loaded"] == n["assignment"]["range"] for n in holders)
    )


def wait_serving(bed: Testbed, nodes: int) -> dict:
    """The settled cluster, the same on two polls a second apart."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    st: dict = {}
    last = None
    while time.monotonic() < deadline:
        st = bed.status()
        now = {n["name"]: n["assignment"]["range"] for n in st["nodes"]}
        if settled(st, nodes) and now == last:
            return st
        last = now if settled(st, nodes) else None
        time.sleep(1.0)
    raise TestbedError(f"testbed not serving after {READY_TIMEOUT_S} s: {st}")


def warm_up(url: str, model: str, count: int) -> None:
    for i in range(count):
        body = {
            "model": model,
            "messages": [{"role": "user", "content": f"warm up {i}"}],
            "max_tokens": 4,
        }
        httpx.post(f"{url}/v1/chat/completions", json=body, timeout=120).raise_for_status()


def load_run(cfg: ExperimentConfig, bed: Testbed, rate: float, seed: int, out: Path) -> dict:
    """`parallax bench serve` in the coordinator's namespace; its JSON result."""
    argv = [
        "ip", "netns", "exec", bed.net.hosts["coord"],
        sys.executable, "-m", "parallax", "bench", "serve",
        "--base-url", bed.url, "--model", cfg.model,
        "--num-prompts", str(cfg.num_prompts), "--random-input-len", str(cfg.input_len),
        "--random-output-len", str(cfg.output_len), "--ignore-eos",
        "--request-rate", "inf" if math.isinf(rate) else str(rate),
        "--seed", str(seed), "--output", str(out),
    ]  # fmt: skip
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    got = subprocess.run(
        argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=SERVE_TIMEOUT_S
    )
    if got.returncode != 0:
        raise TestbedError(f"bench serve failed ({got.returncode}): {got.stderr[-2000:]}")
    return json.loads(out.read_text())


def one_testbed(cfg: ExperimentConfig, policy: str, round_: int, work: Path) -> dict:
    bed_cfg = cfg.replace(
        coordinator_args=(
            *cfg.coordinator_args,
            "--allocation-policy", policy,
            "--max-model-len", str(cfg.max_model_len),
        ),
    )  # fmt: skip
    t0 = time.monotonic()
    with Testbed(bed_cfg) as bed:
        st = wait_serving(bed, cfg.nodes)
        ready_s = time.monotonic() - t0
        bed.in_coordinator_ns(warm_up, bed.url, st["model"]["name"], cfg.warmup)
        runs = []
        for rate in cfg.request_rates:
            out = work / f"r{round_}-{policy}-{rate:g}.json"
            r = load_run(cfg, bed, rate, seed=round_, out=out)
            say(
                f"  round {round_} {policy:<8} rate {rate:>4g}: "
                f"{r['output_throughput']:6.1f} tok/s  TTFT p50 {r['median_ttft_ms']:7.0f} "
                f"p90 {r['p90_ttft_ms']:7.0f} ms  TPOT p50 {r['median_tpot_ms']:6.0f} "
                f"p90 {r['p90_tpot_ms']:6.0f} ms  failed {r['failed']}"
            )
            runs.append({k: r[k] for k in (*METRICS, "completed", "failed", "duration")})
    by_name = sorted(st["nodes"], key=lambda n: n["name"])
    return {
        "policy": policy,
        "round": round_,
        "ready_s": ready_s,
        "assignments": {n["name"]: n["assignment"]["range"] for n in by_name},
        # What the planner saw: measured speeds (two nodes share a core here).
        "hardware": {n["name"]: n["hardware"] for n in by_name},
        "planned_tok_s": st["allocation"]["throughput_tok_s"],
        "decisions": [d["message"] for d in st["decisions"] if d["kind"] != "heartbeat"][:8],
        "runs": runs,
    }


def summarize(cfg: ExperimentConfig, results: list[dict]) -> dict:
    """Per rate and policy, medians over rounds; per baseline, the median over rounds of
    ours / baseline (throughput) and baseline / ours (latencies: > 1 means ours is lower)."""
    out: dict[str, Any] = {}
    for i, rate in enumerate(cfg.request_rates):
        by = {
            p: {r["round"]: r["runs"][i] for r in results if r["policy"] == p} for p in cfg.policies
        }
        med = {
            p: {m: statistics.median(run[m] for run in runs.values()) for m in METRICS}
            for p, runs in by.items()
        }
        ratios: dict[str, dict[str, float]] = {}
        if "ours" in by:
            for base in (p for p in cfg.policies if p != "ours"):
                rounds = sorted(set(by["ours"]) & set(by[base]))
                ratios[base] = {
                    m: statistics.median(
                        _ratio(by["ours"][k][m], by[base][k][m], m) for k in rounds
                    )
                    for m in METRICS
                }
        out["inf" if math.isinf(rate) else f"{rate:g}"] = {"median": med, "ours_vs": ratios}
    return out


def _ratio(ours: float, base: float, metric: str) -> float:
    if metric == "output_throughput":
        return ours / base if base else math.inf
    return base / ours if ours else math.inf  # a latency: > 1 means ours is faster


def run_experiment(cfg: ExperimentConfig) -> dict:
    work = Path("bench-output") / f"{Path(cfg.output).stem}-runs"  # each load run's JSON
    work.mkdir(parents=True, exist_ok=True)
    results = []
    t0 = time.monotonic()
    for round_ in range(cfg.rounds):
        for policy in cfg.policies:
            say(f"[{time.monotonic() - t0:6.0f} s] round {round_} policy {policy}")
            results.append(one_testbed(cfg, policy, round_, work))
    summary = summarize(cfg, results)
    report = {
        "config": cfg.to_dict(),
        "cpus_online": os.cpu_count(),
        "results": results,
        "summary": summary,
        "wall_s": time.monotonic() - t0,
    }
    print(format_summary(summary), flush=True)
    from deploy.testbed.plot import plot_experiment

    plot_experiment(report, Path(cfg.plot))
    report["plot"] = cfg.plot
    Path(cfg.output).write_text(json.dumps(report, indent=2, default=str))
    say(f"wrote {cfg.output} and {cfg.plot}")
    return report


def format_summary(summary: dict) -> str:
    lines = []
    for rate, s in summary.items():
        lines.append(f"== rate {rate} req/s: medians over rounds ==")
        lines.append(
            f"{'policy':<9} {'tok/s':>7} {'TTFT p50':>9} {'p90':>7} {'TPOT p50':>9} {'p90':>6} "
            f"{'p99':>6}   (ms)"
        )
        for p, m in s["median"].items():
            lines.append(
                f"{p:<9} {m['output_throughput']:7.1f} {m['median_ttft_ms']:9.0f} "
                f"{m['p90_ttft_ms']:7.0f} {m['median_tpot_ms']:9.0f} {m['p90_tpot_ms']:6.0f} "
                f"{m['p99_tpot_ms']:6.0f}"
            )
        for base, r in s["ours_vs"].items():
            lines.append(
                f"ours vs {base}: throughput {r['output_throughput']:.2f}x, TTFT p50 "
                f"{r['median_ttft_ms']:.2f}x p90 {r['p90_ttft_ms']:.2f}x, TPOT p50 "
                f"{r['median_tpot_ms']:.2f}x p90 {r['p90_tpot_ms']:.2f}x (latency: base/ours)"
            )
    return "\n".join(lines)

"""The result table, laid out as vLLM's benchmark_serving prints it, plus failures."""

from __future__ import annotations

from typing import Any

WIDTH = 50
SECTIONS = (
    ("ttft", "Time to First Token", "TTFT"),
    ("tpot", "Time per Output Token (excl. 1st token)", "TPOT"),
    ("itl", "Inter-token Latency", "ITL"),
    ("e2el", "End-to-end Latency", "E2EL"),
)


def format_table(r: dict[str, Any]) -> str:
    lines = [" Serving Benchmark Result ".center(WIDTH, "=")]

    def row(name: str, value: Any) -> None:
        text = f"{value:<10.2f}" if isinstance(value, float) else f"{value!s:<10}"
        lines.append(f"{name + ':':<40} {text}")

    row("Traffic request rate (req/s)", r["request_rate"])
    row("Burstiness factor", r["burstiness"])
    row("Maximum request concurrency", r["max_concurrency"] or "none")
    row("Successful requests", r["completed"])
    row("Failed requests", r["failed"])
    for status, count in r["failures_by_status"].items():
        row(f"  {_status_name(status)}", count)
    if r["retry_after_s"]:
        row("  429 Retry-After (s)", ", ".join(f"{s:g}" for s in r["retry_after_s"]))
    row("Benchmark duration (s)", r["duration"])
    row("Total input tokens", r["total_input_tokens"])
    row("Total generated tokens", r["total_output_tokens"])
    row("Request throughput (req/s)", r["request_throughput"])
    if r["request_goodput"] is not None:
        row("Request goodput (req/s)", r["request_goodput"])
        slos = ", ".join(f"{k} {v:g}" for k, v in r["goodput_slos_ms"].items())
        row("  goodput SLOs (ms)", slos)
    row("Output token throughput (tok/s)", r["output_throughput"])
    row("Total Token throughput (tok/s)", r["total_token_throughput"])
    for key, title, short in SECTIONS:
        lines.append(title.center(WIDTH, "-"))
        row(f"Mean {short} (ms)", r[f"mean_{key}_ms"])
        row(f"Median {short} (ms)", r[f"median_{key}_ms"])
        row(f"P99 {short} (ms)", r[f"p99_{key}_ms"])
    lines.append("=" * WIDTH)
    return "\n".join(lines)


def _status_name(status: str) -> str:
    return f"HTTP {status}" if status.isdigit() else status.replace("_", " ")


def format_sweep(runs: list[dict[str, Any]], rate_429: Any) -> str:
    head = (
        f"{'rate (req/s)':>12} {'ok':>5} {'failed':>6} {'429':>5} {'goodput':>8} "
        f"{'p99 TPOT ms':>12} {'p99 TTFT ms':>12}"
    )
    lines = [" Request-rate sweep ".center(len(head), "="), head]
    for r in runs:
        goodput = r["request_goodput"]
        lines.append(
            f"{r['request_rate']!s:>12} {r['completed']:>5} {r['failed']:>6} "
            f"{r['failures_by_status'].get('429', 0):>5} "
            f"{'-' if goodput is None else f'{goodput:.2f}':>8} "
            f"{r['p99_tpot_ms']:>12.1f} {r['p99_ttft_ms']:>12.1f}"
        )
    lines.append(f"429s begin at rate: {rate_429 if rate_429 is not None else 'none seen'}")
    return "\n".join(lines)

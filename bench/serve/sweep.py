"""A sweep of rising request rates: where 429s begin, and a plot of goodput and p99 TPOT."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def first_429_rate(runs: list[dict[str, Any]]) -> float | str | None:
    """The lowest rate whose run got any 429 (runs are in rising order); None if none."""
    return next((r["request_rate"] for r in runs if r["failures_by_status"].get("429")), None)


def plot_sweep(runs: list[dict[str, Any]], png: Path, title: str) -> None:
    # matplotlib is a test extra: imported only when a sweep is plotted.
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [str(r["request_rate"]) for r in runs]
    xs = list(range(len(runs)))
    has_slos = runs[0]["request_goodput"] is not None
    good = [r["request_goodput"] if has_slos else r["request_throughput"] for r in runs]
    slos = ", ".join(f"{k}≤{v:g} ms" for k, v in runs[0]["goodput_slos_ms"].items())
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    left.plot(xs, good, marker="o")
    left.set_ylabel(
        f"goodput (req/s, {slos})" if has_slos else "request throughput (req/s; no --goodput)"
    )
    right.plot(xs, [r["p99_tpot_ms"] for r in runs], marker="o", color="tab:red")
    right.set_ylabel("p99 TPOT (ms)")
    for ax in (left, right):
        ax.set_xticks(xs, labels)
        ax.set_xlabel("request rate (req/s)")
        ax.grid(alpha=0.3)
        for x, r in zip(xs, runs, strict=True):
            if r["failures_by_status"].get("429"):
                ax.axvline(x, color="orange", alpha=0.3)
    fig.suptitle(title + " (orange: rates with 429s)")
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=110)
    plt.close(fig)

"""The testbed benchmark's PNG: per request rate, throughput and latencies per policy,
each round a dot, the median a bar."""

from __future__ import annotations

from pathlib import Path

PANELS = (
    ("output_throughput", "output throughput (tok/s)"),
    ("median_ttft_ms", "TTFT p50 (ms)"),
    ("p90_ttft_ms", "TTFT p90 (ms)"),
    ("median_tpot_ms", "TPOT p50 (ms)"),
    ("p90_tpot_ms", "TPOT p90 (ms)"),
)
COLORS = {"ours": "tab:blue", "parallax": "tab:orange", "petals": "tab:green"}


def plot_experiment(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cfg = report["config"]
    rates = list(report["summary"])
    policies = list(cfg["policies"])
    fig, axes = plt.subplots(
        len(rates), len(PANELS), figsize=(3.2 * len(PANELS), 3.0 * len(rates)), squeeze=False
    )
    for row, rate in enumerate(rates):
        for col, (metric, title) in enumerate(PANELS):
            ax = axes[row][col]
            for x, p in enumerate(policies):
                vals = [r["runs"][row][metric] for r in report["results"] if r["policy"] == p]
                med = report["summary"][rate]["median"][p][metric]
                ax.bar(x, med, 0.6, color=COLORS.get(p, "gray"), alpha=0.6)
                ax.plot([x] * len(vals), vals, "k.", markersize=5)
            ax.set_xticks(range(len(policies)), policies)
            ax.set_title(f"{title}\nrate {rate} req/s", fontsize=9)
    fig.suptitle(
        f"Testbed: {cfg['model']} on {cfg['nodes']} namespaced CPU nodes, memory "
        f"{'/'.join(f'{m:g}' for m in cfg['memory_gb'])} GiB, links "
        f"{'/'.join(f'{r:g}' for r in cfg['rate_mbit'])} Mbit/s, delays "
        f"{'/'.join(f'{d:g}' for d in cfg['delay_ms'])} ms, CPU quotas "
        f"{'/'.join(f'{c:g}' for c in cfg.get('cpu_share', ())) or 'none'} cores; "
        f"{cfg['rounds']} interleaved rounds "
        "(bars: medians, dots: rounds)",
        fontsize=9,
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)

"""Config of `parallax bench KIND`. Benchmarks print figures and write JSON; they are not tests.

The `serve` fields follow vLLM's `benchmark_serving` flag names, so a run reads like
everyone's; they are ignored by the other kinds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

from parallax.config.base import ConfigBase, opt
from parallax.config.generate import DEFAULT_MODEL

GOODPUT_KEYS = ("ttft", "tpot", "e2el")


@dataclass(frozen=True)
class BenchConfig(ConfigBase):
    command_help: ClassVar[str] = (
        "run a benchmark: engine, hop, pipeline, schedule, serve, grammar or kernels (the "
        "Triton kernels against torch on a GPU)"
    )

    kind: str = opt(
        help="which benchmark",
        choices=("engine", "hop", "pipeline", "schedule", "serve", "grammar", "kernels"),
        positional=True,
    )
    model: str = opt(
        DEFAULT_MODEL, help="model for engine/pipeline benchmarks; serve: its tokenizer"
    )
    threads: int = opt(2, help="torch CPU threads for engine benchmarks")
    dtype: str = opt(
        "float32",
        help="our engine's compute dtype in the engine benchmark (the reference stays float32)",
        choices=("float32", "bfloat16", "float16"),
    )
    variants: str = opt(
        "bf16,q8,q4,compile",
        help="engine: more variants of ours timed in the same interleaved rounds, comma "
        "separated: bf16 (--dtype bfloat16), q8 and q4 (--weights, fp32 activations), "
        "bf16_q4, compile (fp32 with --compile), q8_compile, q4_compile, bf16_compile, "
        "bf16_q4_compile; "
        "'' = none",
    )
    output: str = opt("", help="JSON result path; default bench-output/KIND.json")
    clock: str = opt(
        "wall",
        help="engine: time decode with the wall clock, or with process CPU time (needs "
        "--threads 1; on a shared, loaded machine it counts the work, not the waiting)",
        choices=("wall", "cpu"),
    )
    quick: bool = opt(
        False,
        help="smaller, faster run (smoke check); kernels: tiny shapes, and without CUDA "
        "on CPU in Triton's interpreter (set TRITON_INTERPRET=1)",
    )
    seed: int = opt(0, help="random seed of generated workloads (serve: prompts and arrivals)")
    sched_eval: str = opt(
        "../shared/sched-eval",
        help="schedule: folder of the neutral evaluator kit (its evaluate.py is imported from "
        "there at run time, never copied); '' = simulator figures only",
    )

    # ---- serve: an OpenAI-compatible server under load (vLLM's benchmark_serving) ----
    base_url: str = opt(
        "http://127.0.0.1:8000",
        help="serve: the OpenAI-compatible server (our gateway); /v1/chat/completions is added",
    )
    api_key: str = opt("", help="serve: Bearer API key of the server", env="PARALLAX_API_KEY")
    served_model_name: str = opt("", help="serve: model id sent; default the first one listed")
    dataset_name: str = opt(
        "random",
        help="serve: random prompts of --random-input-len tokens, or ShareGPT conversations",
        choices=("random", "sharegpt"),
    )
    dataset_path: str = opt(
        "", help="serve: ShareGPT-format JSON file; default the small one shipped in bench/serve"
    )
    num_prompts: int = opt(100, help="serve: requests sent per run (per rate in a sweep)")
    random_input_len: int = opt(256, help="serve: prompt length, random dataset", unit="tokens")
    random_output_len: int = opt(64, help="serve: max_tokens, random dataset", unit="tokens")
    random_range_ratio: float = opt(
        0.0, help="serve: lengths drawn uniformly in [len*(1-r), len*(1+r)], random dataset"
    )
    sharegpt_output_len: int = opt(
        0,
        help="serve: max_tokens of every ShareGPT request; 0 = its answer's length",
        unit="tokens",
    )
    ignore_eos: bool = opt(False, help="serve: ask the server to generate max_tokens, past EOS")
    request_rate: float = opt(
        math.inf,
        help="serve: mean request arrival rate; inf = all at once",
        unit="requests/s",
    )
    burstiness: float = opt(
        1.0, help="serve: gamma shape of inter-arrival times; 1 = Poisson, <1 burstier"
    )
    max_concurrency: int = opt(0, help="serve: most requests in flight at once; 0 = no limit")
    goodput: str = opt(
        "",
        help="serve: SLOs a request must meet to count as good, e.g. ttft:500,tpot:50 "
        "(keys ttft, tpot, e2el)",
        unit="ms",
    )
    request_timeout_s: float = opt(300.0, help="serve: deadline of one request", unit="s")
    sweep: bool = opt(False, help="serve: one run per --request-rates, plus a PNG plot")
    request_rates: str = opt(
        "1,2,4,8,inf", help="serve: rates of a --sweep, comma-separated", unit="requests/s"
    )

    def validate(self) -> None:
        if self.kind != "serve":
            return
        self.require(
            self.base_url.startswith(("http://", "https://")),
            "base_url",
            "must start with http(s)://",
        )
        self.require(self.num_prompts >= 1, "num_prompts", "must be >= 1")
        self.require(self.random_input_len >= 1, "random_input_len", "must be >= 1")
        self.require(self.random_output_len >= 1, "random_output_len", "must be >= 1")
        self.require(
            0.0 <= self.random_range_ratio < 1.0, "random_range_ratio", "must be in [0, 1)"
        )
        self.require(self.sharegpt_output_len >= 0, "sharegpt_output_len", "must be >= 0")
        self.require(self.request_rate > 0, "request_rate", "must be > 0 (inf = all at once)")
        self.require(
            0 < self.burstiness < math.inf, "burstiness", "must be > 0 (1 = Poisson arrivals)"
        )
        self.require(self.max_concurrency >= 0, "max_concurrency", "must be >= 0 (0 = no limit)")
        self.require(self.request_timeout_s > 0, "request_timeout_s", "must be > 0")
        self.require(
            not (self.dataset_path and self.dataset_name == "random"),
            "dataset_path",
            "is a ShareGPT file: add --dataset-name sharegpt",
        )
        self.goodput_slos_ms()
        self.sweep_rates()

    def goodput_slos_ms(self) -> dict[str, float]:
        """`ttft:500,tpot:50` -> {"ttft": 500.0, "tpot": 50.0} (milliseconds)."""
        slos: dict[str, float] = {}
        for part in self.goodput.replace(" ", ",").split(","):
            if not part:
                continue
            key, _, value = part.partition(":")
            self.require(
                key in GOODPUT_KEYS and _positive(value),
                "goodput",
                f"each item is KEY:MS with KEY in {', '.join(GOODPUT_KEYS)} and MS > 0, "
                "e.g. ttft:500,tpot:50",
            )
            slos[key] = float(value)
        return slos

    def sweep_rates(self) -> tuple[float, ...]:
        """`1,2,inf` -> (1.0, 2.0, inf), checked to be positive and rising."""
        parts = [p for p in self.request_rates.split(",") if p.strip()]
        ok = bool(parts) and all(_positive(p) for p in parts)
        rates = tuple(float(p) for p in parts) if ok else ()
        self.require(
            ok and list(rates) == sorted(set(rates)),
            "request_rates",
            "must be rising positive rates, comma-separated, e.g. 1,2,4,8,inf",
        )
        return rates


def _positive(text: str) -> bool:
    try:
        return float(text) > 0
    except ValueError:
        return False

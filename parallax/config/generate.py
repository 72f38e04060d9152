"""Config of `parallax generate`: one local process runs the whole model."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from parallax.config.base import ConfigBase, opt
from parallax.wire.limits import MAX_FORWARD_ROWS

DEFAULT_MODEL = "smollm2-135m"


@dataclass(frozen=True)
class EngineConfig(ConfigBase):
    """Shard-engine settings shared by `generate` and `join`."""

    dtype: str = opt(
        "float32",
        help="compute dtype; auto = bfloat16 on CUDA and on CPUs where a bfloat16 decode "
        "matmul measures at least 1.1x float32's speed, else float32 (the choice and why "
        "are logged at start)",
        choices=("float32", "bfloat16", "float16", "auto"),
    )
    weights: str = opt(
        "auto",
        help="how weights are held: auto/fp32/bf16 = floats in --dtype (a quantized GGUF is "
        "dequantized); q8 = int8 per row, q4 = int4 per 32 columns (GGUF Q4_0/Q4_1 blocks "
        "kept as they are; embedding and head in q8); q8/q4 run on CPU only",
        choices=("auto", "fp32", "bf16", "q8", "q4"),
    )
    compile: bool = opt(
        False,
        help="torch.compile decode steps, 6 layers per graph (inductor with its C++ "
        "wrapper on CPU; one graph for batch 1, one for larger batches, one for mixed "
        "lengths): each compiles on its first such step (a minute or more); prefill "
        "stays eager",
    )
    device: str = opt("cpu", help="torch device", choices=("cpu", "cuda"))
    threads: int = opt(0, help="torch CPU threads; 0 = torch's default")
    kv_memory_fraction: float = opt(
        0.0, help="fraction of free memory given to the KV cache; 0 = use --kv-cache-mb"
    )
    kv_cache_mb: float = opt(256.0, help="KV cache size when no fraction is given", unit="MiB")
    kv_block_size: int = opt(16, help="tokens per KV block", unit="tokens")
    max_batch_tokens: int = opt(
        512, help="token budget of one forward step (prefill chunks plus decodes)", unit="tokens"
    )
    max_running: int = opt(64, help="most requests decoding at once", unit="requests")
    max_waiting: int = opt(
        256,
        help="requests a first node queues beyond --max-running; past it, a Submit is "
        "refused (RESOURCE_EXHAUSTED) and the gateway tries again later",
        unit="requests",
    )
    micro_batches: int = opt(
        1,
        help="decode micro-batches a first node keeps in flight; 0 = one per pipeline stage "
        "(pays off when stages run on separate machines; 1 = off)",
    )

    def validate(self) -> None:
        self.require(self.threads >= 0, "threads", "must be >= 0")
        self.require(
            0.0 <= self.kv_memory_fraction < 1.0, "kv_memory_fraction", "must be in [0, 1)"
        )
        self.require(self.kv_cache_mb > 0, "kv_cache_mb", "must be positive")
        self.require(self.kv_block_size > 0, "kv_block_size", "must be positive")
        self.require(
            16 <= self.max_batch_tokens <= MAX_FORWARD_ROWS,
            "max_batch_tokens",
            f"must be in [16, {MAX_FORWARD_ROWS}]",
        )
        self.require(self.max_running >= 1, "max_running", "must be >= 1")
        self.require(self.max_waiting >= 0, "max_waiting", "must be >= 0")
        self.require(self.micro_batches >= 0, "micro_batches", "must be >= 0")


@dataclass(frozen=True)
class GenerateConfig(EngineConfig):
    command_help: ClassVar[str] = "generate one streamed completion in this process"

    model: str = opt(DEFAULT_MODEL, help="model name, GGUF file or Hugging Face folder")
    prompt: str = opt("Hello! Who are you?", help="user message (or raw text with --raw)")
    raw: bool = opt(False, help="send the prompt as raw text, without the chat template")
    max_tokens: int = opt(128, help="most tokens to generate", unit="tokens")
    temperature: float = opt(0.0, help="sampling temperature; 0 = greedy")
    top_p: float = opt(1.0, help="nucleus sampling mass")
    top_k: int = opt(0, help="sample among the k most likely tokens; 0 = off")
    seed: int | None = opt(None, help="sampling seed for a reproducible completion")

    def validate(self) -> None:
        super().validate()
        self.require(self.max_tokens >= 1, "max_tokens", "must be >= 1")
        self.require(self.temperature >= 0, "temperature", "must be >= 0")

"""The local engine loop: schedule, run, postprocess. A pipeline of one shard."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from node.engine.kv_blocks import KVBlockManager
from node.engine.kv_cache import allocate_kv, blocks_for_budget
from node.engine.runner import ShardRunner
from node.engine.sampler import RequestSampler, Sampled, sample
from node.engine.scheduler import Scheduler, Sequence
from node.hardware import available_memory
from node.model import ShardModel
from node.model.dtype import choose_dtype
from parallax.config.generate import EngineConfig
from parallax.errors import ContextOverflow, InvalidArgument
from parallax.sampling import SamplingParams

log = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass(frozen=True)
class TokenResult:
    request_id: str
    sampled: Sampled
    finish_reason: str | None  # None while the request goes on


def compute_dtype(cfg: EngineConfig) -> torch.dtype:
    """The engine's dtype: `--dtype`, or for `auto` what this device measures best at."""
    if cfg.dtype != "auto":
        return DTYPES[cfg.dtype]
    name, why = choose_dtype(cfg.device)
    log.info("dtype chosen", extra={"dtype": name, "why": why})
    return DTYPES[name]


def kv_budget_bytes(cfg: EngineConfig) -> float:
    if cfg.kv_memory_fraction > 0:
        return available_memory(torch.device(cfg.device)) * cfg.kv_memory_fraction
    return cfg.kv_cache_mb * 2**20


def make_runner(model: ShardModel, cfg: EngineConfig) -> ShardRunner:
    spec, dtype = model.spec, next(model.parameters()).dtype
    blocks = blocks_for_budget(
        spec, len(model.range), cfg.kv_block_size, dtype, kv_budget_bytes(cfg)
    )
    kv = KVBlockManager(blocks, cfg.kv_block_size)
    caches = allocate_kv(spec, len(model.range), blocks, cfg.kv_block_size, dtype, cfg.device)
    return ShardRunner(model, kv, caches, cfg.device, compile=cfg.compile)


class LocalEngine:
    """The whole model in one process: `step()` = schedule, run, postprocess."""

    def __init__(
        self,
        model: ShardModel,
        cfg: EngineConfig,
        eos_ids: tuple[int, ...],
        vocab_limit: int | None = None,
    ):
        self.vocab_limit = vocab_limit
        if not (model.is_first and model.is_last):
            raise InvalidArgument("LocalEngine needs a shard holding every layer")
        self.model, self.cfg, self.eos_ids = model, cfg, frozenset(eos_ids)
        self.runner = make_runner(model, cfg)
        self.kv = self.runner.kv
        self.scheduler = Scheduler(self.kv, cfg.max_batch_tokens, cfg.max_running)
        # One sequence and one sampler per request, dropped together when it ends.
        self.seqs: dict[str, Sequence] = {}
        self.samplers: dict[str, RequestSampler] = {}
        self.max_context = model.rotary.cos.shape[0]

    def add_request(self, request_id: str, prompt_ids: list[int], params: SamplingParams) -> None:
        if request_id in self.seqs:
            raise InvalidArgument(f"request id {request_id!r} is already running")
        if not prompt_ids:
            raise InvalidArgument("the prompt is empty")
        params.check_vocab(self.model.spec.vocab_size)
        if any(not 0 <= t < self.model.spec.vocab_size for t in prompt_ids):
            raise InvalidArgument("a prompt token id is outside the vocabulary")
        if len(prompt_ids) >= self.max_context:
            raise ContextOverflow(
                f"the prompt has {len(prompt_ids)} tokens; the context holds {self.max_context}"
            )
        self.kv.check_fits(len(prompt_ids))
        seq = Sequence(request_id, list(prompt_ids), len(prompt_ids))
        self.seqs[request_id] = seq
        self.samplers[request_id] = RequestSampler(
            params, list(prompt_ids), self.eos_ids, self.max_context
        )
        self.scheduler.add(seq)

    def abort(self, request_id: str) -> None:
        seq = self.seqs.pop(request_id, None)
        self.samplers.pop(request_id, None)
        if seq is not None:
            self.scheduler.finish(seq)

    def has_work(self) -> bool:
        return self.scheduler.has_work()

    def step(self) -> list[TokenResult]:
        chunks = self.scheduler.schedule()
        if not chunks:
            return []
        logits = self.runner.run(chunks)
        seqs = [self.seqs[c.request_id] for c in chunks if c.sample]
        sampled = sample(logits, [self.samplers[s.request_id] for s in seqs], self.vocab_limit)
        return [self._postprocess(seq, s) for seq, s in zip(seqs, sampled, strict=True)]

    def _postprocess(self, seq: Sequence, s: Sampled) -> TokenResult:
        reason = self.samplers[seq.request_id].finish_reason()
        self.scheduler.on_token(seq, s.token_id, finished=reason is not None)
        if reason is not None:
            del self.seqs[seq.request_id], self.samplers[seq.request_id]
        return TokenResult(seq.request_id, s, reason)

    def generate(
        self, prompts: list[list[int]], params: SamplingParams | list[SamplingParams]
    ) -> list[list[int]]:
        """Run prompts to completion together; returns the generated ids of each."""
        plist = params if isinstance(params, list) else [params] * len(prompts)
        out: dict[str, list[int]] = {}
        for i, (p, sp) in enumerate(zip(prompts, plist, strict=True)):
            self.add_request(f"gen-{i}", p, sp)
            out[f"gen-{i}"] = []
        while self.has_work():
            for r in self.step():
                out[r.request_id].append(r.sampled.token_id)
        return [out[f"gen-{i}"] for i in range(len(prompts))]

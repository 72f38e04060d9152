"""Helpers to build engines and shard runners in tests."""

from __future__ import annotations

import torch

from node.engine.engine import LocalEngine, make_runner
from node.engine.runner import Chunk, ShardRunner
from node.weights import load_shard_model
from parallax.config.generate import EngineConfig
from parallax.models.registry import resolve_model
from parallax.types import LayerRange


def local_engine(path, eos_ids=None, vocab_limit=None, **cfg) -> LocalEngine:
    from node.engine.engine import DTYPES

    r = resolve_model(str(path))
    dtype = DTYPES[EngineConfig(**cfg).dtype]  # weights in the engine's dtype, as a node loads
    model = load_shard_model(r, LayerRange(0, r.spec.num_layers), dtype, progress=False)
    eos = r.spec.eos_token_ids if eos_ids is None else eos_ids
    return LocalEngine(model, EngineConfig(**cfg), eos, vocab_limit=vocab_limit)


def shard_runners(path, cuts: list[int], **cfg) -> list[ShardRunner]:
    """Runners for consecutive shards split at `cuts` (e.g. [2] -> [0,2), [2,L))."""
    from node.engine.engine import DTYPES

    r = resolve_model(str(path))
    bounds = [0, *cuts, r.spec.num_layers]
    runners = []
    dtype = DTYPES[cfg.get("dtype", "float32")]
    for a, b in zip(bounds, bounds[1:], strict=False):
        m = load_shard_model(r, LayerRange(a, b), dtype=dtype, progress=False)
        runners.append(make_runner(m, EngineConfig(**cfg)))
    return runners


def pipeline_logits(runners: list[ShardRunner], chunks: list[Chunk]) -> torch.Tensor:
    hidden = None
    for runner in runners:
        hidden = runner.run(chunks, hidden)
    return hidden


def greedy_pipeline(runners: list[ShardRunner], prompt: list[int], steps: int):
    """Greedy decode through a chain of shards; returns (tokens, per-step logits)."""
    rid, tokens, logits_seen = "r", list(prompt), []
    chunk = Chunk(rid, 0, len(prompt), True, tuple(prompt))
    for _ in range(steps):
        logits = pipeline_logits(runners, [chunk])[0]
        logits_seen.append(logits)
        nxt = int(torch.argmax(logits))
        chunk = Chunk(rid, len(tokens), 1, True, (nxt,))
        tokens.append(nxt)
    return tokens[len(prompt) :], logits_seen

"""`parallax bench grammar`: what constrained decoding adds to a decode step.

A node's pipeline holding the whole model decodes B requests at once, unconstrained
(ignore_eos) or each under a JSON schema that forces a long answer (40 array items),
in interleaved rounds so both see the same machine. Reported: the median decode step
of each and their ratio, per batch size, plus the grammar work alone (the masks of B
matchers and advancing them), timed apart.
"""

from __future__ import annotations

import statistics
import sys
import time
from typing import Any

import torch

from parallax.config.bench import BenchConfig
from parallax.config.generate import EngineConfig
from parallax.grammar import GrammarSpec
from parallax.models.registry import resolve_model
from parallax.rpc import parallax_pb2 as pb
from parallax.sampling import SamplingParams
from parallax.tokenizer import Tokenizer
from parallax.types import LayerRange

SCHEMA = {
    "type": "object",
    "properties": {
        "numbers": {
            "type": "array",
            "items": {"type": "integer", "minimum": 0, "maximum": 99},
            "minItems": 40,
            "maxItems": 40,
        }
    },
    "required": ["numbers"],
    "additionalProperties": False,
}
SPEC = GrammarSpec.json_schema(SCHEMA)


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _submit(rid: str, prompt: list[int], steps: int, grammar: GrammarSpec | None, L: int):
    route = pb.Route()
    route.hops.add(node_id="n", address="127.0.0.1:1", start=0, end=L)
    params = SamplingParams(max_tokens=steps, ignore_eos=grammar is None, grammar=grammar)
    return pb.SubmitRequest(
        request_id=rid,
        prompt_ids=prompt,
        sampling=params.to_proto(),
        route=route,
        reply_to="127.0.0.1:2",  # never dialled: the bench reads the pipeline's outbox
    )


def decode_steps_ms(pipe, prompt, batch: int, steps: int, grammar, tag: str) -> list[float]:
    """Wall time of each step after the prefill while all `batch` requests decode."""
    L = pipe.spec.num_layers
    for i in range(batch):
        pipe.submit(_submit(f"{tag}-{i}", prompt, steps, grammar, L))
    pipe.step()  # prefill (and the grammars' compile, in the background, before it)
    times = []
    while len(pipe.reqs) == batch:
        t = time.perf_counter()
        pipe.step()
        times.append((time.perf_counter() - t) * 1e3)
    while pipe.reqs:
        pipe.step()
    return times[:-1]  # the last step ends requests: not a steady decode


def mask_only_ms(grammars, vocab: int, batch: int, iters: int) -> dict[str, float]:
    """The grammar's own work per step for `batch` rows: masks, then one token each."""
    compiled = grammars.compile(SPEC)
    tok = grammars.tokenizer()
    text = '{"numbers": [' + ", ".join(str(i % 90) for i in range(40)) + "]}"
    ids = tok.tokenize_str(text)
    masks, advance = [], []
    for _ in range(iters):
        ms = [grammars.start(compiled, []) for _ in range(batch)]
        for t in ids[:30]:
            a = time.perf_counter()
            grammars.allowed(ms, vocab)
            b = time.perf_counter()
            for m in ms:
                m.consume_token(t)
            c = time.perf_counter()
            masks.append((b - a) * 1e3)
            advance.append((c - b) * 1e3)
    return {"mask_ms": statistics.median(masks), "advance_ms": statistics.median(advance)}


def bench_grammar(config: BenchConfig) -> dict[str, Any]:
    from node.engine.engine import make_runner
    from node.grammar import Grammars
    from node.pipeline import NodePipeline
    from node.weights import load_shard_model

    torch.set_num_threads(config.threads)
    resolved = resolve_model(config.model)
    tok = Tokenizer.from_model(resolved)
    cfg = EngineConfig(kv_cache_mb=256, max_batch_tokens=512, max_running=64)
    model = load_shard_model(resolved, LayerRange(0, resolved.spec.num_layers), progress=False)
    grammars = Grammars.for_model(resolved)
    pipe = NodePipeline(
        "n", make_runner(model, cfg), cfg, tok.eos_token_ids, vocab_limit=tok.vocab_size,
        grammars=grammars,
    )  # fmt: skip
    prompt = tok.encode_chat([{"role": "user", "content": "List forty numbers as JSON."}])
    steps, rounds = (24, 2) if config.quick else (48, 5)
    rows = []
    for batch in (1, 8):
        plain, constrained = [], []
        for r in range(rounds):
            plain += decode_steps_ms(pipe, prompt, batch, steps, None, f"p{batch}-{r}")
            constrained += decode_steps_ms(pipe, prompt, batch, steps, SPEC, f"g{batch}-{r}")
        alone = mask_only_ms(grammars, model.spec.vocab_size, batch, 2 if config.quick else 5)
        row = {
            "batch": batch,
            "plain_step_ms": statistics.median(plain),
            "constrained_step_ms": statistics.median(constrained),
            **alone,
        }
        row["ratio"] = row["constrained_step_ms"] / row["plain_step_ms"]
        rows.append(row)
        _say(
            f"batch {batch:2d}: decode step {row['plain_step_ms']:.2f} ms plain, "
            f"{row['constrained_step_ms']:.2f} ms constrained ({row['ratio']:.3f}x); "
            f"grammar alone: masks {row['mask_ms']:.3f} ms + advance {row['advance_ms']:.3f} ms"
        )
    grammars.close()
    return {"model": resolved.name, "threads": config.threads, "steps": steps, "rows": rows}

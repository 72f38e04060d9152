"""Constrained decoding on the sampling hop, on a tiny byte-level vocabulary: the masks
(what a grammar allows next), a pipeline whose random model can only answer valid JSON,
replays that feed the tokens so far to a fresh matcher, and the spec on the wire."""

from __future__ import annotations

import json

import jsonschema
import pytest
import torch

from node.grammar import Grammars
from parallax.errors import InvalidArgument
from parallax.grammar import MAX_GRAMMAR_CHARS, GrammarSpec
from parallax.rpc import parallax_pb2 as pb
from parallax.sampling import SamplingParams
from parallax.tokenizer import Tokenizer
from tests.support.tiny_models import EOS_ID, VOCAB, save_tiny_tokenizer

SCHEMA = {
    "type": "object",
    "properties": {"color": {"enum": ["red", "green"]}, "ok": {"type": "boolean"}},
    "required": ["color", "ok"],
    "additionalProperties": False,
}


@pytest.fixture(scope="module")
def tiny_tok(tmp_path_factory) -> Tokenizer:
    root = tmp_path_factory.mktemp("tok")
    save_tiny_tokenizer(root)
    return Tokenizer.from_hf_dir(root)


@pytest.fixture
def grammars(tiny_tok) -> Grammars:
    g = Grammars(lambda: tiny_tok)
    yield g
    g.close()


def _ids(tok: Tokenizer, text: str) -> list[int]:
    return tok.encode(text)


def test_the_mask_allows_exactly_what_the_grammar_allows_next(grammars, tiny_tok):
    m = Grammars.start(grammars.compile(GrammarSpec.json_schema(SCHEMA)), [])
    # Wider than the tokenizer: padded embedding rows are never allowed.
    allowed = grammars.allowed([m], VOCAB + 7)
    assert allowed.shape == (1, VOCAB + 7) and allowed.dtype == torch.bool
    assert allowed[0].nonzero().flatten().tolist() == _ids(tiny_tok, "{")
    assert m.consume_tokens(_ids(tiny_tok, '{"color": "'))
    (first,) = grammars.allowed([m], VOCAB)
    assert sorted(tiny_tok.decode([i]) for i in first.nonzero().flatten().tolist()) == ["g", "r"]


def test_any_logits_give_schema_valid_json(grammars, tiny_tok):
    """Greedy over random logits, masked each step, always ends in a valid answer."""
    compiled = grammars.compile(GrammarSpec.json_schema(SCHEMA))
    for seed in range(5):
        gen = torch.Generator().manual_seed(seed)
        m, out = Grammars.start(compiled, []), []
        while not m.is_stopped():
            logits = torch.randn(1, VOCAB, generator=gen)
            logits[~grammars.allowed([m], VOCAB)] = float("-inf")
            tok = int(torch.argmax(logits))
            assert m.consume_token(tok)
            out.append(tok)
        text = tiny_tok.decode([t for t in out if t != EOS_ID])
        jsonschema.validate(json.loads(text), SCHEMA)


def test_compiled_grammars_are_cached_by_spec(grammars):
    a = grammars.compile(GrammarSpec.json_schema(SCHEMA))
    assert grammars.compile(GrammarSpec.json_schema(SCHEMA)) is a
    assert grammars.compile(GrammarSpec.json_schema(None)) is not a
    small = Grammars(grammars._load, cache_size=1)
    b = small.compile(GrammarSpec.json_schema(SCHEMA))
    small.compile(GrammarSpec.json_schema(None))  # evicts the first
    assert small.compile(GrammarSpec.json_schema(SCHEMA)) is not b
    small.close()


def test_a_grammar_that_cannot_compile_is_invalid_argument(grammars):
    fut = grammars.compile(GrammarSpec("lark", "start: undefined_rule"))
    with pytest.raises(InvalidArgument, match="grammar"):
        Grammars.start(fut, [])


def test_a_replay_feeds_the_tokens_so_far_and_refuses_ones_that_break_it(grammars, tiny_tok):
    compiled = grammars.compile(GrammarSpec.json_schema(SCHEMA))
    m = Grammars.start(compiled, _ids(tiny_tok, '{"color": "gr'))
    (allowed,) = grammars.allowed([m], VOCAB)
    assert allowed.nonzero().flatten().tolist() == _ids(tiny_tok, "e")
    with pytest.raises(InvalidArgument, match="do not fit the grammar"):
        Grammars.start(compiled, _ids(tiny_tok, '{"colour'))


def test_the_spec_travels_in_sampling_params_and_is_checked():
    params = SamplingParams(grammar=GrammarSpec.json_schema(SCHEMA))
    assert SamplingParams.from_proto(params.to_proto()) == params
    assert SamplingParams.from_proto(SamplingParams().to_proto()).grammar is None
    bad = SamplingParams().to_proto()
    bad.grammar.CopyFrom(pb.Grammar(kind="regex", text="a+"))
    with pytest.raises(InvalidArgument, match="kind"):
        SamplingParams.from_proto(bad)
    with pytest.raises(InvalidArgument, match="smaller"):
        GrammarSpec("lark", "x" * (MAX_GRAMMAR_CHARS + 1))


# ---- the pipeline: a node that is the whole chain, on a random tiny model ----


def _submit(rid: str, prompt: list[int], offset: int = 0, **sampling) -> pb.SubmitRequest:
    route = pb.Route()
    route.hops.add(node_id="n", address="127.0.0.1:1", start=0, end=4)
    params = SamplingParams(max_tokens=60, grammar=GrammarSpec.json_schema(SCHEMA), **sampling)
    return pb.SubmitRequest(
        request_id=rid,
        prompt_ids=prompt,
        sampling=params.to_proto(),
        route=route,
        reply_to="127.0.0.1:2",
        generated_offset=offset,
    )


def _run(pipe, requests: list[pb.SubmitRequest]) -> dict[str, list[pb.TokenEvent]]:
    for r in requests:
        pipe.submit(r)
    events: dict[str, list[pb.TokenEvent]] = {}
    for _ in range(200):
        if not pipe.reqs:
            break
        for box in pipe.step().delivers.values():
            for ev in box.events:
                events.setdefault(ev.request_id, []).append(ev)
    return events


@pytest.fixture(scope="module")
def pipe_factory(tiny_models, tiny_tok):
    from node.engine.engine import make_runner
    from node.pipeline import NodePipeline
    from node.weights import load_shard_model
    from parallax.config.generate import EngineConfig
    from parallax.models.registry import resolve_model
    from parallax.types import LayerRange
    from tests.support.node import BIG_KV

    resolved = resolve_model(str(tiny_models["llama"]))
    cfg = EngineConfig(**BIG_KV)
    model = load_shard_model(resolved, LayerRange(0, 4), progress=False)

    def make(grammars: Grammars | None) -> NodePipeline:
        eos = resolved.spec.eos_token_ids
        return NodePipeline("n", make_runner(model, cfg), cfg, eos, grammars=grammars)

    return make


def test_a_constrained_request_on_a_random_model_answers_valid_json(pipe_factory, grammars):
    pipe = pipe_factory(grammars)
    prompt = [5, 6, 7, 8]
    events = _run(pipe, [_submit(f"r{s}", prompt, temperature=1.0, seed=s) for s in range(3)])
    assert set(events) == {"r0", "r1", "r2"}
    for evs in events.values():
        assert not evs[-1].failure and evs[-1].finish_reason == "stop"
        text = grammars.tokenizer().decode_str([e.token_id for e in evs])
        jsonschema.validate(json.loads(text), SCHEMA)


def test_a_replayed_constrained_request_carries_on_within_its_grammar(
    pipe_factory, grammars, tiny_tok
):
    so_far = _ids(tiny_tok, '{"color": "gre')
    pipe = pipe_factory(grammars)
    events = _run(pipe, [_submit("r", [5, 6, *so_far], offset=len(so_far))])
    text = tiny_tok.decode(so_far + [e.token_id for e in events["r"]])
    assert json.loads(text)["color"] == "green"
    # Tokens that do not fit (a replay of another request's tokens) fail it as invalid.
    bad = _ids(tiny_tok, '{"colour')
    events = _run(pipe_factory(grammars), [_submit("x", [5, *bad], offset=len(bad))])
    (ev,) = events["x"]
    assert ev.failure == pb.FAILURE_INVALID and "do not fit" in ev.error


def test_a_node_without_a_grammar_engine_refuses_constrained_requests(pipe_factory):
    events = _run(pipe_factory(None), [_submit("r", [5, 6])])
    (ev,) = events["r"]
    assert ev.failure == pb.FAILURE_INVALID and "constrain" in ev.error


def test_unconstrained_rows_beside_constrained_ones_are_untouched(pipe_factory, grammars):
    plain = _submit("plain", [5, 6, 7])
    plain.sampling.ClearField("grammar")
    pipe = pipe_factory(grammars)
    both = _run(pipe, [plain, _submit("json", [5, 6, 7])])
    alone = _run(pipe_factory(grammars), [plain])
    assert [e.token_id for e in both["plain"]] == [e.token_id for e in alone["plain"]]
    assert json.loads(grammars.tokenizer().decode_str([e.token_id for e in both["json"]]))

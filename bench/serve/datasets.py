"""Prompts to send: random token strings of given lengths, or ShareGPT conversations.

Both follow vLLM's benchmark_serving: lengths are token counts of the model's own
tokenizer, and ShareGPT entries are pruned as vLLM prunes them.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

from parallax.errors import InvalidArgument
from parallax.tokenizer import Tokenizer

SHIPPED_SHAREGPT = Path(__file__).parent / "data" / "sharegpt_small.json"
# vLLM's pruning of ShareGPT: too short to time, or too long for a small context.
MIN_LEN = 4
MAX_PROMPT_LEN = 1024
MAX_TOTAL_LEN = 2048


@dataclass(frozen=True)
class SampleRequest:
    prompt: str
    prompt_len: int  # tokens of `prompt`, without the chat template's
    output_len: int  # max_tokens asked for


def random_requests(
    tok: Tokenizer,
    n: int,
    input_len: int,
    output_len: int,
    range_ratio: float,
    rng: random.Random,
) -> list[SampleRequest]:
    def draw(length: int) -> int:
        lo = max(1, int(length * (1 - range_ratio)))
        return rng.randint(lo, max(lo, int(length * (1 + range_ratio))))

    specials = {i for i, t in tok.backend.get_added_tokens_decoder().items() if t.special}
    specials |= set(tok.eos_token_ids)
    out = []
    for _ in range(n):
        prompt, got = _random_text(tok, draw(input_len), specials, rng)
        out.append(SampleRequest(prompt, got, draw(output_len)))
    return out


def _random_text(
    tok: Tokenizer, length: int, specials: set[int], rng: random.Random
) -> tuple[str, int]:
    """Text of about `length` tokens. Decoding then re-encoding merges some ids, so
    the ids are topped up or cut until the re-encoded text has the length asked."""

    def ordinary() -> int:
        while (i := rng.randrange(tok.vocab_size)) in specials:
            pass
        return i

    ids = [ordinary() for _ in range(length)]
    for _ in range(8):
        text = tok.decode(ids)
        ids = tok.encode(text)
        if len(ids) == length:
            return text, length
        ids = ids[:length] + [ordinary() for _ in range(length - len(ids))]
    text = tok.decode(ids)
    return text, len(tok.encode(text))


def sharegpt_requests(
    path: Path, tok: Tokenizer, n: int, output_len: int, rng: random.Random
) -> list[SampleRequest]:
    """n requests from the first two turns of each conversation (question, answer).

    max_tokens is `output_len` if > 0, else the answer's length. When the file has
    fewer usable conversations than n, they are used again in a new order.
    """
    usable = []
    for question, answer in _first_turns(path):
        prompt_len = len(tok.encode(question))
        out_len = output_len or len(tok.encode(answer))
        too_short = prompt_len < MIN_LEN or (out_len < MIN_LEN and not output_len)
        if too_short or prompt_len > MAX_PROMPT_LEN or prompt_len + out_len > MAX_TOTAL_LEN:
            continue
        usable.append(SampleRequest(question, prompt_len, out_len))
    if not usable:
        raise InvalidArgument(
            f"{path}: no conversation fits ({MIN_LEN} <= prompt tokens <= {MAX_PROMPT_LEN}, "
            f"prompt + answer <= {MAX_TOTAL_LEN}); use another file or --dataset-name random"
        )
    out: list[SampleRequest] = []
    while len(out) < n:
        batch = usable[:]
        rng.shuffle(batch)
        out += batch[: n - len(out)]
    return out


def _first_turns(path: Path) -> list[tuple[str, str]]:
    """(question, answer) of each entry with at least two turns."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise InvalidArgument(
            f"cannot read ShareGPT file {path}: {e}; give a JSON list of "
            '{"conversations": [{"from": "human", "value": ...}, {"from": "gpt", ...}]}'
        ) from e
    if not isinstance(data, list):
        raise InvalidArgument(f"{path}: a ShareGPT file is a JSON list of conversations")
    pairs = []
    for k, entry in enumerate(data):
        turns = entry.get("conversations") if isinstance(entry, dict) else None
        if not isinstance(turns, list):
            raise InvalidArgument(f"{path}: entry {k} has no 'conversations' list")
        if len(turns) < 2:
            continue
        texts = [t.get("value") if isinstance(t, dict) else None for t in turns[:2]]
        if not all(isinstance(t, str) for t in texts):
            raise InvalidArgument(f"{path}: entry {k}: each turn needs a string 'value'")
        pairs.append((texts[0], texts[1]))
    return pairs

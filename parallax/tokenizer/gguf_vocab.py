"""Build a `tokenizers.Tokenizer` from a GGUF file's `tokenizer.ggml.*` metadata.

A GGUF carries no `tokenizer.json`: llama.cpp stores the vocabulary, merges,
token types and special ids as metadata. We rebuild the same tokenizer that
transformers builds from those keys, so ids match token for token:

- "gpt2": byte-level BPE (SmolLM2, Llama 3, Qwen2);
- "llama": SentencePiece-style BPE with byte fallback (Llama 2, Mistral).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, processors

from parallax.errors import ModelFormatError

# llama.cpp token types (llama_token_type)
_CONTROL, _USER_DEFINED = 3, 4

# How text is split before BPE, by `tokenizer.ggml.pre`. Unlisted names (like
# "gpt-2") use the GPT-2 split built into ByteLevel.
_LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_PRE_SPLITS = {
    "llama3": _LLAMA3_SPLIT,
    "llama-v3": _LLAMA3_SPLIT,
    "llama-bpe": _LLAMA3_SPLIT,
    "smaug-bpe": _LLAMA3_SPLIT,
    "dbrx": _LLAMA3_SPLIT,
    "qwen2": _QWEN2_SPLIT,
    "deepseek-r1-qwen": _QWEN2_SPLIT,
}
# GPT-2's split after isolating every numeric character, as llama.cpp does for
# these names and as SmolLM2's own tokenizer.json does (Digits + ByteLevel).
# transformers' GGUF loader skips the digit step, which differs on " ½" or " ①".
_DIGITS_FIRST = frozenset(
    {"smollm", "starcoder", "refact", "command-r", "codeshell", "exaone", "minerva"}
)


@dataclass(frozen=True)
class GgufVocab:
    """The tokenizer a GGUF describes, plus the special-token facts around it."""

    backend: Tokenizer
    tokens: tuple[str, ...]
    token_types: tuple[int, ...]
    bos_token_id: int | None
    eos_token_id: int | None
    unk_token_id: int | None
    pad_token_id: int | None
    eot_token_ids: tuple[int, ...]  # eot / eom: extra ids that end a turn
    add_bos_token: bool
    chat_template: str | None


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character map (bytes spelled as text)."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    chars = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(printable, map(chr, chars), strict=True))


def vocab_from_metadata(md: Mapping[str, Any], where: str) -> GgufVocab:
    """`md` is `read_gguf(..., string_arrays=TOKENIZER_ARRAYS).metadata`."""
    kind = md.get("tokenizer.ggml.model")
    tokens = md.get("tokenizer.ggml.tokens")
    if not isinstance(tokens, list) or not tokens:
        raise ModelFormatError(f"{where} has no tokenizer.ggml.tokens; it carries no tokenizer")
    types = md.get("tokenizer.ggml.token_type") or [1] * len(tokens)
    if len(types) != len(tokens):
        raise ModelFormatError(f"{where}: token_type and tokens differ in length; corrupt file")
    merges = md.get("tokenizer.ggml.merges")
    if kind == "gpt2":
        backend = _byte_level(tokens, merges, md.get("tokenizer.ggml.pre"), where)
    elif kind == "llama":
        scores = md.get("tokenizer.ggml.scores") or [0.0] * len(tokens)
        backend = _sentencepiece(tokens, scores, merges, md, where)
    else:
        raise ModelFormatError(
            f"{where} uses tokenizer model {kind!r}; supported: 'gpt2' (byte-level BPE) and "
            "'llama' (SentencePiece BPE). Use the model's Hugging Face folder instead."
        )
    _add_special(backend, tokens, types, byte_level=kind == "gpt2")

    def tid(key: str) -> int | None:
        value = md.get(f"tokenizer.ggml.{key}")
        if value is None:
            return None
        if not 0 <= int(value) < len(tokens):
            raise ModelFormatError(f"{where}: tokenizer.ggml.{key}={value} is out of range")
        return int(value)

    bos = tid("bos_token_id")
    # llama.cpp adds BOS for SentencePiece vocabularies unless the file says otherwise.
    add_bos = bool(md.get("tokenizer.ggml.add_bos_token", kind == "llama")) and bos is not None
    if add_bos:
        backend.post_processor = processors.TemplateProcessing(
            single=f"{tokens[bos]}:0 $A:0",
            pair=f"{tokens[bos]}:0 $A:0 {tokens[bos]}:1 $B:1",
            special_tokens=[(tokens[bos], bos)],
        )
    eot = tuple(i for i in (tid("eot_token_id"), tid("eom_token_id")) if i is not None)
    template = md.get("tokenizer.chat_template")
    return GgufVocab(
        backend=backend,
        tokens=tuple(tokens),
        token_types=tuple(int(t) for t in types),
        bos_token_id=bos,
        eos_token_id=tid("eos_token_id"),
        unk_token_id=tid("unknown_token_id"),
        pad_token_id=tid("padding_token_id"),
        eot_token_ids=eot,
        add_bos_token=add_bos,
        chat_template=template if isinstance(template, str) else None,
    )


def _byte_level(tokens: Sequence[str], merges: Any, pre: Any, where: str) -> Tokenizer:
    if not isinstance(merges, list):
        raise ModelFormatError(f"{where}: a 'gpt2' tokenizer needs tokenizer.ggml.merges")
    spelling = bytes_to_unicode()
    alphabet = set(spelling.values())
    # A token stored as raw text (some converters do that for added tokens) is
    # re-spelled in the byte alphabet, as transformers does.
    vocab = {
        t if set(t) <= alphabet else "".join(spelling[b] for b in t.encode("utf-8")): i
        for i, t in enumerate(tokens)
    }
    backend = Tokenizer(models.BPE(vocab, _split_merges(merges, where), ignore_merges=False))
    split = _PRE_SPLITS.get(pre) if isinstance(pre, str) else None
    if pre in _DIGITS_FIRST:
        backend.pre_tokenizer = pre_tokenizers.Sequence(
            [
                pre_tokenizers.Digits(individual_digits=True),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
            ]
        )
    elif split is None:
        backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    else:
        backend.pre_tokenizer = pre_tokenizers.Sequence(
            [
                pre_tokenizers.Split(Regex(split), behavior="isolated"),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
            ]
        )
    backend.decoder = decoders.ByteLevel()
    return backend


def _sentencepiece(
    tokens: Sequence[str], scores: Sequence[float], merges: Any, md: Mapping[str, Any], where: str
) -> Tokenizer:
    vocab = {t: i for i, t in enumerate(tokens)}
    pairs = (
        _split_merges(merges, where)
        if isinstance(merges, list)
        else _merges_from_scores(vocab, dict(zip(tokens, scores, strict=True)))
    )
    backend = Tokenizer(models.BPE(vocab, pairs, fuse_unk=True, byte_fallback=True, dropout=None))
    prefix = bool(md.get("tokenizer.ggml.add_space_prefix", True))
    backend.pre_tokenizer = pre_tokenizers.Metaspace(
        replacement="\u2581", prepend_scheme="first" if prefix else "never", split=False
    )
    steps = [decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse()]
    if prefix:
        steps.append(decoders.Strip(content=" ", left=1))
    backend.decoder = decoders.Sequence(steps)
    return backend


def _split_merges(merges: list[str], where: str) -> list[tuple[str, str]]:
    pairs = []
    for m in merges:
        left, sep, right = m.partition(" ")
        if not sep:
            raise ModelFormatError(f"{where}: merge {m!r} is not two space-separated tokens")
        pairs.append((left, right))
    return pairs


def _merges_from_scores(vocab: dict[str, int], scores: dict[str, float]) -> list[tuple[str, str]]:
    """Older SentencePiece GGUFs list no merges: every split of a token into two
    vocabulary tokens is a merge, ranked by the merged token's score (higher first)."""
    ranked = []
    for token, score in scores.items():
        local = [
            (token[:k], token[k:], score)
            for k in range(1, len(token))
            if token[:k] in vocab and token[k:] in vocab
        ]
        local.sort(key=lambda m: (vocab[m[0]], vocab[m[1]]))
        ranked.extend(local)
    ranked.sort(key=lambda m: (m[2], len(m[0]), len(m[1])), reverse=True)
    return [(a, b) for a, b, _ in ranked]


def _add_special(
    backend: Tokenizer, tokens: Sequence[str], types: Sequence[int], byte_level: bool
) -> None:
    """Control tokens (like `<|im_start|>`) become special added tokens, matched
    whole in text; user-defined ones (like `<think>`) become plain added tokens."""
    alphabet = set(bytes_to_unicode().values()) if byte_level else None
    control = [
        AddedToken(t, normalized=False, special=True)
        for t, kind in zip(tokens, types, strict=True)
        # A control token outside the byte alphabet is a llama.cpp mislabel;
        # adding it would grow the vocabulary past the embedding.
        if kind == _CONTROL and (alphabet is None or set(t) <= alphabet)
    ]
    if control:
        backend.add_special_tokens(control)
    user = [
        AddedToken(t, normalized=False, special=False)
        for t, kind in zip(tokens, types, strict=True)
        if kind == _USER_DEFINED
    ]
    if user:
        backend.add_tokens(user)

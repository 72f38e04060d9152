"""`Tokenizer`: encode, decode and chat-template a model's text, torch-free.

Built either from a Hugging Face folder (`tokenizer.json` + `tokenizer_config.json`)
or from a GGUF file's metadata; both give ids identical to transformers'.
"""

from __future__ import annotations

import json
import operator
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tokenizers import Tokenizer as Backend
from tokenizers import processors

from parallax.errors import InvalidArgument, ModelFormatError
from parallax.models.gguf_file import read_gguf
from parallax.tokenizer.chat import ChatTemplate, normalize_messages
from parallax.tokenizer.gguf_vocab import vocab_from_metadata

if TYPE_CHECKING:
    from parallax.models.registry import ResolvedModel

# Marks where a message's text goes in a rendered prompt (a private-use character).
_HOLE = "\ue000"
TOKENIZER_ARRAYS = ("tokenizer.ggml.tokens", "tokenizer.ggml.merges")
_SPECIAL_NAMES = ("bos_token", "eos_token", "unk_token", "pad_token")
# Special tokens that end a turn in the chat formats we know (llama.cpp treats
# the same set as end-of-generation), whatever the file names as its eos.
_END_OF_TURN = frozenset(
    {
        "<|im_end|>",
        "<|eot_id|>",
        "<|eom_id|>",
        "<|end|>",
        "<|endoftext|>",
        "<|end_of_text|>",
        "<end_of_turn>",
        "<EOT>",
    }
)


@dataclass(frozen=True)
class Tokenizer:
    backend: Backend = field(repr=False)
    vocab_size: int
    bos_token_id: int | None
    eos_token_ids: tuple[int, ...]  # every id that ends generation
    chat_template: ChatTemplate | None = field(default=None, repr=False)

    # ---- constructors ----
    @classmethod
    def from_model(cls, resolved: ResolvedModel) -> Tokenizer:
        if resolved.format == "gguf":
            return cls.from_gguf(resolved.path)
        if resolved.format == "hf":
            return cls.from_hf_dir(resolved.path)
        raise InvalidArgument(f"model format {resolved.format!r} is neither 'gguf' nor 'hf'")

    @classmethod
    def from_gguf(cls, path: str | Path) -> Tokenizer:
        gf = read_gguf(path, string_arrays=TOKENIZER_ARRAYS)
        v = vocab_from_metadata(gf.metadata, str(gf.path))
        named = {"bos_token": v.bos_token_id, "eos_token": v.eos_token_id}
        named |= {"unk_token": v.unk_token_id, "pad_token": v.pad_token_id}
        specials = {k: v.tokens[i] for k, i in named.items() if i is not None}
        control = {i for i, kind in enumerate(v.token_types) if kind == 3}
        ends = [v.eos_token_id, *v.eot_token_ids]
        ends += [i for i in sorted(control) if v.tokens[i] in _END_OF_TURN]
        return cls._build(v.backend, v.bos_token_id, ends, v.chat_template, specials)

    @classmethod
    def from_hf_dir(cls, path: str | Path) -> Tokenizer:
        root = Path(path)
        tok_file = root / "tokenizer.json"
        if not tok_file.is_file():
            raise ModelFormatError(
                f"{root} has no tokenizer.json; a Hugging Face model folder needs one "
                "(save it with tokenizer.save_pretrained)"
            )
        try:
            backend = Backend.from_file(str(tok_file))
        except Exception as e:  # the Rust side raises plain Exception subclasses
            raise ModelFormatError(f"{tok_file} cannot be read by `tokenizers`: {e}") from e
        cfg = {
            **_read_json(root / "special_tokens_map.json"),
            **_read_json(root / "tokenizer_config.json"),
        }
        specials = {k: s for k in _SPECIAL_NAMES if (s := _token_text(cfg.get(k))) is not None}
        if "add_bos_token" in cfg or "add_eos_token" in cfg:
            # transformers rebuilds the post-processor from these flags when present
            _set_bos_eos(
                backend, specials, bool(cfg.get("add_bos_token")), bool(cfg.get("add_eos_token"))
            )
        bos = backend.token_to_id(specials["bos_token"]) if "bos_token" in specials else None
        ends: list[int | None] = []
        if "eos_token" in specials:
            ends.append(backend.token_to_id(specials["eos_token"]))
        gen_eos = _read_json(root / "generation_config.json").get("eos_token_id")
        ends += gen_eos if isinstance(gen_eos, list) else [gen_eos]
        added = backend.get_added_tokens_decoder()
        ends += [i for i, t in sorted(added.items()) if t.special and t.content in _END_OF_TURN]
        return cls._build(backend, bos, ends, _hf_template(root, cfg), specials)

    @classmethod
    def _build(
        cls,
        backend: Backend,
        bos: int | None,
        ends: Sequence[int | None],
        template: str | None,
        specials: Mapping[str, str],
    ) -> Tokenizer:
        # Decoding must be the exact inverse of encoding for streaming to work.
        backend.no_truncation()
        backend.no_padding()
        eos = tuple(dict.fromkeys(int(i) for i in ends if i is not None))
        chat = ChatTemplate(template, dict(specials)) if template else None
        return cls(backend, backend.get_vocab_size(with_added_tokens=True), bos, eos, chat)

    # ---- text <-> ids ----
    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        if not isinstance(text, str):
            raise InvalidArgument(f"text to encode must be a string, not {type(text).__name__}")
        return self.backend.encode(text, add_special_tokens=add_special_tokens).ids

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        try:
            ids = [operator.index(i) for i in ids]
        except TypeError as e:
            raise InvalidArgument(f"token ids must be integers: {e}") from e
        bad = [i for i in ids if not 0 <= i < self.vocab_size]
        if bad:
            raise InvalidArgument(
                f"token ids {bad[:5]} are outside the vocabulary [0, {self.vocab_size})"
            )
        return self.backend.decode(ids, skip_special_tokens=skip_special_tokens)

    def id_to_token(self, i: int) -> str:
        token = self.backend.id_to_token(i) if isinstance(i, int) and i >= 0 else None
        if token is None:
            raise InvalidArgument(f"token id {i} is outside the vocabulary [0, {self.vocab_size})")
        return token

    # ---- chat ----
    def apply_chat_template(
        self,
        messages: list[dict],
        add_generation_prompt: bool = True,
        tools: Sequence[Mapping[str, Any]] | None = None,
        template_kwargs: Mapping[str, Any] | None = None,
    ) -> str:
        """The prompt text; `tools` and `template_kwargs` as in `ChatTemplate.render`."""
        if self.chat_template is None:
            raise InvalidArgument(
                "this model has no chat template (a base model?); use plain completions "
                "instead of chat, or add chat_template to the model files"
            )
        return self.chat_template.render(
            messages, add_generation_prompt, tools, **dict(template_kwargs or {})
        )

    def encode_chat(
        self,
        messages: list[dict],
        add_generation_prompt: bool = True,
        tools: Sequence[Mapping[str, Any]] | None = None,
        template_kwargs: Mapping[str, Any] | None = None,
    ) -> list[int]:
        """Prompt ids of a conversation. Special tokens come only from the template: a
        message whose text spells one (a user typing `<|im_end|>` to forge a turn) has
        that text encoded as plain text. Other messages encode exactly as transformers
        encodes the rendered prompt."""
        # The template writes BOS itself when the model wants one, as in transformers.
        plain = normalize_messages(messages)
        forged = [
            i
            for i, m in enumerate(plain)
            if isinstance(m.get("content"), str) and any(t in m["content"] for t in self._specials)
        ]
        if not forged:
            return self.encode(
                self.apply_chat_template(plain, add_generation_prompt, tools, template_kwargs)
            )
        texts = {i: plain[i]["content"] for i in forged}
        for i in forged:
            plain[i] = {**plain[i], "content": f"{_HOLE}{i}{_HOLE}"}
        rendered = self.apply_chat_template(plain, add_generation_prompt, tools, template_kwargs)
        pieces = rendered.split(_HOLE)
        ids: list[int] = []
        for k, piece in enumerate(pieces):
            if k % 2 == 0:  # template text: its special tokens are real
                ids += self.encode(piece) if piece else []
            else:  # a forged message's own text, specials spelled out as plain text
                ids += self._plain.encode(texts[int(piece)], add_special_tokens=False).ids
        return ids

    @cached_property
    def _specials(self) -> tuple[str, ...]:
        added = self.backend.get_added_tokens_decoder().values()
        return tuple(t.content for t in added if t.special)

    @cached_property
    def _plain(self) -> Backend:
        """A copy of the backend that encodes special-token text as ordinary text."""
        plain = Backend.from_str(self.backend.to_str())
        plain.encode_special_tokens = True
        return plain


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ModelFormatError(f"{path} is not valid JSON: {e}") from e
    if not isinstance(data, dict):
        raise ModelFormatError(f"{path} must hold a JSON object")
    return data


def _token_text(value: Any) -> str | None:
    """Special tokens are stored as a string or as an AddedToken dict."""
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) and value else None


def _hf_template(root: Path, cfg: Mapping[str, Any]) -> str | None:
    jinja_file = root / "chat_template.jinja"
    if jinja_file.is_file():
        return jinja_file.read_text(encoding="utf-8")
    template = cfg.get("chat_template")
    if isinstance(template, list):  # named templates: [{"name": "default", "template": ...}]
        named = {t.get("name"): t.get("template") for t in template if isinstance(t, dict)}
        template = named.get("default", next(iter(named.values()), None))
    return template if isinstance(template, str) and template else None


def _set_bos_eos(backend: Backend, specials: Mapping[str, str], bos: bool, eos: bool) -> None:
    b, e = specials.get("bos_token"), specials.get("eos_token")
    bos, eos = bos and b is not None, eos and e is not None
    single = f"{b + ':0 ' if bos else ''}$A:0{' ' + e + ':0' if eos else ''}"
    pair = f"{single}{' ' + b + ':1' if bos else ''} $B:1{' ' + e + ':1' if eos else ''}"
    tokens = [(t, backend.token_to_id(t)) for t, on in ((b, bos), (e, eos)) if on]
    missing = [t for t, i in tokens if i is None]
    if missing:
        raise ModelFormatError(f"special tokens {missing} are not in tokenizer.json's vocabulary")
    backend.post_processor = processors.TemplateProcessing(
        single=single, pair=pair, special_tokens=tokens
    )

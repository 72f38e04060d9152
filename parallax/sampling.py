"""Per-request sampling parameters: validated at the edge, frozen, wire-convertible."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from parallax.errors import InvalidArgument
from parallax.grammar import GrammarSpec
from parallax.rpc import parallax_pb2 as pb

MAX_STOP_TOKEN_IDS = 64
MAX_LOGPROBS = 20


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = 0.0  # 0 = greedy
    top_p: float = 1.0
    top_k: int = 0  # 0 = off
    min_p: float = 0.0
    seed: int | None = None  # makes the request reproducible whatever it is batched with
    repetition_penalty: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    stop_token_ids: tuple[int, ...] = ()
    max_tokens: int = 16
    min_tokens: int = 0
    ignore_eos: bool = False
    logprobs: int = -1  # -1 none; 0 the chosen token; n: plus the top n
    logit_bias: Mapping[int, float] = field(default_factory=lambda: MappingProxyType({}))
    grammar: GrammarSpec | None = None  # structured output: the sampling hop masks the rest

    def __post_init__(self) -> None:
        def bad(name: str, why: str) -> None:
            raise InvalidArgument(f"sampling parameter {name}={getattr(self, name)!r}: {why}")

        if not 0.0 <= self.temperature <= 100.0:
            bad("temperature", "must be in [0, 100]")
        if not 0.0 < self.top_p <= 1.0:
            bad("top_p", "must be in (0, 1]")
        if self.top_k < 0:
            bad("top_k", "must be >= 0 (0 disables it)")
        if not 0.0 <= self.min_p <= 1.0:
            bad("min_p", "must be in [0, 1]")
        if self.seed is not None and not 0 <= self.seed < 2**63:
            bad("seed", "must be in [0, 2**63)")
        if not 0.0 < self.repetition_penalty <= 10.0:
            bad("repetition_penalty", "must be in (0, 10]")
        for name in ("presence_penalty", "frequency_penalty"):
            if not -2.0 <= getattr(self, name) <= 2.0:
                bad(name, "must be in [-2, 2]")
        if self.max_tokens < 1:
            bad("max_tokens", "must be >= 1")
        if not 0 <= self.min_tokens <= self.max_tokens:
            bad("min_tokens", "must be in [0, max_tokens]")
        if len(self.stop_token_ids) > MAX_STOP_TOKEN_IDS:
            bad("stop_token_ids", f"at most {MAX_STOP_TOKEN_IDS}")
        if not -1 <= self.logprobs <= MAX_LOGPROBS:
            bad("logprobs", f"must be in [-1, {MAX_LOGPROBS}]")
        for tok, bias in self.logit_bias.items():
            if not -100.0 <= bias <= 100.0:
                raise InvalidArgument(f"logit_bias[{tok}]={bias}: must be in [-100, 100]")
        if not isinstance(self.logit_bias, MappingProxyType):
            object.__setattr__(self, "logit_bias", MappingProxyType(dict(self.logit_bias)))

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0

    def check_vocab(self, vocab_size: int) -> None:
        for tok in (*self.stop_token_ids, *self.logit_bias):
            if not 0 <= tok < vocab_size:
                raise InvalidArgument(f"token id {tok} is outside the vocabulary [0, {vocab_size})")

    def to_proto(self) -> pb.SamplingParams:
        return pb.SamplingParams(
            temperature=self.temperature,
            top_p=self.top_p,
            top_k=self.top_k,
            min_p=self.min_p,
            has_seed=self.seed is not None,
            seed=self.seed or 0,
            repetition_penalty=self.repetition_penalty,
            presence_penalty=self.presence_penalty,
            frequency_penalty=self.frequency_penalty,
            stop_token_ids=list(self.stop_token_ids),
            max_tokens=self.max_tokens,
            min_tokens=self.min_tokens,
            ignore_eos=self.ignore_eos,
            logprobs=self.logprobs,
            logit_bias=dict(self.logit_bias),
            grammar=self.grammar.to_proto() if self.grammar else None,
        )

    @classmethod
    def from_proto(cls, m: pb.SamplingParams) -> SamplingParams:
        """Validates: a malformed message raises InvalidArgument (gRPC INVALID_ARGUMENT)."""
        return cls(
            temperature=m.temperature,
            top_p=m.top_p,
            top_k=m.top_k,
            min_p=m.min_p,
            seed=m.seed if m.has_seed else None,
            repetition_penalty=m.repetition_penalty,
            presence_penalty=m.presence_penalty,
            frequency_penalty=m.frequency_penalty,
            stop_token_ids=tuple(m.stop_token_ids),
            max_tokens=m.max_tokens,
            min_tokens=m.min_tokens,
            ignore_eos=m.ignore_eos,
            logprobs=m.logprobs,
            logit_bias=dict(m.logit_bias),
            grammar=GrammarSpec.from_proto(m.grammar),
        )

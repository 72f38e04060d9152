"""What every route of one gateway app shares; built once by `create_app`."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from coordinator.gateway.backend import Backend
from coordinator.gateway.fanout import TaskKeeper
from coordinator.gateway.token_text import TokenTexts
from parallax.sampling import SamplingParams
from parallax.tokenizer.detok import IncrementalDetokenizer
from parallax.tokenizer.tokenizer import Tokenizer

SYSTEM_FINGERPRINT = "parallax-0.1.0"


@dataclass(frozen=True)
class GatewayContext:
    backend: Backend
    tokenizer: Tokenizer
    model_id: str
    context_length: int
    api_keys: tuple[str, ...]
    texts: TokenTexts
    keeper: TaskKeeper = field(default_factory=TaskKeeper)
    started: int = field(default_factory=lambda: int(time.time()))

    def detokenizer(self, prompt_ids: Sequence[int]) -> IncrementalDetokenizer:
        return IncrementalDetokenizer(self.tokenizer, prompt_ids)

    def end_token_ids(self, sampling: SamplingParams) -> frozenset[int]:
        """Ids that end generation and so never show in the output text."""
        return frozenset((*self.tokenizer.eos_token_ids, *sampling.stop_token_ids))

"""Constrained decoding on the sampling hop: grammars compiled off the step loop, and
the token masks of a step's constrained rows.

One `Grammars` per node. The engine's tokenizer (llguidance's view of the node's own
vocabulary, GGUF or tokenizer.json) is built once, on the first constrained request;
grammars are compiled in a worker thread as soon as a request reaches this hop, and
kept in an LRU by spec, so a schema sent again costs a copy. A step only computes
masks (llguidance's thread pool, without the GIL) and advances matchers.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor

import llguidance as llg
import torch

from parallax.errors import InvalidArgument
from parallax.grammar import GrammarSpec
from parallax.tokenizer import Tokenizer

log = logging.getLogger(__name__)

CACHE_SIZE = 128  # compiled grammars kept, by spec
MASK_THREADS = max(1, min(4, (os.cpu_count() or 1) // 2))  # llguidance's mask workers
_BITS = torch.arange(32, dtype=torch.int32)


class Grammars:
    def __init__(self, load_tokenizer: Callable[[], Tokenizer], cache_size: int = CACHE_SIZE):
        self._load = load_tokenizer
        self._cache_size = cache_size
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="grammar")
        self._lock = threading.Lock()
        self._tokenizer_lock = threading.Lock()
        self._tokenizer: llg.LLTokenizer | None = None
        self._compiled: OrderedDict[GrammarSpec, Future[llg.LLMatcher]] = OrderedDict()
        self._executor: llg.LLExecutor | None = None

    @classmethod
    def for_model(cls, resolved) -> Grammars:
        return cls(lambda: Tokenizer.from_model(resolved))

    def _build_tokenizer(self) -> llg.LLTokenizer:
        tok = self._load()
        return llg.LLTokenizer(
            tok.backend.to_str(), n_vocab=tok.vocab_size, eos_token=list(tok.eos_token_ids)
        )

    def tokenizer(self) -> llg.LLTokenizer:
        """Built once, by the first caller (the compile thread, as a rule): every other
        waits for it rather than building its own."""
        with self._tokenizer_lock:
            if self._tokenizer is None:
                self._tokenizer = self._build_tokenizer()
            return self._tokenizer

    def _compile(self, spec: GrammarSpec) -> llg.LLMatcher:
        m = llg.LLMatcher(self.tokenizer(), spec.engine_grammar(), log_level=0)
        if m.is_error():
            raise InvalidArgument(f"the {spec.kind} grammar cannot be used: {m.get_error()}")
        return m

    def compile(self, spec: GrammarSpec) -> Future[llg.LLMatcher]:
        """The grammar's compiled matcher, in its start state: shared, so copy it
        (`start`) for a request. Compiled in the background the first time."""
        with self._lock:
            fut = self._compiled.get(spec)
            if fut is None:
                fut = self._compiled[spec] = self._pool.submit(self._compile, spec)
                while len(self._compiled) > self._cache_size:
                    self._compiled.popitem(last=False)
            else:
                self._compiled.move_to_end(spec)
        return fut

    @staticmethod
    def start(compiled: Future[llg.LLMatcher], generated: Sequence[int]) -> llg.LLMatcher:
        """A request's own matcher (waits for the compile if it is still running), fed
        the tokens a replay carries: they were generated under the same grammar."""
        m = compiled.result().deep_copy()
        if generated and not m.consume_tokens(list(generated)):
            raise InvalidArgument(
                f"the {len(generated)} tokens generated so far do not fit the grammar: "
                f"{m.get_error()}"
            )
        return m

    def allowed(self, matchers: Sequence[llg.LLMatcher], width: int) -> torch.Tensor:
        """[len(matchers), width] bool: the tokens each matcher allows next. Ids past the
        tokenizer's vocabulary (padded embedding rows) are never allowed."""
        n = len(matchers)
        words = (self.tokenizer().vocab_size + 31) // 32
        buf = torch.zeros((n, words), dtype=torch.int32)
        if self._executor is None:
            self._executor = llg.LLExecutor(MASK_THREADS)
        self._executor.unsafe_compute_mask_ptr(
            [(m, i) for i, m in enumerate(matchers)], buf.data_ptr(), words * 4, n
        )
        bits = ((buf.unsqueeze(-1) >> _BITS) & 1).view(n, words * 32).bool()
        if words * 32 >= width:
            return bits[:, :width]
        return torch.cat([bits, bits.new_zeros((n, width - words * 32))], dim=1)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

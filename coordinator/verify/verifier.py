"""The spot-check loop: sampled greedy requests down two chains, scores, quarantine.

For each user request the gateway admits, a check is due with probability
`--verify-rate`; when none ran for `--verify-idle-s`, one runs anyway, so a quiet
cluster is checked too. Checks run one at a time, at most `MAX_PENDING` owed, off
the request path. Each uses the verifier's own prompts (a fixed set, tokenized with
the model's tokenizer: no user prompt is ever re-sent) under ids shaped like a user's
chat (a node cannot tell them by id), and goes through `generate_on`: exactly the
chain given, no admission, no replay.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

from coordinator.gateway.backend import GenerationRequest, TokenOut
from coordinator.gateway.cluster_backend import ClusterBackend
from coordinator.gateway.generation import new_id
from coordinator.registry import Registry
from coordinator.scheduler.types import Route
from coordinator.verify.attribute import Verdict, check_pair
from coordinator.verify.chains import pick_pair
from coordinator.verify.compare import Generated, Match
from coordinator.verify.scores import Ledger
from parallax.config.coordinator import CoordinatorConfig
from parallax.errors import ConfigError, InvalidArgument, ParallaxError
from parallax.models.registry import ResolvedModel
from parallax.sampling import SamplingParams
from parallax.tokenizer import Tokenizer
from parallax.types import NodeId

log = logging.getLogger(__name__)

SPOT_CHECK_CLIENT = "spot-check"  # admission/log name; never sent to nodes
TICK_S = 0.5
MAX_PENDING = 4  # checks owed at most: a burst of traffic cannot queue a flood of them
RUN_TIMEOUT_S = 60.0  # one chain's whole answer (a few tokens), on a loaded CPU cluster
MAX_REPORTED = 20  # latest quarantines listed in the report
TOP_LOGPROBS = 5  # alternatives asked per token: enough to see a near tie
# Short, neutral prompts whose first tokens depend on every layer of the model; many of
# them, picked at random, so a node cannot learn a handful by heart. A cluster that
# wants prompts nobody can read in the source gives --verify-prompts.
_ASKS = (
    "What is {}?",
    "Write one sentence about {}.",
    "Explain {} to a child.",
    "Name two facts about {}.",
    "Why does {} matter?",
    "Describe {} in a few words.",
)
_SUBJECTS = (
    "rivers", "the moon", "bread", "a CPU", "volcanoes", "the violin", "honey bees",
    "glaciers", "chess", "the printing press", "coffee", "tides", "maps", "owls",
    "copper", "rain", "bicycles", "the Roman empire", "spiders", "clouds", "salt",
    "lighthouses", "the heart", "deserts",
)  # fmt: skip
PROMPTS = tuple(ask.format(subject) for ask in _ASKS for subject in _SUBJECTS)


def read_prompts(path: str) -> tuple[str, ...]:
    """One prompt per non-empty line of `path`."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as e:
        raise ConfigError(f"--verify-prompts {path}: cannot read it ({e.strerror})") from e
    prompts = tuple(line.strip() for line in lines if line.strip())
    if not prompts:
        raise ConfigError(f"--verify-prompts {path}: no prompts in it (one per line)")
    return prompts


class ChainRunner(Protocol):
    def generate_on(self, req: GenerationRequest, route: Route) -> AsyncIterator[TokenOut]: ...


@dataclass(frozen=True)
class VerifyOptions:
    rate: float  # share of user requests that trigger a check
    idle_s: float  # a check when none ran this long; 0 = never
    tokens: int  # generated and compared per chain
    tolerance: float  # nats: a difference closer than this is a rounding tie


def tokenize_prompts(tok: Tokenizer, texts: Sequence[str] = PROMPTS) -> list[tuple[int, ...]]:
    """The prompts as the model sees them: chat-formatted where the model has a template."""
    out = []
    for text in texts:
        try:
            ids = tok.encode_chat([{"role": "user", "content": text}])
        except InvalidArgument:  # a base model without a chat template
            ids = tok.encode(text)
        if ids:
            out.append(tuple(ids))
    return out


class Verifier:
    def __init__(
        self,
        registry: Registry,
        runner: ChainRunner,
        served: Callable[[], int],
        prompts: Sequence[tuple[int, ...]],
        options: VerifyOptions,
        *,
        ledger: Ledger | None = None,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
    ) -> None:
        if (options.rate > 0 or options.idle_s > 0) and (not prompts or not all(prompts)):
            raise InvalidArgument("the verifier needs at least one non-empty prompt")
        self.registry = registry
        self.options = options
        self.ledger = ledger or Ledger()
        self._runner = runner
        self._served = served
        self._prompts = list(prompts)
        self._clock = clock
        self._rng = rng or random.Random()
        self.outcomes: Counter[str] = Counter()  # checks by outcome
        self.quarantines: list[dict[str, Any]] = []  # who, when (checks run by then), why
        self.runs = 0

    async def run_forever(self) -> None:
        if self.options.rate == 0 and self.options.idle_s == 0:
            return
        seen, owed, last = self._served(), 0, self._clock()
        while True:
            await asyncio.sleep(TICK_S)
            now_seen = self._served()
            new, seen = now_seen - seen, now_seen
            owed += sum(self._rng.random() < self.options.rate for _ in range(min(new, 1000)))
            owed = min(owed, MAX_PENDING)
            idle = self.options.idle_s > 0 and self._clock() - last >= self.options.idle_s
            if not (owed or idle):
                continue
            owed = max(0, owed - 1)
            try:
                await self.check_once()
            except ParallaxError as e:  # the cluster changed under the check: next time
                log.warning("spot check failed", extra={"error": str(e)})
            last = self._clock()

    async def check_once(self) -> Verdict | None:
        """One check on the least-checked node that has a pair; None when none has one."""
        state = self.registry.cluster_state()
        order = sorted(
            state.nodes, key=lambda n: (self.ledger.get(n.node_id).checks, self._rng.random())
        )
        # O(layers x nodes) per node tried: a big cluster of sole holders is no business
        # of the event loop.
        pair = await asyncio.to_thread(
            lambda: next((p for n in order if (p := pick_pair(state, n.node_id)) is not None), None)
        )
        if pair is None:
            self.outcomes["skipped"] += 1
            return None
        prompt = self._rng.choice(self._prompts)

        async def run(route: Route) -> Generated | None:
            return await self._run(route, prompt)

        verdict = await check_pair(pair, state, run, self.options.tolerance)
        self.runs += verdict.runs
        self.outcomes["failed" if verdict.failed else str(verdict.match)] += 1
        await self._apply(verdict)
        log.info(
            "spot check",
            extra={
                "focus": pair.focus,
                "a": [h.node_id for h in pair.a.hops],
                "b": [h.node_id for h in pair.b.hops],
                "match": str(verdict.match),
                "blame": sorted(verdict.blame),
                "runs": verdict.runs,
            },
        )
        return verdict

    async def _apply(self, verdict: Verdict) -> None:
        for node in verdict.credit - set(verdict.blame):
            self.ledger.agree(node)
        for node, why in verdict.unverified.items():
            self.ledger.unverified(node, why)
        for node, why in verdict.blame.items():
            if self.ledger.blame(node, why):
                await self._quarantine(node, why)
        self.ledger.forget({r.node_id for r in self.registry.nodes})

    async def _quarantine(self, node: NodeId, why: str) -> None:
        s = self.ledger.get(node)
        reason = f"spot checks: blamed {s.blames} times; last: {why}"
        # Re-allocation may take seconds (the exact solver): off the event loop.
        if await asyncio.to_thread(self.registry.quarantine, node, reason, self._clock()):
            # Checks that verified something: not skipped, and both chains answered.
            checks = sum(n for k, n in self.outcomes.items() if k not in ("skipped", "failed"))
            self.quarantines.append({"node_id": node, "after_checks": checks, "reason": reason})
            log.warning(
                "node quarantined",
                extra={"node_id": node, "after_checks": checks, "reason": reason},
            )

    async def _run(self, route: Route, prompt: tuple[int, ...]) -> Generated | None:
        # A chain that ends early ends with the same EOS token an honest one picks, so
        # comparing up to the shorter answer is enough: no distinctive ignore_eos.
        sampling = SamplingParams(
            temperature=0.0, max_tokens=self.options.tokens, logprobs=TOP_LOGPROBS
        )
        req = GenerationRequest(f"{new_id('chatcmpl')}-0", prompt, sampling, SPOT_CHECK_CLIENT)
        tokens: list[int] = []
        logprobs: list[dict[int, float]] = []
        stream = self._runner.generate_on(req, route)
        try:
            async with asyncio.timeout(RUN_TIMEOUT_S):
                async for t in stream:
                    if t.failure is not None:
                        return None
                    tokens.append(t.token_id)
                    top = dict(t.top_logprobs)
                    if t.logprob is not None:
                        top[t.token_id] = t.logprob
                    logprobs.append(top)
                    if t.finished:
                        break
        except (TimeoutError, ParallaxError) as e:
            log.info(
                "spot check chain failed", extra={"request_id": req.request_id, "error": str(e)}
            )
            return None
        finally:
            close = getattr(stream, "aclose", None)
            if close is not None:  # now, not at garbage collection: it releases the KV
                await close()
        return Generated(tuple(tokens), tuple(logprobs))

    def report(self) -> dict[str, Any]:
        """For /cluster/status, the dashboard and /metrics."""
        return {
            "rate": self.options.rate,
            "idle_s": self.options.idle_s,
            "tokens": self.options.tokens,
            "tolerance": self.options.tolerance,
            "checks": {k: self.outcomes.get(k, 0) for k in (*map(str, Match), "failed", "skipped")},
            "runs": self.runs,
            "quarantined": len(self.quarantines),
            "quarantines": self.quarantines[-MAX_REPORTED:],
            "nodes": self.ledger.to_json(),
        }


def build_verifier(
    config: CoordinatorConfig,
    resolved: ResolvedModel,
    registry: Registry,
    backend: ClusterBackend,
    clock: Callable[[], float] = time.time,
) -> Verifier:
    """The coordinator's verifier over its gateway's backend (`run_forever` returns at
    once when both --verify-rate and --verify-idle-s are 0)."""
    options = VerifyOptions(
        rate=config.verify_rate,
        idle_s=config.verify_idle_s,
        tokens=config.verify_tokens,
        tolerance=config.verify_tolerance,
    )
    texts = read_prompts(config.verify_prompts) if config.verify_prompts else PROMPTS
    prompts = tokenize_prompts(Tokenizer.from_model(resolved), texts)
    if not prompts:
        log.warning("spot checks are off: the model's tokenizer gives no ids for their prompts")
        options = replace(options, rate=0.0, idle_s=0.0)
    return Verifier(
        registry, backend, lambda: backend.admission.stats.admitted, prompts, options, clock=clock
    )

"""Comparing what two chains generated for the same greedy request.

Greedy decoding picks the top logit at every step; two honest chains with the same
weights pick the same tokens unless two logits are so close that rounding decides
(reduction order in fp32, one rounding step in bf16/fp16). So at the first position
where the tokens differ, the chains' own log-probabilities say whether it is a near
tie: when either chain rates the other's token within `tolerance` nats of its own
choice, the difference is rounding, the prefix before it is what was verified, and
nothing after it is compared (the chains then continue from different texts). A
difference that both chains are sure of is a disagreement. Per-dtype tolerances are
in docs/SECURITY.md.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum


class Match(StrEnum):
    AGREE = "agree"  # same tokens (up to a near tie after the first)
    DISAGREE = "disagree"  # a token both chains are sure of differs
    UNDECIDED = "undecided"  # a near tie at the first token, or nothing to compare


@dataclass(frozen=True)
class Generated:
    """What one chain produced: token ids, and per position the log-probabilities it
    gave its choice and its top alternatives."""

    tokens: tuple[int, ...]
    logprobs: tuple[Mapping[int, float], ...] = ()

    def margin(self, position: int, other: int) -> float:
        """How much more this chain rated its own token than `other` at `position`
        (nats); infinite when `other` is not among its top alternatives."""
        if position >= len(self.logprobs):
            return math.inf
        top = self.logprobs[position]
        mine = top.get(self.tokens[position])
        theirs = top.get(other)
        if mine is None or theirs is None:
            return math.inf
        return mine - theirs


def compare(x: Generated, y: Generated, tolerance: float) -> Match:
    n = min(len(x.tokens), len(y.tokens))
    if n == 0:
        return Match.UNDECIDED
    for i in range(n):
        tx, ty = x.tokens[i], y.tokens[i]
        if tx == ty:
            continue
        if min(x.margin(i, ty), y.margin(i, tx)) <= tolerance:
            return Match.AGREE if i > 0 else Match.UNDECIDED
        return Match.DISAGREE
    return Match.AGREE


def same(x: Generated, y: Generated, tolerance: float) -> bool:
    """Not a disagreement (an undecided pair is given the benefit of the doubt)."""
    return compare(x, y, tolerance) is not Match.DISAGREE

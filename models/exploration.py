"""Exploration: choose a slate of k offers from scored candidates, recording each choice's propensity.

Off by default (``greedy``: the top k by score, each with propensity 1). ``epsilon``: at each slot,
with probability epsilon a uniformly random remaining candidate, else the best remaining one.
``softmax``: at each slot, a remaining candidate drawn with probability proportional to
``exp(score / temperature)``. The propensity of each returned offer is the probability with which
it was chosen for its slot, given the slots before it: what off-policy evaluation needs later.

Examples
--------
>>> import random
>>> slate = choose([0.9, 0.1, 0.5], 2, Exploration(), random.Random(0))
>>> slate
[(0, 1.0), (2, 1.0)]
>>> parse_exploration("epsilon:0.1")
Exploration(mode='epsilon', epsilon=0.1, temperature=0.05)
"""

from __future__ import annotations

import heapq
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass

from models.errors import ValidationError

__all__ = ["Exploration", "parse_exploration", "choose"]

MODES = ("greedy", "epsilon", "softmax")


@dataclass(frozen=True, slots=True)
class Exploration:
    """How a slate is chosen; ``greedy`` (no exploration) is the default for a new shop."""

    mode: str = "greedy"
    epsilon: float = 0.1
    temperature: float = 0.05


def parse_exploration(text: str | None) -> Exploration:
    """Parse ``greedy``, ``epsilon:0.1`` or ``softmax:0.05`` (the temperature)."""
    if not text or text == "greedy":
        return Exploration()
    mode, _, value = text.partition(":")
    try:
        number = float(value)
    except ValueError:
        raise ValidationError("exploration", f"expected greedy, epsilon:E or softmax:T, got {text!r}") from None
    if mode == "epsilon" and 0.0 <= number <= 1.0:
        return Exploration(mode="epsilon", epsilon=number)
    if mode == "softmax" and number > 0.0:
        return Exploration(mode="softmax", temperature=number)
    raise ValidationError("exploration", f"expected greedy, epsilon:E (0..1) or softmax:T (> 0), got {text!r}")


def choose(scores: Sequence[float], k: int, policy: Exploration, rng: random.Random) -> list[tuple[int, float]]:
    """Pick up to ``k`` candidate indices; return ``(index, propensity)`` in slot order.

    Ties in score are broken by index, so callers pass candidates in a stable order.
    """
    if policy.mode == "greedy":  # the top k: nlargest is sorted(..., reverse=True)[:k], stable
        return [(i, 1.0) for i in heapq.nlargest(k, range(len(scores)), key=scores.__getitem__)]
    # by score, highest first; a reverse sort is stable, so equal scores keep index order
    remaining = sorted(range(len(scores)), key=scores.__getitem__, reverse=True)
    slate: list[tuple[int, float]] = []
    while remaining and len(slate) < k:
        if policy.mode == "epsilon":
            pick = rng.randrange(len(remaining)) if rng.random() < policy.epsilon else 0
            uniform = policy.epsilon / len(remaining)
            propensity = uniform + (1.0 - policy.epsilon if pick == 0 else 0.0)
        elif policy.mode == "softmax":
            top = scores[remaining[0]]
            weights = [math.exp((scores[i] - top) / policy.temperature) for i in remaining]
            total = sum(weights)
            pick = rng.choices(range(len(remaining)), weights=weights)[0]
            propensity = weights[pick] / total
        else:
            pick, propensity = 0, 1.0
        slate.append((remaining.pop(pick), propensity))
    return slate

"""Exploration: slates, propensities, and that greedy is the default."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from models.errors import ValidationError
from models.exploration import Exploration, choose, parse_exploration

SCORES = [0.9, 0.5, 0.7, 0.1]


def test_greedy_is_the_top_k_with_propensity_one() -> None:
    assert choose(SCORES, 3, Exploration(), random.Random(1)) == [(0, 1.0), (2, 1.0), (1, 1.0)]
    assert parse_exploration(None) == Exploration() == parse_exploration("greedy")


def test_epsilon_greedy_propensities_match_the_observed_frequencies() -> None:
    policy = Exploration(mode="epsilon", epsilon=0.2)
    rng = random.Random(3)
    firsts = Counter()
    logged: dict[int, float] = {}
    n = 20_000
    for _ in range(n):
        (index, propensity), *_ = choose(SCORES, 2, policy, rng)
        firsts[index] += 1
        logged[index] = propensity
    assert logged[0] == pytest.approx(0.8 + 0.2 / 4) and logged[1] == pytest.approx(0.2 / 4)
    for index, count in firsts.items():
        assert count / n == pytest.approx(logged[index], abs=0.01)


def test_softmax_propensities_match_the_observed_frequencies() -> None:
    policy = Exploration(mode="softmax", temperature=0.2)
    rng = random.Random(5)
    firsts = Counter()
    logged: dict[int, float] = {}
    n = 20_000
    for _ in range(n):
        (index, propensity), *_ = choose(SCORES, 1, policy, rng)
        firsts[index] += 1
        logged[index] = propensity
    assert sum(logged.values()) == pytest.approx(1.0)
    for index, count in firsts.items():
        assert count / n == pytest.approx(logged[index], abs=0.01)


def test_slates_never_repeat_an_offer_and_stop_at_the_candidates() -> None:
    for policy in (Exploration(), Exploration("epsilon", 0.5), Exploration("softmax", temperature=1.0)):
        slate = choose(SCORES, 10, policy, random.Random(0))
        assert sorted(i for i, _ in slate) == [0, 1, 2, 3]
        assert all(0 < p <= 1 for _, p in slate)


@pytest.mark.parametrize("text", ["epsilon", "epsilon:2", "softmax:0", "softmax:x", "thompson:1"])
def test_bad_settings_are_refused_with_the_field(text: str) -> None:
    with pytest.raises(ValidationError) as err:
        parse_exploration(text)
    assert err.value.field == "exploration"


def _reference_order(scores: list[float]) -> list[int]:
    """The definition: highest score first, equal scores by index."""
    return sorted(range(len(scores)), key=lambda i: (-scores[i], i))


@pytest.mark.parametrize("seed", range(20))
def test_greedy_and_exploring_orders_equal_the_reference_sort_with_ties(seed: int) -> None:
    rng = random.Random(seed)
    scores = [rng.choice([0.0, -0.0, 0.25, 0.5, 0.5, 1.0, rng.random()]) for _ in range(rng.randint(1, 60))]
    expected = _reference_order(scores)
    for k in (1, 3, len(scores), len(scores) + 5):
        assert [i for i, _ in choose(scores, k, Exploration(), random.Random(0))] == expected[:k]
    # exploring with probability 0 picks the best remaining candidate at every slot
    assert [i for i, _ in choose(scores, len(scores), Exploration("epsilon", 0.0), random.Random(0))] == expected

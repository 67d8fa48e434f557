"""The synthetic shop: its truths are right, and the product's counts find them."""

from __future__ import annotations

import random

import numpy as np
import pytest

from models.experiments import parse_experiment
from offerstream import simulation as sim


@pytest.mark.parametrize("policy", ["oracle", "noisy", "popular", "random"])
def test_the_true_rate_is_the_mean_of_what_the_policy_shows(policy: str) -> None:
    rng = random.Random(1)  # noqa: S311 - simulation
    drawn = [float(sim.P[s, sim.slate(policy, s, rng)].mean()) for _ in range(20_000) for s in range(sim.SEGMENTS)]
    assert abs(np.mean(drawn) - sim.true_rate(policy)) < 5e-4
    assert sim.slate("none", 0, rng) == []


def test_a_large_run_measures_each_arms_true_rate() -> None:
    experiment = parse_experiment(sim.EXPERIMENT, "sim")
    answer = sim.simulate_run(7, 20_000, experiment)
    for name, row in answer["arms"].items():
        if name == "holdout":
            assert row["impressions"] == 0 and row["customers"] > 0
            continue
        truth = sim.true_rate(sim.POLICY_OF[name])
        se = (truth * (1 - truth) / row["impressions"]) ** 0.5
        assert abs(row["rate"] - truth) < 6 * se * 1.5, (name, row["rate"], truth)  # 1.5: per-customer clustering
    assert answer["srm"]["p_value"] > 1e-4


def test_the_smallest_detectable_effect_is_detected_about_as_often_as_promised() -> None:
    effect = sim.mde(0.05, 4000)
    found = sim.detection(0.05, 4000, [effect], runs=200, seed=3)["detected_share"]
    assert 0.65 < found[f"{effect:.4f}"] < 0.92

"""Off-policy estimators: exact on hand examples, unbiased-ish on a bandit with known truth."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from training import ope


def test_hand_example_all_estimators() -> None:
    # 3 rounds, 2 actions. Logged: a=0 (p=.5, r=1), a=1 (p=.25, r=0), a=0 (p=.8, r=0).
    r, a, p = np.array([1.0, 0.0, 0.0]), np.array([0, 1, 0]), np.array([0.5, 0.25, 0.8])
    pi = np.array([[1.0, 0.0], [0.5, 0.5], [0.2, 0.8]])
    q = np.array([[0.6, 0.2], [0.4, 0.1], [0.3, 0.3]])
    w = np.array([2.0, 2.0, 0.25])
    assert ope.importance_weights(a, p, pi) == pytest.approx(w)
    assert ope.ips(r, a, p, pi).value == pytest.approx(2.0 / 3)
    assert ope.snips(r, a, p, pi).value == pytest.approx(2.0 / 4.25)
    dm_terms = np.array([0.6, 0.25, 0.3])
    assert ope.direct_method(pi, q).value == pytest.approx(dm_terms.mean())
    dr_terms = dm_terms + w * (r - np.array([0.6, 0.1, 0.3]))
    est = ope.doubly_robust(r, a, p, pi, q)
    assert est.value == pytest.approx(dr_terms.mean())
    assert est.se == pytest.approx(dr_terms.std(ddof=1) / np.sqrt(3))
    assert est.n == 3


def test_target_equal_to_logging_policy_gives_the_mean_reward() -> None:
    r, a, p = np.array([1.0, 0.0, 1.0, 0.0]), np.array([0, 1, 1, 0]), np.full(4, 0.5)
    pi = np.full((4, 2), 0.5)
    assert ope.ips(r, a, p, pi).value == pytest.approx(0.5)
    assert ope.snips(r, a, p, pi).value == pytest.approx(0.5)


def test_invalid_inputs_are_rejected() -> None:
    with pytest.raises(ValueError, match="pscore"):
        ope.ips([1.0], [0], [0.0], [[1.0, 0.0]])
    with pytest.raises(ValueError, match="action_dist"):
        ope.ips([1.0], [0], [0.5], [[0.9, 0.9]])
    with pytest.raises(ValueError, match="index"):
        ope.ips([1.0], [2], [0.5], [[1.0, 0.0]])
    with pytest.raises(ValueError, match="shape"):
        ope.doubly_robust([1.0], [0], [0.5], [[1.0, 0.0]], [[0.1]])


def test_simulated_bandit_estimates_cover_the_truth() -> None:
    """Contexts x in 0..2, 5 actions, known click probabilities; logging favours bad actions."""
    rng = np.random.default_rng(7)
    n, m = 40_000, 5
    click = np.array([[0.02, 0.05, 0.10, 0.03, 0.01],
                      [0.08, 0.02, 0.01, 0.04, 0.06],
                      [0.03, 0.03, 0.09, 0.12, 0.02]])
    logging = np.array([[0.4, 0.3, 0.1, 0.1, 0.1], [0.1, 0.4, 0.3, 0.1, 0.1], [0.3, 0.3, 0.2, 0.1, 0.1]])
    target = np.array([[0.0, 0.2, 0.8, 0.0, 0.0], [0.7, 0.0, 0.0, 0.0, 0.3], [0.0, 0.0, 0.3, 0.7, 0.0]])
    x = rng.integers(0, 3, n)
    a = np.array([rng.choice(m, p=logging[i]) for i in x])
    r = (rng.random(n) < click[x, a]).astype(float)
    truth = float(np.mean((target * click).sum(axis=1)))  # contexts are uniform
    pi, p = target[x], logging[x, a]
    q_bad = np.clip(click[x] + rng.normal(0, 0.02, (n, m)), 0, 1)  # a noisy reward model
    for est in (ope.ips(r, a, p, pi), ope.snips(r, a, p, pi), ope.doubly_robust(r, a, p, pi, q_bad)):
        assert abs(est.value - truth) < 4 * est.se, (est, truth)
        assert est.se < 0.2 * truth
    # DM with the exact model is the truth up to sampling of contexts.
    assert ope.direct_method(pi, click[x]).value == pytest.approx(truth, rel=0.02)
    # a biased reward model biases DM, but DR stays on target
    q_biased = click[x] * 0.5
    assert abs(ope.direct_method(pi, q_biased).value - truth) > 0.3 * truth
    dr = ope.doubly_robust(r, a, p, pi, q_biased)
    assert abs(dr.value - truth) < 4 * dr.se


def test_policies_from_scores() -> None:
    scores = np.array([[0.1, 0.9, 0.5], [0.3, 0.2, 0.1]])
    greedy = ope.greedy_slate(scores, np.array([0, 2]))
    assert greedy.tolist() == [[0, 1, 0], [0, 0, 1]]
    soft = ope.softmax_policy(scores)
    assert soft.sum(axis=1) == pytest.approx([1, 1]) and soft[0].argmax() == 1


def test_bts_action_dist_per_position() -> None:
    bts = {"position": np.array([0, 0, 1, 2]), "item_id": np.array([1, 1, 0, 2]),
           "propensity": np.array([0.5, 0.7, 0.9, 0.2])}
    emp = ope.obd_bts_action_dist(bts, 3)
    assert emp.tolist() == [[0, 1, 0], [1, 0, 0], [0, 0, 1]]
    assert ope.obd_bts_action_dist(bts, 3, "propensity").sum(axis=1) == pytest.approx([1, 1, 1])


def test_obd_bts_estimate_on_the_sample(shared_data: Path) -> None:
    """Estimated from the random log, BTS's click rate is near what BTS observed (0.0042)."""
    est = ope.obd_bts_estimate(shared_data / "obd")
    observed = est["observed_bts"]["value"]
    assert observed == pytest.approx(0.0042)
    for name in ("ips", "snips", "dr"):
        assert abs(est[name]["value"] - observed) < 3 * est[name]["se"], name
    assert 0.002 < est["dm"]["value"] < 0.006
    assert est["published"] == ope.PUBLISHED_OBD

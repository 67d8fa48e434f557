"""A synthetic shop with a known response model: is the experiments' 95 % interval honest?

The shop has :data:`SEGMENTS` customer segments and :data:`N_OFFERS` offers. A customer of segment
``s`` shown offer ``o`` redeems with probability ``P[s, o] * u`` where ``u`` is the customer's own
propensity (mean 1, drawn once per customer: several impressions of one customer are correlated,
as in a real shop). Every policy below picks a slate of :data:`K` offers from the segment alone,
so its true rate (redemptions per impression) is known exactly, and so is each arm's true uplift.

Policies: ``oracle`` (the segment's best K offers: a perfect model), ``noisy`` (the oracle's slate
for a wrong segment with probability :data:`CONFUSION`: a weaker model), ``popular`` (the K offers
with the best mean rate over segments), ``random`` (a uniform slate), ``none`` (no offers).

:func:`coverage` replays many seeded experiments through the product's own code (assignment by
:func:`models.experiments.assign`, counting and intervals by
:func:`models.experiment_results.results`) and reports how often the interval holds the truth.
:func:`detection` shows the smallest effect detected with 80 % power at a number of impressions.
``python -m offerstream.simulation`` prints both (``--json`` for the figures as JSON).
"""

from __future__ import annotations

import argparse
import hashlib
import math
import random
from collections.abc import Sequence
from typing import Any

import numpy as np

from models.experiment_results import Z95, Tally, rate_interval, results, uplift_interval
from models.experiments import HOLDOUT, Experiment, assign, parse_experiment

__all__ = ["SEGMENTS", "N_OFFERS", "K", "P", "true_rate", "slate", "segment_of", "customer_propensity",
           "simulate_run", "coverage", "mde", "detection", "EXPERIMENT"]

SEGMENTS, N_OFFERS, K = 4, 8, 2
CONFUSION = 0.5
#: The known response model: redemption probability per (segment, offer), fixed once.
P = np.round(np.random.default_rng(20261203).uniform(0.01, 0.12, size=(SEGMENTS, N_OFFERS)), 4)
EXPERIMENT: dict[str, Any] = {"holdout": 0.1, "control": "popular", "arms": [
    {"name": "popular", "share": 0.25, "policy": {"kind": "popularity"}},
    {"name": "oracle", "share": 0.25, "policy": {"kind": "model", "version": "oracle"}},
    {"name": "noisy", "share": 0.25, "policy": {"kind": "model", "version": "noisy"}},
    {"name": "random", "share": 0.25, "policy": {"kind": "random"}}]}
POLICY_OF = {"popular": "popular", "oracle": "oracle", "noisy": "noisy", "random": "random", HOLDOUT: "none"}


def _top(rates: np.ndarray) -> list[int]:
    return [int(i) for i in np.argsort(-rates, kind="stable")[:K]]


def true_rate(policy: str) -> float:
    """The exact expected redemptions per impression of ``policy`` (segments equally likely)."""
    per_segment = []
    for s in range(SEGMENTS):
        if policy == "oracle":
            per_segment.append(P[s, _top(P[s])].mean())
        elif policy == "noisy":
            others = [P[s, _top(P[t])].mean() for t in range(SEGMENTS) if t != s]
            per_segment.append((1 - CONFUSION) * P[s, _top(P[s])].mean() + CONFUSION * float(np.mean(others)))
        elif policy == "popular":
            per_segment.append(P[s, _top(P.mean(axis=0))].mean())
        elif policy == "random":
            per_segment.append(P[s].mean())
        else:
            raise ValueError(f"no true rate for policy {policy!r} (it shows nothing)")
    return float(np.mean(per_segment))


def segment_of(customer_id: str) -> int:
    """The customer's segment (a fixed function of the id)."""
    return hashlib.blake2b(customer_id.encode(), digest_size=2, person=b"segment").digest()[0] % SEGMENTS


def customer_propensity(rng: random.Random) -> float:
    """The customer's own factor on every probability: Gamma(shape 2, mean 1)."""
    return rng.gammavariate(2.0, 0.5)


def slate(policy: str, segment: int, rng: random.Random) -> list[int]:
    """The offers ``policy`` shows a customer of ``segment``."""
    if policy == "oracle":
        return _top(P[segment])
    if policy == "noisy":
        wrong = rng.random() < CONFUSION
        return _top(P[rng.choice([t for t in range(SEGMENTS) if t != segment])] if wrong else P[segment])
    if policy == "popular":
        return _top(P.mean(axis=0))
    if policy == "random":
        return rng.sample(range(N_OFFERS), K)
    return []


def simulate_run(seed: int, customers: int, experiment: Experiment) -> dict[str, Any]:
    """One experiment of ``customers`` customers (1-3 decisions each), counted by the product's code."""
    rng = random.Random(seed)  # noqa: S311 - simulation
    tally = Tally()
    n_event = 0
    for i in range(customers):
        cid = f"s{seed}-c{i}"
        arm = assign(experiment, cid, personalize=True)
        segment, u = segment_of(cid), customer_propensity(rng)
        for d in range(rng.randint(1, 3)):
            did = f"{cid}-d{d}"
            tally.add_decision({"decision_id": did, "ts": 1_000 + d, "customer_hash": cid,
                                "experiment": {"id": experiment.id, "arm": arm},
                                "consent_basis": {"flags": {"measurement": True}}})
            for offer in slate(POLICY_OF[arm], segment, rng):
                n_event += 1
                tally.add_event(f"e{n_event}", "offer_impression", 2_000, {"decision_id": did})
                if rng.random() < min(1.0, P[segment, offer] * u):
                    n_event += 1
                    tally.add_event(f"e{n_event}", "offer_redeem", 3_000, {"decision_id": did})
    return results(tally, experiment)


def coverage(runs: int, customers: int, seed: int = 0) -> dict[str, Any]:
    """Observed coverage of the 95 % uplift interval per arm over ``runs`` seeded experiments."""
    experiment = parse_experiment(EXPERIMENT, "sim")
    truth = {a.name: true_rate(POLICY_OF[a.name]) - true_rate(POLICY_OF[experiment.control])
             for a in experiment.arms if a.name != experiment.control}
    hits = dict.fromkeys(truth, 0)
    srm_alarms = 0
    for r in range(runs):
        answer = simulate_run(seed + r, customers, experiment)
        for name, diff in truth.items():
            lo, hi = answer["arms"][name]["uplift"]["ci95"]
            hits[name] += lo <= diff <= hi
        srm_alarms += (answer["srm"]["p_value"] or 1.0) < 0.05
    total = runs * len(truth)
    observed = sum(hits.values()) / total
    return {"runs": runs, "customers_per_run": customers, "true_uplift": truth,
            "coverage_per_arm": {n: h / runs for n, h in hits.items()}, "coverage": observed,
            "coverage_se": math.sqrt(observed * (1 - observed) / total), "srm_false_alarms_at_5pct": srm_alarms / runs}


def mde(base_rate: float, impressions_per_arm: int, power_z: float = 0.8416) -> float:
    """Smallest rise of the rate detected with 80 % power by a two-sided 95 % interval.

    Solves ``d = (z_0.975 + z_0.8) * sqrt((p (1 - p) + (p + d) (1 - p - d)) / n)`` (each arm's own
    variance, as the interval uses them) by fixed-point iteration.

    >>> round(mde(0.05, 10_000), 4)
    0.009
    """
    effect = 0.0
    for _ in range(50):
        treated = base_rate + effect
        effect = (Z95 + power_z) * math.sqrt((base_rate * (1 - base_rate) + treated * (1 - treated))
                                             / impressions_per_arm)
    return effect


def detection(base_rate: float, impressions_per_arm: int, effects: Sequence[float], runs: int,
              seed: int = 0) -> dict[str, Any]:
    """Share of runs whose interval excludes 0, for each true effect (one impression per customer).

    The interval is the product's (:func:`models.experiment_results.rate_interval` and
    :func:`~models.experiment_results.uplift_interval`) on Bernoulli outcomes of known rates.
    """
    gen = np.random.default_rng(seed)
    detected = {}
    for effect in effects:
        hits = 0
        for _ in range(runs):
            # one impression per customer: [impressions, redemptions] per customer, as the tally keeps them
            arms = [{str(i): [1, r] for i, r in enumerate(gen.binomial(1, rate, impressions_per_arm).tolist())}
                    for rate in (base_rate, base_rate + effect)]
            (control, control_var), (treated, treated_var) = rate_interval(arms[0]), rate_interval(arms[1])
            _, (lo, hi) = uplift_interval(treated or 0.0, treated_var, control or 0.0, control_var)
            hits += lo > 0 or hi < 0
        detected[f"{effect:.4f}"] = hits / runs
    return {"base_rate": base_rate, "impressions_per_arm": impressions_per_arm, "runs": runs,
            "mde_80": mde(base_rate, impressions_per_arm), "detected_share": detected}


def main(argv: Sequence[str] | None = None) -> int:
    """Print the coverage and the smallest detectable effect."""
    parser = argparse.ArgumentParser(prog="python -m offerstream.simulation", description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=400)
    parser.add_argument("--customers", type=int, default=2000)
    parser.add_argument("--impressions", type=int, default=10_000, help="per arm, for the detectable effect")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    cover = coverage(args.runs, args.customers)
    base = 0.05
    effect = mde(base, args.impressions)
    detect = detection(base, args.impressions, [effect / 2, effect], max(100, args.runs // 2))
    if args.json:
        import orjson

        print(orjson.dumps({"coverage": cover, "detection": detect}).decode())
        return 0
    print(f"coverage of the 95 % interval: {cover['coverage']:.3f} (+/- {cover['coverage_se']:.3f}) over "
          f"{cover['runs']} runs x {len(cover['true_uplift'])} arms of {cover['customers_per_run']} customers; "
          f"per arm {cover['coverage_per_arm']}")
    print(f"SRM check false alarms at p < 0.05: {cover['srm_false_alarms_at_5pct']:.3f}")
    print(f"smallest effect detected with 80 % power at {args.impressions} impressions per arm and a "
          f"{base:.0%} rate: {detect['mde_80']:.4f}; detected in {detect['detected_share']} of {detect['runs']} runs")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

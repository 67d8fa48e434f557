"""Experiment results from the decisions and the outcome events, as a pure tally.

:class:`Tally` is fed the audit records of the ``decisions`` topic (:meth:`Tally.add_decision`)
and the contract events (:meth:`Tally.add_event`) in any order; :func:`results` reads it. The same
code counts live on every worker and offline from the archive, so the two agree by construction.

The rules, each in one place here:

* An outcome (``offer_impression``, ``offer_click``, ``offer_redeem``) joins its decision by
  ``decision_id`` and counts if its ``ts`` is at most ``attribution_window_s`` after the
  decision's; ``revenue`` is the sum of the optional ``revenue`` field of counted ``offer_redeem``
  events (an extension of the event contract: the order value the redemption brought). An
  ``event_id`` counts once.
* A decision whose consent basis lacks ``measurement`` is served but never counted: it and its
  outcomes are left out of every arm (``not_measured`` counts such decisions).
* A decision in arm ``not_eligible`` (no ``personalize``) is counted only in ``not_eligible``
  (distinct customers).
* An erased customer's decisions made at or before the erasure, and their outcomes, leave every
  count: :func:`results` takes the erasure ledger (customer hash -> erasure time).

Per arm: ``rate`` is redemptions per impression; its variance is the delta-method (ratio
estimator) variance over customers, so several impressions of one customer are not taken as
independent; ``uplift`` is ``rate - control rate`` with a normal 95 % interval. ``srm`` is a
chi-square test of the customers per arm (and holdout) against the configured shares.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from scipy.stats import chi2

from models.experiments import HOLDOUT, NOT_ELIGIBLE, Experiment

__all__ = ["Tally", "results", "rate_interval", "uplift_interval", "srm_p_value", "OUTCOMES", "Z95"]

OUTCOMES = {"offer_impression": "impressions", "offer_click": "clicks", "offer_redeem": "redemptions"}
Z95 = 1.959963984540054


@dataclass(slots=True)
class _Decision:
    experiment: str
    arm: str
    customer: str
    ts: int
    measured: bool


@dataclass
class Tally:
    """Decisions and outcomes read so far (see the module rules)."""

    decisions: dict[str, _Decision] = field(default_factory=dict)
    #: decision id -> [(event type, ts, revenue)], whatever the order they were read in
    outcomes: dict[str, list[tuple[str, int, float]]] = field(default_factory=dict)
    seen_events: set[str] = field(default_factory=set)

    def add_decision(self, record: Mapping[str, Any]) -> bool:
        """Add an audit record; False if it is not in an experiment (or malformed)."""
        experiment = record.get("experiment")
        if not isinstance(experiment, dict):
            return False
        try:
            flags = record.get("consent_basis", {}).get("flags", {})
            self.decisions[str(record["decision_id"])] = _Decision(
                str(experiment["id"]), str(experiment["arm"]), str(record["customer_hash"]), int(record["ts"]),
                bool(flags.get("measurement", False)))
        except (KeyError, TypeError, ValueError, AttributeError):
            return False
        return True

    def add_event(self, event_id: str, event_type: str, ts: int, data: Mapping[str, Any]) -> bool:
        """Add a contract event; False if it is no outcome with a decision id, or seen before."""
        decision_id = data.get("decision_id")
        if event_type not in OUTCOMES or not isinstance(decision_id, str) or event_id in self.seen_events:
            return False
        self.seen_events.add(event_id)
        revenue = data.get("revenue", 0.0) if event_type == "offer_redeem" else 0.0
        valid = isinstance(revenue, int | float) and not isinstance(revenue, bool) and math.isfinite(revenue)
        self.outcomes.setdefault(decision_id, []).append((event_type, ts, float(revenue) if valid and revenue > 0
                                                          else 0.0))
        return True


def _empty_arm() -> dict[str, Any]:
    return {"customers": set(), "decisions": 0, "impressions": 0, "clicks": 0, "redemptions": 0, "revenue": 0.0,
            "per_customer": {}}


def _count(tally: Tally, experiment: Experiment, erased: Mapping[str, int], until_ms: int | None,
           ) -> tuple[dict[str, Any], set[str], int, list[int]]:
    names = ((HOLDOUT,) if experiment.holdout > 0 else ()) + tuple(a.name for a in experiment.arms)
    arms: dict[str, dict[str, Any]] = {name: _empty_arm() for name in names}
    not_eligible: set[str] = set()
    not_measured = 0
    window_ms = experiment.attribution_window_s * 1000
    until = until_ms if until_ms is not None else 2**63
    span: list[int] = []  # [first, last] decision time counted
    # in sorted order, so that sums of floats do not depend on the order the records were read in
    for decision_id, d in sorted(tally.decisions.items()):
        if d.experiment != experiment.id or d.ts <= erased.get(d.customer, -1) or d.ts >= until:
            continue
        span[:] = [min(span[0], d.ts), max(span[1], d.ts)] if span else [d.ts, d.ts]
        if d.arm == NOT_ELIGIBLE:
            not_eligible.add(d.customer)
            continue
        if not d.measured:
            not_measured += 1
            continue
        arm = arms.setdefault(d.arm, _empty_arm())  # an arm since removed from the configuration
        arm["customers"].add(d.customer)
        arm["decisions"] += 1
        mine = arm["per_customer"].setdefault(d.customer, [0, 0])
        for event_type, ts, revenue in sorted(tally.outcomes.get(decision_id, ())):
            if ts - d.ts > window_ms or ts >= until:
                continue
            arm[OUTCOMES[event_type]] += 1
            arm["revenue"] += revenue
            if event_type == "offer_impression":
                mine[0] += 1
            elif event_type == "offer_redeem":
                mine[1] += 1
    return arms, not_eligible, not_measured, span


def rate_interval(per_customer: Mapping[str, list[int]]) -> tuple[float | None, float]:
    """``(rate, variance)`` of redemptions per impression over customers ``[impressions, redemptions]``.

    >>> rate_interval({"a": [2, 1], "b": [2, 0]})
    (0.25, 0.0625)
    """
    n = sum(v[0] for v in per_customer.values())
    if n == 0:
        return None, math.nan
    r = sum(v[1] for v in per_customer.values())
    rate, m = r / n, len(per_customer)
    if m < 2:
        return rate, math.nan
    # sorted by customer: the same float sum whatever order the customers were counted in
    residuals = sum((v[1] - rate * v[0]) ** 2 for _, v in sorted(per_customer.items()))
    return rate, m / (m - 1) * residuals / n**2


def uplift_interval(rate: float, var: float, control_rate: float, control_var: float) -> tuple[float, list[float]]:
    """``(diff, [lo, hi])``: the difference of two rates and its normal 95 % interval."""
    diff = rate - control_rate
    half = Z95 * math.sqrt(var + control_var) if math.isfinite(var + control_var) else math.inf
    return diff, [diff - half, diff + half]


def srm_p_value(observed: Mapping[str, int], expected_shares: Mapping[str, float]) -> float | None:
    """Chi-square p-value of the observed customers per arm against the configured shares.

    >>> round(srm_p_value({"a": 50, "b": 50}, {"a": 0.5, "b": 0.5}), 3)
    1.0
    """
    total = sum(observed.get(k, 0) for k in expected_shares)
    cells = [(observed.get(k, 0), total * s) for k, s in expected_shares.items() if s > 0]
    if total == 0 or len(cells) < 2:
        return None
    stat = sum((o - e) ** 2 / e for o, e in cells)
    return float(chi2.sf(stat, len(cells) - 1))


def results(tally: Tally, experiment: Experiment, erased: Mapping[str, int] | None = None,
            until_ms: int | None = None) -> dict[str, Any]:
    """The ``GET /v1/experiments/{id}/results`` answer for ``experiment`` (module rules).

    ``until_ms``: only decisions and outcomes before that time (a point of the cumulative series).
    ``period`` (an extension) gives the first and last decision time counted, and ``until_ms``.
    """
    arms, not_eligible, not_measured, span = _count(tally, experiment, erased or {}, until_ms)
    rates = {name: rate_interval(arm["per_customer"]) for name, arm in arms.items()}
    control_rate, control_var = rates[experiment.control]
    out: dict[str, Any] = {}
    for name, arm in arms.items():
        rate, var = rates[name]
        row: dict[str, Any] = {k: arm[k] for k in ("decisions", "impressions", "clicks", "redemptions")}
        row.update(customers=len(arm["customers"]), revenue=round(arm["revenue"], 6), rate=rate)
        if name != experiment.control and rate is not None and control_rate is not None:
            diff, ci = uplift_interval(rate, var, control_rate, control_var)
            row["uplift"] = {"vs": experiment.control, "diff": diff,
                             "ci95": [c if math.isfinite(c) else None for c in ci]}
        out[name] = row
    shares = {HOLDOUT: experiment.holdout, **{a.name: a.share * (1 - experiment.holdout) for a in experiment.arms}}
    p_value = srm_p_value({name: len(arm["customers"]) for name, arm in arms.items()}, shares)
    return {"id": experiment.id, "arms": out, "srm": {"p_value": p_value}, "not_eligible": len(not_eligible),
            "not_measured": not_measured,
            "period": {"first_decision": span[0] if span else None, "last_decision": span[1] if span else None,
                       "until": until_ms}}

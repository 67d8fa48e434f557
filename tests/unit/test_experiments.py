"""Experiments: configuration, assignment, arm policies and the results tally (models/ only)."""

from __future__ import annotations

import random

import pytest

from models.arm_policy import arm_inputs
from models.catalog import parse_offer
from models.consent import ConsentState
from models.decision import decide, parse_score_request
from models.errors import InvalidRequest
from models.experiment_results import Tally, rate_interval, results, srm_p_value
from models.experiments import HOLDOUT, NOT_ELIGIBLE, assign, bucket, check_overlap, find_experiment, parse_experiment
from models.exploration import Exploration
from models.scorer import FallbackScorer

NOW = 1_800_000_000_000


def body(**over: object) -> dict:
    base: dict = {"holdout": 0.1, "control": "champion", "arms": [
        {"name": "champion", "share": 0.4, "policy": {"kind": "model", "version": "v1"}},
        {"name": "challenger", "share": 0.4, "policy": {"kind": "model", "version": "v2"},
         "exploration": "epsilon:0.1"},
        {"name": "pop", "share": 0.2, "policy": {"kind": "popularity"}}]}
    base.update(over)
    return base


@pytest.mark.parametrize(("change", "field"), [
    ({"arms": [{"name": "a", "share": 0.5, "policy": {"kind": "random"}}]}, "arms[].share"),
    ({"control": "nobody"}, "control"),
    ({"holdout": 1.0}, "holdout"),
    ({"holdout": "x"}, "holdout"),
    ({"arms": []}, "arms"),
    ({"arms": [{"name": "holdout", "share": 1, "policy": {"kind": "none"}}], "control": "holdout"}, "arms[0].name"),
    ({"arms": [{"name": "a", "share": 1, "policy": {"kind": "magic"}}], "control": "a"}, "arms[0].policy.kind"),
    ({"arms": [{"name": "a", "share": 1, "policy": {"kind": "model", "version": "v9"}}], "control": "a"},
     "arms[0].policy.version"),
    ({"arms": [{"name": "a", "share": 1, "policy": {"kind": "none"}, "exploration": "bold"}], "control": "a"},
     "arms[0].exploration"),
    ({"start": 2_000_000_000_000, "end": 1_900_000_000_000}, "end"),
    ({"attribution_window_s": 0}, "attribution_window_s"),
])
def test_bad_configuration_names_the_field(change: dict, field: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        parse_experiment(body(**change), "e1", known_versions={"v1", "v2"})
    assert caught.value.field == field


def test_round_trip_and_unknown_version_unchecked_on_the_topic() -> None:
    exp = parse_experiment(body(), "e1", known_versions={"v1", "v2"})
    assert parse_experiment(exp.to_dict(), "e1") == exp
    parse_experiment(body(), "e1", known_versions=None)  # a worker applying the topic


def test_overlap_on_the_same_placement_is_refused() -> None:
    a = parse_experiment(body(placement="home"), "a")
    with pytest.raises(InvalidRequest) as caught:
        check_overlap(parse_experiment(body(), "b"), {"a": a}, NOW)  # no placement: every placement
    assert caught.value.field == "placement" and "'a'" in caught.value.reason
    check_overlap(parse_experiment(body(placement="cart"), "b"), {"a": a}, NOW)
    check_overlap(parse_experiment(body(placement="home"), "a"), {"a": a}, NOW)  # a replacement
    later = parse_experiment(body(placement="home", start=2_000_000_000_000), "c")
    earlier = parse_experiment(body(placement="home", end=2_000_000_000_000), "d")
    check_overlap(later, {"d": earlier}, NOW)
    check_overlap(parse_experiment(body(), "e"), {"d": earlier}, 2_000_000_000_000)  # d has ended
    assert find_experiment({"c": later, "d": earlier}, "home", 1_999_999_999_999) is earlier
    assert find_experiment({"c": later, "d": earlier}, "cart", 1_999_999_999_999) is None


def test_assignment_is_deterministic_and_follows_the_shares() -> None:
    exp = parse_experiment(body(), "e1")
    arms = [assign(exp, f"c{i}", personalize=True) for i in range(20_000)]
    assert arms == [assign(exp, f"c{i}", personalize=True) for i in range(20_000)]
    share = {name: arms.count(name) / len(arms) for name in set(arms)}
    assert abs(share[HOLDOUT] - 0.1) < 0.01 and abs(share["champion"] - 0.36) < 0.015
    assert abs(share["pop"] - 0.18) < 0.015
    assert assign(exp, "c1", personalize=False) == NOT_ELIGIBLE
    assert bucket("e1", "c1", "arm") != bucket("e2", "c1", "arm")


def test_only_customers_across_a_moved_boundary_change_arm() -> None:
    old = parse_experiment(body(), "e1")
    new_body = body(holdout=0.1)
    new_body["arms"][1]["share"], new_body["arms"][2]["share"] = 0.3, 0.3  # boundary 0.8 -> 0.7
    new = parse_experiment(new_body, "e1")
    for i in range(5000):
        cid = f"c{i}"
        before, after = assign(old, cid, personalize=True), assign(new, cid, personalize=True)
        u = bucket("e1", cid, "arm")
        if before != after:
            assert (before, after) == ("challenger", "pop") and 0.7 <= u < 0.8
    grown = parse_experiment(body(holdout=0.2), "e1")
    for i in range(5000):
        cid = f"c{i}"
        before, after = assign(old, cid, personalize=True), assign(grown, cid, personalize=True)
        if before != after:
            assert after == HOLDOUT and 0.1 <= bucket("e1", cid, HOLDOUT) < 0.2


def _decide_arm(arm_name: str | None, exp_body: dict) -> dict:
    exp = parse_experiment(exp_body, "e1")
    catalog = {o: parse_offer({"offer_id": o, "category": "shoes"}) for o in ("a", "b", "c")}
    request = parse_score_request({"customer_id": "c1", "k": 2})
    arm = exp.arm(arm_name) if arm_name else None
    inputs = arm_inputs(arm, request, None, FallbackScorer(), Exploration(), lambda v: None)
    response, _ = decide(inputs.request, ConsentState.from_dict(None), inputs.profile, catalog, inputs.scorer,
                         1_800_000_000_000, "d1", b"k", inputs.exploration, rng=random.Random(1))  # noqa: S311
    return response


def test_arm_policies_decide() -> None:
    none = _decide_arm(None, body())
    assert none["offers"] == [] and none["filtered"] == [] and none["model_version"] == "none"
    assert len(_decide_arm("pop", body())["offers"]) == 2
    assert _decide_arm("pop", body())["model_version"] == "popularity"
    # an unloadable version: the promoted model serves, and the answer says which
    assert _decide_arm("champion", body())["model_version"] == "fallback-popularity"


def _record(did: str, arm: str, customer: str, ts: int, measured: bool = True) -> dict:
    return {"decision_id": did, "ts": ts, "customer_hash": customer, "experiment": {"id": "e1", "arm": arm},
            "consent_basis": {"flags": {"measurement": measured}}}


def test_results_count_join_window_consent_and_erasure() -> None:
    exp = parse_experiment(body(attribution_window_s=60), "e1")
    tally = Tally()
    tally.add_decision(_record("d1", "champion", "h1", 1000))
    tally.add_decision(_record("d2", "pop", "h2", 1000))
    tally.add_decision(_record("d3", "pop", "h3", 1000, measured=False))
    tally.add_decision(_record("d4", NOT_ELIGIBLE, "h4", 1000))
    tally.add_decision({"decision_id": "d5", "experiment": None})
    events = [("e1", "offer_impression", 1500, "d1", None), ("e1", "offer_impression", 1500, "d1", None),
              ("e2", "offer_redeem", 2000, "d1", 30.0), ("e3", "offer_click", 70_000, "d1", None),
              ("e4", "offer_impression", 1500, "d2", None), ("e5", "offer_impression", 1500, "d3", None),
              ("e6", "offer_redeem", 1500, "d2", True)]
    for event_id, kind, ts, did, revenue in events:
        tally.add_event(event_id, kind, ts, {"decision_id": did, **({"revenue": revenue} if revenue else {})})
    out = results(tally, exp)
    champion, pop = out["arms"]["champion"], out["arms"]["pop"]
    assert (champion["decisions"], champion["impressions"], champion["redemptions"], champion["clicks"]) == (1, 1, 1, 0)
    assert champion["revenue"] == 30.0 and champion["rate"] == 1.0
    assert (pop["customers"], pop["impressions"], pop["redemptions"], pop["revenue"]) == (1, 1, 1, 0.0)
    assert out["not_eligible"] == 1 and out["not_measured"] == 1
    assert pop["uplift"]["vs"] == "champion" and pop["uplift"]["diff"] == 0.0
    erased = results(tally, exp, {"h1": 1000})
    assert erased["arms"]["champion"]["decisions"] == 0 and erased["arms"]["champion"]["rate"] is None
    assert "uplift" not in erased["arms"]["pop"]
    assert results(tally, exp, {"h1": 999})["arms"]["champion"]["decisions"] == 1  # came back afterwards


def test_rate_variance_and_srm() -> None:
    assert rate_interval({}) == (None, rate_interval({})[1])
    assert srm_p_value({"a": 500, "b": 500}, {"a": 0.5, "b": 0.5}) == pytest.approx(1.0)
    assert srm_p_value({"a": 600, "b": 400}, {"a": 0.5, "b": 0.5}) < 1e-6

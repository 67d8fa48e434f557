"""One decision end to end with an injected fake scorer: consent, filtering, ranking, audit."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models.catalog import Offer, parse_offer
from models.consent import FLAGS, ConsentState, apply_update, parse_update
from models.decision import MAX_CANDIDATES, MAX_K, CandidateCache, decide, hash_customer_id, parse_score_request
from models.errors import InvalidRequest
from models.events import parse_event
from models.features import CUSTOMER_FEATURES, FEATURE_NAMES
from models.profile import Profile
from models.scorer import FallbackScorer

NOW = 1_714_557_600_000
DAY = 86_400_000
KEY = b"test-hash-key"
F = {name: i for i, name in enumerate(FEATURE_NAMES)}
N_CUST = len(CUSTOMER_FEATURES)
CUSTOMER = "customer-42"


class FakeScorer:
    """Scores by discount, popularity and (if present) 30-day category affinity; records its input."""

    version = "fake-1"

    def __init__(self, offer_stats: Mapping[str, Sequence[float]] | None = None) -> None:
        self.offer_stats = offer_stats or {}
        self.seen: list[np.ndarray] = []

    def score(self, X: np.ndarray) -> np.ndarray:
        self.seen.append(X.copy())
        return (X[:, F["discount"]] + X[:, F["popularity_rate"]] + 2.0 * X[:, F["cat_affinity_30d"]]).astype(
            np.float32)


def catalog(*offers: Offer) -> dict[str, Offer]:
    return {o.offer_id: o for o in offers}


CATALOG = catalog(
    parse_offer({"offer_id": "a_shoes", "category": "shoes", "kind": "discount", "discount_pct": 10}),
    parse_offer({"offer_id": "b_bags", "category": "bags", "kind": "discount", "discount_pct": 30}),
    parse_offer({"offer_id": "c_partner", "category": "bags", "kind": "partner", "discount_pct": 50}),
    parse_offer({"offer_id": "d_mail", "category": "toys", "kind": "loyalty", "discount_pct": 40,
                 "requires": ["marketing"]}),
    parse_offer({"offer_id": "e_old", "category": "toys", "kind": "discount", "valid_to": NOW - DAY}),
    parse_offer({"offer_id": "f_capped", "category": "shoes", "kind": "bundle", "discount_pct": 5,
                 "max_impressions_per_day": 1}),
)


def shoe_lover() -> Profile:
    p = Profile()
    for k in range(5):
        p.apply(parse_event({"event_id": f"v{k}", "type": "page_view", "customer_id": CUSTOMER,
                             "ts": NOW - 3_600_000, "category": "shoes"}))
    p.apply(parse_event({"event_id": "imp", "type": "offer_impression", "customer_id": CUSTOMER,
                         "ts": NOW - 60_000, "offer_id": "f_capped"}))
    return p


def consent(flags: dict[str, bool], ts: int = NOW - DAY) -> ConsentState:
    return apply_update(ConsentState.unknown(), parse_update({"flags": flags}), ts).state


def request(**body: Any) -> Any:
    return parse_score_request({"customer_id": CUSTOMER, **body})


def run(req: Any, state: ConsentState, prof: Profile | None, scorer: FakeScorer | None = None,
        cat: dict[str, Offer] | None = None, cache: CandidateCache | None = None,
        ) -> tuple[dict[str, Any], dict[str, Any], FakeScorer]:
    scorer = scorer or FakeScorer()
    response, audit = decide(req, state, prof, CATALOG if cat is None else cat, scorer, NOW, "dec-1", KEY,
                             cache=cache)
    return response, audit, scorer


def test_without_consent_the_profile_is_not_used() -> None:
    response, audit, scorer = run(request(k=10), ConsentState.unknown(), shoe_lover())
    assert response["personalized"] is False and audit["mode"] == "contextual"
    (X,) = scorer.seen
    assert np.all(X[:, :N_CUST] == 0.0)
    assert np.all(X[:, F["cat_affinity_30d"]] == 0.0)
    # f_capped was shown once today, but the profile may not be read: the cap is not applied
    assert "f_capped" in [o["offer_id"] for o in response["offers"]]
    for o in response["offers"]:
        assert not any(r.startswith("you often shop") for r in o["reasons"])


@pytest.mark.parametrize("flags", [{"profile": True}, {"personalize": True}])
def test_one_of_the_two_flags_is_not_enough(flags: dict[str, bool]) -> None:
    response, _audit, scorer = run(request(), consent(flags), shoe_lover())
    assert response["personalized"] is False
    assert np.all(scorer.seen[0][:, :N_CUST] == 0.0)


def test_with_consent_the_profile_is_used() -> None:
    response, audit, scorer = run(request(k=10), consent({"profile": True, "personalize": True}), shoe_lover())
    assert response["personalized"] is True and audit["mode"] == "personalized"
    X = scorer.seen[0]
    assert np.all(X[:, F["personalized"]] == 1.0)
    ids = [o["offer_id"] for o in response["offers"]]
    assert ids[0] == "a_shoes"  # affinity 1.0 for shoes beats bags' bigger discount
    filtered = {f["offer_id"]: f["reason"] for f in response["filtered"]}
    assert filtered["f_capped"] == "daily_cap"
    assert "you often shop shoes" in response["offers"][0]["reasons"]


def test_no_profile_with_consent_is_contextual() -> None:
    response, _audit, scorer = run(request(), consent({"profile": True, "personalize": True}), None)
    assert response["personalized"] is False
    assert np.all(scorer.seen[0][:, :N_CUST] == 0.0)


def test_filtered_reasons_and_ranking() -> None:
    response, _audit, _ = run(request(k=10), ConsentState.unknown(), None)
    filtered = {f["offer_id"]: f["reason"] for f in response["filtered"]}
    assert filtered == {"c_partner": "consent:sharing", "d_mail": "consent:marketing", "e_old": "expired"}
    offers = response["offers"]
    assert [o["offer_id"] for o in offers] == ["b_bags", "a_shoes", "f_capped"]
    assert [o["rank"] for o in offers] == [1, 2, 3]
    assert [o["score"] for o in offers] == pytest.approx([0.3, 0.1, 0.05], abs=1e-6)
    assert "30% off" in offers[0]["reasons"]


def test_top_k_and_tie_break_by_offer_id() -> None:
    cat = catalog(*(parse_offer({"offer_id": f"o{i}", "kind": "discount", "discount_pct": 10}) for i in (3, 1, 2)),
                  parse_offer({"offer_id": "o9", "kind": "discount", "discount_pct": 90}))
    response, audit, _ = run(request(k=3), ConsentState.unknown(), None, cat=cat)
    assert [o["offer_id"] for o in response["offers"]] == ["o9", "o1", "o2"]
    assert [o["rank"] for o in response["offers"]] == [1, 2, 3]
    assert [o["offer_id"] for o in audit["offers"]] == ["o9", "o1", "o2"]
    assert response["filtered"] == []  # cut by k is not "filtered"


def test_popularity_from_the_scorer_reaches_the_features() -> None:
    scorer = FakeScorer({"a_shoes": (0.9, 3.0)})
    response, _audit, _ = run(request(k=1), ConsentState.unknown(), None, scorer=scorer)
    assert response["offers"][0]["offer_id"] == "a_shoes"
    assert "popular with other shoppers" in response["offers"][0]["reasons"]


def test_unknown_candidates_are_filtered() -> None:
    response, _audit, scorer = run(request(candidates=["zzz", "a_shoes", "zzz", "e_old"]), ConsentState.unknown(), None)
    assert response["filtered"] == [{"offer_id": "zzz", "reason": "unknown_offer"},
                                    {"offer_id": "e_old", "reason": "expired"}]
    assert [o["offer_id"] for o in response["offers"]] == ["a_shoes"]
    assert scorer.seen[0].shape == (1, len(FEATURE_NAMES))


def test_no_eligible_offer_gives_an_empty_answer() -> None:
    response, audit, _ = run(request(candidates=["c_partner"]), ConsentState.unknown(), None)
    assert response["offers"] == [] and audit["offers"] == []
    assert response["filtered"] == [{"offer_id": "c_partner", "reason": "consent:sharing"}]


def test_preferences_and_dismissals_filter() -> None:
    state = consent(dict.fromkeys(FLAGS, True))
    state.exclude_categories.append("bags")
    state.add_dismissed("a_shoes")
    response, _audit, _ = run(request(k=10), state, None)
    filtered = {f["offer_id"]: f["reason"] for f in response["filtered"]}
    assert filtered == {"a_shoes": "dismissed", "b_bags": "excluded_category", "c_partner": "excluded_category",
                        "e_old": "expired"}


def test_request_consent_can_only_narrow() -> None:
    state = consent({"profile": True, "personalize": True, "sharing": True})
    req = request(k=10, consent={"flags": {"marketing": True, "sharing": False, "personalize": False}})
    response, audit, scorer = run(req, state, shoe_lover())
    filtered = {f["offer_id"]: f["reason"] for f in response["filtered"]}
    assert filtered["d_mail"] == "consent:marketing"  # the request cannot grant marketing
    assert filtered["c_partner"] == "consent:sharing"  # but it can take sharing away
    assert response["personalized"] is False and np.all(scorer.seen[0][:, :N_CUST] == 0.0)
    assert response["consent_basis"]["flags"] == {"profile": True, "personalize": False, "marketing": False,
                                                  "measurement": False, "training": False, "sharing": False}
    assert audit["consent_basis"] == response["consent_basis"]


def test_gpc_header_turns_sharing_off_for_the_decision() -> None:
    state = consent(dict.fromkeys(FLAGS, True))
    response, _audit, _ = run(parse_score_request({"customer_id": CUSTOMER, "k": 10}, header_gpc=True), state, None)
    assert {"offer_id": "c_partner", "reason": "consent:sharing"} in response["filtered"]


def test_audit_record() -> None:
    state = consent({"profile": True, "personalize": True})
    response, audit, _ = run(request(k=2), state, shoe_lover())
    assert audit["customer_hash"] == hash_customer_id(KEY, CUSTOMER)
    assert CUSTOMER not in orjson.dumps(audit).decode()  # never the raw id
    assert audit["decision_id"] == response["decision_id"] == "dec-1"
    assert audit["ts"] == NOW and audit["mode"] == "personalized"
    assert audit["model_version"] == response["model_version"] == "fake-1"
    assert audit["filtered"] == response["filtered"] and audit["filtered"]
    assert audit["consent_basis"]["epoch"] == state.epoch
    assert [o["offer_id"] for o in audit["offers"]] == [o["offer_id"] for o in response["offers"]]
    assert response["customer_id"] == CUSTOMER


def test_hash_is_keyed_and_stable() -> None:
    h = hash_customer_id(KEY, CUSTOMER)
    assert h == hash_customer_id(KEY, CUSTOMER) and len(h) == 32
    assert h != hash_customer_id(b"other", CUSTOMER) and h != hash_customer_id(KEY, "customer-43")


def test_fallback_scorer_works_in_a_decision() -> None:
    scorer = FallbackScorer()
    response, audit = decide(request(k=10), ConsentState.unknown(), None, CATALOG, scorer, NOW, "d", KEY)
    assert response["model_version"] == audit["model_version"] == "fallback-popularity"
    assert [o["offer_id"] for o in response["offers"]] == ["b_bags", "a_shoes", "f_capped"]
    assert scorer.score(np.zeros((0, len(FEATURE_NAMES)), dtype=np.float32)).shape == (0,)


offers_strategy = st.lists(
    st.tuples(st.sampled_from(["discount", "bundle", "loyalty", "partner", "sponsored", "other"]),
              st.lists(st.sampled_from(FLAGS), max_size=3), st.integers(0, 100)),
    min_size=1, max_size=8,
)


@settings(max_examples=150, deadline=None)
@given(offers_strategy, st.dictionaries(st.sampled_from(FLAGS), st.booleans()),
       st.none() | st.dictionaries(st.sampled_from(FLAGS), st.booleans()), st.booleans())
def test_every_returned_offer_has_its_required_flags(spec: list[tuple[str, list[str], int]],
                                                     stored: dict[str, bool], asked: dict[str, bool] | None,
                                                     with_profile: bool) -> None:
    cat = catalog(*(parse_offer({"offer_id": f"o{i}", "kind": kind, "requires": req, "discount_pct": d})
                    for i, (kind, req, d) in enumerate(spec)))
    state = consent(stored) if stored else ConsentState.unknown()
    body: dict[str, Any] = {"k": MAX_K}
    if asked is not None:
        body["consent"] = {"flags": asked}
    response, audit, scorer = run(request(**body), state, shoe_lover() if with_profile else None, cat=cat)
    effective = response["consent_basis"]["flags"]
    for f in FLAGS:
        assert effective[f] <= state.flags[f]  # a request never widens
    for o in response["offers"]:
        for flag in cat[o["offer_id"]].required_flags():
            assert state.flags[flag] and effective[flag]
    returned = {o["offer_id"] for o in response["offers"]}
    assert returned | {f["offer_id"] for f in response["filtered"]} == set(cat)
    for f in response["filtered"]:
        assert f["reason"].startswith("consent:") and not effective[f["reason"].split(":")[1]]
    if not (effective["profile"] and effective["personalize"]):
        assert response["personalized"] is False
        assert all(np.all(X[:, :N_CUST] == 0.0) for X in scorer.seen)


# ---- parse_score_request -----------------------------------------------------------------------


def test_parse_score_request_defaults() -> None:
    req = request()
    assert req.k == 3 and req.candidates is None and req.consent is None and req.context.channel == "web"
    req = request(k=MAX_K, candidates=["a", "b", "a"], consent={"gpc": True}, context={"channel": "app"})
    assert req.candidates == ("a", "b") and req.consent is not None and req.context.channel == "app"


@pytest.mark.parametrize(
    "body, field",
    [({"k": 0}, "k"), ({"k": MAX_K + 1}, "k"), ({"k": "3"}, "k"), ({"k": True}, "k"), ({"k": 2.0}, "k"),
     ({"customer_id": ""}, "customer_id"), ({"customer_id": 5}, "customer_id"), ({"customer_id": None}, "customer_id"),
     ({"customer_id": "x" * 257}, "customer_id"),
     ({"candidates": "a"}, "candidates"), ({"candidates": ["a", 1]}, "candidates"),
     ({"candidates": ["o"] * (MAX_CANDIDATES + 1)}, "candidates"),
     ({"consent": {"flags": {"profile": "yes"}}}, "consent.flags.profile"),
     ({"consent": {"flags": {"nope": True}}}, "consent.flags.nope"),
     ({"consent": {"extra": 1}}, "consent.extra"), ({"consent": {"tcf": "!!"}}, "consent.tcf.core"),
     ({"consent": []}, "consent"), ({"consent": False}, "consent"), ({"consent": ""}, "consent"),
     ({"context": {"channel": "fax"}}, "context.channel")],
)
def test_parse_score_request_errors_name_the_field(body: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        parse_score_request({"customer_id": CUSTOMER, **body})
    assert info.value.field == field


def test_parse_score_request_rejects_non_object() -> None:
    with pytest.raises(InvalidRequest) as info:
        parse_score_request([CUSTOMER])
    assert info.value.field == ""


# ---- the cached candidate sets (models.decision.CandidateCache, models.features.OfferSetCache) ------


def _reference(req: Any, state: ConsentState, prof: Profile | None, cat: Mapping[str, Offer], now: int,
               stats: Mapping[str, Sequence[float]]) -> tuple[list[dict[str, str]], list[Offer], np.ndarray]:
    """The rule offer by offer, in request order, and the row-by-row feature definition."""
    from models.catalog import ineligibility
    from models.consent import restrict
    from models.features import vectorize_rows

    flags = restrict(state.flags, req.consent)
    used = prof if flags["personalize"] and flags["profile"] else None
    ids = req.candidates if req.candidates is not None else sorted(cat)
    filtered, eligible = [], []
    for offer_id in ids:
        offer = cat.get(offer_id)
        if offer is None:
            filtered.append({"offer_id": offer_id, "reason": "unknown_offer"})
            continue
        seen = used.impressions_today(offer_id, now) if used is not None and offer.max_impressions_per_day else 0
        reason = ineligibility(offer, flags, state.exclude_categories, state.dismissed, seen, now)
        if reason is None:
            eligible.append(offer)
        else:
            filtered.append({"offer_id": offer_id, "reason": reason})
    eligible.sort(key=lambda o: o.offer_id)
    return filtered, eligible, vectorize_rows(used, eligible, req.context, now, stats)


def test_decisions_equal_the_offer_by_offer_rule_under_catalogue_and_consent_churn() -> None:
    import random

    rng = random.Random(3)
    cats = ["shoes", "bags", "toys", "food"]
    kinds = ["discount", "bundle", "loyalty", "partner", "sponsored", "other"]

    def offer(i: int, version: int) -> Offer:
        body: dict[str, Any] = {"offer_id": f"o{i:02d}", "title": f"v{version}", "category": rng.choice(cats),
                                "kind": rng.choice(kinds), "discount_pct": rng.choice([0, 5, 20, 45])}
        if rng.random() < .25:
            body["valid_from"] = NOW + rng.randint(-5 * DAY, 2 * DAY)
        if rng.random() < .25:
            body["valid_to"] = NOW + rng.randint(3 * DAY, 9 * DAY) if rng.random() < .5 else NOW - DAY
            body.pop("valid_from", None)
        if rng.random() < .25:
            body["requires"] = rng.sample(list(FLAGS), rng.randint(1, 2))
        if rng.random() < .3:
            body["max_impressions_per_day"] = rng.randint(1, 2)
        return parse_offer(body)

    cat = {f"o{i:02d}": offer(i, 0) for i in range(30)}
    stats = {f"o{i:02d}": (rng.random(), rng.random()) for i in range(0, 35, 2)}
    prof = Profile()
    for j in range(120):
        kind = rng.choice(["page_view", "add_to_cart", "offer_impression", "offer_impression", "offer_click"])
        extra = ({"offer_id": f"o{rng.randrange(35):02d}"} if kind.startswith("offer") else
                 {"item_id": f"i{j}", "category": rng.choice(cats), "price": 3.0})
        prof.apply(parse_event({"event_id": f"e{j}", "type": kind, "customer_id": CUSTOMER,
                                "ts": NOW - rng.randint(0, 9 * 3_600_000), **extra}))
    fixed = [f"o{i:02d}" for i in range(0, 35, 3)] + ["nope"]
    checked = set()
    cache = CandidateCache(max_lists=3)  # the decisions' own; small, so the churn also evicts
    for trial in range(150):
        for _ in range(rng.randint(0, 2)):  # the catalogue changes under the cached sets
            i = rng.randrange(35)
            if rng.random() < .3:
                cat.pop(f"o{i:02d}", None)
            else:
                cat[f"o{i:02d}"] = offer(i, trial)
        state = consent({flag: rng.random() < .7 for flag in FLAGS})
        state.exclude_categories[:] = rng.sample(cats, rng.randint(0, 1))
        for _ in range(rng.randint(0, 3)):
            state.add_dismissed(f"o{rng.randrange(35):02d}")
        body: dict[str, Any] = {"k": rng.randint(1, 6),
                                "context": {"category": rng.choice(cats), "position": rng.randint(0, 2),
                                            "offer_affinity": {f"o{rng.randrange(35):02d}": 1.5}}}
        body["candidates"] = rng.choice([None, fixed, list(reversed(fixed)), [f"o{i:02d}" for i in range(20)]])
        if rng.random() < .3:
            body["consent"] = {"flags": {"personalize": False}}
        req = request(**body)
        used = prof if rng.random() < .9 else None
        scorer = FakeScorer(stats)
        response, _audit = decide(req, state, used, cat, scorer, NOW, "d", KEY, cache=cache)
        filtered, eligible, X = _reference(req, state, used, cat, NOW, stats)
        assert response["filtered"] == filtered
        (seen,) = scorer.seen
        assert seen.shape == X.shape
        np.testing.assert_allclose(seen, X, rtol=1e-6, atol=1e-7)
        scores = scorer.score(X)
        expected = sorted(range(len(eligible)), key=lambda i: -scores[i])[: req.k]
        assert [o["offer_id"] for o in response["offers"]] == [eligible[i].offer_id for i in expected]
        checked.update(f["reason"].split(":")[0] for f in filtered)
    assert checked >= {"unknown_offer", "expired", "not_yet_valid", "consent", "excluded_category", "dismissed",
                       "daily_cap"}


def test_the_same_candidates_after_an_offer_update_use_the_new_offer() -> None:
    cat, cache = dict(CATALOG), CandidateCache()
    req = request(candidates=sorted(cat), k=10)
    first, _audit, _ = run(req, ConsentState.unknown(), None, cat=cat, cache=cache)
    assert first["offers"][0]["offer_id"] == "b_bags"
    cat["b_bags"] = parse_offer({"offer_id": "b_bags", "category": "bags", "kind": "discount",
                                 "discount_pct": 30, "valid_to": NOW - 1})
    cat["a_shoes"] = parse_offer({"offer_id": "a_shoes", "category": "shoes", "kind": "discount", "discount_pct": 60})
    del cat["f_capped"]
    second, _audit, scorer = run(req, ConsentState.unknown(), None, cat=cat, cache=cache)
    filtered = {f["offer_id"]: f["reason"] for f in second["filtered"]}
    assert filtered["b_bags"] == "expired" and filtered["f_capped"] == "unknown_offer"
    assert [o["offer_id"] for o in second["offers"]] == ["a_shoes"]
    assert second["offers"][0]["score"] == pytest.approx(0.6)
    assert scorer.seen[0][:, F["discount"]].tolist() == pytest.approx([0.6])


def test_consent_is_read_on_every_decision_with_the_same_candidates() -> None:
    req, cache = request(k=10), CandidateCache()
    on = consent({"profile": True, "personalize": True})
    first, _audit, _ = run(req, on, shoe_lover(), cache=cache)
    assert first["personalized"] is True
    off = consent({"profile": True, "personalize": False})
    second, audit, scorer = run(req, off, shoe_lover(), cache=cache)
    assert second["personalized"] is False and audit["mode"] == "contextual"
    assert np.all(scorer.seen[0][:, :N_CUST] == 0.0)
    assert "f_capped" not in {f["offer_id"] for f in second["filtered"]}  # the cap needs the profile
    on.add_dismissed("a_shoes")
    third, _audit, _ = run(req, on, shoe_lover(), cache=cache)
    assert {"offer_id": "a_shoes", "reason": "dismissed"} in third["filtered"]


def test_the_candidate_cache_is_bounded() -> None:
    cache = CandidateCache(max_lists=5)
    for i in range(15):
        run(request(candidates=["a_shoes", "b_bags", f"x{i}"]), ConsentState.unknown(), None, cache=cache)
        assert len(cache) <= 5
    assert len(cache.offer_sets) == 1  # every list names the same two known offers


def test_the_same_catalogue_objects_hit_the_callers_cache_on_every_request() -> None:
    """The score path's speed: one OfferSet for the catalogue, built once, whatever the customer."""
    from models.features import OfferSetCache

    sets = OfferSetCache()
    cache = CandidateCache(offer_sets=sets)
    _looked_up, first, _positions, _unknown = cache.lookup(tuple(sorted(CATALOG)), CATALOG)
    for state, prof in ((ConsentState.unknown(), None), (consent({"profile": True, "personalize": True}),
                                                          shoe_lover())):
        for req in (request(k=3), request(k=10, candidates=sorted(CATALOG))):
            run(req, state, prof, cache=cache)
            assert cache.lookup(tuple(sorted(CATALOG)), CATALOG)[1] is first
    assert (len(cache), len(sets)) == (1, 1)


def test_a_decision_is_the_same_with_and_without_a_cache() -> None:
    """decide() keeps nothing between calls of its own: without a cache it builds what it needs."""
    from models import decision

    cache = CandidateCache()
    for state, prof in ((ConsentState.unknown(), None), (consent({"profile": True, "personalize": True}),
                                                          shoe_lover())):
        for req in (request(k=3), request(k=10, candidates=["f_capped", "nope", "a_shoes", "d_mail"])):
            for _ in range(2):  # the second reads the cache
                cached, cached_audit, cached_scorer = run(req, state, prof, cache=cache)
                alone, alone_audit, alone_scorer = run(req, state, prof)
                assert (cached, cached_audit) == (alone, alone_audit)
                assert np.array_equal(cached_scorer.seen[0], alone_scorer.seen[0])
    assert not [name for name, value in vars(decision).items()
                if isinstance(value, dict | list | set) and not name.startswith("__")]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from([0.0, -0.0, 0.1, 0.25, 0.5, 0.5000001, 1.0, 1e-30]), max_size=60),
       st.integers(1, 70))
def test_greedy_slate_is_the_same_as_choose(values: list[float], k: int) -> None:
    """The numpy greedy slate in decide() equals models.exploration.choose, ties included."""
    import random

    from models.decision import _greedy
    from models.exploration import Exploration, choose

    scores = np.array(values, dtype=np.float32)
    assert _greedy(scores, k) == choose(scores.tolist(), k, Exploration(), random.Random(0))


def test_greedy_slate_leaves_non_finite_scores_to_choose() -> None:
    from models.decision import _greedy

    assert _greedy(np.array([0.1, np.nan], dtype=np.float32), 1) is None

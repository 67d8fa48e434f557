"""decide()'s whole answer and audit record equal a decision built offer by offer (issue #5).

The reference below is the rule written out the slow way: eligibility offer by offer in request
order, :func:`models.features.vectorize_rows` for the model input, the slate by a stable sort of
the scores, the reasons read from each row's float32 features. Random scenarios churn the
catalogue, consent, exclusions, dismissals, the profile and the popularity stats (a manifest's
dict of tuples, a dict whose values change between decisions, the replay's running stats), so
every cache in the fast path (candidate sets, offer sets, popularity columns) meets changes.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from models.catalog import Offer, parse_offer
from models.consent import FLAGS, ConsentState, restrict
from models.decision import CandidateCache, decide, hash_customer_id
from models.events import parse_event
from models.features import FEATURE_NAMES
from models.profile import Profile
from tests.unit.test_decision import CUSTOMER, DAY, KEY, NOW, FakeScorer, consent, request
from tests.unit.test_decision import _reference as eligibility_reference
from training.popularity import OfferStats

F = {name: i for i, name in enumerate(FEATURE_NAMES)}
CATS = ["shoes", "bags", "toys", "food", "garden"]
KINDS = ["discount", "bundle", "loyalty", "partner", "sponsored", "other"]


def _reasons(x: np.ndarray, offer: Offer, personalized: bool) -> list[str]:
    """The reasons rule as it was written before issue #5: on the float32 row itself."""
    out = []
    if personalized and x[F["cat_affinity_30d"]] >= 0.2:
        out.append(f"you often shop {offer.category}")
    if personalized and x[F["cart_has_category"]] > 0:
        out.append(f"matches {offer.category} in your cart")
    if x[F["ctx_category_match"]] > 0:
        out.append(f"matches the {offer.category} page you are on")
    if x[F["popularity_rate"]] > 0:
        out.append("popular with other shoppers")
    if offer.discount_pct > 0:
        out.append(f"{offer.discount_pct:g}% off")
    return out or ["available to you now"]


def reference(req: Any, state: ConsentState, prof: Profile | None, cat: Mapping[str, Offer],
              scorer: FakeScorer, now: int,
              decision_id: str) -> tuple[dict[str, Any], dict[str, Any]]:
    flags = restrict(state.flags, req.consent)
    personalized = flags["personalize"] and flags["profile"] and prof is not None
    # eligibility offer by offer and the row-by-row features: test_decision's reference
    filtered, eligible, X = eligibility_reference(req, state, prof, cat, now, scorer.offer_stats)
    scores = scorer.score(X)
    # a stable sort: equal scores keep the offer-id order
    order = sorted(range(len(eligible)), key=lambda i: -float(scores[i]))[: req.k]
    offers = [{"offer_id": eligible[i].offer_id, "score": round(float(scores[i]), 6), "rank": rank,
               "reasons": _reasons(X[i], eligible[i], personalized), "propensity": 1.0}
              for rank, i in enumerate(order, start=1)]
    basis = {"flags": flags, "epoch": state.epoch, "sources": dict(state.sources)}
    response = {"decision_id": decision_id, "customer_id": req.customer_id,
                "personalized": personalized, "offers": offers, "filtered": filtered,
                "consent_basis": basis, "model_version": scorer.version}
    audit = {"decision_id": decision_id, "ts": now,
             "customer_hash": hash_customer_id(KEY, req.customer_id),
             "consent_basis": basis, "tc_hash": state.tc_hash,
             "mode": "personalized" if personalized else "contextual",
             "model_version": scorer.version, "exploration": "greedy",
             "offers": [{k: o[k] for k in ("offer_id", "score", "rank", "propensity")}
                        for o in offers],
             "filtered": filtered}
    return response, audit


def _offer(rng: random.Random, i: int, version: int) -> Offer:
    body: dict[str, Any] = {"offer_id": f"o{i:03d}", "title": f"v{version}",
                            "category": rng.choice(CATS), "kind": rng.choice(KINDS),
                            "discount_pct": rng.choice([0, 5, 20, 45])}
    if rng.random() < .2:
        body["valid_from"] = NOW + rng.randint(-5 * DAY, 2 * DAY)
    if rng.random() < .2:
        body["valid_to"] = NOW + rng.choice([rng.randint(3 * DAY, 9 * DAY), -DAY])
        body.pop("valid_from", None)
    if rng.random() < .2:
        body["requires"] = rng.sample(list(FLAGS), rng.randint(1, 2))
    if rng.random() < .2:
        body["max_impressions_per_day"] = rng.randint(1, 2)
    return parse_offer(body)


def _profile(rng: random.Random, n_offers: int) -> Profile:
    prof = Profile()
    for j in range(rng.randint(0, 80)):
        kind = rng.choice(["page_view", "product_view", "add_to_cart", "purchase",
                           "offer_impression", "offer_click"])
        item = {"item_id": f"i{rng.randrange(20)}", "category": rng.choice(CATS), "price": 3.0}
        extra = ({"offer_id": f"o{rng.randrange(n_offers):03d}"} if kind.startswith("offer") else
                 {"items": [{**item, "quantity": 1}]} if kind == "purchase" else item)
        prof.apply(parse_event({"event_id": f"e{j}", "type": kind, "customer_id": CUSTOMER,
                                "ts": NOW - rng.randint(0, 40 * 3_600_000), **extra}))
    return prof


def test_answers_and_audits_equal_the_reference_over_random_scenarios() -> None:
    rng = random.Random(5)  # noqa: S311 - test data, not security
    n_offers = 60
    cat = {f"o{i:03d}": _offer(rng, i, 0) for i in range(n_offers)}
    manifest_stats = {f"o{i:03d}": (rng.random(), rng.random()) for i in range(0, n_offers, 2)}
    changing: dict[str, Any] = {f"o{i:03d}": [rng.random(), rng.random()]
                                for i in range(0, n_offers, 3)}
    running = OfferStats()
    candidate_lists = [None, [f"o{i:03d}" for i in range(0, 70, 3)],
                       [f"o{i:03d}" for i in range(40)], [f"o{i:03d}" for i in range(59, -1, -1)]]
    profiles = [_profile(rng, n_offers) for _ in range(6)]
    compared = {"personalized": 0, "cached_stats": 0, "filtered": 0}
    cache = CandidateCache(max_lists=3)  # the decisions' own; small, so the churn also evicts
    for trial in range(400):
        for _ in range(rng.randint(0, 2)):  # the catalogue changes under the cached sets
            i = rng.randrange(n_offers + 5)
            if rng.random() < .3:
                cat.pop(f"o{i:03d}", None)
            else:
                cat[f"o{i:03d}"] = _offer(rng, i, trial)
        for offer_id in rng.sample(sorted(changing), 2):  # values replaced or mutated in place
            if rng.random() < .5:
                changing[offer_id][0] = rng.random()
            else:
                changing[offer_id] = [rng.random(), rng.random()]
        running.add(f"o{rng.randrange(n_offers):03d}", rng.random() < .2)
        if rng.random() < .1:
            manifest_stats[f"o{rng.randrange(n_offers):03d}"] = (rng.random(), rng.random())
        stats = rng.choice([manifest_stats, manifest_stats, changing, running, {}])
        state = consent({flag: rng.random() < .75 for flag in FLAGS})
        state.exclude_categories[:] = rng.sample(CATS, rng.randint(0, 1))
        for _ in range(rng.randint(0, 3)):
            state.add_dismissed(f"o{rng.randrange(n_offers):03d}")
        body: dict[str, Any] = {"k": rng.randint(1, 8), "candidates": rng.choice(candidate_lists)}
        if rng.random() < .8:
            body["context"] = {"category": rng.choice(CATS), "position": rng.randint(0, 2),
                               "offer_affinity": {f"o{rng.randrange(n_offers):03d}": 1.5}}
        if rng.random() < .2:
            body["consent"] = {"flags": {"personalize": False}}
        req = request(**body)
        prof = rng.choice(profiles) if rng.random() < .9 else None
        now = NOW + rng.randint(-3_600_000, 3_600_000)
        got = decide(req, state, prof, cat, FakeScorer(stats), now, f"d{trial}", KEY, cache=cache)
        want = reference(req, state, prof, cat, FakeScorer(stats), now, f"d{trial}")
        assert got == want, trial
        compared["personalized"] += got[0]["personalized"]
        compared["cached_stats"] += stats is manifest_stats
        compared["filtered"] += bool(got[0]["filtered"])
    assert min(compared.values()) >= 50, compared


def test_popularity_is_never_served_from_a_stale_cache() -> None:
    offers = [parse_offer({"offer_id": f"p{i}", "category": "shoes", "kind": "discount"})
              for i in range(5)]
    cat = {o.offer_id: o for o in offers}
    stats: dict[str, Sequence[float]] = {"p1": (0.5, 1.0), "p3": (0.25, 2.0)}
    req = request(k=5, candidates=sorted(cat))
    state, cache = consent({}), CandidateCache()
    for value in ((0.5, 1.0), (0.75, 1.0), [0.125, 3.0]):
        stats["p1"] = value
        scorer = FakeScorer(stats)
        decide(req, state, None, cat, scorer, NOW, "d", KEY, cache=cache)
        (X,) = scorer.seen
        assert X[1, F["popularity_rate"]] == np.float32(value[0])
    stats["p1"][0] = 0.0625  # type: ignore[index]  # a list mutated in place
    scorer = FakeScorer(stats)
    decide(req, state, None, cat, scorer, NOW, "d", KEY, cache=cache)
    assert scorer.seen[0][1, F["popularity_rate"]] == np.float32(0.0625)

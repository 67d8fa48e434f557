"""One scoring decision, start to end, as a pure function.

``candidates -> consent and eligibility filter -> vectorize -> score -> top-k``, plus the audit
record that goes to the ``decisions`` topic. The stream calls :func:`decide` with state it read
from its tables; tests and replay call it with state they built themselves.
"""

from __future__ import annotations

import hashlib
import hmac
import operator
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from models.catalog import Offer, ineligibility
from models.consent import DEFAULT_TCF_BASIS, ConsentState, ConsentUpdate, parse_update, restrict
from models.errors import InvalidConsent, InvalidRequest
from models.exploration import Exploration, choose
from models.features import (
    FEATURE_INDEX,
    Context,
    OfferSet,
    OfferSetCache,
    parse_context,
    vectorize,
    vectorize_set,
)
from models.profile import Profile
from models.scorer import Scorer

__all__ = ["ScoreRequest", "parse_score_request", "decide", "CandidateCache", "hash_customer_id", "MAX_K",
           "MAX_CANDIDATES"]

MAX_K = 100
GREEDY = Exploration()
_RNG = random.Random()  # noqa: S311 - exploration draws, not secrets
MAX_CANDIDATES = 2000
_AFFINITY_30D, _CART_HAS_CATEGORY = FEATURE_INDEX["cat_affinity_30d"], FEATURE_INDEX["cart_has_category"]
_CATEGORY_MATCH, _POPULARITY_RATE = FEATURE_INDEX["ctx_category_match"], FEATURE_INDEX["popularity_rate"]
_OFFER_ID = operator.attrgetter("offer_id")
_IS_STR = str.__instancecheck__


@dataclass(frozen=True, slots=True)
class ScoreRequest:
    """A validated ``POST /v1/score`` body."""

    customer_id: str
    k: int
    context: Context
    candidates: tuple[str, ...] | None
    consent: ConsentUpdate | None


def parse_score_request(body: Any, *, header_gpc: bool = False, tcf_basis: str = DEFAULT_TCF_BASIS) -> ScoreRequest:
    """Validate ``{customer_id, k, context?, candidates?, consent?}``; a TC string is read under ``tcf_basis``.

    Raises
    ------
    InvalidRequest
        Naming the field.
    """
    if not isinstance(body, dict):
        raise InvalidRequest("", "body must be a JSON object {customer_id, k, context?, candidates?, consent?}")
    cid = body.get("customer_id")
    if not isinstance(cid, str) or not cid.strip() or len(cid) > 256:
        raise InvalidRequest("customer_id", "must be a non-empty string of at most 256 characters")
    k = body.get("k", 3)
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= MAX_K:
        raise InvalidRequest("k", f"must be an integer from 1 to {MAX_K}")
    candidates = body.get("candidates")
    if candidates is not None:
        # all(map(...)) is isinstance(c, str) for each candidate, without a Python-level loop
        if not isinstance(candidates, list) or not all(map(_IS_STR, candidates)):
            raise InvalidRequest("candidates", "must be a list of offer ids")
        if len(candidates) > MAX_CANDIDATES:
            raise InvalidRequest("candidates", f"at most {MAX_CANDIDATES} candidates")
        candidates = tuple(dict.fromkeys(candidates))
    consent = None
    if body.get("consent") is not None or header_gpc:
        try:
            given = body.get("consent")
            consent = parse_update({} if given is None else given, header_gpc=header_gpc, basis=tcf_basis)
        except InvalidConsent as exc:
            raise InvalidRequest(f"consent.{exc.field}".rstrip("."), exc.reason) from None
    return ScoreRequest(cid, k, parse_context(body.get("context")), candidates, consent)


def hash_customer_id(key: bytes, customer_id: str) -> str:
    """Keyed hash of a customer id for logs and audit (HMAC-SHA256, hex, 32 chars).

    >>> hash_customer_id(b"k", "c1") == hash_customer_id(b"k", "c1") != hash_customer_id(b"j", "c1")
    True
    """
    return hmac.new(key, customer_id.encode(), hashlib.sha256).hexdigest()[:32]


def _reasons(x: np.ndarray, offer: Offer, personalized: bool) -> list[str]:
    out = []
    if personalized and x[_AFFINITY_30D] >= 0.2:
        out.append(f"you often shop {offer.category}")
    if personalized and x[_CART_HAS_CATEGORY] > 0:
        out.append(f"matches {offer.category} in your cart")
    if x[_CATEGORY_MATCH] > 0:
        out.append(f"matches the {offer.category} page you are on")
    if x[_POPULARITY_RATE] > 0:
        out.append("popular with other shoppers")
    if offer.discount_pct > 0:
        out.append(f"{offer.discount_pct:g}% off")
    return out or ["available to you now"]


_Entry = tuple[tuple[Offer | None, ...], OfferSet | None, dict[str, int], bool]


class CandidateCache:
    """What :func:`decide` keeps between calls about the candidate lists it was asked for.

    Its caller owns it: the worker's score route creates one and passes it to every
    :func:`decide`; a replay or a test creates its own. Entries are keyed by the tuple of
    requested ids, the last ``max_lists`` of them kept (least recently used out); an entry is used
    only if every id still maps to the very same offer object, so an offer updated, added or
    removed in the catalogue never meets stale columns.

    Parameters
    ----------
    max_lists : int
        Candidate lists kept.
    offer_sets : OfferSetCache, optional
        Where the sorted :class:`~models.features.OfferSet` s come from (a new one by default).

    Examples
    --------
    >>> from models.catalog import parse_offer
    >>> catalog = {i: parse_offer({"offer_id": i, "category": "shoes"}) for i in ("b", "a")}
    >>> cache = CandidateCache()
    >>> looked_up, candidates, positions, unknown = cache.lookup(("b", "a", "x"), catalog)
    >>> candidates.ids, positions, unknown
    (['a', 'b'], {'b': 0, 'a': 1}, True)
    >>> cache.lookup(("b", "a", "x"), catalog)[1] is candidates
    True
    """

    __slots__ = ("max_lists", "offer_sets", "_lists")

    def __init__(self, max_lists: int = 32, offer_sets: OfferSetCache | None = None) -> None:
        self.max_lists = max_lists
        self.offer_sets = OfferSetCache() if offer_sets is None else offer_sets
        self._lists: dict[tuple[str, ...], _Entry] = {}  # most recently used last

    def __len__(self) -> int:
        return len(self._lists)

    def lookup(self, ids: Sequence[str], catalog: Mapping[str, Offer],
               ) -> tuple[list[Offer | None], OfferSet | None, dict[str, int], bool]:
        """The catalogue's offers for ``ids`` now, and their :class:`OfferSet` sorted by offer id.

        Returns
        -------
        tuple
            ``(looked_up, candidates, positions, unknown)``: the offer (or ``None``) for each id,
            the sorted set of the known ones (``None`` if none is known), ``offer_id -> index
            among the known ones in request order``, and whether an id is unknown.
        """
        key = ids if isinstance(ids, tuple) else tuple(ids)
        looked_up = list(map(catalog.get, key))
        lists = self._lists
        hit = lists.pop(key, None)
        if hit is None or not all(map(operator.is_, hit[0], looked_up)):
            known = [offer for offer in looked_up if offer is not None]
            # the same set in any order
            by_id = self.offer_sets.get(sorted(known, key=_OFFER_ID)) if known else None
            hit = (tuple(looked_up), by_id, {offer.offer_id: i for i, offer in enumerate(known)},
                   len(known) < len(looked_up))
            while len(lists) >= self.max_lists:
                lists.pop(next(iter(lists)), None)
        lists[key] = hit
        return looked_up, hit[1], hit[2], hit[3]


def _eligibility(ids: Sequence[str], looked_up: Sequence[Offer | None], flags: Mapping[str, bool],
                 consent: ConsentState, used_profile: Profile | None, now_ms: int,
                 ) -> tuple[list[Offer], list[dict[str, str]]]:
    """The eligibility rule applied offer by offer: ``(eligible, filtered)`` in request order."""
    eligible: list[Offer] = []
    filtered: list[dict[str, str]] = []
    for offer_id, offer in zip(ids, looked_up, strict=True):
        if offer is None:
            filtered.append({"offer_id": offer_id, "reason": "unknown_offer"})
            continue
        capped = used_profile is not None and offer.max_impressions_per_day is not None
        seen_today = used_profile.impressions_today(offer_id, now_ms) if capped else 0  # type: ignore[union-attr]
        reason = ineligibility(offer, flags, consent.exclude_categories, consent.dismissed, seen_today, now_ms)
        if reason is None:
            eligible.append(offer)
        else:
            filtered.append({"offer_id": offer_id, "reason": reason})
    return eligible, filtered


def _ineligible_rows(candidates: OfferSet, flags: Mapping[str, bool], consent: ConsentState,
                     used_profile: Profile | None, now_ms: int) -> dict[str, str]:
    """``offer_id -> reason`` for the candidates :func:`ineligibility` rejects (ids unique).

    The same rule as :func:`_eligibility`, but only offers some rule can touch are looked at: the
    ones with a validity bound get the whole rule; a consent group fails once for all its offers;
    excluded categories, dismissed ids and caps are looked up from their side. Each rule only fills
    offers without a reason yet, in the rule's own order, so the first failing rule wins as there.
    """
    offers, ids = candidates.offers, candidates.ids
    exclude, dismissed = consent.exclude_categories, consent.dismissed
    bad: dict[str, str] = {}
    for i in candidates.bounded:
        offer = offers[i]
        capped = used_profile is not None and offer.max_impressions_per_day is not None
        seen_today = used_profile.impressions_today(offer.offer_id, now_ms) if capped else 0  # type: ignore[union-attr]
        reason = ineligibility(offer, flags, exclude, dismissed, seen_today, now_ms)
        if reason is not None:
            bad[offer.offer_id] = reason
    for (requires, implied), rows in candidates.flag_groups.items():
        reason = _consent_reason(requires, implied, flags)
        if reason is not None:
            for i in rows:
                bad.setdefault(ids[i], reason)
    for category in exclude:
        for i in candidates.cat_rows.get(category, ()):
            bad.setdefault(ids[i], "excluded_category")
    row_of = candidates.row_of
    for offer_id in dismissed:
        if offer_id in row_of:
            bad.setdefault(offer_id, "dismissed")
    if used_profile is not None:
        for i, cap in candidates.capped:
            offer_id = ids[i]
            if offer_id not in bad and used_profile.impressions_today(offer_id, now_ms) >= cap:
                bad[offer_id] = "daily_cap"
    return bad


def _consent_reason(requires: tuple[str, ...], implied: tuple[str, ...], flags: Mapping[str, bool]) -> str | None:
    for flag in requires:  # the order of models.catalog.ineligibility
        if not flags.get(flag, False):
            return f"consent:{flag}"
    for flag in implied:
        if not flags.get(flag, False):
            return f"consent:{flag}"
    return None


def _greedy(scores: np.ndarray, k: int) -> list[tuple[int, float]] | None:
    """:func:`models.exploration.choose` for the greedy policy, in numpy: the same slate.

    A stable sort of the negated scores puts equal scores in index order, as ``heapq.nlargest``
    (``sorted(..., reverse=True)[:k]``) does. ``None`` (use ``choose``) if a score is not finite,
    where the two orders need not agree.
    """
    if not np.isfinite(scores).all():
        return None
    return [(i, 1.0) for i in np.argsort(-scores, kind="stable")[:k].tolist()]


def _candidate_rows(request: ScoreRequest, catalog: Mapping[str, Offer], flags: Mapping[str, bool],
                    consent: ConsentState, used_profile: Profile | None,
                    offer_stats: Mapping[str, Sequence[float]], now_ms: int, cache: CandidateCache,
                    ) -> tuple[list[Offer], list[dict[str, str]], np.ndarray]:
    """``(eligible, filtered, X)``: the eligible offers sorted by id, the filtered ones with their
    reason in request order, and the eligible offers' feature matrix."""
    context = request.context
    ids: Sequence[str] = request.candidates if request.candidates is not None else sorted(catalog)
    looked_up, candidates, positions, unknown = cache.lookup(ids, catalog)
    if candidates is not None and candidates.unique:
        # one row per known candidate, sorted by offer id: ties in score break by offer id everywhere
        bad = _ineligible_rows(candidates, flags, consent, used_profile, now_ms)
        if unknown:  # in request order, unknown ids among them
            filtered = [{"offer_id": offer_id, "reason": reason}
                        for offer_id, offer in zip(ids, looked_up, strict=True)
                        if (reason := "unknown_offer" if offer is None else bad.get(offer_id)) is not None]
        else:
            filtered = [{"offer_id": offer_id, "reason": bad[offer_id]}
                        for offer_id in sorted(bad, key=positions.__getitem__)]
        if bad:
            keep = np.ones(candidates.n, dtype=bool)
            keep[[candidates.row_of[offer_id] for offer_id in bad]] = False
            rows = np.flatnonzero(keep)
            eligible = list(map(candidates.offers.__getitem__, rows.tolist()))
        else:
            eligible = list(candidates.offers)
        if len(eligible) > 1:
            X = vectorize_set(candidates, used_profile, context, now_ms, offer_stats)
            if bad:
                X = X[rows]
        else:  # what vectorize does for one row (and none)
            X = vectorize(used_profile, eligible, context, now_ms, offer_stats)
    else:  # no known candidate, or an offer id twice: offer by offer, in request order
        eligible, filtered = _eligibility(ids, looked_up, flags, consent, used_profile, now_ms)
        eligible.sort(key=_OFFER_ID)  # ties in score break by offer id everywhere
        X = vectorize(used_profile, eligible, context, now_ms, offer_stats, cache.offer_sets)
    return eligible, filtered, X


def decide(
    request: ScoreRequest,
    consent: ConsentState,
    profile: Profile | None,
    catalog: Mapping[str, Offer],
    scorer: Scorer,
    now_ms: int,
    decision_id: str,
    hash_key: bytes,
    exploration: Exploration = GREEDY,
    rng: random.Random | None = None,
    cache: CandidateCache | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Make one decision; return ``(response, audit_record)``.

    The profile is read only if the effective flags (stored consent narrowed by the request's
    own signals) grant both ``profile`` and ``personalize``. Candidates are sorted by offer id
    before scoring, so ties break the same way on every worker; ``exploration`` chooses the
    slate (greedy by default) and each returned offer carries its ``propensity``.

    ``cache`` is the caller's :class:`CandidateCache` (the score route keeps one for the worker's
    life). Without one nothing is kept between calls: the same answer, but the candidates'
    offer-only columns are built on every call.
    """
    if cache is None:
        cache = CandidateCache(max_lists=1)
    flags = restrict(consent.flags, request.consent)
    personalized = flags["personalize"] and flags["profile"] and profile is not None
    used_profile = profile if personalized else None
    eligible, filtered, X = _candidate_rows(request, catalog, flags, consent, used_profile, scorer.offer_stats,
                                            now_ms, cache)
    scores = scorer.score(X)
    slate = _greedy(scores, request.k) if exploration.mode == "greedy" else None
    if slate is None:
        slate = choose(scores.tolist(), request.k, exploration, rng or _RNG)  # exact float32 -> float
    offers = [
        {"offer_id": eligible[i].offer_id, "score": round(float(scores[i]), 6), "rank": rank,
         "reasons": _reasons(X[i], eligible[i], personalized), "propensity": round(propensity, 6)}
        for rank, (i, propensity) in enumerate(slate, start=1)
    ]
    basis = {"flags": flags, "epoch": consent.epoch, "sources": dict(consent.sources)}
    response = {
        "decision_id": decision_id, "customer_id": request.customer_id, "personalized": personalized,
        "offers": offers, "filtered": filtered, "consent_basis": basis, "model_version": scorer.version,
    }
    audit = {
        "decision_id": decision_id, "ts": now_ms,
        "customer_hash": hash_customer_id(hash_key, request.customer_id),
        "consent_basis": basis, "tc_hash": consent.tc_hash,
        "mode": "personalized" if personalized else "contextual", "model_version": scorer.version,
        "exploration": exploration.mode,
        "offers": [{"offer_id": o["offer_id"], "score": o["score"], "rank": o["rank"],
                    "propensity": o["propensity"]} for o in offers],
        "filtered": filtered,
    }
    return response, audit

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
from models.consent import ConsentState, ConsentUpdate, parse_update, restrict
from models.errors import InvalidConsent, InvalidRequest
from models.exploration import Exploration, choose
from models.features import FEATURE_NAMES, Context, parse_context, vectorize
from models.profile import Profile
from models.scorer import Scorer

__all__ = ["ScoreRequest", "parse_score_request", "decide", "hash_customer_id", "MAX_K", "MAX_CANDIDATES"]

MAX_K = 100
GREEDY = Exploration()
_RNG = random.Random()
MAX_CANDIDATES = 2000
_F = {name: i for i, name in enumerate(FEATURE_NAMES)}
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


def parse_score_request(body: Any, *, header_gpc: bool = False) -> ScoreRequest:
    """Validate ``{customer_id, k, context?, candidates?, consent?}``.

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
            consent = parse_update({} if given is None else given, header_gpc=header_gpc)
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
    if personalized and x[_F["cat_affinity_30d"]] >= 0.2:
        out.append(f"you often shop {offer.category}")
    if personalized and x[_F["cart_has_category"]] > 0:
        out.append(f"matches {offer.category} in your cart")
    if x[_F["ctx_category_match"]] > 0:
        out.append(f"matches the {offer.category} page you are on")
    if x[_F["popularity_rate"]] > 0:
        out.append("popular with other shoppers")
    if offer.discount_pct > 0:
        out.append(f"{offer.discount_pct:g}% off")
    return out or ["available to you now"]


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
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Make one decision; return ``(response, audit_record)``.

    The profile is read only if the effective flags (stored consent narrowed by the request's
    own signals) grant both ``profile`` and ``personalize``. Candidates are sorted by offer id
    before scoring, so ties break the same way on every worker; ``exploration`` chooses the
    slate (greedy by default) and each returned offer carries its ``propensity``.
    """
    flags = restrict(consent.flags, request.consent)
    personalized = flags["personalize"] and flags["profile"] and profile is not None
    used_profile = profile if personalized else None
    ids: Sequence[str] = request.candidates if request.candidates is not None else sorted(catalog)
    eligible: list[Offer] = []
    filtered: list[dict[str, str]] = []
    for offer_id in ids:
        offer = catalog.get(offer_id)
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
    eligible.sort(key=_OFFER_ID)  # ties in score break by offer id everywhere
    X = vectorize(used_profile, eligible, request.context, now_ms, scorer.offer_stats)
    scores = scorer.score(X)
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

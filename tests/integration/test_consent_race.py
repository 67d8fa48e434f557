"""Consent under concurrency: a seeded storm of grants, revocations, events and scores on two workers.

DESIGN.md: "Revocation is effective when the consent call returns: no later score (on any worker)
may use what was revoked." This test issues a few thousand operations over ~40 customers from
several concurrent client tasks against both workers of one group (so about half of all calls are
forwarded to the owner), records when each call was sent and when its answer came back, and then
checks the trace against a client-side model of what had *returned*:

(a) no ``personalized: true`` decision whose request was sent after a revocation of
    ``personalize`` or ``profile`` had returned, unless a grant of that flag may have been applied
    in between;
(b) no offer whose requirements (``requires``, plus ``sharing`` for partner offers) are not granted
    in the decision's own ``consent_basis.flags``, and no ``consent_basis.flags`` granting a flag
    whose revocation had returned before the score was sent (same grant exception);
(c) consent epochs never go backwards: a decision or consent answer for a request sent after
    another one for the same customer returned carries an epoch at least as large.

The model is conservative, so it never blames the system for an ordering the client cannot know:
a call is processed somewhere between the moment it was sent and the moment its answer arrived
(recorded before sending / after reading the body), a grant that did not answer 200 counts as
possibly applied at any time after it was sent, and a revocation that did not answer 200 is never
used to blame. ``test_checker_catches_violations`` shows the checker does flag a real violation.

Seed: ``OFFERSTREAM_RACE_SEED`` (printed; a random one by default). Operation count:
``OFFERSTREAM_RACE_OPS`` (default 3,000).
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.integration.workers import BROKER_KINDS, WorkerProcess, wait_until, worker_group

FLAGS = ("profile", "personalize", "marketing", "measurement", "training", "sharing")
REVOCABLE = ("profile", "personalize", "sharing", "marketing")
CATEGORIES = ("shoes", "hats", "travel", "books")
OFFERS: dict[str, dict[str, Any]] = {
    "shoes-10": {"title": "10% off shoes", "category": "shoes", "kind": "discount", "discount_pct": 10},
    "hats-5": {"title": "5% off hats", "category": "hats", "kind": "discount", "discount_pct": 5},
    "books-loyal": {"title": "Double points on books", "category": "books", "kind": "loyalty"},
    # Partner offer with no explicit `requires`: its kind alone must demand `sharing`.
    "partner-travel": {"title": "Partner hotel deal", "category": "travel", "kind": "partner"},
    "partner-shoes": {"title": "Partner sneakers", "category": "shoes", "kind": "partner",
                      "requires": ["sharing"], "discount_pct": 15},
    "mail-hats": {"title": "Hat newsletter coupon", "category": "hats", "kind": "discount",
                  "requires": ["marketing"], "discount_pct": 20},
    "vip-books": {"title": "Picked for you: books", "category": "books", "kind": "bundle",
                  "requires": ["profile", "personalize", "marketing"]},
}
# Written out here rather than computed by the system's own code: requires + (partner => sharing).
REQUIRED: dict[str, frozenset[str]] = {
    "shoes-10": frozenset(), "hats-5": frozenset(), "books-loyal": frozenset(),
    "partner-travel": frozenset({"sharing"}), "partner-shoes": frozenset({"sharing"}),
    "mail-hats": frozenset({"marketing"}), "vip-books": frozenset({"profile", "personalize", "marketing"}),
}
N_CUSTOMERS = 40
N_TASKS = 8
MAX_503_SHARE = 0.02


# ------------------------------------------------------------------------------------ the trace


@dataclass
class Op:
    """One HTTP call as the client saw it. Times are ``time.perf_counter()`` seconds."""

    seq: int
    kind: str  # grant | revoke | event | score
    customer: str
    worker: int  # index of the worker the call was sent to
    sent: float
    returned: float | None = None  # None: no answer (error or timeout)
    status: int = 0
    flags: dict[str, bool] = field(default_factory=dict)  # consent body flags
    response: Any = None
    retry_after: str | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.returned is not None and self.status == 200

    def epoch(self) -> int | None:
        if not self.ok or not isinstance(self.response, dict):
            return None
        if self.kind == "score":
            return self.response["consent_basis"]["epoch"]
        if self.kind in ("grant", "revoke"):
            return self.response["consent"]["epoch"]
        return None

    def describe(self, t0: float) -> str:
        ret = f"{(self.returned - t0) * 1000:.1f}" if self.returned is not None else "never"
        extra = ""
        if self.kind in ("grant", "revoke"):
            extra = f" flags={self.flags}"
        if self.kind == "score" and self.ok:
            extra = (f" personalized={self.response['personalized']} "
                     f"basis={self.response['consent_basis']['flags']} "
                     f"epoch={self.response['consent_basis']['epoch']} "
                     f"offers={[o['offer_id'] for o in self.response['offers']]}")
        return (f"#{self.seq} {self.kind} {self.customer} via worker {'ab'[self.worker]} "
                f"sent {(self.sent - t0) * 1000:.1f} ms returned {ret} ms status {self.status}{extra}")


def must_be_off(score: Op, flag: str, revokes: list[Op], grants: list[Op]) -> Op | None:
    """The returned revocation that obliges ``flag`` to be off for ``score``, if there is one.

    A revocation R binds if its answer (200) came back before the score was sent, and no grant of
    the flag may have been processed after R and before the score: a grant G may have been if it
    was sent before the score's answer came back and it was not definitely processed before R
    (G answered 200 before R was sent). A grant without a 200 answer may have been applied any time
    after it was sent.
    """
    assert score.returned is not None
    for r in revokes:
        if r.flags.get(flag) is not False or not r.ok or r.returned >= score.sent:  # type: ignore[operator]
            continue
        excused = any(
            g.flags.get(flag) is True and g.sent < score.returned
            and not (g.ok and g.returned <= r.sent)  # type: ignore[operator]
            for g in grants
        )
        if not excused:
            return r
    return None


def check_trace(ops: list[Op], required: dict[str, frozenset[str]]) -> tuple[list[str], Counter[str]]:
    """Check a trace; return ``(violations, statistics)``. Pure: no system code involved."""
    t0 = min((o.sent for o in ops), default=0.0)
    violations: list[str] = []
    stats: Counter[str] = Counter()
    by_customer: dict[str, list[Op]] = defaultdict(list)
    for op in ops:
        by_customer[op.customer].append(op)
    for customer, mine in sorted(by_customer.items()):
        revokes = [o for o in mine if o.kind == "revoke"]
        grants = [o for o in mine if o.kind == "grant"]
        for s in (o for o in mine if o.kind == "score" and o.ok):
            resp = s.response
            basis = resp["consent_basis"]["flags"]
            # (b) offers against the decision's own basis
            for offer in resp["offers"]:
                need = required.get(offer["offer_id"])
                if need is None:
                    violations.append(f"(b) unknown offer {offer['offer_id']!r} returned: {s.describe(t0)}")
                    continue
                missing = sorted(f for f in need if not basis.get(f, False))
                if missing:
                    violations.append(f"(b) offer {offer['offer_id']} returned without {missing} in its "
                                      f"own consent basis: {s.describe(t0)}")
            if resp["personalized"] and not (basis.get("personalize") and basis.get("profile")):
                violations.append(f"(a) personalized although its basis lacks profile/personalize: "
                                  f"{s.describe(t0)}")
            # (a)/(b) against revocations that had returned before the score was sent
            for flag in FLAGS:
                binding = must_be_off(s, flag, revokes, grants)
                if binding is None:
                    continue
                stats[f"scores_bound_off:{flag}"] += 1
                if basis.get(flag, False):
                    violations.append(f"(b) basis grants {flag!r} after its revocation returned: "
                                      f"revocation {binding.describe(t0)} | score {s.describe(t0)}")
                if flag in ("personalize", "profile") and resp["personalized"]:
                    violations.append(f"(a) personalized after revocation of {flag!r} returned: "
                                      f"revocation {binding.describe(t0)} | score {s.describe(t0)}")
            if any(must_be_off(s, f, revokes, grants) for f in ("personalize", "profile")):
                stats["scores_bound_contextual"] += 1
        # (c) epochs: a call sent after another one returned never sees an older epoch
        with_epoch = sorted((o for o in mine if o.epoch() is not None), key=lambda o: o.sent)
        for b in with_epoch:
            earlier = [a for a in with_epoch if a.returned < b.sent]  # type: ignore[operator]
            if not earlier:
                continue
            a = max(earlier, key=lambda o: o.epoch())  # type: ignore[arg-type,return-value]
            stats["epoch_pairs_checked"] += len(earlier)
            if b.epoch() < a.epoch():  # type: ignore[operator]
                violations.append(f"(c) epoch went backwards {a.epoch()} -> {b.epoch()}: "
                                  f"{a.describe(t0)} | later {b.describe(t0)}")
    return violations, stats


# ------------------------------------------------------------------------------ checker self-test


def _score(seq: int, sent: float, returned: float, personalized: bool, flags: dict[str, bool],
           epoch: int, offers: tuple[str, ...] = ()) -> Op:
    basis = dict.fromkeys(FLAGS, False) | flags
    return Op(seq, "score", "c", 0, sent, returned, 200, response={
        "personalized": personalized, "consent_basis": {"flags": basis, "epoch": epoch},
        "offers": [{"offer_id": o} for o in offers]})


def _consent(seq: int, kind: str, sent: float, returned: float | None, flags: dict[str, bool], epoch: int,
             status: int = 200) -> Op:
    return Op(seq, kind, "c", 1, sent, returned, status, flags=flags,
              response={"consent": {"epoch": epoch}} if status == 200 else None)


def test_checker_catches_violations() -> None:
    """The checker flags a real violation, and does not blame what the client cannot know."""
    grant = _consent(1, "grant", 0.0, 1.0, {"profile": True, "personalize": True, "sharing": True}, 1)
    revoke = _consent(2, "revoke", 2.0, 3.0, {"personalize": False, "sharing": False}, 2)
    all_on = {"profile": True, "personalize": True, "sharing": True}
    # A score sent after the revocation returned that is still personalized, still shows sharing,
    # returns the partner offer, and reports the pre-revocation epoch: every check must fire.
    bad = _score(3, 4.0, 5.0, True, all_on, 1, ("partner-travel",))
    violations, _ = check_trace([grant, revoke, bad], REQUIRED)
    kinds = sorted({v[:3] for v in violations})
    assert kinds == ["(a)", "(b)", "(c)"], violations
    assert any("personalized after revocation of 'personalize'" in v for v in violations)
    assert any("basis grants 'sharing'" in v for v in violations)
    assert any("partner-travel" in v for v in violations)

    # The same answer for a score sent while the revocation was still in flight: not a violation.
    racing = _score(3, 2.5, 5.0, True, all_on, 1)
    assert check_trace([grant, revoke, racing], REQUIRED)[0] == []
    # ...nor if a later grant of the flags was sent before the score's answer came back.
    regrant = _consent(4, "grant", 3.5, 6.0, all_on, 3)
    late = _score(3, 4.0, 5.0, True, all_on, 3)
    assert check_trace([grant, revoke, regrant, late], REQUIRED)[0] == []
    # ...nor if a grant got no answer (it may have been applied at any time after it was sent).
    lost = _consent(4, "grant", 0.5, None, all_on, 0, status=0)
    assert check_trace([grant, revoke, lost, _score(3, 4.0, 5.0, True, all_on, 2)], REQUIRED)[0] == []
    # A grant that answered before the revocation was sent does not excuse anything.
    assert check_trace([grant, revoke, _score(3, 4.0, 5.0, True, all_on, 2)], REQUIRED)[0]
    # A revocation that did not answer 200 never blames; a failed revocation is not a revocation.
    failed = _consent(2, "revoke", 2.0, 3.0, {"personalize": False}, 0, status=503)
    assert check_trace([grant, failed, _score(3, 4.0, 5.0, True, all_on, 1)], REQUIRED)[0] == []
    # An offer outside its decision's own basis is flagged even without any revocation.
    assert check_trace([_score(1, 0.0, 1.0, False, {}, 0, ("mail-hats",))], REQUIRED)[0]


# ----------------------------------------------------------------------------------- the storm


@pytest.fixture(scope="module", params=BROKER_KINDS)
def pair(request: pytest.FixtureRequest, trained_registry: Path) -> Iterator[list[WorkerProcess]]:
    """Two workers on each broker kind in turn."""
    with worker_group(2, app_id="consent-race", registry=trained_registry, broker=request.param) as workers:
        yield workers


def _plan(rng: random.Random, n_ops: int, customers: list[str]) -> list[list[tuple[str, str, int, Any]]]:
    """Jobs of ``(kind, customer, worker, payload)``; most jobs are one call, some are chains."""
    jobs: list[list[tuple[str, str, int, Any]]] = []
    planned = 0
    event_no = 0
    while planned < n_ops:
        c = rng.choice(customers)
        w = rng.randrange(2)
        roll = rng.random()
        if roll < 0.15:
            flags = {f: True for f, p in (("profile", 0.8), ("personalize", 0.8), ("sharing", 0.5),
                                          ("marketing", 0.5), ("measurement", 0.3), ("training", 0.2))
                     if rng.random() < p} or {"personalize": True}
            job = [("grant", c, w, flags)]
        elif roll < 0.27:
            job = [("revoke", c, w, _revocation(rng))]
        elif roll < 0.35:
            # A probe: revoke, then score at once on the other worker and on the same one.
            job = [("revoke", c, w, _revocation(rng)), ("score", c, 1 - w, None), ("score", c, w, None)]
        elif roll < 0.62:
            now = int(time.time() * 1000)
            events = []
            for _ in range(rng.randint(1, 3)):
                event_no += 1
                cat = rng.choice(CATEGORIES)
                events.append({"event_id": f"race-{event_no}", "customer_id": c, "ts": now,
                               "type": rng.choice(("product_view", "add_to_cart")),
                               "item_id": f"{cat}-{rng.randrange(50)}", "category": cat,
                               "price": round(rng.uniform(5, 120), 2)})
            job = [("event", c, w, events)]
        else:
            job = [("score", c, w, None)]
        jobs.append(job)
        planned += len(job)
    return jobs


def _revocation(rng: random.Random) -> dict[str, bool]:
    return {f: False for f in REVOCABLE if rng.random() < 0.4} or {rng.choice(REVOCABLE): False}


async def _storm(urls: list[str], jobs: list[list[tuple[str, str, int, Any]]], n_tasks: int) -> list[Op]:
    ops: list[Op] = []
    queue = iter(jobs)
    timeout = aiohttp.ClientTimeout(total=15)

    async def call(session: aiohttp.ClientSession, kind: str, customer: str, worker: int, payload: Any) -> Op:
        if kind in ("grant", "revoke"):
            method, path, body = "PUT", f"/v1/customers/{customer}/consent", {"flags": payload}
        elif kind == "event":
            # Stamped when sent, as a shop stamps what happens: an event stamped before a
            # revocation of `profile` is (rightly) never profiled, even after a re-grant.
            stamp = int(time.time() * 1000)
            method, path, body = "POST", "/v1/events", [{**e, "ts": stamp} for e in payload]
        else:
            method, path, body = "POST", "/v1/score", {"customer_id": customer, "k": 10}
        op = Op(len(ops), kind, customer, worker, time.perf_counter(),
                flags=payload if kind in ("grant", "revoke") else {})
        ops.append(op)
        try:
            async with session.request(method, urls[worker] + path, json=body) as resp:
                raw = await resp.read()
                op.status = resp.status
                op.retry_after = resp.headers.get("Retry-After")
                try:
                    op.response = await resp.json(content_type=None) if raw else None
                except ValueError:
                    op.response = raw[:300]
            op.returned = time.perf_counter()
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            op.error = f"{type(exc).__name__}: {exc}"
        return op

    async def runner(session: aiohttp.ClientSession) -> None:
        for job in queue:
            for kind, customer, worker, payload in job:
                await call(session, kind, customer, worker, payload)

    connector = aiohttp.TCPConnector(limit=4 * n_tasks)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        await asyncio.gather(*(runner(session) for _ in range(n_tasks)))
        # A last deterministic probe per customer: revoke everything on one worker, then score on
        # the other once the revocation has returned.
        for i, customer in enumerate(sorted({c for job in jobs for _, c, _, _ in job})):
            await call(session, "revoke", customer, i % 2, dict.fromkeys(REVOCABLE, False))
            await call(session, "score", customer, 1 - i % 2, None)
    return ops


@pytest.mark.integration
def test_revocation_is_effective_on_return_under_concurrency(pair: list[WorkerProcess]) -> None:
    a, b = pair
    seed = int(os.environ.get("OFFERSTREAM_RACE_SEED", random.SystemRandom().randrange(2**32)))
    n_ops = int(os.environ.get("OFFERSTREAM_RACE_OPS", "3000"))
    print(f"\nconsent race: seed={seed} (OFFERSTREAM_RACE_SEED={seed} to replay the plan), ops={n_ops}")
    for offer_id, offer in OFFERS.items():
        a.client.json("PUT", f"/v1/offers/{offer_id}", offer)
    wait_until(lambda: b.client.json("GET", "/v1/offers")["count"] == len(OFFERS), what="catalogue on b")

    rng = random.Random(seed)
    customers = [f"race-{seed % 1000}-{i}" for i in range(N_CUSTOMERS)]
    jobs = _plan(rng, n_ops, customers)
    started = time.perf_counter()
    ops = asyncio.run(_storm([a.url, b.url], jobs, N_TASKS))
    elapsed = time.perf_counter() - started

    violations, stats = check_trace(ops, REQUIRED)
    by_kind = Counter(o.kind for o in ops)
    statuses = Counter((o.kind, o.status) for o in ops)
    unavailable = [o for o in ops if o.status == 503]
    unexpected = [o for o in ops if o.status not in (200, 202, 503)]
    no_retry_after = [o for o in unavailable if not o.retry_after]
    wrong_ok = [o for o in ops if o.status in (200, 202) and o.status != (202 if o.kind == "event" else 200)]
    decisions = [o for o in ops if o.kind == "score" and o.ok]
    personalized = sum(1 for o in decisions if o.response["personalized"])
    forwarded = sum(w.metric("offerstream_requests_forwarded_total") for w in pair)
    print(f"  {len(ops)} calls in {elapsed:.1f} s ({len(ops) / elapsed:.0f}/s) from {N_TASKS} tasks, "
          f"{N_CUSTOMERS} customers; forwarded by the workers: {forwarded:.0f}")
    print(f"  by kind: {dict(sorted(by_kind.items()))}")
    print(f"  statuses: {dict(sorted(statuses.items()))}")
    print(f"  decisions: {len(decisions)} ({personalized} personalized, {len(decisions) - personalized} contextual)")
    print(f"  503: {len(unavailable)} ({len(unavailable) / len(ops):.2%}), without Retry-After: {len(no_retry_after)}")
    print(f"  checks: {dict(sorted(stats.items()))}")
    print(f"  violations: {len(violations)}")
    for v in violations[:20]:
        print("   ", v)

    assert not violations, f"seed {seed}: {len(violations)} consent violations, first: {violations[:5]}"
    assert not unexpected, f"seed {seed}: unexpected answers: " + "; ".join(
        f"{o.describe(ops[0].sent)} error={o.error} body={str(o.response)[:200]}" for o in unexpected[:5])
    assert not wrong_ok, [o.describe(ops[0].sent) for o in wrong_ok[:5]]
    assert not no_retry_after, "503 without Retry-After: " + "; ".join(
        o.describe(ops[0].sent) for o in no_retry_after[:5])
    assert len(unavailable) <= MAX_503_SHARE * len(ops), f"too many 503s: {len(unavailable)} of {len(ops)}"
    # The storm must exercise what it checks: personalized answers happen, and many decisions were
    # sent after a returned revocation that obliged them to be contextual.
    assert personalized >= 0.05 * len(decisions), f"only {personalized} personalized of {len(decisions)}"
    assert stats["scores_bound_contextual"] >= 50, stats
    assert stats["scores_bound_off:sharing"] >= 20, stats
    assert forwarded > 0

"""Point-in-time replay of an event log through the same core code the stream uses.

:func:`replay` walks a log in time order and, per customer, keeps a
:class:`~models.profile.Profile` and a :class:`~models.consent.ConsentState` exactly as the ingest
agent does, by calling the same event rule, :func:`models.customer_state.apply_event`, over plain
dicts (:class:`~models.customer_state.DictState`): erasure first, then consent, preferences and
dismissals, and the profile only while ``profile`` consent covers the event's time.

At each ``offer_impression`` of a known offer it takes one training row **before** the impression
is applied, with :func:`models.features.vectorize` -- the same function that builds the online row.

Choices (recorded in :class:`ReplayResult`)
-------------------------------------------
* **Order.** Events must come in ``ts`` order (equal times keep their given order); an event
  that goes back in time raises :class:`~models.errors.InvalidEvent` naming its index. Sorting
  would hide a broken export, and the adapters already yield sorted logs.
* **Decisions.** Impressions of one decision (same customer, ``decision_id`` and ``ts``, one
  after another in the log) are vectorized together from the state before any of them, and
  then applied: a score call ranks every candidate before one is shown, so no candidate's row
  sees the impressions of its neighbours on the page. An impression without a ``decision_id``
  is its own decision.
* **Duplicates.** An ``event_id`` seen before is skipped (counted in ``duplicates``), before the
  order check, so an at-least-once redelivery of a whole log replays like the log itself.
* **Invalid events** (contract or consent body) are counted and listed (index, reason), never
  dropped silently; they do not stop the replay.
* **Labels.** 1 if an ``offer_click``/``offer_redeem`` of the same customer and offer follows
  within the attribution window: ``attribution_ms`` after the impression if given, else until
  the offer's ``valid_to``, else 7 days. A response whose ``decision_id`` matches open
  impressions labels only those (so one click never labels several shows of the offer);
  without a match it labels every open impression of that customer and offer.
* **Training consent.** A row is kept only if the customer grants ``training`` at impression
  time; others are counted in ``excluded_no_training_consent``.
* **Popularity** (``popularity_rate``, ``popularity_log_n``): per offer, over kept rows whose
  label window **closed** strictly before the current event: ``rate = (positives + 1) /
  (impressions + 20)`` (a 5 % prior worth 20 impressions) and ``log_n = log1p(impressions)``.
  An offer with no closed window is absent from the stats and so reads ``(0, 0)``, exactly as an
  offer missing from a model manifest reads online. A row's own label can therefore never reach
  its features. The stats at the end of the replay (same definition) go into the manifest.

Examples
--------
>>> from models.catalog import parse_offer
>>> offers = {"o1": parse_offer({"offer_id": "o1", "kind": "discount"})}
>>> events = [
...     {"event_id": "i1", "type": "offer_impression", "customer_id": "c1", "ts": 1_700_000_000_000,
...      "offer_id": "o1", "decision_id": "d1", "position": 0},
...     {"event_id": "k1", "type": "offer_click", "customer_id": "c1", "ts": 1_700_000_060_000,
...      "offer_id": "o1", "decision_id": "d1"},
... ]
>>> result = replay(events, offers, assume_consent=True)
>>> result.X.shape[0], result.y.tolist(), result.counts["rows"]
(1, [1], 1)
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Container, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np

from models.catalog import Offer
from models.consent import FLAGS, ConsentState, archived_tcf_basis, parse_update
from models.customer_state import DictState, Erasures, apply_event, erased
from models.errors import InvalidEvent, ValidationError
from models.events import CHANNELS, Event, parse_event
from models.features import FEATURE_NAMES, Context, OfferSetCache, vectorize
from models.profile import DAY_MS, Profile
from training.popularity import POPULARITY_PRIOR_N, POPULARITY_PRIOR_RATE, OfferStats, popularity

__all__ = [
    "DEFAULT_ATTRIBUTION_MS",
    "POPULARITY_PRIOR_RATE",
    "POPULARITY_PRIOR_N",
    "OfferStats",
    "RowMeta",
    "ReplayResult",
    "replay",
    "assumed_consent",
    "popularity",
]

DEFAULT_ATTRIBUTION_MS = 7 * DAY_MS
MAX_LISTED_INVALID = 100
RESPONSE_TYPES = frozenset({"offer_click", "offer_redeem"})


class RowMeta(NamedTuple):
    """Who, what and when of one training row (its label is in ``ReplayResult.y``)."""

    customer_id: str
    offer_id: str
    ts: int
    decision_id: str | None
    position: int | None
    propensity: float | None


@dataclass
class ReplayResult:
    """Everything a replay produced.

    Attributes
    ----------
    X : np.ndarray
        ``(n, len(FEATURE_NAMES))`` float32 rows, one per kept impression, in log order.
    y : np.ndarray
        int8 labels.
    meta : list of RowMeta
        One entry per row.
    offer_stats : dict
        ``offer_id -> (rate, log_n)`` as of the end of the replay (for the model manifest).
    profiles, consents : dict
        Final state per customer (erased profiles are absent from ``profiles``).
    counts : dict
        ``events, invalid, duplicates, skipped_erased, impressions, unknown_offer, rows,
        positives, excluded_no_training_consent``.
    data_range : tuple of int or None
        ``(min ts, max ts)`` over the valid events, epoch ms.
    invalid : list of (int, str)
        The first rejected events: index in the input and reason.
    settings : dict
        The choices this replay made (consent assumption, attribution, popularity definition).
    """

    X: np.ndarray
    y: np.ndarray
    meta: list[RowMeta]
    offer_stats: dict[str, tuple[float, float]]
    profiles: dict[str, Profile]
    consents: dict[str, ConsentState]
    counts: dict[str, int]
    data_range: tuple[int, int] | None
    invalid: list[tuple[int, str]] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def ts(self) -> np.ndarray:
        """Row times (epoch ms) as an int64 array, for :func:`training.fit.time_split`."""
        return np.fromiter((m.ts for m in self.meta), dtype=np.int64, count=len(self.meta))


def assumed_consent() -> ConsentState:
    """The consent assumed for data sets that carry none: every flag but ``sharing`` granted.

    >>> sorted(f for f, v in assumed_consent().flags.items() if not v)
    ['sharing']
    """
    flags = {flag: flag != "sharing" for flag in FLAGS}
    sources = {flag: "assumed" if flags[flag] else "default" for flag in FLAGS}
    return ConsentState(flags=flags, sources=sources)


class _Replayer:
    """Mutable state of one replay; :func:`replay` is the public face."""

    def __init__(self, offers: Mapping[str, Offer], attribution_ms: int | None,
                 assume_consent: bool, erased: Erasures | Container[str]) -> None:
        self.offers, self.attribution_ms = offers, attribution_ms
        self.assume_consent, self.erased = assume_consent, erased
        self.state = DictState(assumed_consent if assume_consent else ConsentState.unknown)
        self.seen_ids: set[str] = set()
        self.rows: list[np.ndarray] = []
        self.labels: list[int] = []
        self.meta: list[RowMeta] = []
        self.open_rows: dict[tuple[str, str], list[int]] = {}  # (customer, offer) -> row indices
        self.windows: list[tuple[int, int]] = []  # heap of (window end, row index)
        self.offer_stats = OfferStats()
        self.counts = dict.fromkeys(
            ("events", "invalid", "duplicates", "skipped_erased", "impressions", "unknown_offer",
             "rows", "positives", "excluded_no_training_consent"), 0)
        self.invalid: list[tuple[int, str]] = []
        self.first_ts: int | None = None
        self.last_ts: int | None = None
        self.processing_order = False
        self.pending: list[Event] = []  # impressions of one decision, not yet taken nor applied
        self.offer_sets = OfferSetCache()  # the candidate sets of batched decisions

    # ---- driving ---------------------------------------------------------------------------
    def feed(self, index: int, raw: Any) -> None:
        """Validate, de-duplicate, order-check and apply one raw event."""
        self.counts["events"] += 1
        try:
            event = parse_event(raw)
            if event.type == "consent":
                parse_update(event.get("consent"))  # a malformed body is rejected before it counts
        except ValidationError as exc:
            self._reject(index, exc)
            return
        if event.event_id in self.seen_ids:
            self.counts["duplicates"] += 1
            return
        self.seen_ids.add(event.event_id)
        batched = _decision_key(event)
        if self.pending and (batched is None or batched != _decision_key(self.pending[0])):
            self.flush()
        self._check_order(index, event.ts)
        self._close_windows(self.last_ts if self.last_ts is not None else event.ts)
        if erased(self.erased, event):  # the core's erasure rule, before any row is taken
            self.counts["skipped_erased"] += 1
            return
        if batched is not None:  # taken and applied with the rest of its decision
            self.pending.append(event)
            return
        if event.type == "offer_impression":
            self._take_row(event, self.state.read_consent(event.customer_id))
        elif event.type in RESPONSE_TYPES:
            self._attribute(event)
        # the one event rule (models/customer_state.py); a TC string under the basis the worker used
        apply_event(self.state, event, tcf_basis=archived_tcf_basis(event.data))

    def flush(self) -> None:
        """Take the rows of the pending decision's impressions, all from the state before any of
        them, then apply them (a score call ranks every candidate before one is shown)."""
        batch, self.pending = self.pending, []
        if not batch:
            return
        state = self.state.read_consent(batch[0].customer_id)
        if len(batch) == 1:
            self._take_row(batch[0], state)
        else:
            self._take_rows(batch, state)
        for event in batch:
            apply_event(self.state, event, tcf_basis=archived_tcf_basis(event.data))

    def _reject(self, index: int, exc: ValidationError) -> None:
        self.counts["invalid"] += 1
        if len(self.invalid) < MAX_LISTED_INVALID:
            self.invalid.append((index, str(exc)))

    def _check_order(self, index: int, ts: int) -> None:
        if self.processing_order:
            self.first_ts = ts if self.first_ts is None else min(self.first_ts, ts)
            self.last_ts = ts if self.last_ts is None else max(self.last_ts, ts)
            return
        if self.last_ts is not None and ts < self.last_ts:
            raise InvalidEvent(
                f"events[{index}].ts",
                f"{ts} goes back in time (previous event at {self.last_ts}); replay needs the log "
                "in ts order: sort it first",
            )
        self.first_ts = ts if self.first_ts is None else self.first_ts
        self.last_ts = ts

    # ---- rows and labels -------------------------------------------------------------------
    def _take_row(self, event: Event, state: ConsentState) -> None:
        self.counts["impressions"] += 1
        offer = self.offers.get(event.get("offer_id"))
        if offer is None:
            self.counts["unknown_offer"] += 1
            return
        if not state.flags["training"]:
            self.counts["excluded_no_training_consent"] += 1
            return
        profile = self.state.read_profile(event.customer_id) if state.allows_personalization() else None
        self._add_row(event, offer, vectorize(profile, [offer], _context(event), event.ts, self.offer_stats)[0])

    def _take_rows(self, batch: list[Event], state: ConsentState) -> None:
        """:meth:`_take_row` of several impressions of one decision, vectorized together (one
        call per distinct page context, as one score call builds them)."""
        kept: list[tuple[Event, Offer]] = []
        for event in batch:
            self.counts["impressions"] += 1
            offer = self.offers.get(event.get("offer_id"))
            if offer is None:
                self.counts["unknown_offer"] += 1
            elif not state.flags["training"]:
                self.counts["excluded_no_training_consent"] += 1
            else:
                kept.append((event, offer))
        if not kept:
            return
        first = kept[0][0]
        profile = self.state.read_profile(first.customer_id) if state.allows_personalization() else None
        pages: dict[Any, list[int]] = {}
        contexts = [_context(event) for event, _offer in kept]
        for i, ctx in enumerate(contexts):
            key = (ctx.channel, ctx.position, tuple(sorted(ctx.offer_affinity.items())))
            pages.setdefault(key, []).append(i)
        rows: list[Any] = [None] * len(kept)
        for members in pages.values():
            X = vectorize(profile, [kept[i][1] for i in members], contexts[members[0]], first.ts,
                          self.offer_stats, self.offer_sets)
            for i, row in zip(members, X, strict=True):
                rows[i] = row
        for (event, offer), row in zip(kept, rows, strict=True):
            self._add_row(event, offer, row)

    def _add_row(self, event: Event, offer: Offer, row: np.ndarray) -> None:
        """Record one impression's row, its open label and its label window."""
        index = len(self.rows)
        self.rows.append(row)
        self.labels.append(0)
        self.meta.append(RowMeta(event.customer_id, offer.offer_id, event.ts,
                                 event.get("decision_id"), event.get("position"),
                                 event.get("propensity")))
        self.open_rows.setdefault((event.customer_id, offer.offer_id), []).append(index)
        heapq.heappush(self.windows, (self._window_end(offer, event.ts), index))

    def _window_end(self, offer: Offer, ts: int) -> int:
        if self.attribution_ms is not None:
            return ts + self.attribution_ms
        return offer.valid_to if offer.valid_to is not None else ts + DEFAULT_ATTRIBUTION_MS

    def _attribute(self, event: Event) -> None:
        """Label 1 the open impressions of this customer and offer the response answers.

        A response naming the ``decision_id`` of open impressions answers those only; one
        without a matching ``decision_id`` answers every open impression of the offer.
        """
        pending = self.open_rows.get((event.customer_id, event.get("offer_id")), [])
        decision = event.get("decision_id")
        matched = [i for i in pending
                   if decision is not None and self.meta[i].decision_id == decision]
        for index in matched or pending:
            self.labels[index] = 1

    def _close_windows(self, now: int) -> None:
        """Fold rows whose window ended strictly before ``now`` into the popularity stats."""
        while self.windows and self.windows[0][0] < now:
            _end, index = heapq.heappop(self.windows)
            meta = self.meta[index]
            key = (meta.customer_id, meta.offer_id)
            pending = self.open_rows[key]
            pending.remove(index)
            if not pending:
                del self.open_rows[key]
            self.offer_stats.add(meta.offer_id, self.labels[index])

    def result(self) -> ReplayResult:
        """Freeze the state into a :class:`ReplayResult`."""
        self.flush()
        if self.last_ts is not None:
            self._close_windows(self.last_ts)
        X = np.vstack(self.rows).astype(np.float32) if self.rows \
            else np.empty((0, len(FEATURE_NAMES)), dtype=np.float32)
        y = np.asarray(self.labels, dtype=np.int8)
        self.counts["rows"], self.counts["positives"] = len(self.labels), int(y.sum())
        span = None
        if self.first_ts is not None and self.last_ts is not None:
            span = (self.first_ts, self.last_ts)
        settings = {
            "assume_consent": self.assume_consent,
            "attribution": (f"{self.attribution_ms} ms" if self.attribution_ms is not None
                            else f"offer valid_to, else {DEFAULT_ATTRIBUTION_MS} ms"),
            "popularity": f"(positives + {POPULARITY_PRIOR_N} * base) / (impressions + "
                          f"{POPULARITY_PRIOR_N}) over closed label windows; base = the response "
                          f"rate of all closed windows so far (from {POPULARITY_PRIOR_RATE:g} "
                          f"worth {POPULARITY_PRIOR_N} impressions)",
            "popularity_base_rate": self.offer_stats.base_rate(),
        }
        return ReplayResult(X, y, self.meta, self.offer_stats.snapshot(), self.state.profiles,
                            self.state.consents,
                            dict(self.counts), span, list(self.invalid), settings)


def _decision_key(event: Event) -> tuple[str, Any, int] | None:
    """Impressions sharing this key, one after another in the log, are one decision's."""
    if event.type != "offer_impression" or event.get("decision_id") is None:
        return None
    return (event.customer_id, event.get("decision_id"), event.ts)


def _context(event: Event) -> Context:
    """The page context of an impression: channel, slot, and an OBD-style logged affinity."""
    channel = event.get("channel", "web")
    ctx = event.get("context")
    affinity = ctx.get("affinity") if isinstance(ctx, dict) else None
    offer_affinity: dict[str, float] = {}
    if isinstance(affinity, int | float) and not isinstance(affinity, bool) \
            and math.isfinite(affinity):
        offer_affinity[event.get("offer_id")] = float(affinity)
    position = event.get("position")
    if not isinstance(position, int) or isinstance(position, bool) or position < 0:
        position = None
    return Context(channel=channel if channel in CHANNELS else "web", offer_affinity=offer_affinity,
                   position=position)


def replay(
    events: Iterable[dict[str, Any]],
    offers: Mapping[str, Offer],
    *,
    attribution_ms: int | None = None,
    assume_consent: bool = False,
    erased: Erasures | Container[str] = (),
    processing_order: bool = False,
) -> ReplayResult:
    """Replay an event log point-in-time and return training rows, labels and final state.

    Parameters
    ----------
    events : iterable of dict
        Contract events (decoded JSON) in ``ts`` order.
    offers : mapping of str to Offer
        The catalogue; impressions of other offers give no row (counted as ``unknown_offer``).
    attribution_ms : int, optional
        Fixed attribution window after each impression; default the offer's ``valid_to``,
        else 7 days.
    assume_consent : bool
        For public data sets without consent: every customer starts with every flag but
        ``sharing`` granted (sources ``"assumed"``). Default: unknown consent, everything off.
    erased : erasure ledger or container of str
        Erasures, by the core's rule (:func:`models.customer_state.erased`): an event at or before
        its customer's erasure is skipped; with a ledger (``is_erased``) events after the erasure
        are replayed as the worker applied them, a plain set of ids skips every event of those.
    processing_order : bool
        The events are in the order a worker applied them (an event archive), not in ``ts``
        order: late events are then applied where they were applied live (so consent decides
        exactly as it did), and label windows close at the newest time seen so far.

    Returns
    -------
    ReplayResult

    Raises
    ------
    InvalidEvent
        If a valid, new event's ``ts`` is earlier than the previous one's (named by its index).
    """
    replayer = _Replayer(offers, attribution_ms, assume_consent, erased)
    replayer.processing_order = processing_order
    for index, raw in enumerate(events):
        replayer.feed(index, raw)
    return replayer.result()

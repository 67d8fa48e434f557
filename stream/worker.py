"""One worker's runtime: the app, its topology, catalogue, model and metrics, wired together."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Collection, Iterator
from typing import Any, cast

import aiohttp
import orjson
from aiohttp import web as aioweb
from aiokafka.partitioner import DefaultPartitioner

from models.archive import SEQ_FIELD, EventArchive, archive_line, purge_customer
from models.catalog import Offer
from models.consent import ConsentChange
from models.events import Event
from models.exploration import parse_exploration
from models.ledger import ErasureLedger
from models.registry import ModelRegistry
from stream.agents import register_agents
from stream.app import create_app
from stream.broker import TansuSafeTransport, kafka_metadata
from stream.catalogue import ERASURES_TOPIC, Catalogue, TopicMirror
from stream.contiguous import holes, read_contiguously
from stream.durable import wait_acknowledged
from stream.http import FORWARDED_HEADER, Unavailable
from stream.ingest_state import LiveState
from stream.metrics import Metrics
from stream.model_holder import ModelHolder
from stream.settings import Settings
from stream.topology import declare
from stream.views import register_views

__all__ = ["Runtime"]

log = logging.getLogger("offerstream.worker")
FORWARD_HEADERS = ("authorization", "content-type", "sec-gpc")
FORWARD_TIMEOUT = aiohttp.ClientTimeout(total=10)
PARTITION_CACHE = 1_000_000  # customers whose events partition is remembered
PRODUCER_BUFFER_MESSAGES = 250_000  # ~ a flush of every cached customer (MAX_CACHED) and more


class Runtime:
    """Everything one worker runs; agents and views receive it instead of globals."""

    def __init__(self, settings: Settings) -> None:
        if settings.broker is None:
            raise ValueError("Runtime needs a broker URL")
        self.settings = settings
        self.app = create_app(settings)
        # Recovery reads changelog end offsets; the bundled broker can report them one short.
        # This transport takes the larger of ListOffsets and the Fetch high watermark, which
        # leaves a correct broker's answer unchanged (BROKER-NOTES, tests/integration).
        self.app.transport = TansuSafeTransport(self.app.conf.broker_consumer, self.app)
        # The bundled broker can hand a consumer a record batch before an earlier one of the same
        # partition is readable; every consumer of this process reads the hole again instead of
        # skipping it (stream/contiguous.py; it lost acknowledged events: issue 18).
        read_contiguously()
        self.topology = declare(self.app, settings)
        bootstrap = settings.broker.removeprefix("kafka://")
        self.catalogue = Catalogue(bootstrap, snapshot=settings.data_dir / "catalogue.jsonl")
        self.archive = EventArchive(settings.archive_dir, writer=str(settings.port))
        self.ledger = ErasureLedger(settings.data_dir / "erasure-ledger.jsonl", settings.hash_key)
        self.erasures = TopicMirror(bootstrap, ERASURES_TOPIC, self._apply_erasure)
        self.model = ModelHolder(ModelRegistry(settings.registry_dir))
        self.metrics = Metrics()
        self.exploration = parse_exploration(settings.exploration)
        self._partitioner = DefaultPartitioner()
        self._partitions = list(range(settings.partitions))
        self._partition_of: dict[str, int] = {}
        self._owned: frozenset[int] = frozenset()
        self._owned_for: object = None  # the client's assignment set that ``_owned`` was read from
        self.started_at = time.time()
        self._seq = 0
        self.broker_ok_at: float | None = None  # monotonic time of the last answered probe
        self.restore_target: dict[int, int] = {}  # events partition -> offset restore must reach
        self.processed: dict[int, int] = {}  # events partition -> next offset to process
        # Write-behind profiles of the ingest agent; every read and erase goes through it.
        self.live = LiveState(self.topology, self.writes_acknowledged, self.sync_archive,
                              partition_of=self.events_partition,
                              kafka_producer=lambda: cast(Any, self.app.producer)._ensure_producer())
        # faust holds back *every* incoming message while its producer buffer has more than
        # ``max_messages`` (100) entries, until 100 of them are sent one per loop turn; a flush of
        # ~1,000 changelog messages therefore stalled ingestion for up to ~0.4 s (the freshness
        # tail; measured by flushing every 30 s instead: p99 24 ms). The flush bounds the buffer
        # itself (it waits for the producer before the next one), so the stall is lifted here.
        self.app.producer.buffer.max_messages = PRODUCER_BUFFER_MESSAGES
        register_agents(self)
        register_views(self)
        self._register_tasks()

    # ---- placement -------------------------------------------------------------------------
    def events_partition(self, customer_id: str) -> int:
        """The partition that owns a customer: Kafka's default partitioner on the UTF-8 id."""
        partition = self._partition_of.get(customer_id)
        if partition is None:  # murmur2 in Python costs ~3 us; a customer's answer never changes
            if len(self._partition_of) >= PARTITION_CACHE:
                self._partition_of.clear()
            partition = self._partition_of[customer_id] = int(
                self._partitioner(customer_id.encode(), self._partitions, self._partitions))
        return partition

    def owns(self, customer_id: str) -> bool:
        """True if this worker actively owns the customer's partition now."""
        return self.events_partition(customer_id) in self.owned_partitions()

    def owned_partitions(self) -> frozenset[int]:
        """The ``events`` partitions assigned to this worker now, recomputed per assignment.

        faust's ``consumer.assignment()`` builds a new set of ``TP`` tuples from every assigned
        partition on each call (~10 % of the score view under cProfile). The Kafka client keeps
        one immutable set per group assignment and replaces it on every rebalance, so the answer
        is cached against that very object: a new assignment is a new object and is read at
        once, with no window in which a stale answer could route a request.
        """
        current = self._client_assignment()
        if current is not self._owned_for:
            self._owned = frozenset(tp.partition for tp in current if tp.topic == "events")
            self._owned_for = current
        return self._owned

    def _client_assignment(self) -> Collection[Any]:
        """aiokafka's own assignment set (the same object until the group reassigns)."""
        consumer = getattr(getattr(self.app.consumer, "_thread", None), "_consumer", None)
        if consumer is None:  # not started, or another driver: faust's copy, recomputed per call
            return self.app.consumer.assignment()
        return cast(Collection[Any], consumer.assignment())

    def owner_url(self, customer_id: str) -> str:
        """Base URL of the worker that owns ``customer_id`` (503 if nobody is known to)."""
        if self.owns(customer_id):
            return self.settings.url
        changelog = self.topology.consent.changelog_topic.get_topic_name()
        partition = self.events_partition(customer_id)
        for host, topics in self.app.router.table_metadata("consent").items():
            if partition in topics.get(changelog, ()):
                return str(host).rstrip("/")
        raise Unavailable("the owner of this customer is not known yet (group rebalancing)")

    async def forward_if_remote(self, request: aioweb.Request, customer_id: str) -> aioweb.Response | None:
        """Relay the request to the owning worker, or return ``None`` to handle it here.

        Handling it here requires this worker's state to be complete (503 otherwise).
        """
        if request.headers.get(FORWARDED_HEADER):
            if not self.owns(customer_id):
                raise Unavailable("ownership of this customer is moving between workers")
            self.require_ready()
            return None
        owner = self.owner_url(customer_id)
        if owner == self.settings.url:
            self.require_ready()
            return None
        headers = {k: v for k, v in request.headers.items() if k.lower() in FORWARD_HEADERS}
        headers[FORWARDED_HEADER] = "1"
        self.metrics.inc("requests_forwarded_total")
        try:
            async with self.app.http_client.request(
                request.method, owner + request.path_qs, data=await request.read(),
                headers=headers, timeout=FORWARD_TIMEOUT,
            ) as response:
                body = await response.read()
                extra = {"Retry-After": response.headers["Retry-After"]} if "Retry-After" in response.headers else None
                return aioweb.Response(body=body, status=response.status, headers=extra,
                                       content_type=response.content_type)
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise Unavailable(f"the owning worker did not answer ({type(exc).__name__})") from None

    # ---- readiness -------------------------------------------------------------------------
    def recovered(self) -> bool:
        """True once table recovery has completed and none is running."""
        recovery = cast(Any, self.app.tables).recovery  # TableManager's, not in faust's stub
        return (recovery.completed.is_set() and not self.app.in_recovery and not self.app.rebalancing
                and recovery.active_remaining_total() == 0)

    def broker_reachable(self) -> bool:
        """True if the broker answered a metadata probe within the last three session timeouts."""
        limit = 3 * self.app.conf.broker_session_timeout
        return self.broker_ok_at is not None and time.monotonic() - self.broker_ok_at < limit

    def probe_broker(self) -> None:
        """Ask the first bootstrap broker for metadata (blocking; run it in an executor)."""
        host, _, port = (self.settings.broker or "").removeprefix("kafka://").split(",")[0].rpartition(":")
        try:
            kafka_metadata(host, int(port), timeout=1.0)
        except (OSError, ValueError) as exc:  # the broker did not answer, or not as Kafka would
            log.info("broker probe failed: %s", exc)
            return
        self.broker_ok_at = time.monotonic()

    def require_ready(self) -> None:
        """Refuse with 503 while this worker's state is not complete."""
        if not self.recovered():
            raise Unavailable("this worker is recovering its state")

    def health(self) -> dict[str, Any]:
        """Readiness as it really is."""
        restored = all(self.processed.get(p, 0) >= end for p, end in self.restore_target.items())
        reachable = self.broker_reachable()
        ready = (self.recovered() and self.catalogue.ready.is_set() and self.erasures.ready.is_set()
                 and restored and reachable)
        return {
            "broker_reachable": reachable,
            "archive_restored": restored,
            "ready": ready, "recovered": self.recovered(), "catalogue_loaded": self.catalogue.ready.is_set(),
            "erasure_ledger_loaded": self.erasures.ready.is_set(),
            "offers": len(self.catalogue.offers), "model_version": self.model.scorer.version,
            "model_loaded": self.model.loaded, "model_error": self.model.last_error,
            "assigned_partitions": sorted(tp.partition for tp in self.app.consumer.assignment()
                                          if tp.topic == "events"),
            "open_access": self.settings.api_key is None,
        }

    def consumer_lag(self) -> dict[int, int]:
        """Events not yet processed per assigned partition (from the Fetch high watermarks)."""
        lag = {}
        for tp in self.app.consumer.assignment():
            if tp.topic == "events":
                high = self.app.consumer.highwater(tp)
                if high is not None:
                    lag[tp.partition] = max(0, high - self.processed.get(tp.partition, 0))
        return lag

    def render_metrics(self) -> str:
        """Prometheus text for ``/metrics``."""
        for partition, lag in self.consumer_lag().items():
            self.metrics.gauges[f'consumer_lag{{partition="{partition}"}}'] = lag
        self.metrics.gauges["erasures"] = len(self.ledger.entries())
        self.metrics.gauges["offers"] = len(self.catalogue.offers)
        # offset holes the bundled broker showed a consumer of this worker (read again), and
        # those that never filled (passed over: logged as errors)
        self.metrics.gauges["offset_holes_seen"] = holes["seen"]
        self.metrics.gauges["offset_holes_passed_over"] = holes["passed_over"]
        self.metrics.gauges["ready"] = int(self.health()["ready"])
        self.metrics.info["model_version"] = self.model.scorer.version
        return self.metrics.render()

    # ---- writes ----------------------------------------------------------------------------
    async def publish_events(self, events: list[Event]) -> None:
        """Produce events to ``events`` keyed by customer id and wait until the broker has them."""
        futures = [await self.topology.events.send(key=e.customer_id, value=orjson.dumps(e.data))
                   for e in events]
        await asyncio.gather(*futures)

    async def publish_offer(self, offer: Offer) -> None:
        """Write an offer to the ``offers`` topic and wait until this worker's catalogue has it."""
        future = await self.topology.offers.send(key=offer.offer_id, value=orjson.dumps(offer.to_dict()))
        metadata = await future
        await self.catalogue.wait_applied(metadata.partition, metadata.offset)

    async def changelogs_acknowledged(self) -> None:
        """Wait until the broker has acknowledged every table write made so far.

        faust's producer flush hands buffered records to the Kafka client but is no barrier (it
        can return with records still buffered: ``stream/durable.py``), so after it the tables'
        own records are waited for one by one. Raises ``ChangelogNotAcknowledged``.
        """
        await self.app.producer.flush()
        await wait_acknowledged((self.topology.profiles, self.topology.consent))

    async def writes_acknowledged(self) -> None:
        """Wait until the broker has acknowledged every record ingest has produced so far.

        That is every table write (:meth:`changelogs_acknowledged`) and every record sent on
        behalf of an input message (re-routed events, dead letters): the write-behind flush
        acknowledges input messages only after this returns. Raises ``ChangelogNotAcknowledged``.
        """
        await self.app.producer.flush()
        await wait_acknowledged((self.topology.profiles, self.topology.consent, self.topology.outputs))

    async def erase(self, customer_id: str) -> dict[str, Any]:
        """Delete everything stored about a customer, everywhere, and say what was removed.

        Order matters: the ledger entry is durable first, so nothing applied after this call
        (a replay, a late event) can bring the customer back; then the tables and their
        changelogs (tombstones), then the local archive.
        """
        erased_at = int(time.time() * 1000)
        digest = self.ledger.add(customer_id, erased_at)
        sent = await self.topology.erasures.send(key=digest, value=orjson.dumps({"erased_at": erased_at}))
        removed_profile = self.live.erase_profile(customer_id)
        removed_consent = self.topology.erase_consent(customer_id)
        self.live.consent_changed(customer_id)
        await self.changelogs_acknowledged()  # the tombstones
        await sent
        self.archive.close()  # the rewritten files must be reopened, not written through old handles
        removed_events = purge_customer(self.settings.archive_dir, customer_id)
        return {
            "customer_id": customer_id, "erased_at": erased_at, "ledger_hash": digest,
            "stores": [
                {"store": "profiles", "removed": removed_profile, "changelog_tombstone": removed_profile},
                {"store": "consent", "removed": removed_consent, "changelog_tombstone": removed_consent},
                {"store": "event_archive", "removed_events": removed_events},
                {"store": "erasure_ledger", "added": True, "replicated_to": ERASURES_TOPIC},
            ],
        }

    def _apply_erasure(self, key: bytes | None, value: bytes | None) -> None:
        if key is None or not value:
            return
        try:
            erased_at = int(orjson.loads(value)["erased_at"])
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            log.warning("malformed record on topic %s ignored", ERASURES_TOPIC)
            return
        self.ledger.add_hash(key.decode(), erased_at)

    def archive_events(self, events: list[Event], raw: bytes | None = None) -> None:
        """Append applied events to the local archive (fsync'd before their messages are acked).

        ``raw``: the message bytes when they hold exactly ``events[0]`` as one JSON object; the
        processing-order field is then spliced in front instead of serializing the event again.
        """
        self.archive.append(self._archive_lines(events, raw))

    def _archive_lines(self, events: list[Event], raw: bytes | None) -> Iterator[tuple[int, bytes]]:
        if raw is not None and len(events) == 1:
            yield events[0].ts, archive_line(events[0].data, self._next_seq(), raw)
            return
        for e in events:
            yield e.ts, archive_line(e.data, self._next_seq())

    async def sync_archive(self) -> None:
        """fsync the archive in a worker thread: a slow disk must not stall ingest and scoring."""
        await asyncio.get_running_loop().run_in_executor(None, self.archive.flush, True)

    def _next_seq(self) -> int:
        self._seq = max(self._seq + 1, time.time_ns() // 1000)
        return self._seq

    def archive_consent_call(self, customer_id: str, change: ConsentChange, ts: int) -> None:
        """Record a consent call's effect as a ``consent`` event, so replays reproduce it."""
        flags = {flag: True for flag in change.granted} | {flag: False for flag in change.revoked}
        if not flags:
            return
        event = {"event_id": f"api-consent-{uuid.uuid4().hex}", "type": "consent",
                 "customer_id": customer_id, "ts": ts, "consent": {"flags": flags},
                 "source": "api", "tc_hash": change.state.tc_hash, SEQ_FIELD: self._next_seq()}
        self.archive.append([(ts, orjson.dumps(event))])
        self.archive.flush(fsync=True)

    def record_dead_letter(self, record: dict[str, Any]) -> None:
        """Keep a dead letter on local disk too (the bundled broker forgets on restart)."""
        path = self.settings.data_dir / "dead-letter.jsonl"
        with open(path, "ab") as handle:
            handle.write(orjson.dumps(record) + b"\n")

    # ---- background tasks ------------------------------------------------------------------
    def _register_tasks(self) -> None:
        app = self.app

        @app.task
        async def start_mirrors() -> None:
            for topic in (self.topology.offers, self.topology.decisions, self.topology.dead_letter,
                          self.topology.erasures):
                await topic.maybe_declare()
            await asyncio.gather(self.catalogue.run(), self.erasures.run())

        @app.timer(1.0)
        async def flush_archive() -> None:
            await self.sync_archive()

        @app.timer(1.0)
        async def probe_broker() -> None:
            await asyncio.get_running_loop().run_in_executor(None, self.probe_broker)

        @app.timer(self.settings.model_poll_s)
        async def poll_model() -> None:
            await asyncio.get_running_loop().run_in_executor(None, self.model.refresh)

        self.model.refresh()
        self.probe_broker()

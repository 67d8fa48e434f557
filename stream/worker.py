"""One worker, wired in one place: every collaborator is built here and handed what it needs.

Nothing else constructs the worker's parts, and no part receives the whole worker: the agent gets
an :class:`~stream.agents.Ingest`, each HTTP area its own handler object (``stream/handlers``),
all mounted from the one route table (``stream/routes.py``).

=================  ==========================================================================
collaborator       its one job
=================  ==========================================================================
``readiness``      may this worker answer (recovery, broker, catalogue, ledger, restore)
``placement``      which partition and worker own a customer; forwarding to the owner
``live``           the ingest agent's write-behind customer state
``customers``      consent changes, access reports, erasure, event intake
``local_log``      the event archive and dead letters on local disk
``catalogue``      every offer, read from the ``offers`` topic
``model``          the current scorer, hot-reloaded from the registry
=================  ==========================================================================
"""

from __future__ import annotations

import asyncio
import functools
import logging
from pathlib import Path
from typing import Any, cast

from aiohttp import web as aioweb

from models.exploration import parse_exploration
from models.ledger import ErasureLedger
from models.registry import ModelRegistry
from stream.agents import Ingest, register_agents
from stream.app import create_app
from stream.audit import AuditLog, RecordBatchSender
from stream.brokers import BrokerProfile, bootstrap_servers
from stream.catalogue import Catalogue, TopicMirror
from stream.contiguous import holes, read_contiguously
from stream.customers import Customers, apply_erasure_record
from stream.embedded.transport import TansuSafeTransport
from stream.events_reader import EventsReader, OffloadingTransport
from stream.experiments import Experiments
from stream.gc_tuning import freeze_when_ready
from stream.handlers.customers import CustomersApi
from stream.handlers.events import EventsApi
from stream.handlers.experiments import ExperimentsApi
from stream.handlers.offers import OffersApi
from stream.handlers.ops import OpsApi
from stream.handlers.score import ScoreApi
from stream.http import Cors
from stream.ingest_state import LiveState
from stream.local_log import LocalLog
from stream.metrics import Metrics
from stream.model_holder import ModelHolder
from stream.placement import Placement
from stream.readiness import Readiness
from stream.routes import mount, route_table
from stream.settings import Settings
from stream.topics import ERASURES_TOPIC, EVENTS_TOPIC
from stream.topology import declare

__all__ = ["Worker", "listen_shared"]

log = logging.getLogger("offerstream.worker")

PRODUCER_BUFFER_MESSAGES = 250_000  # ~ a flush of every cached customer (MAX_CACHED) and more


class Worker:
    """Everything one worker runs, built from its settings.

    Parameters
    ----------
    settings : Settings
        With a broker URL (the CLI starts the bundled broker first when none is given).
    static_dir : Path, optional
        The demo page and its assets, served at ``/demo``.
    """

    def __init__(self, settings: Settings, profile: BrokerProfile, static_dir: Path | None = None) -> None:
        if settings.broker is None:
            raise ValueError("a worker needs a broker URL")
        self.settings, self.profile = settings, profile
        self.app = app = create_app(settings, profile)
        if profile.tansu_workarounds:
            # Recovery reads changelog end offsets; the bundled broker can report them one short.
            # This transport takes the larger of ListOffsets and the Fetch high watermark, and
            # waits 20 ms instead of 1.5 s for fetches (BROKER-NOTES, tests/integration).
            app.transport = TansuSafeTransport(app.conf.broker_consumer, app)
        else:
            app.transport = OffloadingTransport(app.conf.broker_consumer, app)
            # The bundled broker can hand a consumer a record batch before an earlier one of the
            # same partition is readable; every consumer of this process reads the hole again
            # instead of skipping it (stream/contiguous.py; it lost acknowledged events: issue 18).
            read_contiguously()
        self.topology = topology = declare(app, settings)
        bootstrap = ",".join(f"{host}:{port}" for host, port in bootstrap_servers(settings.broker))
        self.metrics = Metrics()
        self.catalogue = Catalogue(bootstrap, snapshot=settings.data_dir / "catalogue.jsonl")
        self.ledger = ErasureLedger(settings.data_dir / "erasure-ledger.jsonl", settings.hash_key)
        self.erasures = TopicMirror(bootstrap, ERASURES_TOPIC, functools.partial(apply_erasure_record, self.ledger))
        self.model = ModelHolder(ModelRegistry(settings.registry_dir))
        self.experiments = Experiments(topology.experiments, bootstrap, self.model.registry,
                                       snapshot=settings.data_dir / "experiments.jsonl")
        self.local_log = LocalLog(settings.archive_dir, settings.data_dir / "dead-letter.jsonl", str(settings.port))
        self.readiness = Readiness(app, settings.broker, self.catalogue, self.erasures, self.model,
                                   open_access=settings.api_key is None)
        self.readiness.experiments = self.experiments.book
        self.placement = Placement(app, settings.url, settings.partitions, self.readiness, self.metrics)
        producer: Any = app.producer
        # Write-behind profiles of the ingest agent; every read and erase goes through it.
        self.live = LiveState(topology, functools.partial(topology.writes_acknowledged, producer),
                              self.local_log.sync, partition_of=self.placement.events_partition,
                              kafka_producer=lambda: producer._ensure_producer())
        self.customers = Customers(topology, self.live, self.ledger, self.local_log, producer)
        # faust holds back *every* incoming message while its producer buffer has more than
        # ``max_messages`` (100) entries, until 100 of them are sent one per loop turn; a flush of
        # ~1,000 changelog messages therefore stalled ingestion for up to ~0.4 s (the freshness
        # tail; measured by flushing every 30 s instead: p99 24 ms). The flush bounds the buffer
        # itself (it waits for the producer before the next one), so the stall is lifted here.
        producer.buffer.max_messages = PRODUCER_BUFFER_MESSAGES
        # The owned events partitions are read in batches from the committed offsets, each offset
        # once and in order, instead of being handed over by faust one message at a time (faust's
        # per-message cost, and the messages it can drop around a rebalance: issues 17 and 18).
        self.events_reader = EventsReader(cast(Any, app.consumer).offloaded_readable, bootstrap, EVENTS_TOPIC,
                                          app.conf.id, holes_are_real=not profile.tansu_workarounds)
        self.readiness.reading_from = lambda: self.events_reader.position
        register_agents(app, Ingest(topology, self.live, self.ledger, self.placement.events_partition,
                                    self.local_log, self.metrics, self.readiness.processed,
                                    tcf_basis=settings.tcf_basis),
                        self.events_reader)
        self._mount_routes(static_dir)
        self._register_tasks()

    def _mount_routes(self, static_dir: Path | None) -> None:
        app, settings = self.app, self.settings
        changelog = self.topology.consent.changelog_topic.get_topic_name()
        # faust's own aiokafka producer, so the audit batches are flushed and stopped with the app
        producer: Any = app.producer
        audit = AuditLog(RecordBatchSender(lambda: producer._ensure_producer(),
                                           self.topology.decisions.get_topic_name()))

        @app.on_before_shutdown.connect  # type: ignore[arg-type]  # faust's stubs want a sync receiver
        async def flush_audit(sender: Any, **kwargs: Any) -> None:
            await audit.flush()  # before the app flushes and stops its producer

        freeze_when_ready(app, lambda: self.readiness.recovered() and self.catalogue.ready.is_set())
        score = ScoreApi(placement=self.placement, live=self.live, catalogue=self.catalogue, model=self.model,
                         exploration=parse_exploration(settings.exploration), audit=audit, metrics=self.metrics,
                         score_key=settings.score_key, hash_key=settings.hash_key, changelog=changelog,
                         tcf_basis=settings.tcf_basis, token_key=settings.token_key)
        routes = route_table(
            EventsApi(self.customers, self.metrics, settings.api_key, settings.token_key), score,
            CustomersApi(self.customers, self.placement, settings.api_key, changelog, settings.tcf_basis),
            OffersApi(self.topology.offers, self.catalogue, settings.api_key),
            OpsApi(self.readiness, self.render_metrics, settings.url, static_dir),
            ExperimentsApi(self.experiments.topic, self.experiments.book, self.experiments.live,
                           self.model.registry, self.ledger.entries, settings.api_key))
        score.experiments, score.versions = self.experiments.book, self.experiments.versions
        mount(cast(Any, app.web).web_app, routes, static_dir, Cors(settings.cors_origins))

    def render_metrics(self) -> str:
        """Prometheus text for ``/metrics``."""
        gauges = self.metrics.gauges
        for partition, lag in self.readiness.consumer_lag().items():
            gauges[f'consumer_lag{{partition="{partition}"}}'] = lag
        gauges["erasures"] = len(self.ledger.entries())
        gauges["offers"] = len(self.catalogue.offers)
        self.experiments.gauges(gauges, self.ledger.entries())
        # offset holes the bundled broker showed a consumer of this worker (read again), and
        # those that never filled (passed over: logged as errors)
        gauges["offset_holes_seen"] = holes["seen"]
        gauges["offset_holes_passed_over"] = holes["passed_over"]
        gauges["events_reader_batches"] = self.events_reader.batches
        gauges["events_reader_batches_dropped"] = self.events_reader.dropped
        gauges["events_reader_holes_read_again"] = self.events_reader.holes_seen
        gauges["ready"] = int(self.readiness.health()["ready"])
        self.metrics.info["model_version"] = self.model.scorer.version
        return self.metrics.render()

    def _register_tasks(self) -> None:
        app, topology, readiness = self.app, self.topology, self.readiness

        @app.task
        async def start_mirrors() -> None:
            for topic in (topology.offers, topology.decisions, topology.dead_letter, topology.erasures):
                await topic.maybe_declare()
            await asyncio.gather(self.catalogue.run(), self.erasures.run(), self.experiments.run())

        @app.timer(1.0)
        async def flush_archive() -> None:
            await self.local_log.sync()

        @app.on_before_shutdown.connect  # type: ignore[arg-type]  # faust's stubs want a sync receiver
        async def write_archive(sender: Any, **kwargs: Any) -> None:
            # The archive holds every applied event; on the embedded default it is all that
            # survives a stop (the broker keeps nothing), so what was applied since the last
            # flush is written before the process exits.
            await self.local_log.sync()

        @app.timer(1.0)
        async def probe_broker() -> None:
            await asyncio.get_running_loop().run_in_executor(None, readiness.probe_broker)

        @app.timer(self.settings.model_poll_s)
        async def poll_model() -> None:
            await asyncio.get_running_loop().run_in_executor(None, self.model.refresh)

        shared_port = self.settings.shared_port
        if shared_port is not None:
            @app.task
            async def listen_on_shared_port() -> None:
                await listen_shared(app, self.settings.host, shared_port)

        self.model.refresh()
        readiness.probe_broker()


async def listen_shared(app: Any, host: str, port: int) -> None:
    """Serve the worker's HTTP API on ``port`` too, with ``SO_REUSEPORT``: every worker process of
    the host binds it, and the kernel spreads new connections over them (``serve --processes``).
    faust's own site stays on the worker's private port, the one other workers forward to."""
    runner = cast(Any, app.web)._runner
    while runner.server is None:  # faust sets the runner up when its web server starts
        await asyncio.sleep(0.05)
    await aioweb.TCPSite(runner, host, port, reuse_port=True).start()
    log.info("also listening on the shared port %s:%d", host, port)

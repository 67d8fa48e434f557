"""The faust App and its configuration, nothing else.

Settings that depend on the broker kind come from :class:`stream.brokers.BrokerProfile`: on the
bundled broker a 2 s session timeout and 0.5 s heartbeat make a worker ready in ~3 s instead of
~30 s (shared BROKER-NOTES); Apache Kafka refuses sessions under 6 s by default, so there it is
10 s. Exactly-once cannot start on the bundled broker and has open bugs in faust, so the app runs
at-least-once everywhere and every state update is idempotent (event ids, stored offsets).
"""

from __future__ import annotations

import logging
from typing import Any

import faust

from stream import store as _store  # noqa: F401 - registers the offerstream-rocksdb:// scheme
from stream.brokers import BrokerProfile, faust_credentials, use_client_security
from stream.settings import Settings

__all__ = ["create_app", "quiet_logging"]

NOISY_LOGGERS = ("faust", "mode", "aiokafka", "kafka", "aiohttp.access", "rocksdict")


def quiet_logging(level: str) -> None:
    """faust keeps its loggers at DEBUG whatever ``-l`` says; set them ourselves (+45% speed)."""
    numeric = getattr(logging, level.upper(), logging.WARNING)
    logging.basicConfig(level=numeric, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(max(numeric, logging.WARNING))
    logging.getLogger().setLevel(numeric)


def create_app(settings: Settings, profile: BrokerProfile) -> faust.App:
    """Build the faust App for one worker, with the session and replication of its broker kind."""
    if settings.broker is None:
        raise ValueError("create_app needs a broker URL; the CLI starts the bundled one first")
    # TLS/SASL (OFFERSTREAM_BROKER_*): faust's clients get them as broker_credentials, and every
    # other client of this process (mirrors, admin, probes) as the default of stream.embedded.kafka_wire.
    security = use_client_security(settings)
    credentials = faust_credentials(security)
    settings.table_dir.mkdir(parents=True, exist_ok=True)
    extra: dict[str, Any] = {} if credentials is None else {"broker_credentials": credentials}
    return faust.App(
        settings.app_id,
        broker=settings.broker,
        store=settings.store,
        datadir=str(settings.table_dir),
        web_host=settings.host,
        web_port=settings.port,
        web_bind=settings.host,
        canonical_url=settings.url,
        web_application_options={"client_max_size": 4 * 1024 * 1024},
        topic_partitions=settings.partitions,
        topic_replication_factor=profile.replication,
        topic_allow_declare=True,
        processing_guarantee="at_least_once",
        consumer_auto_offset_reset="earliest",
        broker_session_timeout=profile.session_timeout_s,
        broker_heartbeat_interval=profile.heartbeat_s,
        broker_commit_every=1000,
        broker_commit_interval=1.0,
        table_standby_replicas=1,
        web_enabled=True,
        autodiscover=False,
        producer_acks=-1,
        # A flush sends thousands of changelog messages at once: 16 KiB batches (the default)
        # meant a produce request per ~12 profiles, and the socket writes were ~15% of the worker.
        producer_max_batch_size=256 * 1024,
        producer_linger=0.002,
        **extra,
    )

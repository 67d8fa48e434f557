"""Whether a worker may answer: recovery, the broker, the catalogue and ledger, restore and lag.

``/health`` reports :meth:`Readiness.health`; views that answer from local state call
:meth:`Readiness.require_ready` first, so nothing is answered from tables still recovering.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, cast

from stream.brokers import bootstrap_servers
from stream.embedded.kafka_wire import kafka_metadata
from stream.http import Unavailable
from stream.topics import EVENTS_TOPIC

__all__ = ["Readiness"]

log = logging.getLogger("offerstream.worker")


class Readiness:
    """Readiness of one worker, as it really is.

    Parameters
    ----------
    app : faust.App
        The worker's app (table recovery, rebalancing, consumer assignment and high watermarks).
    broker : str
        The ``--broker`` list; the first address is probed.
    catalogue, erasures : objects with a ``ready`` event
        The offer catalogue and the erasure ledger mirror: both must be loaded.
    model : stream.model_holder.ModelHolder
        Reported (a worker without a model still answers, non-personalized).
    open_access : bool
        True when no API key is configured (reported, never the key).
    """

    def __init__(self, app: Any, broker: str, catalogue: Any, erasures: Any, model: Any, *,
                 open_access: bool) -> None:
        self.app, self.broker = app, broker
        self.catalogue, self.erasures, self.model = catalogue, erasures, model
        self.open_access = open_access
        self.experiments: Any = None  # an object with a ``ready`` event (the experiment book), or None
        self.broker_ok_at: float | None = None  # monotonic time of the last answered probe
        self.restore_target: dict[int, int] = {}  # events partition -> offset restore must reach
        self.processed: dict[int, int] = {}  # events partition -> next offset to process
        # events partition -> offset the events reader started from (an owned partition that has
        # nothing new since its committed offset has processed nothing yet)
        self.reading_from: Callable[[], dict[int, int]] = dict

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
        """Ask the bootstrap brokers for metadata until one answers (blocking; run it in an executor).

        Any of them will do: with one broker of a cluster down, the others still serve.
        """
        for host, port in bootstrap_servers(self.broker):
            try:
                kafka_metadata(host, port, timeout=1.0)
            except (OSError, ValueError) as exc:  # the broker did not answer, or not as Kafka would
                log.info("broker probe of %s:%d failed: %s", host, port, exc)
                continue
            self.broker_ok_at = time.monotonic()
            return

    def require_ready(self) -> None:
        """Refuse with 503 while this worker's state is not complete."""
        if not self.recovered():
            raise Unavailable("this worker is recovering its state")

    def health(self) -> dict[str, Any]:
        """Readiness as it really is (the body of ``/health``)."""
        owned = sorted(tp.partition for tp in self.app.consumer.assignment() if tp.topic == EVENTS_TOPIC)
        restored = self.archive_restored(owned)
        reachable = self.broker_reachable()
        recovered = self.recovered()
        experiments = self.experiments is None or self.experiments.ready.is_set()
        ready = (recovered and self.catalogue.ready.is_set() and self.erasures.ready.is_set()
                 and restored and reachable and experiments)
        return {
            "broker_reachable": reachable,
            "archive_restored": restored,
            "ready": ready, "recovered": recovered, "catalogue_loaded": self.catalogue.ready.is_set(),
            "erasure_ledger_loaded": self.erasures.ready.is_set(), "experiments_loaded": experiments,
            "offers": len(self.catalogue.offers), "model_version": self.model.scorer.version,
            "model_loaded": self.model.loaded, "model_error": self.model.last_error,
            "assigned_partitions": owned,
            "open_access": self.open_access,
        }

    def archive_restored(self, owned: list[int]) -> bool:
        """True once every owned partition is processed up to the restored archive's end.

        Only the owned ones: the worker processes of one host (``serve --processes``) each own
        some partitions of the archive the host restored.
        """
        started = self.reading_from()
        return all(max(self.processed.get(p, 0), started.get(p, 0)) >= self.restore_target[p]
                   for p in owned if p in self.restore_target)

    def consumer_lag(self) -> dict[int, int]:
        """Events not yet processed per assigned partition (from the Fetch high watermarks)."""
        lag = {}
        for tp in self.app.consumer.assignment():
            if tp.topic == EVENTS_TOPIC:
                high = self.app.consumer.highwater(tp)
                if high is not None:
                    lag[tp.partition] = max(0, high - self.processed.get(tp.partition, 0))
        return lag

"""Records waited for until the broker has acknowledged them: changelogs, and what ingest sends.

faust's ``Producer.flush()`` is not a durability barrier. Its buffer drain (``flush_atmost``)
gives up as soon as one wait of 0.1 s for the next message to be handed to the Kafka client
times out, with messages still in the buffer; and a message already taken off the buffer but
not yet in the client's accumulator is in neither the buffer nor the client's flush. Work
acknowledged after such a flush (an event's offset, a consent change answered with 200) could be
lost with a crash while its changelog record was still in memory.

The tables here remember each changelog record they hand to faust's producer until faust
resolves its ``FutureMessage``, which happens with the broker's answer (``acks=-1``).
:func:`wait_acknowledged` waits for exactly the records written so far. A record the broker
refused stays refused: every later wait raises :class:`ChangelogNotAcknowledged`, so nothing is
acknowledged on top of a changelog that lacks a write; a restart recovers from the changelog and
the unacknowledged input is delivered again.

The same holds for the other records the ingest agent produces while it handles a message: an
event re-routed to the partition that owns its customer, and a dead letter. They go through
:class:`TrackedSends`, and the flush that acknowledges the message waits for them as well, so an
input message is never committed while a record that carries its effect could still be lost.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Any

import faust

__all__ = ["ChangelogNotAcknowledged", "TrackedSends", "TrackedTable", "tracked_table", "wait_acknowledged",
           "DEFAULT_TIMEOUT_S"]

log = logging.getLogger("offerstream.durable")

#: How long a wait may take before it fails (the Kafka client retries sends for up to its own
#: delivery timeout; this is the bound on top of that).
DEFAULT_TIMEOUT_S = 60.0


class ChangelogNotAcknowledged(RuntimeError):
    """A changelog record was refused by the broker, or not acknowledged in time."""


class _Tracking:
    """Futures of records handed to the producer, kept until the broker answers each one."""

    name: str
    unacknowledged: set[asyncio.Future]
    refused: list[str]

    def _start_tracking(self) -> None:
        self.unacknowledged = set()
        self.refused = []

    def track(self, future: asyncio.Future) -> None:
        """Remember ``future`` (a record's ``FutureMessage``) until it is resolved."""
        self.unacknowledged.add(future)
        future.add_done_callback(self._resolved)

    def _resolved(self, future: asyncio.Future) -> None:
        self.unacknowledged.discard(future)
        if future.cancelled():
            self.refused.append(f"{self.name}: send cancelled")
        elif future.exception() is not None:
            self.refused.append(f"{self.name}: {future.exception()!r}")
            log.error("record of %s refused: %r", self.name, future.exception())


class TrackedTable(_Tracking, faust.Table):  # type: ignore[misc]  # faust's Table is untyped
    """A faust table that keeps its changelog records until the broker acknowledges them.

    Every table write (``table[key] = value``, ``del table[key]``) and every direct
    ``send_changelog`` call goes through :meth:`send_changelog`.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._start_tracking()

    def send_changelog(self, *args: Any, **kwargs: Any) -> Any:
        """Send a changelog record as faust does, and remember it until it is acknowledged."""
        future = super().send_changelog(*args, **kwargs)
        self.track(future)
        return future


class TrackedSends(_Tracking):
    """Records sent to topics on behalf of input messages, kept until the broker acknowledges them.

    Parameters
    ----------
    name : str
        What the records are, for error messages (e.g. ``"ingest outputs"``).
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self._start_tracking()

    async def send(self, topic: Any, *, key: Any, value: bytes) -> Any:
        """Send through faust's ``topic.send`` and remember the record until it is acknowledged."""
        future = await topic.send(key=key, value=value)
        self.track(future)
        return future


def tracked_table(app: faust.App, name: str, **kwargs: Any) -> TrackedTable:
    """Declare a :class:`TrackedTable` on ``app`` as ``app.Table(name, **kwargs)`` declares a table."""
    table = TrackedTable(app, name=name, beacon=app.tables.beacon, **kwargs)
    app.tables.add(table)
    return table


async def wait_acknowledged(tables: Iterable[Any], timeout: float = DEFAULT_TIMEOUT_S) -> int:
    """Wait until every record the ``tables`` (or :class:`TrackedSends`) sent so far is acknowledged.

    Records sent while this waits are not waited for (the next call covers them).

    Returns
    -------
    int
        How many records were still outstanding when the wait began.

    Raises
    ------
    ChangelogNotAcknowledged
        A record of one of the tables was refused (now or earlier), or the wait timed out.
    """
    tables = list(tables)
    outstanding = [future for table in tables for future in table.unacknowledged]
    if outstanding:
        done, pending = await asyncio.wait(outstanding, timeout=timeout)
        if pending:
            raise ChangelogNotAcknowledged(
                f"{len(pending)} changelog record(s) not acknowledged within {timeout:g} s")
    refused = [reason for table in tables for reason in table.refused]
    if refused:
        raise ChangelogNotAcknowledged(
            f"{len(refused)} changelog record(s) refused by the broker; the worker must restart "
            f"to recover its tables from the changelog (first: {refused[0]})")
    return len(outstanding)

"""The worker's files on local disk: the event archive (training and restore) and dead letters.

Only what was stored is archived: an event dropped for lack of consent, a duplicate, or one of an
erased customer leaves no trace on disk either. Archived lines are fsync'd before the messages
they came from are acknowledged (the write-behind flush calls :meth:`LocalLog.sync`).
"""

from __future__ import annotations

import asyncio
import atexit
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

from models.archive import SEQ_FIELD, EventArchive, archive_line, purge_customer
from models.consent import ConsentChange
from models.events import Event

__all__ = ["LocalLog"]


class LocalLog:
    """Appends to the event archive in processing order, and keeps dead letters.

    Parameters
    ----------
    archive_dir : Path
        The archive's root (``DATA_DIR/archive``).
    dead_letter_file : Path
        Where dead letters are kept too (the bundled broker forgets its topics on restart).
    writer : str
        This worker's name in the archive's file names (several workers may share a data dir).
    """

    def __init__(self, archive_dir: Path, dead_letter_file: Path, writer: str) -> None:
        self.archive_dir, self.dead_letter_file = archive_dir, dead_letter_file
        self.archive = EventArchive(archive_dir, writer=writer)
        self._seq = 0
        # lines appended since the last flush are in memory: written however the process exits
        # normally (the worker also writes them before it shuts down)
        atexit.register(self.archive.close)

    def append(self, events: list[Event], raw: bytes | None = None) -> None:
        """Append applied events (fsync'd by :meth:`sync` before their messages are acked).

        ``raw``: the message bytes when they hold exactly ``events[0]`` as one JSON object; the
        processing-order field is then spliced in front instead of serializing the event again.
        """
        self.archive.append(self.lines(events, raw))

    def append_lines(self, lines: list[tuple[int, bytes]]) -> None:
        """Append lines made by :meth:`lines` (several messages' events at once)."""
        self.archive.append(lines)

    def lines(self, events: list[Event], raw: bytes | None) -> Iterator[tuple[int, bytes]]:
        if raw is not None and len(events) == 1:
            yield events[0].ts, archive_line(events[0].data, self._next_seq(), raw)
            return
        for e in events:
            yield e.ts, archive_line(e.data, self._next_seq())

    async def sync(self) -> None:
        """fsync the archive in a worker thread: a slow disk must not stall ingest and scoring."""
        await asyncio.get_running_loop().run_in_executor(None, self.archive.flush, True)

    def _next_seq(self) -> int:
        self._seq = max(self._seq + 1, time.time_ns() // 1000)
        return self._seq

    def append_consent_call(self, customer_id: str, change: ConsentChange, ts: int) -> None:
        """Record a consent call's effect as a ``consent`` event (fsync'd), so replays reproduce it."""
        flags = {flag: True for flag in change.granted} | {flag: False for flag in change.revoked}
        if not flags:
            return
        event = {"event_id": f"api-consent-{uuid.uuid4().hex}", "type": "consent",
                 "customer_id": customer_id, "ts": ts, "consent": {"flags": flags},
                 "source": "api", "tc_hash": change.state.tc_hash, SEQ_FIELD: self._next_seq()}
        if change.tcf_basis is not None:  # the TCF basis the call's TC string was read under
            event["tcf_basis"] = change.tcf_basis
        self.archive.append([(ts, orjson.dumps(event))])
        self.archive.flush(fsync=True)

    def purge(self, customer_id: str) -> int:
        """Remove every archived event of a customer (erasure); how many were removed."""
        self.archive.flush(fsync=True)  # this worker's lines of the customer are on disk, then purged
        return purge_customer(self.archive_dir, customer_id)

    def dead_letter(self, record: dict[str, Any]) -> None:
        """Keep a dead letter on local disk."""
        with open(self.dead_letter_file, "ab") as handle:
            handle.write(orjson.dumps(record) + b"\n")

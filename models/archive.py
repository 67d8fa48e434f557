"""The local event archive: every accepted event, as JSON lines partitioned by UTC date.

Layout::

    ROOT/date=YYYY-MM-DD/part-<writer>.jsonl    one event object per line, in processing order

Each writer (worker) has its own file per day, so several workers may share a root. Readers merge
a day's files and yield events in time order (ties keep file and line order), day by day, and
skip whatever the caller's ``skip`` predicate rejects (erased customers). The archive is the source
of offline retraining and of restoring the embedded default after a restart.

Examples
--------
>>> import tempfile, pathlib
>>> root = pathlib.Path(tempfile.mkdtemp())
>>> with EventArchive(root, "w1") as archive:
...     n = archive.append([(1_700_000_000_000, b'{"customer_id": "a", "ts": 1700000000000}')])
>>> [e["customer_id"] for e in read_archive(root)]
['a']
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import orjson

__all__ = ["EventArchive", "archive_line", "read_archive", "read_in_processing_order", "purge_customer",
           "SEQ_FIELD"]

#: Field a writer adds to every archived event: its processing order (microseconds, increasing).
SEQ_FIELD = "_archived_us"

_DAY = re.compile(r"^date=\d{4}-\d{2}-\d{2}$")
_DAY_MS = 86_400_000


_SEQ_PREFIX = b'{"' + SEQ_FIELD.encode() + b'":%d,'


def archive_line(data: Mapping[str, Any], seq: int, raw: bytes | None = None) -> bytes:
    """One archive line: the event's JSON object with :data:`SEQ_FIELD` = ``seq``, and a newline.

    ``raw``: the event's own JSON bytes when at hand (one event per Kafka message); the field is
    then spliced in front of them instead of serializing the event again. A field the event
    already had under that name is replaced, as before.

    >>> archive_line({"event_id": "e1"}, 7)
    b'{"_archived_us":7,"event_id":"e1"}\\n'
    >>> archive_line({"event_id": "e1"}, 7, raw=b' {"event_id": "e1"} ')
    b'{"_archived_us":7,"event_id": "e1"}\\n'
    """
    if data and SEQ_FIELD not in data:
        if raw is None:
            return _SEQ_PREFIX % seq + orjson.dumps(data, option=orjson.OPT_APPEND_NEWLINE)[1:]
        body = raw.strip()
        if body[:1] == b"{" and b"\n" not in body and b"\r" not in body:  # one line, as read back
            return _SEQ_PREFIX % seq + body[1:] + b"\n"
    return orjson.dumps({**data, SEQ_FIELD: seq}, option=orjson.OPT_APPEND_NEWLINE)


def _day(ts_ms: int) -> str:
    return datetime.fromtimestamp(ts_ms / 1000, UTC).strftime("date=%Y-%m-%d")


class EventArchive:
    """Appends events to today's file of this writer (per event date, not wall-clock date).

    Parameters
    ----------
    root : Path
        The archive directory.
    writer : str
        This writer's name (unique per worker sharing the root).
    """

    def __init__(self, root: Path, writer: str) -> None:
        self.root = Path(root)
        self.writer = writer
        self._files: dict[str, IO[bytes]] = {}
        self._by_day: dict[int, IO[bytes]] = {}  # UTC day number -> open file (no strftime per event)
        # flush(fsync=True) may run in a worker thread (so a slow disk never stalls the event
        # loop) while the loop appends; opening and closing files take the same lock.
        self._lock = threading.Lock()

    def append(self, records: Iterable[tuple[int, bytes]]) -> int:
        """Append ``(ts_ms, event_json)`` records; return how many were written."""
        n = 0
        by_day = self._by_day
        for ts, line in records:
            handle = by_day.get(ts // _DAY_MS)
            if handle is None:
                handle = self._open(ts)
            if line[-1:] != b"\n" or line[-2:-1] == b"\n":
                line = line.rstrip(b"\n") + b"\n"
            handle.write(line)
            n += 1
        return n

    def _open(self, ts: int) -> IO[bytes]:
        day = _day(ts)
        with self._lock:
            handle = self._files.get(day)
            if handle is None:
                (self.root / day).mkdir(parents=True, exist_ok=True)
                handle = self._files[day] = open(self.root / day / f"part-{self.writer}.jsonl", "ab")  # noqa: SIM115
            self._by_day[ts // _DAY_MS] = handle
        return handle

    def flush(self, fsync: bool = False) -> None:
        """Push buffered lines to the OS (and to the disk with ``fsync``); thread-safe."""
        with self._lock:
            for handle in list(self._files.values()):
                handle.flush()
                if fsync:
                    os.fsync(handle.fileno())

    def close(self) -> None:
        """Flush to disk and close every open file (the next append opens them again).

        Call it before rewriting the files (:func:`purge_customer`): a handle kept open would go
        on writing to the replaced file, and those lines would be lost.
        """
        with self._lock:
            for handle in self._files.values():
                handle.flush()
                os.fsync(handle.fileno())
                handle.close()
            self._files.clear()
            self._by_day.clear()

    def __enter__(self) -> EventArchive:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def _days(root: Path) -> list[Path]:
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and _DAY.match(p.name))


def read_archive(root: Path, *, skip: Callable[[dict[str, Any]], bool] | None = None,
                 until_ms: int | None = None) -> Iterator[dict[str, Any]]:
    """Yield archived events in time order, day by day, without those ``skip`` rejects.

    Lines that are not JSON objects (a torn last line after a crash) are passed over.
    """
    for day in _days(Path(root)):
        events: list[tuple[int, int, dict[str, Any]]] = []
        for path in sorted(day.glob("part-*.jsonl")):
            for line in path.read_bytes().splitlines():
                try:
                    event = orjson.loads(line)
                except orjson.JSONDecodeError:
                    continue
                if isinstance(event, dict) and isinstance(event.get("ts"), int):
                    events.append((event["ts"], len(events), event))
        events.sort(key=lambda item: (item[0], item[1]))
        for ts, _, event in events:
            if until_ms is not None and ts >= until_ms:
                return
            if skip is None or not skip(event):
                yield event


def read_in_processing_order(root: Path, *, skip: Callable[[dict[str, Any]], bool] | None = None
                             ) -> list[dict[str, Any]]:
    """All archived events in the order they were applied (by :data:`SEQ_FIELD`).

    Restoring state must follow processing order, not event time: a consent call made now
    governs events that carry older timestamps but were applied after it.
    """
    events = [e for e in read_archive(root) if skip is None or not skip(e)]
    events.sort(key=lambda e: e.get(SEQ_FIELD, 0))
    return events


def purge_customer(root: Path, customer_id: str) -> int:
    """Rewrite the archive without the customer's events; return how many were removed."""
    needle = orjson.dumps(customer_id)
    removed = 0
    for day in _days(Path(root)):
        for path in day.glob("part-*.jsonl"):
            data = path.read_bytes()
            if needle not in data:
                continue
            kept = []
            for line in data.splitlines():
                try:
                    mine = orjson.loads(line).get("customer_id") == customer_id
                except (orjson.JSONDecodeError, AttributeError):
                    mine = False
                if mine:
                    removed += 1
                else:
                    kept.append(line)
            tmp = path.with_suffix(".tmp")
            tmp.write_bytes(b"".join(line + b"\n" for line in kept))
            os.replace(tmp, path)
    return removed

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

import fcntl
import os
import re
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any

import orjson

__all__ = ["EventArchive", "archive_line", "read_archive", "read_in_processing_order", "purge_customer",
           "SEQ_FIELD", "writers_lock"]

#: Field a writer adds to every archived event: its processing order (microseconds, increasing).
SEQ_FIELD = "_archived_us"

_DAY = re.compile(r"^date=\d{4}-\d{2}-\d{2}$")
_DAY_MS = 86_400_000
#: The writers lock's file in the archive root (see :func:`writers_lock`).
LOCK_FILE = ".writers.lock"


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
    """Appends events to this writer's file of each event date (not the wall-clock date).

    Lines are kept in memory until :meth:`flush`, which opens each file for appending, writes,
    (with ``fsync``) syncs it, and closes it again, holding the root's writers lock shared. The
    erasure purge (:func:`purge_customer`) rewrites *every* writer's files holding the lock
    exclusively; with no handle kept open across it, no writer can go on writing into a replaced
    file (several worker processes share a data dir: ``serve --processes``).

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
        self._pending: dict[int, list[bytes]] = {}  # UTC day number -> lines not written yet
        self._unsynced: set[Path] = set()  # files written since their last fsync
        # flush may run in a worker thread (so a slow disk never stalls the event loop) while
        # the loop appends: appends and the hand-over of the pending lines take this lock ...
        self._lock = threading.Lock()
        # ... and flushes run one at a time, so a flush that returns has every line appended
        # before it on disk (synced, with ``fsync``), including those of a flush it waited for.
        self._write_lock = threading.Lock()

    def append(self, records: Iterable[tuple[int, bytes]]) -> int:
        """Append ``(ts_ms, event_json)`` records; return how many were taken."""
        n = 0
        with self._lock:
            pending = self._pending
            for ts, line in records:
                lines = pending.get(ts // _DAY_MS)
                if lines is None:
                    lines = pending[ts // _DAY_MS] = []
                if line[-1:] != b"\n" or line[-2:-1] == b"\n":
                    line = line.rstrip(b"\n") + b"\n"
                lines.append(line)
                n += 1
        return n

    def flush(self, fsync: bool = False) -> None:
        """Write the pending lines to their files (and sync them with ``fsync``); thread-safe."""
        with self._write_lock:
            with self._lock:
                pending, self._pending = self._pending, {}
            if not pending and not (fsync and self._unsynced):
                return
            with writers_lock(self.root, exclusive=False):
                for day, lines in pending.items():
                    path = self.root / _day(day * _DAY_MS) / f"part-{self.writer}.jsonl"
                    path.parent.mkdir(parents=True, exist_ok=True)
                    _append_to(path, b"".join(lines), fsync)
                    if not fsync:
                        self._unsynced.add(path)
                if fsync:
                    for path in self._unsynced - {self.root / _day(d * _DAY_MS) / f"part-{self.writer}.jsonl"
                                                  for d in pending}:
                        _append_to(path, b"", True)
                    self._unsynced.clear()

    def close(self) -> None:
        """Write and sync everything appended (no file is held open between flushes)."""
        self.flush(fsync=True)

    def __enter__(self) -> EventArchive:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def _append_to(path: Path, data: bytes, fsync: bool) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        if fsync:
            os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def writers_lock(root: Path, *, exclusive: bool) -> Iterator[None]:
    """The root's lock between processes: shared while a writer writes, exclusive for a rewrite."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    fd = os.open(root / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        yield
    finally:
        os.close(fd)  # releases the lock


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
    """Rewrite the archive without the customer's events; return how many were removed.

    Every writer's files are rewritten, under the writers lock held exclusively (see
    :class:`EventArchive`). Lines another process still holds in memory are written after the
    purge; the erasure ledger keeps them out of every replay.
    """
    if not Path(root).is_dir():
        return 0
    with writers_lock(root, exclusive=True):
        return _purge(Path(root), customer_id)


def _purge(root: Path, customer_id: str) -> int:
    needle = orjson.dumps(customer_id)
    removed = 0
    for day in _days(root):
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

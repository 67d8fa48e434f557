"""The local event archive: lines as written are the events as read back, in processing order."""

from __future__ import annotations

import threading
from pathlib import Path

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from models.archive import SEQ_FIELD, EventArchive, archive_line, purge_customer, read_in_processing_order

DAY = 86_400_000
T0 = 1_700_006_400_000  # a UTC midnight

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**53, 2**53) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.text(max_size=6), json_values, min_size=1, max_size=6), st.integers(0, 2**62),
       st.sampled_from([None, "compact", "spaced", "pretty"]))
def test_archive_line_is_the_event_plus_its_order(data: dict, seq: int, raw_style: str | None) -> None:
    raw = None
    if raw_style == "compact":
        raw = orjson.dumps(data)
    elif raw_style == "spaced":
        raw = b"  " + orjson.dumps(data) + b"\r\n"
    elif raw_style == "pretty":
        raw = orjson.dumps(data, option=orjson.OPT_INDENT_2)  # several lines: not spliced
    line = archive_line(data, seq, raw)
    assert line.endswith(b"\n") and len(line.splitlines()) == 1
    assert orjson.loads(line) == {**data, SEQ_FIELD: seq}


def test_append_flush_close_and_reopen(tmp_path: Path) -> None:
    archive = EventArchive(tmp_path, "w1")
    events = [{"event_id": f"e{i}", "customer_id": f"c{i % 3}", "ts": T0 + i * DAY // 2} for i in range(6)]
    archive.append((e["ts"], archive_line(e, i + 1)) for i, e in enumerate(events[:3]))
    archive.flush(fsync=True)
    archive.close()  # e.g. before purge_customer rewrites the files
    assert purge_customer(tmp_path, "c0") == 1
    archive.append((e["ts"], archive_line(e, i + 4)) for i, e in enumerate(events[3:]))
    archive.close()
    read = read_in_processing_order(tmp_path)
    # e0 was purged; e3..e5, appended after the files were rewritten, are in the new files
    assert [e["event_id"] for e in read] == ["e1", "e2", "e3", "e4", "e5"]
    assert sorted(p.parent.name for p in tmp_path.glob("*/part-w1.jsonl")) == [
        "date=2023-11-15", "date=2023-11-16", "date=2023-11-17"]


def test_flush_from_another_thread_while_appending(tmp_path: Path) -> None:
    archive = EventArchive(tmp_path, "w1")
    stop = threading.Event()

    def flusher() -> None:
        while not stop.is_set():
            archive.flush(fsync=True)

    thread = threading.Thread(target=flusher)
    thread.start()
    try:
        for i in range(2_000):  # new days open files while the other thread flushes
            e = {"event_id": f"e{i}", "customer_id": "c", "ts": T0 + (i // 100) * DAY}
            archive.append([(e["ts"], archive_line(e, i + 1))])
    finally:
        stop.set()
        thread.join()
        archive.close()
    assert [e[SEQ_FIELD] for e in read_in_processing_order(tmp_path)] == list(range(1, 2_001))


def _write_as_a_process(root: str, writer: str, n: int) -> None:
    """A worker process: appends ``n`` events (customers ``keep`` and ``gone``), flushing as it goes."""
    archive = EventArchive(Path(root), writer)
    for i in range(n):
        customer = "gone" if i % 10 == 0 else "keep"
        e = {"event_id": f"{writer}-{i}", "customer_id": customer, "ts": T0 + i}
        archive.append([(e["ts"], archive_line(e, i + 1))])
        if i % 7 == 0:
            archive.flush(fsync=i % 21 == 0)
    archive.close()


def test_a_purge_by_one_process_loses_no_line_another_process_writes(tmp_path: Path) -> None:
    """Several processes share an archive (``serve --processes``); the one that handles an erasure
    rewrites every writer's files while the others go on writing. Before the writers lock, a
    writer's open handle went on writing into the file the purge had replaced: those lines were lost."""
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    writers = [ctx.Process(target=_write_as_a_process, args=(str(tmp_path), f"w{k}", 6_000)) for k in range(2)]
    for process in writers:
        process.start()
    purges = 0
    while any(p.is_alive() for p in writers):
        purge_customer(tmp_path, "gone")
        purges += 1
    for process in writers:
        process.join()
        assert process.exitcode == 0
    purge_customer(tmp_path, "gone")
    kept = [e["event_id"] for e in read_in_processing_order(tmp_path) if e["customer_id"] == "keep"]
    assert sorted(kept) == sorted(f"w{k}-{i}" for k in range(2) for i in range(6_000) if i % 10), purges
    assert purges > 1

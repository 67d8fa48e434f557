"""Kill-and-restart at small scale: SIGKILL one of two workers under load; nothing lost, nothing twice.

The scenario is in ``crash_scenario.py`` (the larger run is ``python -m benchmarks.crash``). It runs
on both brokers (the module's ``broker``: the bundled one, then a 3-broker Apache Kafka).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from stream.embedded.process import EmbeddedBroker
from tests.integration.crash_scenario import run_crash

pytestmark = pytest.mark.integration


def test_sigkill_under_load_loses_nothing_and_counts_nothing_twice(broker: Any, tmp_path: Path) -> None:
    result = run_crash(tmp_path, customers=40, events=6_000, rate=1_000.0, kill_after=2_000, broker=broker)
    print(result)
    assert result["lost"] == 0 and result["counted_twice"] == 0, result
    assert result["handed_over_by_faust"] == 0, result  # the events reader applied every event
    if isinstance(broker, EmbeddedBroker):  # no transactions, no compaction: every offset holds a record
        assert result["offsets_without_record"] == 0, result
    assert not result["bad_answers"], f"hand-over answers other than 200/503: {result['bad_answers']}"
    assert result["handover_statuses"].get("200", 0) > 0

"""Crash benchmark: SIGKILL one of two workers under load, at a larger scale than the CI test.

``python -m benchmarks.crash [--quick] [--broker tansu|kafka|both]``. Each run has a fresh broker of
its own: the bundled one, or a 3-broker Apache Kafka cluster (the ``events`` topic is shared by
every group on a broker, so a second run on the same cluster would read the first one's events).
Runs the write-behind ingest path with three producers:
the project's own (aiokafka), and a shop's librdkafka client (confluent-kafka) with its default
partitioner (CRC32-based: most events arrive on a partition that does not own their customer and
are re-routed) and with Java's murmur2. Beside them, the naive per-event path
(``OFFERSTREAM_WRITE_BEHIND=0``) with the project's producer. For each it reports events lost,
events counted twice, the time from the kill until every customer's count is exact again, and how
the survivor answered score calls during the hand-over.
"""

from __future__ import annotations

import contextlib
import tempfile
from pathlib import Path
from typing import Any

from benchmarks.common import cli, result_name, running_broker, target
from tests.integration.crash_scenario import run_crash

__all__ = ["run", "main", "RUNS"]

#: (result name, producer of ``crash_scenario.PRODUCERS``, worker environment); the naive last.
RUNS: tuple[tuple[str, str, dict[str, str] | None], ...] = (
    ("write_behind", "own", None),
    ("librdkafka_default", "librdkafka-default", None),
    ("librdkafka_murmur2", "librdkafka-murmur2", None),
    ("naive", "own", {"OFFERSTREAM_WRITE_BEHIND": "0"}),
)


def run(quick: bool = False, broker: str = "tansu") -> dict[str, Any]:
    """Run both paths; targets: zero lost, zero counted twice, no answer but 200/503."""
    scale = ({"customers": 100, "events": 6_000, "rate": 1_000.0, "kill_after": 2_000} if quick else
             {"customers": 1_000, "events": 40_000, "rate": 2_000.0, "kill_after": 15_000})
    results: dict[str, Any] = {}
    for name, producer, env in RUNS:
        with tempfile.TemporaryDirectory(prefix=f"offerstream-crash-{name}-") as tmp:
            # tansu: run_crash starts its own bundled broker
            own = (running_broker(broker, Path(tmp) / "broker") if broker != "tansu"
                   else contextlib.nullcontext(None))
            with own as running:
                results[name] = run_crash(Path(tmp) / "run", env=env, producer=producer, broker=running, **scale)
    wb = results["write_behind"]
    results["ratio_kill_to_exact_vs_naive"] = round(
        wb["kill_to_exact_s"] / max(results["naive"]["kill_to_exact_s"], 1e-9), 3)
    targets = []
    for name, producer, _ in RUNS[:-1]:  # the naive baseline is a comparison, not a target
        r, label = results[name], f"{name} ({producer})"
        targets += [
            target(f"events lost after SIGKILL, {label}", r["lost"], 0, "events"),
            target(f"events counted twice after SIGKILL, {label}", r["counted_twice"], 0, "events"),
            target(f"producer errors, {label}", len(r["producer_errors"]), 0, "errors"),
            target(f"hand-over answers other than 200/503, {label}", len(r["bad_answers"]), 0, "answers"),
        ]
    return {"name": result_name("crash", broker), "settings": {"quick": quick, "broker": broker, **scale},
            "results": results, "targets": targets}


def main() -> list[dict[str, Any]]:
    """Command-line entry point."""
    return cli(run, __doc__.splitlines()[0])


if __name__ == "__main__":
    main()

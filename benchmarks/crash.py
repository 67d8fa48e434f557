"""Crash benchmark: SIGKILL one of two workers under load, at a larger scale than the CI test.

``python -m benchmarks.crash [--quick]``. Runs the write-behind ingest path and, beside it, the
naive per-event path (``OFFERSTREAM_WRITE_BEHIND=0``), and reports events lost, events counted
twice, the time from the kill until every customer's count is exact again, and how the survivor
answered score calls during the hand-over.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from benchmarks.common import cli, target
from tests.integration.crash_scenario import run_crash

__all__ = ["run", "main"]


def run(quick: bool = False) -> dict[str, Any]:
    """Run both paths; targets: zero lost, zero counted twice, no answer but 200/503."""
    scale = ({"customers": 100, "events": 6_000, "rate": 1_000.0, "kill_after": 2_000} if quick else
             {"customers": 1_000, "events": 40_000, "rate": 2_000.0, "kill_after": 15_000})
    results: dict[str, Any] = {}
    for name, env in (("write_behind", None), ("naive", {"OFFERSTREAM_WRITE_BEHIND": "0"})):
        with tempfile.TemporaryDirectory(prefix=f"offerstream-crash-{name}-") as tmp:
            results[name] = run_crash(Path(tmp), env=env, **scale)
    wb = results["write_behind"]
    results["ratio_kill_to_exact_vs_naive"] = round(
        wb["kill_to_exact_s"] / max(results["naive"]["kill_to_exact_s"], 1e-9), 3)
    return {
        "name": "crash", "settings": {"quick": quick, **scale}, "results": results,
        "targets": [
            target("events lost after SIGKILL", wb["lost"], 0, "events"),
            target("events counted twice after SIGKILL", wb["counted_twice"], 0, "events"),
            target("hand-over answers other than 200/503", len(wb["bad_answers"]), 0, "answers"),
        ],
    }


def main() -> dict[str, Any]:
    """Command-line entry point."""
    return cli(run, __doc__.splitlines()[0])


if __name__ == "__main__":
    main()

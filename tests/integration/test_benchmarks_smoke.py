"""The benchmarks still run: ``python -m benchmarks.run --quick`` completes and writes its JSON.

No timing is asserted here (timing belongs in the benchmarks themselves); this only keeps them
from rotting. The quick run writes only ``results/selected-quick.json`` (quick runs never overwrite the full
results). The consent benchmark has its own smoke coverage and is left out to bound the time.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson
import pytest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


def test_quick_benchmarks_complete_and_write_well_formed_results() -> None:
    result = subprocess.run(  # noqa: S603
        [sys.executable, "-m", "benchmarks.run", "--quick", "ingest", "score", "host", "freshness", "retrain"],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    record = orjson.loads((REPO / "benchmarks" / "results" / "selected-quick.json").read_bytes())
    assert record["settings"]["quick"] is True
    assert {"ingest", "score", "host", "freshness", "retrain"} <= set(record["results"])
    for name in ("ingest", "score", "host", "freshness", "retrain"):
        assert "error" not in record["results"][name], record["results"][name]
    assert record["targets"] and all({"metric", "value", "target", "pass"} <= set(t) for t in record["targets"])
    assert record["host"]["cores"] and record["machine"]["python"]

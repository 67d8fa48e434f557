"""Run every benchmark (or the named ones), print one table, write ``results/all.json``.

``python -m benchmarks.run [--quick] [ingest score freshness retrain consent]``. Each benchmark
also runs alone: ``python -m benchmarks.<name> [--quick]``.
"""

from __future__ import annotations

import argparse
import importlib
import time
import traceback
from typing import Any

from benchmarks.common import RESULTS_DIR, machine, print_report, write_results

__all__ = ["main", "BENCHMARKS"]

BENCHMARKS = ("ingest", "score", "freshness", "retrain", "consent", "crash")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short smoke runs")
    parser.add_argument("names", nargs="*", default=[], help=f"any of {', '.join(BENCHMARKS)} (default: all)")
    args = parser.parse_args(argv)
    unknown = set(args.names) - set(BENCHMARKS)
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(sorted(unknown))}")
    names = args.names or list(BENCHMARKS)
    name = "all" if set(names) == set(BENCHMARKS) else "selected"
    summary: dict[str, Any] = {"name": name + ("-quick" if args.quick else ""),
                               "settings": {"quick": args.quick, "benchmarks": names},
                               "results": {}, "targets": []}
    for name in names:
        started = time.perf_counter()
        try:
            result = importlib.import_module(f"benchmarks.{name}").run(quick=args.quick)
        except Exception as exc:  # noqa: BLE001 - one broken benchmark must not hide the others
            traceback.print_exc()
            summary["results"][name] = {"error": f"{type(exc).__name__}: {exc}"}
            summary["targets"].append({"metric": f"{name} ran", "value": 0, "target": 1, "unit": "",
                                       "comparison": ">=", "pass": False})
            continue
        result["settings"]["seconds"] = round(time.perf_counter() - started, 1)
        if not args.quick:
            write_results(result)
        print_report(result)
        summary["results"][name] = result
        summary["targets"] += [{**t, "benchmark": name} for t in result.get("targets", [])]
    summary["machine"] = machine()
    path = write_results(summary, RESULTS_DIR)
    print("\n== summary ==")
    for t in summary["targets"]:
        mark = "PASS" if t["pass"] else "FAIL"
        print(f"  [{mark}] {t.get('benchmark', '')}: {t['metric']}: {t['value']} {t['unit']} "
              f"(target {t.get('comparison', '<=')} {t['target']})")
    print(f"results written to {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

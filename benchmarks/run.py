"""Run every benchmark (or the named ones), print one table, write ``results/all.json``.

``python -m benchmarks.run [--quick] [--broker tansu|kafka|both] [ingest score host freshness retrain consent
crash state]``. The benchmarks that use a broker (ingest, score, host, freshness, crash, state) run on each
broker named: ``tansu`` (the bundled one), ``kafka`` (a 3-broker Apache Kafka 4.4 cluster) or
``both``, one after the other; the default is ``both`` for a full run and ``tansu`` for ``--quick``
(the CI smoke run). Results on Kafka are named ``<benchmark>-kafka``. Each benchmark also runs
alone: ``python -m benchmarks.<name> [--quick] [--broker ...]``.
"""

from __future__ import annotations

import argparse
import importlib
import time
import traceback
from typing import Any

from benchmarks.common import RESULTS_DIR, brokers_of, machine, print_report, result_name, takes_broker, write_results

__all__ = ["main", "BENCHMARKS"]

BENCHMARKS = ("ingest", "score", "host", "freshness", "retrain", "consent", "crash", "state")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short smoke runs")
    parser.add_argument("--broker", choices=("tansu", "kafka", "both"), default=None,
                        help="the broker(s) of the broker benchmarks (default: both, tansu with --quick)")
    parser.add_argument("names", nargs="*", default=[], help=f"any of {', '.join(BENCHMARKS)} (default: all)")
    args = parser.parse_args(argv)
    unknown = set(args.names) - set(BENCHMARKS)
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(sorted(unknown))}")
    names = args.names or list(BENCHMARKS)
    brokers = brokers_of(args.broker or ("tansu" if args.quick else "both"))
    name = "all" if set(names) == set(BENCHMARKS) else "selected"
    summary: dict[str, Any] = {"name": name + ("-quick" if args.quick else ""),
                               "settings": {"quick": args.quick, "benchmarks": names, "brokers": brokers},
                               "results": {}, "targets": []}
    for name in names:
        run = importlib.import_module(f"benchmarks.{name}").run
        for broker in brokers if takes_broker(run) else [None]:
            label = name if broker is None else result_name(name, broker)
            started = time.perf_counter()
            try:
                result = run(quick=args.quick) if broker is None else run(quick=args.quick, broker=broker)
            except BaseException as exc:  # noqa: BLE001 - one broken benchmark must not hide the others
                if isinstance(exc, KeyboardInterrupt):
                    raise
                traceback.print_exc()  # (a broker that cannot start ends in pytest.fail: an Exception too)
                summary["results"][label] = {"error": f"{type(exc).__name__}: {exc}"}
                summary["targets"].append({"metric": f"{label} ran", "value": 0, "target": 1, "unit": "",
                                           "comparison": ">=", "pass": False})
                continue
            result["settings"]["seconds"] = round(time.perf_counter() - started, 1)
            if not args.quick:
                write_results(result)
            print_report(result)
            summary["results"][label] = result
            summary["targets"] += [{**t, "benchmark": label} for t in result.get("targets", [])]
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

"""Host benchmark: scores/s of one host with 1 and with 2 worker processes (issue 17, item 3).

``python -m benchmarks.host [--quick] [--broker tansu|kafka|both]``: ``offerstream serve
--processes N --broker URL`` for N = 1 and 2, in turn (1, 2, 1, 2 in a full run, so a drift of the
shared machine shows as a difference between the rounds), each a fresh consumer group on the same
broker, with the model and the 200 offers of ``benchmarks.score``. Per round: ``wrk`` (16
keep-alive connections; the Python closed loop where wrk is not installed) saturates the host's
one port for scores/s, then the open-loop generator sends 1,000 req/s for the p99. With two
processes the kernel spreads the connections over both (``SO_REUSEPORT``) and a request for the
other process's customer is forwarded to it, so the figure includes that hop. CPU per request is
the sum over the host's worker processes (and, separately, the broker's and the generator's).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson

from benchmarks.common import broker_pids, cli, cpu_s, result_name, summarize, target
from benchmarks.loadgen import open_loop, saturate
from benchmarks.score import N_OFFERS, _registry, offers, seed
from benchmarks.wrk import available as wrk_available
from benchmarks.wrk import saturate_wrk
from offerstream.client import ApiClient
from tests.integration.workers import REPO, free_run, running_broker, wait_until

__all__ = ["run", "main"]

RATE = 1000.0


@contextmanager
def host(broker_url: str, root: Path, processes: int, registry: Path | None, app_id: str) -> Iterator[dict[str, Any]]:
    """``offerstream serve --processes N`` on free ports, ready; yields its URL, clients and pids."""
    port = free_run(processes + 1)
    data = root / app_id
    data.mkdir(parents=True)
    if registry is not None:
        shutil.copytree(registry, data / "models")
    env = {**os.environ, "OFFERSTREAM_APP_ID": app_id, "OFFERSTREAM_HASH_KEY": "bench-hash-key",
           "OFFERSTREAM_LOG_LEVEL": "WARNING"}
    log = (root / f"{app_id}.log").open("ab")
    proc = subprocess.Popen(  # noqa: S603
        [sys.executable, "-m", "offerstream.cli", "serve", "--processes", str(processes), "--broker", broker_url,
         "--port", str(port), "--data-dir", str(data)], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    log.close()
    own = [ApiClient(f"http://127.0.0.1:{port + i}") for i in range(1, processes + 1)] if processes > 1 \
        else [ApiClient(f"http://127.0.0.1:{port}")]

    def settled() -> bool:
        assert proc.poll() is None, (root / f"{app_id}.log").read_text()[-2000:]
        try:
            answers = [c.request("GET", "/health") for c in own]
        except OSError:
            return False
        reports = [body if status == 200 and isinstance(body, dict) else {} for status, body in answers]
        held = [set(r.get("assigned_partitions", [])) for r in reports]
        covered = sum(map(len, held)) == len(set().union(*held)) == 4  # disjoint, all four partitions
        return all(r.get("ready") for r in reports) and all(held) and covered

    try:
        wait_until(settled, timeout=240, interval=0.3, what=f"a host of {processes} process(es) to settle")
        children = subprocess.run(["pgrep", "-P", str(proc.pid)],  # noqa: S603, S607
                                  capture_output=True, text=True, check=False).stdout.split()
        pids = [proc.pid] if processes == 1 else [int(p) for p in children]
        yield {"url": f"http://127.0.0.1:{port}", "client": ApiClient(f"http://127.0.0.1:{port}"), "pids": pids}
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _round(running: Any, root: Path, processes: int, registry: Path | None, n: int, quick: bool) -> dict[str, Any]:
    customers = 50 if quick else 500
    ids = [o["offer_id"] for o in offers()]
    bodies = [orjson.dumps({"customer_id": f"c{i % customers}", "k": 5, "candidates": ids}) for i in range(customers)]
    with host(running.url, root, processes, registry, f"host{n}-{processes}p") as h:
        seed(h["client"], customers)
        time.sleep(1.5)
        url = h["url"] + "/v1/score"
        body_for = lambda i: bodies[i % customers]  # noqa: E731
        asyncio.run(open_loop(url, body_for, 200, 1.0))  # warm up
        seconds = 2.0 if quick else 8.0
        groups = {"host_workers": h["pids"], "broker": broker_pids(running)}
        before = {k: cpu_s(v) for k, v in groups.items()}
        own = time.process_time()
        if wrk_available():
            saturated = saturate_wrk(url, bodies, seconds, connections=16)
        else:
            saturated = asyncio.run(saturate(url, body_for, seconds))
            saturated["tool"] = "benchmarks/loadgen.py (wrk is not installed)"
        done = max(1, saturated["requests"])
        sat_cpu = {f"{k}_ms": round(1000 * (cpu_s(v) - before[k]) / done, 3) for k, v in groups.items()}
        sat_cpu["load_generator_ms"] = round(1000 * (time.process_time() - own) / done, 3)
        before = {k: cpu_s(v) for k, v in groups.items()}
        loaded = asyncio.run(open_loop(url, body_for, RATE, 3.0 if quick else 15.0))
        sent = max(1, loaded["sent"])
        open_cpu = {f"{k}_ms": round(1000 * (cpu_s(v) - before[k]) / sent, 3) for k, v in groups.items()}
        model = h["client"].json("GET", "/health")["model_version"]
    return {"processes": processes, "model": model,
            "saturation": {"scores_per_s": round(saturated["per_s"], 1), "errors": saturated["errors"],
                           "latency_ms": saturated.get("latency_ms"), "load_generator": saturated["tool"],
                           "cpu_per_request": sat_cpu},
            "open_loop": {"rate": RATE, "latency_ms": summarize(loaded["latencies_ms"]), "errors": loaded["errors"],
                          "achieved_rate": round(loaded["achieved_rate"], 1), "cpu_per_request": open_cpu}}


def run(quick: bool = False, broker: str = "tansu") -> dict[str, Any]:
    order = (1, 2) if quick else (1, 2, 1, 2)
    rounds = []
    with tempfile.TemporaryDirectory(prefix="offerstream-host-") as tmp:
        root = Path(tmp)
        registry = None if quick else _registry(root / "train")
        load_before = os.getloadavg()
        with running_broker(broker, root / "broker") as running:
            for n, processes in enumerate(order):
                rounds.append(_round(running, root, processes, registry, n, quick))
        load_after = os.getloadavg()
    best = {p: max(r["saturation"]["scores_per_s"] for r in rounds if r["processes"] == p) for p in (1, 2)}
    p99_two = min(r["open_loop"]["latency_ms"].get("p99", float("nan")) for r in rounds if r["processes"] == 2)
    return {
        "name": result_name("host", broker),
        "settings": {"quick": quick, "broker": broker, "candidates": N_OFFERS, "order": list(order),
                     "cpus": os.cpu_count()},
        "results": {"rounds": rounds, "scores_per_s_best": {f"{p}_process": v for p, v in best.items()},
                    "speedup_2_over_1": round(best[2] / best[1], 2) if best[1] else None,
                    "load_average_1m": {"before": round(load_before[0], 2), "after": round(load_after[0], 2)}},
        "targets": [
            target("host scores/s with 2 processes over 1", round(best[2] / best[1], 2) if best[1] else 0.0, 1.0, "x",
                   at_most=False),
            target(f"host score p99 at {RATE:.0f} req/s, 2 processes", p99_two, 3.0, "ms"),
        ],
    }


def main() -> None:
    cli(run, __doc__.splitlines()[0])


if __name__ == "__main__":
    main()

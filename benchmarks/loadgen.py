"""An open-loop HTTP load generator (aiohttp): requests go out on a fixed schedule.

Request ``i`` is due at ``start + i / rate``. Its latency is measured from that scheduled time, not
from when it was actually sent, so a slow server cannot slow the generator down and hide its own
queueing (no coordinated omission). Requests that are late by more than ``max_lag_s`` when their
turn comes are still sent and counted; ``send_lag_ms`` reports how late the client itself was.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import aiohttp

__all__ = ["open_loop", "saturate"]


async def open_loop(url: str, body_for: Callable[[int], bytes], rate: float, duration_s: float, *,
                    connections: int = 64, headers: dict[str, str] | None = None,
                    check: Callable[[int, bytes], bool] | None = None) -> dict[str, Any]:
    """Send ``rate`` POSTs per second for ``duration_s``; return latencies (ms) and errors."""
    total = int(rate * duration_s)
    latencies: list[float] = []
    lags: list[float] = []
    statuses: dict[int, int] = {}
    errors = 0
    hdrs = {"Content-Type": "application/json", **(headers or {})}
    connector = aiohttp.TCPConnector(limit=connections, force_close=False)
    async with aiohttp.ClientSession(connector=connector) as session:
        loop = asyncio.get_running_loop()
        start = loop.time() + 0.05

        async def one(i: int) -> None:
            nonlocal errors
            due = start + i / rate
            lags.append((loop.time() - due) * 1000)
            try:
                async with session.post(url, data=body_for(i), headers=hdrs) as response:
                    payload = await response.read()
                    statuses[response.status] = statuses.get(response.status, 0) + 1
                    if response.status != 200 or (check is not None and not check(response.status, payload)):
                        errors += 1
            except (aiohttp.ClientError, asyncio.TimeoutError):
                errors += 1
                statuses[0] = statuses.get(0, 0) + 1
            latencies.append((loop.time() - due) * 1000)

        tasks = []
        for i in range(total):
            delay = start + i / rate - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.ensure_future(one(i)))
        await asyncio.gather(*tasks)
        elapsed = loop.time() - start
    return {"sent": total, "elapsed_s": elapsed, "latencies_ms": latencies, "send_lag_ms": lags,
            "statuses": statuses, "errors": errors, "achieved_rate": total / elapsed}


async def saturate(url: str, body_for: Callable[[int], bytes], duration_s: float, *,
                   concurrency: int = 16, headers: dict[str, str] | None = None) -> dict[str, Any]:
    """Closed loop with ``concurrency`` clients for ``duration_s``: the server's capacity."""
    hdrs = {"Content-Type": "application/json", **(headers or {})}
    done = 0
    errors = 0
    counter = iter(range(10**12))
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as session:
        stop_at = time.perf_counter() + duration_s

        async def client() -> None:
            nonlocal done, errors
            while time.perf_counter() < stop_at:
                async with session.post(url, data=body_for(next(counter)), headers=hdrs) as response:
                    await response.read()
                    done += 1
                    errors += response.status != 200

        started = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return {"requests": done, "errors": errors, "elapsed_s": elapsed, "per_s": done / elapsed}

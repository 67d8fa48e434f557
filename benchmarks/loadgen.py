"""An open-loop HTTP/1.1 load generator: requests go out on a fixed schedule.

Request ``i`` is due at ``start + i / rate``. Its latency is measured from that scheduled time, not
from when it was actually sent, so a slow server cannot slow the generator down and hide its own
queueing (no coordinated omission). A request whose turn comes while every connection is busy
waits for one, and that wait counts in its latency; ``send_lag_ms`` reports how late the client
itself was when the request's turn came (its own scheduling delay, not the server's).

Why not aiohttp's client: on the shared 2-core machine it cost ~0.31 ms of CPU per request, a
quarter of what the worker spends, and its send lag reached p99 ~4-5 ms at 500 req/s, which alone
is the whole p99 budget. This client writes pre-built request bytes on keep-alive connections
(``asyncio.Protocol``, ``TCP_NODELAY``) and parses only the status line and ``Content-Length``.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections import deque
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

__all__ = ["open_loop", "saturate", "HttpTarget"]

CONNECT_TIMEOUT_S = 5.0


class _Connection(asyncio.Protocol):
    """One keep-alive connection: one request in flight at a time, response by Content-Length."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self._buffer = bytearray()
        self._waiter: asyncio.Future[tuple[int, bytes]] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(ConnectionError("server closed the connection"))

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        self._complete()

    def request(self, raw: bytes) -> asyncio.Future[tuple[int, bytes]]:
        """Send one request; the future resolves to ``(status, body)``."""
        assert self.transport is not None and self._waiter is None
        self._waiter = asyncio.get_running_loop().create_future()
        self.transport.write(raw)
        return self._waiter

    def _complete(self) -> None:
        end = self._buffer.find(b"\r\n\r\n")
        if end < 0 or self._waiter is None:
            return
        head = bytes(self._buffer[:end]).lower()
        at = head.find(b"\r\ncontent-length:")
        if at < 0:  # the worker always sends Content-Length; anything else is an error here
            self._waiter.set_exception(ValueError("response without Content-Length"))
            self._waiter = None
            assert self.transport is not None
            self.transport.close()
            return
        line_end = head.find(b"\r\n", at + 2)
        length = int(head[at + 17:line_end if line_end >= 0 else len(head)])
        total = end + 4 + length
        if len(self._buffer) < total:
            return
        status = int(head[9:12])
        body = bytes(self._buffer[end + 4:total])
        del self._buffer[:total]
        waiter, self._waiter = self._waiter, None
        if not waiter.done():
            waiter.set_result((status, body))
        if b"\r\nconnection: close" in head and self.transport is not None:
            self.transport.close()


class HttpTarget:
    """POST requests to one URL over a pool of at most ``connections`` keep-alive connections."""

    def __init__(self, url: str, headers: dict[str, str] | None = None, connections: int = 64) -> None:
        parts = urlsplit(url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query
        extra = "".join(f"{k}: {v}\r\n" for k, v in {"Content-Type": "application/json", **(headers or {})}.items())
        self._head = f"POST {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n{extra}".encode()
        self.limit = connections
        self._idle: list[_Connection] = []
        self._open = 0
        self._waiting: deque[asyncio.Future[_Connection]] = deque()

    def raw(self, body: bytes) -> bytes:
        """The request bytes for ``body``."""
        return self._head + b"Content-Length: %d\r\n\r\n" % len(body) + body

    async def _connect(self) -> _Connection:
        self._open += 1
        try:
            _, conn = await asyncio.wait_for(asyncio.get_running_loop().create_connection(
                _Connection, self.host, self.port), CONNECT_TIMEOUT_S)
        except BaseException:
            self._open -= 1
            raise
        return conn

    async def _acquire(self) -> _Connection:
        while self._idle:
            conn = self._idle.pop()
            if not conn.closed:
                return conn
            self._open -= 1
        if self._open < self.limit:
            return await self._connect()
        waiter: asyncio.Future[_Connection] = asyncio.get_running_loop().create_future()
        self._waiting.append(waiter)
        return await waiter

    def _release(self, conn: _Connection) -> None:
        while self._waiting and self._waiting[0].done():  # its request was cancelled
            self._waiting.popleft()
        if conn.closed:
            self._open -= 1
            if self._waiting:  # its slot goes to the next waiter, on a new connection
                asyncio.get_running_loop().create_task(self._hand_over(self._waiting.popleft()))
        elif self._waiting:
            self._waiting.popleft().set_result(conn)
        else:
            self._idle.append(conn)

    async def _hand_over(self, waiter: asyncio.Future[_Connection]) -> None:
        try:
            conn = await self._connect()
        except Exception as exc:  # noqa: BLE001 - the waiting request reports it as an error
            if not waiter.done():
                waiter.set_exception(exc)
            return
        if waiter.done():
            self._release(conn)
        else:
            waiter.set_result(conn)

    async def post(self, body: bytes) -> tuple[int, bytes]:
        """POST ``body``; return ``(status, body)``."""
        conn = await self._acquire()
        try:
            return await conn.request(self.raw(body))
        except BaseException:
            conn.closed = True
            if conn.transport is not None:
                conn.transport.close()
            raise
        finally:
            self._release(conn)

    def close(self) -> None:
        """Close every idle connection."""
        for conn in self._idle:
            if conn.transport is not None:
                conn.transport.close()
        self._idle.clear()


async def open_loop(url: str, body_for: Callable[[int], bytes], rate: float, duration_s: float, *,
                    connections: int = 64, headers: dict[str, str] | None = None,
                    check: Callable[[int, bytes], bool] | None = None) -> dict[str, Any]:
    """Send ``rate`` POSTs per second for ``duration_s``; return latencies (ms) and errors."""
    total = int(rate * duration_s)
    latencies: list[float] = []
    lags: list[float] = []
    statuses: dict[int, int] = {}
    errors = 0
    target = HttpTarget(url, headers, connections)
    loop = asyncio.get_running_loop()
    start = loop.time() + 0.05

    async def one(i: int) -> None:
        nonlocal errors
        due = start + i / rate
        lags.append((loop.time() - due) * 1000)
        try:
            status, payload = await target.post(body_for(i))
            statuses[status] = statuses.get(status, 0) + 1
            if status != 200 or (check is not None and not check(status, payload)):
                errors += 1
        except (TimeoutError, OSError, ValueError):
            errors += 1
            statuses[0] = statuses.get(0, 0) + 1
        latencies.append((loop.time() - due) * 1000)

    tasks = []
    for i in range(total):
        delay = start + i / rate - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(loop.create_task(one(i)))
    await asyncio.gather(*tasks)
    elapsed = loop.time() - start
    target.close()
    return {"sent": total, "elapsed_s": elapsed, "latencies_ms": latencies, "send_lag_ms": lags,
            "statuses": statuses, "errors": errors, "achieved_rate": total / elapsed}


async def saturate(url: str, body_for: Callable[[int], bytes], duration_s: float, *,
                   concurrency: int = 16, headers: dict[str, str] | None = None) -> dict[str, Any]:
    """Closed loop with ``concurrency`` clients for ``duration_s``: the server's capacity."""
    target = HttpTarget(url, headers, concurrency)
    done = 0
    errors = 0
    counter = iter(range(10**12))
    stop_at = time.perf_counter() + duration_s

    async def client() -> None:
        nonlocal done, errors
        while time.perf_counter() < stop_at:
            try:
                status, _ = await target.post(body_for(next(counter)))
            except (TimeoutError, OSError, ValueError):
                status = 0
            done += 1
            errors += status != 200

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    target.close()
    return {"requests": done, "errors": errors, "elapsed_s": elapsed, "per_s": done / elapsed}

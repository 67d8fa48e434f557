"""Which kind of broker a worker talks to, and the settings that follow from it.

Two kinds are known:

- ``kafka``: Apache Kafka (or a broker that answers like it). The stock faust/aiokafka paths run;
  topics get replication factor 3 and ``min.insync.replicas`` 2 (settings); consumer group
  sessions are 10 s, within Kafka's default ``group.min.session.timeout.ms`` of 6 s.
- ``tansu``: the bundled broker. Its measured quirks get their workarounds, and only here
  (``stream/embedded/transport.py``: end offsets from Fetch high watermarks and a short fetch
  wait; ``stream/contiguous.py``: offset holes read again), with replication 1 and a 2 s session
  (Tansu holds every JoinGroup for half the session timeout; shared BROKER-NOTES).

The kind is configured (``OFFERSTREAM_BROKER_KIND=kafka|tansu``) or detected from the broker's
ApiVersions answer: Apache Kafka has answered OffsetForLeaderEpoch (API 23) and CreatePartitions
(API 37) since 1.0 and 1.0.1; the bundled broker answers neither, so a broker without them gets
the conservative treatment. The worker started with the embedded broker is ``tansu`` without
asking.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from stream.embedded.kafka_wire import api_versions

__all__ = ["BrokerProfile", "detect_kind", "profile_for", "KINDS", "bootstrap_servers"]

KINDS = ("kafka", "tansu")
#: API keys every Apache Kafka since 1.0.1 answers and the bundled broker does not.
KAFKA_ONLY_APIS = frozenset({23, 37})


@dataclass(frozen=True)
class BrokerProfile:
    """What a worker does differently per broker kind (see the module docstring)."""

    kind: str
    replication: int
    min_insync: int
    session_timeout_s: float
    heartbeat_s: float

    @property
    def tansu_workarounds(self) -> bool:
        """True on the bundled broker: its transport patch and the offset-hole guard apply."""
        return self.kind == "tansu"


def bootstrap_servers(broker: str) -> list[tuple[str, int]]:
    """``(host, port)`` of each address of a ``--broker`` list (``kafka://`` prefixes allowed).

    >>> bootstrap_servers("kafka://k1:9092,kafka://k2:9093")
    [('k1', 9092), ('k2', 9093)]
    """
    out = []
    for part in broker.split(","):
        host, _, port = part.strip().removeprefix("kafka://").rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"--broker: {part!r} is not kafka://host:port")
        out.append((host, int(port)))
    return out


def detect_kind(broker: str, timeout: float = 3.0,
                ask: Callable[..., dict[int, tuple[int, int]]] = api_versions) -> str:
    """``kafka`` or ``tansu``, from the first bootstrap broker that answers ApiVersions.

    ``ask(host, port, timeout=...)`` sends the request (a parameter for tests).

    Raises
    ------
    ConnectionError
        If no bootstrap broker answers within ``timeout`` each (named in the message).
    """
    errors = []
    for host, port in bootstrap_servers(broker):
        try:
            apis = ask(host, port, timeout=timeout)
        except (OSError, ValueError) as exc:
            errors.append(f"{host}:{port}: {exc}")
            continue
        return "kafka" if set(apis) >= KAFKA_ONLY_APIS else "tansu"
    raise ConnectionError("no broker answered at " + "; ".join(errors))


def profile_for(kind: str, *, replication: int | None = None, min_insync: int | None = None) -> BrokerProfile:
    """The settings of a broker kind; ``replication``/``min_insync`` override its defaults."""
    if kind not in KINDS:
        raise ValueError(f"OFFERSTREAM_BROKER_KIND must be one of {', '.join(KINDS)}, not {kind!r}")
    if kind == "tansu":
        return BrokerProfile("tansu", replication or 1, min_insync or 1, session_timeout_s=2.0, heartbeat_s=0.5)
    replication = replication or 3
    return BrokerProfile("kafka", replication, min_insync or min(2, replication),
                         session_timeout_s=10.0, heartbeat_s=3.0)

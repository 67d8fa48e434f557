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

import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from stream.embedded import kafka_wire
from stream.embedded.kafka_wire import api_versions

__all__ = ["BrokerProfile", "detect_kind", "profile_for", "KINDS", "bootstrap_servers",
           "SECURITY_PROTOCOLS", "SASL_MECHANISMS", "BrokerAuthError", "check_security",
           "client_security", "faust_credentials", "use_client_security", "check_access"]

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
                ask: Callable[..., dict[int, tuple[int, int]]] = api_versions,
                ssl_context: ssl.SSLContext | None = None) -> str:
    """``kafka`` or ``tansu``, from the first bootstrap broker that answers ApiVersions.

    ``ask(host, port, timeout=...)`` sends the request (a parameter for tests); with an
    ``ssl_context`` (protocols ``SSL`` and ``SASL_SSL``) it is sent over TLS. Kafka answers
    ApiVersions before SASL authentication, so the probe needs no credentials.

    Raises
    ------
    BrokerAuthError
        If every bootstrap broker failed the TLS handshake (e.g. an untrusted certificate).
    ConnectionError
        If no bootstrap broker answers within ``timeout`` each (named in the message).
    """
    errors = []
    tls_errors = []
    for host, port in bootstrap_servers(broker):
        try:
            if ssl_context is None:
                apis = ask(host, port, timeout=timeout)
            else:
                apis = ask(host, port, timeout=timeout, ssl_context=ssl_context)
        except ssl.SSLError as exc:
            tls_errors.append(f"{host}:{port}: {exc}")
            errors.append(f"{host}:{port}: {exc}")
            continue
        except (OSError, ValueError) as exc:
            errors.append(f"{host}:{port}: {exc}")
            continue
        return "kafka" if set(apis) >= KAFKA_ONLY_APIS else "tansu"
    if tls_errors and len(tls_errors) == len(errors):
        raise BrokerAuthError("TLS handshake failed at " + "; ".join(tls_errors)
                              + " (check OFFERSTREAM_BROKER_CA_FILE, OFFERSTREAM_BROKER_CERT_FILE "
                              "and OFFERSTREAM_BROKER_SECURITY_PROTOCOL)")
    raise ConnectionError("no broker answered at " + "; ".join(errors))


# -- security: TLS and SASL ------------------------------------------------------------------

SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")


class BrokerAuthError(ConnectionError):
    """The broker refused this client's TLS handshake or SASL credentials."""


def check_security(settings: Any) -> None:
    """Refuse inconsistent ``OFFERSTREAM_BROKER_*`` security settings before any connection.

    Raises
    ------
    ValueError
        One line naming the setting: an unknown protocol or mechanism, SASL without a user or
        password, a mechanism without SASL, a CA, certificate or key file that does not exist,
        or a key without a certificate.
    """
    protocol = settings.broker_security_protocol
    if protocol not in SECURITY_PROTOCOLS:
        raise ValueError(f"OFFERSTREAM_BROKER_SECURITY_PROTOCOL must be one of {', '.join(SECURITY_PROTOCOLS)}, "
                         f"not {protocol!r}")
    mechanism = settings.broker_sasl_mechanism
    if protocol.startswith("SASL_"):
        if mechanism and mechanism not in SASL_MECHANISMS:
            raise ValueError(f"OFFERSTREAM_BROKER_SASL_MECHANISM must be one of {', '.join(SASL_MECHANISMS)}, "
                             f"not {mechanism!r}")
        if not settings.broker_user:
            raise ValueError("OFFERSTREAM_BROKER_USER is required with "
                             f"OFFERSTREAM_BROKER_SECURITY_PROTOCOL={protocol}")
        if not settings.broker_password:
            raise ValueError("OFFERSTREAM_BROKER_PASSWORD is required with "
                             f"OFFERSTREAM_BROKER_SECURITY_PROTOCOL={protocol}")
    elif mechanism:
        raise ValueError(f"OFFERSTREAM_BROKER_SASL_MECHANISM={mechanism} needs "
                         "OFFERSTREAM_BROKER_SECURITY_PROTOCOL=SASL_PLAINTEXT or SASL_SSL")
    files = (("OFFERSTREAM_BROKER_CA_FILE", settings.broker_ca_file),
             ("OFFERSTREAM_BROKER_CERT_FILE", settings.broker_cert_file),
             ("OFFERSTREAM_BROKER_KEY_FILE", settings.broker_key_file))
    given = [name for name, path in files if path is not None]
    if given and not protocol.endswith("SSL"):
        raise ValueError(f"{given[0]} needs OFFERSTREAM_BROKER_SECURITY_PROTOCOL=SSL or SASL_SSL")
    for name, path in files:
        if path is not None and not path.is_file():
            raise ValueError(f"{name}: {path} does not exist")
    if settings.broker_key_file is not None and settings.broker_cert_file is None:
        raise ValueError("OFFERSTREAM_BROKER_KEY_FILE needs OFFERSTREAM_BROKER_CERT_FILE")


def _ssl_context(settings: Any) -> ssl.SSLContext:
    from aiokafka.helpers import create_ssl_context

    def text(path: Any) -> str | None:
        return str(path) if path is not None else None

    try:
        return create_ssl_context(cafile=text(settings.broker_ca_file), certfile=text(settings.broker_cert_file),
                                  keyfile=text(settings.broker_key_file))
    except (ssl.SSLError, OSError) as exc:
        raise ValueError("OFFERSTREAM_BROKER_CA_FILE/CERT_FILE/KEY_FILE: cannot load "
                         f"{exc.__class__.__name__}: {exc}") from None


def client_security(settings: Any) -> dict[str, Any]:
    """The aiokafka client options of the settings' TLS and SASL (one place for every client).

    ``{}`` for ``PLAINTEXT``, so a plaintext client is built exactly as before; otherwise
    ``security_protocol`` and, as they apply, ``ssl_context`` (CA, client certificate and key),
    ``sasl_mechanism``, ``sasl_plain_username`` and ``sasl_plain_password``. Raises
    ``ValueError`` (naming the setting) where :func:`check_security` would.
    """
    check_security(settings)
    protocol = settings.broker_security_protocol
    if protocol == "PLAINTEXT":
        return {}
    options: dict[str, Any] = {"security_protocol": protocol}
    if protocol.endswith("SSL"):
        options["ssl_context"] = _ssl_context(settings)
    if protocol.startswith("SASL_"):
        options.update(sasl_mechanism=settings.broker_sasl_mechanism or "PLAIN",
                       sasl_plain_username=settings.broker_user, sasl_plain_password=settings.broker_password)
    return options


def faust_credentials(security: Mapping[str, Any]) -> Any:
    """The ``faust.App(broker_credentials=...)`` of :func:`client_security` options (``None``: plaintext).

    faust's aiokafka driver maps ``SASLCredentials`` (with an ``ssl_context``: ``SASL_SSL``) and
    ``SSLCredentials`` back to the same aiokafka options (``credentials_to_aiokafka_auth``).
    """
    import faust

    protocol = security.get("security_protocol", "PLAINTEXT")
    if protocol == "PLAINTEXT":
        return None
    if protocol == "SSL":
        return faust.SSLCredentials(security["ssl_context"])
    return faust.SASLCredentials(username=security["sasl_plain_username"], password=security["sasl_plain_password"],
                                 ssl_context=security.get("ssl_context"), mechanism=security["sasl_mechanism"])


def use_client_security(settings: Any) -> dict[str, Any]:
    """Make the settings' TLS/SASL the default of every Kafka client this process opens; return it.

    The clients built without an explicit ``security`` argument -- the catalogue and erasure
    mirrors (:class:`stream.catalogue.TopicMirror`), the readiness probe and the admin client of
    :mod:`stream.embedded.kafka_wire` -- take it from here. Called by :func:`stream.app.create_app`
    and by the CLI before its first connection.
    """
    security = client_security(settings)
    kafka_wire.set_default_security(security)
    return security


def profile_for(kind: str, *, replication: int | None = None, min_insync: int | None = None) -> BrokerProfile:
    """The settings of a broker kind; ``replication``/``min_insync`` override its defaults."""
    if kind not in KINDS:
        raise ValueError(f"OFFERSTREAM_BROKER_KIND must be one of {', '.join(KINDS)}, not {kind!r}")
    if kind == "tansu":
        return BrokerProfile("tansu", replication or 1, min_insync or 1, session_timeout_s=2.0, heartbeat_s=0.5)
    replication = replication or 3
    return BrokerProfile("kafka", replication, min_insync or min(2, replication),
                         session_timeout_s=10.0, heartbeat_s=3.0)


async def check_access(bootstrap: str, timeout: float = 10.0, *,
                       security: Mapping[str, Any] | None = None) -> None:
    """Open one authenticated connection to a bootstrap broker and ask it for metadata.

    aiokafka's clients log a refused TLS handshake or SASL login and retry for as long as they
    are allowed; this raises the broker's own reason instead, at once: the first bootstrap broker
    that answers decides (a wrong password is wrong on every broker).

    Raises
    ------
    ssl.SSLError
        The TLS handshake failed (an untrusted or mismatched certificate).
    aiokafka.errors.KafkaError
        SASL authentication failed (``SaslAuthenticationFailed``, ``UnsupportedSaslMechanismError``,
        ...), or the broker refused the request.
    OSError, asyncio.TimeoutError
        No bootstrap broker could be reached within ``timeout`` each.
    """
    import asyncio

    from aiokafka.conn import create_conn
    from aiokafka.protocol.metadata import MetadataRequest

    options = kafka_wire.default_security() if security is None else dict(security)
    last: BaseException | None = None
    for part in bootstrap.split(","):
        host, _, port = part.strip().removeprefix("kafka://").rpartition(":")
        try:
            conn = await asyncio.wait_for(create_conn(
                host, int(port), client_id="offerstream-admin", request_timeout_ms=int(timeout * 1000),
                **options), timeout)
        except (TimeoutError, OSError) as exc:
            if isinstance(exc, ssl.SSLError):
                raise
            last = exc
            continue
        try:
            await asyncio.wait_for(conn.send(MetadataRequest([])), timeout)
        finally:
            conn.close()
        return
    assert last is not None
    raise last

"""The Kafka protocol spoken by hand: a Metadata probe over a plain socket, and topic creation.

:func:`kafka_metadata` is a dependency-free, synchronous readiness probe (it proves that something
speaks Kafka and says which cluster answered); :func:`create_topics` creates topics through
aiokafka's admin client and checks the partition counts of those that exist. Both work against
the embedded broker and a real Kafka cluster alike.
"""

from __future__ import annotations

import os
import socket
import ssl
import struct
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any, Final, NamedTuple

__all__ = ["BrokerMetadata", "api_versions", "create_topics", "describe_topics", "kafka_metadata",
           "set_default_security", "default_security"]

#: The aiokafka security options (``stream.brokers.client_security``) of the clients this process
#: opens without being given any: ``{}`` is plaintext. Set once at start (``set_default_security``).
_DEFAULT_SECURITY: dict[str, Any] = {}
_UNSET: Any = object()


def set_default_security(security: Mapping[str, Any]) -> None:
    """Use ``security`` (aiokafka options; ``{}`` = plaintext) for clients opened without their own."""
    _DEFAULT_SECURITY.clear()
    _DEFAULT_SECURITY.update(security)


def default_security() -> dict[str, Any]:
    """The security options set by :func:`set_default_security` (a copy; ``{}`` = plaintext)."""
    return dict(_DEFAULT_SECURITY)


def _resolve(security: Mapping[str, Any] | None) -> dict[str, Any]:
    return dict(_DEFAULT_SECURITY if security is None else security)


@contextmanager
def _connect(host: str, port: int, timeout: float, ssl_context: ssl.SSLContext | None) -> Iterator[socket.socket]:
    """A TCP connection to ``host:port``, wrapped in TLS when an ``ssl_context`` is given."""
    with socket.create_connection((host, port), timeout=timeout) as raw:
        if ssl_context is None:
            yield raw
            return
        with ssl_context.wrap_socket(raw, server_hostname=host) as tls:
            yield tls

#: Kafka protocol: Metadata request key and the version spoken here (v2: has cluster_id).
_API_METADATA: Final = 3
_METADATA_VERSION: Final = 2
_CLIENT_ID: Final = b"offerstream-probe"

#: ApiVersions request key (v0: no body, the simplest answer every broker gives).
_API_VERSIONS: Final = 18

#: Kafka error code returned by CreateTopics when the topic already exists.
_TOPIC_ALREADY_EXISTS: Final = 36


class BrokerMetadata(NamedTuple):
    """What a Kafka Metadata response says about the cluster (see :func:`kafka_metadata`)."""

    cluster_id: str | None
    controller_id: int
    brokers: list[tuple[int, str, int]]


def kafka_metadata(host: str, port: int, timeout: float = 2.0, *,
                   ssl_context: ssl.SSLContext | None = _UNSET, sasl: bool | None = None) -> BrokerMetadata:
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
    ssl_context : ssl.SSLContext or None, optional
        TLS for the connection (``SSL``, ``SASL_SSL``); unset: the process default
        (:func:`set_default_security`), ``None``: plaintext.
    sasl : bool, optional
        Whether the listener wants SASL (default: the process default's). Kafka answers only
        ApiVersions and SaslHandshake before SASL authentication, which this probe does not do: an
        ApiVersions answer is then the proof, and the result is ``BrokerMetadata(None, -1, [])``.

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
    if ssl_context is _UNSET:
        ssl_context = _DEFAULT_SECURITY.get("ssl_context")
    if sasl is None:
        sasl = str(_DEFAULT_SECURITY.get("security_protocol", "")).startswith("SASL_")
    if sasl:
        api_versions(host, port, timeout=timeout, ssl_context=ssl_context)
        return BrokerMetadata(None, -1, [])
    correlation_id = int.from_bytes(os.urandom(4), "big") & 0x7FFFFFFF
    # Request header v1: api_key, api_version, correlation_id, client_id (nullable string).
    header = struct.pack(">hhih", _API_METADATA, _METADATA_VERSION, correlation_id, len(_CLIENT_ID))
    # Metadata v2 body: topics = null array (-1) means "no topics", which keeps the reply small.
    body = struct.pack(">i", -1)
    request = header + _CLIENT_ID + body
    deadline = time.monotonic() + timeout
    with _connect(host, port, timeout, ssl_context) as sock:
        sock.sendall(struct.pack(">i", len(request)) + request)
        size = struct.unpack(">i", _recv_exactly(sock, 4, deadline))[0]
        if not 8 <= size <= 16 * 1024 * 1024:
            raise ValueError(f"implausible Kafka response size {size}")
        payload = _recv_exactly(sock, size, deadline)
    try:
        return _parse_metadata(payload, correlation_id)
    except (struct.error, UnicodeDecodeError) as exc:
        raise ValueError(f"malformed Kafka Metadata response: {exc}") from exc


def api_versions(host: str, port: int, timeout: float = 2.0, *,
                 ssl_context: ssl.SSLContext | None = None) -> dict[int, tuple[int, int]]:
    """The API keys a broker supports, with their version ranges (one ApiVersions v0 request).

    With an ``ssl_context`` the request goes over TLS. Kafka answers ApiVersions before SASL
    authentication, so this works on a SASL listener without credentials.

    Raises
    ------
    OSError
        If the connection fails or times out (``ssl.SSLError`` if the TLS handshake fails).
    ValueError
        If the answer is not a well-formed ApiVersions response, or reports an error.
    """
    correlation_id = int.from_bytes(os.urandom(4), "big") & 0x7FFFFFFF
    request = struct.pack(">hhih", _API_VERSIONS, 0, correlation_id, len(_CLIENT_ID)) + _CLIENT_ID
    deadline = time.monotonic() + timeout
    with _connect(host, port, timeout, ssl_context) as sock:
        sock.sendall(struct.pack(">i", len(request)) + request)
        size = struct.unpack(">i", _recv_exactly(sock, 4, deadline))[0]
        if not 10 <= size <= 1024 * 1024:
            raise ValueError(f"implausible Kafka response size {size}")
        payload = _recv_exactly(sock, size, deadline)
    try:
        got_id, error, count = struct.unpack_from(">ihi", payload, 0)
        if got_id != correlation_id or error != 0 or not 0 <= count <= 10_000:
            raise ValueError(f"ApiVersions answered error {error} (correlation {got_id}, {count} keys)")
        keys = (struct.unpack_from(">hhh", payload, 10 + 6 * i) for i in range(count))
        return {key: (low, high) for key, low, high in keys}
    except struct.error as exc:
        raise ValueError(f"malformed ApiVersions response: {exc}") from exc


def _parse_metadata(payload: bytes, correlation_id: int) -> BrokerMetadata:
    """Decode a Metadata v2 response (without its size prefix) to the request ``correlation_id``."""
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



async def describe_topics(bootstrap: str, names: list[str], timeout: float = 10.0, *,
                          security: Mapping[str, Any] | None = None) -> dict[str, tuple[int, str]]:
    """``(partitions, cleanup.policy)`` of each existing topic among ``names``; missing ones are left out.

    ``security``: aiokafka TLS/SASL options (default: the process default, :func:`set_default_security`).
    """
    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

    servers = ",".join(part.removeprefix("kafka://") for part in bootstrap.split(","))
    admin = AIOKafkaAdminClient(bootstrap_servers=servers, request_timeout_ms=int(timeout * 1000),
                                client_id="offerstream-admin", **_resolve(security))
    await admin.start()
    try:
        # only those that exist: describing a missing topic would create it where the broker
        # auto-creates topics (Kafka's default), with the broker's partition count
        present = [name for name in names if name in set(await admin.list_topics())]
        if not present:
            return {}
        partitions = {d["topic"]: len(d["partitions"]) for d in await admin.describe_topics(present)
                      if d.get("error_code", 0) == 0 and d.get("partitions")}
        if not partitions:
            return {}
        responses = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, name, {"cleanup.policy": None}) for name in partitions])
        policies = {name: "delete" for name in partitions}
        for response in responses:
            for resource in response.resources:
                for entry in resource[4]:
                    if entry[0] == "cleanup.policy" and resource[3] in policies:
                        policies[resource[3]] = str(entry[1])
        return {name: (count, policies[name]) for name, count in partitions.items()}
    finally:
        await admin.close()


async def create_topics(
    bootstrap: str,
    topics: Mapping[str, int],
    timeout: float = 10.0,
    *,
    replication_factor: int = 1,
    configs: Mapping[str, Mapping[str, str]] | None = None, security: Mapping[str, Any] | None = None,
) -> dict[str, bool]:
    """Create topics with the given partition counts; existing topics are checked, not changed.

    Tansu supports CreateTopics (and answers ``TOPIC_ALREADY_EXISTS`` for a duplicate), so this
    works against the embedded broker and a real Kafka cluster alike.

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
    security : mapping, optional
        aiokafka TLS/SASL options (default: :func:`set_default_security`'s).

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
    from aiokafka.admin import AIOKafkaAdminClient

    if not topics:
        return {}
    servers = ",".join(part.removeprefix("kafka://") for part in bootstrap.split(","))
    timeout_ms = max(1, int(timeout * 1000))
    admin = AIOKafkaAdminClient(bootstrap_servers=servers, request_timeout_ms=timeout_ms,
                                client_id="offerstream-admin", **_resolve(security))
    await admin.start()
    try:
        new = _new_topics(topics, replication_factor, configs or {})
        response = await admin.create_topics(new, timeout_ms=timeout_ms)
        result = _created_or_existing(response.topic_errors, servers)
        existing = [name for name, created in result.items() if not created]
        if existing:
            _check_partitions(await admin.describe_topics(existing), topics, servers)
        return result
    finally:
        await admin.close()


def _new_topics(topics: Mapping[str, int], replication_factor: int,
                configs: Mapping[str, Mapping[str, str]]) -> list[Any]:
    """The ``NewTopic`` requests for ``topics`` (name to partitions) and their ``configs``."""
    from aiokafka.admin import NewTopic

    return [
        NewTopic(
            name,
            num_partitions=partitions,
            replication_factor=replication_factor,
            topic_configs=dict(configs.get(name, {})),
        )
        for name, partitions in topics.items()
    ]


def _created_or_existing(topic_errors: list[Any], servers: str) -> dict[str, bool]:
    """Per topic of a CreateTopics answer: created (``True``) or already there (``False``).

    Raises ``RuntimeError`` for any other error code.
    """
    result: dict[str, bool] = {}
    for error in topic_errors:
        name, code = error[0], error[1]
        message = error[2] if len(error) > 2 else None
        if code == 0:
            result[name] = True
        elif code == _TOPIC_ALREADY_EXISTS:
            result[name] = False
        else:
            raise RuntimeError(
                f"cannot create topic {name!r} on {servers}: error {code} {message or ''}"
            )
    return result


def _check_partitions(described: list[Any], topics: Mapping[str, int], servers: str) -> None:
    """Raise ``RuntimeError`` if a described topic has another partition count than requested."""
    for desc in described:
        have = len(desc["partitions"])
        want = topics[desc["topic"]]
        if have != want:
            raise RuntimeError(
                f"topic {desc['topic']!r} exists on {servers} with {have} partitions, "
                f"expected {want}"
            )

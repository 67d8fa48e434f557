"""One frozen settings object, read from the CLI and ``OFFERSTREAM_*`` environment variables.

Secrets (API keys, the hash key) are never printed: ``repr`` masks them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from models.consent import DEFAULT_TCF_BASIS, check_tcf_basis
from models.errors import InvalidConsent
from models.ledger import read_hash_key
from models.tokens import token_key

__all__ = ["Settings", "load_settings", "load_broker_security", "checked_tcf_basis"]

SECRET_FIELDS = frozenset({"api_key", "score_key", "hash_key", "broker_password", "token_key"})


@dataclass(frozen=True)
class Settings:
    """Worker settings.

    Attributes
    ----------
    broker : str or None
        ``kafka://host:port``; ``None`` means "start the bundled broker on loopback".
    host, port : str, int
        Where this worker's HTTP API listens (and the URL other workers forward requests to).
    shared_port : int or None
        A second port on ``host`` that this worker listens on with ``SO_REUSEPORT``, shared with
        the other worker processes of the host (``serve --processes``, ``--shared-port``,
        ``OFFERSTREAM_SHARED_PORT``): the kernel spreads new connections over them.
    data_dir : Path
        Local state: RocksDB tables, model registry, hash key.
    partitions : int
        Partitions of the ``events`` topic and of the tables (must match across workers).
    app_id : str
        Kafka consumer group and topic prefix of the tables.
    api_key, score_key : str or None
        Bearer keys for write/admin calls and for ``POST /v1/score``.
    hash_key : bytes
        Key of the HMAC that hashes customer ids in logs and the audit trail.
    model_poll_s : float
        How often workers look for a newly promoted model.
    exploration : str
        ``greedy`` (default), ``epsilon:E`` or ``softmax:T``; see :mod:`models.exploration`.
    tcf_basis : str
        Which consents of a TC string speak for the flags (``OFFERSTREAM_TCF_BASIS``):
        ``purposes`` (default), ``publisher``, ``publisher:<id>`` or ``vendor:<id>``; see
        :func:`models.tcf.parse_basis`. Handed explicitly to whatever reads a TC string (the ingest
        agent, the consent and score calls); :func:`load_settings` checks it.
    token_key : bytes or None
        ``OFFERSTREAM_TOKEN_KEY``: the key of the customer tokens a shop's backend mints for its
        pages (:mod:`models.tokens`; a secret, at least 16 bytes). ``None``: no token is taken.
    cors_origins : tuple of str
        ``OFFERSTREAM_CORS_ORIGINS`` (comma-separated): the origins whose pages may call the score
        and event calls from a browser. Empty: none.
    registry : Path or None
        A model registry shared by several workers (default: ``data_dir/models``).
    broker_kind : str
        ``kafka``, ``tansu``, or ``""`` to detect it (:mod:`stream.brokers`).
    replication, min_insync : int or None
        Replication factor and ``min.insync.replicas`` of the topics a worker creates; ``None``
        takes the broker kind's default (3 and 2 on Kafka, 1 on the bundled broker).
    broker_security_protocol : str
        ``PLAINTEXT`` (default), ``SSL``, ``SASL_PLAINTEXT`` or ``SASL_SSL``
        (``OFFERSTREAM_BROKER_SECURITY_PROTOCOL``); checked by :func:`stream.brokers.check_security`.
    broker_sasl_mechanism : str
        ``PLAIN``, ``SCRAM-SHA-256`` or ``SCRAM-SHA-512`` with a SASL protocol (default ``PLAIN``).
    broker_user, broker_password : str or None
        The SASL user and password (``OFFERSTREAM_BROKER_USER``, ``OFFERSTREAM_BROKER_PASSWORD``;
        the password is a secret: masked in ``repr``, only ever read from the environment).
    broker_ca_file, broker_cert_file, broker_key_file : Path or None
        PEM files: the CA that signed the brokers' certificates (default: the system's trust
        store), and an optional client certificate and its key (TLS client authentication).
    """

    broker: str | None = None
    host: str = "127.0.0.1"
    port: int = 6066
    shared_port: int | None = None
    data_dir: Path = Path("offerstream-data")
    partitions: int = 4
    app_id: str = "offerstream"
    api_key: str | None = None
    score_key: str | None = None
    hash_key: bytes = field(default=b"", repr=False)
    model_poll_s: float = 2.0
    log_level: str = "WARNING"
    exploration: str = "greedy"
    tcf_basis: str = DEFAULT_TCF_BASIS
    token_key: bytes | None = field(default=None, repr=False)
    cors_origins: tuple[str, ...] = ()
    registry: Path | None = None
    store: str = "offerstream-rocksdb://"
    event_loop: str = ""  # "uvloop", "asyncio", or "" = uvloop where installed
    broker_kind: str = ""
    replication: int | None = None
    min_insync: int | None = None
    broker_security_protocol: str = "PLAINTEXT"
    broker_sasl_mechanism: str = ""
    broker_user: str | None = None
    broker_password: str | None = field(default=None, repr=False)
    broker_ca_file: Path | None = None
    broker_cert_file: Path | None = None
    broker_key_file: Path | None = None

    def __repr__(self) -> str:
        shown = {f.name: ("***" if f.name in SECRET_FIELDS and getattr(self, f.name) else getattr(self, f.name))
                 for f in fields(self)}
        return "Settings(" + ", ".join(f"{k}={v!r}" for k, v in shown.items()) + ")"

    @property
    def registry_dir(self) -> Path:
        """The model registry of this installation (shared when ``registry`` is set)."""
        return self.registry if self.registry is not None else self.data_dir / "models"

    @property
    def table_dir(self) -> Path:
        """Where this worker's RocksDB tables live (one folder per port: one per worker)."""
        return self.data_dir / f"worker-{self.port}"

    @property
    def archive_dir(self) -> Path:
        """The local event archive (JSON lines by date), shared by the workers of this data dir."""
        return self.data_dir / "archive"

    @property
    def url(self) -> str:
        """This worker's own base URL."""
        return f"http://{self.host}:{self.port}"


def _hash_key(data_dir: Path) -> bytes:
    """The installation's HMAC key: from the environment, else created once in ``data_dir``."""
    return read_hash_key(data_dir, create=True)


_SECURITY_FIELDS = ("broker_security_protocol", "broker_sasl_mechanism", "broker_user", "broker_password",
                    "broker_ca_file", "broker_cert_file", "broker_key_file")


def load_broker_security(**overrides: Any) -> Settings:
    """Only the broker TLS/SASL settings (environment, then ``overrides``), without touching a data dir.

    For commands that talk to a broker but keep no state (``offerstream produce``).
    """
    values = _security_values(os.environ)
    values.update({k: v for k, v in overrides.items() if v is not None and k in _SECURITY_FIELDS})
    return Settings(**_normalized_security(values))


def _security_values(env: Any) -> dict[str, Any]:
    return {
        "broker_security_protocol": env.get("OFFERSTREAM_BROKER_SECURITY_PROTOCOL") or "PLAINTEXT",
        "broker_sasl_mechanism": env.get("OFFERSTREAM_BROKER_SASL_MECHANISM", ""),
        "broker_user": env.get("OFFERSTREAM_BROKER_USER") or None,
        "broker_password": env.get("OFFERSTREAM_BROKER_PASSWORD") or None,
        "broker_ca_file": _path_or_none(env.get("OFFERSTREAM_BROKER_CA_FILE")),
        "broker_cert_file": _path_or_none(env.get("OFFERSTREAM_BROKER_CERT_FILE")),
        "broker_key_file": _path_or_none(env.get("OFFERSTREAM_BROKER_KEY_FILE")),
    }


def _normalized_security(values: dict[str, Any]) -> dict[str, Any]:
    for name in ("broker_ca_file", "broker_cert_file", "broker_key_file"):
        if values.get(name) is not None:
            values[name] = Path(values[name])
    values["broker_security_protocol"] = str(values["broker_security_protocol"]).upper()
    values["broker_sasl_mechanism"] = str(values["broker_sasl_mechanism"]).upper()
    return values


def _path_or_none(value: str | None) -> Path | None:
    return Path(value) if value else None


def load_settings(**overrides: Any) -> Settings:
    """Settings from ``OFFERSTREAM_*`` variables, then CLI ``overrides`` (``None`` = not given)."""
    env = os.environ
    values: dict[str, Any] = {
        "broker": env.get("OFFERSTREAM_BROKER") or None,
        "host": env.get("OFFERSTREAM_HOST", "127.0.0.1"),
        "port": int(env.get("OFFERSTREAM_PORT", "6066")),
        "shared_port": int(env["OFFERSTREAM_SHARED_PORT"]) if env.get("OFFERSTREAM_SHARED_PORT") else None,
        "data_dir": Path(env.get("OFFERSTREAM_DATA_DIR", "offerstream-data")),
        "partitions": int(env.get("OFFERSTREAM_PARTITIONS", "4")),
        "app_id": env.get("OFFERSTREAM_APP_ID", "offerstream"),
        "api_key": env.get("OFFERSTREAM_API_KEY") or None,
        "score_key": env.get("OFFERSTREAM_SCORE_KEY") or None,
        "log_level": env.get("OFFERSTREAM_LOG_LEVEL", "WARNING"),
        "model_poll_s": float(env.get("OFFERSTREAM_MODEL_POLL_S", "2.0")),
        "exploration": env.get("OFFERSTREAM_EXPLORATION", "greedy"),
        "tcf_basis": env.get("OFFERSTREAM_TCF_BASIS") or DEFAULT_TCF_BASIS,
        "token_key": _token_key(env.get("OFFERSTREAM_TOKEN_KEY")),
        "cors_origins": _origins(env.get("OFFERSTREAM_CORS_ORIGINS", "")),
        "event_loop": env.get("OFFERSTREAM_EVENT_LOOP", ""),
        "registry": Path(env["OFFERSTREAM_REGISTRY"]) if env.get("OFFERSTREAM_REGISTRY") else None,
        "broker_kind": env.get("OFFERSTREAM_BROKER_KIND", ""),
        "replication": int(env["OFFERSTREAM_REPLICATION"]) if env.get("OFFERSTREAM_REPLICATION") else None,
        "min_insync": int(env["OFFERSTREAM_MIN_INSYNC"]) if env.get("OFFERSTREAM_MIN_INSYNC") else None,
        **_security_values(env),
    }
    values.update({k: v for k, v in overrides.items() if v is not None})
    values["data_dir"] = Path(values["data_dir"]).resolve()
    settings = Settings(**_normalized_security(values))
    checked_tcf_basis(settings.tcf_basis)
    return replace(settings, hash_key=_hash_key(settings.data_dir))


def _token_key(text: str | None) -> bytes | None:
    """``OFFERSTREAM_TOKEN_KEY`` as bytes (``None`` when unset); ValueError naming it if too short."""
    if not text:
        return None
    try:
        return token_key(text)
    except ValueError as exc:
        raise ValueError(f"OFFERSTREAM_TOKEN_KEY: {exc}") from None


def _origins(text: str) -> tuple[str, ...]:
    """``OFFERSTREAM_CORS_ORIGINS``: comma-separated ``scheme://host[:port]`` origins, checked."""
    origins = tuple(o.strip().rstrip("/") for o in text.split(",") if o.strip())
    for origin in origins:
        scheme, sep, rest = origin.partition("://")
        if scheme not in ("http", "https") or not sep or not rest or "/" in rest:
            raise ValueError(f"OFFERSTREAM_CORS_ORIGINS: {origin!r} is not an origin like https://shop.example")
    return origins


def checked_tcf_basis(basis: str) -> str:
    """``basis`` if it is a TCF basis (``OFFERSTREAM_TCF_BASIS``).

    Raises
    ------
    ValueError
        Naming ``OFFERSTREAM_TCF_BASIS`` (or ``--tcf-basis``) and what is wrong with the value.
    """
    try:
        return check_tcf_basis(basis)
    except InvalidConsent as exc:
        raise ValueError(f"OFFERSTREAM_TCF_BASIS (--tcf-basis): {exc.reason}") from None

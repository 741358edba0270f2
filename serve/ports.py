"""Loopback TCP ports: is one taken, and which are free to give a server."""

from __future__ import annotations

import socket
from collections.abc import Collection


def port_in_use(host: str, port: int) -> bool:
    """Whether ``host:port`` cannot be bound right now."""
    with socket.socket() as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


def free_port() -> int:
    """Return a TCP port free on 127.0.0.1 right now."""
    return free_ports(1)[0]


def free_ports(count: int, avoid: Collection[int] = ()) -> list[int]:
    """``count`` distinct TCP ports free on 127.0.0.1 right now, none of them in ``avoid``.

    Each is held open until all are chosen: asked one at a time, the kernel may hand the same
    port back twice (two gRPC ports alike, and TorchServe fails on "Address already in use").
    """
    held: list[socket.socket] = []
    ports: list[int] = []
    try:
        while len(ports) < count:
            sock = socket.socket()
            held.append(sock)
            sock.bind(("127.0.0.1", 0))
            if (port := int(sock.getsockname()[1])) not in avoid:
                ports.append(port)
        return ports
    finally:
        for sock in held:
            sock.close()

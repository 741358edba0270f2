"""Loopback ports for servers: distinct, free, and never one the caller already uses."""

from __future__ import annotations

import socket

from serve.ports import free_port, free_ports, port_in_use


def test_ports_asked_together_are_distinct_and_free() -> None:
    ports = free_ports(20)
    assert len(set(ports)) == 20  # one at a time, the kernel may hand the same port back twice
    assert not any(port_in_use("127.0.0.1", p) for p in ports)
    again = free_ports(20, avoid=set(ports))
    assert not set(again) & set(ports)  # e.g. TorchServe's gRPC ports, never its HTTP ones


def test_a_listening_port_is_in_use() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", free_port()))
        sock.listen()
        assert port_in_use("127.0.0.1", sock.getsockname()[1])

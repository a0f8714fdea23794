"""NodeSocketReader over stand-in namespaces: each socket gets the place of the namespace
whose dump listed it (and keeps it once reset, while its owner holds it), owners come from
this host's /proc, and a failed dump fails the whole read and closes that namespace's socket
(a namespace missing from one read would make its held sockets look reset)."""

from __future__ import annotations

import os
import socket
import struct
from collections.abc import Collection, Iterator
from contextlib import ExitStack
from typing import Any

import pytest

from exporter.addresses import endpoint
from exporter.deadline import Deadline
from exporter.model import Endpoint, Place, TcpState
from exporter.node import reader as node_reader
from exporter.node.reader import NodeSocketReader
from exporter.sockets import netlink
from exporter.sockets.kernel import KernelSocket
from tests.support.builders import soon


class StandIn:
    """What NodeSocketReader needs of exporter.node.namespaces.Namespaces."""

    def __init__(self, hostnames: dict[int, str]) -> None:
        self.channels = {inode: object() for inode in hostnames}
        self.hostnames = dict(hostnames)
        self.forgotten: list[int] = []

    def refresh(self) -> None:
        pass

    def items(self) -> Iterator[tuple[int, Any]]:
        return iter([(inode, type("E", (), {"channel": ch})()) for inode, ch in
                     self.channels.items()])

    def forget(self, inode: int) -> None:
        self.forgotten.append(inode)

    def close(self) -> None:
        pass


def row(client: socket.socket, port: int) -> KernelSocket:
    return KernelSocket(endpoint(*client.getsockname()), Endpoint("127.0.0.1", port),
                        TcpState.ESTABLISHED, os.fstat(client.fileno()).st_ino, os.getuid(),
                        1.0, False)


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket, socket.socket, int]]:
    with ExitStack() as stack:
        listener = stack.enter_context(socket.socket())
        listener.bind(("127.0.0.1", 0))
        listener.listen(4)
        port = listener.getsockname()[1]
        a = stack.enter_context(socket.create_connection(("127.0.0.1", port), 2))
        b = stack.enter_context(socket.create_connection(("127.0.0.1", port), 2))
        server_a, _ = listener.accept()
        stack.enter_context(server_a)
        yield a, b, server_a, port


def test_each_socket_gets_its_namespace_place_and_keeps_it_once_reset(
        pair: tuple[socket.socket, socket.socket, socket.socket, int],
        monkeypatch: pytest.MonkeyPatch) -> None:
    a, b, server_a, port = pair
    namespaces = StandIn({11: "pod-a", 22: "pod-b"})
    tables = {namespaces.channels[11]: [row(a, port)], namespaces.channels[22]: [row(b, port)]}

    def dump(ports: Collection[int], deadline: Deadline, *, channel: Any) -> list[KernelSocket]:
        return list(tables[channel])

    monkeypatch.setattr(node_reader.netlink, "dump_tcp", dump)
    reader = NodeSocketReader([port], namespaces=namespaces)  # type: ignore[arg-type]
    first = {s.inode: s for s in reader.read(soon()).sockets}
    assert {s.place for s in first.values()} == {
        Place(11, "pod-a"), Place(22, "pod-b")}
    assert all(s.pid == os.getpid() for s in first.values())
    # The server resets a's connection: it leaves pod-a's table, this process still holds it.
    server_a.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    server_a.close()
    tables[namespaces.channels[11]] = []
    second = {s.inode: s for s in reader.read(soon()).sockets}
    gone = second[os.fstat(a.fileno()).st_ino]
    assert gone.gone and gone.place == Place(11, "pod-a")
    assert second[os.fstat(b.fileno()).st_ino].place == Place(22, "pod-b")


def test_a_failed_dump_fails_the_read_and_closes_that_namespaces_socket(
        pair: tuple[socket.socket, socket.socket, socket.socket, int],
        monkeypatch: pytest.MonkeyPatch) -> None:
    a, _, _, port = pair
    namespaces = StandIn({11: "pod-a", 22: "pod-b"})
    broken = namespaces.channels[22]

    def dump(ports: Collection[int], deadline: Deadline, *, channel: Any) -> list[KernelSocket]:
        if channel is broken:
            raise netlink.NetlinkError(104, "Connection reset by peer")
        return [row(a, port)]

    monkeypatch.setattr(node_reader.netlink, "dump_tcp", dump)
    reader = NodeSocketReader([port], namespaces=namespaces)  # type: ignore[arg-type]
    with pytest.raises(netlink.NetlinkError, match="network namespace 22"):
        reader.read(soon())
    assert namespaces.forgotten == [22]

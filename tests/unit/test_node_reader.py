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
from exporter.node.namespaces import parse_ns_link
from exporter.node.reader import NodeSocketReader
from exporter.sockets import netlink
from exporter.sockets.kernel import KernelSocket
from tests.support.builders import soon


class StandIn:
    """What NodeSocketReader needs of exporter.node.namespaces.Namespaces."""

    def __init__(self, hostnames: dict[int, str], channels: dict[int, Any] | None = None,
                 pids: dict[int, int] | None = None) -> None:
        self.channels = channels if channels is not None else {
            inode: object() for inode in hostnames}
        self.hostnames = dict(hostnames)
        self.pids = pids or {}
        self.forgotten: list[int] = []

    def refresh(self) -> None:
        pass

    def pid(self, inode: int) -> int | None:
        return self.pids.get(inode)  # none by default: no connection count, every read dumps

    def channel(self, inode: int) -> Any:
        return self.channels[inode]

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


def own_netns() -> int:
    inode = parse_ns_link(os.readlink("/proc/self/ns/net"))
    assert inode is not None
    return inode


class OwnNamespace(StandIn):
    """This process's own namespace standing in for a pod's (as ``inode``): a real sock_diag
    socket, closed when forgotten and opened again when next asked for, as Namespaces does
    by entering the namespace again."""

    def __init__(self, inode: int, pid: int) -> None:
        super().__init__({inode: "pod-a"}, channels={inode: netlink.open_channel()},
                         pids={inode: pid})

    def forget(self, inode: int) -> None:
        super().forget(inode)
        channel = self.channels.pop(inode, None)
        if channel is not None:
            channel.close()

    def channel(self, inode: int) -> Any:
        if inode not in self.channels:
            self.channels[inode] = netlink.open_channel()
        return self.channels[inode]

    def close(self) -> None:
        for channel in self.channels.values():
            channel.close()


def test_a_quiet_namespace_is_looked_up_and_dumped_when_a_connection_opens_or_one_changes(
        pair: tuple[socket.socket, socket.socket, socket.socket, int],
        monkeypatch: pytest.MonkeyPatch) -> None:
    # Real dumps and lookups, the namespace's connection count read through its pid.
    a, b, _, port = pair
    netns = own_netns()
    opens = {"now": 7}
    read_from: list[str] = []

    def active_opens(path: str) -> int:
        read_from.append(path)
        return opens["now"]

    monkeypatch.setattr(node_reader, "active_opens", active_opens)
    namespaces = OwnNamespace(netns, os.getpid())
    reader = NodeSocketReader([port], namespaces=namespaces)  # type: ignore[arg-type]
    inode_a, inode_b = os.fstat(a.fileno()).st_ino, os.fstat(b.fileno()).st_ino

    def read() -> dict[int, float | None]:
        return {s.inode: s.idle_seconds for s in reader.read(soon()).sockets
                if s.inode in (inode_a, inode_b)}

    try:
        assert set(read()) == {inode_a, inode_b} and reader.lookups() == (1, 0)
        assert read_from == [f"/proc/{os.getpid()}/net/snmp"]
        assert set(read()) == {inode_a, inode_b} and reader.lookups() == (1, 1)
        assert namespaces.forgotten == []
        opens["now"] += 1  # a connection was opened from the namespace: it dumps
        assert set(read()) == {inode_a, inode_b} and reader.lookups() == (2, 1)
        b.close()  # a known socket is no longer as the dump saw it: looked up, then dumped
        assert set(read()) == {inode_a} and reader.lookups() == (3, 1)
        assert namespaces.forgotten == [netns]  # the socket the lookup used, maybe mid-batch
        assert set(read()) == {inode_a} and reader.lookups() == (3, 2)
    finally:
        namespaces.close()


def test_a_namespace_whose_process_left_it_is_dumped_at_every_read(
        pair: tuple[socket.socket, socket.socket, socket.socket, int],
        monkeypatch: pytest.MonkeyPatch) -> None:
    # The pid refresh() found may have ended, or be another namespace's process by now:
    # its counter says nothing about this namespace.
    _, _, _, port = pair
    monkeypatch.setattr(node_reader, "active_opens", lambda path: 7)
    namespaces = OwnNamespace(own_netns() + 1, os.getpid())  # this pid is not in that one
    reader = NodeSocketReader([port], namespaces=namespaces)  # type: ignore[arg-type]
    try:
        for dumps in (1, 2, 3):
            reader.read(soon())
            assert reader.lookups() == (dumps, 0)
    finally:
        namespaces.close()

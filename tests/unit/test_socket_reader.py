"""SocketReader on real loopback connections: owners, CLOSE_WAIT, and sockets reset by
the server (gone from the kernel's table, still held by this process)."""

from __future__ import annotations

import errno
import logging
import os
import socket
import struct
import time
from collections.abc import Callable, Collection, Iterator
from contextlib import ExitStack
from typing import Literal

import psutil
import pytest

from exporter.addresses import endpoint
from exporter.deadline import Deadline
from exporter.model import Endpoint, Socket, TcpState
from exporter.sockets import netlink
from exporter.sockets.appname import application_name
from exporter.sockets.kernel import KernelSocket
from exporter.sockets.lookup import KnownSockets
from exporter.sockets.owners import OwnerMap
from exporter.sockets.reader import Dump, SocketReader, SocketReading, Source
from tests.support.builders import soon

MY_COMM = psutil.Process().name()
# pytest, whether run as its script or as `python -m pytest`.
MY_NAME = application_name(MY_COMM, psutil.Process().cmdline())


class FakeClock:
    def __init__(self) -> None:
        self.now = 5000.0

    def __call__(self) -> float:
        return self.now


class Connection:
    """A listener on 127.0.0.1 and one client connection to it, held by this process."""

    def __init__(self, stack: ExitStack) -> None:
        listener = stack.enter_context(socket.socket())
        listener.bind(("127.0.0.1", 0))
        listener.listen(4)
        self.port: int = listener.getsockname()[1]
        self.client = stack.enter_context(socket.create_connection(("127.0.0.1", self.port), 2))
        server, _ = listener.accept()
        self.server = stack.enter_context(server)
        self.client.sendall(b"hello")
        assert self.server.recv(5) == b"hello"
        self.inode = os.fstat(self.client.fileno()).st_ino

    def reset_from_server(self) -> None:
        # SO_LINGER with a zero timeout makes close() send RST instead of FIN.
        self.server.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.server.close()

    def expected(self, **changes: object) -> Socket:
        base = Socket(
            local=endpoint(*self.client.getsockname()),
            remote=Endpoint("127.0.0.1", self.port),
            state=TcpState.ESTABLISHED,
            inode=self.inode,
            uid=os.getuid(),
            idle_seconds=None,
            keepalive=False,
            pid=os.getpid(),
            process=MY_NAME,
            gone=False,
            comm=MY_COMM,
        )
        return base._replace(**changes)


@pytest.fixture
def connection() -> Iterator[Connection]:
    with ExitStack() as stack:
        yield Connection(stack)


def mine(reading: SocketReading, inode: int) -> list[Socket]:
    return [s for s in reading.sockets if s.inode == inode]


def read_until(
    reader: SocketReader, done: Callable[[SocketReading], bool], timeout: float = 2.0
) -> SocketReading:
    deadline = time.monotonic() + timeout
    while True:
        reading = reader.read(soon())
        if done(reading) or time.monotonic() > deadline:
            return reading
        time.sleep(0.01)


@pytest.mark.parametrize("source", ["auto", "proc", "lookups"])
def test_reset_socket_is_reported_gone_until_its_descriptor_is_closed(
    connection: Connection, source: Source | Literal["lookups"]
) -> None:
    clock = FakeClock()
    known: KnownSockets | None = None
    if source == "lookups":
        # The exporter's own reader: known sockets looked up between dumps. No connection
        # is opened (the counter stands still), so only the lookup can see the reset.
        known = KnownSockets(60.0, clock=clock, opens=lambda: 7)
        reader = SocketReader([connection.port], clock=clock, netlink_dump=known)
        source = "auto"
    else:
        reader = SocketReader([connection.port], source=source, clock=clock)
    expected_source = "netlink" if source == "auto" else "proc"

    first = reader.read(soon())
    assert first.source == expected_source
    [alive] = mine(first, connection.inode)
    if source == "proc":
        assert alive.idle_seconds is None
    else:
        assert alive.idle_seconds is not None and 0 <= alive.idle_seconds < 1
    assert alive == connection.expected(idle_seconds=alive.idle_seconds)

    connection.reset_from_server()
    clock.now += 7
    second = read_until(reader, lambda r: any(s.gone for s in mine(r, connection.inode)))
    idle = None if alive.idle_seconds is None else alive.idle_seconds + 7
    assert mine(second, connection.inode) == [
        connection.expected(state=TcpState.CLOSE, gone=True, idle_seconds=idle)
    ]
    if known is not None:  # the lookup found the socket gone, and a dump followed
        assert known.last_reason == "a known socket changed"
    # The kernel itself no longer lists it: only the reader's memory does.
    listed = netlink.dump_tcp([connection.port], soon())
    assert connection.inode not in {row.inode for row in listed}

    clock.now += 3
    [still] = mine(reader.read(soon()), connection.inode)
    assert still.gone and still.idle_seconds == (None if idle is None else idle + 3)
    reader.close()

    # What the application would see on its next use: the reset.
    with pytest.raises(ConnectionResetError):
        connection.client.recv(1)
    assert mine(reader.read(soon()), connection.inode) != []  # reading the error closes nothing

    connection.client.close()
    assert mine(reader.read(soon()), connection.inode) == []
    assert mine(reader.read(soon()), connection.inode) == []


@pytest.mark.parametrize("source", ["netlink", "proc"])
def test_server_close_leaves_close_wait(connection: Connection, source: Source) -> None:
    reader = SocketReader([connection.port], source=source)
    connection.server.close()
    reading = read_until(
        reader,
        lambda r: [s.state for s in mine(r, connection.inode)] == [TcpState.CLOSE_WAIT],
    )
    [row] = mine(reading, connection.inode)
    assert row == connection.expected(state=TcpState.CLOSE_WAIT, idle_seconds=row.idle_seconds)
    assert (row.idle_seconds is None) is (source == "proc")


def test_only_watched_ports_and_durations(connection: Connection) -> None:
    with ExitStack() as stack:
        other = Connection(stack)
        reading = SocketReader([connection.port]).read(soon())
        assert {s.remote.port for s in reading.sockets} == {connection.port}
        ours = [s.inode for s in reading.sockets if s.pid == os.getpid()]
        assert ours == [connection.inode]
        assert other.inode not in {s.inode for s in reading.sockets}
        assert set(reading.durations) == {"sockets", "owners"}
        assert all(0 <= seconds < 1 for seconds in reading.durations.values())


def _counting(dump: Dump, calls: list[int]) -> Dump:
    def counted(ports: Collection[int], deadline: Deadline) -> list[KernelSocket]:
        calls.append(1)
        return dump(ports, deadline)

    return counted


def test_auto_falls_back_to_proc_for_good_when_netlink_is_unavailable(
    connection: Connection, caplog: pytest.LogCaptureFixture
) -> None:
    calls: list[int] = []

    def refuse(_: Collection[int], __: Deadline) -> list[KernelSocket]:
        raise netlink.NetlinkUnavailable(errno.EPERM, "not allowed")

    reader = SocketReader([connection.port], netlink_dump=_counting(refuse, calls))
    with caplog.at_level(logging.WARNING, logger="exporter.sockets.reader"):
        readings = [reader.read(soon()) for _ in range(3)]
    assert [r.source for r in readings] == ["proc"] * 3
    assert calls == [1]
    assert len(caplog.records) == 1
    assert "/proc/net/tcp" in caplog.records[0].getMessage()
    assert mine(readings[-1], connection.inode) == [connection.expected()]


def test_auto_uses_proc_once_on_a_transient_failure(connection: Connection) -> None:
    outcomes: list[Exception | None] = [netlink.NetlinkError(errno.ETIMEDOUT, "slow"), None]

    def flaky(ports: Collection[int], deadline: Deadline) -> list[KernelSocket]:
        failure = outcomes.pop(0)
        if failure is not None:
            raise failure
        return netlink.dump_tcp(ports, deadline)

    reader = SocketReader([connection.port], netlink_dump=flaky)
    assert [reader.read(soon()).source for _ in range(2)] == ["proc", "netlink"]


def test_forced_netlink_does_not_fall_back() -> None:
    def refuse(_: Collection[int], __: Deadline) -> list[KernelSocket]:
        raise netlink.NetlinkUnavailable(errno.EPROTONOSUPPORT, "no sock_diag")

    reader = SocketReader([3306], source="netlink", netlink_dump=refuse)
    with pytest.raises(netlink.NetlinkUnavailable):
        reader.read(soon())


def test_sockets_without_a_visible_owner_are_unknown_and_not_remembered() -> None:
    rows = [
        KernelSocket(
            Endpoint("10.0.0.1", 40000),
            Endpoint("10.0.0.2", 3306),
            TcpState.ESTABLISHED,
            4_000_000_000,  # no process of ours holds it
            1000,
            12.5,
            True,
        ),
        KernelSocket(
            Endpoint("10.0.0.1", 40001),
            Endpoint("10.0.0.2", 3306),
            TcpState.FIN_WAIT1,
            0,  # an orphan: its descriptor is already closed
            1000,
            None,
            False,
        ),
    ]
    tables = [rows, rows, rows, []]
    owners = OwnerMap()
    reader = SocketReader([3306], owners=owners, netlink_dump=lambda _, __: tables.pop(0))
    first = reader.read(soon())
    assert [(s.pid, s.process, s.gone) for s in first.sockets] == [(None, "unknown", False)] * 2
    assert first.sockets[0].idle_seconds == 12.5 and first.sockets[0].keepalive
    reader.read(soon())
    reader.read(soon())
    assert owners.scans == 1  # the unresolvable inode does not cost a scan per read
    assert reader.read(soon()).sockets == ()


def test_rejects_bad_ports() -> None:
    with pytest.raises(ValueError):
        SocketReader([0])
    with pytest.raises(ValueError):
        SocketReader([])


def test_a_socket_is_its_kernel_row_plus_owner() -> None:
    # The reader builds each Socket by appending (pid, process, gone, comm) to the kernel's row.
    assert Socket._fields[: len(KernelSocket._fields)] == KernelSocket._fields
    assert Socket._fields[len(KernelSocket._fields):] == (
        "pid", "process", "gone", "comm", "place")

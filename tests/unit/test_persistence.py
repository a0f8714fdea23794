"""What survives the exporter's restart (--state.dir): the file, and the reader and engine
taking it up."""

from __future__ import annotations

import asyncio
import json
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from exporter import persistence
from exporter.deadline import Deadline
from exporter.engine import Engine
from exporter.model import Endpoint, Settings, State, TcpState
from exporter.persistence import SavedState, SocketMemory, StateKeeper
from exporter.planner import ReadPolicy
from exporter.sockets.kernel import KernelSocket
from exporter.sockets.owners import Owner, OwnerMap
from exporter.sockets.reader import SocketReader
from exporter.target import Target
from tests.support.builders import DB, sock, soon, view
from tests.support.fakes import FakeClock, FakeSessions, FakeSockets

BOOT = "6a1c7d0e-0000-4000-8000-000000000001"


def saved(*, boot: str = BOOT) -> SavedState:
    # As the reader makes them: a socket's owner fields are its owner's.
    held = (sock(5000, comm="python3"), Owner(4242, 7, "worker", "python3"))
    gone = (sock(5001, idle=12.5, comm="python3"), Owner(4242, 8, "worker", "python3"), 990.0)
    key = (Endpoint("10.0.0.9", 5001), DB)
    return SavedState(boot, SocketMemory((held,), 1000.0, (gone,)), {"db:3306": frozenset({key})})


def test_the_file_round_trips(tmp_path: Path) -> None:
    persistence.write(tmp_path, saved())
    assert persistence.read(tmp_path, BOOT) == saved()
    # Written whole or not at all: no temporary file is left behind.
    assert [p.name for p in tmp_path.iterdir()] == [persistence.STATE_FILE]


@pytest.mark.parametrize(("content", "message"), [
    ("{not json", "ignoring"),
    (json.dumps({"version": 99}), "ignoring"),
    (json.dumps({**persistence.encode(saved()), "held": [[1, 2]]}), "ignoring"),
])
def test_a_bad_file_is_ignored_with_one_line(tmp_path: Path, content: str, message: str,
                                             caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / persistence.STATE_FILE).write_text(content)
    with caplog.at_level("INFO", logger="exporter.persistence"):
        assert persistence.read(tmp_path, BOOT) is None
    assert [r.getMessage().split()[0] for r in caplog.records] == [message]


def test_another_boots_file_or_none_at_all(tmp_path: Path) -> None:
    assert persistence.read(tmp_path, BOOT) is None  # a first start
    persistence.write(tmp_path, saved(boot="an-earlier-boot"))
    assert persistence.read(tmp_path, BOOT) is None  # descriptors do not survive a reboot
    assert persistence.boot_id()  # the kernel has one


@pytest.fixture
def held_socket() -> Iterator[socket.socket]:
    left, right = socket.socketpair()
    with left, right:
        yield left


def _row(inode: int) -> KernelSocket:
    return KernelSocket(Endpoint("10.0.0.9", 40000), DB, TcpState.ESTABLISHED, inode,
                        os.getuid(), 3.0, False)


def test_a_restarted_reader_sees_a_socket_reset_while_it_was_down(
    held_socket: socket.socket,
) -> None:
    inode = os.fstat(held_socket.fileno()).st_ino
    clock = FakeClock()
    first = SocketReader([3306], owners=OwnerMap(), clock=clock,
                         netlink_dump=lambda _, __: [_row(inode)])
    [seen] = first.read(soon()).sockets
    assert seen.pid == os.getpid() and not seen.gone
    memory = first.memory()

    # The exporter stops; the server resets the connection: it leaves the kernel's table,
    # the process still holds its descriptor. A new exporter starts from what was saved.
    clock.advance(30)
    second = SocketReader([3306], owners=OwnerMap(), clock=clock,
                          netlink_dump=lambda _, __: [])
    assert second.read(soon()).sockets == ()  # without the memory: invisible
    restored = SocketReader([3306], owners=OwnerMap(), clock=clock,
                            netlink_dump=lambda _, __: [])
    restored.restore(memory)
    [gone] = restored.read(soon()).sockets
    assert gone.gone and gone.inode == inode and gone.pid == os.getpid()
    assert gone.idle_seconds == pytest.approx(33.0)  # its silence went on meanwhile
    # It is remembered again for the next save, and forgotten once the descriptor closes.
    assert [s.inode for s, _, _ in restored.memory().gone] == [inode]
    held_socket.close()
    assert restored.read(soon()).sockets == ()


def test_a_drop_the_last_run_counted_is_not_counted_again() -> None:
    gone = sock(5001, state=TcpState.CLOSE, gone=True)
    key = (gone.local, gone.remote)

    def collect(counted: dict[str, frozenset[tuple[Endpoint, Endpoint]]]) -> dict[str, int]:
        engine = Engine([Target("db:3306", DB.ip, DB.port,
                                FakeSessions(lambda d: view(read_at=d.now())))],
                        FakeSockets([gone]), ReadPolicy(0, Settings()), clock=FakeClock(),
                        counted=counted)
        try:
            snap = asyncio.run(engine.collect(Deadline.after(5, engine.clock)))
            assert [i.state for i in snap.targets[0].items] == [State.DROPPED]
            assert engine.counted_drops() == {"db:3306": frozenset({key})}
            return dict(snap.targets[0].dropped_totals)
        finally:
            engine.close()

    assert collect({}) == {"worker": 1}  # reset while the exporter was down: counted
    assert collect({"db:3306": frozenset({key})}) == {}  # counted before the restart


def test_the_keeper_saves_at_most_every_period_and_at_the_end(tmp_path: Path) -> None:
    clock = FakeClock()
    captures: list[int] = []

    def capture() -> SavedState:
        captures.append(1)
        return saved()

    keeper = StateKeeper(tmp_path, capture, clock=clock, every=10)
    keeper.after_collection()
    keeper.flush()
    clock.advance(5)
    keeper.after_collection()
    clock.advance(6)
    keeper.after_collection()
    keeper.close()
    assert len(captures) == 3  # at 0 s, at 11 s, and at the end
    assert persistence.read(tmp_path, BOOT) == saved()

"""The engine starts a due server read before the socket dump, and only where it is safe.

Ordering is observed with events, not timing: a read records whether the dump had ended
when it began (a read after the dump is the collection's own; one before is early), and a
dump that expects an early read waits (until the deadline) for one to begin before it
ends."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable

from prometheus_client import CollectorRegistry, generate_latest

from exporter.collector import SnapshotCollector
from exporter.deadline import Deadline
from exporter.engine import Engine
from exporter.model import ReadCounts, ServerView, Session, Settings, Snapshot, Socket, State
from exporter.planner import ReadPolicy
from exporter.summary import summarise
from exporter.target import Target
from tests.support.builders import DB, sess, sock, view
from tests.support.fakes import FakeClock, Reading


class Server:
    """What the fake server holds right now; a read sees it as of its start."""

    def __init__(self, *sessions: Session) -> None:
        self.sessions = list(sessions)
        self.read_started = threading.Event()
        self.dumped = threading.Event()
        self.reads = 0
        self.asked: list[frozenset[str] | None] = []
        # Per read, in order: whether it began before the collection's dump ended.
        self.early: list[bool] = []
        self.lock = threading.Lock()

    def new_collection(self) -> None:
        self.read_started.clear()
        self.dumped.clear()


class DirectSessions:
    always_fresh = True

    def __init__(self, server: Server) -> None:
        self.server = server

    def read(self, client_ips: frozenset[str] | None, deadline: Deadline, *,
             fresh: bool = False) -> ServerView:
        server = self.server
        with server.lock:
            seen = tuple(server.sessions)  # the server's list as the read starts
            server.reads += 1
            server.asked.append(client_ips)
            server.early.append(not server.dumped.is_set())
        server.read_started.set()
        return view(*seen, read_at=deadline.now())

    def ping(self, deadline: Deadline) -> ServerView | None:
        return None

    def counts(self) -> ReadCounts:
        return ReadCounts(reads=self.server.reads)

    def close(self) -> None:
        pass


class CachedSessions(DirectSessions):
    always_fresh = False  # a fleet source: its answers may come from a cache


class Dump:
    """The kernel's socket table. With ``expect_read`` it waits for a read to begin before
    it ends (an early read must); ``during`` runs once it has."""

    def __init__(self, server: Server, sockets: list[Socket]) -> None:
        self.server = server
        self.sockets = sockets
        self.expect_read = False
        self.during: list[Callable[[], None]] = []

    def read(self, deadline: Deadline) -> Reading:
        if self.expect_read:
            assert self.server.read_started.wait(deadline.remaining()), "no early read began"
        while self.during:
            self.during.pop()()
        with self.server.lock:
            self.server.dumped.set()
        return Reading(tuple(self.sockets))


def make(sessions_type: type[DirectSessions], interval: float = 0.0
         ) -> tuple[Engine, Server, Dump, FakeClock]:
    server = Server(sess(1, 5000), sess(2, 5001))
    dump = Dump(server, [sock(5000, idle=3), sock(5001, idle=4)])
    clock = FakeClock()
    engine = Engine([Target("db:3306", DB.ip, DB.port, sessions_type(server))], dump,
                    ReadPolicy(interval, Settings(risk_headroom=60)), clock=clock)
    return engine, server, dump, clock


def collect(engine: Engine, server: Server, clock: FakeClock) -> Snapshot:
    server.new_collection()
    snapshot = asyncio.run(engine.collect(Deadline.after(5.0, clock)))
    clock.advance(1.0)
    return snapshot


def test_a_due_read_runs_during_the_socket_dump_once_connections_are_known() -> None:
    engine, server, dump, clock = make(DirectSessions)
    snapshots = []
    for expected_early in (False, False, True, True, True):
        dump.expect_read = expected_early
        snapshots.append(collect(engine, server, clock))
    engine.close()
    # First: nothing read yet. Second: every connection is newer than the (first) read.
    # From then on the read starts before the dump ends, still one read per collection.
    assert server.early == [False, False, True, True, True]
    assert server.reads == 5
    assert server.asked[2:] == [frozenset({"10.0.0.9"})] * 3
    for snapshot in snapshots:
        assert [i.state for i in snapshot.targets[0].items] == [State.IDLE, State.IDLE]


def test_a_connection_newer_than_the_early_read_gets_a_read_after_the_dump() -> None:
    engine, server, dump, clock = make(DirectSessions)

    def connect() -> None:
        # Established while the dump runs, after the early read took the server's list.
        server.sessions.append(sess(3, 5002))
        dump.sockets.append(sock(5002, idle=0.1))

    for expected_early in (False, False, True):
        dump.expect_read = expected_early
        collect(engine, server, clock)
    before = server.reads
    dump.expect_read = True
    dump.during.append(connect)
    snapshot = collect(engine, server, clock)
    engine.close()
    assert server.early[-2:] == [True, False]
    # The early read could not know the new connection: read again, after the dump. Used
    # as it was, it would have made the new connection a phantom.
    assert server.reads - before == 2
    states = {i.socket.local.port: i.state for i in snapshot.targets[0].items}
    assert states == {5000: State.IDLE, 5001: State.IDLE, 5002: State.IDLE}


def test_no_early_read_while_the_interval_holds_or_for_cached_sources() -> None:
    engine, server, _dump, clock = make(DirectSessions, interval=30.0)
    for _ in range(4):
        collect(engine, server, clock)
    engine.close()
    assert server.early == [False]

    engine, server, _dump, clock = make(CachedSessions)
    for _ in range(4):
        collect(engine, server, clock)
    engine.close()
    assert server.early == [False] * 4


def test_the_summary_is_made_with_the_collection_and_renders_the_same() -> None:
    engine, server, _dump, clock = make(DirectSessions)
    snapshot = collect(engine, server, clock)
    engine.close()
    report = snapshot.reports[0]
    assert report.summary == summarise(report.snapshot, snapshot.top_sessions)

    def render(snap: Snapshot) -> bytes:
        registry = CollectorRegistry(auto_describe=False)
        registry.register(SnapshotCollector(snap, include_build_info=False))
        return generate_latest(registry)

    assert b'mysql_idle_sessions{process="worker",state="idle",target="db:3306"} 2.0' in (
        render(snapshot)
    )

"""The engine starts a due server read before the socket dump, and only where it is safe."""

from __future__ import annotations

import asyncio
import threading
import time

from prometheus_client import CollectorRegistry, generate_latest

from exporter.collector import SnapshotCollector
from exporter.correlate import Settings
from exporter.engine import Engine, WatchedTarget
from exporter.model import ServerView, Session, Socket, State
from exporter.summary import summarise
from tests.unit.test_correlate import DB, sess, sock, view
from tests.unit.test_engine import Reading


class Server:
    """What the fake server holds right now; a read sees it as of its start."""

    def __init__(self, *sessions: Session) -> None:
        self.sessions = list(sessions)
        self.read_started = threading.Event()
        self.reads = 0
        self.asked: list[frozenset[str] | None] = []
        self.read_spans: list[tuple[float, float]] = []
        self.dump_spans: list[tuple[float, float]] = []

    def overlapped(self) -> list[bool]:
        """Per read, in order: whether it ran while a socket dump did."""
        return [
            any(start < dump_end and end > dump_start
                for dump_start, dump_end in self.dump_spans)
            for start, end in self.read_spans
        ]


class DirectSessions:
    always_fresh = True

    def __init__(self, server: Server) -> None:
        self.server = server
        self.queries_sent = 0

    def read(self, client_ips, timeout: float, *, fresh: bool = False) -> ServerView:
        server = self.server
        seen = tuple(server.sessions)  # the server's list as the read starts
        server.reads += 1
        server.asked.append(client_ips)
        self.queries_sent += 1
        started = time.monotonic()
        server.read_started.set()
        time.sleep(0.05)  # the server builds and sends its list
        server.read_spans.append((started, time.monotonic()))
        return view(*seen, read_at=time.monotonic())

    def close(self) -> None:
        pass


class CachedSessions(DirectSessions):
    always_fresh = False  # a fleet source: its answers may come from a cache


class Dump:
    """The kernel's socket table. Waits briefly for a read to start, so that a read the
    engine started early shows as overlapping; `during` runs while the dump is under way."""

    def __init__(self, server: Server, sockets: list[Socket]) -> None:
        self.server = server
        self.sockets = sockets
        self.during: list[object] = []

    def read(self) -> Reading:
        started = time.monotonic()
        self.server.read_started.clear()
        self.server.read_started.wait(0.5)
        while self.during:
            self.during.pop()()  # type: ignore[operator]
        self.server.dump_spans.append((started, time.monotonic()))
        return Reading(tuple(self.sockets))


def make(sessions_type: type[DirectSessions], interval: float = 0.0):
    server = Server(sess(1, 5000), sess(2, 5001))
    dump = Dump(server, [sock(5000, idle=3), sock(5001, idle=4)])
    target = WatchedTarget("db:3306", DB.ip, DB.port, sessions_type(server),
                           resolver=lambda host: frozenset({DB.ip}))
    engine = Engine([target], dump, Settings(risk_headroom=60), server_interval=interval)
    return engine, server, dump


def test_a_due_read_runs_during_the_socket_dump_once_connections_are_known() -> None:
    engine, server, _dump = make(DirectSessions)

    async def run():
        return [await engine.collect(5) for _ in range(5)]

    snapshots = asyncio.run(run())
    engine.close()
    # First: nothing read yet. Second: every connection is newer than the (first) read.
    # From then on the read starts before the dump ends, still one read per collection.
    assert server.overlapped() == [False, False, True, True, True]
    assert server.reads == 5
    assert server.asked[2:] == [frozenset({"10.0.0.9"})] * 3
    for snapshot in snapshots:
        assert [i.state for i in snapshot.targets[0].items] == [State.IDLE, State.IDLE]


def test_a_connection_newer_than_the_early_read_gets_a_read_after_the_dump() -> None:
    engine, server, dump = make(DirectSessions)

    def connect() -> None:
        # Established while the dump runs, after the early read took the server's list.
        server.sessions.append(sess(3, 5002))
        dump.sockets.append(sock(5002, idle=0.1))

    async def run():
        for _ in range(3):
            await engine.collect(5)
        before = server.reads
        dump.during.append(connect)
        snapshot = await engine.collect(5)
        return snapshot, server.reads - before

    snapshot, reads = asyncio.run(run())
    engine.close()
    assert server.overlapped()[-2:] == [True, False]
    # The early read could not know the new connection: read again, after the dump. Used
    # as it was, it would have made the new connection a phantom.
    assert reads == 2
    states = {i.socket.local.port: i.state for i in snapshot.targets[0].items}
    assert states == {5000: State.IDLE, 5001: State.IDLE, 5002: State.IDLE}


def test_no_early_read_while_the_interval_holds_or_for_cached_sources() -> None:
    engine, server, _dump = make(DirectSessions, interval=30.0)

    async def run():
        for _ in range(4):
            await engine.collect(5)

    asyncio.run(run())
    engine.close()
    assert server.overlapped() == [False]

    engine, server, _dump = make(CachedSessions)
    asyncio.run(run())
    engine.close()
    assert server.overlapped() == [False] * 4


def test_the_summary_is_made_with_the_collection_and_renders_the_same() -> None:
    engine, _server, _dump = make(DirectSessions)
    snapshot = asyncio.run(engine.collect(5))
    engine.close()
    target = snapshot.targets[0]
    assert snapshot.summaries[target.target] == summarise(target, snapshot.top_sessions)

    def render(snap) -> bytes:
        registry = CollectorRegistry(auto_describe=False)
        registry.register(SnapshotCollector(snap, include_build_info=False))
        return generate_latest(registry)

    without = type(snapshot)(targets=snapshot.targets, durations=snapshot.durations,
                             counters=snapshot.counters, collections=snapshot.collections,
                             top_sessions=snapshot.top_sessions)
    assert render(snapshot) == render(without)
    assert b'mysql_idle_sessions{process="worker",state="idle",target="db:3306"} 2.0' in (
        render(snapshot)
    )

"""The engine with fake sources: shared collections, deadlines, read reuse, own sockets."""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass, field

from exporter.correlate import Settings
from exporter.engine import Engine, WatchedTarget
from exporter.model import Endpoint, ServerView, Socket, State, TcpState
from tests.unit.test_correlate import DB, sess, sock, view


@dataclass
class Reading:
    sockets: tuple[Socket, ...]
    durations: dict[str, float] = field(default_factory=dict)


class FakeSockets:
    def __init__(self, sockets: list[Socket]) -> None:
        self.sockets = sockets
        self.reads = 0

    def read(self) -> Reading:
        self.reads += 1
        return Reading(tuple(self.sockets))


class FakeSessions:
    def __init__(self, make_view, delay: float = 0.0) -> None:
        self.make_view = make_view
        self.delay = delay
        self.reads = 0
        self.queries_sent = 0
        self.asked_ips: list[frozenset[str] | None] = []
        self.release = threading.Event()

    def read(self, client_ips, timeout: float, *, fresh: bool = False) -> ServerView:
        self.reads += 1
        self.queries_sent += 2
        self.asked_ips.append(client_ips)
        if self.delay:
            self.release.wait(self.delay)
        return self.make_view()

    def close(self) -> None:
        self.release.set()


def engine_with(sockets: list[Socket], sessions: FakeSessions, *, interval: float = 30.0
                ) -> tuple[Engine, FakeSockets]:
    source = FakeSockets(sockets)
    target = WatchedTarget("db:3306", DB.ip, DB.port, sessions,
                           resolver=lambda host: frozenset({DB.ip}))
    return Engine([target], source, Settings(risk_headroom=60), server_interval=interval), source


def fresh_view(*sessions, **kw):
    return lambda: view(*sessions, read_at=time.monotonic(), **kw)


def test_fifty_concurrent_scrapes_share_one_collection() -> None:
    sessions = FakeSessions(fresh_view(sess(1, 5000)), delay=0.3)
    engine, source = engine_with([sock(5000)], sessions)

    async def scrape_many():
        return await asyncio.gather(*(engine.collect(5.0) for _ in range(50)))

    snapshots = asyncio.run(scrape_many())
    engine.close()
    assert source.reads == 1
    assert sessions.reads == 1
    assert len({id(s) for s in snapshots}) == 1
    assert snapshots[0].collections == 1


def test_a_hung_server_answers_within_the_deadline_with_up_zero() -> None:
    sessions = FakeSessions(fresh_view(sess(1, 5000)), delay=10.0)
    engine, _ = engine_with([sock(5000)], sessions)

    async def scrape():
        started = time.monotonic()
        snap = await engine.collect(1.0)
        return snap, time.monotonic() - started

    snap, took = asyncio.run(scrape())
    engine.close()
    assert took < 2.0
    target = snap.targets[0]
    assert target.server is not None and not target.server.ok
    # The client-side view still flows.
    assert [i.state for i in target.items] == [State.UNMATCHED]


def test_reads_are_reused_within_the_interval_and_a_new_socket_forces_one() -> None:
    sessions = FakeSessions(fresh_view(sess(1, 5000), sess(2, 5001)))
    engine, source = engine_with([sock(5000, idle=1)], sessions, interval=30)

    async def run():
        await engine.collect(5)
        await engine.collect(5)
        assert sessions.reads == 1
        source.sockets = [sock(5000, idle=2), sock(5001, idle=0.1)]
        snap = await engine.collect(5)
        assert sessions.reads == 2
        return snap

    snap = asyncio.run(run())
    engine.close()
    assert [i.state for i in snap.targets[0].items] == [State.IDLE, State.IDLE]
    assert sessions.asked_ips[-1] == frozenset({"10.0.0.9"})


def test_interval_zero_reads_every_scrape() -> None:
    sessions = FakeSessions(fresh_view(sess(1, 5000)))
    engine, _ = engine_with([sock(5000)], sessions, interval=0)

    async def run():
        for _ in range(3):
            await engine.collect(5)

    asyncio.run(run())
    engine.close()
    assert sessions.reads == 3


def test_the_exporters_old_and_new_sockets_are_left_out() -> None:
    own_old, own_new = Endpoint("10.0.0.9", 6000), Endpoint("10.0.0.9", 6001)
    current = {"own": own_old}
    sessions = FakeSessions(
        lambda: view(sess(1, 5000), read_at=time.monotonic(),
                     own_client_endpoints=frozenset({current["own"]}))
    )
    engine, source = engine_with([sock(5000), sock(6000)], sessions, interval=0)

    async def run():
        first = await engine.collect(5)
        # The exporter's connection was killed: its old socket lingers in CLOSE_WAIT while
        # the reader reconnects from a new port.
        current["own"] = own_new
        source.sockets = [sock(5000), sock(6000, state=TcpState.CLOSE_WAIT), sock(6001)]
        second = await engine.collect(5)
        return first, second

    first, second = asyncio.run(run())
    engine.close()
    assert [i.socket.local.port for i in first.targets[0].items] == [5000]
    assert [i.socket.local.port for i in second.targets[0].items] == [5000]


def test_counters_count_reads_errors_and_queries() -> None:
    results = iter([view(read_at=time.monotonic()), view(ok=False)])
    sessions = FakeSessions(lambda: next(results))
    engine, _ = engine_with([], sessions, interval=0)

    async def run():
        await engine.collect(5)
        return await engine.collect(5)

    snap = asyncio.run(run())
    engine.close()
    counters = snap.counters["db:3306"]
    assert (counters.reads, counters.read_errors, counters.queries) == (2, 1, 4)


def test_the_collected_hook_runs_once_per_collection_not_per_scrape() -> None:
    calls: list[int] = []
    sessions = FakeSessions(fresh_view(sess(1, 5000)), delay=0.2)
    source = FakeSockets([sock(5000)])
    target = WatchedTarget("db:3306", DB.ip, DB.port, sessions,
                           resolver=lambda host: frozenset({DB.ip}))
    engine = Engine([target], source, Settings(), server_interval=0,
                    on_collected=lambda: calls.append(len(calls)))

    async def run():
        await asyncio.gather(*(engine.collect(5.0) for _ in range(10)))
        await engine.collect(5.0)

    asyncio.run(run())
    engine.close()
    assert calls == [0, 1]


def test_a_full_garbage_collection_every_n_collections(monkeypatch) -> None:
    import gc

    from exporter import cli

    passes: list[int] = []
    monkeypatch.setattr(gc, "collect", lambda *args: passes.append(1) or 0)
    hook = cli.full_gc_every(3)
    for _ in range(7):
        hook()
    assert len(passes) == 2

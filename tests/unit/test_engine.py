"""The engine with fake sources and a fake clock: shared collections, one deadline passed
down, read reuse, the exporter's own sockets, counts, bugs and name resolution."""

from __future__ import annotations

import asyncio
import logging
import threading
import time

import pytest

from exporter.deadline import Deadline
from exporter.engine import RENDER_MARGIN_SECONDS, Engine
from exporter.model import Endpoint, ServerView, Settings, Snapshot, Socket, State, TcpState
from exporter.planner import ReadPolicy
from exporter.resolver import AddressBook
from exporter.target import Target
from tests.support.builders import DB, sess, sock, view
from tests.support.fakes import FakeClock, FakeSessions, FakeSockets, Reading, reading


def engine_with(
    sockets: list[Socket], sessions: FakeSessions, *, interval: float = 30.0,
    clock: FakeClock | None = None, **kw: object,
) -> tuple[Engine, FakeSockets, FakeClock]:
    clock = clock or FakeClock()
    source = FakeSockets(sockets)
    target = Target("db:3306", DB.ip, DB.port, sessions)
    engine = Engine([target], source, ReadPolicy(interval, Settings(risk_headroom=60)),
                    clock=clock, **kw)  # type: ignore[arg-type]
    return engine, source, clock


def collect(engine: Engine, seconds: float = 5.0) -> Snapshot:
    return asyncio.run(engine.collect(Deadline.after(seconds, engine.clock)))


def test_fifty_concurrent_scrapes_share_one_collection() -> None:
    sessions = FakeSessions(reading(sess(1, 5000)), hold=True)
    engine, source, clock = engine_with([sock(5000)], sessions)

    async def scrape_many() -> list[Snapshot]:
        scrapes = [asyncio.ensure_future(engine.collect(Deadline.after(5.0, clock)))
                   for _ in range(50)]
        # Every scrape is waiting while the one read is held.
        await asyncio.get_running_loop().run_in_executor(None, sessions.started.wait, 5.0)
        sessions.release.set()
        return await asyncio.gather(*scrapes)

    snapshots = asyncio.run(scrape_many())
    engine.close()
    assert source.reads == 1
    assert sessions.reads == 1
    assert len({id(s) for s in snapshots}) == 1
    assert snapshots[0].collections == 1


def test_the_scrapes_deadline_is_the_one_every_read_gets() -> None:
    sessions = FakeSessions(reading(sess(1, 5000)))
    engine, source, clock = engine_with([sock(5000)], sessions)
    deadline = Deadline.after(7.0, clock)
    asyncio.run(engine.collect(deadline))
    engine.close()
    # The socket dump and the server read work to the same moment: the scrape's deadline
    # less the time kept back for rendering, on the engine's clock.
    assert source.deadlines[0].at == sessions.deadlines[0].at == deadline.at - RENDER_MARGIN_SECONDS
    assert source.deadlines[0].clock is clock and sessions.deadlines[0].clock is clock


def test_a_read_that_times_out_still_gives_the_client_side_view() -> None:
    def timed_out(deadline: Deadline) -> ServerView:
        return ServerView(target="db:3306", ok=False, error="timed out after 0.8s",
                          read_at=deadline.now())

    engine, _, _ = engine_with([sock(5000)], FakeSessions(timed_out))
    snap = collect(engine)
    engine.close()
    target = snap.targets[0]
    assert target.server is not None and not target.server.ok
    assert [i.state for i in target.items] == [State.UNMATCHED]


def test_a_source_that_overruns_the_deadline_cannot_hold_the_scrape() -> None:
    # A source that ignores its deadline (it should not): the scrape still answers by the
    # deadline (real time here, 0.3 s), with the target down; the next collection does not
    # start a second trip on the same target while the first still runs.
    sessions = FakeSessions(reading(sess(1, 5000)), hold=True, keep_deadline=False)
    engine = Engine([Target("db:3306", DB.ip, DB.port, sessions)], FakeSockets([sock(5000)]),
                    ReadPolicy(0.0, Settings()))

    async def scrape() -> tuple[Snapshot, Snapshot, float]:
        started = time.monotonic()
        first = await engine.collect(Deadline.after(0.3 + RENDER_MARGIN_SECONDS))
        took = time.monotonic() - started
        second = await engine.collect(Deadline.after(0.3 + RENDER_MARGIN_SECONDS))
        return first, second, took

    first, second, took = asyncio.run(scrape())
    sessions.release.set()
    engine.close()
    assert took < 0.3 + RENDER_MARGIN_SECONDS + 0.2
    for snap in (first, second):
        server = snap.targets[0].server
        assert server is not None and not server.ok
    assert sessions.reads == 1


def test_reads_are_reused_within_the_interval_and_a_new_socket_forces_one() -> None:
    sessions = FakeSessions(reading(sess(1, 5000), sess(2, 5001)))
    engine, source, clock = engine_with([sock(5000, idle=1)], sessions, interval=30)
    collect(engine)
    clock.advance(5)
    collect(engine)
    assert sessions.reads == 1
    clock.advance(5)
    source.sockets = [sock(5000, idle=11), sock(5001, idle=0.1)]
    snap = collect(engine)
    assert sessions.reads == 2
    # A cached (fleet) answer could not know these connections: both reads must be fresh.
    assert sessions.fresh_asked == [True, True]
    clock.advance(31)
    collect(engine)
    engine.close()
    assert sessions.reads == 3
    assert [i.state for i in snap.targets[0].items] == [State.IDLE, State.IDLE]
    assert sessions.asked_ips[-1] == frozenset({"10.0.0.9"})


def test_interval_zero_reads_every_scrape() -> None:
    sessions = FakeSessions(reading(sess(1, 5000)))
    engine, _, _ = engine_with([sock(5000)], sessions, interval=0)
    for _ in range(3):
        collect(engine)
    engine.close()
    assert sessions.reads == 3


def test_the_exporters_old_and_new_sockets_are_left_out() -> None:
    own_old, own_new = Endpoint("10.0.0.9", 6000), Endpoint("10.0.0.9", 6001)
    current = {"own": own_old}
    sessions = FakeSessions(
        lambda deadline: view(sess(1, 5000), read_at=deadline.now(),
                              own_client_endpoints=frozenset({current["own"]}))
    )
    engine, source, _ = engine_with([sock(5000), sock(6000)], sessions, interval=0)
    first = collect(engine)
    # The exporter's connection was killed: its old socket lingers in CLOSE_WAIT while
    # the reader reconnects from a new port.
    current["own"] = own_new
    source.sockets = [sock(5000), sock(6000, state=TcpState.CLOSE_WAIT), sock(6001)]
    second = collect(engine)
    engine.close()
    assert [i.socket.local.port for i in first.targets[0].items] == [5000]
    assert [i.socket.local.port for i in second.targets[0].items] == [5000]


def test_counts_come_from_the_source() -> None:
    results = iter([view(), view(ok=False)])
    sessions = FakeSessions(lambda deadline: next(results), queries_per_read=2)
    engine, _, _ = engine_with([], sessions, interval=0)
    collect(engine)
    snap = collect(engine)
    engine.close()
    counts = snap.reports[0].counts
    assert (counts.reads, counts.read_errors, counts.queries) == (2, 1, 4)


def test_a_bug_is_logged_once_with_its_traceback_and_counted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def broken(deadline: Deadline) -> ServerView:
        raise KeyError("p_id")

    engine, _, _ = engine_with([sock(5000)], FakeSessions(broken), interval=0)
    with caplog.at_level(logging.INFO, logger="exporter"):
        collect(engine)
        snap = collect(engine)
    engine.close()
    bugs = [r for r in caplog.records if "bug" in r.getMessage()]
    assert len(bugs) == 1 and bugs[0].levelno == logging.ERROR
    assert "Traceback" in bugs[0].getMessage() and "KeyError" in bugs[0].getMessage()
    target = snap.targets[0]
    assert target.server is not None and target.server.error == "internal error: KeyError"
    assert snap.reports[0].counts.internal_errors == 2


def test_the_collected_hook_runs_once_per_collection_not_per_scrape() -> None:
    calls: list[int] = []
    sessions = FakeSessions(reading(sess(1, 5000)), hold=True)
    engine, _, clock = engine_with([sock(5000)], sessions, interval=0,
                                   on_collected=lambda: calls.append(len(calls)))

    async def run() -> None:
        scrapes = [asyncio.ensure_future(engine.collect(Deadline.after(5.0, clock)))
                   for _ in range(10)]
        await asyncio.get_running_loop().run_in_executor(None, sessions.started.wait, 5.0)
        sessions.release.set()
        await asyncio.gather(*scrapes)
        await engine.collect(Deadline.after(5.0, clock))

    asyncio.run(run())
    engine.close()
    assert calls == [0, 1]


def test_a_full_garbage_collection_every_n_collections(monkeypatch: pytest.MonkeyPatch) -> None:
    import gc

    from exporter import cli

    passes: list[int] = []
    monkeypatch.setattr(gc, "collect", lambda *args: passes.append(1) or 0)
    hook = cli.full_gc_every(3)
    for _ in range(7):
        hook()
    assert len(passes) == 2


def test_a_hanging_resolver_starves_nobody(caplog: pytest.LogCaptureFixture) -> None:
    """One target's name never resolves: the others stay up over 20 scrapes, each scrape
    answers by its deadline, and the failure shows in a metric and one log line."""
    hang = threading.Event()

    def lookup(host: str) -> frozenset[str]:
        if host == "hung.example":
            hang.wait()  # a resolver that never answers
        return frozenset({"10.0.0.5"})

    healthy = [FakeSessions(reading(sess(1, 5000))) for _ in range(2)]
    hung = FakeSessions(reading())
    targets = [Target("10.0.0.5:3306", "10.0.0.5", 3306, healthy[0]),
               Target("db.example:3307", "db.example", 3307, healthy[1]),
               Target("hung.example:3306", "hung.example", 3306, hung)]
    # Real time: the lookup bound (0.2 s) and the scrapes' deadlines are what is tested.
    book = AddressBook(lookup, clock=time.monotonic, timeout_seconds=0.2)
    engine = Engine(targets, FakeSockets([sock(5000)]), ReadPolicy(0.0, Settings()),
                    addresses=book)
    timeout = 0.5

    async def scrapes() -> list[tuple[Snapshot, float]]:
        results = []
        for _ in range(20):
            started = time.monotonic()
            snap = await engine.collect(Deadline.after(timeout))
            results.append((snap, time.monotonic() - started))
        return results

    try:
        with caplog.at_level(logging.INFO, logger="exporter"):
            results = asyncio.run(scrapes())
    finally:
        hang.set()
        engine.close()
    for snap, took in results:
        assert took <= timeout + 0.05
        up = {t.target: t.server is not None and t.server.ok for t in snap.targets}
        assert up == {"10.0.0.5:3306": True, "db.example:3307": True,
                      "hung.example:3306": False}, up
    last = results[-1][0]
    hung_report = next(r for r in last.reports if r.snapshot.target == "hung.example:3306")
    assert hung_report.resolve.failures == 1 and not hung_report.resolve.addresses
    assert hung_report.snapshot.server is not None
    assert "cannot resolve hung.example" in (hung_report.snapshot.server.error or "")
    assert hung.reads == 0  # its server is never asked: its connect would hang too
    warnings = [r for r in caplog.records if "cannot resolve hung.example" in r.getMessage()]
    assert len(warnings) == 1


def test_between_reads_a_ping_keeps_up_true_to_the_scrape() -> None:
    sessions = FakeSessions(reading(sess(1, 5000)))
    engine, _, clock = engine_with([sock(5000, idle=1)], sessions, interval=30)
    collect(engine)
    clock.advance(1)
    second = collect(engine)
    assert (sessions.reads, sessions.pings) == (1, 1)  # no read due: a ping, no statement
    assert second.targets[0].server is not None and second.targets[0].server.ok
    # The server goes away between reads: the very next scrape says so ...
    sessions.down = "connection lost: (2013) Lost connection to server during query"
    clock.advance(1)
    third = collect(engine)
    server = third.targets[0].server
    assert server is not None and not server.ok and "2013" in (server.error or "")
    assert [i.state for i in third.targets[0].items] == [State.UNMATCHED]
    # ... and the next one reads the server again rather than trust the old read.
    sessions.down = None
    clock.advance(1)
    fourth = collect(engine)
    engine.close()
    assert sessions.reads == 2
    assert fourth.targets[0].server is not None and fourth.targets[0].server.ok
    assert fourth.reports[0].counts.pings == 2


def test_a_lone_targets_trip_follows_the_dump_in_one_job_of_the_pool(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Each hand-off to the pool wakes a thread and then the event loop: with one target,
    # the dump and the trip go together (issue 17); with two, each trip has its own.
    sessions = FakeSessions(reading(sess(1, 5000)))
    engine, _, clock = engine_with([sock(5000)], sessions, interval=30)
    jobs: list[str] = []
    submit = engine._pool.submit

    def counted(fn, /, *args, **kwargs):  # type: ignore[no-untyped-def]
        jobs.append(getattr(fn, "__name__", "?"))
        return submit(fn, *args, **kwargs)

    monkeypatch.setattr(engine._pool, "submit", counted)
    first = collect(engine)
    clock.advance(1)
    second = collect(engine)  # no read due: a ping
    engine.close()
    assert (sessions.reads, sessions.pings) == (1, 1)
    assert len(jobs) == 2, jobs  # one job per collection
    assert [i.state for i in second.targets[0].items] == [i.state for i in
                                                          first.targets[0].items]
    assert second.reports[0].durations["total"] > 0

    two = [FakeSessions(reading(sess(1, 5000))) for _ in range(2)]
    engine = Engine([Target("db:3306", DB.ip, DB.port, two[0]),
                     Target("db2:3306", "10.0.0.6", 3306, two[1])],
                    FakeSockets([sock(5000)]), ReadPolicy(30, Settings()), clock=clock)
    jobs.clear()
    submit = engine._pool.submit
    monkeypatch.setattr(engine._pool, "submit", counted)
    collect(engine)
    engine.close()
    assert len(jobs) == 3, jobs  # the dump, then a trip per target


def test_a_lone_targets_failed_dump_is_counted_and_its_server_still_asked() -> None:
    class Broken(FakeSockets):
        def read(self, deadline: Deadline) -> Reading:
            raise OSError("netlink refused")

    sessions = FakeSessions(reading(sess(1, 5000)))
    engine = Engine([Target("db:3306", DB.ip, DB.port, sessions)], Broken([]),
                    ReadPolicy(30, Settings()), clock=FakeClock())
    snapshot = collect(engine)
    engine.close()
    assert snapshot.socket_read_errors == 1
    assert sessions.reads == 1 and snapshot.targets[0].server is not None
    assert snapshot.targets[0].server.ok

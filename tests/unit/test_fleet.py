"""Fleet mode: the wire format, and a sidecar engine fed by a standalone exporter over HTTP."""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import time

import bcrypt
import pytest
from hypothesis import given
from hypothesis import strategies as st

from exporter.deadline import Deadline
from exporter.fleet import DEFAULT_FRESH_INTERVAL_SECONDS
from exporter.fleet.wire import FleetFormatError, decode_view, encode_view
from exporter.model import Endpoint, Flavor, ServerView, Session, State
from exporter.sessions.fleet_client import FleetSessionSource
from exporter.web.app import WebOptions, build_app
from exporter.web.config import BasicAuth, WebConfig
from tests.support.builders import sess, sock, view
from tests.support.fakes import FakeSessions, fake_engine, fleet_exporter, reading
from tests.support.web import serve


def soon(seconds: float = 5.0) -> Deadline:
    return Deadline.after(seconds)

texts = st.text(max_size=40)
sessions = st.builds(
    Session,
    id=st.integers(min_value=0, max_value=2**63),
    client=st.one_of(st.none(), st.builds(Endpoint, st.sampled_from(
        ["10.0.0.1", "::1", "localhost", "app.example"]), st.integers(1, 65535))),
    user=texts,
    db=st.one_of(st.none(), texts),
    command=st.sampled_from(["Sleep", "Query", "Binlog Dump"]),
    idle_seconds=st.floats(min_value=0, max_value=1e7, allow_nan=False),
    wait_timeout=st.one_of(st.none(), st.floats(min_value=0, max_value=1e7)),
    transaction_seconds=st.one_of(st.none(), st.floats(min_value=0, max_value=1e7)),
    rows_locked=st.integers(min_value=0, max_value=2**40),
    rows_modified=st.integers(min_value=0, max_value=2**40),
)


@given(st.lists(sessions, max_size=20), st.floats(min_value=0, max_value=1e4))
def test_round_trip(rows: list[Session], age: float) -> None:
    original = ServerView(target="db:3306", ok=True, flavor=Flavor.MYSQL, version="8.0.36",
                          source="performance_schema", wait_timeout=28800.0,
                          interactive_timeout=28800.0, idle_transaction_timeout=30.0,
                          sessions=tuple(rows),
                          per_session_timeouts=True, read_at=1000.0, started_at=400.0)
    document = json.loads(json.dumps(encode_view(original, now=1000.0 + age)))
    decoded = decode_view(document, now=5000.0)
    assert decoded.sessions == original.sessions
    assert decoded.read_at == pytest.approx(5000.0 - age)
    assert decoded.wait_timeout == 28800.0 and decoded.per_session_timeouts
    assert decoded.idle_transaction_timeout == 30.0
    assert decoded.source == "fleet:performance_schema"
    # The server's start, on the receiver's clock: 600 s before the read.
    assert decoded.started_at == pytest.approx(decoded.read_at - 600.0)


@pytest.mark.parametrize("document", [
    None, [], {"version": 99}, {"version": 1, "ok": True, "target": "t", "sessions": "x"},
    {"version": 1, "ok": True, "target": "t", "sessions": [{"id": "1"}]},
    {"version": 1, "ok": True, "target": "t", "sessions": [], "flavor": "oracle",
     "server_version": "", "source": ""},
    {"version": 1, "ok": True, "target": 5, "sessions": []},
])
def test_bad_documents_are_refused(document: object) -> None:
    with pytest.raises(FleetFormatError):
        decode_view(document, now=0)  # type: ignore[arg-type]


def test_a_sidecar_engine_reads_through_a_standalone_fleet_exporter() -> None:
    database = FakeSessions(reading(sess(1, 5000), sess(2, 6000, ip="10.0.0.77")))
    standalone = fleet_exporter(database, interval=30)
    hashed = bcrypt.hashpw(b"fleet-pw", bcrypt.gensalt(rounds=4))
    options = WebOptions(config=WebConfig(basic_auth=BasicAuth({"sidecar": hashed})))

    async def scenario():
        runner, port = await serve(build_app(standalone.engine, options, standalone.fleet))
        base = f"http://127.0.0.1:{port}"
        sidecars = [
            fake_engine({"db:3306": FleetSessionSource(base, "db:3306", user="sidecar",
                                                       password="fleet-pw")}, [sock(5000)])
            for _ in range(20)
        ]
        wrong = FleetSessionSource(base, "db:3306", user="sidecar", password="nope")
        unknown = FleetSessionSource(base, "elsewhere:3306", user="sidecar", password="fleet-pw")
        try:
            snapshots = await asyncio.gather(*(e.collect(soon()) for e in sidecars))
            denied = await asyncio.to_thread(wrong.read, frozenset({"10.0.0.9"}), soon())
            refused = await asyncio.to_thread(unknown.read, frozenset({"10.0.0.9"}), soon())
        finally:
            await runner.cleanup()
            for e in sidecars:
                e.close()
            standalone.close()
        return snapshots, denied, refused

    snapshots, denied, refused = asyncio.run(scenario())
    for snap in snapshots:
        target = snap.targets[0]
        assert target.server is not None and target.server.ok
        assert [i.state for i in target.items] == [State.IDLE]
        # Each sidecar received only its own address's sessions.
        assert [s.id for s in target.server.sessions] == [1]
        assert snap.reports[0].counts.queries == 0
    # Twenty sidecars with connections no read has seen: each asks for a fresh read; they
    # share the first, or (asking after it started) one more, never twenty.
    assert database.reads <= 2
    assert not denied.ok and "401" in (denied.error or "")
    assert not refused.ok and "400" in (refused.error or "")


def test_fleet_endpoint_is_off_unless_asked_for() -> None:
    engine = fake_engine({"db:3306": FakeSessions(reading())})

    async def scenario():
        runner, port = await serve(build_app(engine, WebOptions()))
        try:
            source = FleetSessionSource(f"http://127.0.0.1:{port}", "db:3306")
            return await asyncio.to_thread(source.read, frozenset(), soon())
        finally:
            await runner.cleanup()
            engine.close()

    result = asyncio.run(scenario())
    assert not result.ok and "404" in (result.error or "")


def test_unreachable_fleet_exporter_is_a_clean_failure() -> None:
    from exporter.throwaway import free_port

    source = FleetSessionSource(f"http://127.0.0.1:{free_port()}", "db:3306")
    result = source.read(frozenset({"10.0.0.9"}), soon(2))
    assert not result.ok and result.error and result.error.startswith("fleet:")


def test_fleet_url_must_be_http() -> None:
    with pytest.raises(ValueError, match="http"):
        FleetSessionSource("file:///etc/passwd", "db:3306")


def test_credentials_never_leave_in_the_error() -> None:
    source = FleetSessionSource("http://127.0.0.1:9/", "db:3306", user="u", password="pw-123")
    result = source.read(None, soon(1))
    assert "pw-123" not in repr(result)
    assert base64.b64encode(b"u:pw-123").decode() not in repr(result)




def test_a_new_connection_gets_a_fresh_fleet_read_not_a_cached_one() -> None:
    """The fleet exporter's cached read cannot know a connection made after it: the sidecar
    asks for a fresh read, and sees the new session matched instead of a phantom."""
    present = [sess(1, 5000)]
    database = FakeSessions(lambda deadline: view(*present, read_at=deadline.now()))
    standalone = fleet_exporter(database, interval=30)

    async def scenario():
        runner, port = await serve(build_app(standalone.engine, WebOptions(), standalone.fleet))
        sidecar = fake_engine(
            {"db:3306": FleetSessionSource(f"http://127.0.0.1:{port}", "db:3306")},
            [sock(5000)], interval=30,
        )
        sockets = sidecar._sockets
        try:
            first = await sidecar.collect(soon())
            again = await sidecar.collect(soon())  # nothing new: no request, no read
            reads_before = database.reads
            present.append(sess(2, 5001))
            sockets.sockets = [sock(5000), sock(5001)]  # type: ignore[attr-defined]
            started = time.monotonic()
            fresh = await sidecar.collect(soon())
            waited = time.monotonic() - started
            # Interval not elapsed, nothing new: the standalone's cache answers.
            cached = await asyncio.to_thread(
                FleetSessionSource(f"http://127.0.0.1:{port}", "db:3306").read,
                frozenset({"10.0.0.9"}), soon())
        finally:
            await runner.cleanup()
            sidecar.close()
            standalone.close()
        return first, again, reads_before, fresh, waited, cached

    first, again, reads_before, fresh, waited, cached = asyncio.run(scenario())
    assert [i.state for i in first.targets[0].items] == [State.IDLE]
    assert [i.state for i in again.targets[0].items] == [State.IDLE]
    assert reads_before == 1
    assert sorted(i.state.value for i in fresh.targets[0].items) == ["idle", "idle"]
    assert database.reads == 2
    assert waited < 3  # the fresh read waits out at most the gap after the first read
    assert cached.ok and len(cached.sessions) == 2 and database.reads == 2


@pytest.mark.parametrize("interval", [None, 0.2])
def test_fresh_fleet_requests_share_reads_spaced_by_the_interval(
        interval: float | None) -> None:
    """Bursts of fresh requests: one read per burst, the reads --fleet.fresh-interval apart
    (None: the default, 1 s)."""
    database = FakeSessions(reading(sess(1, 5000)))
    options = {} if interval is None else {"fresh_interval": interval}
    fleet = fleet_exporter(database, interval=30, **options).fleet  # type: ignore[arg-type]
    assert fleet is not None

    async def scenario():
        starts = []
        for _ in range(3):
            reads = await asyncio.gather(
                *(fleet.read("db:3306", soon(), fresh=True) for _ in range(50)))
            assert all(r.view.ok for r in reads)
            starts.append(fleet._served["db:3306"].started_at)
        fleet.close()
        return starts

    starts = asyncio.run(scenario())
    gap = DEFAULT_FRESH_INTERVAL_SECONDS if interval is None else interval
    assert fleet.fresh_interval == gap
    # 150 fresh requests in three bursts: three reads, at least the interval apart, and
    # (the bursts follow each other at once) not much more.
    assert database.reads == 3
    spacings = [b - a for a, b in itertools.pairwise(starts)]
    assert all(gap * 0.99 <= s < gap + 0.5 for s in spacings), spacings

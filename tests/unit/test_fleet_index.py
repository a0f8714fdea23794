"""Fleet mode's per-address index: built once per read, and its answers are exactly those of
the scan it replaces (the whole cached read filtered per sidecar request)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import Collection, Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from exporter.deadline import Deadline
from exporter.fleet import server as fleet_server_module
from exporter.fleet.wire import IndexedView, _with_sessions, encode_view
from exporter.model import Endpoint, Flavor, ServerView, Session
from exporter.sessions.fleet_client import FleetSessionSource
from exporter.sessions.sources import client_wanted, rows_to_sessions
from exporter.web.app import WebOptions, build_app
from tests.support.builders import sess, view
from tests.support.fakes import FakeClock, FakeSessions, fleet_exporter
from tests.support.web import serve


def scan_filter(view: ServerView, client_ips: Collection[str] | None) -> ServerView:
    """The reference answer: a walk over the whole read per request keeping the sessions a
    direct read would give a watcher with these addresses. A read holds host names only
    when the server resolves names, so `names_resolved` is True for it. (Up to 2026-11-30
    fleet answers kept only exact addresses and lost a name-resolving server's sessions.)"""
    if client_ips is None:
        return view
    wanted = frozenset(client_ips)
    return _with_sessions(view, tuple(
        s for s in view.sessions if client_wanted(s.client, wanted, names_resolved=True)
    ))


def wire(answer: ServerView) -> bytes:
    """What a sidecar receives (the handler's json_response uses json.dumps too)."""
    return json.dumps(encode_view(answer, now=2000.0)).encode()


# Client addresses as a read can hold them: normalised IPs of both families, the forms a
# name-resolving server shows (localhost, host names), and forms normalisation would have
# changed (IPv4-mapped, upper case), in case a source ever lets one through.
ADDRESSES = ["10.0.0.9", "10.0.0.10", "127.0.0.1", "::1", "2001:db8::7", "localhost",
             "app.example", "::ffff:10.0.0.9", "FE80::1", ""]
clients = st.one_of(st.none(), st.builds(Endpoint, st.sampled_from(ADDRESSES),
                                         st.integers(1, 65535)))
sessions = st.builds(
    Session,
    id=st.integers(min_value=0, max_value=2**40),
    client=clients,
    user=st.sampled_from(["app", "root", ""]),
    db=st.one_of(st.none(), st.just("shop")),
    command=st.sampled_from(["Sleep", "Query"]),
    idle_seconds=st.floats(min_value=0, max_value=1e6, allow_nan=False),
    wait_timeout=st.one_of(st.none(), st.floats(min_value=1, max_value=1e6)),
)
asks = st.one_of(
    st.none(),
    st.frozensets(st.sampled_from([*ADDRESSES, "10.0.0.99", "192.0.2.1"]), max_size=6),
)


@given(st.lists(sessions, max_size=60), st.lists(asks, min_size=1, max_size=8),
       st.booleans(), st.booleans())
def test_index_answers_are_the_scans_byte_for_byte(
    rows: list[Session], questions: list[frozenset[str] | None], ok: bool, per_session: bool
) -> None:
    read = view(*rows, ok=ok, per_session_timeouts=per_session,
                error=None if ok else "boom", full_view=per_session)
    index = IndexedView(read)
    for client_ips in questions:  # one index, many sidecars
        expected = scan_filter(read, client_ips)
        answer = index.answer(client_ips)
        assert answer == expected
        assert wire(answer) == wire(expected)


def test_several_addresses_keep_the_reads_order() -> None:
    read = view(sess(1, 5000, ip="10.0.0.10"), sess(2, 5001, ip="10.0.0.9"),
                sess(3, 5002, ip="::1"), sess(4, 5003, ip="10.0.0.10"), sess(5, None),
                sess(6, 5004, ip="10.0.0.9"))
    index = IndexedView(read)
    assert [s.id for s in index.answer({"10.0.0.9", "10.0.0.10"}).sessions] == [1, 2, 4, 6]
    assert [s.id for s in index.answer(["::1", "10.0.0.9"]).sessions] == [2, 3, 6]
    assert [s.id for s in index.answer({"10.0.0.9"}).sessions] == [2, 6]
    assert index.answer(set()).sessions == ()
    assert index.answer({"192.0.2.1"}).sessions == ()
    assert index.answer(None) is read


def test_processlist_forms_answer_as_a_direct_read_would() -> None:
    """Rows as servers show them: IPv4-mapped clients of a dual-stack server, and a
    name-resolving server's localhost and host names. A sidecar gets its exact addresses,
    localhost when it asks for a loopback address, and every host name (it matches those
    by port, as a direct read does)."""
    rows = [
        (1, "app", "10.0.0.9:5000", "shop", "Sleep", 10, None, None, None, None),
        (2, "app", "[::ffff:10.0.0.9]:5001", "shop", "Sleep", 10, None, None, None, None),
        (3, "app", "", None, "Sleep", 10, None, "::ffff:10.0.0.9", 5002, 600),
        (4, "app", "localhost:5003", None, "Sleep", 10, None, None, None, None),
        (5, "app", "app.example:5004", None, "Sleep", 10, None, None, None, None),
        (6, "app", "localhost", None, "Sleep", 10, None, None, None, None),
        (7, "app", "::1:5005", None, "Query", 1, None, None, None, None),
        (8, "app", "127.0.0.1:5006", None, "Sleep", 10, None, None, None, None),
    ]
    read = view(*rows_to_sessions(rows))
    index = IndexedView(read)
    for client_ips in [{"10.0.0.9"}, {"127.0.0.1", "::1"}, {"localhost"}, {"app.example"},
                       {"127.0.0.1"}, {"10.0.0.9", "::1", "127.0.0.1"}, set(), None]:
        assert wire(index.answer(client_ips)) == wire(scan_filter(read, client_ips))
    assert [s.id for s in index.answer({"10.0.0.9"}).sessions] == [1, 2, 3, 5]
    assert [s.id for s in index.answer({"127.0.0.1"}).sessions] == [4, 5, 8]
    # The direct read's own filter on the same rows gives the same sessions.
    for client_ips in [{"10.0.0.9"}, {"127.0.0.1"}, {"::1", "10.0.0.9"}]:
        direct = rows_to_sessions(rows, client_ips=frozenset(client_ips), names_resolved=True)
        assert index.answer(client_ips).sessions == direct


class CountedWalks(tuple):  # type: ignore[type-arg]
    """Sessions that count how often something walks the whole of them."""

    walks = 0

    def __iter__(self) -> Iterator[Session]:
        CountedWalks.walks += 1
        return super().__iter__()


def test_answers_do_not_walk_the_whole_read() -> None:
    others = [sess(i, 10_000 + i % 50_000, ip=f"10.1.{i // 250}.{i % 250}")
              for i in range(10_000)]
    read = view(*others, sess(10_001, 5000), sess(10_002, 5001))
    read = dataclasses.replace(read, sessions=CountedWalks(read.sessions))
    CountedWalks.walks = 0
    index = IndexedView(read)
    assert CountedWalks.walks == 1  # building it
    for _ in range(100):
        assert [s.id for s in index.answer({"10.0.0.9"}).sessions] == [10_001, 10_002]
        assert len(index.answer({"10.1.3.7", "10.1.9.9"}).sessions) == 2
    assert CountedWalks.walks == 1  # answering: only the asker's own sessions


def test_the_index_is_built_once_per_read_not_per_request(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    built: list[ServerView] = []

    class Counting(IndexedView):
        def __init__(self, read: ServerView) -> None:
            built.append(read)
            super().__init__(read)

    monkeypatch.setattr(fleet_server_module, "IndexedView", Counting)
    clock = FakeClock(0.0)
    database = FakeSessions(lambda deadline: view(sess(1, 5000), sess(2, 5001, ip="10.0.0.10"),
                                                  read_at=deadline.now()))
    standalone = fleet_exporter(database, interval=30, clock=clock)

    async def ask(base: str, ip: str, *, fresh: bool = False) -> ServerView:
        source = FleetSessionSource(base, "db:3306")
        return await asyncio.to_thread(source.read, frozenset({ip}), Deadline.after(5, clock),
                                       fresh=fresh)

    async def scenario() -> list[ServerView]:
        runner, port = await serve(build_app(standalone.engine, WebOptions(), standalone.fleet))
        base = f"http://127.0.0.1:{port}"
        answers = []
        try:
            for phase in range(3):  # a read, its interval over, then a fresh read
                clock.now = 31.0 * phase
                for i, ip in enumerate(("10.0.0.9", "10.0.0.10") * 10):
                    answers.append(await ask(base, ip, fresh=phase == 2 and i == 0))
        finally:
            await runner.cleanup()
            standalone.close()
        return answers

    answers = asyncio.run(scenario())
    assert len(answers) == 60 and all(a.ok for a in answers)
    assert [[s.id for s in a.sessions] for a in answers] == [[1], [2]] * 30
    assert database.reads == 3
    assert len(built) == database.reads  # one index per read, none per request


def test_a_failed_read_answers_its_error_to_every_sidecar() -> None:
    failed = ServerView(target="db:3306", ok=False, error="Access denied",
                        flavor=Flavor.MARIADB)
    index = IndexedView(failed)
    for client_ips in (None, set(), {"10.0.0.9"}):
        assert wire(index.answer(client_ips)) == wire(scan_filter(failed, client_ips))
        assert index.answer(client_ips).error == "Access denied"

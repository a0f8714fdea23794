"""SessionReader against real, throwaway servers: every test runs on MariaDB 10.11 and on
MySQL 9.7 (ids [mariadb], [mysql])."""

from __future__ import annotations

import contextlib
import logging
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import pymysql
import pytest

from exporter.model import Endpoint, Flavor, ServerView, Session
from exporter.sessions import OWN_WAIT_TIMEOUT, Credentials, SessionReader
from exporter.sessions.reader import BUSY
from tests.support.builders import soon
from tests.support.servers import ServerFactory, TestServer
from tests.support.testserver import MonitorUser
from tests.support.waiting import until

if TYPE_CHECKING:
    Connection = pymysql.connections.Connection[Any]
else:
    Connection = pymysql.connections.Connection


def make_reader(
    server: TestServer, user: MonitorUser | None = None, **kw: Any
) -> SessionReader:
    user = user or server.create_monitor_user()
    return SessionReader(
        f"{server.host}:{server.port}", server.host, server.port,
        Credentials(user.user, user.password), **kw,
    )


def local_port(conn: Connection) -> int:
    return int(conn._sock.getsockname()[1])  # type: ignore[attr-defined]


def thread_id(conn: Connection) -> int:
    return int(conn.thread_id())  # type: ignore[no-untyped-call]


def by_port(view: ServerView) -> dict[int, Session]:
    return {s.client.port: s for s in view.sessions if s.client is not None}


def ok(view: ServerView) -> ServerView:
    assert view.ok, view.error
    return view


@pytest.fixture(scope="module")
def app_user(db_server: TestServer) -> Iterator[MonitorUser]:
    """An application login (no privileges) whose sessions the exporter watches."""
    user = db_server.create_user("app", grants=())
    yield user
    db_server.execute("DROP USER 'app'@'%'")


@pytest.fixture
def clients(
    db_server: TestServer, app_user: MonitorUser
) -> Iterator[Callable[..., Connection]]:
    opened: list[Connection] = []

    def open_client(server: TestServer = db_server, **kw: Any) -> Connection:
        options: dict[str, Any] = {"user": app_user.user, "password": app_user.password}
        options.update(kw)
        conn = server.connect(**options)
        opened.append(conn)
        return conn

    yield open_client
    for conn in opened:
        with contextlib.suppress(Exception):
            conn.close()


@pytest.fixture
def reader(db_server: TestServer) -> Iterator[SessionReader]:
    r = make_reader(db_server)
    yield r
    r.close()


def run(conn: Connection, sql: str) -> list[tuple[Any, ...]]:
    with conn.cursor() as cursor:
        cursor.execute(sql)
        return list(cursor.fetchall())


def test_server_starts_fast(db_server: TestServer, db_server_factory: ServerFactory) -> None:
    server = db_server_factory()
    assert server.startup_seconds < 2.0, server.startup_seconds
    assert db_server.startup_seconds < 2.0, db_server.startup_seconds
    assert server.port != db_server.port and server.pid != db_server.pid


def test_reads_client_sessions(
    db_server: TestServer, reader: SessionReader, clients: Callable[..., Connection]
) -> None:
    first, second, third = clients(), clients(), clients(database="information_schema")
    last_query: dict[int, float] = {}
    for conn in (first, second, third):
        run(conn, "SELECT 1")
        last_query[local_port(conn)] = time.monotonic()
        time.sleep(0.6)

    view = ok(reader.read(None, soon(5.0)))
    sessions = by_port(view)
    for conn in (first, second, third):
        port = local_port(conn)
        session = sessions[port]
        assert session.id == thread_id(conn)
        assert session.client == Endpoint("127.0.0.1", port)
        assert session.user == "app"
        assert session.sleeping
        expected_idle = view.read_at - last_query[port]
        # MariaDB counts idle time in milliseconds (TIME_MS), MySQL in whole seconds.
        tolerance = 1.1 if db_server.is_mysql else 1.0
        assert abs(session.idle_seconds - expected_idle) < tolerance, (session, expected_idle)
        assert session.wait_timeout is None
    assert sessions[local_port(third)].db == "information_schema"
    assert sessions[local_port(first)].db is None
    idles = [sessions[local_port(conn)].idle_seconds for conn in (first, second, third)]
    if db_server.is_mysql:  # whole seconds: sessions 0.6 s apart may tie
        assert idles == sorted(idles, reverse=True) and idles[0] > idles[2], idles
    else:
        assert idles[0] > idles[1] > idles[2], idles

    info = reader.connection.info
    assert info is not None
    assert view.own_session_ids == {info.connection_id}
    assert info.connection_id not in {s.id for s in view.sessions}
    assert view.own_client_endpoints == {info.local}
    assert info.local is not None and info.local.port not in sessions
    if db_server.is_mysql:
        assert view.flavor is Flavor.MYSQL and view.version.startswith("9.7."), view.version
    else:
        assert view.flavor is Flavor.MARIADB and "MariaDB" in view.version
    assert view.source == "information_schema"
    global_timeouts = db_server.execute(
        "SELECT @@global.wait_timeout, @@global.interactive_timeout")
    assert (view.wait_timeout, view.interactive_timeout) == tuple(
        float(v) for v in global_timeouts[0])
    assert view.full_view and not view.per_session_timeouts
    assert set(view.durations) == {"connect", "variables", "processlist"}
    assert 0 < view.read_at <= time.monotonic()


def test_busy_session_shows_its_command(
    db_server: TestServer, reader: SessionReader, clients: Callable[..., Connection]
) -> None:
    busy = clients()
    port = local_port(busy)
    def sleep_query() -> None:
        with contextlib.suppress(pymysql.err.OperationalError):  # KILL QUERY below
            run(busy, "SELECT SLEEP(3)")

    worker = threading.Thread(target=sleep_query)
    worker.start()
    try:
        deadline = time.monotonic() + 3
        session = None
        while time.monotonic() < deadline:
            session = by_port(ok(reader.read(None, soon(2.0)))).get(port)
            if session is not None and not session.sleeping:
                break
            time.sleep(0.05)
        assert session is not None and session.command == "Query", session
    finally:
        db_server.execute(f"KILL QUERY {thread_id(busy)}")
        worker.join(5)


def test_client_ips_filter(
    reader: SessionReader, clients: Callable[..., Connection]
) -> None:
    local = clients()
    other = clients(bind_address="127.0.0.2")
    here, there = local_port(local), local_port(other)

    only_local = by_port(ok(reader.read(frozenset({"127.0.0.1"}), soon(2.0))))
    assert here in only_local and there not in only_local
    assert only_local[here].client == Endpoint("127.0.0.1", here)

    only_other = by_port(ok(reader.read(frozenset({"127.0.0.2"}), soon(2.0))))
    assert set(only_other) == {there}
    assert only_other[there].client == Endpoint("127.0.0.2", there)

    both = by_port(ok(reader.read(frozenset({"127.0.0.2", "::ffff:127.0.0.1"}), soon(2.0))))
    assert {here, there} <= set(both)

    assert ok(reader.read(frozenset({"10.9.9.9"}), soon(2.0))).sessions == ()

    before = reader.counts().queries
    view = ok(reader.read(frozenset(), soon(2.0)))
    assert view.sessions == () and reader.counts().queries - before == 1  # variables only


def test_one_statement_per_read(
    db_server: TestServer, reader: SessionReader, clients: Callable[..., Connection]
) -> None:
    clients()
    ok(reader.read(None, soon(2.0)))  # connects and probes
    monitor = db_server.connect()
    try:
        def counters() -> tuple[int, int]:
            return (db_server.global_status("Questions", monitor),
                    db_server.global_status("Com_select", monitor))

        # What measuring costs by itself: two consecutive reads of the counters.
        q0, s0 = counters()
        q1, s1 = counters()
        own_questions, own_selects = (q1 - q0) * 2, (s1 - s0) * 2
        reads = 5
        sent_before = reader.counts().queries
        q2, s2 = counters()
        for client_ips in (None, frozenset({"127.0.0.1"})) * 2 + (None,):
            ok(reader.read(client_ips, soon(2.0)))
        q3, s3 = counters()
    finally:
        monitor.close()
    # Timeouts and processlist in one statement (the packed read, sessions/compact.py).
    assert reader.counts().queries - sent_before == reads
    assert (q3 - q2) - own_questions // 2 == reads
    assert (s3 - s2) - own_selects // 2 == reads


@pytest.mark.parametrize("odd", ["we\x1fird", "tw\x1eo", "ok\u00e9"])
def test_names_holding_the_separators_fall_back_to_rows(
    db_server: TestServer, reader: SessionReader, clients: Callable[..., Connection],
    odd: str,
) -> None:
    # User and database names may hold any character, the packed read's separators too:
    # the packed text is then refused and the same read is made row by row.
    name = odd.encode().decode("unicode_escape")
    quoted = name.replace("`", "``")
    db_server.execute(f"CREATE DATABASE IF NOT EXISTS `{quoted}`")
    try:
        conn = db_server.connect(database=name)  # root: may use any database
        plain = clients()
        ok(reader.read(None, soon(5.0)))  # connected
        before = reader.counts().queries
        sessions = by_port(ok(reader.read(frozenset({"127.0.0.1"}), soon(5.0))))
        sent = reader.counts().queries - before
        assert sessions[local_port(conn)].db == name
        assert sessions[local_port(conn)].id == thread_id(conn)
        assert sessions[local_port(plain)].db is None
        # Packed read trusted: one statement; refused: the row read follows it.
        assert sent == (2 if ("\x1f" in name or "\x1e" in name) else 1)
        conn.close()
    finally:
        db_server.execute(f"DROP DATABASE IF EXISTS `{quoted}`")


def test_many_sessions_in_one_packed_row(
    db_server: TestServer, reader: SessionReader, clients: Callable[..., Connection]
) -> None:
    # More sessions than the default group_concat_max_len (1 KiB) holds.
    opened = [clients() for _ in range(60)]
    ok(reader.read(None, soon(5.0)))  # connected
    before = reader.counts().queries
    sessions = by_port(ok(reader.read(frozenset({"127.0.0.1"}), soon(5.0))))
    assert reader.counts().queries - before == 1
    for conn in opened:
        assert sessions[local_port(conn)].id == thread_id(conn)
        assert sessions[local_port(conn)].command == "Sleep"


def test_own_session_wait_timeout_is_raised(reader: SessionReader) -> None:
    ok(reader.read(None, soon(2.0)))
    rows = reader.connection.query("SELECT @@session.wait_timeout", deadline=soon(2.0))
    assert int(rows[0][0]) == OWN_WAIT_TIMEOUT


def test_survives_its_own_wait_timeout(
    db_server: TestServer, caplog: pytest.LogCaptureFixture
) -> None:
    original = db_server.execute("SELECT @@global.wait_timeout")[0][0]
    reader = make_reader(db_server, session_wait_timeout=None)
    try:
        db_server.execute("SET GLOBAL wait_timeout = 2")
        try:
            first = ok(reader.read(None, soon(2.0)))
        finally:
            db_server.execute(f"SET GLOBAL wait_timeout = {int(original)}")
        assert first.wait_timeout == 2.0
        rows = reader.connection.query("SELECT @@session.wait_timeout", deadline=soon(2.0))
        assert int(rows[0][0]) == 2
        # The server drops the idle exporter session after its 2 s.
        gone = first.own_session_ids
        until(lambda: not gone & {int(row[0]) for row in db_server.execute(
            "SELECT ID FROM information_schema.PROCESSLIST")},
            "the server to drop the exporter's idle session", timeout=10)
        # Only what the reconnect says: the first read may have warned about the source
        # (MySQL's deprecated information_schema.PROCESSLIST for a PROCESS-only user).
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="exporter.sessions"):
            second = ok(reader.read(None, soon(5.0)))
        assert second.own_session_ids != first.own_session_ids
        assert reader.connection.connects == 2
        assert second.durations["connect"] > 0
        assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    finally:
        reader.close()


def test_survives_kill(db_server: TestServer, reader: SessionReader) -> None:
    first = ok(reader.read(None, soon(2.0)))
    (own_id,) = first.own_session_ids
    db_server.execute(f"KILL {own_id}")
    second = ok(reader.read(None, soon(5.0)))
    assert second.own_session_ids != first.own_session_ids
    assert reader.connection.connects == 2


def test_survives_restart(db_server_factory: ServerFactory) -> None:
    server = db_server_factory()
    reader = make_reader(server)
    try:
        ok(reader.read(None, soon(2.0)))
        old_pid = server.pid
        server.restart()
        assert server.pid != old_pid
        view = ok(reader.read(None, soon(5.0)))
        assert reader.connection.connects == 2
        # Only clients: MySQL's event_scheduler (ON by default) is a session without one.
        assert [s for s in view.sessions if s.client is not None] == []
    finally:
        reader.close()


def test_down_and_up_logged_once_each(
    db_server_factory: ServerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    server = db_server_factory()
    reader = make_reader(server)
    try:
        with caplog.at_level(logging.INFO, logger="exporter.sessions.reader"):
            ok(reader.read(None, soon(2.0)))
            ok(reader.read(None, soon(2.0)))
            server.stop()
            down = [reader.read(None, soon(2.0)) for _ in range(3)]
            server.start()
            ok(reader.read(None, soon(5.0)))
            ok(reader.read(None, soon(2.0)))
        for view in down:
            assert not view.ok
            assert view.error is not None and "cannot connect" in view.error
            assert "Connection refused" in view.error
        # The up/down transitions; on MySQL the first "up" is followed by one warning about
        # the deprecated source (a PROCESS-only user), which is not a transition.
        lines = [r.getMessage() for r in caplog.records if r.name == "exporter.sessions.reader"
                 and "deprecates" not in r.getMessage()]
        assert len(lines) == 3, lines
        assert ": up: " in lines[0] and ": down: cannot connect" in lines[1]
        assert ": up: " in lines[2]
    finally:
        reader.close()


def test_hung_server_times_out_and_reads_do_not_queue(db_server_factory: ServerFactory) -> None:
    server = db_server_factory()
    reader = make_reader(server)
    try:
        ok(reader.read(None, soon(2.0)))
        server.pause()
        results: list[ServerView] = []
        started = time.monotonic()
        worker = threading.Thread(
            target=lambda: results.append(reader.read(None, soon(1.5))))
        worker.start()
        until(lambda: reader.busy, "the first read to start")
        t0 = time.monotonic()
        busy = reader.read(None, soon(1.5))
        assert time.monotonic() - t0 < 0.1
        assert not busy.ok and busy.error == BUSY
        worker.join(5)
        elapsed = time.monotonic() - started
        (hung,) = results
        assert not hung.ok and hung.error is not None and "timed out" in hung.error
        assert 1.4 < elapsed < 2.5, elapsed
        server.resume()
        ok(reader.read(None, soon(5.0)))
    finally:
        server.resume()
        reader.close()


def test_close_breaks_off_a_hung_read(db_server_factory: ServerFactory) -> None:
    server = db_server_factory()
    reader = make_reader(server)
    ok(reader.read(None, soon(2.0)))
    server.pause()
    results: list[ServerView] = []
    worker = threading.Thread(target=lambda: results.append(reader.read(None, soon(10.0))))
    worker.start()
    until(lambda: reader.busy, "the read to start")
    started = time.monotonic()
    reader.close()
    worker.join(5)
    assert time.monotonic() - started < 1.0
    assert results and not results[0].ok
    after = reader.read(None, soon(1.0))
    assert not after.ok and after.error == "reader closed"


def test_wrong_password(db_server: TestServer, caplog: pytest.LogCaptureFixture) -> None:
    secret = "definitely-Wrong-p4ss"
    reader = SessionReader("t", db_server.host, db_server.port, Credentials("exporter", secret))
    try:
        with caplog.at_level(logging.DEBUG):
            view = reader.read(None, soon(2.0))
    finally:
        reader.close()
    assert not view.ok
    assert view.error is not None
    assert view.error.startswith("access denied: (1045) Access denied for user 'exporter'")
    assert secret not in view.error
    assert secret not in caplog.text
    assert secret not in repr(reader) and secret not in repr(reader.connection)


def test_user_without_process_sees_only_its_own(
    db_server: TestServer, clients: Callable[..., Connection]
) -> None:
    plain = db_server.create_user("noproc", grants=())
    try:
        app = clients()
        own_other = clients(user=plain.user, password=plain.password)
        reader = make_reader(db_server, plain)
        try:
            view = ok(reader.read(None, soon(2.0)))
        finally:
            reader.close()
        assert view.full_view is False
        ports = by_port(view)
        assert local_port(own_other) in ports and local_port(app) not in ports
        assert {s.user for s in view.sessions} == {"noproc"}
    finally:
        db_server.execute("DROP USER 'noproc'@'%'")


def test_process_through_a_role_counts(db_server_factory: ServerFactory) -> None:
    server = db_server_factory(monitor_user=False)
    server.execute("CREATE ROLE monitoring")
    server.execute("GRANT PROCESS ON *.* TO monitoring")
    user = server.create_user("viarole", grants=())
    server.execute("GRANT monitoring TO 'viarole'@'%'")
    # The same statement, in each server's grammar.
    to = "TO" if server.is_mysql else "FOR"
    server.execute(f"SET DEFAULT ROLE monitoring {to} 'viarole'@'%'")
    reader = make_reader(server, user)
    try:
        assert ok(reader.read(None, soon(2.0))).full_view is True
    finally:
        reader.close()


def test_performance_schema_source(db_server_factory: ServerFactory) -> None:
    server = db_server_factory("--performance-schema=ON")
    server.execute("GRANT SELECT ON performance_schema.* TO 'exporter'@'%'")
    app = server.create_user("app", grants=())
    conns = [server.connect(user=app.user, password=app.password),
             server.connect(user=app.user, password=app.password, bind_address="127.0.0.2"),
             server.connect(user=app.user, password=app.password)]
    ps_reader = make_reader(server)
    is_reader = make_reader(server, prefer="information_schema")
    try:
        for conn in conns:
            run(conn, "SELECT 1")
        ps_view = ok(ps_reader.read(None, soon(2.0)))
        is_view = ok(is_reader.read(None, soon(2.0)))
        # MySQL 8.0.22+ has performance_schema.processlist, and each session's own
        # wait_timeout in variables_by_thread; MariaDB 10.11 has neither.
        assert ps_view.source == ("performance_schema.processlist" if server.is_mysql
                                  else "performance_schema.threads")
        assert is_view.source == "information_schema"
        assert ps_view.per_session_timeouts is server.is_mysql
        timeouts = {s.wait_timeout for s in ps_view.sessions if s.user == app.user}
        assert timeouts == ({ps_view.wait_timeout} if server.is_mysql else {None}), timeouts

        def key(view: ServerView, exclude: frozenset[int]) -> set[tuple[Any, ...]]:
            # Client sessions: MySQL's performance_schema.processlist also lists a
            # "system user" thread that information_schema leaves out; neither has a client.
            return {(s.id, s.client, s.user, s.command)
                    for s in view.sessions if s.id not in exclude and s.client is not None}

        # Each reader sees the other's session; leave both out.
        both = ps_view.own_session_ids | is_view.own_session_ids
        assert key(ps_view, both) == key(is_view, both)
        ports = by_port(ps_view)
        for conn in conns:
            session = ports[local_port(conn)]
            assert session.id == thread_id(conn) and session.sleeping
        assert ps_view.own_session_ids.isdisjoint({s.id for s in ps_view.sessions})

        filtered = by_port(ok(ps_reader.read(frozenset({"127.0.0.2"}), soon(2.0))))
        assert set(filtered) == {local_port(conns[1])}
        filtered = by_port(ok(ps_reader.read(frozenset({"127.0.0.1"}), soon(2.0))))
        assert set(filtered) >= {local_port(conns[0]), local_port(conns[2])}
        assert local_port(conns[1]) not in filtered
    finally:
        for conn in conns:
            conn.close()
        ps_reader.close()
        is_reader.close()


def test_performance_schema_preferred_but_unusable(db_server: TestServer) -> None:
    reader = make_reader(db_server, prefer="performance_schema")
    try:
        view = reader.read(None, soon(2.0))
    finally:
        reader.close()
    assert not view.ok
    # The shared MariaDB runs with performance_schema OFF (MariaDB's default); MySQL's is ON
    # (its default), but the monitoring user has no SELECT on it.
    why = ("no SELECT on performance_schema.socket_instances, performance_schema.threads"
           if db_server.is_mysql else "performance_schema is OFF")
    assert view.error == f"performance_schema source unavailable: {why}"


def test_name_resolving_server_shows_localhost(db_server_factory: ServerFactory) -> None:
    server = db_server_factory("--skip-name-resolve=OFF")  # MySQL reads "=0" as ON
    app = server.create_user("app", grants=())
    conn = server.connect(user=app.user, password=app.password)
    reader = make_reader(server)
    try:
        port = local_port(conn)
        view = ok(reader.read(frozenset({"127.0.0.1"}), soon(2.0)))
        assert server.execute("SELECT @@skip_name_resolve") == [(0,)]
        # MariaDB shows a loopback client by name; MySQL 9.7 by address all the same.
        host = "127.0.0.1" if server.is_mysql else "localhost"
        assert by_port(view)[port].client == Endpoint(host, port)
        assert ok(reader.read(frozenset({"127.0.0.2"}), soon(2.0))).sessions == ()
    finally:
        conn.close()
        reader.close()


def test_read_is_fast(reader: SessionReader, clients: Callable[..., Connection]) -> None:
    for _ in range(20):
        clients()
    ok(reader.read(None, soon(2.0)))
    timings = []
    for _ in range(20):
        started = time.perf_counter()
        view = ok(reader.read(frozenset({"127.0.0.1"}), soon(2.0)))
        timings.append(time.perf_counter() - started)
        assert len(view.sessions) >= 20
    timings.sort()
    assert timings[len(timings) // 2] < 0.05, timings


def test_information_schema_on_mysql_is_said_to_be_deprecated_once(
    db_server: TestServer, caplog: pytest.LogCaptureFixture,
) -> None:
    """performance_schema.processlist is the default where it exists; information_schema
    (asked for here, as it is without SELECT on performance_schema) is the fallback, and on
    MySQL 8.0.22+ its deprecation is said once, not at every read."""
    user = db_server.create_user(f"ps_{secrets.token_hex(4)}")
    db_server.execute(f"GRANT SELECT ON performance_schema.* TO '{user.user}'@'%'")
    default = make_reader(db_server, user)
    fallback = make_reader(db_server, user, prefer="information_schema")
    try:
        with caplog.at_level(logging.INFO, logger="exporter.sessions"):
            source = ok(default.read(None, soon(5.0))).source
            for _ in range(3):
                ok(fallback.read(None, soon(5.0)))
    finally:
        default.close()
        fallback.close()
    said = [r for r in caplog.records if "deprecates" in r.getMessage()]
    if db_server.is_mysql:
        assert source == "performance_schema.processlist"
        assert len(said) == 1 and "performance_schema.processlist" in said[0].getMessage()
    else:  # MariaDB deprecates nothing here (its performance_schema is OFF in the tests)
        assert source == "information_schema"
        assert said == []

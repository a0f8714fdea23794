"""Session sources: SQL building and row -> Session conversion over fixture rows."""

from __future__ import annotations

import re
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exporter.model import Endpoint, Flavor, Session
from exporter.sessions import sources
from exporter.sessions.sources import (
    COLUMNS,
    Capabilities,
    Source,
    SourceUnavailable,
    choose_source,
    escape_like,
    host_patterns,
    parse_probe,
    processlist_query,
    row_to_session,
    rows_to_sessions,
    socket_ips,
)

# Rows in COLUMNS order:
# (id, user, host, db, command, time, time_ms, ip, port, wait_timeout)

MARIADB_INFORMATION_SCHEMA_ROWS = [
    (11, "app", "127.0.0.1:47394", "shop", "Sleep", 12, Decimal("12345.678"), None, None, None),
    (12, "app", "::1:50000", None, "Query", 0, Decimal("3.100"), None, None, None),
    (13, "app", "localhost", "shop", "Sleep", 4, Decimal("4000.000"), None, None, None),
    (14, "batch", "localhost:41000", "jobs", "Sleep", 7, Decimal("7001.000"), None, None, None),
    (15, "batch", "worker-3.example:41001", None, "Sleep", 9, Decimal("9000.5"), None, None, None),
    (16, "exporter", "127.0.0.1:40000", None, "Query", 0, Decimal("0.2"), None, None, None),
    (17, "system user", None, None, "Daemon", 0, Decimal("0"), None, None, None),
    (18, "app", "::ffff:10.0.0.7:3333", None, "Sleep", 1, Decimal("1500"), None, None, None),
]
MARIADB_INFORMATION_SCHEMA_SESSIONS = [
    Session(11, Endpoint("127.0.0.1", 47394), "app", "shop", "Sleep", 12.345678),
    Session(12, Endpoint("::1", 50000), "app", None, "Query", 0.0031),
    Session(13, None, "app", "shop", "Sleep", 4.0),
    Session(14, Endpoint("localhost", 41000), "batch", "jobs", "Sleep", 7.001),
    Session(15, Endpoint("worker-3.example", 41001), "batch", None, "Sleep", 9.0005),
    Session(17, None, "system user", None, "Daemon", 0.0),
    Session(18, Endpoint("10.0.0.7", 3333), "app", None, "Sleep", 1.5),
]

MYSQL_INFORMATION_SCHEMA_ROWS = [
    (21, "app", "10.1.2.3:5555", "shop", "Sleep", 30, None, None, None, None),
    (22, "app", "[fe80::1]:5556", "shop", "Query", 2, None, None, None, None),
]
MYSQL_INFORMATION_SCHEMA_SESSIONS = [
    Session(21, Endpoint("10.1.2.3", 5555), "app", "shop", "Sleep", 30.0),
    Session(22, Endpoint("fe80::1", 5556), "app", "shop", "Query", 2.0),
]

# performance_schema.threads + socket_instances: HOST has no port, IP/PORT carry it.
PS_THREADS_ROWS = [
    (31, "app", "127.0.0.1", "shop", "Sleep", 5, None, "127.0.0.1", 47394, None),
    (32, "app", "localhost", None, "Sleep", 6, None, "::ffff:127.0.0.1", 47395, None),
    (33, "app", "localhost", None, "Sleep", 7, None, "", 0, None),  # unix socket
    (34, "app", "db-client.example", None, "Query", 0, None, "2001:db8::5", 6000, None),
    (35, None, None, None, None, None, None, None, None, None),  # no socket, no user
]
PS_THREADS_SESSIONS = [
    Session(31, Endpoint("127.0.0.1", 47394), "app", "shop", "Sleep", 5.0),
    Session(32, Endpoint("127.0.0.1", 47395), "app", None, "Sleep", 6.0),
    Session(33, None, "app", None, "Sleep", 7.0),
    Session(34, Endpoint("2001:db8::5", 6000), "app", None, "Query", 0.0),
    Session(35, None, "", None, "", 0.0),
]

# MySQL 8.0.22+ performance_schema.processlist with variables_by_thread.wait_timeout.
MYSQL8_PS_PROCESSLIST_ROWS = [
    (41, "app", "10.0.0.9:40001", "shop", "Sleep", 100, None, "10.0.0.9", 40001, "28800"),
    (42, "app", "10.0.0.9:40002", "shop", "Sleep", 50, None, "10.0.0.9", 40002, "60"),
    (43, "event_scheduler", "localhost", None, "Daemon", 3, None, None, None, None),
    (44, "app", "10.0.0.9:40003", None, "Query", 1, None, "10.0.0.9", 40003, b"600"),
]
MYSQL8_PS_PROCESSLIST_SESSIONS = [
    Session(41, Endpoint("10.0.0.9", 40001), "app", "shop", "Sleep", 100.0, 28800.0),
    Session(42, Endpoint("10.0.0.9", 40002), "app", "shop", "Sleep", 50.0, 60.0),
    Session(43, None, "event_scheduler", None, "Daemon", 3.0, None),
    Session(44, Endpoint("10.0.0.9", 40003), "app", None, "Query", 1.0, 600.0),
]


@pytest.mark.parametrize(
    ("name", "rows", "own_ids", "expected"),
    [
        ("mariadb information_schema", MARIADB_INFORMATION_SCHEMA_ROWS, frozenset({16}),
         MARIADB_INFORMATION_SCHEMA_SESSIONS),
        ("mysql information_schema", MYSQL_INFORMATION_SCHEMA_ROWS, frozenset(),
         MYSQL_INFORMATION_SCHEMA_SESSIONS),
        ("performance_schema threads", PS_THREADS_ROWS, frozenset(), PS_THREADS_SESSIONS),
        ("mysql 8 performance_schema processlist", MYSQL8_PS_PROCESSLIST_ROWS, frozenset(),
         MYSQL8_PS_PROCESSLIST_SESSIONS),
    ],
)
def test_rows_to_sessions(
    name: str, rows: list[tuple[object, ...]], own_ids: frozenset[int], expected: list[Session]
) -> None:
    got = rows_to_sessions(rows, own_ids=own_ids)
    assert len(got) == len(expected), name
    for session, want in zip(got, expected, strict=True):
        assert session.id == want.id
        assert session.client == want.client
        assert session.user == want.user
        assert session.db == want.db
        assert session.command == want.command
        assert session.idle_seconds == pytest.approx(want.idle_seconds)
        assert session.wait_timeout == want.wait_timeout


def test_own_session_is_excluded() -> None:
    got = rows_to_sessions(MARIADB_INFORMATION_SCHEMA_ROWS, own_ids=frozenset({16, 11}))
    assert {s.id for s in got}.isdisjoint({11, 16})


def test_sleeping_and_busy() -> None:
    by_id = {s.id: s for s in rows_to_sessions(MARIADB_INFORMATION_SCHEMA_ROWS)}
    assert by_id[11].sleeping
    assert not by_id[12].sleeping


@pytest.mark.parametrize(
    ("row", "expected"),
    [
        ((None, "u", "h:1", None, "Sleep", 1, None, None, None, None), None),  # no id
        (("abc", "u", "h:1", None, "Sleep", 1, None, None, None, None), None),
        ((-1, "u", "h:1", None, "Sleep", 1, None, None, None, None), None),
        ((5,), Session(5, None, "", None, "", 0.0)),  # short row
        ((5, "u", "1.2.3.4:99999", None, "Sleep", -3, None, None, None, None),
         Session(5, None, "u", None, "Sleep", 0.0)),  # bad port, negative time
        ((5, b"\xffu", b"1.2.3.4:7", b"d", b"Sleep", "8", None, None, None, "0"),
         Session(5, Endpoint("1.2.3.4", 7), "\ufffdu", "d", "Sleep", 8.0, None)),
        ((5, "u", "a:\u00b2", None, "Sleep", 1, None, None, None, None),  # superscript 2
         Session(5, None, "u", None, "Sleep", 1.0)),
        ((5, "u", None, None, "Sleep", 1, None, "10.0.0.1", 0, None),  # socket without port
         Session(5, None, "u", None, "Sleep", 1.0)),
        ((5, "u", "h:1", None, "Sleep", 10**400, None, None, None, "nan"),
         Session(5, Endpoint("h", 1), "u", None, "Sleep", 0.0)),
        # A finite DECIMAL beyond any float: not a time, so TIME is used instead.
        ((5, "u", "h:1", None, "Sleep", 7, Decimal("1E+400"), None, None, None),
         Session(5, Endpoint("h", 1), "u", None, "Sleep", 7.0)),
        ((5, "u", "h:1", None, "Sleep", 7, Decimal("-Infinity"), None, None, None),
         Session(5, Endpoint("h", 1), "u", None, "Sleep", 7.0)),
        # A list row (any sequence) takes the general path.
        ([5, "u", "h:1", None, "Sleep", None, Decimal("1500"), None, None, None],
         Session(5, Endpoint("h", 1), "u", None, "Sleep", 1.5)),
    ],
)
def test_odd_rows(row: tuple[object, ...], expected: Session | None) -> None:
    assert row_to_session(row) == expected


# --- filtering --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("client_ips", "names_resolved", "expected_ids"),
    [
        (None, False, {11, 12, 13, 14, 15, 17, 18}),
        (frozenset({"127.0.0.1"}), False, {11, 14}),  # localhost:PORT is a loopback client
        (frozenset({"::1"}), False, {12, 14}),
        (frozenset({"10.0.0.7"}), False, {18}),
        (frozenset({"::ffff:10.0.0.7"}), False, {18}),
        (frozenset({"10.0.0.8"}), False, set()),
        (frozenset({"10.0.0.8"}), True, {15}),  # a host name may be ours
        (frozenset({"127.0.0.2"}), False, set()),  # only .0.1 and ::1 become localhost
        (frozenset(), False, set()),
    ],
)
def test_client_filter(
    client_ips: frozenset[str] | None, names_resolved: bool, expected_ids: set[int]
) -> None:
    got = rows_to_sessions(
        MARIADB_INFORMATION_SCHEMA_ROWS,
        own_ids=frozenset({16}),
        client_ips=client_ips,
        names_resolved=names_resolved,
    )
    assert {s.id for s in got} == expected_ids


def test_host_patterns() -> None:
    assert host_patterns(None) is None
    assert host_patterns(frozenset()) == ()
    assert host_patterns(frozenset({"10.0.0.1"})) == ("10.0.0.1:%", "::ffff:10.0.0.1:%")
    assert host_patterns(frozenset({"::ffff:10.0.0.1"})) == ("10.0.0.1:%", "::ffff:10.0.0.1:%")
    assert host_patterns(frozenset({"127.0.0.1", "::1"})) == (
        "127.0.0.1:%", "::ffff:127.0.0.1:%", "::1:%", "localhost:%")
    # A name-resolving server shows other clients by host name: no server-side filter.
    assert host_patterns(frozenset({"10.0.0.1"}), names_resolved=True) is None
    assert host_patterns(frozenset({"127.0.0.1"}), names_resolved=True) == (
        "127.0.0.1:%", "::ffff:127.0.0.1:%", "localhost:%")
    assert host_patterns(frozenset({"127.0.0.2"})) == ("127.0.0.2:%", "::ffff:127.0.0.2:%")
    assert host_patterns(frozenset({"127.0.1.1"}), names_resolved=True) is None


def test_escape_like() -> None:
    assert escape_like("a_b%c!d") == "a!_b!%c!!d"


def test_socket_ips() -> None:
    assert socket_ips(None) is None
    assert socket_ips(frozenset({"10.0.0.1", "fe80::1%eth0"})) == (
        "10.0.0.1", "::ffff:10.0.0.1", "fe80::1")


def _placeholders(sql: str) -> int:
    return len(re.findall(r"%s", sql))


@pytest.mark.parametrize("source", list(Source))
@pytest.mark.parametrize("flavor", list(Flavor))
@pytest.mark.parametrize(
    "client_ips", [None, frozenset(), frozenset({"127.0.0.1"}), frozenset({"10.0.0.1", "::1"})]
)
def test_processlist_query_shape(
    source: Source, flavor: Flavor, client_ips: frozenset[str] | None
) -> None:
    caps = Capabilities(ps_tables=frozenset(sources.PS_TABLES))
    query = processlist_query(source, client_ips, flavor=flavor, caps=caps)
    sql = query.sql
    assert "INFO" not in sql.upper().replace("INFORMATION_SCHEMA", "")
    assert "CONNECTION_ID()" in sql  # own session excluded on the server
    assert _placeholders(sql) == len(query.args)
    # Every user-supplied value is a parameter, never part of the SQL text.
    for ip in client_ips or ():
        assert ip not in sql
    # Ten columns, always.
    select_list = sql.split(" FROM ", 1)[0].split("SELECT ", 1)[1]  # after SET STATEMENT
    assert len(select_list.split(", ")) == len(COLUMNS)
    if client_ips is not None and not client_ips:
        assert sql.endswith("AND FALSE")


def test_information_schema_query_flavors() -> None:
    maria = processlist_query(Source.INFORMATION_SCHEMA, None, flavor=Flavor.MARIADB)
    mysql = processlist_query(Source.INFORMATION_SCHEMA, None, flavor=Flavor.MYSQL)
    assert "TIME_MS" in maria.sql
    assert "TIME_MS" not in mysql.sql
    assert maria.args == ()


def test_information_schema_filter() -> None:
    query = processlist_query(
        Source.INFORMATION_SCHEMA, frozenset({"127.0.0.1"}), flavor=Flavor.MARIADB
    )
    assert query.sql.endswith(
        "AND (HOST LIKE %s ESCAPE '!' OR HOST LIKE %s ESCAPE '!' OR HOST LIKE %s ESCAPE '!')"
    )
    assert query.args == ("127.0.0.1:%", "::ffff:127.0.0.1:%", "localhost:%")


def test_performance_schema_filter() -> None:
    query = processlist_query(Source.PS_THREADS, frozenset({"10.0.0.1"}))
    assert query.sql.endswith("AND s.IP IN (%s, %s)")
    assert query.args == ("10.0.0.1", "::ffff:10.0.0.1")
    assert "performance_schema.socket_instances" in query.sql
    assert "t.TYPE = 'FOREGROUND'" in query.sql


def test_performance_schema_join_is_hashed_on_mariadb_only() -> None:
    # MariaDB joins its index-less performance_schema tables with a nested loop unless the
    # statement allows a hash join: quadratic in the sessions for a whole read.
    for client_ips in (None, frozenset({"10.0.0.1"})):
        maria = processlist_query(Source.PS_THREADS, client_ips, flavor=Flavor.MARIADB)
        assert maria.sql.startswith("SET STATEMENT join_cache_level=4, join_buffer_size=")
        assert " FOR SELECT " in maria.sql
        mysql = processlist_query(Source.PS_THREADS, client_ips, flavor=Flavor.MYSQL)
        assert mysql.sql.startswith("SELECT ") and "STRAIGHT_JOIN" not in mysql.sql
    assert not processlist_query(Source.INFORMATION_SCHEMA, None).sql.startswith("SET")
    # Filtered: from the asked addresses' sockets to their threads; whole: every thread.
    filtered = processlist_query(Source.PS_THREADS, frozenset({"10.0.0.1"}))
    assert ("FROM performance_schema.socket_instances AS s STRAIGHT_JOIN "
            "performance_schema.threads AS t ON") in filtered.sql
    whole = processlist_query(Source.PS_THREADS, None)
    assert "FROM performance_schema.threads AS t LEFT JOIN" in whole.sql


def test_ps_processlist_per_session_timeouts() -> None:
    with_vars = processlist_query(
        Source.PS_PROCESSLIST, None,
        caps=Capabilities(ps_tables=frozenset(sources.PS_TABLES)), flavor=Flavor.MYSQL,
    )
    assert "variables_by_thread" in with_vars.sql
    assert "v.VARIABLE_VALUE" in with_vars.sql
    without = processlist_query(
        Source.PS_PROCESSLIST, None,
        caps=Capabilities(ps_tables=frozenset({"processlist", "threads", "socket_instances"})),
        flavor=Flavor.MYSQL,
    )
    assert "variables_by_thread" not in without.sql


# --- capabilities and source choice -------------------------------------------------

PS_ALL = Capabilities(
    process=True, performance_schema=True, ps_tables=frozenset(sources.PS_TABLES), ps_sockets=True
)
PS_MARIADB = Capabilities(
    process=True, performance_schema=True,
    ps_tables=frozenset({"threads", "socket_instances"}), ps_sockets=True,
)
PS_NO_SOCKETS = Capabilities(
    performance_schema=True, ps_tables=frozenset(sources.PS_TABLES), ps_sockets=False
)
PS_NOT_VISIBLE = Capabilities(performance_schema=True, ps_tables=frozenset())
PS_OFF = Capabilities(performance_schema=False)


@pytest.mark.parametrize(
    ("flavor", "caps", "prefer", "expected"),
    [
        (Flavor.MYSQL, PS_ALL, "auto", Source.PS_PROCESSLIST),
        (Flavor.MARIADB, PS_ALL, "auto", Source.PS_THREADS),
        (Flavor.MARIADB, PS_MARIADB, "auto", Source.PS_THREADS),
        (Flavor.MYSQL, PS_MARIADB, "auto", Source.PS_THREADS),  # MySQL < 8.0.22
        (Flavor.MARIADB, PS_MARIADB, "information_schema", Source.INFORMATION_SCHEMA),
        (Flavor.MYSQL, PS_ALL, "performance_schema", Source.PS_PROCESSLIST),
        (Flavor.MARIADB, PS_NO_SOCKETS, "auto", Source.INFORMATION_SCHEMA),
        (Flavor.MARIADB, PS_NOT_VISIBLE, "auto", Source.INFORMATION_SCHEMA),
        (Flavor.MARIADB, PS_OFF, "auto", Source.INFORMATION_SCHEMA),
    ],
)
def test_choose_source(
    flavor: Flavor, caps: Capabilities, prefer: sources.Prefer, expected: Source
) -> None:
    assert choose_source(flavor, caps, prefer) is expected


@pytest.mark.parametrize(
    ("caps", "reason"),
    [
        (PS_OFF, "performance_schema is OFF"),
        (PS_NOT_VISIBLE, "no SELECT on performance_schema.socket_instances"),
        (PS_NO_SOCKETS, "socket_instances does not list client connections"),
    ],
)
def test_preferred_performance_schema_unavailable(caps: Capabilities, reason: str) -> None:
    with pytest.raises(SourceUnavailable, match=reason):
        choose_source(Flavor.MARIADB, caps, "performance_schema")


@pytest.mark.parametrize(
    ("row", "expected"),
    [
        ((1, 1, 1, "threads,socket_instances"),
         Capabilities(process=True, performance_schema=True, names_resolved=False,
                      ps_tables=frozenset({"threads", "socket_instances"}))),
        ((0, 0, 0, None), Capabilities(names_resolved=True)),
        ((0, 1, 2, "PROCESSLIST"),
         Capabilities(process=True, ps_tables=frozenset({"processlist"}))),
        ((), Capabilities(names_resolved=True)),
    ],
)
def test_parse_probe(row: tuple[object, ...], expected: Capabilities) -> None:
    assert parse_probe(row) == expected


def test_flavor_of() -> None:
    assert sources.flavor_of("10.11.19-MariaDB-0+deb12u1") is Flavor.MARIADB
    assert sources.flavor_of("5.5.5-10.6.12-MariaDB-log") is Flavor.MARIADB
    assert sources.flavor_of("8.0.36") is Flavor.MYSQL


def test_sql_constants_never_select_query_text() -> None:
    for name in dir(sources):
        value = getattr(sources, name)
        if not name.startswith("__") and isinstance(value, str) and "SELECT" in value.upper():
            assert not re.search(r"\bINFO\b", value, re.IGNORECASE), name


# --- property: hostile values never crash the conversion ------------------------------

_text = st.one_of(
    st.none(),
    st.text(max_size=50),
    st.text(alphabet=st.sampled_from("'\"\\\n\r\t:%_[]@\x00é漢🙂0123456789."), max_size=80),
    st.binary(max_size=40),
    st.builds(lambda s, n: s * n, st.text(min_size=1, max_size=5), st.integers(1, 20000)),
)
_number = st.one_of(
    st.none(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=True, allow_infinity=True),
    st.decimals(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
)


@settings(max_examples=300, deadline=None)
@given(
    session_id=_number,
    user=_text,
    host=_text,
    db=_text,
    command=_text,
    time_s=_number,
    time_ms=_number,
    ip=_text,
    port=_number,
    wait_timeout=_number,
    client_ips=st.one_of(st.none(), st.frozensets(_text.filter(lambda v: isinstance(v, str)))),
    names_resolved=st.booleans(),
)
def test_conversion_never_crashes(
    session_id: object, user: object, host: object, db: object, command: object,
    time_s: object, time_ms: object, ip: object, port: object, wait_timeout: object,
    client_ips: frozenset[str] | None, names_resolved: bool,
) -> None:
    row = (session_id, user, host, db, command, time_s, time_ms, ip, port, wait_timeout)
    session = row_to_session(row)
    if session is not None:
        assert session.id >= 0
        assert session.idle_seconds >= 0
        assert session.idle_seconds == session.idle_seconds  # not NaN
        assert isinstance(session.user, str)
        assert isinstance(session.command, str)
        assert session.wait_timeout is None or session.wait_timeout > 0
        if session.client is not None:
            assert 0 < session.client.port < 65536
    rows_to_sessions([row], client_ips=client_ips, names_resolved=names_resolved)
    if client_ips is not None:
        query = processlist_query(Source.INFORMATION_SCHEMA, client_ips)
        assert _placeholders(query.sql) == len(query.args)
        query = processlist_query(Source.PS_THREADS, client_ips)
        assert _placeholders(query.sql) == len(query.args)

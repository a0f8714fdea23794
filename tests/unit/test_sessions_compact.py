"""The packed one-row processlist: the SQL, and unpacking equal to row-by-row conversion."""

from __future__ import annotations

import re
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exporter.model import Endpoint, Flavor, Session
from exporter.sessions import compact, sources
from exporter.sessions.compact import FIELD, RECORD, Unpacker, compact_query, unpack
from exporter.sessions.sources import COLUMNS, Capabilities, Source, row_to_session

STATIC = ("id", "user", "host", "db", "command", "ip", "port", "wait_timeout", "trx_seconds",
          "rows_locked", "rows_modified")


def server_text(value: object) -> str:
    """What the server's CONCAT makes of a column value (NULL -> '' via IFNULL)."""
    if value is None:
        return ""
    return str(value)


LIMIT = compact.GROUP_CONCAT_MAX_LEN


def pack(rows: list[tuple[object, ...]]) -> tuple[int, int, str | None]:
    """Rows in COLUMNS order as compact_query's last three columns would send them."""
    packed = []
    for row in rows:
        row = (*row, *(None,) * (len(COLUMNS) - len(row)))  # rows without transaction columns
        by_name = dict(zip(COLUMNS, row, strict=True))
        fields = []
        for name in STATIC:
            value = by_name[name]
            text = server_text(value)
            fields.append(("=" + text) if name == "db" and value is not None else text)
        # COALESCE(TIME_MS, TIME * 1000), then the other fields.
        time_s, time_ms = by_name["time"], by_name["time_ms"]
        idle = server_text(time_ms if time_ms is not None else
                           None if time_s is None else time_s * 1000)  # type: ignore[operator]
        packed.append(idle + RECORD + FIELD.join(fields))
    return len(rows), LIMIT, (RECORD.join(packed) if rows else None)


def test_layout_matches_the_module() -> None:
    assert compact._STATIC == STATIC
    assert sorted((*STATIC, "time", "time_ms")) == sorted(COLUMNS)


@pytest.mark.parametrize("source", list(Source))
@pytest.mark.parametrize("flavor", list(Flavor))
@pytest.mark.parametrize("client_ips", [None, frozenset({"127.0.0.1"}), frozenset({"::1"})])
def test_query_is_one_statement_around_the_row_query(
    source: Source, flavor: Flavor, client_ips: frozenset[str] | None
) -> None:
    caps = Capabilities(ps_tables=frozenset(sources.PS_TABLES))
    query = compact_query(source, client_ips, flavor=flavor, caps=caps)
    prefix, inner = sources.processlist_select(source, client_ips, flavor=flavor, caps=caps)
    sql = query.sql
    assert sql.startswith(prefix + "SELECT @@global.wait_timeout, @@global.interactive_timeout,")
    assert sql.count("SET STATEMENT") == (1 if prefix else 0)  # once, outermost
    assert f"FROM ({inner.sql}) AS processlist" in sql
    assert query.args == inner.args
    assert len(re.findall(r"%s", sql)) == len(query.args)
    assert sql.count(f"SEPARATOR '{RECORD}'") == 1
    # NULL in any column would drop the whole row from GROUP_CONCAT: every field is wrapped.
    inside = sql.split("GROUP_CONCAT(", 1)[1].split(" SEPARATOR", 1)[0]
    idle, fields = inside.split(f", '{RECORD}', ")
    assert idle == "IFNULL(COALESCE(p_time_ms, p_time * 1000), '')"
    assert fields.count("IFNULL(") == len(STATIC)


def test_unpacks_fixture_rows_like_the_row_conversion() -> None:
    rows = [
        (11, "app", "127.0.0.1:47394", "shop", "Sleep", None, Decimal("12345.678"), None,
         None, None),
        (12, "app", "::1:50000", None, "Query", None, Decimal("3.100"), None, None, None),
        (13, "app", "localhost", "", "Sleep", None, Decimal("4000.000"), None, None, None),
        (17, "system user", None, None, "Daemon", None, Decimal("0"), None, None, None),
        (31, "app", "h:1", "shop", "Sleep", 30, None, "10.1.2.3", 5555, "600"),
        (32, None, None, None, None, None, None, "::ffff:10.1.2.4", 5556, None),
        # Idle inside a transaction open for 42 s that locked 3 rows and modified 1.
        (33, "app", "10.1.2.5:5557", "shop", "Sleep", None, Decimal("40000.000"), None, None,
         None, 42, 3, 1),
    ]
    got = unpack(*pack(rows))
    assert got == [row_to_session(row) for row in rows]
    assert got is not None and got[0] == Session(
        11, Endpoint("127.0.0.1", 47394), "app", "shop", "Sleep", 12.345678
    )
    assert got[2] is not None and got[2].db == ""  # an empty name is not NULL
    assert got[4] is not None and got[4].client == Endpoint("10.1.2.3", 5555)
    assert got[4].wait_timeout == 600.0
    assert (got[4].transaction_seconds, got[4].rows_locked) == (None, 0)
    assert got[6] is not None and got[6].in_transaction
    assert (got[6].transaction_seconds, got[6].rows_locked, got[6].rows_modified) == (42, 3, 1)


def test_no_sessions() -> None:
    assert unpack(0, LIMIT, None) == []  # GROUP_CONCAT of no row is NULL
    assert unpack(0, LIMIT, "") is None  # "" is one part of a row
    assert unpack(1, LIMIT, None) is None  # GROUP_CONCAT gave up: not "no sessions"


@pytest.mark.parametrize(
    "mangle",
    [
        # A user name holding a field separator: one field too many.
        lambda rows: [(rows[0][0], "we" + FIELD + "ird", *rows[0][2:])],
        # A database name holding a record separator: one row too many.
        lambda rows: [(*rows[0][:3], "a" + RECORD + "b", *rows[0][4:])],
        # A name that forges a whole extra row: the count gives it away.
        lambda rows: [(*rows[0][:3], "x" + RECORD + FIELD.join(["9"] * 10), *rows[0][4:])],
    ],
)
def test_untrustworthy_text_is_refused(mangle: object) -> None:
    rows = [(11, "app", "127.0.0.1:1", "shop", "Sleep", None, Decimal("1.000"), None, None,
             None)]
    assert unpack(*pack(mangle(rows))) is None  # type: ignore[operator]


def test_text_the_server_may_have_cut_is_refused() -> None:
    rows = [(i, "app", f"127.0.0.1:{1000 + i}", None, "Sleep", None, Decimal("12345.678"),
             None, None, "28800", 42, 3, 28800) for i in range(1, 4)]
    count, limit, packed = pack(rows)
    assert packed is not None
    assert unpack(count, limit, packed) == [row_to_session(r) for r in rows]
    assert unpack(count, limit, packed[: packed.rindex(RECORD)]) is None  # half a row short
    assert unpack(count + 1, limit, packed) is None
    assert unpack("3", limit, packed) is None  # a count that is not an int
    # Cut inside the last row: every row and field is there, but the text is as long as
    # group_concat_max_len allows, so it may be cut short.
    cut = packed[:-2]  # rows_modified "28800" -> "288"
    assert len(cut.split(RECORD)) == 2 * count and cut.count(FIELD) == packed.count(FIELD)
    assert unpack(count, len(cut.encode()), cut) is None
    assert unpack(count, None, packed) is None  # no limit known
    # Within the limit by more than a character: trusted.
    assert unpack(count, len(packed.encode()) + 5, packed) == [row_to_session(r) for r in rows]


def test_bytes_are_decoded() -> None:
    rows = [(11, "app", "127.0.0.1:1", "shöp", "Sleep", None, Decimal("1.5"), None, None,
             None)]
    count, limit, packed = pack(rows)
    assert packed is not None
    assert unpack(count, limit, packed.encode()) == [row_to_session(rows[0])]


def test_unpacker_remembers_sessions_and_forgets_them_in_bulk() -> None:
    unpacker = Unpacker()
    first = [(i, "app", f"127.0.0.1:{1000 + i}", None, "Sleep", None, Decimal("1.000"), None,
              None, None) for i in range(1, 2001)]
    assert unpacker.unpack(*pack(first)) == [row_to_session(r) for r in first]
    assert len(unpacker._known) == 2000
    # Later: the same sessions, idle longer, and one new; the rest have closed.
    later = [(*row[:6], Decimal("9500.000"), *row[7:]) for row in first[:3]]
    later.append((5000, "app", "127.0.0.1:5000", "x", "Query", None, Decimal("0.001"), None,
                  None, None))
    got = unpacker.unpack(*pack(later))
    assert got == [row_to_session(r) for r in later]
    assert got is not None and got[0] is not None and got[0].idle_seconds == 9.5
    # 2,000 remembered for 4 sessions: forgotten at once, only this read's are kept.
    assert len(unpacker._known) == 4
    assert unpacker.unpack(*pack(later)) == got
    assert len(unpacker._known) == 4


# Values as PyMySQL returns them for these columns.
_ids = st.one_of(st.integers(0, 2**63 - 1), st.integers(-5, -1))
_names = st.one_of(st.none(), st.text(
    alphabet=st.characters(blacklist_characters=FIELD + RECORD, blacklist_categories=("Cs",)),
    max_size=12,
))
_hosts = st.one_of(
    _names,
    st.builds(lambda ip, port: f"{ip}:{port}",
              st.sampled_from(["127.0.0.1", "::1", "10.0.0.7", "::ffff:10.0.0.7", "localhost",
                               "db.example", "[fe80::1]"]),
              st.integers(0, 70000)),
)
_time_ms = st.one_of(
    st.none(),
    st.integers(0, 10**9).map(lambda ms: Decimal(ms) / Decimal(1000)),
    st.integers(0, 10**6).map(lambda s: Decimal(s)),
)


@settings(max_examples=300, deadline=None)
@given(
    rows=st.lists(
        st.tuples(
            _ids, _names, _hosts, _names, _names,
            st.one_of(st.none(), st.integers(0, 10**7)),  # TIME
            _time_ms,
            st.one_of(st.none(), st.sampled_from(["10.0.0.9", "::ffff:10.0.0.9", "::1", ""])),
            st.one_of(st.none(), st.integers(0, 70000)),
            st.one_of(st.none(), st.integers(0, 10**6).map(str), st.just("0")),
        ),
        max_size=8,
    ),
    reads=st.integers(1, 3),
)
def test_unpacking_equals_row_conversion(rows: list[tuple[object, ...]], reads: int) -> None:
    unpacker = Unpacker()
    for _ in range(reads):  # again: the remembered rows must give the same answer
        assert unpacker.unpack(*pack(rows)) == [row_to_session(row) for row in rows]


@settings(max_examples=300, deadline=None)
@given(
    count=st.one_of(st.integers(-2, 6), st.none(), st.text(max_size=3)),
    limit=st.one_of(st.integers(0, 2000), st.none()),
    packed=st.one_of(
        st.none(),
        st.binary(max_size=80),
        st.text(alphabet=st.sampled_from(f"{FIELD}{RECORD}0123456789.:=ab-\u00e9\udcffenaif "),
                max_size=120),
    ),
)
def test_unpack_never_raises(count: object, limit: object, packed: object) -> None:
    unpacker = Unpacker()
    for _ in range(2):
        got = unpacker.unpack(count, limit, packed)
        assert got is None or all(s is None or s.idle_seconds >= 0 for s in got)

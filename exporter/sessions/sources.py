"""Where the server lists its sessions: the SQL per source and pure row -> Session conversion.

Every processlist query returns the same columns (``COLUMNS``), with NULL where a source
lacks one (or has a better one: ``TIME`` next to MariaDB's ``TIME_MS``), so one conversion
serves all sources. Query text (``INFO``, ``trx_query``) is never selected: it can hold
secrets. Each session's open InnoDB transaction, if any, comes from
``information_schema.INNODB_TRX`` (which needs PROCESS, as the full processlist does)
joined on its thread id.

Sources:
- ``information_schema``: ``information_schema.PROCESSLIST`` (any server; ``TIME_MS`` on
  MariaDB). Builds the whole list under a global mutex on the server.
- ``performance_schema.threads``: ``performance_schema.threads`` joined with
  ``socket_instances`` for the client IP and port (MariaDB with ``performance_schema=ON``,
  MySQL 5.7 and 8.0). No global mutex.
- ``performance_schema.processlist``: MySQL 8.0.22+ ``performance_schema.processlist``,
  with ``socket_instances`` for the port and ``variables_by_thread`` for each session's
  own ``wait_timeout``.
"""

from __future__ import annotations

import enum
import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Literal

from exporter.addresses import endpoint, is_ip, normalise_ip, parse_processlist_host
from exporter.model import Endpoint, Flavor, Session

Prefer = Literal["auto", "information_schema", "performance_schema"]


# A name-resolving server shows exactly these two client addresses as "localhost"
# (mysys ip_to_hostname special-cases INADDR_LOOPBACK and in6addr_loopback); any other
# address, 127.0.0.2 or Debian's 127.0.1.1 included, goes through reverse DNS.
LOCALHOST_IPS = frozenset({"127.0.0.1", "::1"})


class Source(enum.Enum):
    INFORMATION_SCHEMA = "information_schema"
    PS_THREADS = "performance_schema.threads"
    PS_PROCESSLIST = "performance_schema.processlist"

    @property
    def family(self) -> str:
        """``information_schema`` or ``performance_schema``, the values ``prefer`` takes."""
        return self.value.split(".", 1)[0]


class SourceUnavailable(Exception):
    """The preferred source cannot be used on this server; str() says why."""


COLUMNS = ("id", "user", "host", "db", "command", "time", "time_ms", "ip", "port", "wait_timeout",
           "trx_seconds", "rows_locked", "rows_modified")
ALIASES = tuple(f"p_{name}" for name in COLUMNS)  # the queries' column names

# The server's idle limits: the first two everywhere, MariaDB's transaction ones after them.
TIMEOUTS_SQL = "@@global.wait_timeout, @@global.interactive_timeout"
MARIADB_TRANSACTION_TIMEOUTS_SQL = (
    "@@global.idle_transaction_timeout, @@global.idle_readonly_transaction_timeout,"
    " @@global.idle_write_transaction_timeout"
)


def variables_sql(flavor: Flavor) -> str:
    """The read of the server's idle limits alone (a watcher with no socket)."""
    if flavor is Flavor.MARIADB:
        return f"SELECT {TIMEOUTS_SQL}, {MARIADB_TRANSACTION_TIMEOUTS_SQL}"
    return f"SELECT {TIMEOUTS_SQL}"

# --- capability probing (connect time only) -----------------------------------------

PS_TABLES = ("threads", "socket_instances", "processlist", "variables_by_thread")

# Appended to "SELECT VERSION(), CONNECTION_ID(), " by the connection. USER_PRIVILEGES
# shows direct grants; a PROCESS granted through a role is found by PROCESS_FALLBACK_SQL.
PROBE_COLUMNS_SQL = (
    "@@global.performance_schema, @@global.skip_name_resolve, "
    "(SELECT COUNT(*) FROM information_schema.USER_PRIVILEGES"
    " WHERE PRIVILEGE_TYPE = 'PROCESS' AND GRANTEE = CONCAT('''',"
    " LEFT(CURRENT_USER(), CHAR_LENGTH(CURRENT_USER())"
    " - CHAR_LENGTH(SUBSTRING_INDEX(CURRENT_USER(), '@', -1)) - 1),"
    " '''@''', SUBSTRING_INDEX(CURRENT_USER(), '@', -1), '''')), "
    "(SELECT GROUP_CONCAT(TABLE_NAME) FROM information_schema.TABLES"
    " WHERE TABLE_SCHEMA = 'performance_schema'"
    " AND TABLE_NAME IN ('threads', 'socket_instances', 'processlist', 'variables_by_thread'))"
)

# InnoDB's information_schema tables answer error 1227 without PROCESS, roles included.
PROCESS_FALLBACK_SQL = "SELECT COUNT(*) FROM information_schema.INNODB_METRICS WHERE NAME = ''"

# performance_schema can be on while socket instrumentation is off; then socket_instances
# would be empty and every socket would look like a phantom. The exporter's own TCP
# session must show up there.
PS_SOCKETS_CHECK_SQL = (
    "SELECT COUNT(*) FROM performance_schema.threads AS t"
    " JOIN performance_schema.socket_instances AS s ON s.THREAD_ID = t.THREAD_ID"
    " WHERE t.PROCESSLIST_ID = CONNECTION_ID() AND s.PORT > 0"
)


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What the server and the exporter's user allow, learned once per connection."""

    process: bool = False
    performance_schema: bool = False
    names_resolved: bool = False
    ps_tables: frozenset[str] = frozenset()
    ps_sockets: bool = False  # PS_SOCKETS_CHECK_SQL found the exporter's own socket

    @property
    def needs_ps_check(self) -> bool:
        return self.performance_schema and {"threads", "socket_instances"} <= self.ps_tables


def parse_probe(row: Sequence[object]) -> Capabilities:
    """Capabilities from PROBE_COLUMNS_SQL's four columns."""
    ps, skip_name_resolve, process_grants, tables = (list(row) + [None] * 4)[:4]
    names = _text(tables) or ""
    return Capabilities(
        process=(_int(process_grants) or 0) > 0,
        performance_schema=bool(_int(ps)),
        names_resolved=not bool(_int(skip_name_resolve)),
        ps_tables=frozenset(n.strip().lower() for n in names.split(",") if n.strip()),
    )


def flavor_of(version: str) -> Flavor:
    return Flavor.MARIADB if "mariadb" in version.lower() else Flavor.MYSQL


def choose_source(flavor: Flavor, caps: Capabilities, prefer: Prefer = "auto") -> Source:
    """The source to read, or SourceUnavailable when ``prefer`` names one that is not."""
    ps_usable = caps.performance_schema and caps.ps_sockets and {
        "threads", "socket_instances"} <= caps.ps_tables
    ps_source = None
    if ps_usable:
        ps_source = (
            Source.PS_PROCESSLIST
            if flavor is Flavor.MYSQL and "processlist" in caps.ps_tables
            else Source.PS_THREADS
        )
    if prefer == "information_schema":
        return Source.INFORMATION_SCHEMA
    if prefer == "performance_schema":
        if ps_source is None:
            raise SourceUnavailable(f"performance_schema source unavailable: {_ps_why(caps)}")
        return ps_source
    return ps_source or Source.INFORMATION_SCHEMA


def _ps_why(caps: Capabilities) -> str:
    if not caps.performance_schema:
        return "performance_schema is OFF"
    missing = sorted({"threads", "socket_instances"} - caps.ps_tables)
    if missing:
        return "no SELECT on performance_schema." + ", performance_schema.".join(missing)
    return "socket_instances does not list client connections (socket instruments off?)"


# --- processlist queries -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Query:
    sql: str
    args: tuple[str, ...] = ()


# MariaDB's TIME_MS makes TIME redundant: one column fewer to decode per row.
# Every column is named (``ALIASES``) so that a query can also serve as a derived table
# (exporter/sessions/compact.py), where unnamed NULL columns would collide.
# The open InnoDB transaction of a session: its age in seconds and its row counts.
_TRX_COLUMNS = (
    ", TIMESTAMPDIFF(SECOND, x.trx_started, NOW()) AS p_trx_seconds,"
    " x.trx_rows_locked AS p_rows_locked, x.trx_rows_modified AS p_rows_modified"
)
_NO_TRX_COLUMNS = ", NULL AS p_trx_seconds, NULL AS p_rows_locked, NULL AS p_rows_modified"
_TRX_JOIN = " LEFT JOIN information_schema.INNODB_TRX AS x ON x.trx_mysql_thread_id = {id}"

_IS_SELECT = (
    "SELECT ID AS p_id, USER AS p_user, HOST AS p_host, DB AS p_db, COMMAND AS p_command,"
    " {time} AS p_time, {time_ms} AS p_time_ms, NULL AS p_ip, NULL AS p_port,"
    " NULL AS p_wait_timeout{trx_columns}"
    " FROM information_schema.PROCESSLIST{trx_join} WHERE ID <> CONNECTION_ID()"
)

_PS_THREADS_SELECT = (
    "SELECT t.PROCESSLIST_ID AS p_id, t.PROCESSLIST_USER AS p_user,"
    " t.PROCESSLIST_HOST AS p_host, t.PROCESSLIST_DB AS p_db,"
    " t.PROCESSLIST_COMMAND AS p_command, t.PROCESSLIST_TIME AS p_time, NULL AS p_time_ms,"
    " s.IP AS p_ip, s.PORT AS p_port, NULL AS p_wait_timeout{trx_columns}"
    " FROM performance_schema.threads AS t"
    " LEFT JOIN performance_schema.socket_instances AS s"
    " ON s.THREAD_ID = t.THREAD_ID AND s.EVENT_NAME = 'wait/io/socket/sql/client_connection'"
    "{trx_join}"
    " WHERE t.TYPE = 'FOREGROUND' AND t.PROCESSLIST_ID IS NOT NULL"
    " AND t.PROCESSLIST_ID <> CONNECTION_ID()"
)

_PS_PROCESSLIST_SELECT = (
    "SELECT p.ID AS p_id, p.USER AS p_user, p.HOST AS p_host, p.DB AS p_db,"
    " p.COMMAND AS p_command, p.TIME AS p_time, NULL AS p_time_ms, s.IP AS p_ip,"
    " s.PORT AS p_port, {timeout} AS p_wait_timeout{trx_columns}"
    " FROM performance_schema.processlist AS p"
    " LEFT JOIN performance_schema.threads AS t ON t.PROCESSLIST_ID = p.ID"
    " LEFT JOIN performance_schema.socket_instances AS s"
    " ON s.THREAD_ID = t.THREAD_ID AND s.EVENT_NAME = 'wait/io/socket/sql/client_connection'"
    "{join}{trx_join} WHERE p.ID <> CONNECTION_ID()"
)
# MariaDB's performance_schema tables have no indexes, and its default join_cache_level (2)
# joins them with a block nested loop: threads x socket_instances comparisons, 11 s of
# server time at 10,000 sessions for the unfiltered read a fleet exporter makes. Level 4
# allows a hash join (BNLH) on THREAD_ID; a join buffer that holds every thread row (the
# default 256 KiB holds about 1,000) makes it one pass: about 25 ms of server CPU at 10,000
# sessions. The buffer is sized to what the statement needs (optimize_join_buffer_size).
# SET STATEMENT needs no privilege and changes nothing outside this one statement.
MARIADB_HASH_JOIN = (
    "SET STATEMENT join_cache_level=4, join_buffer_size=16777216,"
    " join_buffer_space_limit=16777216 FOR "
)
# Filtered on MariaDB: start from the few sockets of the asked addresses (a scan of
# socket_instances), then one hashed pass over threads, so the join buffer holds only this
# watcher's rows however many sessions the server has. The same rows as the LEFT JOIN: the
# filter on s.IP already drops threads without a socket.
_PS_THREADS_FROM = (
    " FROM performance_schema.threads AS t"
    " LEFT JOIN performance_schema.socket_instances AS s"
)
_PS_THREADS_FROM_SOCKETS = (
    " FROM performance_schema.socket_instances AS s"
    " STRAIGHT_JOIN performance_schema.threads AS t"
)

_VARIABLES_JOIN = (
    " LEFT JOIN performance_schema.variables_by_thread AS v"
    " ON v.THREAD_ID = t.THREAD_ID AND v.VARIABLE_NAME = 'wait_timeout'"
)


def processlist_query(
    source: Source,
    client_ips: frozenset[str] | None,
    *,
    flavor: Flavor = Flavor.MARIADB,
    caps: Capabilities | None = None,
) -> Query:
    """The one processlist query of a read; ``client_ips`` filters on the server side."""
    prefix, query = processlist_select(source, client_ips, flavor=flavor, caps=caps)
    return Query(prefix + query.sql, query.args)


def processlist_select(
    source: Source,
    client_ips: frozenset[str] | None,
    *,
    flavor: Flavor = Flavor.MARIADB,
    caps: Capabilities | None = None,
) -> tuple[str, Query]:
    """``processlist_query`` as a statement prefix (MariaDB's ``SET STATEMENT ... FOR``,
    or "") and the SELECT itself, which another query may wrap."""
    prefix = ""
    caps = caps or Capabilities()
    # INNODB_TRX answers error 1227 without PROCESS: then no transaction is known.
    trx_columns = _TRX_COLUMNS if caps.process else _NO_TRX_COLUMNS

    def trx_join(thread_id: str) -> str:
        return _TRX_JOIN.format(id=thread_id) if caps.process else ""

    if source is Source.INFORMATION_SCHEMA:
        maria = flavor is Flavor.MARIADB
        if maria and caps.process:
            # The INNODB_TRX join: without a hash join MariaDB compares every processlist
            # row with every transaction row through its join buffer, +78 % (+14 ms) on a
            # whole read at 5,000 sessions; with one, +10 % (benchmarks/README.md).
            prefix = MARIADB_HASH_JOIN
        sql = _IS_SELECT.format(
            time="NULL" if maria else "TIME", time_ms="TIME_MS" if maria else "NULL",
            trx_columns=trx_columns, trx_join=trx_join("ID"),
        )
        patterns = host_patterns(client_ips, names_resolved=caps.names_resolved)
        if patterns is None:
            return prefix, Query(sql)
        if not patterns:
            return prefix, Query(sql + " AND FALSE")
        condition = " OR ".join(["HOST LIKE %s ESCAPE '!'"] * len(patterns))
        return prefix, Query(f"{sql} AND ({condition})", patterns)
    if source is Source.PS_THREADS:
        sql = _PS_THREADS_SELECT.format(trx_columns=trx_columns,
                                        trx_join=trx_join("t.PROCESSLIST_ID"))
        if flavor is Flavor.MARIADB:
            if client_ips:
                sql = sql.replace(_PS_THREADS_FROM, _PS_THREADS_FROM_SOCKETS)
            prefix = MARIADB_HASH_JOIN
    else:
        per_session = "variables_by_thread" in caps.ps_tables
        sql = _PS_PROCESSLIST_SELECT.format(
            timeout="v.VARIABLE_VALUE" if per_session else "NULL",
            join=_VARIABLES_JOIN if per_session else "",
            trx_columns=trx_columns, trx_join=trx_join("p.ID"),
        )
    ips = socket_ips(client_ips)
    if ips is None:
        return prefix, Query(sql)
    if not ips:
        return prefix, Query(sql + " AND FALSE")
    placeholders = ", ".join(["%s"] * len(ips))
    return prefix, Query(f"{sql} AND s.IP IN ({placeholders})", ips)


def _wanted(client_ips: Iterable[str]) -> list[str]:
    return sorted({normalise_ip(ip) for ip in client_ips if ip.strip()})


def host_patterns(
    client_ips: frozenset[str] | None, *, names_resolved: bool = False
) -> tuple[str, ...] | None:
    """LIKE patterns (escape character ``!``) on information_schema HOST for these client
    IPs; None means "do not filter" (no filter asked, or the server shows host names that
    cannot be told apart from the IPs)."""
    if client_ips is None:
        return None
    wanted = _wanted(client_ips)
    if names_resolved and any(ip not in LOCALHOST_IPS for ip in wanted):
        return None
    patterns: list[str] = []
    for ip in wanted:
        patterns.append(escape_like(ip) + ":%")
        if _is_ipv4(ip):
            patterns.append(escape_like("::ffff:" + ip) + ":%")
    if LOCALHOST_IPS.intersection(wanted):
        patterns.append("localhost:%")
    return tuple(dict.fromkeys(patterns))


def socket_ips(client_ips: frozenset[str] | None) -> tuple[str, ...] | None:
    """Values for ``socket_instances.IP IN (...)``: IPv4 clients of a dual-stack server show
    as ``::ffff:a.b.c.d`` there, so both forms are asked for."""
    if client_ips is None:
        return None
    values: list[str] = []
    for ip in _wanted(client_ips):
        values.append(ip)
        if _is_ipv4(ip):
            values.append("::ffff:" + ip)
    return tuple(values)


def escape_like(text: str) -> str:
    return text.replace("!", "!!").replace("%", "!%").replace("_", "!_")


def _is_ipv4(text: str) -> bool:
    try:
        return isinstance(ipaddress.ip_address(text), ipaddress.IPv4Address)
    except ValueError:
        return False


# --- rows -> sessions (pure) -----------------------------------------------------------


def rows_to_sessions(
    rows: Iterable[Sequence[object]],
    *,
    own_ids: frozenset[int] = frozenset(),
    client_ips: frozenset[str] | None = None,
    names_resolved: bool = False,
) -> tuple[Session, ...]:
    """Sessions from processlist rows in ``COLUMNS`` order, without the exporter's own and,
    when ``client_ips`` is given, only those that can be this watcher's clients."""
    return keep_sessions(
        (row_to_session(row) for row in rows),
        own_ids=own_ids,
        client_ips=client_ips,
        names_resolved=names_resolved,
    )


def keep_sessions(
    candidates: Iterable[Session | None],
    *,
    own_ids: frozenset[int] = frozenset(),
    client_ips: frozenset[str] | None = None,
    names_resolved: bool = False,
) -> tuple[Session, ...]:
    """The sessions that are not the exporter's own and, when ``client_ips`` is given, can
    be this watcher's clients; None entries (unusable rows) are dropped."""
    wanted = frozenset(_wanted(client_ips)) if client_ips is not None else None
    sessions: list[Session] = []
    for session in candidates:
        if session is None or session.id in own_ids:
            continue
        client = session.client
        if (
            wanted is not None
            # The common case (the client's IP is one of ours) without a call: 10,000 rows.
            and (client is None or client.ip not in wanted)
            and not client_wanted(client, wanted, names_resolved=names_resolved)
        ):
            continue
        sessions.append(session)
    return tuple(sessions)


def row_to_session(row: Sequence[object]) -> Session | None:
    """One processlist row -> Session; None for a row without a usable id. Never raises."""
    # This runs once per session per read (10,000 times at 10,000 sessions): the values a
    # driver returns (int, str, Decimal, None) take the short way past the general
    # conversions, which give the same result for them.
    values = row if type(row) is tuple and len(row) == _WIDTH else _padded(row)
    (raw_id, user, host, db, command, time_s, time_ms, ip, port, wait_timeout,
     trx_seconds, rows_locked, rows_modified) = values
    session_id = raw_id if type(raw_id) is int else _int(raw_id)
    if session_id is None or session_id < 0:
        return None
    idle = _float(time_ms)
    idle = idle / 1000.0 if idle is not None else (_float(time_s) or 0.0)
    timeout = None if wait_timeout is None else _float(wait_timeout)
    if ip is None and type(host) is str:
        client = host_endpoint(host)
    else:
        client = client_endpoint(host, ip, port)
    return Session(  # positional: a named tuple builds twice as fast without keywords
        session_id,  # id
        client,
        (user if type(user) is str else _text(user)) or "",  # user
        db if db is None or type(db) is str else _text(db),  # db
        (command if type(command) is str else _text(command)) or "",  # command
        max(idle, 0.0),  # idle_seconds
        timeout if timeout is not None and timeout > 0 else None,  # wait_timeout
        *transaction(trx_seconds, rows_locked, rows_modified),
    )


def transaction(
    seconds: object, rows_locked: object, rows_modified: object
) -> tuple[float | None, int, int]:
    """A session's transaction fields from INNODB_TRX's values (all NULL: none open)."""
    if seconds is None and rows_locked is None:
        return None, 0, 0
    age = _float(seconds)
    return (
        max(age, 0.0) if age is not None else 0.0,
        max(_int(rows_locked) or 0, 0),
        max(_int(rows_modified) or 0, 0),
    )


_WIDTH = len(COLUMNS)


def _padded(row: Sequence[object]) -> tuple[object, ...]:
    return tuple((list(row) + [None] * _WIDTH)[:_WIDTH])


def client_wanted(client: Endpoint | None, wanted: frozenset[str], *, names_resolved: bool) -> bool:
    """Whether a session's client can be one of the watcher's addresses (``wanted`` holds
    normalised IPs)."""
    if client is None:
        return False
    if client.ip in wanted:
        return True
    if client.ip == "localhost":
        return bool(LOCALHOST_IPS & wanted)
    # A name-resolving server shows host names; they may stand for one of ours.
    return names_resolved and not is_ip(client.ip)


def client_endpoint(host: object, ip: object, port: object) -> Endpoint | None:
    """The client of a row: performance_schema's IP and PORT, else the HOST column."""
    ip_text = _text(ip)
    port_number = _int(port)
    if ip_text and port_number is not None and 0 < port_number < 65536:
        return endpoint(ip_text, port_number)
    text = _text(host)
    return None if text is None else host_endpoint(text)


def host_endpoint(host: str) -> Endpoint | None:
    """The client in a HOST column ("ip:port", "[v6]:port", "name:port"), None if none."""
    try:
        return parse_processlist_host(host)
    except ValueError:  # e.g. non-ASCII digits in the port part
        return None


def seconds_or_none(value: object) -> float | None:
    """A finite number of seconds from a driver value or text; None for anything else."""
    return _float(value)


def _text(value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).decode("utf-8", errors="replace")
    return value if isinstance(value, str) else str(value)


def _int(value: object) -> int | None:
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    number = _float(value)
    if number is None or number != number or number in (float("inf"), float("-inf")):
        return None
    return int(number)


def _float(value: object) -> float | None:
    if type(value) is Decimal and value.is_finite():  # TIME_MS: the common case first
        finite = float(value)  # may still overflow to infinity
        return None if finite in (float("inf"), float("-inf")) else finite
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int | float | Decimal):
        try:
            number = float(value)
        except (InvalidOperation, ValueError, OverflowError):
            return None
    else:
        text = _text(value)
        if text is None or len(text) > 40:
            return None
        try:
            number = float(text.strip())
        except ValueError:
            return None
    if number != number or number in (float("inf"), float("-inf")):
        return None
    return number

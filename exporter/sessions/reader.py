"""SessionReader: one target's server-side view, read with a deadline, never raising.

A read sends one statement: the global timeouts and the processlist, filtered on the
server side to this watcher's client IPs and packed into one row (sessions/compact.py);
a second one only when the packed row cannot be trusted (a user or database name holding
the separators), to read the same rows one by one. Capability probing happens only
when the connection is (re)opened.
"""

from __future__ import annotations

import logging
import re
import threading
import time
import traceback
from decimal import Decimal

from exporter.deadline import Deadline
from exporter.model import Endpoint, Flavor, ReadCounts, ServerView, Session
from exporter.sessions import compact, sources
from exporter.sessions.connection import (
    ConnectionInfo,
    ServerConnection,
    ServerError,
)
from exporter.sessions.credentials import Credentials
from exporter.sessions.source import ReadTally
from exporter.sessions.sources import Prefer, Source, SourceUnavailable
from exporter.timeouts import OWN_WAIT_TIMEOUT

log = logging.getLogger(__name__)

BUSY = "previous read still running"


class SessionReader:
    """Reads one target's sessions. Used from one thread at a time: a read that finds
    another still running (a hung server) returns at once with ``ok=False``."""

    # Every read is made on the server when asked: the engine may start one early.
    always_fresh = True

    def __init__(
        self,
        target: str,
        host: str,
        port: int,
        credentials: Credentials,
        *,
        prefer: Prefer = "auto",
        session_wait_timeout: int | None = OWN_WAIT_TIMEOUT,
    ) -> None:
        if prefer not in ("auto", "information_schema", "performance_schema"):
            raise ValueError("prefer must be auto, information_schema or performance_schema")
        self.target = target
        self.prefer: Prefer = prefer
        self.connection = ServerConnection(
            host, port, credentials, session_wait_timeout=session_wait_timeout
        )
        self._lock = threading.Lock()
        self._closed = False
        self._up: bool | None = None
        self._source = ""  # of the last successful read, to log changes
        self._unpacker = compact.Unpacker()
        self._tally = ReadTally()
        self._bug_logged = False

    def __repr__(self) -> str:
        return f"SessionReader({self.target!r}, prefer={self.prefer!r})"

    @property
    def busy(self) -> bool:
        """A read is under way (another thread's: a read that finds one returns BUSY)."""
        return self._lock.locked()

    def counts(self) -> ReadCounts:
        """Reads so far, the statements sent (connect-time ones included) and the pings."""
        return self._tally.counts(queries=self.connection.queries_sent,
                                  pings=self.connection.pings)

    def ping(self, deadline: Deadline) -> ServerView | None:
        """Between reads: whether the server still answers (a COM_PING on the open
        connection, a login if there is none). None when it does, or when another read is
        under way (that read will say); a failed view otherwise, logged like a failed
        read."""
        if not self._lock.acquire(blocking=False):
            return None
        try:
            if self._closed:
                return None
            try:
                self.connection.ping(deadline=deadline)
            except ServerError as exc:
                view = self._failed(str(exc), {}, deadline)
                self._note(view)
                return view
            except Exception as exc:  # a ping never raises: a bug is reported and counted
                self._report_bug(exc)
                view = self._failed(f"internal error: {type(exc).__name__}", {}, deadline,
                                    internal=True)
                self._tally.record(view)
                return view
            return None
        finally:
            self._lock.release()

    def read(
        self, client_ips: frozenset[str] | None, deadline: Deadline, *, fresh: bool = False
    ) -> ServerView:
        """The server's view of this watcher's sessions (all sessions when ``client_ips`` is
        None; none, without a processlist query, when it is empty), by ``deadline``. Always
        a fresh read, whatever ``fresh`` says."""
        if not self._lock.acquire(blocking=False):
            view = self._failed(BUSY, {}, deadline)
            self._tally.record(view)
            return view
        durations = {"connect": 0.0, "variables": 0.0, "processlist": 0.0}
        try:
            try:
                view = self._read(client_ips, deadline, durations)
            except (ServerError, SourceUnavailable) as exc:
                view = self._failed(str(exc), durations, deadline)
            except Exception as exc:  # a read never raises: a bug is reported and counted
                self._report_bug(exc)
                view = self._failed(f"internal error: {type(exc).__name__}", durations,
                                    deadline, internal=True)
            self._tally.record(view)
            self._note(view)
            return view
        finally:
            self._lock.release()

    def close(self) -> None:
        """Close the connection. A read hung in another thread is broken off."""
        self._closed = True
        if self._lock.acquire(blocking=False):
            try:
                self.connection.close()
            finally:
                self._lock.release()
        else:
            self.connection.abort()

    # --- internals ------------------------------------------------------------------

    def _report_bug(self, exc: Exception) -> None:
        if self._bug_logged:
            log.debug("%s: read failed from a bug", self.target, exc_info=True)
            return
        # Once, at the default level: a bug must be findable, not pass for a server down.
        self._bug_logged = True
        log.error(
            "%s: a read failed from a bug in the exporter (later ones are only counted, in "
            "mysql_idle_internal_errors_total):\n%s",
            self.target,
            "".join(traceback.format_exception(exc)).rstrip(),
        )

    def _read(
        self, client_ips: frozenset[str] | None, deadline: Deadline, durations: dict[str, float]
    ) -> ServerView:
        if self._closed:
            raise ServerError("reader closed")
        conn = self.connection
        connect_before = conn.connect_seconds
        try:
            if not conn.connected:
                conn.connect(deadline)
            info = _info(conn)
            source = sources.choose_source(info.flavor, info.capabilities, self.prefer)
            sessions: tuple[Session, ...] = ()
            started, connecting = time.perf_counter(), conn.connect_seconds
            if client_ips is not None and not client_ips:
                rows = conn.query(sources.variables_sql(info.flavor), deadline=deadline)
                durations["variables"] = _phase(started, connecting, conn)
                limits = _limits(rows, first_extra=2)
            else:
                query = compact.compact_query(
                    source, client_ips, flavor=info.flavor, caps=info.capabilities
                )
                rows = conn.query(query.sql, query.args, deadline=deadline)
                durations["processlist"] = _phase(started, connecting, conn)
                info = _info(conn)  # a reconnect in between changes our own id
                limits = _limits(rows, first_extra=5)
                row = rows[0] if rows else ()
                unpacked = self._unpacker.unpack(*row[2:5]) if len(row) >= 5 else None
                if unpacked is None:
                    # A name with a separator in it, or a text cut short: row by row.
                    log.debug("%s: packed processlist refused; reading rows", self.target)
                    query = sources.processlist_query(
                        source, client_ips, flavor=info.flavor, caps=info.capabilities
                    )
                    started, connecting = time.perf_counter(), conn.connect_seconds
                    rows = conn.query(query.sql, query.args, deadline=deadline)
                    durations["processlist"] += _phase(started, connecting, conn)
                    info = _info(conn)
                    unpacked = [sources.row_to_session(r) for r in rows]
                sessions = sources.keep_sessions(
                    unpacked,
                    own_ids=_own_ids(info),
                    client_ips=client_ips,
                    names_resolved=info.capabilities.names_resolved,
                )
        finally:
            durations["connect"] = conn.connect_seconds - connect_before
        caps = info.capabilities
        return ServerView(
            target=self.target,
            ok=True,
            flavor=info.flavor,
            version=info.version,
            source=source.value,
            wait_timeout=limits[0],
            interactive_timeout=limits[1],
            idle_transaction_timeout=limits[2],
            idle_readonly_transaction_timeout=limits[3],
            idle_write_transaction_timeout=limits[4],
            sessions=sessions,
            own_session_ids=_own_ids(info),
            own_client_endpoints=_own_endpoints(info),
            full_view=caps.process,
            per_session_timeouts=(
                source is Source.PS_PROCESSLIST and "variables_by_thread" in caps.ps_tables
            ),
            read_at=deadline.now(),
            started_at=info.started_at,
            durations=dict(durations),
        )

    def _failed(
        self, reason: str, durations: dict[str, float], deadline: Deadline,
        *, internal: bool = False,
    ) -> ServerView:
        info = self.connection.info
        return ServerView(
            target=self.target,
            ok=False,
            error=reason,
            flavor=info.flavor if info else None,
            version=info.version if info else "",
            own_session_ids=_own_ids(info) if info else frozenset(),
            own_client_endpoints=_own_endpoints(info) if info else frozenset(),
            read_at=deadline.now(),
            durations=dict(durations),
            internal_error=internal,
        )

    def _note(self, view: ServerView) -> None:
        """One log line per state change, not one per read."""
        if view.ok:
            if self._up is not True:
                notes = []
                if not view.full_view:
                    notes.append("no PROCESS privilege: only this user's sessions are visible")
                if not view.per_session_timeouts:
                    notes.append("per-session wait_timeout unavailable: using the global one")
                log.info(
                    "%s: up: %s, source %s%s",
                    self.target,
                    view.version,
                    view.source,
                    "".join(f"; {n}" for n in notes),
                )
                self._up = True
            elif view.source != self._source:
                log.info("%s: source now %s", self.target, view.source)
            if view.source != self._source and information_schema_deprecated(view):
                # Once per change of source, not per read: the server warns (1287) at every
                # read, and the operator can act on it once.
                log.warning(
                    "%s: reading information_schema.PROCESSLIST, which MySQL %s deprecates "
                    "(warning 1287) and builds under a global mutex; GRANT SELECT ON "
                    "performance_schema.* to the exporter's user for "
                    "performance_schema.processlist", self.target, view.version)
            self._source = view.source
            return
        if self._up is not False:
            log.warning("%s: down: %s", self.target, view.error)
            self._up = False


def _phase(started: float, connecting_before: float, conn: ServerConnection) -> float:
    """Seconds a phase took, without any reconnect inside it (counted under "connect")."""
    elapsed = time.perf_counter() - started
    return max(elapsed - (conn.connect_seconds - connecting_before), 0.0)


def _own_ids(info: ConnectionInfo) -> frozenset[int]:
    # Only the current connection: session ids restart at 1 when the server restarts, so
    # an old id of ours may by now belong to somebody else.
    return frozenset({info.connection_id})


def _own_endpoints(info: ConnectionInfo) -> frozenset[Endpoint]:
    return frozenset({info.local}) if info.local is not None else frozenset()


def _info(conn: ServerConnection) -> ConnectionInfo:
    info = conn.info
    if info is None:
        raise ServerError("connection lost")
    return info


def _limits(rows: list[tuple[object, ...]], *, first_extra: int) -> list[float | None]:
    """wait_timeout, interactive_timeout and MariaDB's idle_transaction_timeout,
    idle_readonly_transaction_timeout and idle_write_transaction_timeout from a read's
    first row: the first two in its first columns, the others from ``first_extra`` on
    (where there are any). A transaction limit of 0 is off: None."""
    row = rows[0] if rows else ()
    limits = [_seconds(row[0] if row else None), _seconds(row[1] if len(row) > 1 else None)]
    for column in range(first_extra, first_extra + 3):
        value = _seconds(row[column]) if len(row) > column else None
        limits.append(value if value else None)
    return limits


def _seconds(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal | str):
        return None
    try:
        return float(value)
    except (ValueError, ArithmeticError):
        return None


def information_schema_deprecated(view: ServerView) -> bool:
    """MySQL 8.0.22+ deprecates information_schema.PROCESSLIST for
    performance_schema.processlist."""
    if view.flavor is not Flavor.MYSQL or view.source != Source.INFORMATION_SCHEMA.value:
        return False
    numbers = re.match(r"(\d+)\.(\d+)\.(\d+)", view.version)
    return numbers is not None and tuple(map(int, numbers.groups())) >= (8, 0, 22)

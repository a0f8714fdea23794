"""One database connection per target that outlives its own failures.

The exporter's connection must not suffer the bug it watches: it raises its own session
``wait_timeout`` at connect, and when the connection is lost anyway (its timeout, a
``KILL``, a server restart) ``query`` reconnects once and retries within the same call.

Every statement gets an I/O timeout from the caller's deadline (exporter.deadline). TLS follows the
credentials; when they say nothing it is PREFERRED, as with the MySQL client: TLS when the
server offers it (MySQL 8+ does out of the box, and its caching_sha2_password needs a secure
channel for a full login unless the `cryptography` package is installed), plain otherwise.
Error messages are short, one line, and never contain the password.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import socket
import ssl
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pymysql
import pymysql.connections
import pymysql.cursors

from exporter.addresses import endpoint
from exporter.deadline import Deadline
from exporter.model import Endpoint, Flavor
from exporter.sessions import sources
from exporter.sessions.compact import GROUP_CONCAT_MAX_LEN
from exporter.sessions.credentials import Credentials, SslMode, SslOptions
from exporter.sessions.sources import Capabilities
from exporter.timeouts import OWN_WAIT_TIMEOUT

log = logging.getLogger(__name__)


# Error codes meaning "this connection is gone; a new one may work".
LOST_CONNECTION_CODES = frozenset(
    {
        0,  # PyMySQL InterfaceError(0, ''): the socket was already closed
        1053,  # ER_SERVER_SHUTDOWN
        1927,  # ER_CONNECTION_KILLED (MariaDB)
        2006,  # CR_SERVER_GONE_ERROR
        2013,  # CR_SERVER_LOST
        2055,  # CR_SERVER_LOST_EXTENDED
        4031,  # ER_CLIENT_INTERACTION_TIMEOUT (MySQL 8.0.24+)
    }
)
ACCESS_DENIED_CODES = frozenset({1044, 1045, 1698})
# Authentication plugins whose client side sends the password itself.
CLEARTEXT_AUTH_PLUGINS = frozenset({b"mysql_clear_password", b"dialog"})
PROCESS_DENIED_CODES = frozenset({1227})

_PROBE_SQL = "SELECT VERSION(), CONNECTION_ID(), " + sources.PROBE_COLUMNS_SQL
UPTIME_SQL = "SHOW GLOBAL STATUS LIKE 'Uptime'"
# PyMySQL's RuntimeError when caching_sha2_password (or sha256_password) needs the RSA
# exchange: no TLS, and no `cryptography` package.
_NEEDS_RSA = "'cryptography' package is required"
NEEDS_TLS_OR_RSA = (
    "caching_sha2_password needs TLS (the server offers none, or ssl-mode=DISABLED) or the "
    "RSA exchange of pip install 'mysql-idle-exporter[rsa]'"
)
_MAX_MESSAGE = 200
_MIN_RETRY_SECONDS = 0.01


class ServerError(Exception):
    """A failure talking to the server. ``str()`` is one short line without secrets."""

    def __init__(self, reason: str, *, code: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.code = code

    def __str__(self) -> str:
        return self.reason


class ConnectFailed(ServerError):
    """Could not connect or log in."""


class ConnectionLost(ServerError):
    """The connection broke and could not be re-established within the deadline."""


class ServerTimeout(ServerError):
    """The deadline passed."""


class QueryFailed(ServerError):
    """The server rejected a statement; the connection itself is fine."""


@dataclass(frozen=True, slots=True)
class ConnectionInfo:
    """What a connection learned about the server and itself when it connected."""

    version: str
    flavor: Flavor
    connection_id: int
    # The exporter's own client address as the server sees it (None over a unix socket).
    local: Endpoint | None
    capabilities: Capabilities
    own_wait_timeout_raised: bool
    # When the server started, on the deadline's clock (Now minus its Uptime); None when
    # the server would not say. A later start at a reconnect means it restarted.
    started_at: float | None = None


if TYPE_CHECKING:
    _BaseConnection = pymysql.connections.Connection[pymysql.cursors.Cursor]
else:  # PyMySQL's Connection is generic only in its type stubs
    _BaseConnection = pymysql.connections.Connection


class _Connection(_BaseConnection):
    """PyMySQL's connection with a per-call I/O timeout.

    PyMySQL takes read/write timeouts at construction. Its reads and writes re-apply
    ``_read_timeout``/``_write_timeout`` to the socket (1.1+), so changing them, plus the
    socket's own timeout for versions that set it once, moves the deadline.
    """

    _read_timeout: float | None
    _write_timeout: float | None
    _current_timeout: float | None
    _sock: socket.socket | None
    # Whether TLS was asked for (ssl-mode REQUIRED or stricter), so that a password may go
    # in clear text inside it; set before connect().
    cleartext_allowed = False

    def _create_ssl_ctx(self, sslp: Any) -> ssl.SSLContext:
        # PyMySQL's PREFERRED mode asks for a context without options on every connect and
        # builds one that loads the system's CA store (about 18 ms) to verify nothing.
        if isinstance(sslp, dict) and not sslp:
            return _preferred_context()
        return super()._create_ssl_ctx(sslp)  # type: ignore[no-any-return,misc]

    def set_io_timeout(self, seconds: float) -> None:
        self._read_timeout = seconds
        self._write_timeout = seconds
        sock = self._sock
        if sock is not None:
            sock.settimeout(seconds)
            self._current_timeout = seconds

    def local_address(self) -> tuple[str, int] | None:
        sock = self._sock
        if sock is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
            return None
        address = sock.getsockname()
        return str(address[0]), int(address[1])

    def abort(self) -> None:
        """Unblock a thread stuck reading from this connection (from another thread)."""
        sock = self._sock
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def _process_auth(self, plugin_name: bytes, auth_packet: Any, *rest: Any) -> Any:
        # PyMySQL answers these with the password itself to whoever asks, e.g. anybody
        # answering on the server's address. Like libmysqlclient without
        # --enable-cleartext-plugin, refuse unless TLS that was asked for protects the
        # connection: the TLS that PREFERRED finds is unverified, and anybody can offer it.
        secure = bool(getattr(self, "_secure", False))
        if plugin_name in CLEARTEXT_AUTH_PLUGINS and not (secure and self.cleartext_allowed):
            raise pymysql.err.OperationalError(
                2059,
                f"refusing to send the password in clear text ({plugin_name.decode()!s}) "
                + ("over TLS that was not asked for (set ssl-mode)" if secure
                   else "over a connection without TLS"),
            )
        return super()._process_auth(plugin_name, auth_packet, *rest)  # type: ignore[misc]


class ServerConnection:
    """One PyMySQL connection to one server, reconnected on demand.

    Not thread-safe: the caller serialises use (SessionReader holds a lock); only
    ``abort`` may be called from another thread.
    """

    def __init__(
        self,
        host: str,
        port: int,
        credentials: Credentials,
        *,
        session_wait_timeout: int | None = OWN_WAIT_TIMEOUT,
        program_name: str = "mysql-idle-exporter",
    ) -> None:
        self.host = host
        self.port = port
        self._credentials = credentials
        self._session_wait_timeout = session_wait_timeout
        self._program_name = program_name
        self._conn: _Connection | None = None
        self._closed = False
        self.info: ConnectionInfo | None = None
        self.queries_sent = 0  # statements sent, the connect-time ones included
        self.pings = 0  # COM_PINGs sent (liveness checks between reads)
        self.connects = 0  # successful connects
        self.connect_seconds = 0.0  # total time spent connecting

    def __repr__(self) -> str:
        return f"ServerConnection({self.host!r}, {self.port!r}, user={self._credentials.user!r})"

    @property
    def connected(self) -> bool:
        return self._conn is not None and self._conn.open

    def connect(self, deadline: Deadline) -> ConnectionInfo:
        """Close any current connection and open a new one."""
        return self._open(deadline)

    def query(
        self, sql: str, args: Sequence[object] = (), *, deadline: Deadline
    ) -> list[tuple[Any, ...]]:
        """Run one statement and return its rows. A lost connection is re-opened and the
        statement retried once, within the same deadline."""
        for attempt in (1, 2):
            conn = self._conn
            if conn is None or not conn.open:
                self._open(deadline)
                conn = self._conn
                assert conn is not None
            try:
                return self._execute(conn, sql, args, deadline)
            except ConnectionLost as exc:
                if attempt == 2 or deadline.remaining() < _MIN_RETRY_SECONDS:
                    raise
                log.debug("%s:%s: connection lost (%s), reconnecting", self.host, self.port, exc)
        raise AssertionError("unreachable")  # pragma: no cover

    def ping(self, *, deadline: Deadline) -> None:
        """Whether the server answers, at the least cost to it: a COM_PING on the open
        connection (no statement, no processlist), or a login when there is none. A lost
        connection is re-opened once, within the same deadline; raises ServerError when
        the server does not answer."""
        for attempt in (1, 2):
            conn = self._conn
            if conn is None or not conn.open:
                self._open(deadline)  # a login answers the question too
                return
            remaining = self._remaining(deadline, "pinging")
            conn.set_io_timeout(remaining)
            self.pings += 1
            try:
                conn.ping(reconnect=False)
                return
            except (pymysql.err.MySQLError, OSError) as exc:
                code = _code(exc)
                self._drop()
                if _timed_out(exc):
                    raise ServerTimeout(f"ping timed out after {remaining:.1f}s",
                                        code=code) from None
                if attempt == 2 or deadline.remaining() < _MIN_RETRY_SECONDS:
                    raise ConnectionLost(f"connection lost: {self._describe(exc)}",
                                         code=code) from None
                log.debug("%s:%s: ping failed (%s), reconnecting", self.host, self.port,
                          self._describe(exc))
        raise AssertionError("unreachable")  # pragma: no cover

    def close(self) -> None:
        """Close for good: later queries fail with ServerError("connection closed")."""
        self._closed = True
        conn, self._conn = self._conn, None
        if conn is None:
            return
        # Closing a broken connection is best effort.
        with contextlib.suppress(Exception):
            if conn.open:
                conn.set_io_timeout(1.0)
                conn.close()

    def abort(self) -> None:
        """Close for good from another thread, breaking off a statement that hangs there
        (it fails at once instead of reconnecting)."""
        self._closed = True
        conn = self._conn
        if conn is not None:
            conn.abort()

    # --- internals ------------------------------------------------------------------

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.abort()
                conn.close()

    def _remaining(self, deadline: Deadline, what: str) -> float:
        remaining = deadline.remaining()
        if remaining <= 0:
            raise ServerTimeout(f"timed out before {what}")
        return remaining

    def _connect_kwargs(self, remaining: float) -> dict[str, Any]:
        creds = self._credentials
        kwargs: dict[str, Any] = {
            "host": self.host,
            "port": self.port,
            "user": creds.user,
            # PyMySQL would encode a str password as latin-1; the mysql CLI sends UTF-8.
            "password": creds.password.encode("utf-8", errors="surrogateescape"),
            "charset": "utf8mb4",
            "autocommit": True,
            "client_flag": 0,  # not CLIENT_INTERACTIVE: wait_timeout, not interactive_timeout
            "connect_timeout": min(remaining, OWN_WAIT_TIMEOUT),
            "read_timeout": remaining,
            "write_timeout": remaining,
            "local_infile": False,
            "program_name": self._program_name,
        }
        # One statement at connect: the session's own idle limit, and room for the packed
        # processlist (sessions/compact.py; the default 1 KiB holds about 25 sessions).
        settings = [f"group_concat_max_len = {GROUP_CONCAT_MAX_LEN}"]
        if self._session_wait_timeout is not None:
            settings.insert(0, f"wait_timeout = {int(self._session_wait_timeout)}")
        kwargs["init_command"] = "SET SESSION " + ", ".join(settings)
        kwargs.update(ssl_kwargs(creds.ssl))
        return kwargs

    def _open(self, deadline: Deadline) -> ConnectionInfo:
        self._drop()
        if self._closed:
            raise ServerError("connection closed")
        self.info = None
        started = time.perf_counter()
        try:
            conn = self._login(deadline)
            self._conn = conn
            try:
                info = self._probe(conn, deadline)
            except ServerError:
                self._drop()
                raise
        finally:
            self.connect_seconds += time.perf_counter() - started
        self.info = info
        self.connects += 1
        return info

    def _login(self, deadline: Deadline) -> _Connection:
        remaining = self._remaining(deadline, "connecting")
        ssl_options = self._credentials.ssl
        try:
            conn = _Connection(**self._connect_kwargs(remaining), defer_connect=True)
            conn.cleartext_allowed = (
                ssl_options is not None and ssl_options.mode is not SslMode.PREFERRED)
            conn.connect()
        except pymysql.err.MySQLError as exc:
            code = _code(exc)
            if _timed_out(exc):
                raise ServerTimeout(
                    f"timed out connecting after {remaining:.1f}s", code=code
                ) from None
            label = "access denied" if code in ACCESS_DENIED_CODES else "cannot connect"
            raise ConnectFailed(f"{label}: {self._describe(exc)}", code=code) from None
        except RuntimeError as exc:
            why = NEEDS_TLS_OR_RSA if _NEEDS_RSA in str(exc) else self._describe(exc)
            raise ConnectFailed(f"cannot connect: {why}") from None
        except (OSError, ssl.SSLError, ValueError) as exc:
            raise ConnectFailed(f"cannot connect: {self._describe(exc)}") from None
        # SET NAMES, and the SET SESSION init command.
        self.queries_sent += 2
        return conn

    def _probe(self, conn: _Connection, deadline: Deadline) -> ConnectionInfo:
        rows = self._execute(conn, _PROBE_SQL, (), deadline)
        if not rows:
            raise QueryFailed("capability probe returned no row")
        row = rows[0]
        version = str(row[0] or "")
        caps = sources.parse_probe(row[2:])
        if not caps.process:
            caps = dataclasses.replace(caps, process=self._has_process_via_role(conn, deadline))
        if caps.needs_ps_check:
            caps = dataclasses.replace(caps, ps_sockets=self._ps_sockets_work(conn, deadline))
        local = conn.local_address()
        started_at = self._started_at(conn, deadline)
        return ConnectionInfo(
            version=version,
            flavor=sources.flavor_of(version),
            connection_id=int(row[1]),
            local=endpoint(*local) if local else None,
            capabilities=caps,
            own_wait_timeout_raised=self._session_wait_timeout is not None,
            started_at=started_at,
        )

    def _started_at(self, conn: _Connection, deadline: Deadline) -> float | None:
        """The server's start time from its Uptime: one statement per connect (any user
        may run it, on both flavors; no table holding it is readable on both), so that a
        restart is told from a KILL (exporter.causes)."""
        try:
            rows = self._execute(conn, UPTIME_SQL, (), deadline)
        except QueryFailed as exc:
            log.debug("%s:%s: Uptime not readable: %s", self.host, self.port, exc)
            return None
        try:
            return deadline.now() - float(rows[0][1])
        except (IndexError, TypeError, ValueError):
            return None

    def _has_process_via_role(self, conn: _Connection, deadline: Deadline) -> bool:
        try:
            self._execute(conn, sources.PROCESS_FALLBACK_SQL, (), deadline)
        except QueryFailed as exc:
            if exc.code not in PROCESS_DENIED_CODES:
                log.debug("%s:%s: PROCESS check failed: %s", self.host, self.port, exc)
            return False
        return True

    def _ps_sockets_work(self, conn: _Connection, deadline: Deadline) -> bool:
        try:
            rows = self._execute(conn, sources.PS_SOCKETS_CHECK_SQL, (), deadline)
        except QueryFailed:
            return False
        return bool(rows and rows[0][0])

    def _execute(
        self, conn: _Connection, sql: str, args: Sequence[object], deadline: Deadline
    ) -> list[tuple[Any, ...]]:
        remaining = self._remaining(deadline, "sending a query")
        conn.set_io_timeout(remaining)
        self.queries_sent += 1
        try:
            with conn.cursor() as cursor:
                cursor.execute(sql, tuple(args))
                return list(cursor.fetchall())
        except (pymysql.err.OperationalError, pymysql.err.InterfaceError,
                pymysql.err.InternalError, OSError) as exc:
            code = _code(exc)
            if _timed_out(exc):
                self._drop()
                raise ServerTimeout(f"timed out after {remaining:.1f}s", code=code) from None
            if isinstance(exc, OSError | pymysql.err.InterfaceError) or (
                code in LOST_CONNECTION_CODES or not conn.open
            ):
                self._drop()
                raise ConnectionLost(f"connection lost: {self._describe(exc)}", code=code) from None
            raise QueryFailed(self._describe(exc), code=code) from None
        except pymysql.err.MySQLError as exc:
            raise QueryFailed(self._describe(exc), code=_code(exc)) from None

    def _describe(self, exc: BaseException) -> str:
        return describe_error(exc, secret=self._credentials.password)


@functools.cache
def _preferred_context() -> ssl.SSLContext:
    """The one context of PREFERRED mode: encrypts, verifies nothing (as PyMySQL's own)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def ssl_kwargs(options: SslOptions | None) -> dict[str, Any]:
    """PyMySQL keyword arguments for the TLS options; TLS is off without options."""
    if options is None:
        return {"ssl_disabled": True}
    if options.mode is SslMode.PREFERRED and not (options.ca or options.capath or options.cert):
        return {"ssl_disabled": False}
    verify = options.mode in (SslMode.VERIFY_CA, SslMode.VERIFY_IDENTITY)
    ssl_dict: dict[str, Any] = {
        "verify_mode": verify,
        "check_hostname": options.mode is SslMode.VERIFY_IDENTITY,
    }
    if options.ca:
        ssl_dict["ca"] = options.ca
    if options.capath:
        ssl_dict["capath"] = options.capath
    if options.cert:
        ssl_dict["cert"] = options.cert
    if options.key:
        ssl_dict["key"] = options.key
    return {"ssl_disabled": False, "ssl": ssl_dict}


def describe_error(exc: BaseException, *, secret: str = "") -> str:
    """One short line: "(code) message" for server errors, the message otherwise; the
    secret, when given and non-trivial, is masked."""
    args: tuple[object, ...] = getattr(exc, "args", ())
    if isinstance(exc, pymysql.err.MySQLError) and len(args) >= 2 and isinstance(args[0], int):
        text = f"({args[0]}) {args[1]}" if args[1] or args[0] else "connection already closed"
    else:
        text = str(exc) or type(exc).__name__
    text = " ".join(text.split())
    if secret and len(secret) >= 3:
        text = text.replace(secret, "***")
    if len(text) > _MAX_MESSAGE:
        text = text[: _MAX_MESSAGE - 3] + "..."
    return text


def _code(exc: BaseException) -> int | None:
    args: tuple[object, ...] = getattr(exc, "args", ())
    if args and isinstance(args[0], int):
        return args[0]
    return None


def _timed_out(exc: BaseException) -> bool:
    seen: BaseException | None = exc
    for _ in range(5):
        if seen is None:
            break
        if isinstance(seen, TimeoutError | socket.timeout):
            return True
        seen = seen.__context__
    original = getattr(exc, "original_exception", None)
    return isinstance(original, TimeoutError)

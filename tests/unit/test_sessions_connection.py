"""ServerConnection's retry and error rules, over a scripted fake PyMySQL connection.
(The real-server behaviour is in tests/integration/test_session_reader.py.)"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pymysql
import pytest

from exporter.model import Endpoint, Flavor
from exporter.sessions import connection as connection_module
from exporter.sessions.connection import (
    ConnectFailed,
    ConnectionLost,
    QueryFailed,
    ServerConnection,
    ServerTimeout,
)
from exporter.sessions.connection import _Connection as RealConnection
from exporter.sessions.credentials import Credentials, SslMode, SslOptions
from tests.support.builders import soon

SECRET = "top-Secret-123"
PROBE_ROW = ("10.11.19-MariaDB", 42, 0, 1, 1, None)


def lost() -> Exception:
    return pymysql.err.OperationalError(2013, "Lost connection to MySQL server during query")


def timed_out() -> Exception:
    try:
        try:
            raise TimeoutError("timed out")
        except TimeoutError:
            raise pymysql.err.OperationalError(2013, "Lost connection (timed out)") from None
    except pymysql.err.OperationalError as exc:
        exc.__suppress_context__ = False
        return exc


class FakeConnection:
    """Stands in for exporter.sessions.connection._Connection."""

    instances: list[FakeConnection] = []
    script: list[Any] = []  # per statement after the probe: rows, or an exception
    connect_error: Exception | None = None
    uptime = 5000  # the server's Uptime, answered at every connect

    def __init__(self, **kwargs: Any) -> None:
        assert kwargs.get("defer_connect") is True  # ServerConnection calls connect()
        self.kwargs = kwargs
        self.open = False
        self.cleartext_allowed = False
        self.timeouts: list[float] = []
        self.statements: list[str] = []

    def connect(self) -> None:
        if FakeConnection.connect_error is not None:
            raise FakeConnection.connect_error
        self.open = True
        FakeConnection.instances.append(self)

    def set_io_timeout(self, seconds: float) -> None:
        self.timeouts.append(seconds)

    def local_address(self) -> tuple[str, int]:
        return ("::ffff:127.0.0.1", 50000 + len(FakeConnection.instances))

    def abort(self) -> None:
        self.open = False

    def close(self) -> None:
        self.open = False

    def cursor(self) -> FakeCursor:
        return FakeCursor(self)

    def ping(self, reconnect: bool = True) -> None:
        assert reconnect is False  # ServerConnection reconnects itself, within the deadline
        self.statements.append("COM_PING")
        outcome = FakeConnection.script.pop(0)
        if isinstance(outcome, BaseException):
            self.open = False
            raise outcome


class FakeCursor:
    def __init__(self, conn: FakeConnection) -> None:
        self.conn = conn
        self.rows: list[tuple[Any, ...]] = []

    def __enter__(self) -> FakeCursor:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def execute(self, sql: str, args: tuple[object, ...]) -> None:
        if not self.conn.open:
            raise pymysql.err.InterfaceError(0, "")
        self.conn.statements.append(sql)
        if sql.startswith("SELECT VERSION(), CONNECTION_ID()"):
            version, _, *rest = PROBE_ROW
            self.rows = [(version, 42 + len(FakeConnection.instances), *rest)]
            return
        if sql == connection_module.UPTIME_SQL:
            self.rows = [("Uptime", str(FakeConnection.uptime))]
            return
        outcome = FakeConnection.script.pop(0)
        if isinstance(outcome, BaseException):
            if isinstance(outcome, pymysql.err.OperationalError) and outcome.args[0] in (
                    2013, 2006):
                self.conn.open = False
            raise outcome
        self.rows = outcome

    def fetchall(self) -> list[tuple[Any, ...]]:
        return self.rows


@pytest.fixture(autouse=True)
def fake(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(connection_module, "_Connection", FakeConnection)
    FakeConnection.instances = []
    FakeConnection.script = []
    FakeConnection.connect_error = None
    yield


def make(**kw: Any) -> ServerConnection:
    return ServerConnection("127.0.0.1", 3306, Credentials("exporter", SECRET), **kw)


def test_connect_options_and_what_it_learns() -> None:
    conn = make()
    info = conn.connect(soon(3.0))
    (fake,) = FakeConnection.instances
    kwargs = fake.kwargs
    # TLS PREFERRED, as the MySQL client: PyMySQL encrypts when the server offers it.
    assert kwargs["ssl_disabled"] is False and "ssl" not in kwargs
    assert fake.cleartext_allowed is False
    assert kwargs["client_flag"] == 0 and kwargs["autocommit"] is True
    assert kwargs["charset"] == "utf8mb4"
    assert kwargs["init_command"] == (
        "SET SESSION wait_timeout = 31536000, group_concat_max_len = 1073741824"
    )
    assert kwargs["password"] == SECRET.encode()
    assert 0 < kwargs["connect_timeout"] <= 3.0 and 0 < kwargs["read_timeout"] <= 3.0
    assert info.flavor is Flavor.MARIADB and info.connection_id == 43
    assert info.local == Endpoint("127.0.0.1", 50001)  # IPv4-mapped normalised
    assert info.capabilities.process and not info.capabilities.names_resolved
    # SET NAMES, SET SESSION wait_timeout, the probe, the server's Uptime
    assert conn.queries_sent == 4
    deadline = soon(3.0)
    assert info.started_at is not None
    assert abs(info.started_at - (deadline.now() - 5000)) < 1.0


def test_no_raise_of_own_wait_timeout_when_asked() -> None:
    make(session_wait_timeout=None).connect(soon(1.0))
    # Only the room for the packed processlist; the server's wait_timeout stays.
    assert FakeConnection.instances[0].kwargs["init_command"] == (
        "SET SESSION group_concat_max_len = 1073741824"
    )


def test_lost_connection_is_reopened_once_within_the_call() -> None:
    conn = make()
    conn.connect(soon(1.0))
    FakeConnection.script = [lost(), [(1,)]]
    assert conn.query("SELECT 1", deadline=soon(2.0)) == [(1,)]
    assert conn.connects == 2 and len(FakeConnection.instances) == 2
    assert conn.info is not None and conn.info.connection_id == 44


def test_already_closed_socket_counts_as_lost() -> None:
    conn = make()
    conn.connect(soon(1.0))
    FakeConnection.instances[0].open = False
    FakeConnection.script = [[(2,)]]
    assert conn.query("SELECT 2", deadline=soon(2.0)) == [(2,)]
    assert conn.connects == 2


def test_lost_twice_gives_up() -> None:
    conn = make()
    conn.connect(soon(1.0))
    FakeConnection.script = [lost(), lost()]
    with pytest.raises(ConnectionLost, match=r"connection lost: \(2013\)"):
        conn.query("SELECT 1", deadline=soon(2.0))
    assert conn.connects == 2


def test_timeout_is_not_retried() -> None:
    conn = make()
    conn.connect(soon(1.0))
    FakeConnection.script = [timed_out()]
    with pytest.raises(ServerTimeout, match="timed out after"):
        conn.query("SELECT 1", deadline=soon(2.0))
    assert conn.connects == 1 and not conn.connected


def test_server_error_keeps_the_connection() -> None:
    conn = make()
    conn.connect(soon(1.0))
    FakeConnection.script = [pymysql.err.ProgrammingError(1146, "Table 'x' doesn't exist")]
    with pytest.raises(QueryFailed) as info:
        conn.query("SELECT * FROM x", deadline=soon(2.0))
    assert info.value.code == 1146 and str(info.value) == "(1146) Table 'x' doesn't exist"
    assert conn.connected and conn.connects == 1


def test_connect_errors_hide_the_password() -> None:
    FakeConnection.connect_error = pymysql.err.OperationalError(
        1045, f"Access denied for user 'exporter' (password {SECRET})")
    with pytest.raises(ConnectFailed) as info:
        make().connect(soon(1.0))
    assert str(info.value) == (
        "access denied: (1045) Access denied for user 'exporter' (password ***)")
    assert SECRET not in repr(info.value)
    assert info.value.__cause__ is None and info.value.__suppress_context__


def test_runtime_error_from_pymysql_is_a_connect_failure() -> None:
    FakeConnection.connect_error = RuntimeError("something PyMySQL could not do")
    with pytest.raises(ConnectFailed, match=r"^cannot connect: something PyMySQL could not do$"):
        make().connect(soon(1.0))


def test_a_login_that_needs_rsa_says_what_to_do() -> None:
    # MySQL 8+'s caching_sha2_password without TLS and without the `cryptography` package:
    # PyMySQL's message names a package the user never asked for.
    FakeConnection.connect_error = RuntimeError(
        "'cryptography' package is required for sha256_password or caching_sha2_password "
        "auth methods")
    with pytest.raises(ConnectFailed) as info:
        make().connect(soon(1.0))
    assert str(info.value) == (
        "cannot connect: caching_sha2_password needs TLS (the server offers none, or "
        "ssl-mode=DISABLED) or the RSA exchange of pip install 'mysql-idle-exporter[rsa]'")


@pytest.mark.parametrize(("ssl", "allowed"), [
    ("default", False),  # PREFERRED: unverified TLS that anybody on the path can offer
    (None, False),
    (SslOptions(mode=SslMode.REQUIRED), True),
])
def test_clear_text_passwords_only_inside_tls_that_was_asked_for(
        ssl: SslOptions | str | None, allowed: bool) -> None:
    creds = Credentials("exporter", SECRET) if ssl == "default" else Credentials(
        "exporter", SECRET, ssl)  # type: ignore[arg-type]
    ServerConnection("127.0.0.1", 3306, creds).connect(soon(1.0))
    assert FakeConnection.instances[-1].cleartext_allowed is allowed


def test_deadline_already_passed() -> None:
    with pytest.raises(ServerTimeout):
        make().query("SELECT 1", deadline=soon(0.0))
    assert FakeConnection.instances == []


def test_io_timeout_follows_the_deadline() -> None:
    conn = make()
    conn.connect(soon(5.0))
    FakeConnection.script = [[(1,)]]
    conn.query("SELECT 1", deadline=soon(0.5))
    assert 0 < FakeConnection.instances[0].timeouts[-1] <= 0.5


def test_closed_for_good() -> None:
    conn = make()
    conn.connect(soon(1.0))
    conn.close()
    with pytest.raises(connection_module.ServerError, match="connection closed"):
        conn.query("SELECT 1", deadline=soon(1.0))


@pytest.mark.parametrize(("secure", "allowed", "refused"), [
    (False, False, "over a connection without TLS"),
    (False, True, "over a connection without TLS"),
    (True, False, "over TLS that was not asked for"),
])
def test_clear_text_plugins_are_refused(secure: bool, allowed: bool, refused: str) -> None:
    real = RealConnection.__new__(RealConnection)  # never connected
    real._secure = secure
    real.cleartext_allowed = allowed
    with pytest.raises(pymysql.err.OperationalError) as info:
        real._process_auth(b"mysql_clear_password", None)
    assert info.value.args[0] == 2059 and refused in info.value.args[1]


def test_a_ping_sends_no_statement_and_reconnects_once_when_lost() -> None:
    conn = make()
    conn.connect(soon(1.0))
    FakeConnection.script = [None]
    conn.ping(deadline=soon(1.0))
    (first,) = FakeConnection.instances
    assert first.statements[-1] == "COM_PING" and conn.pings == 1
    queries = conn.queries_sent
    # Lost (a KILL, the server's timeout): one reconnect, whose login answers the question.
    FakeConnection.script = [lost()]
    conn.ping(deadline=soon(1.0))
    assert len(FakeConnection.instances) == 2 and conn.connects == 2
    assert conn.queries_sent > queries  # the login's own statements, no ping statement


def test_a_ping_that_times_out_is_a_timeout_not_retried() -> None:
    conn = make()
    conn.connect(soon(1.0))
    FakeConnection.script = [timed_out()]
    with pytest.raises(ServerTimeout, match="ping timed out"):
        conn.ping(deadline=soon(1.0))
    assert len(FakeConnection.instances) == 1


def test_a_server_that_is_gone_fails_the_ping() -> None:
    conn = make()
    conn.connect(soon(1.0))
    FakeConnection.script = [lost()]
    FakeConnection.connect_error = pymysql.err.OperationalError(
        2003, "Can't connect to MySQL server on '127.0.0.1' ([Errno 111] Connection refused)")
    with pytest.raises(ConnectFailed, match="Connection refused"):
        conn.ping(deadline=soon(1.0))

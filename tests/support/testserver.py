"""What the tests add to every throwaway server (exporter/throwaway/), whatever its flavor:
a directory on tmpfs, a clear failure when the server cannot be had, the monitoring user the
tests log in as, and a few SQL conveniences. Never touches a server it did not start."""

from __future__ import annotations

import os
import secrets
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pymysql
import pytest

from exporter.throwaway import ServerUnavailable, ThrowawayServer


def scratch_dir() -> str | None:
    """Where server directories go: tmpfs when there is room (copying and starting are
    several times faster there), else the default temporary directory."""
    shm = "/dev/shm"
    try:
        stats = os.statvfs(shm)
    except OSError:
        return None
    if os.access(shm, os.W_OK) and stats.f_bavail * stats.f_frsize > 1 << 30:
        return shm
    return None


@dataclass(frozen=True)
class MonitorUser:
    """The exporter's monitoring login on a throwaway server."""

    user: str
    password: str


if TYPE_CHECKING:
    _Base = ThrowawayServer
else:
    _Base = object


class TestServerMixin(_Base):
    """Mixed in before a throwaway server class (``class X(TestServerMixin, ThrowawayY)``).

    ``start()`` fails the test (never skips it) with the reason when the server cannot be
    had: not installed, not fetched, or not starting.
    """

    def __init__(self, extra_args: Sequence[str] = (), *, base_dir: Path | None = None,
                 **kwargs: Any) -> None:
        workdir = base_dir or Path(tempfile.mkdtemp(prefix=f"{self.flavor}-", dir=scratch_dir()))
        super().__init__(extra_args, workdir=workdir, **kwargs)
        self.monitor: MonitorUser | None = None

    def start(self) -> Any:
        try:
            return super().start()
        except ServerUnavailable as error:
            pytest.fail(f"cannot start a throwaway {self.product}: {error}", pytrace=False)

    @property
    def base(self) -> Path:
        """The server's directory (the base class calls it ``workdir``)."""
        return self.workdir

    def cleanup(self) -> None:
        """Kill the server (the data is thrown away) and delete its directory."""
        self.destroy(kill=True)

    # --- SQL ---------------------------------------------------------------------------

    def connect(self, **kwargs: Any) -> pymysql.connections.Connection[Any]:
        # A frozen or broken server fails the test instead of hanging it.
        return super().connect(**{"read_timeout": 30, "write_timeout": 30, **kwargs})

    def create_user(
        self, user: str, *, grants: Sequence[str] = ("PROCESS",), password: str | None = None
    ) -> MonitorUser:
        """CREATE USER 'user'@'%' with a random password and the given global grants."""
        password = password if password is not None else secrets.token_urlsafe(12)
        conn = self.connect()
        try:
            with conn.cursor() as cursor:
                cursor.execute("CREATE USER %s@'%%' IDENTIFIED BY %s", (user, password))
                for grant in grants:
                    cursor.execute(f"GRANT {grant} ON *.* TO %s@'%%'", (user,))
        finally:
            conn.close()
        return MonitorUser(user, password)

    def create_monitor_user(self) -> MonitorUser:
        """The exporter's user: 'exporter'@'%' with PROCESS only."""
        if self.monitor is None:
            self.monitor = self.create_user("exporter", grants=("PROCESS",))
        return self.monitor

    @property
    def exporter_user(self) -> str:
        assert self.monitor is not None, "create_monitor_user() first"
        return self.monitor.user

    @property
    def exporter_password(self) -> str:
        assert self.monitor is not None, "create_monitor_user() first"
        return self.monitor.password

    def global_status(self, name: str, conn: pymysql.connections.Connection[Any]) -> int:
        with conn.cursor() as cursor:
            cursor.execute("SHOW GLOBAL STATUS LIKE %s", (name,))
            row = cursor.fetchone()
        assert row is not None, name
        return int(row[1])

    # --- what differs between flavors, for the tests' own checks ----------------------

    @property
    def is_mysql(self) -> bool:
        return self.flavor == "mysql"

    def offers_tls(self) -> bool:
        if self.is_mysql:
            rows = self.execute(
                "SELECT VALUE FROM performance_schema.tls_channel_status"
                " WHERE CHANNEL = 'mysql_main' AND PROPERTY = 'Enabled'")
            return bool(rows) and rows[0][0] == "Yes"
        return bool(self.execute("SELECT @@have_ssl")[0][0] == "YES")

    def tls_versions_of(self, user: str) -> list[str]:
        """The TLS version of every session of `user` ("" for none), as the server saw it
        negotiated (performance_schema must be ON)."""
        rows = self.execute(
            "SELECT s.VARIABLE_VALUE FROM performance_schema.status_by_thread AS s"
            " JOIN performance_schema.threads AS t ON t.THREAD_ID = s.THREAD_ID"
            " WHERE t.PROCESSLIST_USER = %s AND s.VARIABLE_NAME = 'Ssl_version'", args=(user,))
        return [str(row[0]) for row in rows]

    def idle_seconds(self, client_port: int) -> float | None:
        """The server's own idle time of the sleeping session whose client port is
        `client_port`, to the millisecond; None if there is none."""
        if not self.is_mysql:
            rows = self.execute(
                "SELECT TIME_MS / 1000 FROM information_schema.PROCESSLIST"
                " WHERE HOST LIKE %s AND COMMAND = 'Sleep'", args=(f"%:{client_port}",))
            return float(rows[0][0]) if rows else None
        # MySQL counts idle time in whole seconds only; performance_schema's statement
        # timer (picoseconds) says when the session's last statement ended, and when this
        # one started.
        rows = self.execute(
            "SELECT (me.TIMER_START - last.TIMER_END) / 1e12"
            " FROM performance_schema.socket_instances AS s"
            " JOIN performance_schema.threads AS t ON t.THREAD_ID = s.THREAD_ID"
            " JOIN performance_schema.events_statements_current AS last"
            " ON last.THREAD_ID = t.THREAD_ID"
            " JOIN performance_schema.events_statements_current AS me"
            " ON me.THREAD_ID = PS_CURRENT_THREAD_ID()"
            " WHERE s.PORT = %s AND t.PROCESSLIST_COMMAND = 'Sleep'", args=(client_port,))
        return float(rows[0][0]) if rows and rows[0][0] is not None else None

"""The test suite's throwaway MariaDB: exporter.throwaway's server, quicker to start and with
the monitoring user the tests log in as. Never touches a server it did not start.

The system tables are installed once per test run into a template directory
(``mariadb-install-db`` takes about 0.6 s) and copied for every server (about 25 ms on
tmpfs), so a server is ready in about 0.1 s.
"""

from __future__ import annotations

import atexit
import os
import secrets
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pymysql
import pytest

from exporter import throwaway
from exporter.throwaway import free_port

__all__ = ["MonitorUser", "ThrowawayMariaDB", "free_port", "scratch_dir", "template_datadir"]


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


_template: Path | None = None


def template_datadir() -> Path:
    """A freshly installed datadir shared by every server of this run (copied, not used)."""
    global _template
    if _template is not None and (_template / "data" / "mysql").is_dir():
        return _template / "data"
    base = Path(tempfile.mkdtemp(prefix="mariadb-template-", dir=scratch_dir()))
    atexit.register(shutil.rmtree, base, True)
    throwaway.install_datadir(base / "data", base / "tmp", ThrowawayMariaDB.innodb_args)
    _template = base
    return base / "data"


@dataclass(frozen=True)
class MonitorUser:
    """The exporter's monitoring login on a throwaway server."""

    user: str
    password: str


class ThrowawayMariaDB(throwaway.ThrowawayMariaDB):
    """One private mariadbd for tests. ``start()`` it, use it, ``cleanup()`` it (or use
    ``with``)."""

    # Durability is worthless here; starting and writing fast is not. The InnoDB settings
    # go to the template's install too.
    innodb_args = (
        "--innodb-buffer-pool-size=16M",
        "--innodb-log-file-size=4M",
        "--innodb-flush-log-at-trx-commit=0",
        "--innodb-doublewrite=0",
    )
    server_args = (
        *throwaway.ThrowawayMariaDB.server_args,
        "--performance-schema=OFF",
        "--skip-slave-start",
        "--max-connections=500",
    )

    def __init__(
        self,
        extra_args: Sequence[str] = (),
        *,
        startup_timeout: float = 30.0,
        base_dir: Path | None = None,
    ) -> None:
        try:
            throwaway.binaries()
        except throwaway.MariaDBUnavailable as error:
            pytest.fail(f"{error}: these tests need a real MariaDB server", pytrace=False)
        workdir = base_dir or Path(tempfile.mkdtemp(prefix="mariadb-", dir=scratch_dir()))
        super().__init__(extra_args, startup_timeout=startup_timeout, workdir=workdir)
        self.monitor: MonitorUser | None = None

    @property
    def base(self) -> Path:
        """The server's directory (the base class calls it ``workdir``)."""
        return self.workdir

    def _install(self) -> None:
        shutil.copytree(template_datadir(), self.datadir, symlinks=True)

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


MariaDBFactory = Callable[..., ThrowawayMariaDB]
"""The ``mariadb_factory`` fixture: ``mariadb_factory(*extra_args, monitor_user=True)``."""

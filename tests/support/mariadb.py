"""A throwaway MariaDB server for tests: temporary datadir, free loopback port.

The system tables are installed once per test run into a template directory
(``mariadb-install-db`` takes about 0.6 s) and copied for every server (about 25 ms on
tmpfs), so a server is ready in about 0.1 s. Never touches a server it did not start.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pymysql
import pytest

MARIADBD_CANDIDATES = ("/usr/sbin/mariadbd", "/usr/bin/mariadbd", "/usr/sbin/mysqld")
INSTALL_DB_CANDIDATES = ("/usr/bin/mariadb-install-db", "/usr/bin/mysql_install_db")

# Small and fast: a test server holds almost no data.
BASE_ARGS = (
    "--skip-name-resolve",
    "--skip-log-bin",
    "--innodb-buffer-pool-size=16M",
    "--innodb-log-file-size=4M",
    "--innodb-flush-log-at-trx-commit=0",
    "--innodb-doublewrite=0",
    "--performance-schema=OFF",
    "--skip-slave-start",
    "--max-connections=500",
)


class MariaDBStartError(RuntimeError):
    pass


def find_binary(candidates: Sequence[str], name: str) -> str:
    for candidate in (shutil.which(name), *candidates):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    pytest.fail(
        f"{name} not found: these tests need a real MariaDB server. "
        "Install it with `apt-get install mariadb-server` (Debian/Ubuntu).",
        pytrace=False,
    )


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


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
    install_db = find_binary(INSTALL_DB_CANDIDATES, "mariadb-install-db")
    base = Path(tempfile.mkdtemp(prefix="mariadb-template-", dir=scratch_dir()))
    atexit.register(shutil.rmtree, base, True)
    datadir = base / "data"
    command = [
        install_db,
        "--no-defaults",
        "--auth-root-authentication-method=normal",
        "--skip-test-db",
        "--user=root" if os.geteuid() == 0 else f"--user={os.getuid()}",
        f"--datadir={datadir}",
        "--innodb-log-file-size=4M",
        "--innodb-buffer-pool-size=16M",
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).splitlines()[-30:])
        raise MariaDBStartError(f"mariadb-install-db failed ({result.returncode}):\n{tail}")
    _template = base
    return datadir


@dataclass(frozen=True)
class MonitorUser:
    """The exporter's monitoring login on a throwaway server."""

    user: str
    password: str


class ThrowawayMariaDB:
    """One private mariadbd. ``start()`` it, use it, ``cleanup()`` it (or use ``with``)."""

    host = "127.0.0.1"

    def __init__(
        self,
        extra_args: Sequence[str] = (),
        *,
        startup_timeout: float = 30.0,
        base_dir: Path | None = None,
    ) -> None:
        self.mariadbd = find_binary(MARIADBD_CANDIDATES, "mariadbd")
        self.extra_args = tuple(extra_args)
        self.startup_timeout = startup_timeout
        self.base = Path(base_dir or tempfile.mkdtemp(prefix="mariadb-", dir=scratch_dir()))
        self.datadir = self.base / "data"
        self.socket_path = self.base / "mariadb.sock"
        self.log_path = self.base / "error.log"
        self.pid_path = self.base / "mariadb.pid"
        self.tmpdir = self.base / "tmp"
        self.port = 0
        self.startup_seconds = 0.0
        self.monitor: MonitorUser | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._paused = False
        _live.add(self)

    def __repr__(self) -> str:
        return f"ThrowawayMariaDB(port={self.port}, pid={self.pid}, args={self.extra_args})"

    def __enter__(self) -> ThrowawayMariaDB:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.cleanup()

    # --- lifecycle -----------------------------------------------------------------

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> ThrowawayMariaDB:
        """Create the datadir (first time) and start the server; retries on a port clash."""
        if self.running:
            return self
        if not (self.datadir / "mysql").is_dir():
            shutil.copytree(template_datadir(), self.datadir, symlinks=True)
        self.tmpdir.mkdir(parents=True, exist_ok=True)
        fixed_port = self.port != 0
        for attempt in range(5):
            if not fixed_port:
                self.port = free_port(self.host)
            try:
                self._launch()
                return self
            except MariaDBStartError as exc:
                if fixed_port or attempt == 4 or "in use" not in str(exc):
                    raise
        raise AssertionError("unreachable")

    def _command(self) -> list[str]:
        return [
            self.mariadbd,
            "--no-defaults",
            f"--datadir={self.datadir}",
            f"--socket={self.socket_path}",
            f"--port={self.port}",
            f"--bind-address={self.host}",
            "--user=root" if os.geteuid() == 0 else f"--user={os.getuid()}",
            f"--pid-file={self.pid_path}",
            f"--log-error={self.log_path}",
            # Every mariadbd deletes the #sql* files in its tmpdir at start: a shared /tmp
            # lets parallel servers break each other's temporary tables.
            f"--tmpdir={self.tmpdir}",
            *BASE_ARGS,
            *self.extra_args,
        ]

    def _launch(self) -> None:
        self.log_path.unlink(missing_ok=True)
        started = time.monotonic()
        self._process = subprocess.Popen(
            self._command(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        self._paused = False
        deadline = started + self.startup_timeout
        while True:
            if self._process.poll() is not None:
                code = self._process.returncode
                self._process = None
                raise MariaDBStartError(
                    f"mariadbd exited with {code} while starting on port {self.port}:\n"
                    f"{self.log_tail()}"
                )
            try:
                self.connect(connect_timeout=1).close()
                break
            except pymysql.err.OperationalError:
                if time.monotonic() > deadline:
                    self._kill()
                    raise MariaDBStartError(
                        f"mariadbd did not accept connections within {self.startup_timeout}s"
                        f" on port {self.port}:\n{self.log_tail()}"
                    ) from None
                time.sleep(0.02)
        self.startup_seconds = time.monotonic() - started

    def stop(self, *, timeout: float = 20.0) -> None:
        """Shut down cleanly (SIGTERM), or kill after ``timeout``."""
        process = self._process
        if process is None:
            return
        if process.poll() is None:
            self.resume()
            process.terminate()
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)
        self._process = None

    def _kill(self) -> None:
        process = self._process
        if process is not None and process.poll() is None:
            process.kill()
            process.wait(10)
        self._process = None

    def restart(self) -> None:
        """Stop and start again on the same port and datadir."""
        self.stop()
        self.start()

    def pause(self, *, timeout: float = 5.0) -> None:
        """Freeze the server (SIGSTOP): it accepts TCP connections but answers nothing.
        Returns once every thread is stopped (delivery is asynchronous, and slow on a
        busy machine)."""
        if self._process is None or self._paused:
            return
        pid = self._process.pid
        os.kill(pid, signal.SIGSTOP)
        self._paused = True
        deadline = time.monotonic() + timeout
        while not _all_threads_stopped(pid):
            if time.monotonic() > deadline:
                raise RuntimeError(f"mariadbd {pid} did not stop within {timeout}s")
            time.sleep(0.005)

    def resume(self) -> None:
        if self._process is not None and self._paused:
            os.kill(self._process.pid, signal.SIGCONT)
            self._paused = False

    def cleanup(self) -> None:
        """Stop (killing is fine: the data is thrown away) and delete the directory."""
        self.resume()
        self._kill()
        shutil.rmtree(self.base, ignore_errors=True)
        _live.discard(self)

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no error log)"
        return "\n".join(text.splitlines()[-lines:])

    # --- SQL ------------------------------------------------------------------------

    def connect(self, **kwargs: Any) -> pymysql.connections.Connection[Any]:
        """A PyMySQL connection, root without password unless overridden, TLS off."""
        options: dict[str, Any] = {
            "host": self.host,
            "port": self.port,
            "user": "root",
            "password": "",
            "ssl_disabled": True,
            "autocommit": True,
            "connect_timeout": 5,
            "read_timeout": 30,
            "write_timeout": 30,
        }
        options.update(kwargs)
        return pymysql.connect(**options)

    def execute(self, sql: str, args: Sequence[object] | None = None) -> list[tuple[Any, ...]]:
        """Run one statement as root on a fresh connection; return its rows."""
        conn = self.connect()
        try:
            with conn.cursor() as cursor:
                cursor.execute(sql, args)
                return list(cursor.fetchall())
        finally:
            conn.close()

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


def _all_threads_stopped(pid: int) -> bool:
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return True
    for task in tasks:
        try:
            with open(f"/proc/{pid}/task/{task}/stat", encoding="ascii") as stat:
                state = stat.read().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if state not in ("T", "t", "Z", "X"):
            return False
    return True


_live: set[ThrowawayMariaDB] = set()


@atexit.register
def _kill_leftovers() -> None:
    for server in list(_live):
        with contextlib.suppress(Exception):
            server.cleanup()

"""A private MariaDB server on a temporary data directory and a free loopback port.

Used by the demo and by the test suite: it never touches a server it did not start.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pymysql


class MariaDBUnavailable(RuntimeError):
    """mariadbd or mariadb-install-db is missing, or the server would not start."""


def find_binary(name: str) -> str | None:
    return shutil.which(name) or next(
        (str(p) for p in (Path("/usr/sbin") / name, Path("/usr/bin") / name) if p.exists()), None
    )


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


class ThrowawayMariaDB:
    """Start with `start()`, stop with `stop()` (also a context manager)."""

    def __init__(self, extra_args: Sequence[str] = (), *, host: str = "127.0.0.1",
                 port: int | None = None, startup_timeout: float = 30.0,
                 command_prefix: Sequence[str] = ()) -> None:
        self.host = host
        # Prepended to the mariadbd command line, e.g. `ip netns exec NS` (which execs, so
        # the process id stays mariadbd's and pause/resume/stop still reach it).
        self.command_prefix = list(command_prefix)
        self.port = port or free_port(host)
        self.extra_args = list(extra_args)
        self.startup_timeout = startup_timeout
        self.workdir = Path(tempfile.mkdtemp(prefix="mysql-idle-mariadb-"))
        self.datadir = self.workdir / "data"
        self.socket_path = self.workdir / "mysqld.sock"
        # A private tmpdir: every mariadbd deletes the #sql* files in its tmpdir when it
        # starts, so servers sharing /tmp break each other's temporary tables (and
        # mariadb-install-db's bootstrap) when several run at once.
        self.tmpdir = self.workdir / "tmp"
        self.log_path = self.workdir / "error.log"
        self.process: subprocess.Popen[bytes] | None = None
        self._installed = False

    @property
    def pid(self) -> int:
        assert self.process is not None, "server not started"
        return self.process.pid

    def _install(self) -> None:
        install = find_binary("mariadb-install-db") or find_binary("mysql_install_db")
        if install is None or find_binary("mariadbd") is None:
            raise MariaDBUnavailable(
                "MariaDB is not installed (mariadbd, mariadb-install-db): "
                "run 'sudo apt-get install mariadb-server'"
            )
        self.tmpdir.mkdir(exist_ok=True)
        result = subprocess.run(
            [
                install,
                "--no-defaults",
                f"--datadir={self.datadir}",
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
                f"--tmpdir={self.tmpdir}",
                *(["--user=root"] if os.geteuid() == 0 else []),
            ],
            capture_output=True,
            timeout=120,
        )
        if result.returncode != 0:
            tail = (result.stderr or result.stdout).decode(errors="replace").strip()[-400:]
            raise MariaDBUnavailable(f"mariadb-install-db failed: {tail}")
        self._installed = True

    def start(self) -> ThrowawayMariaDB:
        if not self._installed:
            self._install()
        mariadbd = find_binary("mariadbd")
        assert mariadbd is not None
        args = [
            mariadbd,
            "--no-defaults",
            f"--datadir={self.datadir}",
            f"--socket={self.socket_path}",
            f"--tmpdir={self.tmpdir}",
            f"--port={self.port}",
            f"--bind-address={self.host}",
            f"--pid-file={self.workdir / 'mysqld.pid'}",
            f"--log-error={self.log_path}",
            "--skip-name-resolve",
            "--skip-log-bin",
            "--innodb-buffer-pool-size=16M",
            "--innodb-log-file-size=8M",
            *self.extra_args,
        ]
        if os.geteuid() == 0:
            args.insert(2, "--user=root")
        self.process = subprocess.Popen(
            [*self.command_prefix, *args],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise MariaDBUnavailable(f"mariadbd exited at start: {self.log_tail()}")
            try:
                self.connect().close()
                return self
            except pymysql.err.OperationalError:
                time.sleep(0.05)
        self.stop()
        raise MariaDBUnavailable(f"mariadbd did not accept connections in time: {self.log_tail()}")

    def log_tail(self, chars: int = 600) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:].strip()
        except OSError:
            return "(no log)"

    def connect(self, **kwargs: Any) -> pymysql.connections.Connection[Any]:
        options: dict[str, Any] = {
            "host": self.host,
            "port": self.port,
            "user": "root",
            "password": "",
            "connect_timeout": 5,
            "autocommit": True,
            "ssl_disabled": True,
        }
        options.update(kwargs)
        return pymysql.connect(**options)

    def execute(self, *statements: str) -> list[tuple[object, ...]]:
        connection = self.connect()
        try:
            rows: list[tuple[object, ...]] = []
            with connection.cursor() as cursor:
                for statement in statements:
                    cursor.execute(statement)
                    rows = list(cursor.fetchall())
            return rows
        finally:
            connection.close()

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.process.pid, signal.SIGCONT)
                self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def pause(self) -> None:
        os.kill(self.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.kill(self.pid, signal.SIGCONT)

    def destroy(self) -> None:
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> ThrowawayMariaDB:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.destroy()

"""A private MariaDB server on a temporary data directory and a free loopback port.

Used by the demo, the benchmarks and (through tests/support/mariadb.py) the test suite:
it never touches a server it did not start.
"""

from __future__ import annotations

import atexit
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
from typing import Any, Self

import pymysql

NOT_INSTALLED = (
    "MariaDB is not installed (mariadbd, mariadb-install-db): "
    "run 'apt-get install mariadb-server' as root"
)


class MariaDBUnavailable(RuntimeError):
    """mariadbd or mariadb-install-db is missing, or the server would not start."""


def find_binary(name: str) -> str | None:
    return shutil.which(name) or next(
        (str(p) for p in (Path("/usr/sbin") / name, Path("/usr/bin") / name) if p.exists()), None
    )


def binaries() -> tuple[str, str]:
    """(mariadbd, mariadb-install-db), or MariaDBUnavailable saying what to install."""
    mariadbd = find_binary("mariadbd")
    install = find_binary("mariadb-install-db") or find_binary("mysql_install_db")
    if mariadbd is None or install is None:
        raise MariaDBUnavailable(NOT_INSTALLED)
    return mariadbd, install


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def _as_root() -> list[str]:
    # mariadbd refuses to run as root unless told to; as anyone else it runs as that user.
    return ["--user=root"] if os.geteuid() == 0 else []


def install_datadir(datadir: Path, tmpdir: Path, args: Sequence[str] = ()) -> None:
    """Create the system tables in `datadir` (mariadb-install-db, about 0.6 s); `args` go
    to its bootstrap server."""
    _, install = binaries()
    tmpdir.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(
        [
            install,
            "--no-defaults",
            f"--datadir={datadir}",
            "--auth-root-authentication-method=normal",
            "--skip-test-db",
            f"--tmpdir={tmpdir}",
            *_as_root(),
            *args,
        ],
        capture_output=True,
        timeout=120,
    )
    if result.returncode != 0:
        tail = (result.stderr or result.stdout).decode(errors="replace").strip()[-400:]
        raise MariaDBUnavailable(f"mariadb-install-db failed ({result.returncode}): {tail}")


class ThrowawayMariaDB:
    """One private mariadbd. `start()` it, use it, `destroy()` it (or use `with`)."""

    # Small and fast: a throwaway server holds almost no data. The InnoDB sizes go to
    # mariadb-install-db too, so the server starts on the files as they were installed.
    innodb_args: tuple[str, ...] = ("--innodb-buffer-pool-size=16M", "--innodb-log-file-size=8M")
    server_args: tuple[str, ...] = ("--skip-name-resolve", "--skip-log-bin")

    def __init__(self, extra_args: Sequence[str] = (), *, host: str = "127.0.0.1",
                 port: int | None = None, startup_timeout: float = 30.0,
                 command_prefix: Sequence[str] = (), workdir: Path | None = None) -> None:
        self.host = host
        # Prepended to the mariadbd command line, e.g. `ip netns exec NS` (which execs, so
        # the process id stays mariadbd's and pause/resume/stop still reach it).
        self.command_prefix = list(command_prefix)
        # A port picked here can be taken before mariadbd binds it: the first start() then
        # picks another. A port the caller chose, or one a server already ran on, stays.
        self._may_move_port = port is None
        self.port = port or free_port(host)
        self.extra_args = list(extra_args)
        self.startup_timeout = startup_timeout
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="mysql-idle-mariadb-"))
        self.datadir = self.workdir / "data"
        self.socket_path = self.workdir / "mysqld.sock"
        # A private tmpdir: every mariadbd deletes the #sql* files in its tmpdir when it
        # starts, so servers sharing /tmp break each other's temporary tables (and
        # mariadb-install-db's bootstrap) when several run at once.
        self.tmpdir = self.workdir / "tmp"
        self.log_path = self.workdir / "error.log"
        self.pid_path = self.workdir / "mysqld.pid"
        self.process: subprocess.Popen[bytes] | None = None
        self.startup_seconds = 0.0
        self._owner = os.getpid()
        _live.add(self)

    def __repr__(self) -> str:
        pid = self.process.pid if self.process is not None else None
        return f"{type(self).__name__}(port={self.port}, pid={pid}, args={self.extra_args})"

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.destroy()

    # --- lifecycle -----------------------------------------------------------------------

    @property
    def pid(self) -> int:
        assert self.process is not None, "server not started"
        return self.process.pid

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def _install(self) -> None:
        install_datadir(self.datadir, self.tmpdir, self.innodb_args)

    def start(self) -> Self:
        """Install the datadir (the first time) and start the server; MariaDBUnavailable
        if it cannot."""
        if self.running:
            return self
        mariadbd, _ = binaries()
        if not (self.datadir / "mysql").is_dir():
            self._install()
        self.tmpdir.mkdir(parents=True, exist_ok=True)
        for attempt in range(5):
            try:
                self._launch(mariadbd)
                break
            except MariaDBUnavailable as error:
                if not self._may_move_port or attempt == 4 or "in use" not in str(error):
                    raise
                self.port = free_port(self.host)
        # restart() must come back where clients expect it.
        self._may_move_port = False
        return self

    def _command(self, mariadbd: str) -> list[str]:
        return [
            *self.command_prefix,
            mariadbd,
            "--no-defaults",  # must come first
            *_as_root(),
            f"--datadir={self.datadir}",
            f"--socket={self.socket_path}",
            f"--tmpdir={self.tmpdir}",
            f"--port={self.port}",
            f"--bind-address={self.host}",
            f"--pid-file={self.pid_path}",
            f"--log-error={self.log_path}",
            *self.innodb_args,
            *self.server_args,
            *self.extra_args,  # last: they override the defaults above
        ]

    def _launch(self, mariadbd: str) -> None:
        self.log_path.unlink(missing_ok=True)  # so log_tail() speaks of this start only
        started = time.monotonic()
        self.process = subprocess.Popen(
            self._command(mariadbd),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = started + self.startup_timeout
        while True:
            if self.process.poll() is not None:
                code = self.process.returncode
                self.process = None
                raise MariaDBUnavailable(
                    f"mariadbd exited with {code} while starting on port {self.port}:\n"
                    f"{self.log_tail()}"
                )
            try:
                self.connect(connect_timeout=1).close()
                break
            except pymysql.err.OperationalError:
                if time.monotonic() > deadline:
                    self._kill()
                    raise MariaDBUnavailable(
                        f"mariadbd did not accept connections within {self.startup_timeout}s"
                        f" on port {self.port}:\n{self.log_tail()}"
                    ) from None
                time.sleep(0.02)
        self.startup_seconds = time.monotonic() - started

    def stop(self, *, timeout: float = 15.0) -> None:
        """Shut down cleanly (SIGTERM, after SIGCONT in case it is paused), or kill after
        `timeout`."""
        process = self.process
        if process is None:
            return
        if process.poll() is None:
            self.resume()
            with contextlib.suppress(ProcessLookupError):
                process.terminate()
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)
        self.process = None

    def _kill(self) -> None:
        process = self.process
        if process is not None and process.poll() is None:
            process.kill()  # SIGKILL ends a stopped process too
            process.wait(10)
        self.process = None

    def restart(self) -> None:
        """Stop and start again on the same port and datadir."""
        self.stop()
        self.start()

    def pause(self, *, timeout: float = 5.0) -> None:
        """Freeze the server (SIGSTOP): it accepts TCP connections but answers nothing.
        Returns once every thread is stopped (delivery is asynchronous, and slow on a
        busy machine)."""
        if self.process is None:
            return
        pid = self.process.pid
        os.kill(pid, signal.SIGSTOP)
        deadline = time.monotonic() + timeout
        while not _all_threads_stopped(pid):
            if time.monotonic() > deadline:
                raise RuntimeError(f"mariadbd {pid} did not stop within {timeout}s")
            time.sleep(0.005)

    def resume(self) -> None:
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.process.pid, signal.SIGCONT)

    def destroy(self, *, kill: bool = False) -> None:
        """Stop the server and delete its directory. `kill` skips the clean shutdown: the
        data is thrown away anyway."""
        if kill:
            self._kill()
        else:
            self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)
        _live.discard(self)

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no error log)"
        return "\n".join(text.splitlines()[-lines:])

    # --- SQL -----------------------------------------------------------------------------

    def connect(self, **kwargs: Any) -> pymysql.connections.Connection[Any]:
        """A PyMySQL connection, root without password unless overridden, TLS off."""
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

    def execute(self, *statements: str, args: Sequence[object] | None = None
                ) -> list[tuple[Any, ...]]:
        """Run the statements as root on one fresh connection; return the last one's rows.
        `args` fill the %s placeholders of a single statement."""
        if args is not None and len(statements) != 1:
            raise TypeError("args go with exactly one statement")
        if not all(isinstance(statement, str) for statement in statements):
            raise TypeError("statements are strings; pass a statement's parameters as args=")
        connection = self.connect()
        try:
            rows: list[tuple[Any, ...]] = []
            with connection.cursor() as cursor:
                for statement in statements:
                    cursor.execute(statement, args)
                    rows = list(cursor.fetchall())
            return rows
        finally:
            connection.close()


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


# Servers not destroyed yet. start_new_session keeps Ctrl-C from reaching them, so one
# whose owner died outside its `finally` would otherwise run on with its directory.
_live: set[ThrowawayMariaDB] = set()


@atexit.register
def _destroy_leftovers() -> None:
    for server in list(_live):
        if server._owner == os.getpid():  # not a forked child's copy of the set
            with contextlib.suppress(Exception):
                server.destroy(kill=True)

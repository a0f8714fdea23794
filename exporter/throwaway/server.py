"""What every throwaway server shares: a private data directory, a free loopback port, and
a process that is started, paused, restarted and removed by its owner only.

The flavors (mariadb.py, mysql.py) say how to find the server binary, how to create a data
directory and which flags their server needs; the lifecycle and the SQL helpers are here.
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
from typing import Any, ClassVar, Self

import pymysql


class ServerUnavailable(RuntimeError):
    """The server is not installed, cannot create its data directory, or would not start."""


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def as_root() -> list[str]:
    # mariadbd and mysqld refuse to run as root unless told to; as anyone else they run as
    # that user.
    return ["--user=root"] if os.geteuid() == 0 else []


class ThrowawayServer:
    """One private server. `start()` it, use it, `destroy()` it (or use `with`).

    Subclasses set `flavor`, `product`, `unavailable`, the flag tuples, and implement
    `_executable()`, `_flavor_args()` and `_install()`.
    """

    flavor: ClassVar[str] = ""  # "mariadb" or "mysql", as in the tests' parameter ids
    product: ClassVar[str] = ""  # for messages: "MariaDB", "MySQL"
    process_name: ClassVar[str] = ""  # the server's process name, for messages
    unavailable: ClassVar[type[ServerUnavailable]] = ServerUnavailable
    # Flags after the common ones; `extra_args` (per instance) come last and win.
    innodb_args: tuple[str, ...] = ()
    server_args: tuple[str, ...] = ("--skip-name-resolve", "--skip-log-bin")

    def __init__(self, extra_args: Sequence[str] = (), *, host: str = "127.0.0.1",
                 port: int | None = None, startup_timeout: float = 30.0,
                 command_prefix: Sequence[str] = (), workdir: Path | None = None,
                 via_socket: bool = False) -> None:
        self.host = host
        # Prepended to the server's command line, e.g. `ip netns exec NS` (which execs, so
        # the process id stays the server's and pause/resume/stop still reach it).
        self.command_prefix = list(command_prefix)
        # connect() goes through the unix socket: for a server listening where the caller
        # cannot reach it over TCP (another network namespace).
        self.via_socket = via_socket
        # A port picked here can be taken before the server binds it: the first start()
        # then picks another. A port the caller chose, or one a server already ran on, stays.
        self._may_move_port = port is None
        self.port = port or free_port(host)
        self.extra_args = list(extra_args)
        self.startup_timeout = startup_timeout
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix=f"mysql-idle-{self.flavor}-"))
        self.datadir = self.workdir / "data"
        self.socket_path = self.workdir / "mysqld.sock"
        # A private tmpdir: a server deletes the #sql* files in its tmpdir when it starts,
        # so servers sharing /tmp break each other's temporary tables (and bootstraps) when
        # several run at once.
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

    # --- what a flavor provides -------------------------------------------------------------

    def _executable(self) -> list[str]:
        """The argv that runs the server binary (before its own flags); `unavailable` if it
        is not installed."""
        raise NotImplementedError

    def _flavor_args(self) -> list[str]:
        """Flags this flavor always needs, after the common ones."""
        return []

    def _install(self) -> None:
        """Create `self.datadir` with the system tables."""
        raise NotImplementedError

    # --- lifecycle -----------------------------------------------------------------------

    @property
    def pid(self) -> int:
        assert self.process is not None, "server not started"
        return self.process.pid

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self) -> Self:
        """Create the datadir (the first time) and start the server; `unavailable` if it
        cannot."""
        if self.running:
            return self
        executable = self._executable()
        if not (self.datadir / "mysql").is_dir():
            self._install()
        self.tmpdir.mkdir(parents=True, exist_ok=True)
        for attempt in range(5):
            try:
                self._launch(executable)
                break
            except ServerUnavailable as error:
                if not self._may_move_port or attempt == 4 or "in use" not in str(error):
                    raise
                self.port = free_port(self.host)
        # restart() must come back where clients expect it.
        self._may_move_port = False
        return self

    def _command(self, executable: Sequence[str]) -> list[str]:
        return [
            *self.command_prefix,
            *executable,
            "--no-defaults",  # must come first
            *as_root(),
            f"--datadir={self.datadir}",
            f"--socket={self.socket_path}",
            f"--tmpdir={self.tmpdir}",
            f"--port={self.port}",
            f"--bind-address={self.host}",
            f"--pid-file={self.pid_path}",
            f"--log-error={self.log_path}",
            *self._flavor_args(),
            *self.innodb_args,
            *self.server_args,
            *self.extra_args,  # last: they override the defaults above
        ]

    def _launch(self, executable: Sequence[str]) -> None:
        self.log_path.unlink(missing_ok=True)  # so log_tail() speaks of this start only
        started = time.monotonic()
        self.process = subprocess.Popen(
            self._command(executable),
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
                raise self.unavailable(
                    f"{self.process_name} exited with {code} while starting on port "
                    f"{self.port}:\n{self.log_tail()}"
                )
            try:
                self.connect(connect_timeout=1).close()
                break
            except pymysql.err.OperationalError:
                if time.monotonic() > deadline:
                    self._kill()
                    raise self.unavailable(
                        f"{self.process_name} did not accept connections within "
                        f"{self.startup_timeout}s on port {self.port}:\n{self.log_tail()}"
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
                raise RuntimeError(f"{self.process_name} {pid} did not stop within {timeout}s")
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
        if self.via_socket:
            options["unix_socket"] = str(self.socket_path)
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
_live: set[ThrowawayServer] = set()


@atexit.register
def _destroy_leftovers() -> None:
    for server in list(_live):
        if server._owner == os.getpid():  # not a forked child's copy of the set
            with contextlib.suppress(Exception):
                server.destroy(kill=True)

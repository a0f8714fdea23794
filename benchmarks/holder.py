"""A stand-in application for the scale benchmark: holds many sockets and obeys stdin.

    python -m benchmarks.holder NAME mysql HOST PORT USER BIND_IP
        (password from BENCH_PASSWORD; a HOST starting with / is the server's unix socket,
        as another host's sessions would be: not in this host's TCP tables)
    python -m benchmarks.holder NAME dummy

It renames itself NAME (prctl PR_SET_NAME), so the exporter's `process` label tells the
holders apart. Commands, one per line, each answered by one line:

    open COUNT [THREADS]   mysql: open COUNT more idle sessions (PyMySQL, from BIND_IP)
                           dummy: open COUNT more loopback connections to its own
                           listener (unrelated sockets: another port than the server's)
    busy COUNT             mysql: open COUNT sessions that each run SELECT SLEEP(3600)
    exit                   quit at once (the kernel closes every socket)

Answers: `ok TOTAL SECONDS` (SECONDS: wall time of this command) or `error TEXT`.
The dummy answers `port PORT` first, when its listener is ready.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import resource
import socket
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pymysql

PR_SET_NAME = 15


def set_name(name: str) -> None:
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).prctl(PR_SET_NAME, name.encode()[:15], 0, 0, 0)


def raise_nofile(limit: int = 1 << 20) -> int:
    """Raise the open-files limit: the hard limit too where allowed (CAP_SYS_RESOURCE),
    else the soft limit up to the hard one. Returns the soft limit in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    for wanted in ((max(soft, limit), max(hard, limit)), (hard, hard)):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, wanted)
            break
        except (ValueError, OSError):
            continue
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def reply(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


class MySQLHolder:
    def __init__(self, host: str, port: int, user: str, bind_ip: str) -> None:
        via_socket = host.startswith("/")
        self.options = {
            "host": None if via_socket else host,
            "unix_socket": host if via_socket else None,
            "port": port,
            "user": user,
            "password": os.environ.get("BENCH_PASSWORD", ""),
            "autocommit": True,
            "ssl_disabled": True,  # PyMySQL otherwise tries TLS: ~18 ms per connect
            "connect_timeout": 60,
            "bind_address": None if via_socket else bind_ip or None,
        }
        self.held: list[pymysql.connections.Connection[Any]] = []
        self.lock = threading.Lock()

    def _connect(self, _: int) -> None:
        last: Exception | None = None
        for attempt in range(5):
            try:
                connection = pymysql.connect(**self.options)  # type: ignore[call-overload]
            except pymysql.err.OperationalError as error:  # e.g. a full backlog: retry
                last = error
                time.sleep(0.05 * (attempt + 1))
                continue
            with self.lock:
                self.held.append(connection)
            return
        assert last is not None
        raise last

    def open(self, count: int, threads: int) -> int:
        with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
            list(pool.map(self._connect, range(count)))
        return len(self.held)

    def busy(self, count: int) -> int:
        started = threading.Barrier(count + 1)

        def run() -> None:
            connection = pymysql.connect(**self.options)  # type: ignore[call-overload]
            with self.lock:
                self.held.append(connection)
            started.wait()
            with contextlib.suppress(Exception), connection.cursor() as cursor:
                cursor.execute("SELECT SLEEP(3600)")

        for _ in range(count):
            threading.Thread(target=run, daemon=True).start()
        started.wait(timeout=60)
        time.sleep(0.2)  # let the statements reach the server
        return len(self.held)


class DummyHolder:
    """A listener on a free loopback port and connections to it from this process."""

    def __init__(self) -> None:
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(4096)
        self.port = int(self.listener.getsockname()[1])
        self.accepted: list[socket.socket] = []
        self.clients: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.accepted.append(conn)

    def open(self, count: int, threads: int) -> int:
        for _ in range(count):
            client = socket.create_connection(("127.0.0.1", self.port))
            self.clients.append(client)
        deadline = time.monotonic() + 30
        while len(self.accepted) < len(self.clients) and time.monotonic() < deadline:
            time.sleep(0.01)
        return len(self.clients)


def main(argv: list[str]) -> int:
    name, kind = argv[0], argv[1]
    set_name(name)
    raise_nofile()
    holder: MySQLHolder | DummyHolder
    if kind == "mysql":
        holder = MySQLHolder(argv[2], int(argv[3]), argv[4], argv[5] if len(argv) > 5 else "")
    elif kind == "dummy":
        holder = DummyHolder()
        reply(f"port {holder.port}")
    else:
        reply(f"error unknown kind {kind}")
        return 2
    for line in sys.stdin:
        words = line.split()
        if not words:
            continue
        started = time.perf_counter()
        try:
            if words[0] == "exit":
                break
            if words[0] == "open":
                total = holder.open(int(words[1]), int(words[2]) if len(words) > 2 else 16)
            elif words[0] == "busy" and isinstance(holder, MySQLHolder):
                total = holder.busy(int(words[1]))
            else:
                reply(f"error unknown command {words[0]}")
                continue
        except Exception as error:  # report, keep serving
            reply(f"error {type(error).__name__}: {str(error)[:200]}")
            continue
        reply(f"ok {total} {time.perf_counter() - started:.3f}")
    sys.stdout.flush()
    os._exit(0)  # no orderly close of thousands of sessions: the kernel does it


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

"""The demo's application: three connections, one of which idles into wait_timeout.

Run by `mysql-idle-exporter demo` as its own process, so the exporter sees a second
process owning sockets, just as it would beside a real application. It tells the demo
which local port is which connection, and when it finds the idle one dead, on stdout.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
import time
from typing import Any

import pymysql

PR_SET_PDEATHSIG = 1
PR_SET_NAME = 15


def _prctl(option: int, value: int | bytes) -> None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(option, value, 0, 0, 0)
    except (OSError, AttributeError):
        pass


def _connect(host: str, port: int) -> pymysql.connections.Connection[Any]:
    return pymysql.connect(
        host=host,
        port=port,
        user="worker",
        password=os.environ["DEMO_PASSWORD"],
        database="shop",
        autocommit=True,
        ssl_disabled=True,
    )


def _port(connection: pymysql.connections.Connection[Any]) -> int:
    return int(connection._sock.getsockname()[1])  # type: ignore[attr-defined]


def main(argv: list[str]) -> int:
    host, port, wait_timeout = argv[0], int(argv[1]), int(argv[2])
    # Ctrl-C reaches the whole foreground group: end quietly, the demo cleans up. And end
    # with the demo, however it ends.
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    _prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() == 1:
        return 0  # the demo is already gone
    # The exporter labels sockets with the owner's process name (comm).
    _prctl(PR_SET_NAME, b"demo-worker")
    daily = _connect(host, port)  # the daily job's connection: used once, then forgotten
    with daily.cursor() as cursor:
        cursor.execute("SELECT 1")
    report = _connect(host, port)  # a long report: running, never idle

    def run_report() -> None:
        try:
            with report.cursor() as cursor:
                cursor.execute("SELECT SLEEP(%s)", (wait_timeout * 100,))
        except pymysql.err.Error:
            pass

    threading.Thread(target=run_report, daemon=True).start()
    pool = _connect(host, port)  # a pool that pings well inside the timeout
    print(f"connections daily={_port(daily)} report={_port(report)} pool={_port(pool)}",
          flush=True)
    started = time.monotonic()
    tried = False
    while True:
        time.sleep(wait_timeout / 4)
        with pool.cursor() as cursor:
            cursor.execute("SELECT 1")
        if not tried and time.monotonic() - started > wait_timeout + 10:
            tried = True
            try:
                with daily.cursor() as cursor:
                    cursor.execute("SELECT 1")
                print("noticed the idle connection still works?!", flush=True)
            except pymysql.err.OperationalError as error:
                # Until this query the dead connection was held; the exporter saw it first.
                print(f"noticed the idle connection is dead: {error}", flush=True)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

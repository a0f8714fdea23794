"""The demo's application: three connections, one of which idles into wait_timeout.

Run by `mysql-idle-exporter demo` as its own process, so the exporter sees a second
process owning sockets, just as it would beside a real application.
"""

from __future__ import annotations

import ctypes
import os
import sys
import threading
import time
from typing import Any

import pymysql

PR_SET_NAME = 15


def _name_process(name: str) -> None:
    # The exporter labels sockets with the owner's process name (comm).
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_NAME, name.encode()[:15], 0, 0, 0)
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


def main(argv: list[str]) -> int:
    host, port, wait_timeout = argv[0], int(argv[1]), int(argv[2])
    _name_process("demo-worker")
    idle = _connect(host, port)  # the daily job's connection: used once, then forgotten
    with idle.cursor() as cursor:
        cursor.execute("SELECT 1")
    busy = _connect(host, port)  # a long report: running, never idle

    def report() -> None:
        try:
            with busy.cursor() as cursor:
                cursor.execute("SELECT SLEEP(%s)", (wait_timeout * 100,))
        except pymysql.err.Error:
            pass

    threading.Thread(target=report, daemon=True).start()
    healthy = _connect(host, port)  # a pool that pings well inside the timeout
    started = time.monotonic()
    tried = False
    while True:
        time.sleep(wait_timeout / 4)
        with healthy.cursor() as cursor:
            cursor.execute("SELECT 1")
        if not tried and time.monotonic() - started > wait_timeout + 10:
            tried = True
            try:
                with idle.cursor() as cursor:
                    cursor.execute("SELECT 1")
                print("worker: the idle connection still works?!", flush=True)
            except pymysql.err.OperationalError as error:
                # Until this query the dead connection was held; the exporter saw it first.
                print(f"worker: the idle connection is dead: {error}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

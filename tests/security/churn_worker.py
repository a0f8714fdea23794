"""An application with connection churn, for the soak test.

    python -m tests.security.churn_worker NAME HOST PORT USER SLOTS SECONDS SEED
    (password from WORKER_PASSWORD)

For SECONDS, each of SLOTS threads opens a session, holds it and closes it, again and
again: mostly short (1-3 s), some long (20-60 s). Half the long ones ping every 4 s and
live; the others idle past the server's wait_timeout, are dropped by the server while
still held, and find out on their next query. A few sessions run a short query first.
Then every churn session is closed, QUIET fresh sessions are opened and held, the line
`quiet PORT...` is printed, and the worker waits for `exit` (or the end of stdin: it never
outlives the test).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import random
import sys
import threading
import time
from collections import Counter

import pymysql

QUIET = 3
LOST = (2006, 2013, 2055, 0)


def connect(host: str, port: int, user: str) -> pymysql.connections.Connection:
    return pymysql.connect(host=host, port=port, user=user,
                           password=os.environ.get("WORKER_PASSWORD", ""), autocommit=True,
                           ssl_disabled=True, connect_timeout=5, read_timeout=30,
                           write_timeout=30)


def query(conn: pymysql.connections.Connection, sql: str) -> None:
    with conn.cursor() as cursor:
        cursor.execute(sql)
        cursor.fetchall()


def slot(host: str, port: int, user: str, deadline: float, rng: random.Random,
         stats: Counter[str], lock: threading.Lock) -> None:
    def note(what: str) -> None:
        with lock:
            stats[what] += 1

    while time.monotonic() < deadline:
        try:
            conn = connect(host, port, user)
        except pymysql.err.MySQLError:
            note("connect_errors")
            time.sleep(0.5)
            continue
        note("sessions")
        kind = rng.random()
        try:
            if rng.random() < 0.1:
                query(conn, "SELECT SLEEP(0.3)")
            else:
                query(conn, "SELECT 1")
            if kind < 0.75:
                hold, ping = rng.uniform(1, 3), None
            elif kind < 0.875:
                hold, ping = rng.uniform(20, 60), 4.0
            else:
                hold, ping = rng.uniform(20, 60), None
            ends = min(time.monotonic() + hold, deadline)
            last = time.monotonic()
            while time.monotonic() < ends:
                time.sleep(0.2)
                if ping is not None and time.monotonic() - last >= ping:
                    query(conn, "SELECT 1")
                    last = time.monotonic()
            if time.monotonic() < deadline:
                query(conn, "SELECT 1")  # a dropped session fails here
        except pymysql.err.MySQLError as error:
            note("dropped_seen" if error.args and error.args[0] in LOST else "errors")
        finally:
            with contextlib.suppress(Exception):  # closing a dead connection
                conn.close()


def main(argv: list[str]) -> int:
    name, host, port, user = argv[0], argv[1], int(argv[2]), argv[3]
    slots, seconds, seed = int(argv[4]), float(argv[5]), int(argv[6])
    ctypes.CDLL(None).prctl(15, name.encode()[:15], 0, 0, 0)

    def watchdog() -> None:  # the test went away: so do we
        for line in sys.stdin:
            if line.strip() == "exit":
                break
        os._exit(0)

    threading.Thread(target=watchdog, daemon=True).start()
    deadline = time.monotonic() + seconds
    stats: Counter[str] = Counter()
    lock = threading.Lock()
    threads = [
        threading.Thread(target=slot, args=(host, port, user, deadline,
                                            random.Random(seed * 1000 + i), stats, lock))
        for i in range(slots)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    quiet = [connect(host, port, user) for _ in range(QUIET)]
    for conn in quiet:
        query(conn, "SELECT 1")
    ports = " ".join(str(conn._sock.getsockname()[1]) for conn in quiet)  # type: ignore[union-attr]
    counts = " ".join(f"{key}={value}" for key, value in sorted(stats.items()))
    print(f"quiet {ports} | {counts}", flush=True)
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

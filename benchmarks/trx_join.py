"""What joining information_schema.INNODB_TRX costs the exporter's one read.

    .venv/bin/python -m benchmarks.trx_join [--sessions 1000,5000] [--transactions 50]
        [--flavor mariadb] [--runs 30]

Starts a throwaway server, holds SESSIONS idle sessions (this process, PyMySQL threads) of
which TRANSACTIONS sit inside an open write transaction (one row each), and times the
exporter's read statement (sessions/compact.py, the whole processlist: the fleet
exporter's read, the worst case) with and without the INNODB_TRX join (the join is what a
user with PROCESS gets; without PROCESS the columns are NULL). Runs alternate, so both see
the same machine; medians, and the join's share, per source (information_schema, and
performance_schema.threads where the server has the performance schema on).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import statistics
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pymysql

from exporter.model import Flavor
from exporter.sessions import compact
from exporter.sessions.sources import Capabilities, Source
from exporter.throwaway import FLAVORS

PASSWORD = "bench-trx"


def hold(port: int, count: int, transactions: int) -> list[Any]:
    held: list[Any] = []
    lock = threading.Lock()

    def connect(index: int) -> None:
        for attempt in range(5):
            try:
                conn = pymysql.connect(host="127.0.0.1", port=port, user="app",
                                       password=PASSWORD, autocommit=True, ssl_disabled=True,
                                       connect_timeout=60)
                break
            except pymysql.err.OperationalError:
                time.sleep(0.05 * (attempt + 1))
        else:
            raise RuntimeError("cannot connect")
        if index < transactions:
            with conn.cursor() as cursor:
                cursor.execute("START TRANSACTION")
                cursor.execute("UPDATE bench.t SET v = v + 1 WHERE id = %s", (index,))
        with lock:
            held.append(conn)

    with ThreadPoolExecutor(max_workers=16) as pool:
        list(pool.map(connect, range(count)))
    return held


def timed(conn: Any, sql: str) -> float:
    started = time.perf_counter()
    with conn.cursor() as cursor:
        cursor.execute(sql)
        cursor.fetchall()
    return time.perf_counter() - started


def measure(conn: Any, flavor: Flavor, source: Source, runs: int) -> tuple[float, float]:
    caps = Capabilities(process=True, performance_schema=True,
                        ps_tables=frozenset({"threads", "socket_instances"}), ps_sockets=True)
    with_join = compact.compact_query(source, None, flavor=flavor, caps=caps).sql
    without = compact.compact_query(source, None, flavor=flavor,
                                    caps=dataclasses.replace(caps, process=False)).sql
    joined: list[float] = []
    plain: list[float] = []
    for _ in range(3):  # warm up both
        timed(conn, with_join)
        timed(conn, without)
    for _ in range(runs):
        joined.append(timed(conn, with_join))
        plain.append(timed(conn, without))
    return statistics.median(plain), statistics.median(joined)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sessions", default="1000,5000")
    parser.add_argument("--transactions", type=int, default=50)
    parser.add_argument("--flavor", default="mariadb", choices=sorted(FLAVORS))
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args(argv)
    flavor = Flavor(args.flavor)
    levels = [int(n) for n in args.sessions.split(",")]
    extra = [f"--max-connections={max(levels) + 200}", "--performance-schema=ON",
             "--innodb-buffer-pool-size=64M"]
    if flavor is Flavor.MARIADB:
        extra += ["--thread-handling=pool-of-threads", "--open-files-limit=65535"]
    print(f"# {flavor.value}, {args.transactions} sessions in an open write transaction, "
          f"median of {args.runs} whole-processlist reads (ms)")
    print("| sessions | source | without INNODB_TRX | with it | the join adds |")
    print("|---|---|---|---|---|")
    with FLAVORS[flavor.value](extra) as server:
        server.execute(
            f"CREATE USER 'app'@'%' IDENTIFIED BY '{PASSWORD}'",
            "CREATE DATABASE bench", "GRANT ALL ON bench.* TO 'app'@'%'",
            "CREATE TABLE bench.t (id INT PRIMARY KEY, v INT) ENGINE=InnoDB",
        )
        server.execute("INSERT INTO bench.t WITH RECURSIVE s (n) AS (SELECT 0 UNION ALL "
                       "SELECT n + 1 FROM s WHERE n < 999) SELECT n, 0 FROM s")
        root = server.connect()
        with root.cursor() as cursor:
            cursor.execute(f"SET SESSION group_concat_max_len = {compact.GROUP_CONCAT_MAX_LEN}")
        held: list[Any] = []
        try:
            for level in levels:
                held += hold(server.port, level - len(held),
                             max(args.transactions - len(held), 0))
                sources = [Source.INFORMATION_SCHEMA, Source.PS_THREADS]
                if flavor is Flavor.MYSQL:
                    sources = [Source.INFORMATION_SCHEMA, Source.PS_PROCESSLIST]
                for source in sources:
                    plain, joined = measure(root, flavor, source, args.runs)
                    print(f"| {len(held):,} | {source.value} | {plain * 1000:.1f} | "
                          f"{joined * 1000:.1f} | {(joined - plain) * 1000:+.1f} "
                          f"({(joined / plain - 1) * 100:+.0f} %) |", flush=True)
        finally:
            for conn in held:
                with contextlib.suppress(Exception):
                    conn.close()
            root.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

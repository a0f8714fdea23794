"""Fleet scale: what one database pays for many watchers.

    .venv/bin/python -m benchmarks.fleet cost --sessions 100,1000,10000 --rounds 20
    .venv/bin/python -m benchmarks.fleet sim --watchers 40 --server-sessions 10000 \\
        --performance-schema off

`cost`: the database's own accounting (performance_schema statement digests) of one
watcher's read at N server sessions, 10 of them the watcher's: the whole processlist
(information_schema, as a watcher without a filter or a fleet exporter reads it), the
exporter's filtered reads (information_schema and performance_schema), the whole
performance_schema read a fleet exporter makes (and, for reference, the same query without
the hash join), plus the client-observed time and the server process's CPU per read.

`sim`: many watchers on this machine. One server namespace with a throwaway MariaDB, one
network namespace per watcher (its own address, 10 idle sessions, its own exporter process),
and one more namespace for thousands of other sessions and for two probes: a `SELECT 1`
loop on one connection and a login loop (connect, authenticate, close). Every watcher
namespace runs two exporters side by side: one reading the server directly, one fleet
sidecar asking a standalone `--fleet.serve` exporter in the server namespace. Phases
(default `none,idle,direct,fleet,idle,direct,fleet,idle`): no exporter process at all;
exporters running but not scraped (they send the database nothing); the direct exporters
scraped; the sidecars scraped. The benchmark scrapes every exporter of the phase every 15 s,
staggered like Prometheus does; alternating phases without starting processes in between
keeps slow drifts of a shared machine out of the comparison. mariadbd alone is pinned to
CPU 0; everything else (exporters, this driver, the session holders, the probes) to CPU 1,
the probes at real-time priority (SCHED_FIFO 10) so that they answer at once whatever the
exporters do: on a 2-core machine this keeps the exporters' own CPU, which in a real fleet
is spent on other nodes, out of the server's and the probes' way, so that what changes
between phases is the server's work.

Runs as root (network namespaces). Only loopback and the namespaces it creates (private
10.x addresses inside them) are used; every process, namespace and data directory it creates
is removed on exit, on error, on Ctrl-C and on SIGTERM. Internal subcommands: `hold`,
`probe`.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import datetime as dt
import http.client
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pymysql

from benchmarks.scale import Proc, cpu_seconds
from exporter.deadline import Deadline
from exporter.sessions import sources
from exporter.sessions.credentials import Credentials
from exporter.sessions.reader import SessionReader
from exporter.throwaway import ThrowawayMariaDB, free_port

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results"
APP_USER, APP_PASSWORD = "app", "app-password"
EXPORTER_USER, EXPORTER_PASSWORD = "idle_exporter", "exporter-password"
WATCHER_SESSIONS = 10
WATCHER_IP = "127.0.0.100"
HOLDER_IPS = ("127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5")
PR_SET_NAME, PR_SET_PDEATHSIG = 15, 1

# Statements a watcher's or the fleet exporter's read sends (exporter/sessions/compact.py).
STATEMENTS_PER_READ = 1


class Stop(Exception):
    """SIGTERM or SIGHUP: unwind like Ctrl-C, so everything started is stopped."""


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def set_name(name: str) -> None:
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).prctl(PR_SET_NAME, name.encode()[:15], 0, 0, 0)


def raise_nofile() -> int:
    import resource

    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def rss_mib(pid: int) -> float:
    with contextlib.suppress(OSError), open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def pct(values: Sequence[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def ms(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value * 1000:.{digits}f}"


def loadavg() -> str:
    return Path("/proc/loadavg").read_text().split(" ", 3)[0]


# --- child processes -------------------------------------------------------------------


class Holder(Proc):
    """`python -m benchmarks.fleet hold`: idle sessions from one source address."""

    def __init__(self, name: str, prefix: Sequence[str], host: str, port: int, bind_ip: str,
                 count: int, logdir: Path) -> None:
        super().__init__(name, [*prefix, sys.executable, "-m", "benchmarks.fleet", "hold", name,
                                host, str(port), bind_ip, str(count)], logdir,
                         env={"BENCH_PASSWORD": APP_PASSWORD}, stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE)
        self.count = count

    def wait_ready(self, timeout: float = 300) -> None:
        assert self.popen.stdout is not None
        line = self.popen.stdout.readline().strip()
        if not line.startswith("ready"):
            raise RuntimeError(f"{self.name}: {line or 'exited'}: {self.log_tail()}")


def hold_main(argv: list[str]) -> int:
    """hold NAME HOST PORT BIND_IP COUNT: open COUNT idle sessions, print `ready`, hold them
    until stdin closes."""
    name, host, port, bind_ip, count = argv[0], argv[1], int(argv[2]), argv[3], int(argv[4])
    set_name(name)
    raise_nofile()
    held: list[Any] = []
    lock = threading.Lock()

    def connect(_: int) -> None:
        for attempt in range(8):
            try:
                connection = pymysql.connect(
                    host=host, port=port, user=APP_USER,
                    password=os.environ.get("BENCH_PASSWORD", ""), autocommit=True,
                    ssl_disabled=True, connect_timeout=60, bind_address=bind_ip or None)
            except pymysql.err.OperationalError:
                time.sleep(0.05 * (attempt + 1))
                continue
            with lock:
                held.append(connection)
            return
        raise RuntimeError("cannot connect")

    try:
        with ThreadPoolExecutor(max_workers=32) as pool:
            list(pool.map(connect, range(count)))
    except Exception as error:
        print(f"error {type(error).__name__}: {error}", flush=True)
        return 1
    print(f"ready {len(held)}", flush=True)
    sys.stdin.read()
    os._exit(0)  # the kernel closes every socket


def probe_main(argv: list[str]) -> int:
    """probe KIND HOST PORT RATE SECONDS OUT: KIND `select` runs SELECT 1 on one connection,
    `login` connects, authenticates and closes; RATE per second on a fixed schedule. Writes
    `monotonic_start latency_seconds ok` lines to OUT."""
    kind, host, port, rate, seconds, out = (argv[0], argv[1], int(argv[2]), float(argv[3]),
                                            float(argv[4]), argv[5])
    set_name(f"probe-{kind}")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    options: dict[str, Any] = {"host": host, "port": port, "user": APP_USER,
                               "password": os.environ.get("BENCH_PASSWORD", ""),
                               "ssl_disabled": True, "autocommit": True, "connect_timeout": 10}
    sink = open(out, "w", buffering=1)  # noqa: SIM115 (line-buffered: read while running)
    connection = pymysql.connect(**options) if kind == "select" else None
    started = time.monotonic()
    k = 0
    while not stop.is_set() and time.monotonic() - started < seconds:
        due = started + k / rate
        k += 1
        delay = due - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        t0 = time.monotonic()
        ok = 1
        try:
            if kind == "select":
                assert connection is not None
                with connection.cursor() as cursor:
                    cursor.execute("SELECT 1")
                    cursor.fetchall()
            else:
                pymysql.connect(**options).close()
        except pymysql.err.Error:
            ok = 0
            if kind == "select":
                with contextlib.suppress(pymysql.err.Error):
                    connection = pymysql.connect(**options)
        sink.write(f"{t0:.6f} {time.monotonic() - t0:.6f} {ok}\n")
    sink.close()
    return 0


# --- the database ----------------------------------------------------------------------


def server_args(max_connections: int, performance_schema: bool, nofile: int) -> list[str]:
    return [
        f"--max-connections={max_connections}",
        "--thread-handling=pool-of-threads",
        f"--open-files-limit={nofile}",
        "--table-open-cache=64",
        f"--performance-schema={'ON' if performance_schema else 'OFF'}",
        "--userstat=ON",  # information_schema.USER_STATISTICS: the server's per-user account
    ]


def create_users(execute: Callable[..., Any]) -> None:
    execute(
        f"CREATE USER '{APP_USER}'@'%' IDENTIFIED BY '{APP_PASSWORD}'",
        f"CREATE USER '{EXPORTER_USER}'@'%' IDENTIFIED BY '{EXPORTER_PASSWORD}'",
        f"GRANT PROCESS ON *.* TO '{EXPORTER_USER}'@'%'",
        f"GRANT SELECT ON performance_schema.* TO '{EXPORTER_USER}'@'%'",
    )


USERSTAT_SQL = (
    "SELECT SELECT_COMMANDS, CPU_TIME, BUSY_TIME, ROWS_READ, ROWS_SENT"
    f" FROM information_schema.USER_STATISTICS WHERE USER = '{EXPORTER_USER}'"
)
USERSTAT_FIELDS = ("select_commands", "cpu_seconds", "busy_seconds", "rows_read", "rows_sent")


def userstat(rows: list[tuple[Any, ...]]) -> dict[str, float]:
    """The server's own account of one user (MariaDB --userstat): zeros before any."""
    return dict(zip(USERSTAT_FIELDS, (float(v) for v in rows[0]), strict=True)) if rows else {
        name: 0.0 for name in USERSTAT_FIELDS}


def userstat_delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {name: after[name] - before[name] for name in USERSTAT_FIELDS}


def query(connection: Any, sql: str, args: Sequence[object] | None = None
          ) -> list[tuple[Any, ...]]:
    with connection.cursor() as cursor:
        cursor.execute(sql, args)
        return list(cursor.fetchall())


# --- cost: one read, by the server's own accounting ------------------------------------


DIGEST_SQL = (
    "SELECT DIGEST_TEXT, COUNT_STAR, SUM_TIMER_WAIT, SUM_LOCK_TIME, SUM_ROWS_EXAMINED,"
    " SUM_ROWS_SENT FROM performance_schema.events_statements_summary_by_digest"
    " WHERE COUNT_STAR > 0"
)


MIN_SECONDS = 3.0


@dataclass
class Variant:
    name: str
    prefer: str
    client_ips: frozenset[str] | None
    raw_sql: str | None = None  # run this instead of a SessionReader read
    max_seconds: float | None = None


def digest_kind(text: str) -> str | None:
    upper = text.upper()
    if any(word in upper for word in ("EVENTS_STATEMENTS_SUMMARY", "TRUNCATE",
                                      "USER_STATISTICS")):
        return None  # the accounting itself
    if "PROCESSLIST" in upper or "SOCKET_INSTANCES" in upper:
        return "processlist"
    if "WAIT_TIMEOUT" in upper:
        return "variables"
    return "other"


def measure_variant(db: ThrowawayMariaDB, accounting: Any, variant: Variant, rounds: int
                    ) -> dict[str, Any]:
    reader = None
    raw = None
    if variant.raw_sql is None:
        reader = SessionReader("bench", "127.0.0.1", db.port,
                               Credentials(EXPORTER_USER, EXPORTER_PASSWORD),
                               prefer=variant.prefer)  # type: ignore[arg-type]
        warm = reader.read(variant.client_ips, Deadline.after(120))
        if not warm.ok:
            raise RuntimeError(f"{variant.name}: {warm.error}")
    else:
        raw = pymysql.connect(host="127.0.0.1", port=db.port, user=EXPORTER_USER,
                              password=EXPORTER_PASSWORD, ssl_disabled=True, autocommit=True)
    query(accounting, "TRUNCATE TABLE performance_schema.events_statements_summary_by_digest")
    account_before = userstat(query(accounting, USERSTAT_SQL))
    cpu_before = cpu_seconds(db.pid)
    walls: list[float] = []
    phases: list[float] = []
    rows = 0
    source = ""
    started = time.perf_counter()
    try:
        for _ in range(rounds):
            t0 = time.perf_counter()
            if reader is not None:
                view = reader.read(variant.client_ips, Deadline.after(120))
                if not view.ok:
                    raise RuntimeError(f"{variant.name}: {view.error}")
                phases.append(view.durations.get("processlist", 0.0))
                rows, source = len(view.sessions), view.source
            else:
                assert variant.raw_sql is not None
                rows = len(query(raw, variant.raw_sql))
                source = "performance_schema.threads (no hash join)"
            walls.append(time.perf_counter() - t0)
            if variant.max_seconds and time.perf_counter() - started > variant.max_seconds:
                break
        # At least MIN_SECONDS of reads: /proc counts CPU in 10 ms ticks.
        while variant.raw_sql is None and time.perf_counter() - started < MIN_SECONDS and (
                len(walls) < 5000):
            t0 = time.perf_counter()
            assert reader is not None
            view = reader.read(variant.client_ips, Deadline.after(120))
            if not view.ok:
                raise RuntimeError(f"{variant.name}: {view.error}")
            phases.append(view.durations.get("processlist", 0.0))
            walls.append(time.perf_counter() - t0)
    finally:
        if reader is not None:
            reader.close()
        if raw is not None:
            raw.close()
    cpu = cpu_seconds(db.pid) - cpu_before
    account = userstat_delta(account_before,
                             userstat(query(accounting, USERSTAT_SQL)))
    reads = len(walls)
    by_kind: dict[str, dict[str, float]] = {}
    for text, count, timer, lock, examined, sent in query(accounting, DIGEST_SQL):
        kind = digest_kind(text or "")
        if kind is None:
            continue
        entry = by_kind.setdefault(kind, {"count": 0, "timer_ps": 0, "lock_ps": 0,
                                          "examined": 0, "sent": 0})
        entry["count"] += int(count)
        entry["timer_ps"] += int(timer)
        entry["lock_ps"] += int(lock)
        entry["examined"] += int(examined)
        entry["sent"] += int(sent)
    pl = by_kind.get("processlist", {})
    var = by_kind.get("variables", {})
    statements = sum(int(e["count"]) for e in by_kind.values())
    return {
        "variant": variant.name,
        "source": source,
        "reads": reads,
        "rows_returned": rows,
        "statements_per_read": statements / reads if reads else None,
        "server_processlist_ms": pl.get("timer_ps", 0) / 1e9 / reads if reads else None,
        "server_variables_ms": var.get("timer_ps", 0) / 1e9 / reads if reads else None,
        "server_lock_ms": pl.get("lock_ps", 0) / 1e9 / reads if reads else None,
        "rows_examined": pl.get("examined", 0) / reads if reads else None,
        "rows_sent": pl.get("sent", 0) / reads if reads else None,
        "server_cpu_ms": cpu * 1000 / reads if reads else None,
        "userstat_cpu_ms": account["cpu_seconds"] * 1000 / reads if reads else None,
        "userstat_rows_read": account["rows_read"] / reads if reads else None,
        "client_read_ms": statistics.median(walls) * 1000 if walls else None,
        "client_processlist_ms": statistics.median(phases) * 1000 if phases else None,
        "digests": by_kind,
    }


def fleet_http_cost(db: ThrowawayMariaDB, logdir: Path, requests: int) -> dict[str, Any]:
    """A standalone --fleet.serve exporter answering one sidecar's filtered request from its
    cached whole read: the exporter's cost per sidecar request (the database pays nothing)."""
    port = free_port()
    proc = Proc("fleet-standalone", [
        sys.executable, "-m", "exporter", f"--mysql.address=127.0.0.1:{db.port}",
        f"--mysql.user={EXPORTER_USER}", "--fleet.serve", "--fleet.allow-unauthenticated",
        "--server.interval=300s",
        f"--web.listen-address=127.0.0.1:{port}"], logdir,
        env={"MYSQL_IDLE_EXPORTER_PASSWORD": EXPORTER_PASSWORD})
    path = (f"/fleet/sessions?target=127.0.0.1:{db.port}&client_ip={WATCHER_IP}")
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                status, _ = http_get("127.0.0.1", port, "/healthz", 2)
                if status == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline or not proc.alive():
                raise RuntimeError(f"fleet exporter did not start: {proc.log_tail()}")
            time.sleep(0.1)
        t0 = time.perf_counter()
        status, body = http_get("127.0.0.1", port, path, 120)  # the whole read, then cached
        first = time.perf_counter() - t0
        assert status == 200, body[:200]
        sessions = len(json.loads(body)["sessions"])
        cpu_before = cpu_seconds(proc.pid)
        walls: list[float] = []
        began = time.perf_counter()
        while len(walls) < requests or time.perf_counter() - began < MIN_SECONDS:
            t0 = time.perf_counter()
            status, body = http_get("127.0.0.1", port, path, 30)
            walls.append(time.perf_counter() - t0)
            assert status == 200
        cpu = cpu_seconds(proc.pid) - cpu_before
        requests = len(walls)
    finally:
        proc.stop()
    return {"first_request_ms": first * 1000, "sessions_returned": sessions,
            "request_ms_p50": statistics.median(walls) * 1000,
            "exporter_cpu_ms_per_request": cpu * 1000 / requests}


def http_get(host: str, port: int, path: str, timeout: float) -> tuple[int, str]:
    connection = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.read().decode()
    finally:
        connection.close()


def run_cost(args: argparse.Namespace) -> dict[str, Any]:
    levels = sorted(int(n) for n in args.sessions.split(","))
    nofile = raise_nofile()
    logdir = Path(tempfile.mkdtemp(prefix="fleet-cost-"))
    db = ThrowawayMariaDB(server_args(max(levels) + 500, True, nofile))
    holders: list[Holder] = []
    watcher: Holder | None = None
    results: list[dict[str, Any]] = []
    ps_filtered = sources.processlist_query(sources.Source.PS_THREADS, frozenset({WATCHER_IP}))
    ps_whole = sources.processlist_query(sources.Source.PS_THREADS, None)
    no_hash = ps_whole.sql.removeprefix(sources.MARIADB_HASH_JOIN)
    try:
        db.start()
        create_users(db.execute)
        accounting = db.connect()
        watcher = Holder("bench-watcher", [], "127.0.0.1", db.port, WATCHER_IP,
                         WATCHER_SESSIONS, logdir)
        watcher.wait_ready()
        held = 0
        for n in levels:
            more = n - WATCHER_SESSIONS - held
            started = time.monotonic()
            batch = []
            for i, ip in enumerate(HOLDER_IPS):
                count = more // len(HOLDER_IPS) + (1 if i < more % len(HOLDER_IPS) else 0)
                if count:
                    holder = Holder(f"bench-other-{len(holders)}", [], "127.0.0.1", db.port,
                                    ip, count, logdir)
                    holders.append(holder)
                    batch.append(holder)
            for holder in batch:
                holder.wait_ready()
            held += more
            total = query(accounting, "SELECT COUNT(*) FROM information_schema.PROCESSLIST")[0][0]
            log(f"{n} sessions ({total} in the processlist) in "
                f"{time.monotonic() - started:.1f} s; load {loadavg()}")
            variants = [
                Variant("whole information_schema (unfiltered watcher)", "information_schema",
                        None),
                Variant("filtered information_schema", "information_schema",
                        frozenset({WATCHER_IP})),
                Variant("filtered performance_schema", "performance_schema",
                        frozenset({WATCHER_IP})),
                Variant("whole performance_schema (fleet exporter's read)",
                        "performance_schema", None),
                Variant("whole performance_schema without the hash join (before the fix)",
                        "performance_schema", None, raw_sql=no_hash, max_seconds=10),
            ]
            level: dict[str, Any] = {"sessions": n, "processlist_rows": total,
                                     "load_start": loadavg(), "variants": []}
            for variant in variants:
                rounds = args.rounds if variant.raw_sql is None else max(2, args.rounds // 4)
                result = measure_variant(db, accounting, variant, rounds)
                log(f"  {variant.name}: server {result['server_processlist_ms']:.2f} ms, "
                    f"examined {result['rows_examined']:.0f}, sent {result['rows_sent']:.0f}, "
                    f"server CPU {result['server_cpu_ms']:.2f} ms/read (userstat "
                    f"{result['userstat_cpu_ms']:.2f}), client "
                    f"{result['client_read_ms']:.1f} ms ({result['reads']} reads)")
                level["variants"].append(result)
            level["fleet_http"] = fleet_http_cost(db, logdir, args.rounds)
            log(f"  fleet exporter answer: {level['fleet_http']}")
            level["load_end"] = loadavg()
            results.append(level)
        accounting.close()
        # Sanity: the filtered queries' digests with their plans.
        return {"levels": results, "ps_filtered_sql": ps_filtered.sql,
                "ps_whole_sql": ps_whole.sql}
    finally:
        for holder in [*holders, *([watcher] if watcher is not None else [])]:
            holder.stop()
        db.destroy()


def print_cost(report: dict[str, Any]) -> None:
    print("\n| sessions | read | statements/read | server time ms (processlist + variables) | "
          "rows examined | rows sent | mariadbd CPU ms/read | userstat CPU ms/read | "
          "client ms/read |")
    print("|---|---|---|---|---|---|---|---|---|")
    for level in report["levels"]:
        n = level["sessions"]
        for v in level["variants"]:
            print(f"| {n:,} | {v['variant']} | {v['statements_per_read']:.1f} | "
                  f"{v['server_processlist_ms']:.3f} + {v['server_variables_ms']:.3f} | "
                  f"{v['rows_examined']:,.0f} | {v['rows_sent']:,.0f} | "
                  f"{v['server_cpu_ms']:.2f} | {v['userstat_cpu_ms']:.2f} | "
                  f"{v['client_read_ms']:.1f} |")
    print("\n| sessions | fleet: server ms per whole read (PS / IS) | watchers sharing (N/10) | "
          "per watcher per read ms (PS / IS) | fleet exporter CPU per sidecar answer ms |")
    print("|---|---|---|---|---|")
    for level in report["levels"]:
        n = level["sessions"]
        by = {v["variant"]: v for v in level["variants"]}
        ps = by["whole performance_schema (fleet exporter's read)"]["server_processlist_ms"]
        is_ = by["whole information_schema (unfiltered watcher)"]["server_processlist_ms"]
        watchers = max(1, n // WATCHER_SESSIONS)
        http = level["fleet_http"]
        print(f"| {n:,} | {ps:.3f} / {is_:.3f} | {watchers:,} | {ps / watchers:.4f} / "
              f"{is_ / watchers:.4f} | {http['exporter_cpu_ms_per_request']:.2f} |")


# --- sim: many watchers in namespaces ---------------------------------------------------


@dataclass
class Scrape:
    at: float
    seconds: float
    status: int
    reads: float | None = None
    up: float | None = None
    idle: float | None = None
    phantom: float | None = None


@dataclass
class Watcher:
    index: int
    ns: str
    scrapes: list[Scrape] = field(default_factory=list)


def metric_value(body: str, prefix: str) -> float | None:
    total = None
    for line in body.splitlines():
        if line.startswith(prefix):
            total = (total or 0.0) + float(line.rsplit(" ", 1)[1])
    return total


def scrape_in(ns_join: Callable[[str], None], watcher: Watcher, port: int, stop: threading.Event,
              schedule: Callable[[], Iterator[float]]) -> None:
    """Thread body: join the watcher's namespace, then scrape at the scheduled times."""
    ns_join(watcher.ns)
    for due in schedule():
        delay = due - time.monotonic()
        if delay > 0 and stop.wait(delay):
            return
        if stop.is_set():
            return
        t0 = time.monotonic()
        try:
            status, body = http_get("127.0.0.1", port, "/metrics", 14)
        except OSError:
            watcher.scrapes.append(Scrape(t0, time.monotonic() - t0, 0))
            continue
        watcher.scrapes.append(Scrape(
            t0, time.monotonic() - t0, status,
            reads=metric_value(body, "mysql_idle_server_reads_total{"),
            up=metric_value(body, "mysql_idle_up{"),
            idle=metric_value(body, 'mysql_idle_sessions{process="bench-app",state="idle"'),
            phantom=metric_value(body, 'mysql_idle_sessions{process="bench-app",state="phantom"'),
        ))


class Scraper:
    """One thread per watcher, each inside its namespace, scraping every `every` seconds at
    its own offset (Prometheus spreads targets over the interval the same way)."""

    def __init__(self, ns_join: Callable[[str], None], watchers: list[Watcher], port: int,
                 every: float) -> None:
        self.stop_event = threading.Event()
        self.threads = []
        start = time.monotonic() + 1.0
        count = len(watchers)
        for watcher in watchers:
            offset = watcher.index * every / count

            def schedule(offset: float = offset) -> Iterator[float]:
                k = 0
                while True:
                    yield start + offset + k * every
                    k += 1

            thread = threading.Thread(target=scrape_in, daemon=True, args=(
                ns_join, watcher, port, self.stop_event, schedule))
            thread.start()
            self.threads.append(thread)

    def stop(self) -> None:
        self.stop_event.set()
        for thread in self.threads:
            thread.join(timeout=20)


def wait_healthy(ns_join: Callable[[str], None], ns: str, host: str, port: int, proc: Proc,
                 timeout: float) -> None:
    def run() -> None:
        ns_join(ns)
        deadline = time.monotonic() + timeout
        while True:
            with contextlib.suppress(OSError):
                if http_get(host, port, "/healthz", 2)[0] == 200:
                    return
            if not proc.alive() or time.monotonic() > deadline:
                raise RuntimeError(f"{proc.name} did not start: {proc.log_tail()}")
            time.sleep(0.2)

    error: list[BaseException] = []

    def guarded() -> None:
        try:
            run()
        except BaseException as exc:
            error.append(exc)

    thread = threading.Thread(target=guarded, daemon=True)
    thread.start()
    thread.join()
    if error:
        raise error[0]


def summarise_latency(path: Path, start: float, end: float) -> dict[str, Any]:
    values, errors = [], 0
    with contextlib.suppress(OSError):
        for line in path.read_text().splitlines():
            t, latency, ok = line.split()
            if start <= float(t) < end:
                if ok == "1":
                    values.append(float(latency))
                else:
                    errors += 1
    return {"n": len(values), "errors": errors, "p50": pct(values, 50), "p90": pct(values, 90),
            "p99": pct(values, 99), "p999": pct(values, 99.9),
            "max": max(values) if values else None,
            "mean": statistics.fmean(values) if values else None,
            "over_5ms": sum(v > 0.005 for v in values) / len(values) if values else None}


def watch_for(pattern: str, stop: threading.Event) -> None:
    """Thread body: if a process matching `pattern` (another benchmark) starts, interrupt
    this run (SIGTERM to ourselves: everything unwinds and is stopped), so that neither
    distorts the other."""
    while not stop.wait(5):
        found = subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True)
        if found.stdout.strip():
            log(f"another benchmark started ({pattern}): stopping this run")
            os.kill(os.getpid(), signal.SIGTERM)
            return


def run_sim(args: argparse.Namespace) -> dict[str, Any]:
    from tests.support.netns import NetnsStar, join_namespace, server_in_namespace

    if (os.cpu_count() or 1) < 2:
        raise SystemExit("needs two CPUs (the server on CPU 0, the rest on CPU 1)")
    nofile = raise_nofile()
    os.sched_setaffinity(0, {1})  # this driver and what it starts without taskset
    set_name("bench-app")  # the watchers' sessions are held by this process
    ps = args.performance_schema == "on"
    logdir = Path(tempfile.mkdtemp(prefix="fleet-sim-"))
    watchers_count = args.watchers
    report: dict[str, Any] = {"watchers": watchers_count, "server_sessions": args.server_sessions,
                              "server_cpus": args.server_cpus,
                              "performance_schema": ps, "phase_seconds": args.phase_seconds,
                              "scrape_interval": args.scrape_interval,
                              "server_interval": args.server_interval, "phases": []}
    procs: list[Proc] = []
    holders: list[Holder] = []
    held: list[Any] = []
    watching = threading.Event()
    if args.yield_to:
        threading.Thread(target=watch_for, args=(args.yield_to, watching), daemon=True).start()
    with contextlib.ExitStack() as stack:
        stack.callback(watching.set)
        star = stack.enter_context(NetnsStar(watchers_count + 1))
        noise = star.legs[watchers_count]
        watchers = [Watcher(leg.index, leg.client_ns) for leg in star.legs[:watchers_count]]
        sessions = args.server_sessions + 12 * watchers_count + 500
        db = server_in_namespace(ThrowawayMariaDB, star, server_args(sessions, ps, nofile))
        db.command_prefix += ["taskset", "-c", args.server_cpus]
        target = f"{star.db_addr}:{db.port}"
        exporter_port, fleet_port, sidecar_port = 9864, 9865, 9866
        try:
            db.start()
            create_users(db.execute)
            log(f"server in {star.server_ns} at {target}, pid {db.pid}; "
                f"{watchers_count} watcher namespaces")
            started = time.monotonic()
            per = args.server_sessions // 4
            for i in range(4):
                holder = Holder(f"bench-other-{i}", star.prefix(noise.client_ns), star.db_addr,
                                db.port, "", per, logdir)
                holders.append(holder)
            for holder in holders:
                holder.wait_ready()

            def open_watcher_sessions() -> list[Any]:
                return [pymysql.connect(host=star.db_addr, port=db.port, user=APP_USER,
                                        password=APP_PASSWORD, ssl_disabled=True,
                                        autocommit=True) for _ in range(WATCHER_SESSIONS)]

            for leg in star.legs[:watchers_count]:
                held.extend(star.in_namespace(leg.client_ns, open_watcher_sessions))
            total = db.execute("SELECT COUNT(*) FROM information_schema.PROCESSLIST")[0][0]
            report["processlist_rows"] = total
            log(f"{total} sessions in the processlist after {time.monotonic() - started:.1f} s")

            probe_until = time.monotonic() + 3600
            probes = {}
            for kind, rate in (("select", args.select_rate), ("login", args.login_rate)):
                out = logdir / f"probe-{kind}.txt"
                probes[kind] = (Proc(f"probe-{kind}", [
                    *star.prefix(noise.client_ns), "taskset", "-c", "1", "chrt", "-f", "10",
                    sys.executable, "-m",
                    "benchmarks.fleet", "probe", kind, star.db_addr, str(db.port), str(rate),
                    str(probe_until - time.monotonic()), str(out)], logdir,
                    env={"BENCH_PASSWORD": APP_PASSWORD}), out)
                procs.append(probes[kind][0])
            time.sleep(3)

            def start_exporters(port: int, extra: list[str]) -> list[Proc]:
                group = []
                for watcher in watchers:
                    proc = Proc(f"exporter-{port}-{watcher.index}", [
                        *star.prefix(watcher.ns), "taskset", "-c", "1", sys.executable, "-m",
                        "exporter", f"--mysql.address={target}", f"--mysql.user={EXPORTER_USER}",
                        f"--web.listen-address=127.0.0.1:{port}", *extra], logdir,
                        env={"MYSQL_IDLE_EXPORTER_PASSWORD": EXPORTER_PASSWORD})
                    group.append(proc)
                    procs.append(proc)
                for watcher, proc in zip(watchers, group, strict=True):
                    wait_healthy(join_namespace, watcher.ns, "127.0.0.1", port, proc, 180)
                return group

            def warm_up(port: int) -> None:
                """One scrape each (the first reads), a few at a time, before measuring."""
                def one(watcher: Watcher) -> None:
                    join_namespace(watcher.ns)
                    http_get("127.0.0.1", port, "/metrics", 60)

                with ThreadPoolExecutor(max_workers=4) as pool:
                    list(pool.map(one, watchers))

            def phase(name: str, port: int | None, extra: dict[str, Any] | None = None
                      ) -> dict[str, Any]:
                for watcher in watchers:
                    watcher.scrapes.clear()
                scraper = Scraper(join_namespace, watchers, port,
                                  args.scrape_interval) if port is not None else None
                if ps:
                    db.execute("TRUNCATE TABLE "
                               "performance_schema.events_statements_summary_by_digest")
                account0 = userstat(db.execute(USERSTAT_SQL))
                begin = time.monotonic()
                cpu0 = cpu_seconds(db.pid)
                time.sleep(args.phase_seconds)
                cpu1 = cpu_seconds(db.pid)
                end = time.monotonic()
                if scraper is not None:
                    scraper.stop()
                account = userstat_delta(account0, userstat(db.execute(USERSTAT_SQL)))
                result: dict[str, Any] = {"phase": name, "begin": begin, "end": end,
                                          "seconds": end - begin,
                                          "exporter_account": account,
                                          "server_cpu_percent": (cpu1 - cpu0) / (end - begin)
                                          * 100, "load": loadavg(), **(extra or {})}
                for kind, (_, out) in probes.items():
                    result[kind] = summarise_latency(out, begin, end)
                scrapes = [s for w in watchers for s in w.scrapes if begin <= s.at < end]
                if port is not None:
                    result["scrapes"] = len(scrapes)
                    result["scrape_failures"] = sum(1 for s in scrapes if s.status != 200)
                    result["scrape_p50_ms"] = (pct([s.seconds for s in scrapes], 50) or 0) * 1000
                    result["watchers_up"] = sum(
                        1 for w in watchers if w.scrapes and w.scrapes[-1].up == 1)
                    result["watchers_all_idle"] = sum(
                        1 for w in watchers
                        if w.scrapes and w.scrapes[-1].idle == WATCHER_SESSIONS)
                    result["phantoms_seen"] = sum(s.phantom or 0 for s in scrapes)
                    asks = 0.0
                    for w in watchers:
                        counts = [s.reads for s in w.scrapes if s.reads is not None]
                        if counts:
                            asks += counts[-1] - counts[0]
                    result["exporter_reads_between_scrapes"] = asks
                # Each read is one statement (the packed read), whichever exporter; it was
                # two (variables, processlist) before 2026-11-30.
                result["server_reads"] = account["select_commands"] / STATEMENTS_PER_READ
                if ps:
                    kinds: dict[str, int] = {}
                    for row in db.execute(DIGEST_SQL):
                        digest = digest_kind(str(row[0] or ""))
                        if digest is not None:
                            kinds[digest] = kinds.get(digest, 0) + int(str(row[1]))
                    result["server_statements"] = kinds
                log(f"phase {name}: server CPU {result['server_cpu_percent']:.1f} %, "
                    f"SELECT 1 p50/p99 {ms(result['select']['p50'])}/"
                    f"{ms(result['select']['p99'])} ms (n={result['select']['n']}), login "
                    f"p50/p99 {ms(result['login']['p50'])}/{ms(result['login']['p99'])} ms "
                    f"(n={result['login']['n']}), server reads {result['server_reads']:.0f}"
                    + (f"; scrapes {result.get('scrapes')}, failures "
                       f"{result.get('scrape_failures')}, up {result.get('watchers_up')}, "
                       f"all idle {result.get('watchers_all_idle')}, phantoms "
                       f"{result.get('phantoms_seen')}" if port is not None else ""))
                report["phases"].append(result)
                return result

            # Both kinds of exporter run side by side in every watcher's namespace (direct
            # ones on one port, fleet sidecars on another), so the phases can alternate
            # without starting processes in between: an exporter that nobody scrapes sends
            # the database nothing (its one session idles).
            phases = args.phases.split(",")
            unknown = set(phases) - {"none", "idle", "direct", "fleet"}
            if unknown:
                raise SystemExit(f"unknown phases {sorted(unknown)}")
            if phases and phases[0] == "none":
                phase("no exporter process", None)
                phases = phases[1:]
            if phases:
                t0 = time.monotonic()
                standalone = Proc("fleet-standalone", [
                    *star.prefix(star.server_ns), "taskset", "-c", "1", sys.executable,
                    "-m", "exporter", f"--mysql.address={target}",
                    f"--mysql.user={EXPORTER_USER}", "--fleet.serve",
                    "--fleet.allow-unauthenticated",
                    f"--server.interval={args.server_interval}",
                    f"--web.listen-address=0.0.0.0:{fleet_port}"], logdir,
                    env={"MYSQL_IDLE_EXPORTER_PASSWORD": EXPORTER_PASSWORD})
                procs.append(standalone)
                wait_healthy(join_namespace, star.server_ns, "127.0.0.1", fleet_port,
                             standalone, 60)
                direct = start_exporters(exporter_port,
                                         [f"--server.interval={args.server_interval}"])
                sidecars = start_exporters(sidecar_port, [
                    f"--fleet.url=http://{star.db_addr}:{fleet_port}",
                    f"--server.interval={args.server_interval}"])
                report["exporters_rss_mib_total"] = sum(rss_mib(p.pid) for p in direct)
                report["sidecars_rss_mib_total"] = sum(rss_mib(p.pid) for p in sidecars)
                report["standalone_rss_mib"] = rss_mib(standalone.pid)
                warm_up(exporter_port)
                warm_up(sidecar_port)
                log(f"{len(direct)} exporters, {len(sidecars)} sidecars and the fleet "
                    f"exporter up in {time.monotonic() - t0:.0f} s")
            for name in phases:
                if name == "none":
                    raise SystemExit("phase none only first")
                if name == "idle":
                    phase("exporters running, not scraped", None)
                elif name == "direct":
                    phase(f"direct, --server.interval={args.server_interval}", exporter_port)
                else:
                    phase("fleet mode", sidecar_port)
            for proc, _ in probes.values():
                proc.stop()
            report["mariadbd_rss_mib"] = rss_mib(db.pid)
        finally:
            for proc in procs:
                proc.stop()
            for holder in holders:
                holder.stop()
            for connection in held:
                with contextlib.suppress(Exception):
                    connection.close()
            db.destroy()
    return report


def print_sim(report: dict[str, Any]) -> None:
    print(f"\n{report['watchers']} watchers x {WATCHER_SESSIONS} sessions, mariadbd on CPU "
          f"{report['server_cpus']}, "
          f"{report['processlist_rows']:,} sessions on the server, performance_schema "
          f"{'ON' if report['performance_schema'] else 'OFF'}, phases of "
          f"{report['phase_seconds']} s, scrapes every {report['scrape_interval']} s\n")
    print("| phase | mariadbd CPU % | server reads | SELECT 1 p50 / p99 / p99.9 ms | > 5 ms |"
          " login p50 / p99 / p99.9 ms | > 5 ms | scrapes (failed) | watchers all idle |")
    print("|---|---|---|---|---|---|---|---|---|")

    def share(value: float | None) -> str:
        return "-" if value is None else f"{value * 100:.2f} %"

    for p in report["phases"]:
        s, lg = p["select"], p["login"]
        print(f"| {p['phase']} | {p['server_cpu_percent']:.1f} | {p['server_reads']:.0f} | "
              f"{ms(s['p50'])} / {ms(s['p99'])} / {ms(s['p999'])} | {share(s.get('over_5ms'))} | "
              f"{ms(lg['p50'])} / {ms(lg['p99'])} / {ms(lg['p999'])} | "
              f"{share(lg.get('over_5ms'))} | {p.get('scrapes', '-')} "
              f"({p.get('scrape_failures', '-')}) | {p.get('watchers_all_idle', '-')} |")


# --- main --------------------------------------------------------------------------------


def main(argv: list[str]) -> int:
    if argv and argv[0] == "hold":
        return hold_main(argv[1:])
    if argv and argv[0] == "probe":
        return probe_main(argv[1:])
    parser = argparse.ArgumentParser(prog="python -m benchmarks.fleet", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="mode", required=True)
    cost = sub.add_parser("cost", help="server cost per read at N sessions")
    cost.add_argument("--sessions", default="100,1000,10000")
    cost.add_argument("--rounds", type=int, default=20)
    sim = sub.add_parser("sim", help="many watchers in namespaces against one server")
    sim.add_argument("--watchers", type=int, default=40)
    sim.add_argument("--server-sessions", type=int, default=10000)
    sim.add_argument("--performance-schema", choices=("on", "off"), default="off")
    sim.add_argument("--phase-seconds", type=float, default=55)
    sim.add_argument("--phases", default="none,idle,direct,fleet,idle,direct,fleet,idle",
                     help="comma-separated: none (no exporter process yet; first only), idle "
                          "(exporters running, not scraped), direct, fleet")
    sim.add_argument("--scrape-interval", type=float, default=15)
    sim.add_argument("--yield-to", default="benchmarks.scale",
                     help="stop if a process matching this pattern starts ('' to never)")
    sim.add_argument("--server-cpus", default="0",
                     help="taskset CPU list for mariadbd (default 0; 0,1 shares CPU 1 with "
                          "the exporters)")
    sim.add_argument("--server-interval", default="30s")
    sim.add_argument("--select-rate", type=float, default=100)
    sim.add_argument("--login-rate", type=float, default=25)
    args = parser.parse_args(argv)

    def on_signal(signum: int, frame: object) -> None:
        raise Stop(signal.Signals(signum).name)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    meta = {"date": dt.datetime.now().isoformat(timespec="seconds"), "argv": argv,
            "machine": f"{os.cpu_count()} CPU, {platform.release()}",
            "python": platform.python_version(), "load_start": loadavg()}
    started = time.monotonic()
    try:
        if args.mode == "cost":
            report = {**meta, **run_cost(args)}
            print_cost(report)
            suffix = "cost"
        else:
            report = {**meta, **run_sim(args)}
            print_sim(report)
            suffix = (f"sim-{args.watchers}w-ps-{args.performance_schema}"
                      f"-cpu{args.server_cpus.replace(',', '')}")
    except (KeyboardInterrupt, Stop) as stop:
        log(f"stopped ({stop or 'Ctrl-C'}); everything started was stopped")
        return 130
    report["seconds"] = time.monotonic() - started
    report["load_end"] = loadavg()
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"fleet-{time.strftime('%Y%m%d-%H%M%S')}-{suffix}.json"
    path.write_text(json.dumps(report, indent=1, default=str))
    log(f"results in {path.relative_to(REPO)} ({report['seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

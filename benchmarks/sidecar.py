"""Sidecar benchmark: what one scrape of a sidecar costs, the exporter against
mysqld_exporter's processlist-only scrape, side by side on one server.

    .venv/bin/python -m benchmarks.sidecar            # 0 and 5,000 other sessions

A throwaway MariaDB (performance_schema ON, for the statement times), an application
process holding 10 sessions over TCP from this host, and N other sessions held over the
server's unix socket (as other hosts' sessions would be: in the processlist, not in this
host's TCP tables). Against it, started fresh per level: the exporter with default flags
(`--server.interval` 30 s: most scrapes of a burst use the last read and send a ping), the
exporter reading the server on every scrape (`--server.interval=0`, the worst case), and
mysqld_exporter with only its processlist collector. They are scraped one after the other,
in a rotating order, like Prometheus does (keep-alive connection, its Accept and
Accept-Encoding: gzip headers, its timeout header). Then, at the last level, the same at a
slow cadence, for the CPU a scrape costs with cold caches and the CPU spent idle between
scrapes. See benchmarks/README.md for what is measured and the results.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.holder import raise_nofile
from benchmarks.profile_summary import summarise
from benchmarks.scale import (
    MYSQLD_EXPORTER,
    MYSQLD_EXPORTER_DEFAULTS,
    RESULTS,
    Holder,
    Proc,
    Procs,
    Stop,
    cpu_seconds,
    cpu_split,
    log,
    metric,
    profile_stem,
    record_profile,
    rss,
    run_header,
    server_args,
    start_reaper,
    stop_on_signals,
    stop_reaper,
    wait_http,
)
from exporter.throwaway import FLAVORS, ThrowawayServer, free_port

APP_USER, APP_PASSWORD = "app", "app-password"
EXPORTER_USER, EXPORTER_PASSWORD = "idle_exporter", "exporter-password"
MYSQLD_USER, MYSQLD_PASSWORD = "mysqld_exporter", "mysqld-exporter-password"
REPO = Path(__file__).resolve().parent.parent
# The exporter as deployed: the package and its dependencies only. The test venv (.venv)
# also has `cryptography` (PyMySQL's [rsa] extra, for the tests), which PyMySQL imports
# whenever it is installed: about 11 MiB more resident memory.
RUNTIME_VENV = REPO / ".tools" / "venv-runtime"
# The image runs the exporter with PYTHONOPTIMIZE=2 (Dockerfile): without the docstrings of
# the standard library and the four libraries, about 1.5 MiB less resident memory. Its
# bytecode is compiled at that level into this cache (PYTHONPYCACHEPREFIX), which the
# exporter's interpreter then reads instead of every __pycache__: so the measured process
# compiles nothing from source, whatever bytecode the interpreter's standard library ships
# with, and nothing outside .tools is written.
PYCACHE = REPO / ".tools" / "pycache-runtime"
# Never imported by an exporter: left out of the compilation.
COMPILE_EXCLUDE = r"/(test|tests|idle_test|idlelib|tkinter|turtledemo|lib2to3|ensurepip)/"
MIB = 1024 * 1024

# What Prometheus 2.x sends with every scrape.
PROMETHEUS_HEADERS = {
    "Accept": "application/openmetrics-text;version=1.0.0,application/openmetrics-text;"
              "version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
    "Accept-Encoding": "gzip",
    "User-Agent": "Prometheus/2.42.0",
    "X-Prometheus-Scrape-Timeout-Seconds": "10",
}

# The imports of a running exporter in the order they happen, for the RSS breakdown.
IMPORT_STEPS = (
    ("ssl", "import ssl"),
    ("asyncio", "import asyncio"),
    ("prometheus_client", "import prometheus_client"),
    # As exporter.launch imports it: without the CA bundle of aiohttp's unused client.
    ("aiohttp, aiohttp.web (exporter.launch)",
     "from exporter.launch import import_aiohttp_server_only; import_aiohttp_server_only()"),
    ("pymysql", "import pymysql"),
    ("psutil", "import psutil"),
    ("the exporter's modules (exporter.cli)", "import exporter.cli"),
)
_RSS_SCRIPT = """
import sys
def rss():
    for line in open('/proc/self/status'):
        if line.startswith('VmRSS:'):
            return int(line.split()[1]) / 1024
print('interpreter', rss())
for name, statement in STEPS:
    exec(statement)
    print(name, rss(), sep='\\t')
print('cryptography imported', 'cryptography' in sys.modules, sep='\\t')
import importlib.util, os
for module in list(sys.modules.values()):
    source = getattr(module, '__file__', None) or ''
    if source.endswith('.py') and not os.path.exists(importlib.util.cache_from_source(source)):
        print('compiled from source', module.__name__, sep='\\t')
"""


def exporter_python(choice: str) -> str:
    """The interpreter that runs the exporter: `runtime` (a venv with the package and its
    dependencies only, made on first use), `current` (this one), or a path.

    The runtime venv holds the package as the image does (Dockerfile): installed from a
    wheel of the working tree, not editable, with its bytecode compiled. Where
    PYTHONDONTWRITEBYTECODE is set (this workplace's machines, the image too), an editable
    install compiles every module from source at each start, which leaves about 1.3 MiB
    more resident memory than a deployed exporter has. The package is installed again at
    each run, so the run measures the working tree."""
    if choice == "current":
        return sys.executable
    if choice != "runtime":
        return choice
    python = RUNTIME_VENV / "bin" / "python"
    stamp = RUNTIME_VENV / ".installed"
    if not stamp.exists() or stamp.stat().st_mtime < (REPO / "pyproject.toml").stat().st_mtime:
        log(f"making {RUNTIME_VENV.relative_to(REPO)} (the package's dependencies only)")
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(RUNTIME_VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", str(REPO)], check=True,
                       cwd=REPO)
        stamp.touch()
    install_as_deployed(python)
    return str(python)


def deployed_env(optimize: int, pycache: Path = PYCACHE) -> dict[str, str]:
    """The environment the exporter's interpreter runs in: the image's optimization level,
    and the bytecode compile_bytecode() made for it."""
    return {"PYTHONOPTIMIZE": str(optimize), "PYTHONPYCACHEPREFIX": str(pycache)}


def compile_bytecode(python: str, optimize: int) -> None:
    """Bytecode at `optimize` for the interpreter's standard library, its site-packages and
    the exporter's package, into PYCACHE (up-to-date files are skipped: about 1 s after the
    first run)."""
    started = time.monotonic()
    # The exporter's package too where it is not in site-packages: an editable install
    # (--exporter-python=current) imports it from the working tree.
    stdlib, purelib, package = subprocess.run(
        [python, "-c", "import os, sysconfig, exporter; print(sysconfig.get_path('stdlib')); "
         "print(sysconfig.get_path('purelib')); print(os.path.dirname(exporter.__file__))"],
        check=True, capture_output=True, text=True, cwd="/").stdout.split()
    paths = [stdlib, purelib]
    if not Path(package).is_relative_to(purelib):
        paths.append(package)
    subprocess.run([python, "-m", "compileall", "-q", "-j", "0", "-o", str(optimize),
                    "-x", COMPILE_EXCLUDE, *paths],
                   check=True, cwd="/", stdout=subprocess.DEVNULL,
                   env={**os.environ, **deployed_env(optimize)})
    log(f"bytecode at optimization level {optimize} in {PYCACHE.relative_to(REPO)} "
        f"({time.monotonic() - started:.1f}s)")


def install_as_deployed(python: Path) -> None:
    """The working tree's package into the runtime venv, as the image installs it."""
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="mysql-idle-wheel-") as wheels:
        subprocess.run([str(python), "-m", "pip", "wheel", "-q", "--no-deps",
                        "--wheel-dir", wheels, str(REPO)], check=True, cwd=wheels)
        subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps",
                        "--force-reinstall", *map(str, Path(wheels).glob("*.whl"))],
                       check=True)
    site = subprocess.run([str(python), "-c", "import exporter, os; "
                           "print(os.path.dirname(exporter.__file__))"],
                          check=True, capture_output=True, text=True, cwd="/").stdout.strip()
    if Path(site).resolve() == REPO / "exporter":
        raise SystemExit(f"the runtime venv imports the working tree ({site}), not its install")
    log(f"installed the working tree into {RUNTIME_VENV.relative_to(REPO)} "
        f"({time.monotonic() - started:.1f}s)")


def cpu_ns(pid: int) -> int:
    """Nanoseconds on CPU of the process's live threads (schedstat: exact, unlike the
    clock ticks of /proc/PID/stat, so good for one scrape)."""
    total = 0
    with contextlib.suppress(FileNotFoundError):
        for task in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(FileNotFoundError, ProcessLookupError), open(
                f"/proc/{pid}/task/{task}/schedstat"
            ) as stat:
                total += int(stat.read().split()[0])
    return total


class Contender:
    """One scraped process: a keep-alive connection, and what each scrape cost."""

    def __init__(self, name: str, proc: Proc, port: int, path: str, user: str) -> None:
        self.name, self.proc, self.port, self.path, self.user = name, proc, port, path, user
        self.conn: http.client.HTTPConnection | None = None

    def scrape(self) -> tuple[float, int, bytes]:
        """Wall seconds, CPU nanoseconds of the process, body (gzipped)."""
        for attempt in (1, 2):
            if self.conn is None:
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
                self.conn.connect()
            before = cpu_ns(self.proc.pid)
            started = time.perf_counter()
            try:
                self.conn.request("GET", self.path, headers=PROMETHEUS_HEADERS)
                response = self.conn.getresponse()
                body = response.read()
            except (http.client.HTTPException, ConnectionError):
                # The server closed an idle keep-alive connection: Prometheus reconnects.
                self.conn.close()
                self.conn = None
                if attempt == 2:
                    raise
                continue
            elapsed = time.perf_counter() - started
            used = cpu_ns(self.proc.pid) - before
            if response.status != 200:
                raise RuntimeError(f"{self.name} answered {response.status}: {body[:300]!r}")
            return elapsed, used, body
        raise AssertionError("unreachable")

    def text(self) -> str:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        try:
            conn.request("GET", self.path)
            return conn.getresponse().read().decode()
        finally:
            conn.close()

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


class StatementTime:
    """Statement time and count per user from performance_schema (picoseconds)."""

    def __init__(self, db: ThrowawayServer) -> None:
        self.conn = db.connect()

    def read(self) -> dict[str, tuple[float, int]]:
        with self.conn.cursor() as cursor:
            cursor.execute(
                "SELECT USER, SUM(SUM_TIMER_WAIT), SUM(COUNT_STAR) FROM performance_schema."
                "events_statements_summary_by_user_by_event_name WHERE USER IN (%s, %s) "
                "GROUP BY USER", (EXPORTER_USER, MYSQLD_USER))
            return {str(u): (float(t) / 1e12, int(n)) for u, t, n in cursor.fetchall()}

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.conn.close()


@dataclass
class Series:
    """One contender's scrapes in one part of a run."""

    wall: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)  # per scrape, from schedstat
    cpu_total: float = 0.0  # /proc/PID/stat over the whole series
    cpu_system: float = 0.0  # of which stime
    statements: int = 0
    statement_seconds: float = 0.0
    body_bytes: int = 0

    def summary(self) -> dict[str, Any]:
        n = len(self.wall)
        return {
            "scrapes": n,
            "median_wall_ms": ms(statistics.median(self.wall)),
            "p90_wall_ms": ms(sorted(self.wall)[int(0.9 * (n - 1))]),
            "cpu_ms_per_scrape_stat": ms(self.cpu_total / n),
            "system_cpu_ms_per_scrape_stat": ms(self.cpu_system / n),
            "median_cpu_ms_per_scrape_schedstat": ms(statistics.median(self.cpu)),
            "mean_cpu_ms_per_scrape_schedstat": ms(statistics.fmean(self.cpu)),
            "statements_per_scrape": round(self.statements / n, 3),
            "server_statement_ms_per_scrape": ms(self.statement_seconds / n),
            "body_bytes_gzipped": self.body_bytes,
        }


def ms(seconds: float) -> float:
    return round(seconds * 1000, 3)


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.procs = Procs()
        self.logdir = Path(tempfile.mkdtemp(prefix="mysql-idle-sidecar-"))
        self.db: ThrowawayServer | None = None
        self.reaper: subprocess.Popen[bytes] | None = None
        self.statements: StatementTime | None = None
        self.info: dict[str, Any] = {}
        self.python = exporter_python(args.exporter_python)
        compile_bytecode(self.python, args.optimize)

    def start(self) -> None:
        nofile = raise_nofile()
        biggest = max(self.args.others) + self.args.own
        db = FLAVORS["mariadb"](server_args(biggest, nofile, performance_schema=True))
        self.db = db
        db.start()
        self.reaper = start_reaper(db)
        db.execute(
            f"CREATE USER '{APP_USER}'@'%' IDENTIFIED BY '{APP_PASSWORD}'",
            f"CREATE USER '{APP_USER}'@'localhost' IDENTIFIED BY '{APP_PASSWORD}'",
            f"CREATE USER '{EXPORTER_USER}'@'%' IDENTIFIED BY '{EXPORTER_PASSWORD}'",
            f"GRANT PROCESS ON *.* TO '{EXPORTER_USER}'@'%'",
            f"GRANT SELECT ON performance_schema.* TO '{EXPORTER_USER}'@'%'",
            f"CREATE USER '{MYSQLD_USER}'@'%' IDENTIFIED BY '{MYSQLD_PASSWORD}'",
            f"GRANT PROCESS ON *.* TO '{MYSQLD_USER}'@'%'",
            f"CREATE USER '{MYSQLD_USER}'@'localhost' IDENTIFIED BY '{MYSQLD_PASSWORD}'",
            f"GRANT PROCESS ON *.* TO '{MYSQLD_USER}'@'localhost'",
        )
        (version,), = db.execute("SELECT VERSION()")
        self.info.update(server="MariaDB", server_version=version, performance_schema=True)
        self.my_cnf = self.logdir / "mysqld_exporter.cnf"
        # mysqld_exporter runs beside the database, not in the application's network
        # namespace: over TCP here, the connection it opens for every scrape would be a
        # connection opened in the exporter's namespace, and the exporter would dump the
        # kernel's whole table at each of its own scrapes (exporter.sockets.lookup).
        where = (f"host=127.0.0.1\nport={db.port}\n" if self.args.mysqld_exporter_tcp
                 else f"socket={db.socket_path}\n")
        self.info["mysqld_exporter_connects_over"] = (
            "tcp" if self.args.mysqld_exporter_tcp else "unix socket")
        self.my_cnf.write_text(f"[client]\nuser={MYSQLD_USER}\npassword={MYSQLD_PASSWORD}\n"
                               + where)
        self.my_cnf.chmod(0o600)
        self.statements = StatementTime(db)
        # The application: its own sessions over TCP from this host.
        self.app = Holder("bench-app", ["mysql", "127.0.0.1", str(db.port), APP_USER, ""],
                          self.logdir)
        self.procs.add(self.app)
        self.app.send(f"open {self.args.own} 4")
        self.app.answer()
        # Everyone else's sessions: over the unix socket, so only the server sees them.
        self.others = Holder("bench-others", ["mysql", str(db.socket_path), "0", APP_USER, ""],
                             self.logdir)
        self.procs.add(self.others)

    def contenders(self) -> list[Contender]:
        assert self.db is not None
        found = []
        for name, extra in (("exporter", []), ("exporter_interval_0", ["--server.interval=0"])):
            port = free_port()
            argv = [self.python, "-m", "exporter", f"--mysql.address=127.0.0.1:{self.db.port}",
                    f"--mysql.user={EXPORTER_USER}", f"--web.listen-address=127.0.0.1:{port}",
                    *extra]
            # Started outside the working tree, so that `-m exporter` imports the runtime
            # venv's install (exporter_python), not the tree's sources.
            proc = self.procs.add(Proc(name, argv, self.logdir, cwd=self.logdir,
                                       env={"MYSQL_IDLE_EXPORTER_PASSWORD": EXPORTER_PASSWORD,
                                            **deployed_env(self.args.optimize)}))
            wait_http(port, "/healthz", proc)
            found.append(Contender(name, proc, port, "/metrics", EXPORTER_USER))
        port = free_port()
        argv = [MYSQLD_EXPORTER, f"--config.my-cnf={self.my_cnf}",
                f"--web.listen-address=127.0.0.1:{port}",
                *(f"--no-collect.{name}" for name in MYSQLD_EXPORTER_DEFAULTS),
                "--collect.info_schema.processlist"]
        proc = self.procs.add(Proc("mysqld_exporter", argv, self.logdir))
        wait_http(port, "/", proc)
        found.append(Contender("mysqld_exporter", proc, port, "/metrics", MYSQLD_USER))
        return found

    def burst(self, contenders: list[Contender], scrapes: int) -> dict[str, Series]:
        """Every contender scraped `scrapes` times, one after the other, rotating the order."""
        assert self.statements is not None
        series = {c.name: Series() for c in contenders}
        # The two exporters share a database user: their statement times are told apart
        # by measuring each one's on its own (the order rotates within a round only).
        cpu_before = {c.name: cpu_split(c.proc.pid) for c in contenders}
        for i in range(scrapes):
            shift = i % len(contenders)
            for contender in contenders[shift:] + contenders[:shift]:
                wall, cpu, body = contender.scrape()
                s = series[contender.name]
                s.wall.append(wall)
                s.cpu.append(cpu / 1e9)
                s.body_bytes = len(body)
        for c in contenders:
            (user, system), (user0, system0) = cpu_split(c.proc.pid), cpu_before[c.name]
            series[c.name].cpu_total = user + system - user0 - system0
            series[c.name].cpu_system = system - system0
        # Statement time: each contender alone, a tenth of the scrapes (at least 10).
        for c in contenders:
            alone = max(10, scrapes // 10)
            before = self.statements.read()
            for _ in range(alone):
                c.scrape()
            after = self.statements.read()
            was, now = before.get(c.user, (0.0, 0)), after.get(c.user, (0.0, 0))
            # Reported per scrape, scaled back to the series' length.
            series[c.name].statement_seconds = (now[0] - was[0]) / alone * scrapes
            series[c.name].statements = round((now[1] - was[1]) / alone * scrapes)
        return series

    def level(self, others: int) -> dict[str, Any]:
        assert self.db is not None
        started = time.perf_counter()
        if others > self.others.count:
            self.others.send(f"open {others - self.others.count} {self.args.connect_threads}")
            self.others.answer()
        log(f"{others} other sessions held ({time.perf_counter() - started:.1f}s); "
            "starting the exporters")
        contenders = self.contenders()
        rss_at_start = {c.name: round(rss(c.proc.pid)[0], 2) for c in contenders}
        for _ in range(self.args.warmup):
            for c in contenders:
                c.scrape()
        load_start = os.getloadavg()[0]
        series = self.burst(contenders, self.args.scrapes)
        time.sleep(self.args.settle)
        result: dict[str, Any] = {
            "other_sessions": others,
            "own_sessions": self.args.own,
            "loadavg_at_start": round(load_start, 2),
            "loadavg_at_end": round(os.getloadavg()[0], 2),
            "rss_mib_at_start": rss_at_start,
            "rss_mib_steady": {c.name: round(rss(c.proc.pid)[0], 2) for c in contenders},
            "rss_mib_peak": {c.name: round(rss(c.proc.pid)[1], 2) for c in contenders},
            "burst": {name: s.summary() for name, s in series.items()},
        }
        body = contenders[0].text()
        result["exporter_sessions_by_state"] = {
            state: metric(body, "mysql_idle_sessions", state=state)
            for state in ("idle", "active", "unmatched", "phantom")
        }
        result["exporter_source"] = _source(body)
        result["ratios"] = ratios(result["burst"])
        log(f"{others} others: " + ", ".join(
            f"{name} cpu {s['cpu_ms_per_scrape_stat']} ms wall {s['median_wall_ms']} ms"
            for name, s in result["burst"].items()))
        if others == max(self.args.others) and self.args.cadence_scrapes:
            result["cadence"] = self.cadence(contenders)
        if others == max(self.args.others) and self.args.profile:
            result["profile"] = profile(contenders[0], self.args.profile,
                                        profile_stem(f"sidecar-{others}"))
        for c in contenders:
            c.close()
            self.procs.stop(c.proc)
        return result

    def cadence(self, contenders: list[Contender]) -> dict[str, Any]:
        """Scrapes every --cadence seconds: CPU per scrape with cold caches, and the CPU
        used between scrapes (timers, the event loop), per second."""
        period, count = self.args.cadence, self.args.cadence_scrapes
        log(f"cadence: {count} scrapes every {period:g}s")
        series = {c.name: Series() for c in contenders}
        before = {c.name: cpu_seconds(c.proc.pid) for c in contenders}
        before_ns = {c.name: cpu_ns(c.proc.pid) for c in contenders}
        started = time.monotonic()
        for i in range(count):
            tick = started + i * period
            time.sleep(max(0.0, tick - time.monotonic()))
            for c in contenders:
                wall, cpu, _ = c.scrape()
                series[c.name].wall.append(wall)
                series[c.name].cpu.append(cpu / 1e9)
        # One more period, so that every scrape is followed by a whole gap.
        time.sleep(max(0.0, started + count * period - time.monotonic()))
        elapsed = time.monotonic() - started
        out: dict[str, Any] = {"period_seconds": period, "scrapes": count,
                               "elapsed_seconds": round(elapsed, 2)}
        for c in contenders:
            s = series[c.name]
            # schedstat (ns, every live thread) for the whole part: the ticks of
            # /proc/PID/stat (10 ms) are too coarse for a few scrapes; both are reported.
            total = (cpu_ns(c.proc.pid) - before_ns[c.name]) / 1e9
            ticks = cpu_seconds(c.proc.pid) - before[c.name]
            idle = max(0.0, total - sum(s.cpu))
            out[c.name] = {
                "median_cpu_ms_per_scrape": ms(statistics.median(s.cpu)),
                "mean_cpu_ms_per_scrape": ms(statistics.fmean(s.cpu)),
                "median_wall_ms": ms(statistics.median(s.wall)),
                "cpu_ms_total": ms(total),
                "cpu_ms_total_stat": ms(ticks),
                "idle_cpu_ms_per_second": round(idle / (elapsed - sum(s.wall)) * 1000, 4),
                "cpu_ms_per_period": ms(total / count),
            }
        return out

    def close(self) -> None:
        self.procs.stop_all()
        if self.statements is not None:
            self.statements.close()
        if self.db is not None:
            self.db.destroy()
        stop_reaper(self.reaper)
        if not self.args.keep_logs:
            shutil.rmtree(self.logdir, ignore_errors=True)


def profile(contender: Contender, scrapes: int, out: Path) -> dict[str, Any]:
    """py-spy over `scrapes` scrapes: raw collapsed stacks of the thread holding the GIL
    (Python work; the kernel's part of the socket dump, run without it, is not in them)."""
    raw = out.with_suffix(".txt")
    error = record_profile(contender.proc.pid, contender.scrape, scrapes, raw, rate=500,
                           gil=True)
    if error is not None:
        return {"error": error}
    return {"raw": str(raw), **summarise(raw)}


def _source(body: str) -> str | None:
    for line in body.splitlines():
        if line.startswith("mysql_idle_server_info{"):
            for part in line.split(","):
                if part.startswith("source="):
                    return part.split('"')[1]
    return None


def ratios(burst: dict[str, dict[str, Any]]) -> dict[str, float]:
    base = burst["mysqld_exporter"]
    out = {}
    for name in ("exporter", "exporter_interval_0"):
        mine = burst[name]
        out[f"{name}_cpu_stat"] = round(
            mine["cpu_ms_per_scrape_stat"] / base["cpu_ms_per_scrape_stat"], 2)
        out[f"{name}_cpu_schedstat_median"] = round(
            mine["median_cpu_ms_per_scrape_schedstat"]
            / base["median_cpu_ms_per_scrape_schedstat"], 2)
        out[f"{name}_median_wall"] = round(mine["median_wall_ms"] / base["median_wall_ms"], 2)
    return out


def rss_breakdown(python: str, optimize: int, pycache: Path = PYCACHE) -> dict[str, Any]:
    """VmRSS after each import a running exporter makes, in one fresh process of the
    exporter's interpreter (so of its venv: whether `cryptography` is installed shows), in
    the exporter's environment. A module compiled from source at import would make every
    memory figure of the run larger than a deployed exporter's: that stops the run."""
    script = f"STEPS = {IMPORT_STEPS!r}\n{_RSS_SCRIPT}"
    done = subprocess.run([python, "-c", script], capture_output=True, text=True,
                          check=True, timeout=60, cwd="/",  # the install, not the tree
                          env={**os.environ, **deployed_env(optimize, pycache)})
    steps: list[dict[str, Any]] = []
    previous = 0.0
    crypto = False
    from_source: list[str] = []
    for line in done.stdout.splitlines():
        name, _, value = line.replace("interpreter ", "interpreter\t").partition("\t")
        if name == "cryptography imported":
            crypto = value == "True"
            continue
        if name == "compiled from source":
            from_source.append(value)
            continue
        total = float(value)
        steps.append({"step": name, "mib": round(total - previous, 2), "total": round(total, 2)})
        previous = total
    if from_source:
        raise SystemExit(f"{len(from_source)} modules have no bytecode at optimization level "
                         f"{optimize} in {pycache} (e.g. {', '.join(sorted(from_source)[:5])}): "
                         "their compilation would count in every memory figure")
    return {"steps": steps, "cryptography_imported": crypto, "python": python,
            "optimize": optimize}


def table(result: dict[str, Any]) -> str:
    lines = ["| other sessions | contender | CPU ms / scrape (stat) | of which system | CPU "
             "ms / scrape (schedstat median) | median latency ms | statements / scrape | "
             "server statement ms / scrape | RSS at start / steady MiB |", "|" + "---|" * 9]
    for level in result["levels"]:
        for name, s in level["burst"].items():
            lines.append("| " + " | ".join(str(v) for v in (
                level["other_sessions"], name, s["cpu_ms_per_scrape_stat"],
                s.get("system_cpu_ms_per_scrape_stat", "-"),
                s["median_cpu_ms_per_scrape_schedstat"], s["median_wall_ms"],
                s["statements_per_scrape"], s["server_statement_ms_per_scrape"],
                f"{level['rss_mib_at_start'][name]} / {level['rss_mib_steady'][name]}",
            )) + " |")
    lines.append("\nRatios to mysqld_exporter (CPU from /proc/PID/stat, schedstat median; "
                 "median latency):")
    for level in result["levels"]:
        lines.append(f"- {level['other_sessions']} others: {level['ratios']}")
        if "cadence" in level:
            c = level["cadence"]
            lines.append(f"\nCadence {c['period_seconds']:g}s, {c['scrapes']} scrapes each:")
            for name in ("exporter", "exporter_interval_0", "mysqld_exporter"):
                lines.append(f"- {name}: {c[name]}")
    lines.append("\nRSS by import (MiB): " + ", ".join(
        f"{s['step']} +{s['mib']} = {s['total']}" for s in result["rss_breakdown"]["steps"]))
    model = fleet_model(result)
    if model:
        lines.append(f"\nModel, {model['sidecars']} sidecars scraped every 15 s, per day "
                     f"({model['other_sessions']} other sessions):")
        for name in ("exporter", "mysqld_exporter"):
            lines.append(f"- {name}: {model[name]}")
    breakdown = result["rss_breakdown"]
    lines.append(f"exporter interpreter {breakdown['python']}, PYTHONOPTIMIZE="
                 f"{breakdown.get('optimize', 0)}, cryptography imported: "
                 f"{breakdown['cryptography_imported']}")
    return "\n".join(lines)


SCRAPES_PER_DAY = 86_400 / 15  # Prometheus's usual 15 s interval


def fleet_model(result: dict[str, Any], sidecars: int = 1000) -> dict[str, Any]:
    """What `sidecars` sidecars scraped every 15 s cost per day, from the last level (the
    most other sessions): CPU per scrape from the cadence part (cold caches, as at 15 s) and
    the idle CPU between scrapes, resident memory, and the server's statement time (the
    exporter reads once per --server.interval, 30 s by default, and pings otherwise;
    mysqld_exporter reads on every scrape)."""
    level = result["levels"][-1]
    cadence, burst = level.get("cadence"), level["burst"]
    if not cadence:
        return {}
    reads_per_day = {"exporter": 86_400 / 30, "mysqld_exporter": SCRAPES_PER_DAY}
    out: dict[str, Any] = {"sidecars": sidecars, "scrapes_per_day_each": SCRAPES_PER_DAY,
                           "other_sessions": level["other_sessions"]}
    for name in ("exporter", "mysqld_exporter"):
        c = cadence[name]
        cpu_s = (SCRAPES_PER_DAY * c["mean_cpu_ms_per_scrape"] / 1000
                 + 86_400 * c["idle_cpu_ms_per_second"] / 1000) * sidecars
        if name == "exporter":
            # A read costs what a scrape of the interval-0 exporter does on the server;
            # the other scrapes send a ping, what the default exporter's burst measured.
            read_ms = burst["exporter_interval_0"]["server_statement_ms_per_scrape"]
            ping_ms = burst["exporter"]["server_statement_ms_per_scrape"]
            server_ms = (reads_per_day[name] * read_ms
                         + (SCRAPES_PER_DAY - reads_per_day[name]) * ping_ms)
        else:
            server_ms = SCRAPES_PER_DAY * burst[name]["server_statement_ms_per_scrape"]
        out[name] = {
            "cpu_core_hours_per_day": round(cpu_s / 3600, 2),
            "cpu_cores_busy": round(cpu_s / 86_400, 3),
            "rss_gib": round(level["rss_mib_steady"][name] * sidecars / 1024, 1),
            "server_statement_core_hours_per_day": round(server_ms * sidecars / 1000 / 3600, 2),
            "server_cores_busy": round(server_ms * sidecars / 1000 / 86_400, 3),
        }
    return out


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.sidecar", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--others", default="0,5000",
                        help="other sessions (over the unix socket) per level, ascending")
    parser.add_argument("--own", type=int, default=10,
                        help="the application's sessions over TCP from this host")
    parser.add_argument("--scrapes", type=int, default=300, help="scrapes per contender per level")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--cadence", type=float, default=15.0,
                        help="seconds between scrapes in the cadence part (last level)")
    parser.add_argument("--cadence-scrapes", type=int, default=8,
                        help="scrapes per contender in the cadence part (0: skip it)")
    parser.add_argument("--exporter-python", default="runtime",
                        help="the exporter's interpreter: runtime (default: .tools/venv-runtime, "
                        "the package and its dependencies only, made on first use), current "
                        "(this one: the test venv, with cryptography), or a path")
    parser.add_argument("--optimize", type=int, choices=(0, 1, 2), default=2,
                        help="the exporter's PYTHONOPTIMIZE (default 2, as the image runs it; 0 "
                        "as a plain pip install runs it)")
    parser.add_argument("--mysqld-exporter-tcp", action="store_true",
                        help="mysqld_exporter connects over TCP from this host's network "
                        "namespace (default: the server's unix socket; see README)")
    parser.add_argument("--profile", type=int, default=0, metavar="SCRAPES",
                        help="py-spy the default exporter over this many scrapes at the last "
                        "level (benchmarks/results/profile-sidecar-N-DATE-TIME.txt)")
    parser.add_argument("--connect-threads", type=int, default=32)
    parser.add_argument("--settle", type=float, default=2.0,
                        help="seconds idle before reading steady RSS")
    parser.add_argument("--out", help="JSON path (default benchmarks/results/sidecar-<date>.json)")
    parser.add_argument("--keep-logs", action="store_true")
    parser.add_argument("--report", metavar="JSON",
                        help="print the tables and the model of an earlier run, run nothing")
    args = parser.parse_args(list(argv))
    args.others = [int(s) for s in args.others.split(",") if s.strip()]
    if not args.others or args.others != sorted(args.others):
        parser.error("--others must be ascending")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.report:
        earlier = json.loads(Path(args.report).read_text())
        print(f"# {earlier['command']}  ({earlier['date']}, {earlier['seconds']} s)\n")
        print(table(earlier))
        return 0
    if shutil.which(MYSQLD_EXPORTER) is None:
        raise SystemExit(f"{MYSQLD_EXPORTER} is not installed: run scripts/setup")

    stop_on_signals()
    started = time.perf_counter()
    result: dict[str, Any] = {**run_header("sidecar", argv, args), "levels": []}
    bench = Bench(args)
    result["rss_breakdown"] = rss_breakdown(bench.python, args.optimize)
    try:
        log(f"starting MariaDB (logs in {bench.logdir})")
        bench.start()
        result["server"] = bench.info
        for others in args.others:
            result["levels"].append(bench.level(others))
    except (KeyboardInterrupt, Stop):
        log("interrupted: stopping everything")
        bench.close()
        return 130
    except Exception:
        log(f"failed; process logs kept in {bench.logdir}")
        args.keep_logs = True
        bench.close()
        raise
    bench.close()
    result["seconds"] = round(time.perf_counter() - started, 1)
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = Path(args.out) if args.out else RESULTS / (
        f"sidecar-{time.strftime('%Y%m%d-%H%M%S')}.json")
    result["model_1000_sidecars"] = fleet_model(result)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"# {result['command']}  ({result['date']}, {result['seconds']} s)\n")
    print(table(result))
    log(f"results in {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

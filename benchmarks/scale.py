"""Scale benchmark: the exporter's scrape against the floor and mysqld_exporter, at
100, 1,000 and 10,000 idle sessions held by this machine's processes.

    .venv/bin/python -m benchmarks.scale --sessions 100,1000,10000 --rounds 7
    .venv/bin/python -m benchmarks.scale --server mysql --performance-schema on ...

See benchmarks/README.md for what is measured and how. Everything runs on loopback
against a throwaway server this script starts and stops (MariaDB 10.11 by default, or
MySQL 9.7 from the prefix scripts/setup fetches); every process it starts is stopped on
exit, on failure and on Ctrl-C.
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
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from benchmarks.holder import raise_nofile
from benchmarks.profile_summary import summarise
from exporter.throwaway import FLAVORS, ThrowawayServer, free_port

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results"
MIB = 1024 * 1024

APP_USER, APP_PASSWORD = "app", "app-password"
EXPORTER_USER, EXPORTER_PASSWORD = "idle_exporter", "exporter-password"
# The collection's phases, and rendering the answer's body (the exporter reports the
# previous answer's, mysql_idle_render_duration_seconds).
PHASES = ("sockets", "owners", "server", "correlate", "total", "render")
MYSQLD_EXPORTER = "/usr/bin/prometheus-mysqld-exporter"
# mysqld_exporter 0.14's collectors on by default; all off, then only the processlist on.
MYSQLD_EXPORTER_DEFAULTS = (
    "global_status",
    "global_variables",
    "slave_status",
    "info_schema.innodb_cmp",
    "info_schema.innodb_cmpmem",
    "info_schema.query_response_time",
)
PROCESSLIST_SQL = "SELECT ID,USER,HOST,DB,COMMAND,TIME FROM information_schema.PROCESSLIST"


class Stop(Exception):
    """SIGTERM or SIGHUP: unwind like Ctrl-C, so every started process is stopped."""


def stop_on_signals() -> None:
    """SIGINT raises KeyboardInterrupt (even if the process started ignoring it), SIGTERM
    and SIGHUP raise Stop: a benchmark unwinds and stops every process it started."""

    def stop(signum: int, _frame: object) -> None:
        raise Stop(signal.Signals(signum).name)

    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGHUP, stop)


def run_header(module: str, argv: Sequence[str] | None,
               args: argparse.Namespace) -> dict[str, Any]:
    """What a benchmark's results begin with: when, the command, the machine, the knobs."""
    return {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "command": f"python -m benchmarks.{module} " + " ".join(
            sys.argv[1:] if argv is None else argv),
        "machine": machine(),
        "args": {k: v for k, v in vars(args).items() if k not in ("out", "keep_logs")},
    }


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def median(values: Sequence[float]) -> float | None:
    return statistics.median(values) if values else None


# --- processes ------------------------------------------------------------------------


PR_SET_PDEATHSIG = 1


def _child_setup() -> None:
    """In the child before exec: SIGTERM when the benchmark dies, even by SIGKILL."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


class Proc:
    """A child process with its output in a log file; stop() ends it and waits.

    Children run in their own session, so Ctrl-C reaches only the benchmark, which then
    stops them in order; they get SIGTERM if the benchmark itself dies."""

    def __init__(self, name: str, argv: Sequence[str], logdir: Path, *,
                 env: dict[str, str] | None = None, stdin: int | None = None,
                 stdout: int | None = None, cwd: Path = REPO) -> None:
        self.name = name
        self.log_path = logdir / f"{name}.log"
        self._log = open(self.log_path, "w")  # noqa: SIM115 (closed in stop)
        self.popen = subprocess.Popen(
            list(argv), cwd=cwd, env={**os.environ, **(env or {})},
            stdin=stdin, stdout=stdout if stdout is not None else self._log,
            stderr=self._log, text=True, start_new_session=True, preexec_fn=_child_setup,
        )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_tail(self, chars: int = 800) -> str:
        with contextlib.suppress(OSError):
            return self.log_path.read_text(errors="replace")[-chars:]
        return ""

    def stop(self) -> None:
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.popen.terminate()
            try:
                self.popen.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(timeout=10)
        self._log.close()


class Holder(Proc):
    """benchmarks/holder.py: holds sessions (or unrelated sockets) and obeys commands."""

    def __init__(self, name: str, args: Sequence[str], logdir: Path) -> None:
        super().__init__(
            name, [sys.executable, "-m", "benchmarks.holder", name, *args], logdir,
            env={"BENCH_PASSWORD": APP_PASSWORD}, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        )
        self.count = 0

    def line(self) -> str:
        assert self.popen.stdout is not None
        text = self.popen.stdout.readline()
        if not text:
            raise RuntimeError(f"{self.name} exited: {self.log_tail()}")
        return text.strip()

    def send(self, command: str) -> None:
        assert self.popen.stdin is not None
        self.popen.stdin.write(command + "\n")
        self.popen.stdin.flush()

    def answer(self) -> tuple[int, float]:
        words = self.line().split()
        if words[0] != "ok":
            raise RuntimeError(f"{self.name}: {' '.join(words)}")
        self.count = int(words[1])
        return self.count, float(words[2])

    def stop(self) -> None:
        if self.alive():
            with contextlib.suppress(OSError, ValueError):
                self.send("exit")
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(timeout=10)
        super().stop()


class Procs:
    """Every process started, stopped in reverse order whatever happens."""

    def __init__(self) -> None:
        self.items: list[Proc] = []

    def add(self, proc: Proc) -> Proc:
        self.items.append(proc)
        return proc

    def stop(self, proc: Proc) -> None:
        proc.stop()
        with contextlib.suppress(ValueError):
            self.items.remove(proc)

    def stop_all(self) -> None:
        while self.items:
            proc = self.items.pop()
            try:
                proc.stop()
            except Exception as error:  # keep stopping the others
                log(f"stopping {proc.name}: {error}")


# --- HTTP and metrics -------------------------------------------------------------------


@dataclass
class Scrape:
    seconds: float
    status: int
    body: str


def http_get(port: int, path: str = "/metrics", timeout: float = 60.0) -> Scrape:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        started = time.perf_counter()
        conn.request("GET", path)
        response = conn.getresponse()
        body = response.read()
        return Scrape(time.perf_counter() - started, response.status, body.decode())
    finally:
        conn.close()


_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def samples(body: str) -> Iterator[tuple[str, dict[str, str], float]]:
    for line in body.splitlines():
        if not line or line[0] == "#":
            continue
        head, _, value = line.rpartition(" ")
        name, _, labels = head.partition("{")
        try:
            number = float(value)
        except ValueError:
            continue
        yield name, dict(_LABEL.findall(labels)), number


def sample_lines(body: str, prefix: str = "") -> int:
    return sum(1 for line in body.splitlines() if line and line[0] != "#"
               and line.startswith(prefix))


def metric(body: str, name: str, **labels: str) -> float | None:
    for sample_name, sample_labels, value in samples(body):
        if sample_name == name and all(sample_labels.get(k) == v for k, v in labels.items()):
            return value
    return None


def phases(body: str) -> dict[str, float]:
    found = {
        labels["phase"]: value
        for name, labels, value in samples(body)
        if name == "mysql_idle_scrape_duration_seconds" and "phase" in labels
    }
    render = metric(body, "mysql_idle_render_duration_seconds")
    if render is not None:
        found["render"] = render
    return found


def wait_http(port: int, path: str, proc: Proc, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not proc.alive():
            raise RuntimeError(f"{proc.name} exited at start: {proc.log_tail()}")
        with contextlib.suppress(OSError, http.client.HTTPException):
            if http_get(port, path, timeout=2).status == 200:
                return
        time.sleep(0.05)
    raise RuntimeError(f"{proc.name} did not answer {path} in time: {proc.log_tail()}")


def rss(pid: int) -> tuple[float, float]:
    """(current RSS, peak RSS) in MiB, from /proc/PID/status (VmRSS, VmHWM)."""
    values = {}
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = int(rest.split()[0]) / 1024
    return values["VmRSS"], values["VmHWM"]


# --- the server ---------------------------------------------------------------------------


CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_split(pid: int) -> tuple[float, float]:
    """utime and stime of the whole process (every thread, dead ones included): its own
    code, and the kernel's work for it (a sock_diag dump's walk of the TCP table,
    syscalls). Seconds, in clock ticks."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rpartition(")")[2].split()
    return int(fields[11]) / CLK_TCK, int(fields[12]) / CLK_TCK


def cpu_seconds(pid: int) -> float:
    """utime + stime of the whole process."""
    return sum(cpu_split(pid))


def server_args(max_sessions: int, nofile: int, performance_schema: bool,
                flavor: str = "mariadb") -> list[str]:
    connections = max_sessions + 200
    # MySQL's community server has no thread pool: one thread per connection.
    threads = ["--thread-handling=pool-of-threads"] if flavor == "mariadb" else []
    return [
        f"--max-connections={connections}",
        *threads,
        f"--open-files-limit={nofile}",
        "--table-open-cache=64",
        "--table-definition-cache=400",
        "--max-connect-errors=1000000",
        "--back-log=1000",
        f"--performance-schema={'ON' if performance_schema else 'OFF'}",
        "--skip-name-resolve",
    ]


# Runs beside the benchmark; when the benchmark's end of the pipe closes (normal exit or
# SIGKILL alike) it stops the server if it still runs and removes its directory.
_REAPER = """
import os, shutil, signal, sys, time
pid, workdir = int(sys.argv[1]), sys.argv[2]
sys.stdin.read()
def ours():
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return workdir.encode() in f.read()
    except OSError:
        return False
for sig, wait in ((signal.SIGCONT, 0), (signal.SIGTERM, 15), (signal.SIGKILL, 5)):
    if not ours():
        break
    os.kill(pid, sig)
    deadline = time.monotonic() + wait
    while ours() and time.monotonic() < deadline:
        time.sleep(0.1)
shutil.rmtree(workdir, ignore_errors=True)
"""


def start_reaper(db: ThrowawayServer) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-c", _REAPER, str(db.pid), str(db.workdir)],
        stdin=subprocess.PIPE, start_new_session=True,
    )


def stop_reaper(reaper: subprocess.Popen[bytes] | None) -> None:
    """Close the reaper's stdin (it then stops the server if that still runs and removes its
    directory) and wait for it."""
    if reaper is not None:
        assert reaper.stdin is not None
        reaper.stdin.close()
        reaper.wait(timeout=30)


class Status:
    """Server counters read from a separate connection, less what the reading costs."""

    def __init__(self, db: ThrowawayServer) -> None:
        self.conn = db.connect()
        first, second = self.read(), self.read()
        self.own = {k: second[k] - first[k] for k in first}

    def read(self) -> dict[str, int]:
        with self.conn.cursor() as cursor:
            cursor.execute("SHOW GLOBAL STATUS WHERE Variable_name IN ('Questions', 'Com_select')")
            return {str(name): int(value) for name, value in cursor.fetchall()}

    def per_call(self, action: Callable[[], object], calls: int) -> dict[str, float]:
        before = self.read()
        for _ in range(calls):
            action()
        after = self.read()
        return {k: (after[k] - before[k] - self.own[k]) / calls for k in before}

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.conn.close()


# --- the three things measured -------------------------------------------------------------


class Exporter:
    def __init__(self, procs: Procs, logdir: Path, name: str, db_port: int,
                 interval: str | None) -> None:
        self.port = free_port()
        self.target = f"127.0.0.1:{db_port}"
        argv = [sys.executable, "-m", "exporter", f"--mysql.address={self.target}",
                f"--mysql.user={EXPORTER_USER}", f"--web.listen-address=127.0.0.1:{self.port}",
                "--log.level=warn"]
        if interval is not None:
            argv.append(f"--server.interval={interval}")
        self.proc = procs.add(Proc(name, argv, logdir,
                                   env={"MYSQL_IDLE_EXPORTER_PASSWORD": EXPORTER_PASSWORD}))
        wait_http(self.port, "/healthz", self.proc)
        self.rss_at_start = rss(self.proc.pid)[0]

    def scrape(self) -> Scrape:
        result = http_get(self.port)
        if result.status != 200:
            raise RuntimeError(f"{self.proc.name} answered {result.status}: {result.body[:300]}")
        return result

    def counter(self, body: str, name: str) -> float:
        value = metric(body, name)
        return value if value is not None else float("nan")


class MysqldExporter:
    def __init__(self, procs: Procs, logdir: Path, my_cnf: Path) -> None:
        self.port = free_port()
        argv = [MYSQLD_EXPORTER, f"--config.my-cnf={my_cnf}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                *(f"--no-collect.{name}" for name in MYSQLD_EXPORTER_DEFAULTS),
                "--collect.info_schema.processlist"]
        self.proc = procs.add(Proc("mysqld_exporter", argv, logdir))
        wait_http(self.port, "/", self.proc)

    def scrape(self) -> Scrape:
        result = http_get(self.port)
        if result.status != 200 or metric(result.body, "mysql_up") != 1:
            raise RuntimeError(f"mysqld_exporter failed: {result.status} {result.body[-300:]}")
        return result


def time_command(argv: Sequence[str]) -> float:
    started = time.perf_counter()
    result = subprocess.run(list(argv), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            timeout=60)
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        raise RuntimeError(f"{argv[0]} failed: {result.stderr.decode(errors='replace')[:300]}")
    return elapsed


def concurrent_scrapes(exporter: Exporter, count: int) -> dict[str, Any]:
    """`count` scrapes sent at once on open connections: how many collections served them."""
    before = exporter.counter(exporter.scrape().body, "mysql_idle_collections_total")
    barrier = threading.Barrier(count)
    seen: list[float] = []
    statuses: list[int] = []
    lock = threading.Lock()

    def one() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", exporter.port, timeout=60)
        try:
            conn.connect()
            barrier.wait(timeout=30)
            conn.request("GET", "/metrics")
            response = conn.getresponse()
            body = response.read().decode()
            with lock:
                statuses.append(response.status)
                seen.append(exporter.counter(body, "mysql_idle_collections_total"))
        finally:
            conn.close()

    threads = [threading.Thread(target=one) for _ in range(count)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    after = exporter.counter(exporter.scrape().body, "mysql_idle_collections_total")
    return {
        "scrapes": count,
        "ok": sum(1 for s in statuses if s == 200),
        "collections": int(after - before - 1),  # the closing scrape collects once itself
        "distinct_snapshots": len(set(seen)),
        "seconds": elapsed,
    }


def record_profile(pid: int, scrape: Callable[[], object], scrapes: int, raw: Path, *,
                   rate: int, gil: bool = False) -> str | None:
    """py-spy's raw collapsed stacks of process `pid` into `raw` while `scrape` runs
    `scrapes` times (with `gil`, only the thread holding the GIL is sampled). Returns why
    it could not, or None."""
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(py_spy).exists():
        return "py-spy not installed (.venv/bin/pip install py-spy)"
    spy = subprocess.Popen(
        [py_spy, "record", "--pid", str(pid), "--rate", str(rate), "--format", "raw",
         "--threads", *(["--gil"] if gil else []), "-o", str(raw)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    try:
        time.sleep(1.0)
        for _ in range(scrapes):
            scrape()
        time.sleep(0.3)
    finally:
        spy.send_signal(signal.SIGINT)
        try:
            spy.wait(timeout=30)
        except subprocess.TimeoutExpired:
            spy.kill()
            spy.wait()
    return None


def profile_stem(name: str) -> Path:
    """Where a profile goes (without its suffix): stamped with the time, so that a run
    never overwrites an earlier profile kept in the results."""
    return RESULTS / f"profile-{name}-{time.strftime('%Y%m%d-%H%M%S')}"


def profile(exporter: Exporter, out: Path, scrapes: int) -> dict[str, Any]:
    """py-spy (sampling, raw collapsed stacks) while `scrapes` scrapes run."""
    raw = out.with_suffix(".txt")
    error = record_profile(exporter.proc.pid, exporter.scrape, scrapes, raw, rate=250)
    if error is not None:
        return {"error": error}
    return {"raw": str(raw.relative_to(REPO)), **summarise(raw)}


# --- one level -----------------------------------------------------------------------------


@dataclass
class Level:
    sessions: int
    setup_seconds: float
    unrelated: int
    scrape: list[float] = field(default_factory=list)
    cached: list[float] = field(default_factory=list)
    phases: dict[str, list[float]] = field(default_factory=lambda: {p: [] for p in PHASES})
    floor_ss: list[float] = field(default_factory=list)
    floor_ss_info: list[float] = field(default_factory=list)
    # `ss -p`: the sockets with the processes that hold them, which the exporter's owners
    # phase finds too (a socket's owner is what the status page names); plain `ss` does not.
    floor_ss_processes: list[float] = field(default_factory=list)
    floor_cli: list[float] = field(default_factory=list)
    mysqld_exporter: list[float] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        floor = [a + b for a, b in zip(self.floor_ss, self.floor_cli, strict=True)]
        ratios = [a / b for a, b in zip(self.scrape, floor, strict=True)]
        floor_processes = [a + b for a, b in zip(self.floor_ss_processes, self.floor_cli,
                                                 strict=True)]
        cached_ratios = [a / b for a, b in zip(self.cached, self.floor_ss, strict=True)]
        vs_mysqld = [a / b for a, b in zip(self.scrape, self.mysqld_exporter, strict=True)]
        return {
            "sessions": self.sessions,
            "unrelated_connections": self.unrelated,
            "setup_seconds": self.setup_seconds,
            "rounds": len(self.scrape),
            "median_ms": {
                "scrape_interval_0": ms(median(self.scrape)),
                "scrape_cached_default_interval": ms(median(self.cached)),
                **{f"phase_{p}": ms(median(v)) for p, v in self.phases.items()},
                "floor_ss": ms(median(self.floor_ss)),
                "floor_ss_with_tcp_info": ms(median(self.floor_ss_info)),
                "floor_ss_with_processes": ms(median(self.floor_ss_processes)),
                "floor_mariadb_cli": ms(median(self.floor_cli)),
                "floor": ms(median(floor)),
                "floor_with_processes": ms(median(floor_processes)),
                "mysqld_exporter": ms(median(self.mysqld_exporter)),
            },
            "median_ratio": {
                "scrape_over_floor": rounded(median(ratios)),
                "scrape_over_floor_with_processes": rounded(median(
                    [a / b for a, b in zip(self.scrape, floor_processes, strict=True)])),
                "cached_over_ss": rounded(median(cached_ratios)),
                "cached_over_ss_with_processes": rounded(median(
                    [a / b for a, b in zip(self.cached, self.floor_ss_processes,
                                           strict=True)])),
                "scrape_over_mysqld_exporter": rounded(median(vs_mysqld)),
            },
            "raw_seconds": {
                "scrape_interval_0": self.scrape,
                "scrape_cached_default_interval": self.cached,
                "phases": self.phases,
                "floor_ss": self.floor_ss,
                "floor_ss_with_tcp_info": self.floor_ss_info,
                "floor_ss_with_processes": self.floor_ss_processes,
                "floor_mariadb_cli": self.floor_cli,
                "mysqld_exporter": self.mysqld_exporter,
            },
            **self.extra,
        }


def ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 2)


def rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


class Bench:
    def __init__(self, args: argparse.Namespace, performance_schema: bool) -> None:
        self.args = args
        self.ps = performance_schema
        self.procs = Procs()
        self.logdir = Path(tempfile.mkdtemp(prefix="mysql-idle-bench-"))
        self.db: ThrowawayServer | None = None
        self.status: Status | None = None
        self.reaper: subprocess.Popen[bytes] | None = None
        self.idle: list[Holder] = []
        self.dummy: Holder | None = None
        self.dummy_port = 0
        self.levels: list[dict[str, Any]] = []
        self.info: dict[str, Any] = {}

    # setup

    def start_server(self, nofile: int) -> ThrowawayServer:
        biggest = max(self.args.sessions)
        db = FLAVORS[self.args.server](
            server_args(biggest + self.args.busy, nofile, self.ps, self.args.server))
        self.db = db
        started = time.perf_counter()
        db.start()
        self.reaper = start_reaper(db)
        self.info["server_start_seconds"] = round(time.perf_counter() - started, 3)
        db.execute(
            f"CREATE USER '{APP_USER}'@'%' IDENTIFIED BY '{APP_PASSWORD}'",
            f"CREATE USER '{EXPORTER_USER}'@'%' IDENTIFIED BY '{EXPORTER_PASSWORD}'",
            f"GRANT PROCESS ON *.* TO '{EXPORTER_USER}'@'%'",
            f"GRANT SELECT ON performance_schema.* TO '{EXPORTER_USER}'@'%'",
        )
        (version, max_conn, open_files, ps), = db.execute(
            "SELECT VERSION(), @@max_connections, @@open_files_limit, @@performance_schema"
        )
        if int(max_conn) < biggest + self.args.busy + 50:
            raise RuntimeError(
                f"the server allows only {max_conn} connections (open_files_limit "
                f"{open_files}): raise RLIMIT_NOFILE"
            )
        self.info.update(server=db.product, server_version=version, max_connections=max_conn,
                         open_files_limit=open_files, performance_schema=bool(ps))
        self.my_cnf = self.logdir / "exporter.cnf"
        self.my_cnf.write_text(
            f"[client]\nuser={EXPORTER_USER}\npassword={EXPORTER_PASSWORD}\n"
            f"host=127.0.0.1\nport={db.port}\n"
        )
        self.my_cnf.chmod(0o600)
        self.status = Status(db)
        return db

    def start_holders(self) -> None:
        assert self.db is not None
        for i in range(self.args.holders):
            holder = Holder(f"bench-idle-{i}", ["mysql", "127.0.0.1", str(self.db.port),
                                                 APP_USER, f"127.0.0.{i + 2}"], self.logdir)
            self.procs.add(holder)
            self.idle.append(holder)
        busy = Holder("bench-busy", ["mysql", "127.0.0.1", str(self.db.port), APP_USER, ""],
                      self.logdir)
        self.procs.add(busy)
        if self.args.busy:
            busy.send(f"busy {self.args.busy}")
            busy.answer()
        self.dummy = Holder("bench-unrelated", ["dummy"], self.logdir)
        self.procs.add(self.dummy)
        self.dummy_port = int(self.dummy.line().split()[1])

    def grow_to(self, sessions: int) -> float:
        """Open sessions until the holders hold `sessions` in all; wall seconds taken."""
        started = time.perf_counter()
        holders = len(self.idle)
        for i, holder in enumerate(self.idle):
            wanted = sessions // holders + (1 if i < sessions % holders else 0)
            if wanted > holder.count:
                holder.send(f"open {wanted - holder.count} {self.args.connect_threads}")
            else:
                holder.send("open 0")
        for holder in self.idle:
            holder.answer()
        return time.perf_counter() - started

    def open_unrelated(self) -> None:
        assert self.dummy is not None
        if self.args.unrelated > self.dummy.count:
            self.dummy.send(f"open {self.args.unrelated - self.dummy.count}")
            self.dummy.answer()

    # measuring

    def floor_ss(self, with_info: bool = False, with_processes: bool = False) -> float:
        assert self.db is not None
        flags = "-tn" + ("i" if with_info else "") + ("p" if with_processes else "")
        return time_command(["ss", flags, "state", "all", f"( dport = :{self.db.port} )"])

    def floor_cli(self) -> float:
        assert self.db is not None
        return time_command(["mariadb", "--no-defaults", "-h127.0.0.1", f"-P{self.db.port}",
                             "-uroot", "-e", PROCESSLIST_SQL])

    def level(self, sessions: int, first: bool) -> dict[str, Any]:
        assert self.db is not None and self.status is not None
        log(f"level {sessions}: opening sessions")
        setup = self.grow_to(sessions)
        log(f"level {sessions}: {sessions} sessions held, opened in {setup:.1f}s")
        level = Level(sessions, setup, self.args.unrelated)
        level.extra["loadavg_at_start"] = [round(x, 2) for x in os.getloadavg()]
        mysqld = MysqldExporter(self.procs, self.logdir, self.my_cnf)
        cached = Exporter(self.procs, self.logdir, f"exporter-cached-{sessions}", self.db.port,
                          None)
        fresh = Exporter(self.procs, self.logdir, f"exporter-{sessions}", self.db.port, "0")
        level.extra["rss_mib_idle_at_start"] = round(fresh.rss_at_start, 1)
        first_scrape = fresh.scrape()
        level.extra["first_scrape_ms"] = ms(first_scrape.seconds)
        level.extra["first_scrape_phases_ms"] = {
            k: ms(v) for k, v in phases(first_scrape.body).items()}
        for _ in range(2):  # warm up every path
            fresh.scrape(), cached.scrape(), mysqld.scrape()
            self.floor_ss(), self.floor_ss(True), self.floor_ss(with_processes=True)
            self.floor_cli()

        if first and self.args.unrelated:
            # The same scrape before the unrelated sockets exist: cost must not follow them.
            without: list[float] = []
            without_ss: list[float] = []
            without_phases: dict[str, list[float]] = {p: [] for p in PHASES}
            for _ in range(self.args.rounds):
                result = fresh.scrape()
                without.append(result.seconds)
                for phase, value in phases(result.body).items():
                    without_phases.setdefault(phase, []).append(value)
                without_ss.append(self.floor_ss())
            log(f"level {sessions}: opening {self.args.unrelated} unrelated connections")
            self.open_unrelated()
            fresh.scrape(), cached.scrape()
            level.extra["without_unrelated_median_ms"] = {
                "scrape_interval_0": ms(median(without)),
                "floor_ss": ms(median(without_ss)),
                **{f"phase_{p}": ms(median(v)) for p, v in without_phases.items()},
            }
        level.unrelated = self.dummy.count if self.dummy else 0

        reads_before = fresh.counter(fresh.scrape().body, "mysql_idle_server_reads_total")
        cached_reads_before = cached.counter(cached.scrape().body,
                                             "mysql_idle_server_reads_total")

        def run_fresh() -> None:
            result = fresh.scrape()
            level.scrape.append(result.seconds)
            for phase, value in phases(result.body).items():
                level.phases.setdefault(phase, []).append(value)

        def run_cached() -> None:
            level.cached.append(cached.scrape().seconds)

        def run_floor() -> None:
            level.floor_ss.append(self.floor_ss())
            level.floor_cli.append(self.floor_cli())
            level.floor_ss_info.append(self.floor_ss(True))
            level.floor_ss_processes.append(self.floor_ss(with_processes=True))

        def run_mysqld() -> None:
            level.mysqld_exporter.append(mysqld.scrape().seconds)

        order = [run_fresh, run_cached, run_floor, run_mysqld]
        for round_number in range(self.args.rounds):
            shift = round_number % len(order)
            for step in order[shift:] + order[:shift]:
                step()
        log(f"level {sessions}: scrape {ms(median(level.scrape))} ms, floor "
            f"{ms(median([a + b for a, b in zip(level.floor_ss, level.floor_cli, strict=True)]))}"
            f" ms, mysqld_exporter {ms(median(level.mysqld_exporter))} ms")

        body = fresh.scrape().body
        cached_body = cached.scrape().body
        level.extra["server_reads_during_rounds"] = {
            # less the read of the closing scrape itself (interval 0 reads on every scrape)
            "interval_0": fresh.counter(body, "mysql_idle_server_reads_total") - reads_before - 1,
            "default_interval": cached.counter(cached_body, "mysql_idle_server_reads_total")
            - cached_reads_before,
        }
        level.extra["series"] = {
            "exporter": sample_lines(body),
            "exporter_per_session": sample_lines(body, "mysql_idle_session_headroom_seconds{"),
            "exporter_body_bytes": len(body.encode()),
            "mysqld_exporter": sample_lines(mysqld.scrape().body),
        }
        level.extra["exporter_source"] = next(
            (labels.get("source") for name, labels, _ in samples(body)
             if name == "mysql_idle_server_info"), None)
        level.extra["sessions_by_state"] = {
            f"{labels.get('state')}": 0.0 for name, labels, _ in samples(body)
            if name == "mysql_idle_sessions"
        }
        for name, labels, value in samples(body):
            if name == "mysql_idle_sessions":
                level.extra["sessions_by_state"][labels.get("state", "")] += value

        # Statements per scrape, from the server's counters (less the reading's own).
        queries = {
            "interval_0": self.status.per_call(fresh.scrape, self.args.query_scrapes),
            "default_interval": self.status.per_call(cached.scrape, self.args.query_scrapes),
            "mysqld_exporter": self.status.per_call(mysqld.scrape, self.args.query_scrapes),
        }
        level.extra["queries_per_scrape"] = queries
        level.extra["queries_counted_by_exporter_total"] = fresh.counter(
            fresh.scrape().body, "mysql_idle_server_queries_total")

        level.extra["concurrent"] = concurrent_scrapes(fresh, self.args.concurrent)
        log(f"level {sessions}: {self.args.concurrent} concurrent scrapes -> "
            f"{level.extra['concurrent']['collections']} collection(s)")

        if first and self.args.rss_scrapes:
            samples_mib = []
            for i in range(self.args.rss_scrapes):
                fresh.scrape()
                if (i + 1) % max(1, self.args.rss_scrapes // 10) == 0:
                    samples_mib.append(round(rss(fresh.proc.pid)[0], 2))
            level.extra["rss_over_scrapes"] = {
                "scrapes": self.args.rss_scrapes,
                "rss_mib_every_tenth": samples_mib,
                "growth_mib_after_first_tenth": round(samples_mib[-1] - samples_mib[0], 2),
            }
            log(f"level {sessions}: RSS over {self.args.rss_scrapes} scrapes {samples_mib}")

        if self.args.profile and sessions == max(self.args.sessions):
            out = profile_stem(f"{sessions}-ps-{'on' if self.ps else 'off'}")
            log(f"level {sessions}: profiling with py-spy")
            level.extra["profile"] = profile(fresh, out, self.args.profile)

        time.sleep(self.args.settle)
        now, peak = rss(fresh.proc.pid)
        cached_now, cached_peak = rss(cached.proc.pid)
        mysqld_now, mysqld_peak = rss(mysqld.proc.pid)
        level.extra["rss_mib"] = {
            "exporter_steady": round(now, 1), "exporter_peak": round(peak, 1),
            "exporter_cached_steady": round(cached_now, 1),
            "exporter_cached_peak": round(cached_peak, 1),
            "mysqld_exporter_steady": round(mysqld_now, 1),
            "mysqld_exporter_peak": round(mysqld_peak, 1),
        }
        level.extra["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
        for proc in (fresh.proc, cached.proc, mysqld.proc):
            self.procs.stop(proc)
        return level.summary()

    def run(self) -> dict[str, Any]:
        nofile = raise_nofile()
        self.info["rlimit_nofile"] = nofile
        log(f"performance_schema {'ON' if self.ps else 'OFF'}: starting "
            f"{FLAVORS[self.args.server].product} "
            f"(logs in {self.logdir})")
        self.start_server(nofile)
        self.start_holders()
        for i, sessions in enumerate(self.args.sessions):
            started = time.perf_counter()
            result = self.level(sessions, first=i == 0)
            result["level_seconds"] = round(time.perf_counter() - started, 1)
            self.levels.append(result)
        return {"server": self.info, "levels": self.levels}

    def close(self) -> None:
        self.procs.stop_all()
        if self.status is not None:
            self.status.close()
        if self.db is not None:
            self.db.destroy()
        stop_reaper(self.reaper)
        if not self.args.keep_logs:
            shutil.rmtree(self.logdir, ignore_errors=True)


# --- report --------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    def command(*argv: str) -> str:
        with contextlib.suppress(OSError, subprocess.SubprocessError, IndexError):
            done = subprocess.run(argv, capture_output=True, text=True, timeout=10)
            return (done.stdout + done.stderr).strip().splitlines()[0]
        return ""

    return {
        "nproc": os.cpu_count(),
        "cpu": next((line.split(":", 1)[1].strip() for line in
                     Path("/proc/cpuinfo").read_text().splitlines()
                     if line.startswith("model name")), ""),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "mysqld_exporter": command(MYSQLD_EXPORTER, "--version"),
        "ss": command("ss", "-V"),
        "mariadb_cli": command("mariadb", "--version"),
        "ip_local_port_range": Path("/proc/sys/net/ipv4/ip_local_port_range").read_text(
        ).split(),
    }


def server_name(server: dict[str, Any]) -> str:
    """"MariaDB 10.11.x" or "MySQL 9.7.x" (results before --server said only MariaDB's)."""
    if "server_version" in server:
        return f"{server['server']} {server['server_version']}"
    return f"MariaDB {server['mariadb_version']}"


def fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 10 else f"{value:.0f}"
    return str(value)


def table(result: dict[str, Any]) -> str:
    lines = []
    for run in result["runs"]:
        ps = "ON" if run["server"]["performance_schema"] else "OFF"
        source = run["levels"][0].get("exporter_source") if run["levels"] else None
        lines.append(f"\nperformance_schema={ps} (exporter source: {source}), "
                     f"{server_name(run['server'])}, "
                     f"{result['args']['unrelated']} unrelated loopback connections, "
                     f"{result['args']['busy']} busy sessions, medians of "
                     f"{result['args']['rounds']} alternating rounds (ms); load average "
                     f"at the start of each level: "
                     f"{', '.join(str(lv['loadavg_at_start'][0]) for lv in run['levels'])}\n")
        lines.append("| sessions | setup s | scrape (interval 0) | cached scrape (30s) | "
                     "sockets | owners | server | correlate | total | render | floor: ss | "
                     "floor: mariadb CLI | floor | mysqld_exporter | scrape / floor | "
                     "scrape / mysqld_exporter |")
        lines.append("|" + "---|" * 16)
        for level in run["levels"]:
            m, r = level["median_ms"], level["median_ratio"]
            lines.append("| " + " | ".join(fmt(v) for v in (
                level["sessions"], round(level["setup_seconds"], 1),
                m["scrape_interval_0"], m["scrape_cached_default_interval"],
                m["phase_sockets"], m["phase_owners"], m["phase_server"], m["phase_correlate"],
                m["phase_total"], m.get("phase_render"), m["floor_ss"],
                m["floor_mariadb_cli"], m["floor"],
                m["mysqld_exporter"], r["scrape_over_floor"], r["scrape_over_mysqld_exporter"],
            )) + " |")
        lines.append("\n| sessions | first scrape ms | queries/scrape (interval 0; Questions, "
                     "Com_select) | queries/scrape cached | mysqld_exporter queries/scrape | "
                     "series | per-session series | 50 concurrent → collections | "
                     "RSS idle at start MiB | RSS steady / peak MiB | mysqld_exporter RSS MiB |")
        lines.append("|" + "---|" * 11)
        for level in run["levels"]:
            q = level["queries_per_scrape"]
            rss_mib = level["rss_mib"]
            lines.append("| " + " | ".join(fmt(v) for v in (
                level["sessions"], level["first_scrape_ms"],
                f"{q['interval_0']['Questions']:.2f}, {q['interval_0']['Com_select']:.2f}",
                f"{q['default_interval']['Questions']:.2f}",
                f"{q['mysqld_exporter']['Questions']:.2f}",
                level["series"]["exporter"], level["series"]["exporter_per_session"],
                f"{level['concurrent']['collections']} "
                f"({level['concurrent']['ok']}/{level['concurrent']['scrapes']} ok)",
                level["rss_mib_idle_at_start"],
                f"{rss_mib['exporter_steady']} / {rss_mib['exporter_peak']}",
                rss_mib["mysqld_exporter_steady"],
            )) + " |")
        for level in run["levels"]:
            m, r = level["median_ms"], level["median_ratio"]
            if "floor_ss_with_processes" in m:
                lines.append(
                    f"\nAt {level['sessions']} sessions: cached scrape / `ss` "
                    f"{fmt(r['cached_over_ss'])}; `ss -p` (which names each socket's process, "
                    f"as the owners phase does) {fmt(m['floor_ss_with_processes'])} ms; scrape "
                    f"/ (`ss -p` + CLI) {fmt(r['scrape_over_floor_with_processes'])}; cached "
                    f"scrape / `ss -p` {fmt(r['cached_over_ss_with_processes'])}.")
            if "without_unrelated_median_ms" in level:
                w, m = level["without_unrelated_median_ms"], level["median_ms"]
                lines.append(
                    f"\nAt {level['sessions']} sessions, without → with "
                    f"{level['unrelated_connections']} unrelated connections: scrape "
                    f"{fmt(w['scrape_interval_0'])} → {fmt(m['scrape_interval_0'])} ms, sockets "
                    f"phase {fmt(w['phase_sockets'])} → {fmt(m['phase_sockets'])} ms, owners "
                    f"{fmt(w['phase_owners'])} → {fmt(m['phase_owners'])} ms; `ss` floor "
                    f"{fmt(w['floor_ss'])} → {fmt(m['floor_ss'])} ms.")
            if "rss_over_scrapes" in level:
                o = level["rss_over_scrapes"]
                lines.append(
                    f"\nRSS over {o['scrapes']} consecutive scrapes at {level['sessions']} "
                    f"sessions (MiB, every tenth): {o['rss_mib_every_tenth']}; growth after "
                    f"the first tenth {o['growth_mib_after_first_tenth']} MiB.")
    return "\n".join(lines)


# --- main ----------------------------------------------------------------------------------


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.scale", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sessions", default="100,1000,10000",
                        help="idle sessions per level, ascending, comma-separated")
    parser.add_argument("--rounds", type=int, default=7, help="alternating rounds per level")
    parser.add_argument("--holders", type=int, default=4,
                        help="processes holding the idle sessions, each from its own "
                        "source IP 127.0.0.2, 127.0.0.3, ...")
    parser.add_argument("--busy", type=int, default=4, help="sessions running SELECT SLEEP")
    parser.add_argument("--unrelated", type=int, default=3000,
                        help="loopback connections to another port (2 sockets each)")
    parser.add_argument("--connect-threads", type=int, default=32,
                        help="threads per holder opening sessions")
    parser.add_argument("--server", choices=tuple(FLAVORS), default="mariadb",
                        help="the throwaway server: mariadb (Debian's 10.11) or mysql (9.7 "
                        "from Debian sid, fetched by scripts/setup)")
    parser.add_argument("--performance-schema", choices=("off", "on", "both"), default="off")
    parser.add_argument("--concurrent", type=int, default=50)
    parser.add_argument("--rss-scrapes", type=int, default=1000,
                        help="consecutive scrapes at the first level, RSS sampled")
    parser.add_argument("--query-scrapes", type=int, default=10,
                        help="scrapes per Questions/Com_select measurement")
    parser.add_argument("--profile", type=int, default=0, metavar="SCRAPES",
                        help="py-spy the exporter over this many scrapes at the largest level")
    parser.add_argument("--settle", type=float, default=2.0,
                        help="seconds idle before reading steady RSS")
    parser.add_argument("--out", help="JSON results path (default benchmarks/results/"
                        "scale-<date>.json)")
    parser.add_argument("--keep-logs", action="store_true")
    args = parser.parse_args(list(argv))
    args.sessions = [int(s) for s in args.sessions.split(",") if s.strip()]
    if args.sessions != sorted(args.sessions) or not args.sessions:
        parser.error("--sessions must be ascending")
    return args


def check_ports(args: argparse.Namespace) -> None:
    low, high = (int(v) for v in
                 Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    per_ip = max(args.sessions) // args.holders + 1
    if high - low + 1 < max(per_ip, args.unrelated) + 1000:
        raise SystemExit(f"net.ipv4.ip_local_port_range {low}-{high} is too small for "
                         f"{per_ip} sessions per source IP")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    check_ports(args)
    for tool in ("ss", "mariadb", MYSQLD_EXPORTER):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is not installed")

    stop_on_signals()
    started = time.perf_counter()
    result: dict[str, Any] = {**run_header("scale", argv, args), "runs": []}
    schemas = {"off": [False], "on": [True], "both": [False, True]}[args.performance_schema]
    for ps in schemas:
        bench = Bench(args, ps)
        try:
            run = bench.run()
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
        result["runs"].append(run)
    result["seconds"] = round(time.perf_counter() - started, 1)
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = Path(args.out) if args.out else RESULTS / (
        f"scale-{time.strftime('%Y%m%d-%H%M%S')}-ps-{args.performance_schema}.json")
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"# {result['command']}  ({result['date']}, {result['seconds']} s)\n")
    print(table(result))
    log(f"results in {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

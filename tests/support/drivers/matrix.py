"""The driver matrix: each driver, with its defaults and with each framework setting that
matters, runs as a real process against a throwaway server whose wait_timeout is a few
seconds, while the real exporter watches every server at once. What the exporter showed
(process label, states, drops counted) and what the application saw when it used its
connection again become the rows of the README's tables.

All runs go at once: runs of one driver go to different servers (their process label is
the same), runs that need a longer wait_timeout (Hikari will not retire connections sooner
than 10 or 30 s) to servers of their own; one exporter watches all of them.
"""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import pytest

from tests.support import servers
from tests.support.drivers import programs
from tests.support.exporter_process import ExporterProcess, Metrics

# The server flavors the matrix runs on, each with its own table in the README.
FLAVORS = servers.FLAVORS
# What a flavor's clients need beyond the contract's variables. MySQL's default login,
# caching_sha2_password, without TLS sends the password encrypted with the server's RSA key;
# Connector/J fetches that key only when allowed to.
FLAVOR_ENV: dict[str, dict[str, str]] = {
    "mysql": {"DB_JDBC_OPTIONS": "?allowPublicKeyRetrieval=true"},
}
WAIT_TIMEOUT = 8  # seconds; the servers' wait_timeout (and interactive_timeout)
HEADROOM = 4  # --risk.headroom: at_risk from 4 s of idleness on
SCRAPE_EVERY = 0.25  # seconds between scrapes
# After a session left the server: how long the exporter is watched (it reads the server
# every --server.interval, 1 s: two reads and ten scrapes) before the application is told
# to use its connection again; and how long after that the count must stay as it is.
SETTLE = 2.5
README = programs.REPO / "README.md"


@dataclass(frozen=True)
class Variant:
    setting: str  # DB_SETTING: "" for the defaults
    shown: str  # how the README names it
    env: tuple[tuple[str, str], ...] = ()
    wait_timeout: int = WAIT_TIMEOUT


@dataclass(frozen=True)
class Driver:
    title: str
    command: Callable[[], list[str]]  # builds what it needs, fails saying what is missing
    variants: tuple[Variant, ...]  # the first is the defaults


DRIVERS = (
    Driver("Django + mysqlclient", programs.django_command, (
        Variant("", "`CONN_MAX_AGE=None`"),
        Variant("conn_max_age", "`CONN_MAX_AGE=4`, `CONN_HEALTH_CHECKS=True`",
                (("DB_MAX_AGE", "4"),)),
    )),
    Driver("SQLAlchemy 2 + PyMySQL, a pool", programs.sqlalchemy_command, (
        Variant("", "defaults"),
        Variant("pool_pre_ping", "`pool_pre_ping=True`"),
        Variant("pool_recycle", "`pool_recycle=4`", (("DB_RECYCLE", "4"),)),
    )),
    Driver("Node.js mysql2", programs.node_command, (
        Variant("", "`createConnection`"),
        Variant("pool", "`createPool`"),
    )),
    Driver("Go database/sql + go-sql-driver", programs.go_command, (
        Variant("", "defaults"),
        Variant("max_idle_time", "`SetConnMaxIdleTime(1500ms)`", (("DB_MAX_IDLE", "1.5"),)),
    )),
    Driver("Java HikariCP + MariaDB Connector/J", programs.java_command, (
        Variant("", "defaults, a pool of one"),
        # Hikari's smallest idleTimeout is 10 s; its housekeeper (which applies it) runs
        # every 30 s unless told otherwise.
        Variant("idle_timeout", "`idleTimeout=10s`, `minimumIdle=0`, housekeeping every 1 s",
                (("DB_IDLE_TIMEOUT", "10000"), ("DB_HOUSEKEEPING_MS", "1000")),
                wait_timeout=18),
        # Hikari's smallest maxLifetime is 30 s.
        Variant("max_lifetime", "`maxLifetime=30s`", (("DB_MAX_LIFETIME", "30000"),),
                wait_timeout=36),
    )),
    Driver("`mariadb` CLI", programs.cli_command, (
        Variant("", "interactive, on a terminal"),
    )),
)


class Server(Protocol):
    """What the matrix needs of a throwaway server (tests/support)."""

    port: int

    def create_user(self, user: str, *, grants: Sequence[str] = ...,
                    password: str | None = ...) -> Any: ...

    def execute(self, *statements: str, args: Sequence[object] | None = ...
                ) -> list[tuple[Any, ...]]: ...

    def cleanup(self) -> None: ...


ServerStarter = Callable[[Sequence[str]], Server]


@dataclass
class Run:
    """One driver with one variant: its process, and what was seen of it."""

    driver: Driver
    variant: Variant
    server: Server | None = None
    wait_timeout: int = 0
    process: programs.DriverProcess | None = None
    session_id: int = 0
    ready_at: float = 0.0
    label: str | None = None
    snapshots: list[frozenset[str]] = field(default_factory=list)
    gone_at: float | None = None  # when its first session had left the server
    dropped: float = 0.0  # mysql_idle_sessions_dropped_total when it was told to query
    dropped_after: float | None = None  # the same, SETTLE seconds after the answer
    query_at: float | None = None
    result: str | None = None
    result_at: float = 0.0
    events: list[tuple[float, str]] = field(default_factory=list)

    @property
    def name(self) -> str:
        return f"{self.driver.title} [{self.variant.setting or 'defaults'}]"

    @property
    def target(self) -> str:
        assert self.server is not None
        return f"127.0.0.1:{self.server.port}"


def plan_servers(runs: Sequence[Run]) -> list[tuple[int, list[Run]]]:
    """(wait_timeout, runs) per server: no two runs of one driver on one server."""
    slots: list[tuple[int, list[Run]]] = []
    for run in runs:
        for timeout, members in slots:
            if timeout == run.variant.wait_timeout and all(
                member.driver is not run.driver for member in members
            ):
                members.append(run)
                break
        else:
            slots.append((run.variant.wait_timeout, [run]))
    return slots


def measure(flavor: str, start_server: ServerStarter) -> list[Run]:
    """Every driver and variant at once against servers of `flavor`; returns the runs with
    what was seen."""
    extra_env = FLAVOR_ENV.get(flavor, {})
    runs = [Run(driver, variant) for driver in DRIVERS for variant in driver.variants]
    commands = {driver.title: driver.command() for driver in DRIVERS}  # builds first
    node_modules = str(programs.node_modules())
    servers: list[Server] = []
    exporter: ExporterProcess | None = None
    password = secrets.token_hex(8)
    try:
        for timeout, members in plan_servers(runs):
            server = start_server([f"--wait-timeout={timeout}",
                                   f"--interactive-timeout={timeout}"])
            servers.append(server)
            server.create_user("exporter", grants=("PROCESS",), password=password)
            server.create_user("app", grants=(), password=password)
            server.execute("CREATE DATABASE appdb", "GRANT ALL ON appdb.* TO 'app'@'%'")
            for run in members:
                run.server, run.wait_timeout = server, timeout
        exporter = ExporterProcess(
            [*(f"--mysql.address=127.0.0.1:{server.port}" for server in servers),
             "--mysql.user=exporter", f"--risk.headroom={HEADROOM}", "--server.interval=1",
             "--sessions.top=100"],
            env={"MYSQL_IDLE_EXPORTER_PASSWORD": password},
        ).start()
        for run in runs:
            assert run.server is not None
            env = {"DB_HOST": "127.0.0.1", "DB_PORT": str(run.server.port), "DB_USER": "app",
                   "DB_PASSWORD": password, "DB_NAME": "appdb", "DB_SETTING": run.variant.setting,
                   "NODE_PATH": node_modules, **dict(run.variant.env), **extra_env}
            run.process = programs.DriverProcess(run.name, commands[run.driver.title], env)
            run.process.start()
        _observe(runs, servers, exporter)
    finally:
        for run in runs:
            if run.process is not None:
                run.process.close()
        if exporter is not None:
            exporter.stop()
        for server in servers:
            server.cleanup()
    return runs


def _states(metrics: Metrics, target: str, label: str) -> frozenset[str]:
    return frozenset(labels["state"] for labels, count in
                     metrics.find("mysql_idle_sessions", target=target, process=label) if count)


def _label(metrics: Metrics, run: Run) -> str | None:
    found = metrics.find("mysql_idle_session_headroom_seconds", target=run.target,
                         session_id=str(run.session_id))
    return found[0][0]["process"] if found else None


def _drain(run: Run) -> None:
    """Takes what the program printed since: its ready line, events, the answer."""
    assert run.process is not None
    while not run.process.lines.empty():
        line = run.process.next_line(timeout=0)
        if line.text.startswith("ready ") and not run.ready_at:
            run.session_id, run.ready_at = int(line.text.split()[1]), line.at
        elif line.text.startswith("event "):
            run.events.append((line.at, line.text.removeprefix("event ")))
        elif line.text.startswith(("ok ", "error ")) and run.query_at is not None:
            run.result, run.result_at = line.text, line.at
        else:
            pytest.fail(f"{run.name} printed {line.text!r} unasked")


def _observe(runs: list[Run], servers: list[Server], exporter: ExporterProcess) -> None:
    started = time.monotonic()
    deadline = started + max(run.wait_timeout for run in runs) + 90
    while any(run.dropped_after is None for run in runs):
        now = time.monotonic()
        assert now < deadline, [(run.name, run.gone_at, run.result) for run in runs]
        metrics = exporter.scrape()
        waiting = {id(run.server) for run in runs if run.gone_at is None}
        # A session is judged gone only by a processlist read after its ready line came: one
        # opened while the servers were being listed is not in their lists yet.
        listed_at = time.monotonic()
        live = {id(server): {row[0] for row in server.execute("SHOW PROCESSLIST")}
                for server in servers if id(server) in waiting}
        for run in runs:
            _drain(run)
            if not run.ready_at:
                assert now - started < 60, f"{run.name} was not ready within 60 s"
                continue
            if run.label is None:
                run.label = _label(metrics, run)
            label = run.label or ""
            dropped = metrics.get("mysql_idle_sessions_dropped_total", target=run.target,
                                  process=label) or 0.0
            if run.query_at is None:
                if run.label is not None:
                    run.snapshots.append(_states(metrics, run.target, label))
                if (run.gone_at is None and run.ready_at < listed_at
                        and run.session_id not in live[id(run.server)]):
                    run.gone_at = now
                assert now - run.ready_at < run.wait_timeout + 15, (
                    f"{run.name}: its session never left the server")
                if run.gone_at is not None and now - run.gone_at >= SETTLE:
                    run.dropped = dropped
                    assert run.process is not None
                    run.query_at = run.process.send("query")
            elif run.result is not None and now - run.result_at >= SETTLE:
                if run.dropped_after is None:
                    run.dropped_after = dropped
            elif run.result is None:
                assert now - run.query_at < 60, f"{run.name}: no answer to its query"
        time.sleep(SCRAPE_EVERY)


# --- what the runs showed, as table rows -------------------------------------------------


def states_seen(snapshots: Sequence[frozenset[str]]) -> str:
    """The states the exporter showed, in order, each that lasted two scrapes in a row (a
    state shorter than that, the instant between the server's reset and a driver closing
    its socket, no Prometheus would see); "(none)" once it showed no socket at all."""
    seen: list[frozenset[str]] = []
    for index in range(1, len(snapshots)):
        current = snapshots[index]
        if current == snapshots[index - 1] and (not seen or seen[-1] != current):
            seen.append(current)
    return " → ".join("+".join(sorted(states)) or "(none)" for states in seen)


def application_saw(run: Run) -> str:
    assert run.result is not None and run.query_at is not None
    parts = [f"`{text}` event when the server drops it"
             for at, text in run.events if at < run.query_at]
    printed = [f"prints `{text}`" for at, text in run.events if at >= run.query_at]
    word, code, rest = [*run.result.split(" ", 2), "", ""][:3]
    if word == "ok":
        if int(code) == run.session_id:
            answer = "no error, the same session"
        elif printed:  # it printed an error, yet answered: it ran the statement again
            answer = "runs it again on a new session"
        else:
            answer = "no error: a new session"
        parts.append(", then ".join([*printed, answer]))
    else:
        kind, _, message = rest.partition(" ")
        if code == "-":
            answer = f"`{message.strip()}`"
        elif kind == "ERROR":  # a client that prints its errors
            answer = f"prints `ERROR {code}`"
        else:
            answer = f"error {code} `{kind}`"
        parts.append(", then ".join([*printed, answer]))
    return "; then ".join(parts)


def _failed(run: Run) -> bool:
    assert run.result is not None and run.query_at is not None
    return run.result.startswith("error") or any(at < run.query_at for at, _ in run.events)


def setting_changes(base: Run, run: Run) -> str:
    if run is base:
        return "(the defaults)"
    parts = []
    if base.dropped and not run.dropped:
        parts.append("no drop: the session is closed before the timeout")
    elif run.dropped:
        parts.append("the session still dies idle (counted)")
    if _failed(base) and not _failed(run):
        parts.append("no error")
    elif _failed(run):
        parts.append("still an error")
    return "; ".join(parts) or "nothing"


HEADER = ("driver", "setting", "`process` label", "states seen", "drops counted",
          "what the application sees", "what the setting changes")


def rows(runs: Sequence[Run]) -> list[tuple[str, ...]]:
    table = []
    for driver in DRIVERS:
        mine = [run for run in runs if run.driver is driver]
        for run in mine:
            table.append((driver.title, run.variant.shown, f"`{run.label}`",
                          states_seen(run.snapshots), f"{run.dropped:g}",
                          application_saw(run), setting_changes(mine[0], run)))
    return table


def render(table: Sequence[tuple[str, ...]]) -> str:
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |"
              for row in table]
    return "\n".join(lines)


def _markers(flavor: str) -> tuple[str, str]:
    return f"<!-- driver-matrix:{flavor} -->", f"<!-- /driver-matrix:{flavor} -->"


def documented(flavor: str, readme: Path = README) -> str | None:
    """The README's table for this server flavor, between its two markers."""
    start, end = _markers(flavor)
    found = re.search(re.escape(start) + r"\n(.*?)\n" + re.escape(end), readme.read_text(),
                      re.DOTALL)
    return found.group(1).strip() if found else None


def write(flavor: str, table: str, readme: Path = README) -> None:
    """Puts the measured table into the README (DRIVER_MATRIX_UPDATE=1)."""
    start, end = _markers(flavor)
    text = readme.read_text()
    pattern = re.escape(start) + r"\n.*?\n" + re.escape(end)
    assert re.search(pattern, text, re.DOTALL), f"README has no {start} ... {end} section"
    readme.write_text(re.sub(pattern, lambda _: f"{start}\n{table}\n{end}", text,
                             flags=re.DOTALL))

"""The grants the README documents are the least that work, and less degrades gracefully.

Every user is created as the README says (`WITH MAX_USER_CONNECTIONS 3`), with PROCESS,
SELECT on performance_schema.*, both or neither, on a server with performance_schema OFF
and one with it ON; a stand-in application holds two idle sessions on each. The real
exporter must stay up in every case, say in mysql_idle_server_info{source} which source
it reads, and match the application's sessions whenever the grants let it see them."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.support.canary import alive, exporter_for
from tests.support.exporter_process import ExporterProcess, Metrics, Worker
from tests.support.scrapes import PASSWORD_ENV, states, summary, wait_for
from tests.support.servers import ServerFactory, TestServer

APP = "grant-app"
NO_PROCESS_NOTE = "no PROCESS privilege"


@dataclass(frozen=True)
class Grant:
    name: str
    statements: tuple[str, ...]  # {user} stands for 'user'@'%'


PROCESS = "GRANT PROCESS ON *.* TO {user}"
SELECT_PS = "GRANT SELECT ON performance_schema.* TO {user}"


@dataclass(frozen=True)
class Expect:
    source: str
    full_processlist: float | None  # None: not asserted (see the test's docstring)
    app_states: dict[str, float]


def create_user(server: TestServer, user: str, grants: tuple[str, ...]) -> str:
    password = f"{user}-Pw-1"
    server.execute(
        "CREATE USER %s@'%%' IDENTIFIED BY %s WITH MAX_USER_CONNECTIONS 3", args=(user, password))
    for grant in grants:
        server.execute(grant.format(user=f"'{user}'@'%'"))
    return password


@dataclass
class Setup:
    server: TestServer
    worker: Worker
    exporters: dict[str, ExporterProcess]

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.server.port}"


def start(factory: ServerFactory, users: dict[str, tuple[str, ...]], *args: str) -> Setup:
    server = factory(*args, monitor_user=False)
    app_password = create_user(server, "grant_app", ())
    worker = Worker(APP, "127.0.0.1", server.port, "grant_app", app_password, connections=2)
    exporters = {}
    for user, grants in users.items():
        password = create_user(server, user, grants)
        exporters[user] = exporter_for(
            f"127.0.0.1:{server.port}", f"--mysql.user={user}", "--server.interval=0",
            env={PASSWORD_ENV: password},
        ).start()
    return Setup(server, worker, exporters)


@pytest.fixture
def setups() -> Iterator[list[Setup]]:
    started: list[Setup] = []
    yield started
    for setup in started:
        for exporter in setup.exporters.values():
            exporter.stop()
        setup.worker.close()


def source_of(metrics: Metrics, target: str) -> str | None:
    found = metrics.find("mysql_idle_server_info", target=target)
    return found[0][0]["source"] if found else None


def check(setup: Setup, user: str, expect: Expect) -> None:
    exporter, target = setup.exporters[user], setup.target

    def settled(m: Metrics) -> bool:
        return (m.get("mysql_idle_up", target=target) == 1
                and states(m, APP) == expect.app_states)

    metrics = wait_for(exporter, settled, f"{user}: up 1 and {APP} {expect.app_states}")
    for _ in range(4):  # every scrape reads the server again (--server.interval=0)
        metrics = exporter.scrape()
        assert metrics.get("mysql_idle_up", target=target) == 1, (user, summary(metrics))
        assert states(metrics, APP) == expect.app_states, (user, summary(metrics))
        assert source_of(metrics, target) == expect.source, (user, summary(metrics))
        if expect.full_processlist is not None:
            assert metrics.get("mysql_idle_full_processlist", target=target) == \
                expect.full_processlist, (user, summary(metrics))
        time.sleep(0.1)
    assert alive(exporter), user


def test_grants_with_performance_schema_off_and_on(
    db_server_factory: ServerFactory, setups: list[Setup]
) -> None:
    """With performance_schema ON, SELECT on it without PROCESS shows every session on
    MariaDB 10.11 (its threads table does not check PROCESS), so the application's sessions
    match; the exporter still reports mysql_idle_full_processlist 0 for that user (it goes
    by the PROCESS grant), which only means it will not call anything a phantom. MySQL
    reads performance_schema.processlist (with each session's own wait_timeout) where it
    may, which shows other users' sessions only with PROCESS."""
    off = start(db_server_factory, {"only_process": (PROCESS,), "no_grants": ()},
                "--performance-schema=OFF")  # MySQL's default is ON, MariaDB's OFF
    setups.append(off)
    on = start(db_server_factory, {
        "only_process": (PROCESS,),
        "process_and_ps": (PROCESS, SELECT_PS),
        "only_ps": (SELECT_PS,),
        "no_grants": (),
    }, "--performance-schema=ON")
    setups.append(on)
    mysql = on.server.is_mysql

    matched = {"idle": 2.0}
    unmatched = {"unmatched": 2.0}
    ps_source = "performance_schema.processlist" if mysql else "performance_schema.threads"
    check(off, "only_process", Expect("information_schema", 1.0, matched))
    check(off, "no_grants", Expect("information_schema", 0.0, unmatched))
    # performance_schema ON but not readable: information_schema, silently and correctly.
    check(on, "only_process", Expect("information_schema", 1.0, matched))
    check(on, "process_and_ps", Expect(ps_source, 1.0, matched))
    check(on, "only_ps", Expect(ps_source, None, unmatched if mysql else matched))
    check(on, "no_grants", Expect("information_schema", 0.0, unmatched))

    for setup in setups:
        for user, exporter in setup.exporters.items():
            log = exporter.stop()
            assert "Traceback" not in log, f"{user}:\n{log}"
            assert log.count(" up: ") == 1, f"{user}: one 'up' line expected:\n{log}"
            # Degraded without PROCESS: said once, not once per read.
            expected = 0 if user in ("only_process", "process_and_ps") else 1
            assert log.count(NO_PROCESS_NOTE) == expected, f"{user}:\n{log}"

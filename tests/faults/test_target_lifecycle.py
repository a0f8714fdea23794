"""A target's life as the exporter sees it: down when the exporter starts, going away and
coming back on the same port, a wrong password, a user without PROCESS, and a server that
resolves client names. The exporter stays alive through all of it and the socket side keeps
flowing."""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator

import pytest

from exporter.throwaway import free_port
from tests.faults.common import (
    PASSWORD_ENV,
    create_users,
    session_ids,
    states,
    summary,
    wait_for,
)
from tests.support import servers
from tests.support.exporter_process import ExporterProcess, Metrics, Worker
from tests.support.servers import TestServer

WAIT_TIMEOUT = 60


def start_server(flavor: str, *extra: str, port: int | None = None) -> TestServer:
    return servers.start_server(flavor, [f"--wait-timeout={WAIT_TIMEOUT}", *extra], port=port)


def start_exporter(port: int, password: str, user: str = "exporter") -> ExporterProcess:
    return ExporterProcess(
        [f"--mysql.address=127.0.0.1:{port}", f"--mysql.user={user}", "--server.interval=1",
         "--risk.headroom=5"],
        env={PASSWORD_ENV: password},
    ).start()


def alive(exporter: ExporterProcess) -> bool:
    return exporter.process is not None and exporter.process.poll() is None


@pytest.fixture(scope="module")
def server(db_flavor: str) -> Iterator[tuple[TestServer, str]]:
    db = start_server(db_flavor)
    try:
        password = secrets.token_hex(8)
        create_users(db, password)
        yield db, password
    finally:
        db.cleanup()


def test_a_target_down_at_start_comes_up_when_the_server_does(db_flavor: str) -> None:
    port = free_port()
    password = secrets.token_hex(8)
    target = f"127.0.0.1:{port}"
    exporter = start_exporter(port, password)
    db: TestServer | None = None
    worker: Worker | None = None
    try:
        for _ in range(3):
            metrics = exporter.scrape()
            assert metrics.get("mysql_idle_up", target=target) == 0, summary(metrics)
            time.sleep(0.3)
        db = start_server(db_flavor, port=port)
        create_users(db, password)
        worker = Worker("late-app", "127.0.0.1", port, "app", password)
        wait_for(exporter, lambda m: m.get("mysql_idle_up", target=target) == 1
                 and states(m, "late-app") == {"idle": 1},
                 "up 1 with the worker's connection idle once the server runs")
        assert alive(exporter)
    finally:
        if worker is not None:
            worker.close()
        exporter.stop()
        if db is not None:
            db.cleanup()


def test_a_target_that_goes_away_and_comes_back_on_the_same_port(db_flavor: str) -> None:
    db = start_server(db_flavor)
    password = secrets.token_hex(8)
    create_users(db, password)
    target = f"127.0.0.1:{db.port}"
    before = Worker("before-app", "127.0.0.1", db.port, "app", password)
    after: Worker | None = None
    exporter = start_exporter(db.port, password)
    try:
        wait_for(exporter, lambda m: states(m, "before-app") == {"idle": 1},
                 "the first worker's connection idle")
        db.stop()
        # The server said goodbye (FIN on shutdown): the worker still holds a dead socket.
        wait_for(exporter, lambda m: m.get("mysql_idle_up", target=target) == 0
                 and states(m, "before-app") == {"dropped": 1},
                 "up 0 with the first worker's socket dropped", timeout=8)
        for _ in range(3):
            time.sleep(0.4)
            metrics = exporter.scrape()
            assert metrics.get("mysql_idle_up", target=target) == 0, summary(metrics)
            assert states(metrics, "before-app") == {"dropped": 1}, summary(metrics)
            assert metrics.find("mysql_idle_client_idle_seconds_count", target=target,
                                process="before-app")
            assert alive(exporter)

        db.start()  # same datadir, same port
        after = Worker("after-app", "127.0.0.1", db.port, "app", password)
        metrics = wait_for(exporter, lambda m: m.get("mysql_idle_up", target=target) == 1
                           and states(m, "after-app") == {"idle": 1},
                           "up 1 again with the new worker's connection idle", timeout=12)
        assert states(metrics, "before-app") == {"dropped": 1}, summary(metrics)
        assert metrics.get("mysql_idle_sessions_dropped_total", target=target,
                           process="before-app") == 1
        assert alive(exporter)
    finally:
        before.close()
        if after is not None:
            after.close()
        exporter.stop()
        db.cleanup()


def test_a_wrong_password_is_down_and_never_shown(server) -> None:
    db, _ = server
    wrong = "Wr0ng-" + secrets.token_hex(12)
    target = f"127.0.0.1:{db.port}"
    exporter = start_exporter(db.port, wrong)
    output = ""
    try:
        pages = []
        for _ in range(3):
            metrics = exporter.scrape()
            assert metrics.get("mysql_idle_up", target=target) == 0, summary(metrics)
            pages.append(metrics.text)
            time.sleep(0.4)
        for path in ("/", "/healthz", f"/probe?target={target}"):
            pages.append(exporter.get(path)[1])
        assert alive(exporter)
        cmdline = open(f"/proc/{exporter.pid}/cmdline", "rb").read().decode()  # noqa: SIM115
    finally:
        output = exporter.stop()
    assert output, "the exporter logged nothing about a target it cannot log in to"
    for text, where in ((output, "log output"), (cmdline, "command line"),
                        *((page, "HTTP answer") for page in pages)):
        assert wrong not in text, f"the password appears in the exporter's {where}"


def test_a_user_without_process_sees_no_sessions_and_calls_sockets_unmatched(server) -> None:
    db, password = server
    db.execute(f"CREATE USER IF NOT EXISTS 'noproc'@'%' IDENTIFIED BY '{password}'")
    target = f"127.0.0.1:{db.port}"
    worker = Worker("noproc-app", "127.0.0.1", db.port, "app", password, connections=2)
    exporter = start_exporter(db.port, password, user="noproc")
    history: list[Metrics] = []
    try:
        wait_for(exporter, lambda m: m.get("mysql_idle_up", target=target) == 1
                 and m.get("mysql_idle_full_processlist", target=target) == 0
                 and states(m, "noproc-app") == {"unmatched": 2},
                 "up 1, full_processlist 0 and the worker's sockets unmatched",
                 history=history)
        for _ in range(4):  # several server reads (--server.interval=1)
            time.sleep(0.4)
            history.append(exporter.scrape())
        seen = [states(m, "noproc-app") for m in history]
        assert all("phantom" not in s for s in seen), seen
        assert seen[-1] == {"unmatched": 2}, seen
        assert history[-1].get("mysql_idle_full_processlist", target=target) == 0
        assert alive(exporter)
    finally:
        worker.close()
        exporter.stop()


def test_a_server_that_resolves_names_still_matches_loopback_clients(db_flavor: str) -> None:
    db = start_server(db_flavor, "--skip-name-resolve=OFF")  # MySQL reads "=0" as ON
    password = secrets.token_hex(8)
    worker: Worker | None = None
    exporter: ExporterProcess | None = None
    try:
        assert db.execute("SELECT @@skip_name_resolve") == [(0,)]
        create_users(db, password)
        worker = Worker("resolved-app", "127.0.0.1", db.port, "app", password)
        # MariaDB shows the loopback client by name, not by address; MySQL 9.7 by address
        # all the same (127.0.0.1 is not looked up).
        host = "127.0.0.1" if db.is_mysql else "localhost"
        assert session_ids(db, "app", f"{host}:{worker.ports[0]}")
        exporter = start_exporter(db.port, password)
        history: list[Metrics] = []
        wait_for(exporter, lambda m: states(m, "resolved-app") == {"idle": 1},
                 "the worker's connection matched (idle) by name:port", history=history)
        for _ in range(3):
            time.sleep(0.4)
            metrics = exporter.scrape()
            assert states(metrics, "resolved-app") == {"idle": 1}, summary(metrics)
        assert all("phantom" not in states(m, "resolved-app") for m in history)
    finally:
        if worker is not None:
            worker.close()
        if exporter is not None:
            exporter.stop()
        db.cleanup()

"""A server that stops answering: frozen with SIGSTOP (it still completes TCP handshakes in
the kernel but says nothing), or a path that swallows every packet. Every scrape must still
answer within Prometheus's scrape timeout with the target down and the socket side intact,
and the target must come back when the server does."""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Iterator

import pytest

from tests.faults.common import (
    PASSWORD_ENV,
    SCRAPE_TIMEOUT_HEADER,
    create_users,
    states,
    summary,
    wait_for,
)
from tests.faults.conftest import NetnsServer
from tests.support.exporter_process import ExporterProcess, Worker
from tests.support.netns import NsExporterProcess, NsWorker
from tests.support.servers import TestServer, start_server

SCRAPE_TIMEOUT = 2.0
HEADERS = {SCRAPE_TIMEOUT_HEADER: str(SCRAPE_TIMEOUT)}
HUNG_SCRAPES = 4


@pytest.fixture(scope="module")
def server(db_flavor: str) -> Iterator[tuple[TestServer, str]]:
    db = start_server(db_flavor, ["--wait-timeout=60"])
    try:
        password = secrets.token_hex(8)
        create_users(db, password)
        yield db, password
    finally:
        db.cleanup()


def exporter_args(target: str) -> list[str]:
    # --server.interval=0: every scrape asks the server, none is served from an old read.
    return [f"--mysql.address={target}", "--mysql.user=exporter", "--server.interval=0",
            "--risk.headroom=5"]


def check_hung_then_back(exporter: ExporterProcess, target: str, process: str,
                         hang: Callable[[], None], heal: Callable[[], None]) -> None:
    wait_for(exporter, lambda m: states(m, process) == {"idle": 1},
             "the worker's connection matched and idle", headers=HEADERS)
    hang()
    try:
        for _ in range(HUNG_SCRAPES):
            started = time.monotonic()
            metrics = exporter.scrape(headers=HEADERS)
            elapsed = time.monotonic() - started
            assert elapsed < SCRAPE_TIMEOUT, f"a scrape took {elapsed:.2f}s"
            assert metrics.get("mysql_idle_up", target=target) == 0, summary(metrics)
            # The socket side goes on: the worker's socket is still counted and timed, and
            # a silent server is no evidence of a dead session.
            seen = states(metrics, process)
            assert sum(seen.values()) == 1 and not {"phantom", "dropped"} & set(seen), seen
            assert metrics.find("mysql_idle_client_idle_seconds_count", target=target,
                                process=process), summary(metrics)
            assert exporter.process is not None and exporter.process.poll() is None
    finally:
        heal()
    wait_for(exporter, lambda m: m.get("mysql_idle_up", target=target) == 1
             and states(m, process) == {"idle": 1},
             "the target back up with the worker's connection idle", timeout=12,
             headers=HEADERS)


def test_a_frozen_server_answers_every_scrape_in_time_and_comes_back(server) -> None:
    db, password = server
    target = f"127.0.0.1:{db.port}"
    worker = Worker("frozen-app", "127.0.0.1", db.port, "app", password)
    exporter = ExporterProcess(exporter_args(target), env={PASSWORD_ENV: password}).start()
    try:
        check_hung_then_back(exporter, target, "frozen-app", db.pause, db.resume)
    finally:
        db.resume()
        worker.close()
        exporter.stop()


@pytest.mark.netns
def test_a_path_that_drops_everything_answers_every_scrape_in_time(netns: NetnsServer) -> None:
    pair, db = netns.pair, netns.db
    worker = NsWorker(pair, "blackhole-app", db.host, db.port, "app", netns.password)
    exporter = NsExporterProcess(pair, exporter_args(netns.target),
                                 env={PASSWORD_ENV: netns.password}).start()
    try:
        check_hung_then_back(exporter, netns.target, "blackhole-app", pair.drop_all,
                             pair.unblock)
    finally:
        pair.unblock()
        worker.close()
        exporter.stop()

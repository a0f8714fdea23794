"""Concurrent scrapes share one collection, so a burst of scrapes (several Prometheus
servers, a retry storm, a hostile client hammering /metrics) never multiplies the
database's load: the database sees at most two statements per collection (one read, and
a second one only when a connection newer than the last read shows up during it).

The burst is made deterministic by freezing the server (SIGSTOP) while it arrives: the
first scrape's collection is stuck in its server read, and the other 49 must join it."""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pymysql
import pytest

from tests.support.canary import alive, exporter_for
from tests.support.exporter_process import ExporterProcess, Metrics, Worker, parse
from tests.support.mariadb import MariaDBFactory, ThrowawayMariaDB
from tests.support.scrapes import PASSWORD_ENV, states, summary
from tests.support.waiting import until

pytestmark = pytest.mark.mariadb

BURST = 50
APP = "burst-app"


class Questions:
    """The server's Questions counter read from a root connection of our own, less the
    statements that reading it costs."""

    def __init__(self, server: ThrowawayMariaDB) -> None:
        self.conn: pymysql.connections.Connection[Any] = server.connect()
        first, second = self._read(), self._read()
        self.own_cost = second - first  # each read counts itself
        assert self.own_cost in (1, 2), self.own_cost

    def _read(self) -> int:
        with self.conn.cursor() as cursor:
            cursor.execute("SHOW GLOBAL STATUS LIKE 'Questions'")
            row = cursor.fetchone()
        assert row is not None
        return int(row[1])

    def mark(self) -> int:
        return self._read()

    def since(self, mark: int) -> int:
        """Statements by everybody else since `mark`."""
        return self._read() - mark - self.own_cost

    def close(self) -> None:
        self.conn.close()


@pytest.fixture
def setup(mariadb_factory: MariaDBFactory) -> Iterator[tuple[ThrowawayMariaDB, ExporterProcess]]:
    server = mariadb_factory()
    app = server.create_user("burst_app", grants=())
    worker = Worker(APP, "127.0.0.1", server.port, app.user, app.password, connections=3)
    exporter = exporter_for(
        f"127.0.0.1:{server.port}", f"--mysql.user={server.exporter_user}",
        "--server.interval=0", env={PASSWORD_ENV: server.exporter_password},
    )
    try:
        exporter.start()
        yield server, exporter
    finally:
        exporter.stop()
        worker.close()
        server.resume()


def burst(exporter: ExporterProcess, count: int, started: threading.Barrier | None = None,
          ) -> list[tuple[int, str, float]]:
    def one(_: int) -> tuple[int, str, float]:
        if started is not None:
            started.wait(10)
        began = time.monotonic()
        status, body = exporter.get("/metrics", timeout=30)
        return status, body, time.monotonic() - began

    with ThreadPoolExecutor(max_workers=count) as pool:
        return list(pool.map(one, range(count)))


def requests_taken(port: int) -> int:
    """Connections to a local port whose request the server has read: its end of the
    connection holds no unread bytes (Recv-Q 0) while the client's sent bytes are
    acknowledged (Send-Q 0), from `ss`."""
    def queues(direction: str) -> list[tuple[int, int]]:
        result = subprocess.run(["ss", "-tnH", "state", "established", f"( {direction} )"],
                                capture_output=True, text=True, timeout=10, check=True)
        return [(int(f[0]), int(f[1])) for f in (line.split() for line in
                                                 result.stdout.splitlines())]
    clients = queues(f"dport = :{port}")
    servers = queues(f"sport = :{port}")
    if len(servers) < len(clients) or any(send for _, send in clients):
        return 0
    return sum(1 for recv, _ in servers if recv == 0)


def collections(metrics: Metrics) -> float:
    value = metrics.get("mysql_idle_collections_total")
    assert value is not None, metrics.text[:2000]
    return value


def queries(metrics: Metrics, target: str) -> float:
    value = metrics.get("mysql_idle_server_queries_total", target=target)
    assert value is not None, metrics.text[:2000]
    return value


def test_a_burst_of_scrapes_during_one_collection_shares_it(
    setup: tuple[ThrowawayMariaDB, ExporterProcess],
) -> None:
    server, exporter = setup
    target = f"127.0.0.1:{server.port}"
    warm = exporter.scrape()  # connects; the app's sockets are known from here on
    assert warm.get("mysql_idle_up", target=target) == 1, summary(warm)
    assert states(warm, APP) == {"idle": 3}, summary(warm)
    # Our counter's own connection to the server, opened before the last scrape so that
    # the burst's collection knows it (a newer one would make it read a second time).
    questions = Questions(server)
    before = exporter.scrape()
    try:
        mark = questions.mark()
        server.pause()  # the next collection's server read cannot finish
        barrier = threading.Barrier(BURST + 1)
        results: list[tuple[int, str, float]] = []
        runner = threading.Thread(target=lambda: results.extend(burst(exporter, BURST, barrier)))
        runner.start()
        barrier.wait(10)
        # All fifty requests read by the exporter, so each is waiting on the one collection
        # (aiohttp runs a request's handler as soon as it has parsed it).
        until(lambda: requests_taken(exporter.port) >= BURST,
              "the exporter to read all fifty requests", timeout=20)
        server.resume()
        runner.join(30)
        assert not runner.is_alive()
        others = questions.since(mark)
    finally:
        server.resume()
        questions.close()

    assert len(results) == BURST
    assert all(status == 200 for status, _, _ in results), [s for s, _, _ in results]
    scraped = [parse(body) for _, body, _ in results]
    # One collection answered all fifty...
    seen = {collections(m) for m in scraped}
    assert seen == {collections(before) + 1}, seen
    for metrics in scraped:
        assert metrics.get("mysql_idle_up", target=target) == 1, summary(metrics)
        assert states(metrics, APP) == {"idle": 3}, summary(metrics)
    # ...with one statement (timeouts and processlist, packed in one row), as the exporter
    # counts it and as the server counts it.
    sent = {queries(m, target) - queries(before, target) for m in scraped}
    assert sent == {1}, sent
    assert others <= 1, f"the server counted {others} statements for one collection"
    assert alive(exporter)


def test_unsynchronised_bursts_cost_at_most_two_statements_per_collection(
    setup: tuple[ThrowawayMariaDB, ExporterProcess],
) -> None:
    server, exporter = setup
    target = f"127.0.0.1:{server.port}"
    before = exporter.scrape()
    questions = Questions(server)
    try:
        mark = questions.mark()
        results = []
        for _ in range(3):
            results += burst(exporter, BURST)
        others = questions.since(mark)
    finally:
        questions.close()
    assert all(status == 200 for status, _, _ in results)
    scraped = [parse(body) for _, body, _ in results]
    ran = max(collections(m) for m in scraped) - collections(before)
    assert 1 <= ran < len(results), ran
    sent = max(queries(m, target) for m in scraped) - queries(before, target)
    assert sent <= 2 * ran, (sent, ran)
    assert others <= 2 * ran, f"the server counted {others} statements for {ran} collections"
    assert alive(exporter)

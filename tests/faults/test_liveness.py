"""`mysql_idle_up` is true at every scrape, also between server reads (--server.interval):
the exporter pings the server on its open connection (no statement) when no read is due,
so a server that freezes or dies is reported down by the very next scrape."""

from __future__ import annotations

import os
import secrets
import signal
import time

from tests.support.exporter_process import ExporterProcess, Metrics
from tests.support.scrapes import PASSWORD_ENV, SCRAPE_TIMEOUT_HEADER, create_users, wait_for
from tests.support.servers import ServerFactory

SCRAPE_TIMEOUT = 2.0
HEADERS = {SCRAPE_TIMEOUT_HEADER: str(SCRAPE_TIMEOUT)}
# Without the ping, up stayed 1 for up to this long after the server stopped.
INTERVAL = 30


def scrapes_until_down(exporter: ExporterProcess, target: str, limit: int = 5) -> int:
    """Scrape until mysql_idle_up is 0; how many scrapes that took (each within its
    timeout)."""
    for count in range(1, limit + 1):
        started = time.monotonic()
        metrics = exporter.scrape(headers=HEADERS)
        assert time.monotonic() - started < SCRAPE_TIMEOUT
        if metrics.get("mysql_idle_up", target=target) == 0:
            return count
    return limit + 1


def up(target: str) -> object:
    return lambda m: m.get("mysql_idle_up", target=target) == 1


def pings(metrics: Metrics, target: str) -> float:
    return metrics.get("mysql_idle_server_pings_total", target=target)


def test_up_follows_a_frozen_then_killed_server_at_the_next_scrape(
    db_server_factory: ServerFactory,
) -> None:
    db = db_server_factory(monitor_user=False)
    password = secrets.token_hex(8)
    create_users(db, password)
    target = f"127.0.0.1:{db.port}"
    exporter = ExporterProcess(
        [f"--mysql.address={target}", "--mysql.user=exporter",
         f"--server.interval={INTERVAL}s"],
        env={PASSWORD_ENV: password},
    ).start()
    try:
        wait_for(exporter, up(target), "the first read", headers=HEADERS)
        # Between reads: pings only, no statement.
        before = exporter.scrape(headers=HEADERS)
        after = exporter.scrape(headers=HEADERS)
        assert pings(after, target) == pings(before, target) + 1
        assert (after.get("mysql_idle_server_queries_total", target=target)
                == before.get("mysql_idle_server_queries_total", target=target))

        db.pause()  # SIGSTOP: the kernel still holds the connection, nobody answers
        try:
            assert scrapes_until_down(exporter, target) == 1
        finally:
            db.resume()
        wait_for(exporter, up(target), "up again once the server answers", timeout=10,
                 headers=HEADERS)
        wait_for(exporter, lambda m: pings(m, target) > 0, "a ping between reads again",
                 headers=HEADERS)

        assert db.pid is not None
        os.kill(db.pid, signal.SIGKILL)
        assert scrapes_until_down(exporter, target) == 1
    finally:
        exporter.stop()

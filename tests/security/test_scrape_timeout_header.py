"""A scraper's X-Prometheus-Scrape-Timeout-Seconds is input, not truth: `inf`, `1e308` or
`1e12` once failed every concurrent scrape's server read with OverflowError. Concurrent
scrapes with such headers against a real exporter and a real server must all answer
`mysql_idle_up 1`."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.support.exporter_process import ExporterProcess, parse
from tests.support.mariadb import ThrowawayMariaDB

pytestmark = pytest.mark.mariadb

HEADER = "X-Prometheus-Scrape-Timeout-Seconds"
HOSTILE = ["inf", "1e308", "1e12", "nan", "-inf", "0", "garbage"]


@pytest.fixture
def exporter(mariadb: ThrowawayMariaDB) -> Iterator[ExporterProcess]:
    process = ExporterProcess(
        [f"--mysql.address=127.0.0.1:{mariadb.port}", f"--mysql.user={mariadb.exporter_user}",
         "--server.interval=0"],
        env={"MYSQL_IDLE_EXPORTER_PASSWORD": mariadb.exporter_password},
    )
    with process:
        yield process


def test_concurrent_scrapes_with_huge_or_nan_timeouts_all_read_the_server(
    exporter: ExporterProcess, mariadb: ThrowawayMariaDB,
) -> None:
    target = f"127.0.0.1:{mariadb.port}"

    def scrape(value: str) -> tuple[str, int, str]:
        status, body = exporter.get("/metrics", headers={HEADER: value}, timeout=30)
        return value, status, body

    # Three rounds of every value at once: each round shares one collection or starts one.
    with ThreadPoolExecutor(max_workers=len(HOSTILE)) as pool:
        results = list(pool.map(scrape, HOSTILE * 3))
    for value, status, body in results:
        assert status == 200, (value, status, body[:300])
        metrics = parse(body)
        assert metrics.get("mysql_idle_up", target=target) == 1, (value, body[:2000])
    output = exporter.stop()
    assert "OverflowError" not in output, output[-2000:]

"""Helpers shared by the fault tests: bounded polling and readable metric summaries."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from exporter.throwaway import ThrowawayServer
from tests.support.exporter_process import ExporterProcess, Metrics

PASSWORD_ENV = "MYSQL_IDLE_EXPORTER_PASSWORD"
SCRAPE_TIMEOUT_HEADER = "X-Prometheus-Scrape-Timeout-Seconds"
SUMMARY_PREFIXES = (
    "mysql_idle_up", "mysql_idle_sessions{", "mysql_idle_correlation_working",
    "mysql_idle_full_processlist",
)


def states(metrics: Metrics, process: str) -> dict[str, float]:
    """The non-zero states of one process's sockets, e.g. {"idle": 1.0}."""
    return {labels["state"]: value
            for labels, value in metrics.find("mysql_idle_sessions", process=process) if value}


def summary(metrics: Metrics) -> str:
    lines = [line for line in metrics.text.splitlines()
             if line.startswith(SUMMARY_PREFIXES) and not line.endswith(" 0.0")]
    return "; ".join(lines)


def wait_for(exporter: ExporterProcess, predicate: Callable[[Metrics], bool], what: str,
             timeout: float = 10.0, interval: float = 0.3,
             headers: dict[str, str] | None = None,
             history: list[Metrics] | None = None) -> Metrics:
    """Scrape until `predicate` holds; fail with the last scrape's summary after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        metrics = exporter.scrape(headers=headers)
        if history is not None:
            history.append(metrics)
        if predicate(metrics):
            return metrics
        if time.monotonic() > deadline:
            pytest.fail(f"not within {timeout}s: {what}; last scrape: {summary(metrics)}")
        time.sleep(interval)


def session_ids(db: ThrowawayServer, user: str, host_like: str = "%") -> list[int]:
    rows = db.execute("SELECT ID FROM information_schema.PROCESSLIST "
                      f"WHERE USER = '{user}' AND HOST LIKE '{host_like}'")
    return [int(row[0]) for row in rows]


def kill_sessions(db: ThrowawayServer, user: str, host_like: str = "%") -> int:
    """KILL the sessions of `user` whose client (HOST) is like `host_like`; returns how
    many there were."""
    ids = session_ids(db, user, host_like)
    for session_id in ids:
        db.execute(f"KILL {session_id}")
    return len(ids)


def create_users(db: ThrowawayServer, password: str) -> None:
    """'exporter' with PROCESS and 'app' without, from anywhere."""
    db.execute(
        f"CREATE USER 'exporter'@'%' IDENTIFIED BY '{password}'",
        "GRANT PROCESS ON *.* TO 'exporter'@'%'",
        f"CREATE USER 'app'@'%' IDENTIFIED BY '{password}'",
    )

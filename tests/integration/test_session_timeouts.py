"""A session that changes its own wait_timeout after the exporter's last read (MySQL shows
each session's own value in performance_schema.variables_by_thread): the exporter reads it
again when the connection talked and its old limit would make it at risk, instead of
reporting a false at_risk until the old expiry."""

from __future__ import annotations

import secrets
import time

from tests.support.exporter_process import ExporterProcess, Metrics, Worker
from tests.support.scrapes import PASSWORD_ENV, create_users, states, wait_for
from tests.support.servers import start_server

SHORT, HEADROOM = 8, 4  # the session's own limit at the exporter's read, and --risk.headroom


def headroom(metrics: Metrics, process: str) -> float:
    [(_, value)] = metrics.find("mysql_idle_min_headroom_seconds", process=process)
    return value


def test_set_session_wait_timeout_after_the_read_is_picked_up_on_mysql() -> None:
    db = start_server("mysql", ["--wait-timeout=600"])
    password = secrets.token_hex(8)
    try:
        create_users(db, password)
        db.execute("GRANT SELECT ON performance_schema.* TO 'exporter'@'%'")
        worker = Worker("lengthened-app", "127.0.0.1", db.port, "app", password)
        # Its own limit, far below the server's: the exporter's first read sees it.
        assert worker.send(f"sql 0 SET SESSION wait_timeout = {SHORT}") == "ok 0"
        exporter = ExporterProcess(
            [f"--mysql.address=127.0.0.1:{db.port}", "--mysql.user=exporter",
             "--server.interval=30s", f"--risk.headroom={HEADROOM}"],
            env={PASSWORD_ENV: password}).start()
        try:
            metrics = wait_for(exporter, lambda m: states(m, "lengthened-app") == {"idle": 1},
                               "the worker's session idle")
            assert headroom(metrics, "lengthened-app") <= SHORT
            # After the read (the next one is 30 s away), the session lengthens its limit.
            assert worker.send("sql 0 SET SESSION wait_timeout = 3600") == "ok 0"
            changed = time.monotonic()
            seen: list[dict[str, float]] = []
            while time.monotonic() - changed < SHORT + 2:
                metrics = exporter.scrape()
                seen.append(states(metrics, "lengthened-app"))
                time.sleep(0.25)  # sampling over the whole span, not synchronising
            # Never at risk, never dropped: the exporter read the new limit in time (judged
            # by the server's global limit, 600 s, the old one would not have been doubted).
            assert all(s == {"idle": 1} for s in seen), seen
            assert headroom(metrics, "lengthened-app") > 3000
        finally:
            exporter.stop()
            worker.close()
    finally:
        db.cleanup()

"""Interactive clients get interactive_timeout, not wait_timeout, and another exporter's
session is never taken for an application's at-risk one.

On MySQL each session's own limit is read (performance_schema.variables_by_thread). On
MariaDB, which shows none, the exporter knows the command-line client by its process, and
any other interactive client by the server showing it idle past wait_timeout (until then
it is judged by wait_timeout: the documented uncertainty)."""

from __future__ import annotations

import secrets
import time

import pytest

from tests.support.drivers.programs import DriverProcess, cli_command
from tests.support.exporter_process import ExporterProcess, Metrics, Worker
from tests.support.scrapes import PASSWORD_ENV, create_users, states, wait_for
from tests.support.servers import ServerFactory

WAIT_TIMEOUT, INTERACTIVE_TIMEOUT = 4, 12
HEADROOM = 2


def headroom(metrics: Metrics, process: str) -> float | None:
    found = metrics.find("mysql_idle_min_headroom_seconds", process=process)
    return found[0][1] if found else None


def test_interactive_sessions_live_to_interactive_timeout(
    db_server_factory: ServerFactory, db_flavor: str,
) -> None:
    db = db_server_factory(f"--wait-timeout={WAIT_TIMEOUT}",
                           f"--interactive-timeout={INTERACTIVE_TIMEOUT}", monitor_user=False)
    password = secrets.token_hex(8)
    create_users(db, password)
    db.execute("CREATE DATABASE shop", "GRANT ALL ON shop.* TO 'app'@'%'")
    target = f"127.0.0.1:{db.port}"
    cli = DriverProcess("mariadb CLI", cli_command(), {
        "DB_HOST": "127.0.0.1", "DB_PORT": str(db.port), "DB_USER": "app",
        "DB_PASSWORD": password, "DB_NAME": "shop"}).start()
    pymysql_interactive = Worker("interactive-app", "127.0.0.1", db.port, "app", password,
                                 interactive=True)
    plain = Worker("plain-app", "127.0.0.1", db.port, "app", password)
    # A second exporter on the same host: its own session idles between its reads (every
    # 30 s here, far past wait_timeout) under the year-long wait_timeout it sets itself.
    other = ExporterProcess([f"--mysql.address={target}", "--mysql.user=exporter",
                             "--server.interval=30s"], env={PASSWORD_ENV: password}).start()
    exporter = ExporterProcess(
        [f"--mysql.address={target}", "--mysql.user=exporter", "--server.interval=1s",
         f"--risk.headroom={HEADROOM}"], env={PASSWORD_ENV: password}).start()
    try:
        assert cli.next_line(30).text.startswith("ready")
        started = time.monotonic()
        other.scrape()  # its first read: its session exists from now on
        wait_for(exporter, lambda m: states(m, "plain-app") == {"dropped": 1},
                 "the plain client dropped at wait_timeout", timeout=WAIT_TIMEOUT + 10)
        # Past wait_timeout, and past the time a wrong limit would have been corrected.
        metrics = wait_for(
            exporter,
            lambda m: time.monotonic() - started > WAIT_TIMEOUT + 3
            and states(m, "interactive-app") == {"idle": 1},
            "the interactive PyMySQL session idle past wait_timeout", timeout=15)
        for process in ("mariadb", "interactive-app"):
            assert states(metrics, process) == {"idle": 1}, (process, metrics.text)
            left = headroom(metrics, process)
            elapsed = time.monotonic() - started
            # Judged by interactive_timeout: about its 12 s less the idle time.
            assert left is not None and INTERACTIVE_TIMEOUT - elapsed - 2.5 < left, (
                process, left, elapsed)
        # Another exporter's session: never at risk, whatever wait_timeout says.
        seen = states(metrics, "mysql-idle-expo")
        assert seen == {"idle": 1}, metrics.text
        assert headroom(metrics, "mysql-idle-expo") > 3600  # type: ignore[operator]
        # And at interactive_timeout the server does drop them: counted once each.
        metrics = wait_for(
            exporter, lambda m: states(m, "mariadb") == {"dropped": 1}
            or (db_flavor == "mariadb" and states(m, "mariadb") == {}),
            "the CLI's session dropped at interactive_timeout", timeout=INTERACTIVE_TIMEOUT + 10)
        assert metrics.total("mysql_idle_sessions_dropped_total", process="mariadb") == 1
        metrics = wait_for(exporter, lambda m: states(m, "interactive-app") == {"dropped": 1},
                           "the interactive PyMySQL session dropped", timeout=10)
        assert metrics.total("mysql_idle_sessions_dropped_total", process="interactive-app") == 1
        assert states(metrics, "mysql-idle-expo") == {"idle": 1}
    finally:
        exporter.stop()
        other.stop()
        plain.close()
        pymysql_interactive.close()
        cli.close()


pytestmark = pytest.mark.timeout(120)

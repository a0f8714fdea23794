"""A restart of the exporter forgets nothing it needs (--state.dir): a session the server
dropped while the exporter was down, whose socket MariaDB reset out of the kernel's tables
while the process still holds it, is reported dropped after the restart and counted; one
the last run had counted already is not counted again. Without a state directory, such a
reset socket is invisible to a new exporter (the documented limit)."""

from __future__ import annotations

import secrets
from pathlib import Path

from tests.support.exporter_process import ExporterProcess, Metrics, Worker
from tests.support.scrapes import PASSWORD_ENV, create_users, session_ids, states, wait_for
from tests.support.servers import ServerFactory
from tests.support.waiting import until

WAIT_TIMEOUT = 4


def start(target: str, password: str, state_dir: Path | None) -> ExporterProcess:
    args = [f"--mysql.address={target}", "--mysql.user=exporter", "--server.interval=1",
            "--risk.headroom=2"]
    if state_dir is not None:
        args.append(f"--state.dir={state_dir}")
    return ExporterProcess(args, env={PASSWORD_ENV: password}).start()


def drops(metrics: Metrics, process: str) -> float:
    return metrics.total("mysql_idle_sessions_dropped_total", process=process)


def test_drops_survive_a_restart_of_the_exporter(db_server_factory: ServerFactory,
                                                 db_flavor: str, tmp_path: Path) -> None:
    db = db_server_factory(f"--wait-timeout={WAIT_TIMEOUT}", monitor_user=False)
    password = secrets.token_hex(8)
    create_users(db, password)
    target = f"127.0.0.1:{db.port}"

    def dropped_by_server(port: int) -> None:
        until(lambda: not session_ids(db, "app", f"%:{port}"),
              "the server to drop the idle session", timeout=WAIT_TIMEOUT + 10)

    # 1. The drop happens while the exporter is down.
    first = Worker("down-app", "127.0.0.1", db.port, "app", password)
    exporter = start(target, password, tmp_path)
    try:
        wait_for(exporter, lambda m: states(m, "down-app") in ({"idle": 1}, {"at_risk": 1}),
                 "the worker's session seen")
    finally:
        exporter.stop()  # SIGTERM: the state is saved as it stops
    dropped_by_server(first.ports[0])
    restarted = start(target, password, tmp_path)
    forgetful = start(target, password, None)
    try:
        metrics = wait_for(restarted, lambda m: states(m, "down-app") == {"dropped": 1},
                           "the reset socket reported dropped after the restart")
        assert drops(metrics, "down-app") == 1
        after = forgetful.scrape()
        if db_flavor == "mariadb":
            # MariaDB resets the connection: the socket left the kernel's tables before
            # this exporter ever saw it; only the descriptor is left.
            assert states(after, "down-app") == {}, after.text
        else:
            # MySQL sends FIN: the socket sits in CLOSE_WAIT, which the kernel still lists.
            assert states(after, "down-app") == {"dropped": 1}

        # 2. The drop happens while the exporter runs: counted, and not again by the next.
        second = Worker("up-app", "127.0.0.1", db.port, "app", password)
        try:
            metrics = wait_for(restarted, lambda m: states(m, "up-app") == {"dropped": 1},
                               "the second worker's session dropped while watched",
                               timeout=WAIT_TIMEOUT + 10)
            assert drops(metrics, "up-app") == 1
        finally:
            restarted.stop()
        again = start(target, password, tmp_path)
        try:
            metrics = wait_for(again, lambda m: states(m, "up-app") == {"dropped": 1},
                               "still dropped after another restart")
            assert drops(metrics, "up-app") == 0  # the last run counted it already
            assert drops(metrics, "down-app") == 0
        finally:
            again.stop()
            second.close()
    finally:
        forgetful.stop()
        restarted.stop()
        first.close()

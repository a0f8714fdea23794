"""Every way an idle session dies, on real servers: asleep inside a transaction (reported
with its owner and its row counts, and on MariaDB dropped at idle_write_transaction_timeout
or idle_readonly_transaction_timeout, with the headroom before and the cause after), at
wait_timeout, by a KILL and by a server restart; the timeout causes reconciled with the
server's own Aborted_clients.

One server per flavor for the module; its globals are set per test, before the workers
connect (a session copies them at connect)."""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator

import pytest

from tests.support.exporter_process import ExporterProcess, Metrics, Worker
from tests.support.scrapes import PASSWORD_ENV, create_users, states, summary, wait_for
from tests.support.servers import TestServer, start_server
from tests.support.waiting import until

# MariaDB: a write transaction idles 4 s at most, a read-only one 5 s, anything else 6 s.
# MySQL has no transaction limit: all three go at wait_timeout.
WRITE, READONLY, WAIT = 4, 5, 6
HEADROOM = 1


class Db:
    def __init__(self, server: TestServer, password: str) -> None:
        self.server, self.password = server, password
        self.target = f"127.0.0.1:{server.port}"

    @property
    def maria(self) -> bool:
        return not self.server.is_mysql

    def exporter(self) -> ExporterProcess:
        return ExporterProcess(
            [f"--mysql.address={self.target}", "--mysql.user=exporter",
             "--server.interval=1s", f"--risk.headroom={HEADROOM}"],
            env={PASSWORD_ENV: self.password}).start()

    def worker(self, name: str, connections: int = 1) -> Worker:
        return Worker(name, "127.0.0.1", self.server.port, "app", self.password, connections)

    def status(self, name: str) -> int:
        conn = self.server.connect()
        try:
            return self.server.global_status(name, conn)
        finally:
            conn.close()

    def aborted_clients(self) -> int:
        return self.status("Aborted_clients")


@pytest.fixture(scope="module")
def db(db_flavor: str) -> Iterator[Db]:
    server = start_server(db_flavor)
    password = secrets.token_hex(8)
    try:
        create_users(server, password)
        server.execute("CREATE DATABASE shop", "GRANT ALL ON shop.* TO 'app'@'%'",
                       "CREATE TABLE shop.orders (id INT PRIMARY KEY, qty INT) ENGINE=InnoDB",
                       "INSERT INTO shop.orders VALUES (1, 1), (2, 1), (3, 1)")
        yield Db(server, password)
    finally:
        server.cleanup()


def causes(metrics: Metrics, process: str) -> dict[str, float]:
    return {labels["cause"]: value for labels, value in metrics.find(
        "mysql_idle_sessions_dropped_by_cause_total", process=process) if value}


def one(metrics: Metrics, name: str, **labels: str) -> float:
    found = metrics.find(name, **labels)
    assert len(found) == 1, (name, labels, found, summary(metrics))
    return found[0][1]


def test_idle_transactions_are_reported_and_dropped_by_their_own_limit(db: Db) -> None:
    if db.maria:
        db.server.execute(f"SET GLOBAL idle_write_transaction_timeout = {WRITE}",
                          f"SET GLOBAL idle_readonly_transaction_timeout = {READONLY}")
    db.server.execute(f"SET GLOBAL wait_timeout = {WAIT}")
    exporter = db.exporter()
    writer, reader, plain = db.worker("trx-writer"), db.worker("trx-reader"), db.worker("plain")
    try:
        wait_for(exporter, lambda m: m.get("mysql_idle_up", target=db.target) == 1, "up")
        aborted = db.aborted_clients()
        assert writer.send("sql 0 START TRANSACTION") == "ok 0"
        assert writer.send("sql 0 UPDATE shop.orders SET qty = qty + 1 WHERE id = 1") == "ok 0"
        assert reader.send("sql 0 START TRANSACTION READ ONLY") == "ok 0"
        assert reader.send("sql 0 SELECT COUNT(*) FROM shop.orders") == "ok 0"

        # Reported with their owner, pid and row counts, under the limit that applies.
        metrics = wait_for(
            exporter, lambda m: m.total("mysql_idle_sessions_in_transaction",
                                        target=db.target) == 2,
            "both sessions seen asleep inside their transactions", timeout=WRITE)
        assert one(metrics, "mysql_idle_sessions_in_transaction", process="trx-writer") == 1
        assert one(metrics, "mysql_idle_transaction_rows_modified", process="trx-writer") == 1
        assert one(metrics, "mysql_idle_transaction_rows_locked", process="trx-writer") >= 1
        assert one(metrics, "mysql_idle_transaction_rows_modified", process="trx-reader") == 0
        assert one(metrics, "mysql_idle_transaction_rows_locked", process="trx-reader") == 0
        assert one(metrics, "mysql_idle_transaction_oldest_seconds",
                   process="trx-writer") < WAIT
        assert one(metrics, "mysql_idle_sessions_in_transaction", process="plain") == 0
        [(labels, _)] = metrics.find("mysql_idle_session_transaction_seconds",
                                     process="trx-writer")
        assert labels["pid"] == str(writer.pid) and labels["user"] == "app"
        limits = {"trx-writer": ("idle_write_transaction_timeout", WRITE),
                  "trx-reader": ("idle_readonly_transaction_timeout", READONLY)}
        for process, (limit, seconds) in limits.items():
            if not db.maria:
                limit, seconds = "wait_timeout", WAIT
            assert one(metrics, "mysql_idle_sessions_by_limit", process=process,
                       limit=limit) == 1
            assert one(metrics, "mysql_idle_session_timeout_seconds", process=process,
                       limit=limit) == seconds
            assert 0 < one(metrics, "mysql_idle_min_headroom_seconds",
                           process=process) <= seconds
        if db.maria:
            assert one(metrics, "mysql_idle_wait_timeout_seconds", target=db.target,
                       scope="write_transaction") == WRITE

        # Each dropped at its limit, with that limit as its cause.
        expected = {"trx-writer": "transaction_timeout", "trx-reader": "transaction_timeout",
                    "plain": "idle_timeout"}
        if not db.maria:
            expected = dict.fromkeys(expected, "idle_timeout")
        metrics = wait_for(
            exporter, lambda m: all(causes(m, p) == {c: 1} for p, c in expected.items()),
            "every session dropped with its cause", timeout=WAIT + 5)
        for process in expected:
            assert one(metrics, "mysql_idle_sessions_dropped_total", process=process) == 1
        # The server counted the same deaths in Aborted_clients.
        timeouts = sum(metrics.total("mysql_idle_sessions_dropped_by_cause_total", cause=c)
                       for c in ("idle_timeout", "transaction_timeout"))
        assert db.aborted_clients() - aborted == timeouts == 3
        assert writer.send("query 0") in ("error 0 2006", "error 0 2013", "error 0 4031")
    finally:
        exporter.stop()
        for worker in (writer, reader, plain):
            worker.close()
        db.server.execute("SET GLOBAL wait_timeout = 28800")
        if db.maria:
            db.server.execute("SET GLOBAL idle_write_transaction_timeout = 0",
                              "SET GLOBAL idle_readonly_transaction_timeout = 0")


def test_a_kill_and_a_restart_are_told_apart(db: Db) -> None:
    exporter = db.exporter()
    worker = db.worker("victim", connections=2)
    try:
        wait_for(exporter, lambda m: states(m, "victim") == {"idle": 2}, "two idle sessions")
        port = worker.ports[0]
        [session] = [row[0] for row in db.server.execute(
            "SELECT ID FROM information_schema.PROCESSLIST"
            f" WHERE HOST LIKE '%:{port}' AND USER = 'app'")]
        aborted = db.aborted_clients()
        db.server.execute(f"KILL {session}")
        wait_for(exporter, lambda m: causes(m, "victim") == {"killed": 1},
                 "the KILL counted as killed", timeout=5)
        # Both servers count a KILLed session in Aborted_clients too (measured).
        assert db.aborted_clients() - aborted == 1
        # A restart is told by the server's start time, known to a second or so (Uptime):
        # one that comes within seconds of the last start is not (docs/limits.md).
        until(lambda: db.status("Uptime") >= 4, "the server up for 4 s", timeout=6)
        db.server.restart()
        metrics = wait_for(exporter, lambda m: causes(m, "victim") == {"killed": 1,
                                                                       "restart": 1},
                           "the restart counted as a restart", timeout=10)
        assert one(metrics, "mysql_idle_sessions_dropped_total", process="victim") == 2
    finally:
        exporter.stop()
        worker.close()


def test_keepalive_armed_in_time_too_late_or_not_at_all(db: Db) -> None:
    # Behind a path that forgets a flow after 300 s of silence.
    exporter = ExporterProcess(
        [f"--mysql.address={db.target}", "--mysql.user=exporter", "--server.interval=1s",
         "--network.idle-timeout=300"], env={PASSWORD_ENV: db.password}).start()
    worker = db.worker("pooled", connections=3)
    try:
        # PyMySQL arms keepalive with Linux's default first probe, 7200 s: left so on 2.
        assert worker.send("keepalive 0 off") == "ok 0"
        assert worker.send("keepalive 1 60") == "ok 1"  # TCP_KEEPIDLE below the limit
        metrics = wait_for(exporter, lambda m: m.get("mysql_idle_sockets_keepalive",
                                                     target=db.target, process="pooled") == 2,
                           "two sockets with keepalive armed")
        # The one without keepalive and the one probing after 7200 s are late.
        assert one(metrics, "mysql_idle_sockets_keepalive_late", process="pooled") == 2
        status, body = exporter.get("/status.json")
        assert status == 200
        probes = sorted(
            (s["keepalive_probe_at_seconds"] or 0.0)
            for t in json.loads(body)["targets"] for p in t["processes"]
            if p["process"] == "pooled" for s in p["sessions"])
        assert probes[0] == 0.0 and 59 <= probes[1] <= 60.1 and 7199 <= probes[2] <= 7200.1
    finally:
        exporter.stop()
        worker.close()


pytestmark = pytest.mark.timeout(90)

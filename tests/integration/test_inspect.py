"""`mysql-idle-exporter inspect` through the seed story, with the real command, a throwaway
MariaDB (wait_timeout 8 s) and a real worker: a look while the worker's two connections
are idle (exit 0), at risk (exit 1), and once one is killed (dropped in CLOSE_WAIT, exit 1),
as a table and as JSON; `--watch` sees the other reset by the server (RST) and stops on
Ctrl-C without a traceback; an unreachable server gives exit 3 and says so."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import pytest

from tests.support.exporter_process import Worker
from tests.support.mariadb import ThrowawayMariaDB, free_port
from tests.support.scrapes import PASSWORD_ENV
from tests.support.waiting import until

pytestmark = pytest.mark.mariadb

WAIT_TIMEOUT = 8
HEADROOM = 4


@pytest.fixture(scope="module")
def server() -> Iterator[ThrowawayMariaDB]:
    db = ThrowawayMariaDB([f"--wait-timeout={WAIT_TIMEOUT}"])
    db.start()
    db.create_monitor_user()
    db.create_user("app", grants=(), password="app-Pw-1")
    yield db
    db.cleanup()


def command(db: ThrowawayMariaDB, *extra: str, address: str | None = None) -> list[str]:
    return [sys.executable, "-m", "exporter", "inspect",
            f"--mysql.address={address or f'127.0.0.1:{db.port}'}",
            f"--mysql.user={db.exporter_user}", f"--risk.headroom={HEADROOM}", *extra]


def env(db: ThrowawayMariaDB) -> dict[str, str]:
    return {**os.environ, PASSWORD_ENV: db.exporter_password}


def inspect(db: ThrowawayMariaDB, *extra: str, address: str | None = None
            ) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(command(db, *extra, address=address), env=env(db),
                            capture_output=True, text=True, timeout=60)
    assert "Traceback" not in result.stderr, result.stderr
    return result


def sessions(document: dict) -> dict[int, dict]:
    """The worker's sessions by local port."""
    found = {}
    for target in document["targets"]:
        for process in target["processes"]:
            for session in process["sessions"]:
                if process["process"] == "seed-worker":
                    found[int(session["local"].rsplit(":", 1)[1])] = session
    return found


def processlist_ids(db: ThrowawayMariaDB, ports: list[int]) -> dict[int, int]:
    rows = db.execute("SELECT ID, HOST FROM information_schema.PROCESSLIST WHERE USER = 'app'")
    by_port = {int(host.rsplit(":", 1)[1]): ident for ident, host in rows}
    return {port: by_port[port] for port in ports}


class Watch:
    """`inspect --watch` running, its output collected line by line."""

    def __init__(self, db: ThrowawayMariaDB) -> None:
        self.process = subprocess.Popen(command(db, "--watch", "--interval=0.3s"), env=env(db),
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                        text=True)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))

    def interrupt(self) -> tuple[int, str]:
        self.process.send_signal(signal.SIGINT)
        code = self.process.wait(timeout=20)
        self._reader.join(timeout=5)
        assert self.process.stderr is not None
        return code, self.process.stderr.read()


def test_inspect_through_the_seed_story(server: ThrowawayMariaDB) -> None:
    db = server
    worker = Worker("seed-worker", db.host, db.port, "app", "app-Pw-1", connections=2)
    watch = Watch(db)
    try:
        ids = processlist_ids(db, worker.ports)
        # Idle: every column of the join, and exit code 0.
        table = inspect(db)
        assert table.returncode == 0, table.stdout + table.stderr
        lines = table.stdout.splitlines()
        header = next(line for line in lines if line.strip().startswith("SOCKET"))
        assert header.split() == ["SOCKET", "PID", "PROCESS", "SESSION", "USER", "DB", "STATE",
                                  "TCP", "CLIENT", "IDLE", "SERVER", "IDLE", "TIMEOUT",
                                  "HEADROOM", "ADVICE"]
        for port in worker.ports:
            row = next(line.split() for line in lines if f"127.0.0.1:{port} " in line)
            assert row[1:8] == [str(worker.pid), "seed-worker", str(ids[port]), "app", "-",
                                "idle", "ESTABLISHED"], row
            assert row[10] == "8.0s"  # the timeout that applies: the server's wait_timeout
        document = json.loads(inspect(db, "--json").stdout)
        assert document["verdict"] == "ok"
        found = sessions(document)
        assert sorted(found) == sorted(worker.ports)
        for port, session in found.items():
            assert session["state"] == "idle" and session["session_id"] == ids[port]
            assert 0 < session["headroom_seconds"] <= WAIT_TIMEOUT
            assert abs(session["headroom_seconds"]
                       - (WAIT_TIMEOUT - session["client_idle_seconds"])) < 0.01

        # At risk: exit code 1, and the advice for it.
        results: list[subprocess.CompletedProcess[str]] = []
        until(lambda: results.append(inspect(db, "--json")) or results[-1].returncode == 1,
              "inspect to report the idle sessions at risk", timeout=WAIT_TIMEOUT)
        at_risk = json.loads(results[-1].stdout)
        assert at_risk["verdict"] == "risk"
        assert {s["state"] for s in sessions(at_risk).values()} == {"at_risk"}
        assert all(s["headroom_seconds"] <= HEADROOM for s in sessions(at_risk).values())
        worker_json = next(p for p in at_risk["targets"][0]["processes"]
                           if p["process"] == "seed-worker")
        assert [a["key"] for a in worker_json["advice"]] == ["at_risk"]

        # Killed on the server: the socket sits in CLOSE_WAIT, dead but held.
        db.execute(f"KILL {ids[worker.ports[1]]}")
        until(lambda: results.append(inspect(db, "--json")) or
              sessions(json.loads(results[-1].stdout)).get(worker.ports[1], {}).get("state")
              == "dropped", "the killed session to show as dropped", timeout=5)
        assert results[-1].returncode == 1
        dead = sessions(json.loads(results[-1].stdout))[worker.ports[1]]
        assert (dead["tcp_state"], dead["advice"]) == ("CLOSE_WAIT", "dead_held")
        table = inspect(db)
        assert table.returncode == 1
        row = next(line for line in table.stdout.splitlines()
                   if f"127.0.0.1:{worker.ports[1]} " in line)
        assert "dropped" in row and "CLOSE_WAIT" in row and "dead: reconnect" in row
        assert "docs/runbook.md#mysqlidledeadsessionsheld" in table.stdout

        # The other one runs into wait_timeout: MariaDB resets it, and only a watcher that
        # remembers the socket can tell (the kernel no longer lists it).
        gone = f"127.0.0.1:{worker.ports[0]} "
        until(lambda: any(gone in line and "dropped" in line and "gone" in line
                          for line in watch.lines),
              "inspect --watch to show the reset session as dropped", timeout=WAIT_TIMEOUT + 6)
        code, stderr = watch.interrupt()
        assert code == 1, stderr
        assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr, stderr
        assert any("refreshing every 0.3s; Ctrl-C to stop" in line for line in watch.lines)
        # The worker still holds it, and its next query fails.
        assert worker.send("query 0") == "error 0 2006"
    finally:
        if watch.process.poll() is None:
            watch.process.kill()
        worker.close()


def test_unreachable_server_is_exit_3_and_said(server: ThrowawayMariaDB) -> None:
    address = f"127.0.0.1:{free_port()}"
    table = inspect(server, address=address)
    assert table.returncode == 3, table.stdout + table.stderr
    assert f"{address}  DOWN: cannot connect" in table.stdout
    assert "The server could not be read" in table.stdout
    assert "docs/runbook.md#mysqlidleexportertargetdown" in table.stdout
    document = json.loads(inspect(server, "--json", address=address).stdout)
    assert document["verdict"] == "unknown"
    assert document["targets"][0]["up"] is False
    assert [n["key"] for n in document["targets"][0]["notices"]] == ["server_down"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--interval=0"], "--interval must be more than 0"),
        (["--interval=soon"], "argument --interval: 'soon' is not a duration"),
        (["--mysql.password=x"], "passwords are not accepted on the command line"),
        (["--no-such-flag"], "unrecognized arguments: --no-such-flag"),
    ],
)
def test_bad_usage_is_exit_2_with_one_line(args: list[str], message: str) -> None:
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "exporter", "inspect", *args],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mysql-idle-exporter: error: ")
    assert message in lines[0]
    assert time.monotonic() - started < 10

"""Many watchers of one database, each in its own network namespace (its own client address).

One server namespace, four client namespaces around it (tests/support/netns.py NetnsStar):
three hold an application worker and its exporter sidecar, the fourth only a worker whose
sessions no sidecar owns; the test process holds a few more over the unix socket. The server
runs with the performance schema and its statement history on, so every processlist query
any watcher sent can be read back with the rows it returned and the account that sent it.

- Direct mode: each sidecar classifies exactly its own sessions, its processlist query
  returns only them (both sources: information_schema and performance_schema), and with
  --server.interval=30s it reads the server once, plus once more for a new connection.
- Fleet mode: one standalone exporter in the server namespace (--fleet.serve) reads the
  database; the sidecars (--fleet.url) never log in, and still see their own sessions go
  idle, at_risk and dropped; a connection made after the standalone's read is matched, not
  a phantom.
"""

from __future__ import annotations

import functools
import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest

from tests.support.exporter_process import Metrics
from tests.support.netns import (
    NetnsError,
    NetnsStar,
    NsExporterProcess,
    NsWorker,
    server_in_namespace,
)
from tests.support.scrapes import PASSWORD_ENV, states, summary, wait_for
from tests.support.servers import TestServer, server_class

pytestmark = [pytest.mark.netns, pytest.mark.timeout(180)]

WATCHED = 3  # client namespaces with a sidecar; one more holds unowned sessions
SESSIONS = (2, 3, 2)  # each watched worker's connections
NOISE_SESSIONS = 5
UNIX_SESSIONS = 3
INTERVAL = 30

# A watcher's processlist query, any source (the connect-time checks do not match):
# information_schema, performance_schema.threads (MariaDB), performance_schema.processlist
# (MySQL).
PROCESSLIST_SQL_LIKE = (
    "h.SQL_TEXT LIKE '%FROM information_schema.PROCESSLIST% WHERE ID <> CONNECTION_ID()%'"
    " OR h.SQL_TEXT LIKE '%t.PROCESSLIST_COMMAND%'"
    " OR h.SQL_TEXT LIKE '%FROM performance_schema.processlist AS p%'"
)
READS_SQL = (
    "SELECT t.PROCESSLIST_USER, s.IP, h.ROWS_SENT, h.ROWS_EXAMINED, h.SQL_TEXT"
    " FROM performance_schema.events_statements_history_long AS h"
    " JOIN performance_schema.threads AS t ON t.THREAD_ID = h.THREAD_ID"
    " LEFT JOIN performance_schema.socket_instances AS s ON s.THREAD_ID = t.THREAD_ID"
    " AND s.EVENT_NAME = 'wait/io/socket/sql/client_connection'"
    f" WHERE t.PROCESSLIST_USER <> 'root' AND ({PROCESSLIST_SQL_LIKE})"
    " ORDER BY h.THREAD_ID, h.EVENT_ID"
)


@dataclass(frozen=True)
class Read:
    """One processlist query as the server recorded it."""

    user: str
    client_ip: str
    rows_sent: int
    rows_examined: int
    source: str
    sql: str


@dataclass
class Fleet:
    star: NetnsStar
    db: TestServer
    password: str
    target: str
    cleanups: list[Callable[[], object]] = field(default_factory=list)

    def server_reads(self) -> list[Read]:
        reads = []
        for user, ip, sent, examined, sql in self.db.execute(READS_SQL):
            # Every read joins information_schema.INNODB_TRX; the source is the list's.
            source = ("information_schema" if "information_schema.PROCESSLIST" in sql
                      else "performance_schema")
            reads.append(Read(user, (ip or "").removeprefix("::ffff:"), int(sent),
                              int(examined), source, sql))
        return reads

    def sessions_selected_by(self, read: Read) -> int:
        """Sessions the recorded statement selects when run again now (as root: the
        sidecar's own connection included), from the packed read's count column."""
        (row,) = self.db.execute(read.sql)
        return int(row[2])  # wait_timeout, interactive_timeout, COUNT(*), ...

    def reads_from(self, ip: str) -> list[Read]:
        return [r for r in self.server_reads() if r.client_ip == ip]

    def worker(self, leg_index: int, name: str, connections: int) -> NsWorker:
        worker = NsWorker(self.star.legs[leg_index], name, self.star.db_addr, self.db.port,
                          "app", self.password, connections)
        self.cleanups.append(worker.close)
        return worker

    def exporter(self, leg_index: int | None, args: list[str], **kwargs: object
                 ) -> NsExporterProcess:
        leg = self.star.legs[leg_index if leg_index is not None else 0]
        exporter = NsExporterProcess(leg, [f"--mysql.address={self.target}", *args],
                                     env={PASSWORD_ENV: self.password}, **kwargs)  # type: ignore[arg-type]
        exporter.start()
        self.cleanups.append(exporter.stop)
        return exporter

    def close_down_to(self, mark: int = 0) -> None:
        """Stop what was started after `mark` cleanups were registered, newest first."""
        while len(self.cleanups) > mark:
            self.cleanups.pop()()


@pytest.fixture(scope="module")
def fleet(db_flavor: str) -> Iterator[Fleet]:
    try:
        star = NetnsStar(clients=WATCHED + 1).__enter__()
    except NetnsError as error:
        pytest.fail(f"cannot build the test network namespaces ({error}); the netns tests "
                    "need root and iproute2's `ip netns`", pytrace=False)
    db = server_in_namespace(server_class(db_flavor), star, [
        "--performance-schema=ON",
        "--performance-schema-consumer-events-statements-current=ON",
        "--performance-schema-consumer-events-statements-history-long=ON",
        "--performance-schema-events-statements-history-long-size=20000",
        "--performance-schema-max-sql-text-length=8192",  # whole statements, to run again
        "--max-connections=200",
    ])
    fleet = Fleet(star, db, secrets.token_hex(8), f"{star.db_addr}:{db.port}")
    try:
        db.start()  # fails the test, with the reason, if it cannot
        password = fleet.password
        db.execute(
            f"CREATE USER 'exporter'@'%' IDENTIFIED BY '{password}'",
            "GRANT PROCESS ON *.* TO 'exporter'@'%'",
            "GRANT SELECT ON performance_schema.* TO 'exporter'@'%'",
            f"CREATE USER 'fleet'@'%' IDENTIFIED BY '{password}'",
            "GRANT PROCESS ON *.* TO 'fleet'@'%'",
            "GRANT SELECT ON performance_schema.* TO 'fleet'@'%'",
            f"CREATE USER 'app'@'%' IDENTIFIED BY '{password}'",
        )
        # Sessions no watcher owns: a worker in the fourth namespace, and unix-socket ones.
        fleet.worker(WATCHED, "noise", NOISE_SESSIONS)
        held = [db.connect() for _ in range(UNIX_SESSIONS)]
        fleet.cleanups.append(lambda: [c.close() for c in held])
        yield fleet
    finally:
        fleet.close_down_to(0)
        db.cleanup()
        star.close()


@pytest.fixture(autouse=True)
def _stop_what_the_test_started(fleet: Fleet) -> Iterator[None]:
    mark = len(fleet.cleanups)
    yield
    fleet.close_down_to(mark)


# The shared polling helper, at this module's pace and patience.
scrape_until = functools.partial(wait_for, timeout=15.0, interval=0.2)


def reads_total(metrics: Metrics, target: str) -> float:
    return metrics.get("mysql_idle_server_reads_total", target=target) or 0.0


def all_states(metrics: Metrics) -> dict[str, float]:
    """Non-zero session counts by state, over every process."""
    counts: dict[str, float] = {}
    for labels, value in metrics.find("mysql_idle_sessions"):
        if value:
            counts[labels["state"]] = counts.get(labels["state"], 0) + value
    return counts


def test_each_sidecar_reads_only_its_own_sessions_at_most_once_per_interval(
        fleet: Fleet) -> None:
    star, target = fleet.star, fleet.target
    for i, n in enumerate(SESSIONS):
        fleet.worker(i, f"app-{i}", n)
    # Sidecar 0 reads information_schema, the others performance_schema (auto picks it).
    sources = ["information_schema", "auto", "auto"]
    sidecars = [
        fleet.exporter(i, ["--mysql.user=exporter", f"--server.interval={INTERVAL}s",
                           f"--server.source={source}"])
        for i, source in enumerate(sources)
    ]
    first = [
        scrape_until(sidecar, lambda m, i=i: states(m, f"app-{i}") == {"idle": SESSIONS[i]},
                     f"sidecar {i}: its worker's {SESSIONS[i]} sessions idle")
        for i, sidecar in enumerate(sidecars)
    ]
    started = time.monotonic()

    # (a) Exactly its own sessions: all idle, no phantom or unmatched, nobody else's.
    for i, metrics in enumerate(first):
        assert all_states(metrics) == {"idle": SESSIONS[i]}, summary(metrics)
        assert metrics.get("mysql_idle_up", target=target) == 1

    # (b) The server's own record: each sidecar's read is one statement that packs its
    # sessions into one row, and that statement, run again, selects only its own workers'
    # sessions (and its own connection), whichever source, although the server holds many
    # more.
    others = SESSIONS[0] + NOISE_SESSIONS + UNIX_SESSIONS
    for i, leg in enumerate(star.legs[:WATCHED]):
        reads = fleet.reads_from(leg.client_addr)
        assert reads, f"no processlist query from sidecar {i} ({leg.client_addr})"
        for read in reads:
            assert read.user == "exporter"
            assert read.rows_sent == 1, read
            assert leg.client_addr in read.sql, read
            assert fleet.sessions_selected_by(read) == SESSIONS[i] + 1, read
        assert {r.source for r in reads} == {
            "information_schema" if i == 0 else "performance_schema"}
        if i == 0:  # information_schema still builds the whole list before filtering it
            assert all(r.rows_examined >= others for r in reads), reads
    noise_ip = star.legs[WATCHED].client_addr
    assert not fleet.reads_from(noise_ip), "a query came from the namespace without a sidecar"

    # (c) Repeated scrapes within the interval: no further read, by the exporter's own count
    # and by the server's.
    reads_before = [reads_total(m, target) for m in first]
    server_before = [len(fleet.reads_from(leg.client_addr)) for leg in star.legs[:WATCHED]]
    assert reads_before == [1, 1, 1]
    for _ in range(4):
        for i, sidecar in enumerate(sidecars):
            metrics = sidecar.scrape()
            assert states(metrics, f"app-{i}") == {"idle": SESSIONS[i]}, summary(metrics)
            assert reads_total(metrics, target) == reads_before[i]
        time.sleep(0.4)
    assert [len(fleet.reads_from(leg.client_addr))
            for leg in star.legs[:WATCHED]] == server_before

    # A new connection in namespace 1 forces exactly one read there, and only there.
    fleet.worker(1, "late-1", 1)
    metrics = scrape_until(sidecars[1], lambda m: states(m, "late-1") == {"idle": 1},
                           "the new connection matched and idle")
    assert states(metrics, "app-1") == {"idle": SESSIONS[1]}
    assert reads_total(metrics, target) == reads_before[1] + 1
    reads = fleet.reads_from(star.legs[1].client_addr)
    assert len(reads) == server_before[1] + 1
    # Its workers' sessions, the new one, and the sidecar's own connection.
    assert fleet.sessions_selected_by(reads[-1]) == SESSIONS[1] + 2
    for i in (0, 2):
        assert reads_total(sidecars[i].scrape(), target) == reads_before[i]
    assert [len(fleet.reads_from(leg.client_addr)) for leg in star.legs[:WATCHED]] == [
        server_before[0], server_before[1] + 1, server_before[2]]
    assert time.monotonic() - started < INTERVAL, "too slow: the interval elapsed meanwhile"


def test_fleet_mode_one_reader_for_the_database(fleet: Fleet) -> None:
    star, db, target = fleet.star, fleet.db, fleet.target
    wait_timeout, headroom = 10, 6
    previous = db.execute("SELECT @@global.wait_timeout")[0][0]
    # New sessions (only they) get the short timeout; the fleet exporter reports it.
    db.execute(f"SET GLOBAL wait_timeout = {wait_timeout}")
    try:
        earlier = fleet.server_reads()
        standalone = fleet.exporter(None, ["--mysql.user=fleet", "--fleet.serve",
                                           "--fleet.allow-unauthenticated",
                                           f"--server.interval={INTERVAL}s"],
                                    ns=star.server_ns, listen_host="0.0.0.0")
        url = f"http://{star.db_addr}:{standalone.port}"
        sidecars = [
            fleet.exporter(i, [f"--fleet.url={url}", f"--server.interval={INTERVAL}s",
                               f"--risk.headroom={headroom}"])
            for i in range(WATCHED)
        ]
        for i, n in enumerate(SESSIONS):
            fleet.worker(i, f"app-{i}", n)
        seen: list[dict[str, set[str]]] = [{} for _ in range(WATCHED)]

        def observe(i: int) -> Metrics:
            metrics = sidecars[i].scrape()
            for labels, value in metrics.find("mysql_idle_sessions"):
                if value:
                    seen[i].setdefault(labels["process"], set()).add(labels["state"])
            return metrics

        matched = [
            scrape_until(sidecars[i], lambda m, i=i: sum(
                states(m, f"app-{i}").get(s, 0) for s in ("idle", "at_risk")) == SESSIONS[i],
                f"sidecar {i}: its sessions matched through the fleet exporter", timeout=8)
            for i in range(WATCHED)
        ]
        for metrics in matched:
            assert metrics.get("mysql_idle_up", target=target) == 1
            assert metrics.get("mysql_idle_wait_timeout_seconds", target=target,
                               scope="global") == wait_timeout
            # The sidecar itself sends the database nothing.
            assert (metrics.get("mysql_idle_server_queries_total", target=target) or 0) == 0

        # A connection made after the fleet exporter's last read: the sidecar asks for a
        # fresh read and sees it matched, never a phantom.
        fleet.worker(2, "late-2", 1)
        scrape_until(sidecars[2], lambda m: sum(
            states(m, "late-2").get(s, 0) for s in ("idle", "at_risk")) == 1,
            "the new connection matched through the fleet exporter", timeout=8)

        # Idle into the timeout: at_risk, then dropped (the server resets the connection).
        deadline = time.monotonic() + wait_timeout + 8
        while time.monotonic() < deadline:
            done = [observe(i) for i in range(WATCHED)]
            if all(states(m, f"app-{i}") == {"dropped": SESSIONS[i]}
                   for i, m in enumerate(done)):
                break
            time.sleep(0.3)
        for i, metrics in enumerate(done):
            assert states(metrics, f"app-{i}") == {"dropped": SESSIONS[i]}, summary(metrics)
            assert metrics.get("mysql_idle_sessions_dropped_total", target=target,
                               process=f"app-{i}") == SESSIONS[i]
            assert {"at_risk", "dropped"} <= seen[i][f"app-{i}"], seen[i]
            assert all("phantom" not in s and "unmatched" not in s for s in seen[i].values())

        # The database saw processlist reads from the fleet exporter only.
        reads = [r for r in fleet.server_reads() if r not in earlier or r.user == "fleet"]
        assert len([r for r in fleet.server_reads() if r.user == "exporter"]) == len(
            [r for r in earlier if r.user == "exporter"])
        assert reads and {r.user for r in reads} == {"fleet"}
        assert {r.client_ip for r in reads} == {star.db_addr}
        logged_in = {row[0] for row in db.execute(
            "SELECT DISTINCT USER FROM information_schema.PROCESSLIST")}
        assert "exporter" not in logged_in and "fleet" in logged_in
        # New connections force fresh reads, at least a second apart; never one per scrape.
        assert len(reads) <= WATCHED + 2, reads
    finally:
        db.execute(f"SET GLOBAL wait_timeout = {previous}")

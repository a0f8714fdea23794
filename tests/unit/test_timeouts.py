"""Which limit governs an idle session: a table of cases for exporter.timeouts."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from exporter.model import ServerView, Session, Settings, TimeoutKind
from exporter.timeouts import (
    OWN_WAIT_TIMEOUT,
    Outlived,
    ProcessKind,
    idle_limit,
    outlived_by,
    process_kind,
)
from tests.support.builders import sess, view

MARIADB = view(wait_timeout=20.0, interactive_timeout=60.0)
MARIADB_TRX = view(wait_timeout=20.0, interactive_timeout=60.0, idle_transaction_timeout=4.0,
                   idle_readonly_transaction_timeout=2.0, idle_write_transaction_timeout=3.0)
MARIADB_GENERAL = view(wait_timeout=20.0, interactive_timeout=60.0, idle_transaction_timeout=4.0)


def in_trx(written: int = 0, **kw: object) -> Session:
    return sess(1, 5000, **kw)._replace(transaction_seconds=30.0, rows_locked=written,
                                        rows_modified=written)


@dataclass
class Case:
    name: str
    session: Session
    server: ServerView
    expected: tuple[float | None, TimeoutKind | None]
    process: ProcessKind = ProcessKind.OTHER
    outlived: Outlived = Outlived.NOTHING
    settings: Settings = field(default_factory=Settings)


CASES = [
    Case("the global wait_timeout, assumed", sess(1, 5000), MARIADB, (20.0, TimeoutKind.WAIT)),
    Case("the session's own, as read", sess(1, 5000, wait_timeout=7.0), MARIADB,
         (7.0, TimeoutKind.SESSION)),
    Case("the command-line client is interactive", sess(1, 5000), MARIADB,
         (60.0, TimeoutKind.INTERACTIVE), process=ProcessKind.INTERACTIVE),
    Case("its own value still wins where read", sess(1, 5000, wait_timeout=60.0), MARIADB,
         (60.0, TimeoutKind.SESSION), process=ProcessKind.INTERACTIVE),
    Case("another exporter raised its own to a year", sess(1, 5000), MARIADB,
         (float(OWN_WAIT_TIMEOUT), TimeoutKind.SESSION), process=ProcessKind.EXPORTER),
    Case("seen to outlive wait_timeout: interactive", sess(1, 5000), MARIADB,
         (60.0, TimeoutKind.INTERACTIVE), outlived=Outlived.WAIT),
    Case("seen to outlive both: unknown", sess(1, 5000), MARIADB, (None, None),
         outlived=Outlived.INTERACTIVE),
    Case("write transaction: idle_write_transaction_timeout", in_trx(written=1), MARIADB_TRX,
         (3.0, TimeoutKind.WRITE_TRANSACTION)),
    Case("read-only transaction: idle_readonly_transaction_timeout", in_trx(), MARIADB_TRX,
         (2.0, TimeoutKind.READONLY_TRANSACTION)),
    Case("only the general one set", in_trx(written=1), MARIADB_GENERAL,
         (4.0, TimeoutKind.TRANSACTION)),
    # Measured on MariaDB 10.11: the transaction limit replaces wait_timeout, even when
    # it is longer.
    Case("a longer transaction limit replaces wait_timeout", in_trx(written=1),
         view(wait_timeout=20.0, idle_write_transaction_timeout=30.0),
         (30.0, TimeoutKind.WRITE_TRANSACTION)),
    Case("no transaction limits: the connection's", in_trx(written=1), MARIADB,
         (20.0, TimeoutKind.WAIT)),
    Case("MySQL in a transaction: its own wait_timeout", in_trx(written=1, wait_timeout=9.0),
         view(wait_timeout=20.0), (9.0, TimeoutKind.SESSION)),
    Case("the network's limit when shorter", sess(1, 5000), MARIADB,
         (10.0, TimeoutKind.NETWORK), settings=Settings(network_idle_timeout=10.0)),
    Case("the server's when the network's is longer", in_trx(), MARIADB_TRX,
         (2.0, TimeoutKind.READONLY_TRANSACTION), settings=Settings(network_idle_timeout=10.0)),
    Case("the network's when the server's is unknown", sess(1, 5000), MARIADB,
         (300.0, TimeoutKind.NETWORK), outlived=Outlived.INTERACTIVE,
         settings=Settings(network_idle_timeout=300.0)),
    Case("no limit read at all", sess(1, 5000), view(wait_timeout=None), (None, None)),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_idle_limit(case: Case) -> None:
    got = idle_limit(case.session, case.server, case.settings, case.process, case.outlived)
    assert got == case.expected


@pytest.mark.parametrize(("process", "kind"), [
    ("mysql", ProcessKind.INTERACTIVE), ("mariadb", ProcessKind.INTERACTIVE),
    ("mysql-idle-expo", ProcessKind.EXPORTER), ("mysql-idle-exporter", ProcessKind.EXPORTER),
    ("mysqld", ProcessKind.OTHER), ("python3", ProcessKind.OTHER), ("unknown", ProcessKind.OTHER),
])
def test_process_kinds(process: str, kind: ProcessKind) -> None:
    assert process_kind(process) is kind


@pytest.mark.parametrize(("server_idle", "kind", "seconds", "expected"), [
    (15.0, TimeoutKind.WAIT, 20.0, None),  # within its limit: proves nothing
    (21.0, TimeoutKind.WAIT, 20.0, None),  # within the tolerance
    (25.0, TimeoutKind.WAIT, 20.0, Outlived.WAIT),
    (70.0, TimeoutKind.WAIT, 20.0, Outlived.INTERACTIVE),  # past both at once
    (70.0, TimeoutKind.INTERACTIVE, 60.0, Outlived.INTERACTIVE),
    (70.0, TimeoutKind.SESSION, 60.0, None),  # read per session: nothing to infer
])
def test_what_the_servers_idle_time_proves(server_idle: float, kind: TimeoutKind,
                                          seconds: float, expected: Outlived | None) -> None:
    session = sess(1, 5000, idle=server_idle)
    assert outlived_by(session, MARIADB, kind, seconds, tolerance=1.0) == expected

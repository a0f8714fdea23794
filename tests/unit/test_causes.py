"""Why each session died, as a table of short stories: collections of one target in order,
each with its sockets and the server read it used, and the causes counted at the end."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from exporter.causes import Cause, timeout_cause
from exporter.correlate import Memory
from exporter.model import ServerView, Settings, Socket, TcpState, TimeoutKind
from tests.support.builders import NOW, SETTINGS, sess, sock, view
from tests.support.builders import correlate_sockets as correlate

STARTED = NOW - 5000.0  # the server's start time at the first read


def alive(idle: float = 10.0) -> list[Socket]:
    return [sock(5000, idle=idle)]


def reset(idle: float = 10.0) -> list[Socket]:
    """MariaDB's RST: the socket left the kernel's table, the worker still holds it."""
    return [sock(5000, idle=idle, state=TcpState.CLOSE, gone=True)]


def fin(idle: float = 10.0) -> list[Socket]:
    """MySQL's 4031 and FIN, a KILL, a shutdown: CLOSE_WAIT."""
    return [sock(5000, idle=idle, state=TcpState.CLOSE_WAIT)]


def read(at: float, *sessions: object, started: float = STARTED, **kw: object) -> ServerView:
    return view(*sessions, read_at=at, started_at=started, **kw)  # type: ignore[arg-type]


@dataclass
class Story:
    name: str
    # (now, sockets, the read in use then)
    steps: list[tuple[float, list[Socket], ServerView | None]]
    causes: dict[str, int]
    dropped: int = 1
    settings: Settings = SETTINGS


FIRST = read(NOW, sess(1, 5000))  # idle 10 s under wait_timeout 600: expires at NOW + 590
MARIA_TRX = {"idle_write_transaction_timeout": 60.0, "idle_readonly_transaction_timeout": 90.0}

STORIES = [
    Story("RST at the predicted moment: wait_timeout",
          [(NOW, alive(), FIRST), (NOW + 591, reset(601), FIRST)],
          {"idle_timeout": 1}),
    Story("FIN and 4031 seen a while after the moment: wait_timeout",
          [(NOW, alive(), FIRST), (NOW + 700, fin(710), FIRST)],
          {"idle_timeout": 1}),
    Story("gone from both sides after its limit: wait_timeout",
          [(NOW, alive(), FIRST), (NOW + 600, [], FIRST)],
          {"idle_timeout": 1}),
    Story("closed by the client before its limit: not a death",
          [(NOW, alive(), FIRST), (NOW + 100, [], FIRST)],
          {}, dropped=0),
    Story("FIN long before the limit, same server at the next read: killed",
          [(NOW, alive(), FIRST), (NOW + 100, fin(110), FIRST),
           (NOW + 101, fin(111), read(NOW + 101))],
          {"killed": 1}),
    Story("killed: nothing is counted until a read made after it says which",
          [(NOW, alive(), FIRST), (NOW + 100, fin(110), FIRST),
           (NOW + 101, fin(111), FIRST)],
          {}),
    Story("FIN before the limit, a later server start at the next read: restart",
          [(NOW, alive(), FIRST), (NOW + 100, fin(110), FIRST),
           (NOW + 103, fin(113), read(NOW + 103, started=NOW + 101))],
          {"restart": 1}),
    Story("FIN before the limit, the same collection's read shows the restart",
          [(NOW, alive(), FIRST), (NOW + 100, fin(110), read(NOW + 100, started=NOW + 99))],
          {"restart": 1}),
    Story("an earlier start time: a failover to a server up for longer",
          [(NOW, alive(), FIRST), (NOW + 100, fin(110), FIRST),
           (NOW + 103, fin(113), read(NOW + 103, started=STARTED - 86400))],
          {"restart": 1}),
    Story("a start time a second off is the same server",
          [(NOW, alive(), FIRST), (NOW + 100, fin(110), FIRST),
           (NOW + 101, fin(111), read(NOW + 101, started=STARTED + 1.2))],
          {"killed": 1}),
    Story("a session running a command cannot die idle: killed",
          [(NOW, alive(), read(NOW, sess(1, 5000, command="Query"))),
           (NOW + 900, fin(0), read(NOW, sess(1, 5000, command="Query"))),
           (NOW + 901, fin(0), read(NOW + 901))],
          {"killed": 1}),
    Story("first seen dead: unknown once a read says no restart",
          [(NOW, fin(), FIRST), (NOW + 31, fin(), read(NOW + 31))],
          {"unknown": 1}),
    Story("a write transaction dropped at idle_write_transaction_timeout",
          [(NOW, alive(), read(NOW, sess(1, 5000, transaction=12, rows_locked=1,
                                             rows_modified=1), **MARIA_TRX)),
           (NOW + 51, reset(61), FIRST)],
          {"transaction_timeout": 1}),
    Story("a read-only transaction under idle_readonly_transaction_timeout",
          [(NOW, alive(), read(NOW, sess(1, 5000, transaction=12), **MARIA_TRX)),
           (NOW + 50, reset(60), FIRST), (NOW + 60, reset(70), read(NOW + 60))],
          {"killed": 1}),  # 50 s is before its 90 s limit
    Story("the path's limit ran out first: network",
          [(NOW, alive(), FIRST), (NOW + 291, reset(301), FIRST)],
          {"network": 1}, settings=Settings(risk_headroom=60.0, network_idle_timeout=300.0)),
    Story("a phantom is the path's doing, counted once even when later reset",
          [(NOW, alive(), FIRST), (NOW + 30, alive(40), read(NOW + 30)),
           (NOW + 60, alive(70), read(NOW + 60)), (NOW + 90, reset(100), read(NOW + 90))],
          {"network": 1}),
    Story("phantoms after a restart are the restart's",
          [(NOW, alive(), FIRST), (NOW + 30, alive(40), read(NOW + 30, started=NOW + 20)),
           (NOW + 31, alive(41), read(NOW + 31, started=NOW + 20))],
          {"restart": 1}, dropped=0),
    Story("a phantom in one read only is not counted (the next read has its session)",
          [(NOW, alive(), FIRST), (NOW + 30, alive(40), read(NOW + 30)),
           (NOW + 31, alive(41), FIRST), (NOW + 32, alive(42), read(NOW + 32, sess(1, 5000)))],
          {}, dropped=0),
    Story("a phantom not yet confirmed, then reset: network",
          [(NOW, alive(), FIRST), (NOW + 30, alive(40), read(NOW + 30)),
           (NOW + 31, reset(41), read(NOW + 30))],
          {"network": 1}),
]


@pytest.mark.parametrize("story", STORIES, ids=lambda s: s.name)
def test_causes(story: Story) -> None:
    memory = Memory()
    target = None
    for now, sockets, server in story.steps:
        target, memory = correlate("db:3306", sockets, server, story.settings, memory, now)
    assert target is not None
    totals = {cause: count for (process, cause), count in target.cause_totals.items()}
    assert totals == story.causes
    assert sum(target.dropped_totals.values()) == story.dropped
    assert all(process == "worker" for process, _ in target.cause_totals)


def test_every_counted_drop_gets_a_cause_once_decided() -> None:
    # Ten connections, one per second, each dying its own way over time: once the reads
    # have caught up, the causes of the drops add up to mysql_idle_sessions_dropped_total.
    memory = Memory()
    ports = range(5000, 5010)
    sockets = [sock(p, idle=10) for p in ports]
    first = read(NOW, *(sess(i, p) for i, p in enumerate(ports)))
    target, memory = correlate("db:3306", sockets, first, SETTINGS, memory, NOW)
    for step, port in enumerate(ports):
        now = NOW + 100 + 60 * step
        sockets = [
            s if s.state is TcpState.CLOSE_WAIT else sock(
                s.local.port, idle=now - NOW + 10,
                state=TcpState.CLOSE_WAIT if s.local.port == port else TcpState.ESTABLISHED)
            for s in sockets
        ]
        target, memory = correlate("db:3306", sockets, first, SETTINGS, memory, now)
    target, memory = correlate("db:3306", sockets, read(NOW + 1000), SETTINGS, memory,
                               NOW + 1000)
    by_cause: dict[str, int] = {}
    for (_, cause), count in target.cause_totals.items():
        by_cause[cause] = by_cause.get(cause, 0) + count
    assert sum(by_cause.values()) == sum(target.dropped_totals.values()) == 10
    # Before 590 s: killed; from then on the limit had run out.
    assert by_cause == {"killed": 9, "idle_timeout": 1}


@pytest.mark.parametrize(("kind", "cause"), [
    (TimeoutKind.WAIT, Cause.IDLE_TIMEOUT),
    (TimeoutKind.SESSION, Cause.IDLE_TIMEOUT),
    (TimeoutKind.INTERACTIVE, Cause.IDLE_TIMEOUT),
    (TimeoutKind.TRANSACTION, Cause.TRANSACTION_TIMEOUT),
    (TimeoutKind.READONLY_TRANSACTION, Cause.TRANSACTION_TIMEOUT),
    (TimeoutKind.WRITE_TRANSACTION, Cause.TRANSACTION_TIMEOUT),
    (TimeoutKind.NETWORK, Cause.NETWORK),
    (None, Cause.UNKNOWN),
])
def test_timeout_causes(kind: TimeoutKind | None, cause: Cause) -> None:
    assert timeout_cause(kind) is cause

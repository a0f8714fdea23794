"""Correlation as a table of cases: every state, NAT, IPv6, name-resolved hosts, memory."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import pytest

from exporter.correlate import Memory
from exporter.model import Endpoint, ServerView, Settings, Socket, State, TcpState, connection_key
from tests.support.builders import DB, NOW, SETTINGS, sess, sock, view
from tests.support.builders import correlate_sockets as correlate


@dataclass
class Case:
    name: str
    sockets: list[Socket]
    server: ServerView | None
    expected: list[State]
    headroom: list[float | None] | None = None
    memory: Memory = field(default_factory=Memory)
    settings: Settings = SETTINGS


CASES = [
    Case("busy session is active", [sock(5000)], view(sess(1, 5000, command="Query")),
         [State.ACTIVE], [None]),
    Case("sleeping with room is idle", [sock(5000, idle=100)], view(sess(1, 5000)),
         [State.IDLE], [500.0]),
    Case("sleeping near the timeout is at risk", [sock(5000, idle=550)], view(sess(1, 5000)),
         [State.AT_RISK], [50.0]),
    Case("headroom exactly at the threshold is at risk", [sock(5000, idle=540)],
         view(sess(1, 5000)), [State.AT_RISK], [60.0]),
    Case("per-session timeout wins over the global one", [sock(5000, idle=100)],
         view(sess(1, 5000, wait_timeout=150)), [State.AT_RISK], [50.0]),
    Case("network idle timeout is smaller than wait_timeout", [sock(5000, idle=100)],
         view(sess(1, 5000)), [State.AT_RISK], [50.0],
         settings=Settings(risk_headroom=60.0, network_idle_timeout=150.0)),
    Case("CLOSE_WAIT is dropped", [sock(5000, state=TcpState.CLOSE_WAIT)], view(),
         [State.DROPPED]),
    Case("gone (server RST) is dropped", [sock(5000, state=TcpState.CLOSE, gone=True)],
         view(), [State.DROPPED]),
    Case("dropped even when the server is down", [sock(5000, state=TcpState.CLOSE_WAIT)],
         view(ok=False), [State.DROPPED]),
    Case("phantom: other sockets match, this one has no session",
         [sock(5000), sock(5001)], view(sess(1, 5000)), [State.IDLE, State.PHANTOM]),
    Case("phantom: this socket matched before", [sock(5000)], view(),
         [State.PHANTOM],
         memory=Memory(matched=frozenset({(Endpoint("10.0.0.9", 5000), DB)}))),
    Case("NAT: nothing ever matched, so unmatched, never phantom",
         [sock(5000), sock(5001)], view(sess(1, 7000, ip="192.0.2.1")),
         [State.UNMATCHED, State.UNMATCHED]),
    Case("no PROCESS privilege: unmatched, not phantom", [sock(5000), sock(5001)],
         view(sess(1, 5000), full_view=False), [State.IDLE, State.UNMATCHED]),
    Case("server down: unmatched", [sock(5000)], view(ok=False), [State.UNMATCHED]),
    Case("no server read yet: unmatched", [sock(5000)], None, [State.UNMATCHED]),
    Case("IPv6 client", [sock(5000, ip="2001:db8::9", remote=Endpoint("2001:db8::5", 3306))],
         view(sess(1, 5000, ip="2001:db8::9")), [State.IDLE]),
    Case("name-resolved loopback client (localhost:PORT)",
         [sock(5000, ip="127.0.0.1", remote=Endpoint("127.0.0.1", 3306))],
         view(sess(1, 5000, ip="localhost")), [State.IDLE]),
    Case("localhost:PORT does not match a non-loopback socket", [sock(5000)],
         view(sess(1, 5000, ip="localhost")), [State.UNMATCHED]),
    Case("name-resolved host matches by port", [sock(5000)],
         view(sess(1, 5000, ip="app-7f9c.example")), [State.IDLE]),
    Case("ambiguous name-resolved port matches nothing", [sock(5000)],
         view(sess(1, 5000, ip="a.example"), sess(2, 5000, ip="b.example")),
         [State.UNMATCHED]),
    Case("the exporter's own session is never matched", [sock(5000)],
         view(sess(1, 5000), own_session_ids=frozenset({1})), [State.UNMATCHED]),
    Case("handshake and teardown states are left out",
         [sock(5000, state=TcpState.SYN_SENT), sock(5001, state=TcpState.FIN_WAIT2),
          sock(5002, state=TcpState.LAST_ACK)], view(), []),
    Case("unix-socket sessions never match", [sock(5000)], view(sess(1, None)),
         [State.UNMATCHED]),
    # view(): wait_timeout 600, interactive_timeout 28800.
    Case("the command-line client is judged by interactive_timeout",
         [sock(5000, idle=590, process="mariadb")], view(sess(1, 5000, idle=590)),
         [State.IDLE], [28210.0]),
    Case("another exporter's session is never at risk",
         [sock(5000, idle=590, process="mysql-idle-expo")], view(sess(1, 5000, idle=590)),
         [State.IDLE], [31_536_000 - 590.0]),
    Case("alive on the server past wait_timeout: interactive_timeout",
         [sock(5000, idle=700)], view(sess(1, 5000, idle=700)), [State.IDLE], [28100.0]),
    Case("a transaction limit governs a session idle inside a transaction",
         [sock(5000, idle=20)],
         view(sess(1, 5000)._replace(transaction_seconds=25.0, rows_modified=1),
              idle_write_transaction_timeout=60.0),
         [State.AT_RISK], [40.0]),
    Case("without tcp_info the server idle plus the read's age is used",
         [sock(5000, idle=None)], view(sess(1, 5000, idle=500), read_at=NOW - 20),
         [State.AT_RISK], [80.0], settings=Settings(risk_headroom=90.0)),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_states(case: Case) -> None:
    snapshot, _ = correlate("db:3306", case.sockets, case.server, case.settings, case.memory, NOW)
    assert [item.state for item in snapshot.items] == case.expected
    if case.headroom is not None:
        assert [item.headroom_seconds for item in snapshot.items] == pytest.approx(case.headroom)


def test_long_query_is_never_idle_however_silent() -> None:
    snapshot, _ = correlate(
        "db", [sock(5000, idle=86_000)], view(sess(1, 5000, command="Query", idle=86_000)),
        SETTINGS, Memory(), NOW,
    )
    assert snapshot.items[0].state is State.ACTIVE
    assert snapshot.items[0].headroom_seconds is None


def test_kernel_idle_is_preferred_over_the_server_idle() -> None:
    # The server read is 20 s old and said 500 s idle; the kernel says 520 s now.
    snapshot, _ = correlate(
        "db", [sock(5000, idle=520)], view(sess(1, 5000, idle=500), read_at=NOW - 20),
        SETTINGS, Memory(), NOW,
    )
    assert snapshot.items[0].idle_seconds == 520
    assert snapshot.items[0].headroom_seconds == pytest.approx(80)


def test_drop_is_counted_once_per_connection() -> None:
    memory = Memory()
    dropped = sock(5000, state=TcpState.CLOSE_WAIT)
    for _ in range(3):
        snapshot, memory = correlate("db", [dropped], view(), SETTINGS, memory, NOW)
    assert snapshot.dropped_totals == {"worker": 1}
    snapshot, memory = correlate("db", [], view(), SETTINGS, memory, NOW + 1)
    snapshot, memory = correlate(
        "db", [sock(5001, gone=True, state=TcpState.CLOSE)], view(), SETTINGS, memory, NOW + 2
    )
    assert snapshot.dropped_totals == {"worker": 2}


def test_vanishing_after_the_timeout_counts_as_a_drop_but_closing_early_does_not() -> None:
    s = view(sess(1, 5000), sess(2, 5001))
    _, memory = correlate("db", [sock(5000, idle=590), sock(5001, idle=10)], s, SETTINGS,
                          Memory(), NOW)
    # 15 s later both are gone: 5000 had 10 s of headroom left, 5001 had 590 s.
    snapshot, memory = correlate("db", [], view(), SETTINGS, memory, NOW + 15)
    assert snapshot.dropped_totals == {"worker": 1}
    snapshot, _ = correlate("db", [], view(), SETTINGS, memory, NOW + 1000)
    assert snapshot.dropped_totals == {"worker": 1}


def test_dropped_after_at_risk_counts_once_not_twice() -> None:
    _, memory = correlate("db", [sock(5000, idle=595)], view(sess(1, 5000)), SETTINGS,
                          Memory(), NOW)
    snapshot, memory = correlate(
        "db", [sock(5000, state=TcpState.CLOSE, gone=True, idle=606)], view(), SETTINGS,
        memory, NOW + 11,
    )
    assert [i.state for i in snapshot.items] == [State.DROPPED]
    assert snapshot.dropped_totals == {"worker": 1}


def test_correlation_working_is_remembered_while_no_socket_exists() -> None:
    snap, memory = correlate("db", [sock(5000)], view(sess(1, 5000)), SETTINGS, Memory(), NOW)
    assert snap.correlation_working
    snap, memory = correlate("db", [], view(), SETTINGS, memory, NOW + 1)
    assert snap.correlation_working
    snap, memory = correlate("db", [sock(6000)], view(sess(1, 7000, ip="192.0.2.1")), SETTINGS,
                             memory, NOW + 2)
    assert not snap.correlation_working
    # Phantom needs a match now or a remembered match of this very connection.
    assert [i.state for i in snap.items] == [State.UNMATCHED]


def test_a_lone_phantom_keeps_correlation_working() -> None:
    _, memory = correlate("db", [sock(5000)], view(sess(1, 5000)), SETTINGS, Memory(), NOW)
    snap, _ = correlate("db", [sock(5000)], view(), SETTINGS, memory, NOW + 1)
    assert [i.state for i in snap.items] == [State.PHANTOM]
    assert snap.correlation_working


def test_memory_is_bounded_to_present_connections() -> None:
    memory = Memory()
    for port in range(5000, 5100):
        _, memory = correlate("db", [sock(port)], view(sess(1, port)), SETTINGS, memory, NOW)
    assert memory.matched == {connection_key(sock(5099))}
    assert set(memory.expiries) == {connection_key(sock(5099))}


def test_inputs_are_not_changed() -> None:
    # Compared with deep copies taken before: a correlate that edited a list, a view's
    # sessions or the memory's tables in place would fail here.
    sockets = [sock(5000), sock(5001, state=TcpState.CLOSE_WAIT), sock(5002, idle=590)]
    server = view(sess(1, 5000), sess(3, 5002))
    _, memory = correlate("db", sockets, server, SETTINGS, Memory(), NOW)
    before = copy.deepcopy((sockets, server, memory))
    correlate("db", sockets[:1], server, SETTINGS, memory, NOW + 20)
    assert (sockets, server, memory) == before
    assert dict(memory.items) == dict(before[2].items)
    assert dict(memory.dropped_totals) == dict(before[2].dropped_totals)


def test_what_the_server_showed_is_remembered_while_the_connection_lives() -> None:
    # Seen idle past wait_timeout at a read: judged by interactive_timeout from then on,
    # also at later collections between reads (the kernel's idle time only).
    _, memory = correlate("db", [sock(5000, idle=700)], view(sess(1, 5000, idle=700)),
                          SETTINGS, Memory(), NOW)
    snap, memory = correlate("db", [sock(5000, idle=710)], view(sess(1, 5000, idle=700)),
                             SETTINGS, memory, NOW + 10)
    assert snap.items[0].headroom_seconds == pytest.approx(28090.0)
    assert set(memory.outlived) == {connection_key(sock(5000))}
    # Forgotten with the connection.
    _, memory = correlate("db", [], view(), SETTINGS, memory, NOW + 20)
    assert memory.outlived == {}

"""The planner as tables of cases: when to read, why, about whom, and what a read leaves."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from exporter.model import Endpoint, ServerView, Settings, Socket, TcpState, connection_key
from exporter.planner import (
    OWN_ENDPOINTS_KEPT,
    ReadPolicy,
    ReadReason,
    TargetState,
    accepts_early,
    early_read,
    plan,
    settle,
)
from tests.support.builders import DB, NOW, sess, sock, view

POLICY = ReadPolicy(interval=30.0, settings=Settings(risk_headroom=10.0))
ADDRESSES = frozenset({DB.ip})


def known(*sockets: Socket) -> frozenset[tuple[Endpoint, Endpoint]]:
    return frozenset(connection_key(s) for s in sockets)


@dataclass
class ReasonCase:
    name: str
    state: TargetState
    sockets: list[Socket]
    reason: ReadReason | None
    fresh: bool = False
    policy: ReadPolicy = field(default_factory=lambda: POLICY)


S = sock(5000, idle=5)
REASONS = [
    ReasonCase("no read yet, no socket: a cache will do", TargetState(), [],
               ReadReason.NO_READ_YET),
    ReasonCase("no read yet, a new connection: a cache will not do", TargetState(), [S],
               ReadReason.NO_READ_YET, fresh=True),
    ReasonCase("the last read failed", TargetState(last_view=view(ok=False),
                                                   known_at_read=known(S)),
               [S], ReadReason.LAST_READ_FAILED),
    ReasonCase("a recent read serves", TargetState(last_view=view(read_at=NOW - 10),
                                                   known_at_read=known(S)), [S], None),
    ReasonCase("the interval has elapsed", TargetState(last_view=view(read_at=NOW - 30),
                                                       known_at_read=known(S)),
               [S], ReadReason.INTERVAL_ELAPSED),
    ReasonCase("interval 0 reads every time", TargetState(last_view=view(read_at=NOW),
                                                          known_at_read=known(S)),
               [S], ReadReason.INTERVAL_ELAPSED, policy=ReadPolicy(interval=0)),
    ReasonCase("a connection newer than the read", TargetState(
        last_view=view(read_at=NOW - 1), known_at_read=known(S)),
        [S, sock(5001, idle=1)], ReadReason.NEW_CONNECTION, fresh=True),
    ReasonCase("a dropped socket is not a new connection", TargetState(
        last_view=view(read_at=NOW - 1), known_at_read=known(S)),
        [S, sock(5001, state=TcpState.CLOSE_WAIT)], None),
    # 20 s wait_timeout, 15 s silent, read 17 s ago: it talked since the read and is
    # within the 10 s risk threshold: the server must confirm before it is called at risk.
    ReasonCase("talked since the read, near its timeout", TargetState(
        last_view=view(read_at=NOW - 17, wait_timeout=20.0),
        known_at_read=known(sock(5000, idle=15))),
        [sock(5000, idle=15)], ReadReason.CHANGED_NEAR_TIMEOUT, fresh=True),
    ReasonCase("silent since before the read: the read still holds", TargetState(
        last_view=view(read_at=NOW - 17, wait_timeout=20.0),
        known_at_read=known(sock(5000, idle=18))),
        [sock(5000, idle=18)], None),
    ReasonCase("the network's limit counts as the timeout", TargetState(
        last_view=view(read_at=NOW - 17), known_at_read=known(sock(5000, idle=15))),
        [sock(5000, idle=15)], ReadReason.CHANGED_NEAR_TIMEOUT, fresh=True,
        policy=ReadPolicy(interval=30, settings=Settings(risk_headroom=10,
                                                         network_idle_timeout=20))),
]


@pytest.mark.parametrize("case", REASONS, ids=[c.name for c in REASONS])
def test_read_reasons(case: ReasonCase) -> None:
    made = plan(case.state, case.sockets, DB.port, ADDRESSES, NOW, case.policy)
    assert made.reason is case.reason
    assert made.fresh is case.fresh
    asked = frozenset(s.local.ip for s in case.sockets) if case.reason else frozenset()
    assert made.client_ips == asked


def test_only_this_targets_sockets_and_never_the_exporters_own() -> None:
    own = Endpoint("10.0.0.9", 6000)
    sockets = [sock(5000), sock(6000), sock(5001, remote=Endpoint("10.0.0.6", 3306)),
               sock(5002, remote=Endpoint(DB.ip, 3307))]
    made = plan(TargetState(own_endpoints=(own,)), sockets, DB.port, ADDRESSES, NOW, POLICY)
    assert [s.local.port for s in made.sockets] == [5000]
    assert made.live == known(sock(5000))


def test_the_live_set_leaves_out_dropped_and_gone_sockets() -> None:
    sockets = [sock(5000), sock(5001, state=TcpState.CLOSE_WAIT),
               sock(5002, state=TcpState.CLOSE, gone=True)]
    made = plan(TargetState(), sockets, DB.port, ADDRESSES, NOW, POLICY)
    assert made.live == known(sock(5000))


@pytest.mark.parametrize(
    ("state", "reads_are_fresh", "expected"),
    [
        (TargetState(), True, None),  # never read: nothing to repeat
        (TargetState(last_view=view(read_at=NOW - 40), read_ips=frozenset({"10.0.0.9"}),
                     saw_new_connection=False), True, frozenset({"10.0.0.9"})),
        (TargetState(last_view=view(ok=False), read_ips=frozenset({"10.0.0.9"}),
                     saw_new_connection=False), True, frozenset({"10.0.0.9"})),
        # Not due yet.
        (TargetState(last_view=view(read_at=NOW - 5), read_ips=frozenset({"10.0.0.9"}),
                     saw_new_connection=False), True, None),
        # Churn: the dump would likely show a connection newer than an early read.
        (TargetState(last_view=view(read_at=NOW - 40), read_ips=frozenset({"10.0.0.9"}),
                     saw_new_connection=True), True, None),
        # A cached (fleet) answer could be older than the dump.
        (TargetState(last_view=view(read_at=NOW - 40), read_ips=frozenset({"10.0.0.9"}),
                     saw_new_connection=False), False, None),
        # The last read asked about no address: nothing to ask now either.
        (TargetState(last_view=view(read_at=NOW - 40), saw_new_connection=False), True, None),
    ],
)
def test_early_reads(state: TargetState, reads_are_fresh: bool,
                     expected: frozenset[str] | None) -> None:
    assert early_read(state, NOW, POLICY, reads_are_fresh=reads_are_fresh) == expected


def test_an_early_read_serves_only_a_due_read_without_new_connections_or_addresses() -> None:
    state = TargetState(last_view=view(read_at=NOW - 40), known_at_read=known(sock(5000)))
    due = plan(state, [sock(5000)], DB.port, ADDRESSES, NOW, POLICY)
    assert accepts_early(due, frozenset({"10.0.0.9"}))
    assert not accepts_early(due, frozenset({"10.0.0.8"}))
    newer = plan(state, [sock(5000), sock(5001)], DB.port, ADDRESSES, NOW, POLICY)
    assert not accepts_early(newer, frozenset({"10.0.0.9"}))
    recent = plan(replace_view(state, view(read_at=NOW - 1)), [sock(5000)], DB.port, ADDRESSES,
                  NOW, POLICY)
    assert not accepts_early(recent, frozenset({"10.0.0.9"}))


def replace_view(state: TargetState, server: ServerView) -> TargetState:
    return TargetState(last_view=server, known_at_read=state.known_at_read)


def test_a_successful_read_knows_the_live_connections_and_reveals_the_exporters_own() -> None:
    own_new = Endpoint("10.0.0.9", 6001)
    sockets = [sock(5000), sock(6001)]
    made = plan(TargetState(), sockets, DB.port, ADDRESSES, NOW, POLICY)
    read = view(sess(1, 5000), own_client_endpoints=frozenset({own_new}))
    state, kept = settle(TargetState(), made, read)
    assert [s.local.port for s in kept] == [5000]
    assert state.own_endpoints == (own_new,)
    assert state.known_at_read == known(*sockets)
    assert state.last_view is read and state.read_ips == frozenset({"10.0.0.9"})


def test_a_failed_read_keeps_what_the_last_good_one_knew() -> None:
    before = TargetState(last_view=view(), known_at_read=known(sock(5000)))
    made = plan(before, [sock(5000), sock(5001)], DB.port, ADDRESSES, NOW, POLICY)
    state, _ = settle(before, made, view(ok=False))
    assert state.known_at_read == known(sock(5000))
    assert state.saw_new_connection


def test_no_read_changes_only_the_new_connection_flag() -> None:
    before = TargetState(last_view=view(read_at=NOW - 1), known_at_read=known(sock(5000)),
                         saw_new_connection=True)
    made = plan(before, [sock(5000)], DB.port, ADDRESSES, NOW, POLICY)
    assert made.reason is None
    state, kept = settle(before, made, None)
    assert state == TargetState(last_view=before.last_view, known_at_read=before.known_at_read,
                                saw_new_connection=False)
    assert kept == made.sockets


def test_the_exporters_own_endpoints_are_bounded() -> None:
    state = TargetState()
    for port in range(6000, 6000 + OWN_ENDPOINTS_KEPT + 5):
        made = plan(state, [], DB.port, ADDRESSES, NOW, POLICY)
        state, _ = settle(state, made,
                          view(own_client_endpoints=frozenset({Endpoint("10.0.0.9", port)})))
    assert len(state.own_endpoints) == OWN_ENDPOINTS_KEPT
    assert state.own_endpoints[-1].port == 6000 + OWN_ENDPOINTS_KEPT + 4

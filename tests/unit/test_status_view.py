"""The status view model: a pure function of a snapshot, the drop history and the time."""

from __future__ import annotations

import pytest

from exporter import advice
from exporter.correlate import Memory
from exporter.drops import DropEvent, DropHistory
from exporter.model import ResolveStatus, Settings, Snapshot, State, TcpState
from exporter.status import Verdict, build_view, format_duration, to_json
from tests.support.builders import NOW, SETTINGS, correlate_sockets, report, sess, sock, view
from tests.support.status import HOSTILE, WALL, every_state_snapshot, every_state_view


def one_target(sockets, server, *, settings: Settings = SETTINGS,
               resolve: ResolveStatus | None = None, drops: DropHistory | None = None,
               max_rows: int = 500):
    target, _ = correlate_sockets("db:3306", sockets, server, settings, Memory(), NOW)
    kw = {} if resolve is None else {"resolve": resolve}
    snapshot = Snapshot(reports=(report(target, **kw),), collections=1)
    return build_view(snapshot, drops or DropHistory(), WALL, max_rows=max_rows)


def test_riskiest_first_targets_processes_sessions() -> None:
    built = every_state_view()
    assert [t.target for t in built.targets] == ["db:3306", "other:3306", "proxy:3306"]
    main = built.targets[0]
    assert [p.process for p in main.processes] == [
        "worker", "cron", HOSTILE, "unknown", "report", "nightly"]
    assert [(s.local, s.state) for s in main.processes[0].sessions] == [
        ("10.0.0.9:5003", State.DROPPED),
        ("10.0.0.9:5002", State.AT_RISK),
        ("10.0.0.9:5001", State.IDLE),
    ]


@pytest.mark.parametrize(
    ("sockets", "sessions", "expected"),
    [
        pytest.param([sock(1, idle=10)], [sess(1, 1, idle=10)], Verdict.OK, id="idle"),
        pytest.param([sock(1, idle=10)], [sess(1, 1, command="Query")], Verdict.OK, id="active"),
        pytest.param([sock(1, idle=550)], [sess(1, 1, idle=550)], Verdict.RISK, id="at risk"),
        pytest.param([sock(1, state=TcpState.CLOSE_WAIT)], [], Verdict.RISK, id="dropped"),
        pytest.param([sock(1), sock(2)], [sess(1, 1)], Verdict.RISK, id="phantom"),
        pytest.param([], [], Verdict.OK, id="no sockets"),
    ],
)
def test_verdict(sockets, sessions, expected) -> None:
    assert one_target(sockets, view(*sessions)).verdict is expected


@pytest.mark.parametrize(
    ("server", "resolve", "notices", "verdict"),
    [
        pytest.param(view(ok=False, error="timed out"), None, ["server_down"], Verdict.UNKNOWN,
                     id="server down"),
        pytest.param(None, ResolveStatus(error="Name or service not known"), ["unresolved"],
                     Verdict.UNKNOWN, id="name does not resolve"),
        pytest.param(view(full_view=False), None, ["no_process_privilege"], Verdict.UNKNOWN,
                     id="no PROCESS privilege"),
        pytest.param(view(sess(9, 40000, ip="192.168.1.1")), None, ["correlation_lost"],
                     Verdict.UNKNOWN, id="addresses rewritten on the way"),
    ],
)
def test_what_the_exporter_cannot_see(server, resolve, notices, verdict) -> None:
    built = one_target([sock(5001)], server, resolve=resolve)
    target = built.targets[0]
    assert [n.key for n in target.notices] == notices
    assert built.verdict is verdict
    assert target.processes[0].sessions[0].state is State.UNMATCHED
    assert target.processes[0].advice == (advice.UNMATCHED,)


def test_owner_not_visible_and_no_tcp_info_are_said() -> None:
    built = one_target([sock(5001, pid=None, process="unknown"), sock(5002, idle=None)],
                       view(sess(1, 5001), sess(2, 5002)))
    notices = {n.key: n for n in built.targets[0].notices}
    assert set(notices) == {"owners_unknown", "no_tcp_info"}
    assert notices["owners_unknown"].text.startswith("1 socket has no visible owner")
    assert notices["owners_unknown"].advice is advice.OWNERS_UNKNOWN
    assert built.verdict is Verdict.OK


def test_a_down_target_ranks_after_danger_and_before_the_rest() -> None:
    danger, _ = correlate_sockets("a", [sock(1, idle=590)], view(sess(1, 1, idle=590)),
                                  SETTINGS, Memory(), NOW)
    down, _ = correlate_sockets("b", [sock(2)], view(ok=False, error="x"), SETTINGS, Memory(),
                                NOW)
    calm, _ = correlate_sockets("c", [sock(3)], view(sess(3, 3)), SETTINGS, Memory(), NOW)
    snapshot = Snapshot(reports=(report(calm), report(down), report(danger)), collections=1)
    built = build_view(snapshot, DropHistory(), WALL)
    assert [t.target for t in built.targets] == ["a", "b", "c"]


@pytest.mark.parametrize(
    ("counts", "expected"),
    [
        pytest.param([], (), id="none"),
        pytest.param([1], (advice.RECENT_DROPS,), id="one drop"),
        pytest.param([1, 2], (advice.REPEATED_DROPS,), id="three in the hour"),
    ],
)
def test_drops_of_the_last_hour_per_process(counts, expected) -> None:
    # Oldest first, as a history keeps them.
    events = tuple(DropEvent("db:3306", "worker", WALL - 100 * (len(counts) - i), n)
                   for i, n in enumerate(counts))
    old = (DropEvent("db:3306", "worker", WALL - 4000, 10),)  # outside the hour
    built = one_target([sock(1)], view(sess(1, 1)), drops=DropHistory(events=old + events))
    worker = built.targets[0].processes[0]
    assert worker.drops == sum(counts)
    assert worker.advice == expected
    assert [d.ago for d in built.targets[0].drops] == [100.0 * (i + 1) for i in range(len(counts))]


def test_a_process_known_only_from_its_drops_is_listed() -> None:
    events = (DropEvent("db:3306", "nightly", WALL - 30, 1),)
    built = one_target([], view(), drops=DropHistory(events=events))
    (nightly,) = built.targets[0].processes
    assert (nightly.process, nightly.worst, nightly.sockets, nightly.drops) == (
        "nightly", None, 0, 1)
    assert built.targets[0].drops[0].cause is None


def test_session_row_carries_both_sides() -> None:
    built = one_target([sock(5002, idle=560.0, keepalive=True)],
                       view(sess(2, 5002, idle=558.0, user="app", db="shop")))
    row = built.targets[0].processes[0].sessions[0]
    assert (row.local, row.remote, row.tcp_state, row.pid, row.process) == (
        "10.0.0.9:5002", "10.0.0.5:3306", "ESTABLISHED", 4242, "worker")
    assert (row.session_id, row.user, row.db, row.command) == (2, "app", "shop", "Sleep")
    assert (row.client_idle, row.server_idle, row.timeout, row.headroom) == (
        560.0, 558.0, 600.0, 40.0)
    assert row.keepalive and row.advice is advice.AT_RISK


def test_a_reset_socket_is_gone_and_the_server_idle_is_carried_to_the_collection() -> None:
    gone = one_target([sock(1, gone=True)], view()).targets[0].processes[0].sessions[0]
    assert (gone.tcp_state, gone.state) == ("gone", State.DROPPED)
    stale = one_target([sock(1, idle=None)], view(sess(1, 1, idle=20.0), read_at=NOW - 5))
    assert stale.targets[0].processes[0].sessions[0].server_idle == 25.0


def test_rows_beyond_the_limit_are_counted_not_listed() -> None:
    sockets = [sock(port, idle=float(port)) for port in range(1, 11)]
    built = one_target(sockets, view(*(sess(p, p, idle=float(p)) for p in range(1, 11))),
                       max_rows=4)
    worker = built.targets[0].processes[0]
    assert worker.sockets == 10 and len(worker.sessions) == 4 and worker.more == 6
    # The riskiest (least headroom: the longest idle) are the ones kept.
    assert [s.local for s in worker.sessions] == [f"10.0.0.9:{p}" for p in (10, 9, 8, 7)]


def test_hostile_names_are_made_encodable_not_changed() -> None:
    bad = "w" + chr(0xDCFF)
    built = one_target([sock(1, process=bad)], view(sess(1, 1, user="<u>" + chr(0xDCFE))))
    row = built.targets[0].processes[0].sessions[0]
    assert (row.process, row.user) == ("w\ufffd", "<u>\ufffd")
    every = every_state_view().targets[0]
    assert HOSTILE in [p.process for p in every.processes]


def test_summary_says_the_worst_first() -> None:
    assert every_state_view().summary == (
        "1 session dead but still held; 1 phantom socket (no server session); 1 session "
        "about to be dropped; 1 target not readable; 2 sockets with unknown risk")
    assert one_target([sock(1)], view(sess(1, 1))).summary == (
        "all well: 1 socket, none near its timeout")
    assert one_target([], view()).summary == "no sockets to the watched databases"


def test_json_has_the_documented_keys() -> None:
    document = to_json(every_state_view())
    assert set(document) == {"schema", "version", "generated_at", "collection_age_seconds",
                             "collections", "drop_window_seconds", "verdict", "summary",
                             "targets"}
    target = document["targets"][0]
    assert target["counts"] == {"active": 1, "idle": 3, "at_risk": 1, "dropped": 1,
                                "phantom": 1}
    session = target["processes"][0]["sessions"][1]
    assert session["state"] == "at_risk" and session["headroom_seconds"] == 40.0
    assert every_state_snapshot().collections == document["collections"] == 42


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(None, "-"), (0.0, "0.0s"), (4.26, "4.2s"), (9.99, "9.9s"), (10.0, "10s"), (59.9, "59s"),
     (60, "1m00s"), (305, "5m05s"), (3600, "1h00m"), (7380, "2h03m"), (93600, "1d02h"),
     (-2.5, "-2.5s")],
)
def test_format_duration(seconds, text) -> None:
    assert format_duration(seconds) == text

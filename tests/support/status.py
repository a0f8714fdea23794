"""A collection with every situation the status page shows, for its view model and
renderings: each state, hostile names, a server that cannot be read, a user without
PROCESS, an owner the exporter cannot see, and drops in the last hour."""

from __future__ import annotations

from dataclasses import replace

from exporter.correlate import Memory
from exporter.drops import DropEvent, DropHistory
from exporter.model import Snapshot, TcpState
from exporter.status import StatusView, build_view
from tests.support.builders import NOW, SETTINGS, correlate_sockets, report, sess, sock, view

# The wall clock of the view (the engine's clock is NOW, a small monotonic value).
WALL = 1_796_000_000.0
HOSTILE = "<img src=x onerror=alert(1)>"


def every_state_snapshot() -> Snapshot:
    main, _ = correlate_sockets(
        "db:3306",
        [
            sock(5001, idle=10.0),  # idle, 590 s left
            sock(5002, idle=560.0),  # at_risk, 40 s left
            sock(5003, state=TcpState.CLOSE_WAIT, idle=700.0),  # dropped (FIN)
            sock(5004, idle=900.0, process="report", pid=77),  # active: a long query
            sock(5005, idle=400.0, process="cron", pid=88),  # phantom: no such session
            sock(5006, idle=30.0, process=HOSTILE, pid=666),
            sock(5007, idle=5.0, process="unknown", pid=None),  # owner not visible
        ],
        view(
            sess(1, 5001, idle=10.0),
            sess(2, 5002, idle=560.0),
            sess(4, 5004, command="Query", idle=900.0, user="reporter", db="analytics"),
            sess(6, 5006, idle=30.0, user="<script>alert(2)</script>", db='a&b"c'),
            sess(7, 5007, idle=5.0),
        ),
        SETTINGS,
        Memory(),
        NOW,
    )
    down, _ = correlate_sockets(
        "other:3306",
        [sock(6001, idle=20.0, process="batch", pid=99)],
        view(ok=False, error="cannot connect: (2003) Connection refused"),
        SETTINGS,
        Memory(),
        NOW,
    )
    blind, _ = correlate_sockets(
        "proxy:3306",
        [sock(7001, idle=20.0, process="api", pid=55)],
        view(full_view=False),
        SETTINGS,
        Memory(),
        NOW,
    )
    return Snapshot(reports=(report(down), report(main), report(blind)), collections=42,
                    top_sessions=20)


def recent_drops() -> DropHistory:
    events = (
        DropEvent("db:3306", "worker", WALL - 7200, 5),  # outside the hour: not shown
        DropEvent("db:3306", "worker", WALL - 1800, 1),
        DropEvent("db:3306", "worker", WALL - 600, 1),
        DropEvent("db:3306", "nightly", WALL - 120, 1, cause="wait_timeout"),
        DropEvent("db:3306", "worker", WALL - 60, 1),
    )
    return DropHistory(events=events, collection=42)


def every_state_view() -> StatusView:
    """The view of every_state_snapshot() at WALL, its version fixed for golden files."""
    built = build_view(every_state_snapshot(), recent_drops(), WALL, collection_age=1.5)
    return replace(built, version="VERSION")

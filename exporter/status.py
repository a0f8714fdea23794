"""What the status page, /status.json and `mysql-idle-exporter inspect` show, as a pure
function of one collection (a Snapshot), the drops seen lately (exporter.drops) and the
time: ``build_view`` makes plain values, and the renderers only format them
(exporter/web/status.py for HTML, exporter/status_text.py for a terminal, ``to_json`` here
for scripts).

Everything is ordered riskiest first: targets, the processes of a target, the sessions of
a process. Every name (process, user, database) comes from outside and may be hostile:
here it is only made encodable (lone surrogates become U+FFFD); each renderer escapes it
for its own medium.
"""

from __future__ import annotations

import enum
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from exporter import __version__, advice
from exporter.advice import Advice
from exporter.drops import WINDOW_SECONDS, DropEvent, DropHistory
from exporter.model import (
    ALL_STATES,
    Classified,
    ServerView,
    Snapshot,
    State,
    TargetReport,
    TcpState,
)
from exporter.summary import utf8_label

SCHEMA_VERSION = 1
# Session rows per target at most (riskiest first); the rest are only counted. Process
# totals always cover every socket.
MAX_ROWS_PER_TARGET = 500

# Riskiest first. A target whose server cannot be read sits between the sessions known to
# be in danger and those whose risk is unknown.
_RANK = {
    State.DROPPED: 0,
    State.PHANTOM: 1,
    State.AT_RISK: 2,
    State.UNMATCHED: 4,
    State.IDLE: 5,
    State.ACTIVE: 6,
}
_DOWN_RANK = 3
_QUIET_RANK = 7
_DANGER = (State.DROPPED, State.PHANTOM, State.AT_RISK)

_SESSION_ADVICE: Mapping[State, Advice] = {
    State.DROPPED: advice.DEAD_HELD,
    State.PHANTOM: advice.PHANTOM,
    State.AT_RISK: advice.AT_RISK,
    State.UNMATCHED: advice.UNMATCHED,
}

# Every Notice.key, in the order they are given (docs/status.md lists them).
NOTICE_KEYS = ("unresolved", "server_down", "no_process_privilege", "correlation_lost",
               "owners_unknown", "no_tcp_info")

# Words for a state where a person reads it.
STATE_LABELS: Mapping[State, str] = {
    State.DROPPED: "dropped (dead, still held)",
    State.PHANTOM: "phantom (no session)",
    State.AT_RISK: "at risk",
    State.UNMATCHED: "unmatched (risk unknown)",
    State.IDLE: "idle",
    State.ACTIVE: "active",
}


class Verdict(enum.Enum):
    """The whole collection in one word: what `inspect`'s exit code says."""

    OK = "ok"
    # Something is at risk, dead but held, or a phantom.
    RISK = "risk"
    # Nothing known to be in danger, but part of the picture is missing: a server could not
    # be read, or sockets could not be matched to sessions.
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class SessionRow:
    local: str
    remote: str
    # "ESTABLISHED", "CLOSE_WAIT", ... or "gone": reset by the server, out of the kernel's
    # table, while the process still holds the file descriptor.
    tcp_state: str
    pid: int | None
    process: str
    session_id: int | None
    user: str | None
    db: str | None
    command: str | None
    state: State
    # The kernel's silence of the socket, at the collection.
    client_idle: float | None
    # The server's idle time, carried forward from its read to the collection.
    server_idle: float | None
    timeout: float | None
    # At the collection; a live page counts it down from there.
    headroom: float | None
    keepalive: bool
    advice: Advice | None
    # Which limit ``timeout`` is (exporter.model.TimeoutKind's value), if any.
    limit: str | None = None
    # With keepalive armed: the path's silence when its next probe goes out.
    keepalive_probe_at: float | None = None
    # The session's open transaction: its age and the rows it locks, if any.
    transaction: float | None = None
    rows_locked: int | None = None


@dataclass(frozen=True, slots=True)
class ProcessRow:
    process: str
    pids: tuple[int, ...]
    # Sockets per state, only states with any, riskiest first.
    counts: Mapping[State, int]
    # None for a process that holds no socket now (it is listed for its drops).
    worst: State | None
    min_headroom: float | None
    drops: int
    advice: tuple[Advice, ...]
    sessions: tuple[SessionRow, ...]
    # Sockets left out of ``sessions`` (MAX_ROWS_PER_TARGET).
    more: int

    @property
    def sockets(self) -> int:
        return sum(self.counts.values())


@dataclass(frozen=True, slots=True)
class DropRow:
    process: str
    at: float
    ago: float
    count: int
    cause: str | None


@dataclass(frozen=True, slots=True)
class Notice:
    """Something the exporter cannot see for this target, and what would let it."""

    key: str
    text: str
    advice: Advice


@dataclass(frozen=True, slots=True)
class ServerFacts:
    flavor: str | None
    version: str
    source: str
    wait_timeout: float | None
    interactive_timeout: float | None
    full_view: bool
    per_session_timeouts: bool
    # Seconds between the server read used and the collection.
    read_age: float | None


@dataclass(frozen=True, slots=True)
class TargetView:
    target: str
    up: bool
    error: str | None
    server: ServerFacts | None
    correlation_working: bool
    risk_headroom: float
    network_idle_timeout: float | None
    notices: tuple[Notice, ...]
    processes: tuple[ProcessRow, ...]
    drops: tuple[DropRow, ...]
    counts: Mapping[State, int]
    rank: int


@dataclass(frozen=True, slots=True)
class StatusView:
    version: str
    # Wall clock (Unix seconds) when the view was made.
    generated_at: float
    # Seconds between the collection and ``generated_at``, where known.
    collection_age: float | None
    collections: int
    window: float
    verdict: Verdict
    summary: str
    targets: tuple[TargetView, ...]


def build_view(
    snapshot: Snapshot,
    history: DropHistory,
    now: float,
    *,
    collection_age: float | None = None,
    window: float = WINDOW_SECONDS,
    max_rows: int = MAX_ROWS_PER_TARGET,
) -> StatusView:
    """The view of ``snapshot``; ``now`` is the wall clock (Unix seconds), the drops counted
    are those of the ``window`` seconds before it."""
    recent = history.recent(now, window)
    targets = [
        _target_view(report, [e for e in recent if e.target == report.snapshot.target], now,
                     max_rows)
        for report in snapshot.reports
    ]
    order = sorted(range(len(targets)), key=lambda i: (targets[i].rank, i))
    ordered = tuple(targets[i] for i in order)
    verdict = _verdict(ordered)
    return StatusView(
        version=__version__,
        generated_at=now,
        collection_age=collection_age,
        collections=snapshot.collections,
        window=window,
        verdict=verdict,
        summary=_summary(ordered),
        targets=ordered,
    )


def _target_view(report: TargetReport, recent: Sequence[DropEvent], now: float,
                 max_rows: int) -> TargetView:
    snap = report.snapshot
    server = snap.server
    up = server is not None and server.ok
    age = snap.server_age_seconds or 0.0
    items = sorted(snap.items, key=_item_order)
    by_process: dict[str, list[Classified]] = {}
    for item in items:
        by_process.setdefault(utf8_label(item.socket.process), []).append(item)
    shown = {id(item) for item in items[:max_rows]}
    drops: dict[str, int] = {}
    for event in recent:
        drops[event.process] = drops.get(event.process, 0) + event.count
    processes = [
        _process_row(name, by_process.get(name, []), drops.get(name, 0), age, shown)
        for name in sorted(by_process.keys() | drops.keys())
    ]
    processes.sort(key=_process_order)
    counts = _counts(items)
    rank = min((_RANK[s] for s in counts), default=_QUIET_RANK)
    if not up:
        rank = min(rank, _DOWN_RANK)
    return TargetView(
        target=snap.target,
        up=up,
        error=None if up else (
            utf8_label(server.error or "unknown error") if server is not None
            else "not read yet"),
        server=_facts(server, snap.server_age_seconds) if server is not None and up else None,
        correlation_working=snap.correlation_working,
        risk_headroom=snap.settings.risk_headroom,
        network_idle_timeout=snap.settings.network_idle_timeout,
        notices=tuple(_notices(report, items)),
        processes=tuple(processes),
        drops=tuple(
            DropRow(e.process, e.at, max(now - e.at, 0.0), e.count, e.cause) for e in recent
        ),
        counts=counts,
        rank=rank,
    )


def _item_order(item: Classified) -> tuple[int, float, str, int]:
    headroom = item.headroom_seconds
    local = item.socket.local
    return (_RANK[item.state], math.inf if headroom is None else headroom, local.ip, local.port)


def _process_order(row: ProcessRow) -> tuple[int, float, int, str]:
    rank = _QUIET_RANK if row.worst is None else _RANK[row.worst]
    headroom = math.inf if row.min_headroom is None else row.min_headroom
    return (rank, headroom, -row.drops, row.process)


_BY_RANK = sorted(ALL_STATES, key=_RANK.__getitem__)


def _counts(items: Iterable[Classified]) -> dict[State, int]:
    found: dict[State, int] = {}
    for item in items:
        found[item.state] = found.get(item.state, 0) + 1
    return {state: found[state] for state in _BY_RANK if state in found}


def _process_row(name: str, items: Sequence[Classified], drops: int, server_age: float,
                 shown: set[int]) -> ProcessRow:
    rows = tuple(_session_row(item, name, server_age) for item in items if id(item) in shown)
    counts = _counts(items)
    headrooms = [i.headroom_seconds for i in items
                 if i.state in (State.IDLE, State.AT_RISK) and i.headroom_seconds is not None]
    worst = items[0].state if items else None  # items come riskiest first
    found: list[Advice] = []
    for state in counts:
        tip = _SESSION_ADVICE.get(state)
        if tip is not None and tip not in found:
            found.append(tip)
    if drops >= advice.REPEATED_DROPS_AT:
        found.append(advice.REPEATED_DROPS)
    elif drops and not found:
        found.append(advice.RECENT_DROPS)
    return ProcessRow(
        process=name,
        pids=tuple(sorted({i.socket.pid for i in items if i.socket.pid is not None})),
        counts=counts,
        worst=worst,
        min_headroom=min(headrooms) if headrooms else None,
        drops=drops,
        advice=tuple(found),
        sessions=rows,
        more=len(items) - len(rows),
    )


def _session_row(item: Classified, process: str, server_age: float) -> SessionRow:
    sock, session = item.socket, item.session
    return SessionRow(
        local=str(sock.local),
        remote=str(sock.remote),
        tcp_state="gone" if sock.gone else TcpState(sock.state).name,
        pid=sock.pid,
        process=process,
        session_id=session.id if session is not None else None,
        user=utf8_label(session.user) if session is not None else None,
        db=utf8_label(session.db) if session is not None and session.db is not None else None,
        command=utf8_label(session.command) if session is not None else None,
        state=item.state,
        client_idle=sock.idle_seconds,
        server_idle=session.idle_seconds + server_age if session is not None else None,
        timeout=item.timeout_seconds,
        headroom=item.headroom_seconds,
        keepalive=sock.keepalive,
        advice=_SESSION_ADVICE.get(item.state),
        limit=item.timeout_kind.value if item.timeout_kind is not None else None,
        keepalive_probe_at=sock.keepalive_probe_at,
        transaction=session.transaction_seconds if session is not None else None,
        rows_locked=(session.rows_locked if session is not None
                     and session.transaction_seconds is not None else None),
    )


def _facts(server: ServerView, read_age: float | None) -> ServerFacts:
    return ServerFacts(
        flavor=server.flavor.value if server.flavor is not None else None,
        version=utf8_label(server.version),
        source=server.source,
        wait_timeout=server.wait_timeout,
        interactive_timeout=server.interactive_timeout,
        full_view=server.full_view,
        per_session_timeouts=server.per_session_timeouts,
        read_age=read_age,
    )


def _notices(report: TargetReport, items: Sequence[Classified]) -> Iterable[Notice]:
    snap = report.snapshot
    server = snap.server
    resolve = report.resolve
    if resolve.error is not None and not resolve.addresses:
        yield Notice(
            "unresolved",
            f"The target's host name does not resolve ({utf8_label(resolve.error)}): no socket "
            "can be told to be this target's, and its server is not asked.",
            advice.TARGET_DOWN,
        )
    elif server is None or not server.ok:
        reason = utf8_label(server.error or "unknown error") if server else "not read yet"
        yield Notice(
            "server_down",
            f"The server could not be read ({reason}): headroom, phantoms and the sessions' "
            "users and databases are unknown until it can; sockets are shown from the client "
            "side only.",
            advice.TARGET_DOWN,
        )
    if server is not None and server.ok and not server.full_view:
        yield Notice(
            "no_process_privilege",
            "The exporter's user lacks the PROCESS privilege and sees only its own sessions: "
            "the application's sockets cannot be matched (unmatched) and phantoms cannot be "
            "told.",
            advice.NO_PROCESS_PRIVILEGE,
        )
    unmatched = sum(1 for i in items if i.state is State.UNMATCHED)
    if (server is not None and server.ok and server.full_view and unmatched
            and not snap.correlation_working):
        yield Notice(
            "correlation_lost",
            f"{_plural(unmatched, 'socket')} {_verb(unmatched, 'matches', 'match')} no server "
            "session, and none of this "
            "target's sockets does: the server sees other client addresses than this host "
            "uses.",
            advice.CORRELATION_LOST,
        )
    ownerless = sum(1 for i in items if i.socket.pid is None)
    if ownerless:
        yield Notice(
            "owners_unknown",
            f"{_plural(ownerless, 'socket')} {_verb(ownerless, 'has', 'have')} no visible owner "
            "(process \"unknown\"): "
            "the exporter cannot read their process's /proc/PID/fd, so it cannot see a "
            "session the server reset (RST) while that process still holds it.",
            advice.OWNERS_UNKNOWN,
        )
    blind = sum(1 for i in items
                if i.socket.idle_seconds is None and i.socket.state is TcpState.ESTABLISHED
                and not i.socket.gone)
    if blind:
        yield Notice(
            "no_tcp_info",
            f"{_plural(blind, 'socket')} {_verb(blind, 'has', 'have')} no client-side idle time "
            "(no tcp_info): "
            "headroom is judged from the server's last read.",
            advice.NO_TCP_INFO,
        )


def _verdict(targets: Sequence[TargetView]) -> Verdict:
    if any(t.counts.get(s) for t in targets for s in _DANGER):
        return Verdict.RISK
    if any(not t.up or t.counts.get(State.UNMATCHED) for t in targets):
        return Verdict.UNKNOWN
    return Verdict.OK


def _summary(targets: Sequence[TargetView]) -> str:
    """One line for the whole collection, worst news first."""
    total: dict[State, int] = {}
    for t in targets:
        for state, n in t.counts.items():
            total[state] = total.get(state, 0) + n
    parts = []
    if total.get(State.DROPPED):
        parts.append(f"{_plural(total[State.DROPPED], 'session')} dead but still held")
    if total.get(State.PHANTOM):
        parts.append(f"{_plural(total[State.PHANTOM], 'phantom socket')} (no server session)")
    if total.get(State.AT_RISK):
        parts.append(f"{_plural(total[State.AT_RISK], 'session')} about to be dropped")
    down = [t.target for t in targets if not t.up]
    if down:
        parts.append(f"{_plural(len(down), 'target')} not readable")
    if total.get(State.UNMATCHED):
        parts.append(f"{_plural(total[State.UNMATCHED], 'socket')} with unknown risk")
    if parts:
        return "; ".join(parts)
    sockets = sum(total.values())
    if not sockets:
        return "no sockets to the watched databases"
    return f"all well: {_plural(sockets, 'socket')}, none near its timeout"


def _verb(n: int, one: str, many: str) -> str:
    return one if n == 1 else many


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


# --- shared formatting ---------------------------------------------------------------


def format_duration(seconds: float | None) -> str:
    """Seconds for a person: 4.2s, 42s, 4m05s, 2h03m, 1d02h; "-" for none. The status
    page's script (exporter/web/static/status.js) formats its countdown the same way."""
    if seconds is None or math.isnan(seconds):
        return "-"
    if seconds < 0:
        return "-" + format_duration(-seconds)
    if seconds < 10:
        return f"{math.floor(seconds * 10) / 10:.1f}s"
    whole = int(seconds)
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    if whole < 86400:
        return f"{whole // 3600}h{whole % 3600 // 60:02d}m"
    return f"{whole // 86400}d{whole % 86400 // 3600:02d}h"


# --- JSON ----------------------------------------------------------------------------


def _seconds(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def _advice_json(tip: Advice) -> dict[str, str]:
    return {"key": tip.key, "text": tip.text, "url": tip.url}


def to_json(view: StatusView) -> dict[str, Any]:
    """The document /status.json serves and `inspect --json` prints (docs/status.md)."""
    return {
        "schema": SCHEMA_VERSION,
        "version": view.version,
        "generated_at": _seconds(view.generated_at),
        "collection_age_seconds": _seconds(view.collection_age),
        "collections": view.collections,
        "drop_window_seconds": view.window,
        "verdict": view.verdict.value,
        "summary": view.summary,
        "targets": [_target_json(t) for t in view.targets],
    }


def render_json(view: StatusView, *, indent: int | None = 1) -> str:
    """to_json as text; ``indent=None``: one line (`inspect --watch --json`)."""
    return json.dumps(to_json(view), ensure_ascii=False, indent=indent) + "\n"


def _target_json(t: TargetView) -> dict[str, Any]:
    server = t.server
    return {
        "target": t.target,
        "up": t.up,
        "error": t.error,
        "server": None if server is None else {
            "flavor": server.flavor,
            "version": server.version,
            "source": server.source,
            "wait_timeout_seconds": server.wait_timeout,
            "interactive_timeout_seconds": server.interactive_timeout,
            "full_view": server.full_view,
            "per_session_timeouts": server.per_session_timeouts,
            "read_age_seconds": _seconds(server.read_age),
        },
        "correlation_working": t.correlation_working,
        "risk_headroom_seconds": t.risk_headroom,
        "network_idle_timeout_seconds": t.network_idle_timeout,
        "counts": {state.value: n for state, n in t.counts.items()},
        "notices": [
            {"key": n.key, "text": n.text, "advice": _advice_json(n.advice)} for n in t.notices
        ],
        "processes": [_process_json(p) for p in t.processes],
        "drops": [
            {"process": d.process, "at": _seconds(d.at), "ago_seconds": _seconds(d.ago),
             "count": d.count, "cause": d.cause}
            for d in t.drops
        ],
    }


def _process_json(p: ProcessRow) -> dict[str, Any]:
    return {
        "process": p.process,
        "pids": list(p.pids),
        "counts": {state.value: n for state, n in p.counts.items()},
        "worst_state": None if p.worst is None else p.worst.value,
        "min_headroom_seconds": _seconds(p.min_headroom),
        "drops_last_window": p.drops,
        "advice": [_advice_json(a) for a in p.advice],
        "sessions": [_session_json(s) for s in p.sessions],
        "sessions_not_listed": p.more,
    }


def _session_json(s: SessionRow) -> dict[str, Any]:
    return {
        "local": s.local,
        "remote": s.remote,
        "tcp_state": s.tcp_state,
        "pid": s.pid,
        "session_id": s.session_id,
        "user": s.user,
        "db": s.db,
        "command": s.command,
        "state": s.state.value,
        "client_idle_seconds": _seconds(s.client_idle),
        "server_idle_seconds": _seconds(s.server_idle),
        "timeout_seconds": _seconds(s.timeout),
        "headroom_seconds": _seconds(s.headroom),
        "keepalive": s.keepalive,
        "keepalive_probe_at_seconds": _seconds(s.keepalive_probe_at),
        "limit": s.limit,
        "transaction_seconds": _seconds(s.transaction),
        "rows_locked": s.rows_locked,
        "advice": None if s.advice is None else s.advice.key,
    }

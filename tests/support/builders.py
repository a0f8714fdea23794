"""Builders for the values the core passes around: sockets, sessions, server views,
snapshots. Defaults describe one worker at 10.0.0.9 talking to a database at 10.0.0.5:3306.
"""

from __future__ import annotations

from collections.abc import Sequence

from exporter.correlate import Memory, correlate
from exporter.deadline import Deadline
from exporter.model import (
    Endpoint,
    Flavor,
    ServerView,
    Session,
    Settings,
    Snapshot,
    Socket,
    TargetReport,
    TargetSnapshot,
    TcpState,
)
from exporter.planner import live_connections
from exporter.summary import summarise

DB = Endpoint("10.0.0.5", 3306)
NOW = 1000.0
SETTINGS = Settings(risk_headroom=60.0)


def sock(
    port: int,
    *,
    ip: str = "10.0.0.9",
    state: TcpState = TcpState.ESTABLISHED,
    idle: float | None = 10.0,
    process: str = "worker",
    pid: int | None = 4242,
    gone: bool = False,
    keepalive: bool = False,
    remote: Endpoint = DB,
    comm: str | None = None,
    keepalive_probe_at: float | None = None,
) -> Socket:
    return Socket(
        local=Endpoint(ip, port),
        remote=remote,
        state=state,
        inode=port,
        uid=1000,
        idle_seconds=idle,
        keepalive=keepalive,
        keepalive_probe_at=keepalive_probe_at,
        pid=pid,
        process=process,
        gone=gone,
        comm=comm if comm is not None else process,
    )


def sess(
    sid: int,
    port: int | None,
    *,
    ip: str = "10.0.0.9",
    command: str = "Sleep",
    idle: float = 10.0,
    wait_timeout: float | None = None,
    user: str = "app",
    db: str | None = "shop",
    transaction: float | None = None,
    rows_locked: int = 0,
    rows_modified: int = 0,
) -> Session:
    return Session(
        id=sid,
        client=None if port is None else Endpoint(ip, port),
        user=user,
        db=db,
        command=command,
        idle_seconds=idle,
        wait_timeout=wait_timeout,
        transaction_seconds=transaction,
        rows_locked=rows_locked,
        rows_modified=rows_modified,
    )


def view(*sessions: Session, ok: bool = True, full_view: bool = True, **kw: object) -> ServerView:
    """A successful MariaDB read at NOW (wait_timeout 600 s) with these sessions."""
    fields: dict[str, object] = {
        "target": "db:3306",
        "ok": ok,
        "flavor": Flavor.MARIADB,
        "version": "10.11.6-MariaDB",
        "source": "information_schema",
        "wait_timeout": 600.0,
        "interactive_timeout": 28800.0,
        "sessions": tuple(sessions),
        "full_view": full_view,
        "read_at": NOW,
    }
    fields.update(kw)
    return ServerView(**fields)  # type: ignore[arg-type]


def correlate_sockets(
    target: str,
    sockets: Sequence[Socket],
    server: ServerView | None,
    settings: Settings,
    memory: Memory,
    now: float,
) -> tuple[TargetSnapshot, Memory]:
    """correlate() with the live connections worked out as the planner does."""
    return correlate(target, sockets, server, settings, memory, now,
                     live=live_connections(sockets))


def report(target: TargetSnapshot, top: int = 20, **kw: object) -> TargetReport:
    return TargetReport(snapshot=target, summary=summarise(target, top), **kw)  # type: ignore[arg-type]


def snapshot_of(*targets: TargetSnapshot, top: int = 20, collections: int = 1) -> Snapshot:
    return Snapshot(reports=tuple(report(t, top) for t in targets), collections=collections,
                    top_sessions=top)


def soon(seconds: float = 5.0) -> Deadline:
    """A deadline this many seconds from now on the real clock."""
    return Deadline.after(seconds)

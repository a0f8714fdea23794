"""The fleet wire format: a whole read indexed by client address on the serving side, and
the small JSON document a sidecar receives for its own addresses.

Times travel as ages, since clocks differ between hosts.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Collection, Mapping
from typing import Any

from exporter.addresses import is_ip
from exporter.model import Endpoint, Flavor, ServerView, Session
from exporter.sessions.sources import LOCALHOST_IPS

FORMAT_VERSION = 1


class FleetFormatError(ValueError):
    """A fleet answer is not a document this version understands."""


class IndexedView:
    """A whole read with its sessions grouped by client address.

    Built once per read, when the read is cached: a sidecar's answer then costs in
    proportion to its own sessions, not the server's total (a scan of the whole list was
    1.1 ms of CPU per answer at 10,000 sessions). Answers are exactly those of a scan that
    keeps, in the read's order, the sessions a direct read would give a watcher with the
    asked addresses (``sources.client_wanted``): those whose client IP is asked, those
    shown as ``localhost`` when a loopback address is asked, and those shown by host name,
    which only a name-resolving server shows and which a sidecar matches by port.
    """

    __slots__ = ("_by_ip", "_named", "view")

    def __init__(self, view: ServerView) -> None:
        self.view = view
        positions: dict[str, list[int]] = {}
        for position, session in enumerate(view.sessions):
            if session.client is not None:
                positions.setdefault(session.client.ip, []).append(position)
        # Per address: the read's positions (to merge several addresses in the read's
        # order) and the sessions themselves (one address, the usual ask: no copy at all).
        self._by_ip: dict[str, tuple[tuple[int, ...], tuple[Session, ...]]] = {
            ip: (tuple(at), tuple(view.sessions[i] for i in at))
            for ip, at in positions.items()
        }
        self._named = frozenset(ip for ip in self._by_ip if ip != "localhost" and not is_ip(ip))

    def answer(self, client_ips: Collection[str] | None) -> ServerView:
        """The part of the read that concerns the given client addresses (None: all)."""
        if client_ips is None:
            return self.view
        return _with_sessions(self.view, self._sessions_of(frozenset(client_ips)))

    def _sessions_of(self, asked: frozenset[str]) -> tuple[Session, ...]:
        wanted = asked | self._named
        if LOCALHOST_IPS & asked:
            wanted |= {"localhost"}
        found = [self._by_ip[ip] for ip in wanted if ip in self._by_ip]
        if not found:
            return ()
        if len(found) == 1:
            return found[0][1]
        # Each address's positions are ascending: merging keeps the read's order.
        merged = heapq.merge(*(zip(at, sessions, strict=True) for at, sessions in found))
        return tuple(session for _, session in merged)


def _with_sessions(view: ServerView, sessions: tuple[Session, ...]) -> ServerView:
    """The read's facts with only the given sessions (what a sidecar is sent)."""
    return ServerView(
        target=view.target,
        ok=view.ok,
        error=view.error,
        flavor=view.flavor,
        version=view.version,
        source=view.source,
        wait_timeout=view.wait_timeout,
        interactive_timeout=view.interactive_timeout,
        idle_transaction_timeout=view.idle_transaction_timeout,
        idle_readonly_transaction_timeout=view.idle_readonly_transaction_timeout,
        idle_write_transaction_timeout=view.idle_write_transaction_timeout,
        sessions=sessions,
        full_view=view.full_view,
        per_session_timeouts=view.per_session_timeouts,
        read_at=view.read_at,
        started_at=view.started_at,
    )


def encode_view(view: ServerView, now: float) -> dict[str, Any]:
    """JSON-ready document; times become ages, since clocks differ between hosts."""
    return {
        "version": FORMAT_VERSION,
        "target": view.target,
        "ok": view.ok,
        "error": view.error,
        "flavor": view.flavor.value if view.flavor is not None else None,
        "server_version": view.version,
        "source": view.source,
        "wait_timeout": view.wait_timeout,
        "interactive_timeout": view.interactive_timeout,
        "idle_transaction_timeout": view.idle_transaction_timeout,
        "idle_readonly_transaction_timeout": view.idle_readonly_transaction_timeout,
        "idle_write_transaction_timeout": view.idle_write_transaction_timeout,
        "full_view": view.full_view,
        "per_session_timeouts": view.per_session_timeouts,
        "age_seconds": max(now - view.read_at, 0.0) if view.ok else None,
        # The server's uptime now: its start time on the receiver's clock (a restart).
        "uptime_seconds": (now - view.started_at if view.ok and view.started_at is not None
                           else None),
        "sessions": [
            {
                "id": s.id,
                "ip": s.client.ip if s.client is not None else None,
                "port": s.client.port if s.client is not None else None,
                "user": s.user,
                "db": s.db,
                "command": s.command,
                "idle_seconds": s.idle_seconds,
                "wait_timeout": s.wait_timeout,
                "transaction_seconds": s.transaction_seconds,
                "rows_locked": s.rows_locked,
                "rows_modified": s.rows_modified,
            }
            for s in view.sessions
        ],
    }


def _number(value: Any, name: str, *, optional: bool = True) -> float | None:
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise FleetFormatError(f"{name} must be a number")
    try:
        number = float(value)
    except OverflowError:  # an integer beyond any float
        raise FleetFormatError(f"{name} is out of range") from None
    if not math.isfinite(number):  # JSON may say NaN and Infinity
        raise FleetFormatError(f"{name} must be a finite number")
    return number


def _count(value: Any, name: str) -> int:
    """A non-negative whole number; absent means 0."""
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise FleetFormatError(f"{name} must be a non-negative integer")
    return value


def _text(value: Any, name: str, *, optional: bool = False) -> str | None:
    if value is None and optional:
        return None
    if not isinstance(value, str):
        raise FleetFormatError(f"{name} must be a string")
    return value


def decode_view(document: Mapping[str, Any], now: float) -> ServerView:
    if not isinstance(document, Mapping) or document.get("version") != FORMAT_VERSION:
        raise FleetFormatError(f"expected a fleet document of version {FORMAT_VERSION}")
    target = _text(document.get("target"), "target") or ""
    if not document.get("ok"):
        return ServerView(target=target, ok=False,
                          error=f"fleet: {_text(document.get('error'), 'error', optional=True)}")
    sessions = []
    rows = document.get("sessions")
    if not isinstance(rows, list):
        raise FleetFormatError("sessions must be a list")
    for row in rows:
        if not isinstance(row, Mapping):
            raise FleetFormatError("each session must be an object")
        ip = _text(row.get("ip"), "ip", optional=True)
        port = row.get("port")
        client = (
            Endpoint(ip, int(port))
            if ip is not None and isinstance(port, int) and not isinstance(port, bool)
            else None
        )
        session_id = row.get("id")
        if not isinstance(session_id, int) or isinstance(session_id, bool):
            raise FleetFormatError("id must be an integer")
        sessions.append(
            Session(
                id=session_id,
                client=client,
                user=_text(row.get("user"), "user") or "",
                db=_text(row.get("db"), "db", optional=True),
                command=_text(row.get("command"), "command") or "",
                idle_seconds=_number(row.get("idle_seconds"), "idle_seconds", optional=False)
                or 0.0,
                wait_timeout=_number(row.get("wait_timeout"), "wait_timeout"),
                # Absent from an older fleet exporter's answers: no transaction known.
                transaction_seconds=_number(row.get("transaction_seconds"),
                                            "transaction_seconds"),
                rows_locked=_count(row.get("rows_locked"), "rows_locked"),
                rows_modified=_count(row.get("rows_modified"), "rows_modified"),
            )
        )
    flavor_text = _text(document.get("flavor"), "flavor", optional=True)
    try:
        flavor = Flavor(flavor_text) if flavor_text is not None else None
    except ValueError:
        raise FleetFormatError(f"unknown flavor {flavor_text!r}") from None
    age = _number(document.get("age_seconds"), "age_seconds") or 0.0
    return ServerView(
        target=target,
        ok=True,
        flavor=flavor,
        version=_text(document.get("server_version"), "server_version") or "",
        source=f"fleet:{_text(document.get('source'), 'source')}",
        wait_timeout=_number(document.get("wait_timeout"), "wait_timeout"),
        interactive_timeout=_number(document.get("interactive_timeout"), "interactive_timeout"),
        idle_transaction_timeout=_number(document.get("idle_transaction_timeout"),
                                         "idle_transaction_timeout"),
        idle_readonly_transaction_timeout=_number(
            document.get("idle_readonly_transaction_timeout"),
            "idle_readonly_transaction_timeout"),
        idle_write_transaction_timeout=_number(document.get("idle_write_transaction_timeout"),
                                               "idle_write_transaction_timeout"),
        sessions=tuple(sessions),
        full_view=bool(document.get("full_view")),
        per_session_timeouts=bool(document.get("per_session_timeouts")),
        read_at=now - age,
        started_at=_started_at(document, now),
    )


def _started_at(document: Mapping[str, Any], now: float) -> float | None:
    uptime = _number(document.get("uptime_seconds"), "uptime_seconds")
    return None if uptime is None else now - uptime

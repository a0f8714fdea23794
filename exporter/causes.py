"""Why each session died: a cause for every drop the engine counts (pure).

The engine counts a session that died idle once (``dropped_totals``, the contract's
mysql_idle_sessions_dropped_total). This module gives each such death a cause, from what
the last collections knew of the connection, and counts phantoms too (their cause is the
network path: the client's socket is still ESTABLISHED, the server's session is gone):

- ``idle_timeout``: the connection was idle and its predicted limit (wait_timeout,
  interactive_timeout or the session's own) had run out when it was seen dead. MySQL sends
  error 4031 and a FIN (CLOSE_WAIT), MariaDB an RST (the socket leaves the kernel's table),
  or the client noticed and closed it (gone from both sides).
- ``transaction_timeout``: the same, under MariaDB's idle_transaction_timeout,
  idle_readonly_transaction_timeout or idle_write_transaction_timeout.
- ``network``: the limit that ran out was the path's (--network.idle-timeout), or the
  socket became a phantom (the server's teardown never arrived), confirmed by a second
  server read (a connection opened just after a read has no session in it yet).
- ``killed``: dead before its limit (or while running a command), and the next server read
  shows the same server start time: a KILL, max_statement_time, an administrator.
- ``restart``: dead before its limit, and the server's start time (from its Uptime, read
  at connect) moved: the server restarted in between (or the address now leads to another
  server, a failover).
- ``unknown``: nothing is known of the connection's life before it was seen dead (first
  seen so, never matched, or its limit unknown), and no restart was seen.

A death before its limit waits ("pending") for a server read made after it, which tells a
restart from a KILL; it is counted then, so a cause's counter never goes back. A drop seen
later than its limit can only be called a timeout: a KILL shortly before a timeout, seen
by a collection after it, is counted as the timeout (collections are the resolution).
"""

from __future__ import annotations

import enum
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field

from exporter.model import Classified, ConnectionKey, ServerView, State, TimeoutKind


class Cause(enum.Enum):
    IDLE_TIMEOUT = "idle_timeout"
    TRANSACTION_TIMEOUT = "transaction_timeout"
    NETWORK = "network"
    KILLED = "killed"
    RESTART = "restart"
    UNKNOWN = "unknown"


ALL_CAUSES: tuple[Cause, ...] = tuple(Cause)

# Uptime is whole seconds and read at connect, so one server's start time, worked out at
# two connects, differs by up to a second or so; a restart moves it by the old server's
# whole life.
RESTART_TOLERANCE_SECONDS = 2.5

_TRANSACTION_KINDS = frozenset({
    TimeoutKind.TRANSACTION, TimeoutKind.READONLY_TRANSACTION, TimeoutKind.WRITE_TRANSACTION,
})
_IDLE_STATES = frozenset({State.IDLE, State.AT_RISK})


def timeout_cause(kind: TimeoutKind | None) -> Cause:
    """The cause of a death at the limit of this kind."""
    if kind is None:
        return Cause.UNKNOWN
    if kind is TimeoutKind.NETWORK:
        return Cause.NETWORK
    if kind in _TRANSACTION_KINDS:
        return Cause.TRANSACTION_TIMEOUT
    return Cause.IDLE_TIMEOUT


@dataclass(frozen=True, slots=True)
class Pending:
    """A death whose cause waits for a server read made after it."""

    process: str
    # When it was seen (the collection's clock).
    noticed_at: float
    # The server's start time known before it died (None: not known).
    started_before: float | None
    # The cause if no restart shows: killed (before its limit) or unknown.
    otherwise: Cause


@dataclass(frozen=True, slots=True)
class CauseBook:
    """What the causes remember between collections of one target (a value)."""

    # Deaths counted, by (process, cause value).
    totals: Mapping[tuple[str, str], int] = field(default_factory=dict)
    pending: tuple[Pending, ...] = ()
    # The server's start time as last read.
    started_at: float | None = None
    # Connections counted as phantoms while still present: when such a socket is later
    # reset (dropped), its death is not counted a second time.
    phantoms: frozenset[ConnectionKey] = frozenset()
    # Phantoms seen by one server read only, waiting for a later read to confirm them (a
    # connection opened just after a read has no session in it yet): when that read was
    # made, and the server's start time known before.
    suspects: Mapping[ConnectionKey, tuple[float, float | None]] = field(default_factory=dict)


def restarted(before: float | None, server: ServerView | None) -> bool | None:
    """Whether ``server`` (a usable read) shows another start than ``before``: later after
    a restart, earlier after a failover to a server that has run longer; None when either
    is not known."""
    if before is None or server is None or not server.ok or server.started_at is None:
        return None
    return abs(server.started_at - before) > RESTART_TOLERANCE_SECONDS


def dropped_cause(previous: Classified | None, previous_at: float, now: float,
                  tolerance: float) -> Cause | None:
    """The cause of a connection seen dropped now, from its item at the last collection
    (``previous_at``); None when it died before its limit (pending: killed or restart)."""
    if previous is None:
        return Cause.UNKNOWN
    if previous.state in _IDLE_STATES:
        headroom = previous.headroom_seconds
        if headroom is None:
            return Cause.UNKNOWN
        if now + tolerance >= previous_at + headroom:
            return timeout_cause(previous.timeout_kind)
        return None
    if previous.state is State.ACTIVE:
        return None  # running a command: not idle, so not an idle limit
    return Cause.UNKNOWN


def account(
    book: CauseBook,
    *,
    dropped: Iterable[tuple[ConnectionKey, str, Classified | None]],
    vanished: Iterable[Classified],
    phantoms: Mapping[ConnectionKey, str],
    present: Collection[ConnectionKey],
    previous_at: float,
    server: ServerView | None,
    now: float,
    tolerance: float,
) -> CauseBook:
    """The book after one collection.

    ``dropped``: connections newly counted dropped (key, process, their last item or None);
    ``vanished``: last items of connections counted because they vanished past their
    limit; ``phantoms``: the phantom connections of this collection (key -> process);
    ``present``: every connection key of this collection; ``server``: the read used."""
    totals = dict(book.totals)

    def count(process: str, cause: Cause) -> None:
        key = (process, cause.value)
        totals[key] = totals.get(key, 0) + 1

    before = book.started_at
    restart_now = restarted(before, server)
    pending: list[Pending] = []
    for key, process, previous in dropped:
        if key in book.phantoms:
            continue  # counted when it became a phantom
        if previous is not None and previous.state is State.PHANTOM:
            # A phantom not yet confirmed, reset meanwhile: the path's doing all the same.
            count(process, Cause.RESTART if restart_now else Cause.NETWORK)
            continue
        cause = dropped_cause(previous, previous_at, now, tolerance)
        if cause is None or cause is Cause.UNKNOWN:
            if restart_now:
                count(process, Cause.RESTART)
            else:
                pending.append(Pending(process, now, before, cause or Cause.KILLED))
            continue
        count(process, cause)
    for item in vanished:
        count(item.socket.process, timeout_cause(item.timeout_kind))
    counted: set[ConnectionKey] = set()
    suspects: dict[ConnectionKey, tuple[float, float | None]] = {}
    read_at = server.read_at if server is not None and server.ok else None
    for key, process in phantoms.items():
        if key in book.phantoms or read_at is None:
            continue
        first = book.suspects.get(key)
        if first is None:
            suspects[key] = (read_at, before)
        elif read_at > first[0]:  # a later read still has no session for it
            count(process, Cause.RESTART if restarted(first[1], server) else Cause.NETWORK)
            counted.add(key)
        else:
            suspects[key] = first
    # Earlier deaths decided by this read: a later start, or a read made after them.
    still: list[Pending] = []
    usable = server is not None and server.ok
    for waiting in (*book.pending, *pending):
        moved = restarted(waiting.started_before, server)
        if moved:
            count(waiting.process, Cause.RESTART)
        elif usable and server is not None and server.read_at >= waiting.noticed_at:
            count(waiting.process, waiting.otherwise)
        else:
            still.append(waiting)
    started = book.started_at
    if usable and server is not None and server.started_at is not None:
        started = server.started_at
    # At 10,000 connections a collection: no set of them all is built unless phantoms were
    # counted (usually none).
    kept = book.phantoms.intersection(present) if book.phantoms else frozenset()
    return CauseBook(
        totals=totals,
        pending=tuple(still),
        started_at=started,
        phantoms=frozenset(kept | counted) if kept or counted else frozenset(),
        suspects=suspects,
    )

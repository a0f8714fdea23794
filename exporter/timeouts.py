"""Which limit governs an idle session, and how long it is (pure).

A session idles under one limit at a time, copied from the server's globals when it
connected:

- ``wait_timeout``, or ``interactive_timeout`` for a client that connected with
  CLIENT_INTERACTIVE (the mysql/mariadb command-line client);
- on MariaDB, inside an open transaction, ``idle_write_transaction_timeout`` (it has
  written) or ``idle_readonly_transaction_timeout`` (it has not), where set, else
  ``idle_transaction_timeout``, where set; these replace wait_timeout rather than
  competing with it (measured on MariaDB 10.11: a write transaction with
  idle_transaction_timeout 2 and idle_write_transaction_timeout 4 is dropped at 4 s);
- whatever the server does, the network path's idle limit (--network.idle-timeout) if it
  is shorter.

MySQL reports each session's own wait_timeout (performance_schema.variables_by_thread),
which already is interactive_timeout for an interactive client and follows SET SESSION.
MariaDB reports none, so there the limit is inferred: interactive for the mysql/mariadb
client processes, and for a session the server has shown idle for longer than
wait_timeout (it cannot be under it); no limit at all (unknown) for one the server has shown
idle for longer than interactive_timeout too (a SET SESSION we cannot read).
"""

from __future__ import annotations

import enum

from exporter.model import ServerView, Session, Settings, TimeoutKind

# mysql-idle-exporter raises its own session's wait_timeout to the largest the servers
# accept (one year), so that its connection does not suffer the bug it watches.
OWN_WAIT_TIMEOUT = 31_536_000
# The exporter names its process so (prctl PR_SET_NAME keeps 15 bytes): another exporter's
# sessions are then known to be under OWN_WAIT_TIMEOUT, never at risk.
EXPORTER_PROCESS_NAME = "mysql-idle-exporter"
EXPORTER_COMM = EXPORTER_PROCESS_NAME[:15]
# Processes that connect with CLIENT_INTERACTIVE: the command-line clients.
INTERACTIVE_CLIENTS = frozenset({"mysql", "mariadb"})


class Outlived(enum.IntEnum):
    """The assumed limits a session has been seen (by the server) to outlive."""

    NOTHING = 0
    WAIT = 1  # so it is not under wait_timeout: interactive_timeout, or its own
    INTERACTIVE = 2  # and not under interactive_timeout either: its limit is unknown


class ProcessKind(enum.IntEnum):
    OTHER = 0
    INTERACTIVE = 1
    EXPORTER = 2


def process_kind(process: str) -> ProcessKind:
    if process in INTERACTIVE_CLIENTS:
        return ProcessKind.INTERACTIVE
    if process.startswith(EXPORTER_COMM):
        return ProcessKind.EXPORTER
    return ProcessKind.OTHER


def idle_limit(
    session: Session,
    server: ServerView,
    settings: Settings,
    process: ProcessKind = ProcessKind.OTHER,
    outlived: Outlived = Outlived.NOTHING,
) -> tuple[float | None, TimeoutKind | None]:
    """The limit that governs this idle session and which one it is; (None, None) when no
    limit is known."""
    seconds, kind = connection_limit(session, server, process, outlived)
    if session.transaction_seconds is not None:
        seconds, kind = _transaction_limit(session, server, seconds, kind)
    network = settings.network_idle_timeout
    if network is not None and (seconds is None or network < seconds):
        return network, TimeoutKind.NETWORK
    return seconds, kind


def connection_limit(
    session: Session, server: ServerView, process: ProcessKind, outlived: Outlived
) -> tuple[float | None, TimeoutKind | None]:
    """The limit outside any transaction: the session's own, interactive_timeout or
    wait_timeout."""
    if session.wait_timeout is not None:
        return session.wait_timeout, TimeoutKind.SESSION
    if process is ProcessKind.EXPORTER:
        return float(OWN_WAIT_TIMEOUT), TimeoutKind.SESSION
    if outlived is Outlived.INTERACTIVE:
        return None, None
    if process is ProcessKind.INTERACTIVE or outlived is Outlived.WAIT:
        limit = server.interactive_timeout
        return (limit, TimeoutKind.INTERACTIVE) if limit is not None else (None, None)
    limit = server.wait_timeout
    return (limit, TimeoutKind.WAIT) if limit is not None else (None, None)


def _transaction_limit(
    session: Session, server: ServerView, seconds: float | None, kind: TimeoutKind | None
) -> tuple[float | None, TimeoutKind | None]:
    if session.rows_modified > 0:
        specific, specific_kind = (server.idle_write_transaction_timeout,
                                   TimeoutKind.WRITE_TRANSACTION)
    else:
        specific, specific_kind = (server.idle_readonly_transaction_timeout,
                                   TimeoutKind.READONLY_TRANSACTION)
    if specific:
        return specific, specific_kind
    if server.idle_transaction_timeout:
        return server.idle_transaction_timeout, TimeoutKind.TRANSACTION
    return seconds, kind


def outlived_by(session: Session, server: ServerView, kind: TimeoutKind | None,
                seconds: float | None, tolerance: float) -> Outlived | None:
    """What the server's own idle time for a session (outside a transaction) proves it is
    not under, given the connection limit assumed for it: None when it proves nothing (the
    limit was read per session, or the session is within it)."""
    if seconds is None or session.idle_seconds <= seconds + tolerance:
        return None
    if kind is TimeoutKind.WAIT:
        interactive = server.interactive_timeout
        if interactive is not None and session.idle_seconds > interactive + tolerance:
            return Outlived.INTERACTIVE
        return Outlived.WAIT
    if kind is TimeoutKind.INTERACTIVE:
        return Outlived.INTERACTIVE
    return None

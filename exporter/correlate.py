"""Correlation: sockets (client side) joined to sessions (server side), as a pure function.

`correlate` takes what the two sides saw plus the memory of earlier collections and returns
a snapshot and the new memory. It does no I/O and reads no clock, so every state can be
tested as a table of cases.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from math import inf
from typing import cast

from exporter import causes
from exporter.addresses import is_ip, is_loopback
from exporter.model import (
    Classified,
    ConnectionKey,
    Endpoint,
    ServerView,
    Session,
    Settings,
    Socket,
    State,
    TargetSnapshot,
    TcpState,
    TimeoutKind,
)
from exporter.timeouts import (
    Outlived,
    ProcessKind,
    connection_limit,
    idle_limit,
    outlived_by,
    process_kind,
)

_IDLE_STATES = frozenset({State.IDLE, State.AT_RISK})


@dataclass(frozen=True, slots=True)
class Memory:
    """What correlation remembers between collections of one target (a value, never edited)."""

    # Connections that matched a session at least once: proof that correlation works for them.
    matched: frozenset[ConnectionKey] = frozenset()
    # Connections already counted as dropped.
    dropped: frozenset[ConnectionKey] = frozenset()
    # The last collection's items by connection, and when it ran (caller's clock): its idle
    # ones say when each timeout ends. Kept as they were, not copied into a new table.
    items: Mapping[ConnectionKey, Classified] = field(default_factory=dict)
    items_at: float = 0.0
    dropped_totals: Mapping[str, int] = field(default_factory=dict)
    correlation_working: bool = False
    # Connections the server has shown idle past the limit assumed for them
    # (exporter.timeouts.Outlived), while they are present.
    outlived: Mapping[ConnectionKey, Outlived] = field(default_factory=dict)
    # When the first idle connection's limit ends, by the last collection's reckoning (the
    # planner reads the server then, to learn whether it was dropped or outlived it).
    earliest_expiry: float | None = None
    # Why the counted sessions died (exporter.causes).
    causes: causes.CauseBook = field(default_factory=causes.CauseBook)

    @property
    def expiries(self) -> dict[ConnectionKey, tuple[str, float]]:
        """Matched idle connections: owner process and when their timeout ends."""
        return {
            key: (item.socket.process, self.items_at + item.headroom_seconds)
            for key, item in self.items.items()
            if item.state in _IDLE_STATES and item.headroom_seconds is not None
        }


class _SessionIndex:
    """Sessions by client endpoint, plus the name-resolved ones (host is not an IP)."""

    def __init__(self, sessions: Iterable[Session], own_ids: frozenset[int]) -> None:
        self.by_endpoint: dict[Endpoint, Session] = {}
        self.by_name_port: dict[int, list[Session]] = {}
        for session in sessions:
            if session.id in own_ids or session.client is None:
                continue
            if is_ip(session.client.ip):
                self.by_endpoint[session.client] = session
            else:
                self.by_name_port.setdefault(session.client.port, []).append(session)

    def find(self, local: Endpoint) -> Session | None:
        exact = self.by_endpoint.get(local)
        if exact is not None:
            return exact
        # A name-resolving server shows "localhost:PORT" or "host:PORT": the port alone
        # decides, and only when it is unambiguous.
        candidates = [
            s
            for s in self.by_name_port.get(local.port, ())
            if s.client is not None and (s.client.ip != "localhost" or is_loopback(local.ip))
        ]
        return candidates[0] if len(candidates) == 1 else None


def _no_session(local: Endpoint) -> Session | None:
    return None


def _capped(seconds: float | None, kind: TimeoutKind, network: float | None
            ) -> tuple[float | None, TimeoutKind | None]:
    if network is not None and (seconds is None or network < seconds):
        return network, TimeoutKind.NETWORK
    return (seconds, kind) if seconds is not None else (None, None)


def _kind(kinds: dict[str, ProcessKind], process: str) -> ProcessKind:
    """The process's kind, worked out once per name and collection."""
    kind = kinds.get(process)
    if kind is None:
        kind = kinds[process] = process_kind(process)
    return kind


def _still_outlived(session: Session, server: ServerView, sock: Socket,
                    kinds: dict[str, ProcessKind], known: Outlived,
                    tolerance: float) -> Outlived:
    """What a session is known to have outlived, with what this read adds to it."""
    if known is Outlived.INTERACTIVE:
        return known
    process = _kind(kinds, sock.process)
    base, base_kind = connection_limit(session, server, process, known)
    seen = outlived_by(session, server, base_kind, base, tolerance)
    return max(known, seen) if seen is not None else known


def correlate(
    target: str,
    sockets: Sequence[Socket],
    server: ServerView | None,
    settings: Settings,
    memory: Memory,
    now: float,
    *,
    live: Collection[ConnectionKey],
) -> tuple[TargetSnapshot, Memory]:
    """Give every socket of one target a state. `now` is on the same clock as `read_at`.

    ``sockets`` are this target's, without the exporter's own connections; ``live`` the
    keys of those that are open (exporter.planner.live_connections), worked out once per
    collection by the planner."""
    server_usable = server is not None and server.ok
    server_age = (now - server.read_at) if server is not None and server_usable else 0.0
    index = _SessionIndex(
        server.sessions if server is not None and server_usable else (),
        server.own_session_ids if server is not None else frozenset(),
    )

    # One pass over the sockets (10,000 of them a collection at 10,000 sessions): each
    # connection key is built once and matched sessions are classified inline. A session
    # running a command is never idle; an idle one's headroom is the limit that governs it
    # (exporter.timeouts) less its idle time. The common cases (the global wait_timeout,
    # or the session's own) take a short way; the others ask exporter.timeouts.
    phantom_possible = server is not None and server_usable and server.full_view
    network = settings.network_idle_timeout
    plain: tuple[float | None, TimeoutKind | None] = (None, None)
    if server is not None and server_usable:
        plain = _capped(server.wait_timeout, TimeoutKind.WAIT, network)
    plain_timeout, plain_kind = plain
    wait_timeout = server.wait_timeout if server is not None else None
    tolerance = settings.expiry_tolerance
    risk = settings.risk_headroom
    by_endpoint = index.by_endpoint.get if server_usable else _no_session
    by_name = index.find if server_usable and index.by_name_port else _no_session
    new = tuple.__new__  # Classified(...) without its Python-level __new__
    established, close_wait = TcpState.ESTABLISHED, TcpState.CLOSE_WAIT
    dropped_state, active, idle_state, at_risk = (
        State.DROPPED, State.ACTIVE, State.IDLE, State.AT_RISK)
    session_kind, network_kind = TimeoutKind.SESSION, TimeoutKind.NETWORK
    other = ProcessKind.OTHER
    remembered = memory.outlived
    outlived: dict[ConnectionKey, Outlived] = {}
    kinds: dict[str, ProcessKind] = {}
    keys: list[ConnectionKey] = []
    items: list[Classified | None] = []  # None: unmatched or phantom, decided below
    matched_now: set[ConnectionKey] = set()
    pending: list[tuple[int, Socket]] = []
    soonest = inf
    for sock in sockets:
        local = sock.local
        state = sock.state
        if sock.gone or state is close_wait:
            keys.append((local, sock.remote))
            items.append(new(Classified, (sock, None, dropped_state, sock.idle_seconds, None,
                                          None, None)))
            continue
        if state is not established:
            # Only ESTABLISHED and CLOSE_WAIT say something about a session; the others are
            # short-lived handshake or teardown states of connections the client is already
            # closing.
            continue
        key = (local, sock.remote)
        keys.append(key)
        session = by_endpoint(local)
        if session is None:
            session = by_name(local)
            if session is None:
                pending.append((len(items), sock))
                items.append(None)
                continue
        matched_now.add(key)
        if session.command != "Sleep":
            # Running a command (or was at the read, with no sign of a reply since).
            items.append(new(Classified, (sock, session, active, None, None, None, None)))
            continue
        # The kernel's silence is exact and current; the server's is as old as the read.
        idle = sock.idle_seconds
        if idle is None:
            idle = session.idle_seconds + server_age
        own_timeout = session.wait_timeout
        if session.transaction_seconds is not None or key in remembered:
            assert server is not None  # a session comes from a usable read
            timeout, kind = idle_limit(session, server, settings, _kind(kinds, sock.process),
                                       remembered.get(key, Outlived.NOTHING))
            if key in remembered:
                outlived[key] = _still_outlived(session, server, sock, kinds, remembered[key],
                                                tolerance)
        elif own_timeout is not None:
            if network is not None and network < own_timeout:
                timeout, kind = network, network_kind
            else:
                timeout, kind = own_timeout, session_kind
        elif _kind(kinds, sock.process) is other:
            timeout, kind = plain_timeout, plain_kind
            if wait_timeout is not None and session.idle_seconds > wait_timeout + tolerance:
                # Alive on the server past wait_timeout: it is not under it.
                assert server is not None
                seen = outlived_by(session, server, TimeoutKind.WAIT, wait_timeout, tolerance)
                if seen is not None:
                    outlived[key] = seen
                    timeout, kind = idle_limit(session, server, settings, other, seen)
        else:
            assert server is not None
            timeout, kind = idle_limit(session, server, settings, kinds[sock.process])
            base, base_kind = connection_limit(session, server, kinds[sock.process],
                                               Outlived.NOTHING)
            seen = outlived_by(session, server, base_kind, base, tolerance)
            if seen is not None:
                outlived[key] = seen
                timeout, kind = idle_limit(session, server, settings, kinds[sock.process], seen)
        if timeout is None:
            items.append(new(Classified, (sock, session, idle_state, idle, None, None, None)))
            continue
        headroom = timeout - idle
        if headroom < soonest:
            soonest = headroom
        items.append(new(Classified, (sock, session, at_risk if headroom <= risk else idle_state,
                                      idle, timeout, headroom, kind)))
    # A live connection that matched before still proves correlation works, even if its
    # session is gone now (that is what makes it a phantom rather than unmatched).
    if matched_now or any(key in memory.matched for key in live):
        working = True
    elif live:
        working = False
    else:
        working = memory.correlation_working
    # Phantoms need proof that this target's sockets can be matched at all, and a server
    # view that would show every session (without PROCESS it shows only the exporter's own).
    any_matched = bool(matched_now)
    phantoms: dict[ConnectionKey, str] = {}
    for position, sock in pending:
        key = keys[position]
        phantom = phantom_possible and (any_matched or key in memory.matched)
        if phantom:
            phantoms[key] = sock.process
        items[position] = new(Classified, (sock, None, State.PHANTOM if phantom
                                           else State.UNMATCHED, sock.idle_seconds, None, None,
                                           None))
    classified = cast(list[Classified], items)  # every None was replaced just above

    new_memory = _remember(keys, classified, memory, matched_now, working, now, settings,
                           outlived, None if soonest == inf else now + soonest,
                           server if server_usable else None, phantoms)
    snapshot = TargetSnapshot(
        target=target,
        server=server,
        items=tuple(classified),
        correlation_working=working,
        dropped_totals=new_memory.dropped_totals,
        server_age_seconds=server_age if server_usable else None,
        settings=settings,
        cause_totals=new_memory.causes.totals,
    )
    return snapshot, new_memory


def _remember(
    keys: Sequence[ConnectionKey],
    items: Sequence[Classified],
    memory: Memory,
    matched_now: set[ConnectionKey],
    working: bool,
    now: float,
    settings: Settings,
    outlived: Mapping[ConnectionKey, Outlived],
    earliest_expiry: float | None,
    server: ServerView | None = None,
    phantoms: Mapping[ConnectionKey, str] | None = None,
) -> Memory:
    """`keys[i]` is the connection key of `items[i]`."""
    # The last item wins where two share a key (a gone socket and a new connection that
    # reuses its ports).
    present = dict(zip(keys, items, strict=True))
    totals = dict(memory.dropped_totals)

    def count(process: str) -> None:
        totals[process] = totals.get(process, 0) + 1

    gone = State.DROPPED
    dropped = {key for key, item in present.items() if item.state is gone}
    newly_dropped = []
    for key in dropped - memory.dropped:
        count(present[key].socket.process)
        newly_dropped.append((key, present[key].socket.process, memory.items.get(key)))
    vanished = []
    # A connection that vanished entirely after idling past its timeout died idle too, even
    # when no collection caught it in between (the client noticed and closed it).
    deadline = now + settings.expiry_tolerance - memory.items_at
    idle_states = _IDLE_STATES
    for key in memory.items.keys() - present.keys():
        item = memory.items[key]
        headroom = item.headroom_seconds
        if item.state in idle_states and headroom is not None and deadline >= headroom:
            count(item.socket.process)
            vanished.append(item)
    book = causes.account(
        memory.causes, dropped=newly_dropped, vanished=vanished, phantoms=phantoms or {},
        present=present.keys(), previous_at=memory.items_at, server=server, now=now,
        tolerance=settings.expiry_tolerance,
    )

    # Connections that matched once and are still here. Usually all of them match now.
    old = memory.matched
    if old <= matched_now:
        matched = frozenset(matched_now)
    else:
        matched = frozenset(old.intersection(present) | matched_now)
    return Memory(
        matched=matched,
        dropped=frozenset(dropped),
        items=present,
        items_at=now,
        dropped_totals=totals,
        correlation_working=working,
        outlived=outlived,
        earliest_expiry=earliest_expiry,
        causes=book,
    )

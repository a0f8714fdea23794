"""Correlation: sockets (client side) joined to sessions (server side), as a pure function.

`correlate` takes what the two sides saw plus the memory of earlier collections and returns
a snapshot and the new memory. It does no I/O and reads no clock, so every state can be
tested as a table of cases.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from exporter.addresses import is_ip, is_loopback
from exporter.model import Endpoint, ServerView, Session, Socket, State, TcpState

# A connection is identified by its 4-tuple: stable for its whole life, including after the
# kernel has unhashed it (the reader reports such "gone" sockets with the same endpoints).
ConnectionKey = tuple[Endpoint, Endpoint]


def connection_key(socket: Socket) -> ConnectionKey:
    return (socket.local, socket.remote)


@dataclass(frozen=True, slots=True)
class Settings:
    risk_headroom: float = 300.0
    network_idle_timeout: float | None = None
    # Tolerance when deciding that a vanished socket had idled past its timeout: a scrape
    # that lands a moment before the server's timer should still count the drop.
    expiry_tolerance: float = 1.0


class Classified(NamedTuple):
    """One socket with its session (if any) and its state. A named tuple: one is built per
    socket per collection, and a tuple builds in a third of a frozen dataclass's time."""

    socket: Socket
    session: Session | None
    state: State
    # Idle seconds used for the headroom (kernel silence, else the server's idle time).
    idle_seconds: float | None = None
    timeout_seconds: float | None = None
    headroom_seconds: float | None = None


@dataclass(frozen=True, slots=True)
class Memory:
    """What correlation remembers between collections of one target (a value, never edited)."""

    # Connections that matched a session at least once: proof that correlation works for them.
    matched: frozenset[ConnectionKey] = frozenset()
    # Connections already counted as dropped.
    dropped: frozenset[ConnectionKey] = frozenset()
    # Matched idle connections: owner process and the time (caller's clock) their timeout ends.
    expiries: Mapping[ConnectionKey, tuple[str, float]] = field(default_factory=dict)
    dropped_totals: Mapping[str, int] = field(default_factory=dict)
    correlation_working: bool = False


@dataclass(frozen=True, slots=True)
class TargetSnapshot:
    target: str
    server: ServerView | None
    items: tuple[Classified, ...]
    correlation_working: bool
    dropped_totals: Mapping[str, int]
    # Seconds between the server read used here and the collection; None without a read.
    server_age_seconds: float | None
    settings: Settings

    def by_state(self, state: State) -> list[Classified]:
        return [item for item in self.items if item.state is state]


# Only these states say something about a session; the others are short-lived handshake or
# teardown states of connections the client itself is already closing.
_CLASSIFIED_TCP_STATES = frozenset({TcpState.ESTABLISHED, TcpState.CLOSE_WAIT})


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


def effective_timeout(
    session: Session, server: ServerView, settings: Settings
) -> float | None:
    timeout = session.wait_timeout if session.wait_timeout is not None else server.wait_timeout
    network = settings.network_idle_timeout
    if network is None or timeout is None:
        return timeout if network is None else network
    return min(timeout, network)


def _idle_seconds(socket: Socket, session: Session, server_age: float) -> float:
    # The kernel's silence is exact and current; the server's idle time is as old as the read.
    if socket.idle_seconds is not None:
        return socket.idle_seconds
    return session.idle_seconds + server_age


def _traffic_since_read(socket: Socket, server_age: float) -> bool:
    return socket.idle_seconds is not None and socket.idle_seconds < server_age


def _classify_matched(
    socket: Socket, session: Session, server: ServerView, server_age: float, settings: Settings
) -> Classified:
    if not session.sleeping:
        # Running a command (or was at the read, with no sign of a reply since): never idle.
        return Classified(socket, session, State.ACTIVE)
    idle = _idle_seconds(socket, session, server_age)
    timeout = effective_timeout(session, server, settings)
    if timeout is None:
        return Classified(socket, session, State.IDLE, idle_seconds=idle)
    headroom = timeout - idle
    state = State.AT_RISK if headroom <= settings.risk_headroom else State.IDLE
    return Classified(socket, session, state, idle, timeout, headroom)


def correlate(
    target: str,
    sockets: Sequence[Socket],
    server: ServerView | None,
    settings: Settings,
    memory: Memory,
    now: float,
) -> tuple[TargetSnapshot, Memory]:
    """Give every socket of one target a state. `now` is on the same clock as `read_at`."""
    server_usable = server is not None and server.ok
    server_age = (now - server.read_at) if server is not None and server_usable else 0.0
    index = _SessionIndex(
        server.sessions if server is not None and server_usable else (),
        server.own_session_ids if server is not None else frozenset(),
    )
    own_endpoints = server.own_client_endpoints if server is not None else frozenset()

    # Each socket's connection key is built once here (this runs for every socket of every
    # collection: 10,000 times at 10,000 sessions).
    considered = [
        s
        for s in sockets
        if s.local not in own_endpoints and (s.gone or s.state in _CLASSIFIED_TCP_STATES)
    ]
    keys: list[ConnectionKey] = [(s.local, s.remote) for s in considered]
    # The session of each live (ESTABLISHED, not gone) socket, in `considered` order; None
    # for the others and for live sockets without one.
    found: list[Session | None] = [None] * len(considered)
    live_keys: list[ConnectionKey] = []
    matched_now: set[ConnectionKey] = set()
    if server_usable:
        find = index.find
        established = TcpState.ESTABLISHED
        for position, sock in enumerate(considered):
            if sock.state is established and not sock.gone:
                key = keys[position]
                live_keys.append(key)
                session = find(sock.local)
                if session is not None:
                    found[position] = session
                    matched_now.add(key)
    # A live connection that matched before still proves correlation works, even if its
    # session is gone now (that is what makes it a phantom rather than unmatched).
    if matched_now or any(key in memory.matched for key in live_keys):
        working = True
    elif live_keys:
        working = False
    else:
        working = memory.correlation_working
    # Phantoms need proof that this target's sockets can be matched at all, and a server
    # view that would show every session (without PROCESS it shows only the exporter's own).
    phantom_possible = server is not None and server_usable and server.full_view

    items: list[Classified] = []
    append = items.append
    close_wait = TcpState.CLOSE_WAIT
    for sock, key, session in zip(considered, keys, found, strict=True):
        if sock.gone or sock.state is close_wait:
            append(Classified(sock, None, State.DROPPED, sock.idle_seconds))
        elif session is not None and server is not None:
            append(_classify_matched(sock, session, server, server_age, settings))
        elif phantom_possible and (bool(matched_now) or key in memory.matched):
            append(Classified(sock, None, State.PHANTOM, sock.idle_seconds))
        else:
            append(Classified(sock, None, State.UNMATCHED, sock.idle_seconds))

    new_memory = _remember(keys, items, memory, matched_now, working, now, settings)
    snapshot = TargetSnapshot(
        target=target,
        server=server,
        items=tuple(items),
        correlation_working=working,
        dropped_totals=new_memory.dropped_totals,
        server_age_seconds=server_age if server_usable else None,
        settings=settings,
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
) -> Memory:
    """`keys[i]` is the connection key of `items[i]`."""
    # The last item wins where two share a key (a gone socket and a new connection that
    # reuses its ports).
    present = dict(zip(keys, items, strict=True))
    totals = dict(memory.dropped_totals)

    def count(process: str) -> None:
        totals[process] = totals.get(process, 0) + 1

    dropped: set[ConnectionKey] = set()
    expiries: dict[ConnectionKey, tuple[str, float]] = {}
    idle, at_risk, gone = State.IDLE, State.AT_RISK, State.DROPPED
    for key, item in present.items():
        state = item.state
        if state is gone:
            dropped.add(key)
            if key not in memory.dropped:
                count(item.socket.process)
        elif (state is idle or state is at_risk) and item.headroom_seconds is not None:
            expiries[key] = (item.socket.process, now + item.headroom_seconds)
    # A connection that vanished entirely after idling past its timeout died idle too, even
    # when no collection caught it in between (the client noticed and closed it).
    for key, (process, expires_at) in memory.expiries.items():
        if key not in present and now + settings.expiry_tolerance >= expires_at:
            count(process)

    matched = memory.matched.intersection(present) | matched_now
    return Memory(
        matched=frozenset(matched),
        dropped=frozenset(dropped),
        expiries=expiries,
        dropped_totals=totals,
        correlation_working=working,
    )


def needs_fresh_read(
    sockets: Sequence[Socket],
    server: ServerView | None,
    known_at_read: frozenset[ConnectionKey],
    now: float,
    interval: float,
    settings: Settings,
) -> str | None:
    """Why the server must be read now rather than reusing the last read (None: reuse it)."""
    if server is None:
        return "no read yet"
    if not server.ok:
        return "last read failed"
    age = now - server.read_at
    if age >= interval:
        return "interval elapsed"
    live = [s for s in sockets if not s.gone and s.state is TcpState.ESTABLISHED]
    if any(connection_key(s) not in known_at_read for s in live):
        # The last read cannot know this connection: without a read it would look phantom.
        return "new connection"
    timeout = server.wait_timeout
    if settings.network_idle_timeout is not None:
        timeout = (
            settings.network_idle_timeout
            if timeout is None
            else min(timeout, settings.network_idle_timeout)
        )
    if timeout is not None:
        for s in live:
            # A connection that talked since the read may have changed command; if the kernel
            # says it is near its timeout, confirm with the server before calling it at risk.
            if (
                _traffic_since_read(s, age)
                and s.idle_seconds is not None
                and timeout - s.idle_seconds <= settings.risk_headroom
            ):
                return "connection near its timeout changed since the read"
    return None

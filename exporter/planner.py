"""When to read the server, and what a read changes: pure decisions over a target's state.

A target's memory between collections is one immutable ``TargetState``. Each collection
asks the planner, from that state, the sockets of the moment and the time:

- ``early_read``: before the socket dump, whether a read is due whatever the dump will
  show, so that it can run while the kernel is walked;
- ``plan``: after the dump, this target's sockets (without the exporter's own), the live
  connections, whether the server must be read and why (a ``ReadReason``), about which
  client addresses, and whether an answer from a cache would do;
- ``settle``: after a read, the state and sockets it leaves.

Nothing here does I/O or reads a clock: every decision is a table of cases in the tests.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace

from exporter.correlate import Memory
from exporter.model import (
    ConnectionKey,
    Endpoint,
    Place,
    ServerView,
    Settings,
    Socket,
    TcpState,
)

# How many of the exporter's own client endpoints are remembered: each reconnect (a KILL,
# a restart) leaves the old one behind, in CLOSE_WAIT or TIME_WAIT, for a while.
OWN_ENDPOINTS_KEPT = 32


class ReadReason(enum.Enum):
    """Why the server must be read now rather than the last read reused."""

    NO_READ_YET = "no read yet"
    LAST_READ_FAILED = "last read failed"
    INTERVAL_ELAPSED = "interval elapsed"
    # The last read cannot know this connection: without a read it would look phantom.
    NEW_CONNECTION = "new connection"
    # A connection that talked since the read may have changed command or limit (SET
    # SESSION wait_timeout); the kernel says it is near its limit: confirm with the server
    # before calling it at risk.
    CHANGED_NEAR_TIMEOUT = "connection near its timeout changed since the read"
    # A connection idle past the limit predicted for it is still open: the server says
    # whether it was dropped (a phantom: its teardown was lost) or lives under a longer
    # limit (an interactive client, a SET SESSION the server does not show).
    PAST_PREDICTED_TIMEOUT = "connection open past its predicted timeout"

    @property
    def cache_will_do(self) -> bool:
        """Whether an answer cached by a fleet exporter may serve this read: yes when only
        time has passed, no when a connection is newer than, or changed since, the read."""
        return self in _CACHE_WILL_DO


_CACHE_WILL_DO = frozenset(
    {ReadReason.NO_READ_YET, ReadReason.LAST_READ_FAILED, ReadReason.INTERVAL_ELAPSED}
)


@dataclass(frozen=True, slots=True)
class ReadPolicy:
    """The operator's settings that decide reads."""

    # --server.interval: the least time between reads made only because time passed.
    interval: float = 30.0
    settings: Settings = field(default_factory=Settings)


@dataclass(frozen=True, slots=True)
class TargetState:
    """Everything remembered of one target between collections (a value, never edited)."""

    last_view: ServerView | None = None
    # The live connections when the last successful read was made: those it can know.
    known_at_read: frozenset[ConnectionKey] = frozenset()
    # The client addresses the last read asked about, and whether the last collection saw
    # a live connection that read could not know: together they decide whether the next
    # read may start before the socket dump (``early_read``).
    read_ips: frozenset[str] = frozenset()
    saw_new_connection: bool = True
    # The exporter's own client endpoints, newest last.
    own_endpoints: tuple[Endpoint, ...] = ()
    memory: Memory = field(default_factory=Memory)
    # Node mode: each place's own memory (exporter.node.places); ``memory`` is their sum.
    places: Mapping[Place, Memory] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Plan:
    """What one collection does about one target's server."""

    # This target's sockets, without the exporter's own connections.
    sockets: tuple[Socket, ...]
    # Keys of the open (ESTABLISHED, still in the kernel's table) ones among them.
    live: frozenset[ConnectionKey]
    # A live connection that the last successful read could not know.
    new_connection: bool
    # None: the last read still serves.
    reason: ReadReason | None
    # The addresses to ask about: those of this target's sockets.
    client_ips: frozenset[str]
    # An answer cached elsewhere (fleet mode) would not do.
    fresh: bool


def live_connections(sockets: Iterable[Socket]) -> frozenset[ConnectionKey]:
    """Keys of the open connections: ESTABLISHED and still in the kernel's table."""
    established = TcpState.ESTABLISHED
    return frozenset(
        (s.local, s.remote) for s in sockets if s.state is established and not s.gone
    )


def early_read(
    state: TargetState, now: float, policy: ReadPolicy, *, reads_are_fresh: bool
) -> frozenset[str] | None:
    """The client addresses to read before the socket dump, or None to wait for it.

    A read starts early when it is due whatever the dump will show (the interval has
    elapsed, or the last read failed) and it can be trusted to cover the dump: a source
    whose reads are made on the server when asked (not a cache), the same client
    addresses as the last read, and no connection newer than the last read in the last
    collection (under churn the dump would likely show one, and the read would have to be
    made again after it)."""
    view = state.last_view
    if (
        view is None
        or not state.read_ips
        or state.saw_new_connection
        or not reads_are_fresh
        or (view.ok and now - view.read_at < policy.interval)
    ):
        return None
    return state.read_ips


def plan(
    state: TargetState,
    all_sockets: Sequence[Socket],
    port: int,
    addresses: frozenset[str],
    now: float,
    policy: ReadPolicy,
) -> Plan:
    """This collection's plan for the target at ``addresses``:``port``."""
    own = frozenset(state.own_endpoints)
    # Every socket of the host passes here (10,000 at 10,000 sessions): one comprehension.
    sockets = tuple(
        s for s in all_sockets
        if s.remote.port == port and s.remote.ip in addresses and s.local not in own
    )
    live = live_connections(sockets)
    new_connection = not state.known_at_read.issuperset(live)
    reason = _reason(state, sockets, new_connection, now, policy)
    return Plan(
        sockets=sockets,
        live=live,
        new_connection=new_connection,
        reason=reason,
        client_ips=(
            frozenset(s.local.ip for s in sockets) if reason is not None else frozenset()
        ),
        fresh=reason is not None and (not reason.cache_will_do or new_connection),
    )


def _reason(
    state: TargetState,
    sockets: Sequence[Socket],
    new_connection: bool,
    now: float,
    policy: ReadPolicy,
) -> ReadReason | None:
    server = state.last_view
    if server is None:
        return ReadReason.NO_READ_YET
    if not server.ok:
        return ReadReason.LAST_READ_FAILED
    age = now - server.read_at
    if age >= policy.interval:
        return ReadReason.INTERVAL_ELAPSED
    if new_connection:
        return ReadReason.NEW_CONNECTION
    settings = policy.settings
    memory = state.memory
    expiry = memory.earliest_expiry
    if (
        expiry is not None
        and now >= expiry + settings.expiry_tolerance
        and server.read_at < expiry + settings.expiry_tolerance
    ):
        return ReadReason.PAST_PREDICTED_TIMEOUT
    fallback = settings.capped(server.wait_timeout)
    last = memory.items
    established = TcpState.ESTABLISHED
    for s in sockets:
        idle = s.idle_seconds
        if (
            s.state is not established
            or s.gone
            or idle is None
            or idle >= age  # silent since the read: the read still describes it
        ):
            continue
        # Its limit as last known (its own, interactive, in a transaction), else the
        # global one.
        item = last.get((s.local, s.remote))
        timeout = item.timeout_seconds if item is not None else None
        if timeout is None:
            timeout = fallback
        if timeout is not None and timeout - idle <= settings.risk_headroom:
            return ReadReason.CHANGED_NEAR_TIMEOUT
    return None


def accepts_early(plan: Plan, early_ips: frozenset[str]) -> bool:
    """Whether a read started before the dump, about ``early_ips``, serves this plan: a
    read is due, no connection is newer than the last read (it may be newer than the
    early one too), and the early read asked about every address the plan needs."""
    return plan.reason is not None and not plan.new_connection and plan.client_ips <= early_ips


def settle_ping(state: TargetState, plan: Plan, failed: ServerView) -> TargetState:
    """The state after a collection that read nothing but found the server gone (its
    liveness check failed): the next collection reads again; what the last good read
    knew, and whom it asked about, stays."""
    return replace(state, last_view=failed, saw_new_connection=plan.new_connection)


def settle(
    state: TargetState, plan: Plan, view: ServerView | None
) -> tuple[TargetState, tuple[Socket, ...]]:
    """The state a collection leaves, and the sockets to correlate.

    ``view``: the read this collection made (None when it made none). A successful read
    knows the live connections of the moment, and may reveal a client endpoint of the
    exporter's own that is new (it reconnected): that socket is left out from now on."""
    if view is None:
        return replace(state, saw_new_connection=plan.new_connection), plan.sockets
    sockets = plan.sockets
    known = state.known_at_read
    own = state.own_endpoints
    if view.ok:
        known = plan.live
        new_own = view.own_client_endpoints.difference(own)
        if new_own:
            sockets = tuple(s for s in sockets if s.local not in new_own)
            own = (*own, *sorted(new_own))[-OWN_ENDPOINTS_KEPT:]
    return (
        replace(
            state,
            last_view=view,
            known_at_read=known,
            read_ips=plan.client_ips,
            saw_new_connection=plan.new_connection,
            own_endpoints=own,
        ),
        sockets,
    )

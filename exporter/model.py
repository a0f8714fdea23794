"""Plain values the core passes around: what the socket side and the session side saw,
what correlation made of them, and what one collection produced for rendering.

Everything here is immutable: a collection produces new values, it never edits old ones.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import NamedTuple


class Endpoint(NamedTuple):
    """An IP address (normalised: IPv4-mapped IPv6 becomes IPv4) and a TCP port.

    A named tuple rather than a dataclass: a collection at 10,000 sessions builds and
    hashes endpoints some 200,000 times (dictionary keys, connection keys), and a tuple's
    construction, hash, equality and ordering (by ip, then port) run in C."""

    ip: str
    port: int

    def __str__(self) -> str:
        return f"[{self.ip}]:{self.port}" if ":" in self.ip else f"{self.ip}:{self.port}"


class TcpState(enum.IntEnum):
    """Linux TCP states, numbered as in include/net/tcp_states.h."""

    ESTABLISHED = 1
    SYN_SENT = 2
    SYN_RECV = 3
    FIN_WAIT1 = 4
    FIN_WAIT2 = 5
    TIME_WAIT = 6
    CLOSE = 7
    CLOSE_WAIT = 8
    LAST_ACK = 9
    LISTEN = 10
    CLOSING = 11
    NEW_SYN_RECV = 12


class Place(NamedTuple):
    """Where a socket lives on the machine, in node mode (--mode=node): its network
    namespace and the names users know it by (exporter.node)."""

    netns: int  # the network namespace's inode (net:[N])
    # The host name the namespace's processes see: in Kubernetes the pod's name (a pod's
    # containers share its network and UTS namespaces).
    pod: str
    # The owning process's container, by short ID, from its cgroup path ("" for a process
    # in no container, or an owner not known).
    container: str = ""
    pod_uid: str = ""  # the Kubernetes pod's UID, from the cgroup path ("" elsewhere)
    runtime: str = ""  # the container runtime the cgroup path names ("" without one)


class Socket(NamedTuple):
    """A local TCP socket whose remote end is a watched database address.

    A named tuple, built once per socket per collection. Its first seven fields are
    exactly exporter.sockets.kernel.KernelSocket's, so the reader builds one from a kernel
    row by tuple concatenation, in C."""

    local: Endpoint
    remote: Endpoint
    state: TcpState
    inode: int
    uid: int
    # Client-side silence, min(tcpi_last_data_sent, tcpi_last_data_recv), in seconds.
    # None where the source has no tcp_info (/proc/net/tcp fallback).
    idle_seconds: float | None = None
    # True when the kernel's keepalive timer is armed for this socket.
    keepalive: bool = False
    # With keepalive armed: how long the path will have been silent when the next probe
    # goes out (seconds since the last segment either way, plus inet_diag's idiag_expires,
    # the time until the timer fires). Above the path's idle limit, the probe comes too
    # late to keep a NAT's or load balancer's state alive. None when not armed or unknown.
    keepalive_probe_at: float | None = None
    pid: int | None = None
    # The application the owner runs: an interpreter's script, module, jar or main class,
    # else the process name (exporter.sockets.appname). The `process` label.
    process: str = "unknown"
    # True when the socket has left the kernel's TCP tables while its owner still holds
    # the file descriptor (the server reset the connection).
    gone: bool = False
    # The owner's plain process name (comm, completed past 15 characters), e.g. python3.
    comm: str = "unknown"
    # Node mode: the namespace, pod and container the socket lives in; None in local mode.
    place: Place | None = None


class Session(NamedTuple):
    """A server-side connection: one processlist row, without the query text. A named
    tuple, like Endpoint: a read at 10,000 sessions builds 10,000 of them."""

    id: int
    # Client address as the server reports it. ip may be a hostname or "localhost" when
    # the server resolves names; None for sessions over a unix socket or named pipe.
    client: Endpoint | None
    user: str
    db: str | None
    command: str
    idle_seconds: float
    # The session's own wait_timeout when the server exposes it (MySQL 8
    # performance_schema.variables_by_thread); None means "use the global value".
    wait_timeout: float | None = None
    # The session's open InnoDB transaction (information_schema.INNODB_TRX), if any: how
    # long it has been open at the read, and the rows it has locked and modified.
    transaction_seconds: float | None = None
    rows_locked: int = 0
    rows_modified: int = 0

    @property
    def sleeping(self) -> bool:
        return self.command == "Sleep"

    @property
    def in_transaction(self) -> bool:
        return self.transaction_seconds is not None


class Flavor(enum.Enum):
    MARIADB = "mariadb"
    MYSQL = "mysql"


@dataclass(frozen=True, slots=True)
class ServerView:
    """What one read of one target's server said (or why it could not say anything)."""

    target: str
    ok: bool
    error: str | None = None
    flavor: Flavor | None = None
    version: str = ""
    source: str = ""  # e.g. "information_schema", "performance_schema"
    wait_timeout: float | None = None
    interactive_timeout: float | None = None
    # MariaDB's limits for sessions idle inside a transaction (None: off, or MySQL).
    idle_transaction_timeout: float | None = None
    idle_readonly_transaction_timeout: float | None = None
    idle_write_transaction_timeout: float | None = None
    sessions: tuple[Session, ...] = ()
    # The exporter's own session ids and its own client endpoints: never counted.
    own_session_ids: frozenset[int] = frozenset()
    own_client_endpoints: frozenset[Endpoint] = frozenset()
    # False when the user lacks PROCESS and so sees only its own sessions.
    full_view: bool = True
    per_session_timeouts: bool = False
    # When the read completed, on the collection's clock (exporter.deadline).
    read_at: float = 0.0
    # When the server started, on the same clock (its Uptime, read at connect): a later
    # read with a later start time saw a restart in between (exporter.causes).
    started_at: float | None = None
    # Seconds each phase of the read took ("connect", "variables", "processlist").
    durations: dict[str, float] = field(default_factory=dict)
    # The read failed from a bug in the exporter, not from the server (``error`` says
    # which exception); counted apart so that such failures are found, not taken for
    # an unreachable server.
    internal_error: bool = False


class TimeoutKind(enum.Enum):
    """Which limit governs an idle session (the smallest that applies to it)."""

    # The server's global wait_timeout, assumed: the session's own is not readable.
    WAIT = "wait_timeout"
    # The session's own wait_timeout as the server reports it (MySQL variables_by_thread),
    # or known otherwise (another mysql-idle-exporter raises its own to a year).
    SESSION = "session_wait_timeout"
    # interactive_timeout: an interactive client (the mysql/mariadb CLI), or a session
    # seen to outlive wait_timeout.
    INTERACTIVE = "interactive_timeout"
    # MariaDB, a session idle inside a transaction.
    TRANSACTION = "idle_transaction_timeout"
    READONLY_TRANSACTION = "idle_readonly_transaction_timeout"
    WRITE_TRANSACTION = "idle_write_transaction_timeout"
    # --network.idle-timeout: the path forgets the flow first.
    NETWORK = "network_idle_timeout"


class State(enum.Enum):
    ACTIVE = "active"
    IDLE = "idle"
    AT_RISK = "at_risk"
    DROPPED = "dropped"
    PHANTOM = "phantom"
    UNMATCHED = "unmatched"


ALL_STATES: tuple[State, ...] = tuple(State)


# --- correlation: what each socket is -------------------------------------------------

# A connection is identified by its 4-tuple: stable for its whole life, including after the
# kernel has unhashed it (the reader reports such "gone" sockets with the same endpoints).
ConnectionKey = tuple[Endpoint, Endpoint]


def connection_key(socket: Socket) -> ConnectionKey:
    return (socket.local, socket.remote)


@dataclass(frozen=True, slots=True)
class Settings:
    """How risk is judged: the operator's thresholds."""

    risk_headroom: float = 300.0
    network_idle_timeout: float | None = None
    # Tolerance when deciding that a vanished socket had idled past its timeout: a scrape
    # that lands a moment before the server's timer should still count the drop.
    expiry_tolerance: float = 1.0

    def capped(self, timeout: float | None) -> float | None:
        """A server timeout, or the network path's idle limit where that comes sooner."""
        network = self.network_idle_timeout
        if network is None or timeout is None:
            return timeout if network is None else network
        return min(timeout, network)


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
    # Which limit timeout_seconds is (None without one: not idle, or not knowable).
    timeout_kind: TimeoutKind | None = None


@dataclass(frozen=True, slots=True)
class TargetSnapshot:
    """One target's share of a collection: every socket with its state."""

    target: str
    server: ServerView | None
    items: tuple[Classified, ...]
    correlation_working: bool
    dropped_totals: Mapping[str, int]
    # Seconds between the server read used here and the collection; None without a read.
    server_age_seconds: float | None
    settings: Settings
    # Sessions seen to die, by (process, cause) since start (exporter.causes): every drop
    # in dropped_totals once its cause is known, and phantoms (cause "network").
    cause_totals: Mapping[tuple[str, str], int] = field(default_factory=dict)

    def by_state(self, state: State) -> list[Classified]:
        return [item for item in self.items if item.state is state]


# --- per-process totals: what rendering needs -------------------------------------------


@dataclass(frozen=True, slots=True)
class ProcessTotals:
    """One owning process's share of a target's sockets."""

    # Sockets per state, in ALL_STATES order.
    states: tuple[int, ...]
    keepalive: int
    # Smallest headroom among its idle and at_risk sessions; None without any.
    min_headroom: float | None
    # Idle seconds of its matched idle sessions (idle and at_risk states).
    server_idle: tuple[float, ...]
    # Client-side silence of every socket that has it.
    client_idle: tuple[float, ...]
    # The plain process names (comm) of its owners, sorted: usually one, e.g. python3.
    comms: tuple[str, ...] = ()
    # Its matched sessions that sleep inside an open transaction (idle or at_risk): how
    # many, the age of the oldest transaction, the longest idle time among them, and the
    # rows their transactions lock and have modified (summed).
    in_transaction: int = 0
    transaction_oldest: float | None = None
    transaction_idle: float | None = None
    rows_locked: int = 0
    rows_modified: int = 0
    # Its idle sessions by the limit that governs them (TimeoutKind value, count), sorted.
    limits: tuple[tuple[str, int], ...] = ()
    # With --network.idle-timeout: its open sockets whose keepalive is not armed or sends
    # its next probe after the path's limit (keepalive_probe_at above it).
    keepalive_late: int = 0


@dataclass(frozen=True, slots=True)
class TargetSummary:
    # By process label (already valid UTF-8: two names differing only in undecodable
    # bytes are one process here), sorted.
    processes: dict[str, ProcessTotals]
    # The riskiest idle sessions, smallest headroom first (ties by local endpoint).
    riskiest: tuple[Classified, ...]
    # The idle sessions inside the oldest open transactions, oldest first (at most
    # --sessions.top).
    transactions: tuple[Classified, ...] = ()


# --- a whole collection ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ReadCounts:
    """Monotonic counts a session source keeps of its own reads."""

    reads: int = 0
    read_errors: int = 0
    # Reads that failed from a bug in the exporter (ServerView.internal_error).
    internal_errors: int = 0
    # SQL statements sent to the server, connect-time ones included.
    queries: int = 0
    # Liveness checks (COM_PING) sent between reads.
    pings: int = 0


@dataclass(frozen=True, slots=True)
class ResolveStatus:
    """What name resolution knows of one target's host."""

    addresses: frozenset[str] = frozenset()
    # Lookups that failed or timed out so far, and the last one's reason while failing.
    failures: int = 0
    error: str | None = None


@dataclass(frozen=True, slots=True)
class PlaceSummary:
    """Node mode: one place's share of a target's collection (its sockets were correlated
    apart from other namespaces': the same client ip:port can exist in two of them)."""

    place: Place
    summary: TargetSummary
    dropped_totals: Mapping[str, int]
    # Its sessions seen to die, by (process, cause) (TargetSnapshot.cause_totals).
    cause_totals: Mapping[tuple[str, str], int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class TargetReport:
    """One target's part of a collection, ready to render."""

    snapshot: TargetSnapshot
    summary: TargetSummary
    counts: ReadCounts = ReadCounts()
    resolve: ResolveStatus = ResolveStatus()
    # Seconds per phase: "sockets", "owners", "server", "correlate", "total".
    durations: Mapping[str, float] = field(default_factory=dict)
    # Node mode: per place (pod and container); the summary above is their sum.
    places: tuple[PlaceSummary, ...] = ()


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Everything one collection produced: what a scrape renders."""

    reports: tuple[TargetReport, ...]
    collections: int = 0
    top_sessions: int = 20
    # Collections whose socket dump failed (counted since start).
    socket_read_errors: int = 0
    # Sockets in the kernel's table whose owning process cannot be read, by reason.
    sockets_without_owner: Mapping[str, int] = field(default_factory=dict)
    # Node mode: socket-side series carry pod and container labels (TargetReport.places).
    node: bool = False

    @property
    def targets(self) -> tuple[TargetSnapshot, ...]:
        return tuple(report.snapshot for report in self.reports)

    def only(self, target: str) -> Snapshot:
        return Snapshot(
            reports=tuple(r for r in self.reports if r.snapshot.target == target),
            collections=self.collections,
            top_sessions=self.top_sessions,
            socket_read_errors=self.socket_read_errors,
            sockets_without_owner=self.sockets_without_owner,
            node=self.node,
        )

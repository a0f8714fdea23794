"""Plain values shared by the socket side, the session side and correlation.

Everything here is immutable: a collection produces new values, it never edits old ones.
"""

from __future__ import annotations

import enum
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
    pid: int | None = None
    # The application the owner runs: an interpreter's script, module, jar or main class,
    # else the process name (exporter.sockets.appname). The `process` label.
    process: str = "unknown"
    # True when the socket has left the kernel's TCP tables while its owner still holds
    # the file descriptor (the server reset the connection).
    gone: bool = False
    # The owner's plain process name (comm, completed past 15 characters), e.g. python3.
    comm: str = "unknown"


class SessionCommand(enum.Enum):
    SLEEP = "Sleep"
    OTHER = "other"


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

    @property
    def sleeping(self) -> bool:
        return self.command == "Sleep"


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
    sessions: tuple[Session, ...] = ()
    # The exporter's own session ids and its own client endpoints: never counted.
    own_session_ids: frozenset[int] = frozenset()
    own_client_endpoints: frozenset[Endpoint] = frozenset()
    # False when the user lacks PROCESS and so sees only its own sessions.
    full_view: bool = True
    per_session_timeouts: bool = False
    # Monotonic clock time at which the read completed.
    read_at: float = 0.0
    # Seconds each phase of the read took ("connect", "variables", "processlist").
    durations: dict[str, float] = field(default_factory=dict)


class State(enum.Enum):
    ACTIVE = "active"
    IDLE = "idle"
    AT_RISK = "at_risk"
    DROPPED = "dropped"
    PHANTOM = "phantom"
    UNMATCHED = "unmatched"


ALL_STATES: tuple[State, ...] = tuple(State)

"""One row of the kernel's TCP table, before its owning process is known."""

from __future__ import annotations

from typing import NamedTuple

from exporter.model import Endpoint, TcpState


class KernelSocket(NamedTuple):
    """A named tuple: the netlink parser builds one per socket per collection."""

    local: Endpoint
    remote: Endpoint
    state: TcpState
    # 0 once the last file descriptor is closed (an orphan still finishing its close).
    inode: int
    uid: int
    # min(tcpi_last_data_sent, tcpi_last_data_recv) in seconds; None where the source
    # has no tcp_info (the /proc fallback, or a tcp_info too short to hold it).
    idle_seconds: float | None
    # The kernel's keepalive timer is the pending timer for this socket.
    keepalive: bool
    # With keepalive armed, the path's silence when the next probe goes out (Socket's
    # field of the same name); None otherwise or without tcp_info.
    keepalive_probe_at: float | None = None

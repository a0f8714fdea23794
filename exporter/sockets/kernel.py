"""One row of the kernel's TCP table, before its owning process is known."""

from __future__ import annotations

from dataclasses import dataclass

from exporter.model import Endpoint, TcpState


@dataclass(frozen=True, slots=True)
class KernelSocket:
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

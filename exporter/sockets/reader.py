"""The socket side of a collection: the kernel's table of sockets to the watched ports,
their owners, and the sockets the kernel has dropped but a process still holds."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Literal

from exporter.model import Socket, TcpState
from exporter.sockets import netlink
from exporter.sockets.kernel import KernelSocket
from exporter.sockets.owners import UNKNOWN_PROCESS, Owner, OwnerMap
from exporter.sockets.procnet import read_proc_net_tcp

logger = logging.getLogger(__name__)

Source = Literal["auto", "netlink", "proc"]
Dump = Callable[[Collection[int]], list[KernelSocket]]


@dataclass(frozen=True, slots=True)
class SocketReading:
    sockets: tuple[Socket, ...]
    source: str  # "netlink" or "proc": where this reading's table came from
    durations: dict[str, float]  # seconds per phase: "sockets", "owners"


@dataclass(frozen=True, slots=True)
class _Remembered:
    socket: Socket
    owner: Owner
    seen_at: float


def _gone(memory: _Remembered, now: float) -> Socket:
    last = memory.socket
    idle = None if last.idle_seconds is None else last.idle_seconds + (now - memory.seen_at)
    return Socket(
        local=last.local,
        remote=last.remote,
        state=TcpState.CLOSE,
        inode=last.inode,
        uid=last.uid,
        idle_seconds=idle,
        keepalive=False,
        pid=memory.owner.pid,
        process=memory.owner.process,
        gone=True,
    )


class SocketReader:
    """Reads the sockets whose remote port is one of `remote_ports`.

    A reset connection leaves the kernel's tables at once while its owner may hold the
    file descriptor for hours, so the reader remembers each socket with a known owner
    and reports it as gone (state CLOSE, gone=True) for as long as that owner still
    holds it. Only sockets with owners are remembered, and each is forgotten when its
    descriptor is closed, so memory follows what the processes hold.

    Not thread-safe: one read at a time (the engine shares one collection per scrape).
    """

    def __init__(
        self,
        remote_ports: Collection[int],
        *,
        source: Source = "auto",
        proc_root: str = "/proc",
        clock: Callable[[], float] = time.monotonic,
        owners: OwnerMap | None = None,
        netlink_dump: Dump = netlink.dump_tcp,
    ) -> None:
        self._ports = frozenset(remote_ports)
        netlink.build_bytecode(self._ports)  # reject bad ports now, not at the first read
        self._requested = source
        self._use_netlink = source != "proc"
        self._proc_root = proc_root
        self._clock = clock
        self._owners = owners if owners is not None else OwnerMap(proc_root, clock=clock)
        self._dump = netlink_dump
        self._memory: dict[int, _Remembered] = {}

    def _list(self) -> tuple[list[KernelSocket], str]:
        if self._use_netlink:
            try:
                return self._dump(self._ports), "netlink"
            except netlink.NetlinkUnavailable as error:
                if self._requested == "netlink":
                    raise
                logger.warning(
                    "sock_diag netlink is unavailable (%s); reading /proc/net/tcp from now "
                    "on, without client idle times",
                    error,
                )
                self._use_netlink = False
            except netlink.NetlinkError as error:
                if self._requested == "netlink":
                    raise
                logger.warning("sock_diag dump failed (%s); using /proc/net/tcp this time", error)
        return read_proc_net_tcp(self._ports, self._proc_root), "proc"

    def read(self) -> SocketReading:
        started = time.perf_counter()
        rows, source = self._list()
        listed = time.perf_counter()
        owners = self._owners.resolve({row.inode for row in rows})
        now = self._clock()
        sockets: list[Socket] = []
        present: set[int] = set()
        for row in rows:
            owner = owners.get(row.inode)
            current = Socket(
                local=row.local,
                remote=row.remote,
                state=row.state,
                inode=row.inode,
                uid=row.uid,
                idle_seconds=row.idle_seconds,
                keepalive=row.keepalive,
                pid=owner.pid if owner is not None else None,
                process=owner.process if owner is not None else UNKNOWN_PROCESS,
            )
            sockets.append(current)
            if row.inode:
                present.add(row.inode)
            if owner is not None:
                self._memory[row.inode] = _Remembered(current, owner, now)
        for inode, memory in list(self._memory.items()):
            if inode in present:
                continue
            if self._owners.still_holds(memory.owner, inode):
                sockets.append(_gone(memory, now))
            else:
                del self._memory[inode]
        finished = time.perf_counter()
        return SocketReading(
            sockets=tuple(sockets),
            source=source,
            durations={"sockets": listed - started, "owners": finished - listed},
        )

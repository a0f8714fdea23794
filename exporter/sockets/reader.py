"""The socket side of a collection: the kernel's table of sockets to the watched ports,
their owners, and the sockets the kernel has dropped but a process still holds."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Literal

from exporter.model import Socket, TcpState
from exporter.sockets import netlink
from exporter.sockets.kernel import KernelSocket
from exporter.sockets.owners import READER_RECHECK_EVERY, UNKNOWN_PROCESS, Owner, OwnerMap
from exporter.sockets.procnet import read_proc_net_tcp

logger = logging.getLogger(__name__)

Source = Literal["auto", "netlink", "proc"]
Dump = Callable[[Collection[int]], list[KernelSocket]]


@dataclass(frozen=True, slots=True)
class SocketReading:
    sockets: tuple[Socket, ...]
    source: str  # "netlink" or "proc": where this reading's table came from
    durations: dict[str, float]  # seconds per phase: "sockets", "owners"


# A socket with a known owner, the owner, and when the socket was last in the kernel's
# table. A plain tuple: one is stored per socket per read.
_Remembered = tuple[Socket, Owner, float]


def _gone(memory: _Remembered, now: float) -> Socket:
    last, owner, seen_at = memory
    idle = None if last.idle_seconds is None else last.idle_seconds + (now - seen_at)
    return Socket(
        local=last.local,
        remote=last.remote,
        state=TcpState.CLOSE,
        inode=last.inode,
        uid=last.uid,
        idle_seconds=idle,
        keepalive=False,
        pid=owner.pid,
        process=owner.process,
        gone=True,
        comm=owner.comm,
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
        # The reader asks only about inodes in the kernel's table: owners may be trusted.
        self._owners = owners if owners is not None else OwnerMap(
            proc_root, clock=clock, recheck_every=READER_RECHECK_EVERY
        )
        self._dump = netlink_dump
        # The last read: its sockets with owners, those owners, and when it was made. A
        # socket is remembered (for the "gone" check) only once it leaves the table, so
        # that a read does not store anything per socket that is still there.
        self._last: list[Socket] = []
        self._last_owners: Mapping[int, Owner] = {}
        self._last_at = 0.0
        self._last_present: set[int] = set()
        self._gone: dict[int, _Remembered] = {}

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
        present = {row.inode for row in rows if row.inode}
        owners = self._owners.resolve(present)
        now = self._clock()
        sockets: list[Socket] = []
        append = sockets.append
        owner_of = owners.get
        new_socket = tuple.__new__  # Socket(...) without its Python-level __new__
        unknown = (None, UNKNOWN_PROCESS, False, UNKNOWN_PROCESS)
        owned: list[Socket] = []
        keep = owned.append
        # Runs once per socket: a Socket is the kernel row plus (pid, process, gone, comm).
        for row in rows:
            owner = owner_of(row.inode)
            if owner is None:
                append(new_socket(Socket, row + unknown))
            else:
                current = new_socket(
                    Socket, (*row, owner.pid, owner.process, False, owner.comm)
                )
                append(current)
                keep(current)
        # Sockets that have just left the kernel's table while owned: remembered now.
        last_owners, gone = self._last_owners, self._gone
        vanished = self._last_present - present  # in C; usually empty
        if vanished:
            for last in self._last:
                inode = last.inode
                if inode in vanished and inode not in gone:
                    gone[inode] = (last, last_owners[inode], self._last_at)
        self._last, self._last_owners, self._last_at = owned, owners, now
        self._last_present = present
        # Only these need a readlink each: is the descriptor still held?
        for inode in list(gone):
            memory = gone[inode]
            if inode in present or not self._owners.still_holds(memory[1], inode):
                del gone[inode]  # back in the table (a reused inode), or closed
            else:
                sockets.append(_gone(memory, now))
        finished = time.perf_counter()
        return SocketReading(
            sockets=tuple(sockets),
            source=source,
            durations={"sockets": listed - started, "owners": finished - listed},
        )

"""The socket side of a collection: the kernel's table of sockets to the watched ports,
their owners, and the sockets the kernel has dropped but a process still holds."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Literal

from exporter.deadline import Clock, Deadline
from exporter.model import Socket, TcpState
from exporter.sockets import netlink
from exporter.sockets.kernel import KernelSocket
from exporter.sockets.memory import SocketMemory
from exporter.sockets.owners import (
    NO_PERMISSION,
    NOT_VISIBLE,
    UNKNOWN_PROCESS,
    WITHOUT_OWNER_REASONS,
    Owner,
    OwnerMap,
)
from exporter.sockets.procnet import read_proc_net_tcp

logger = logging.getLogger(__name__)

Source = Literal["auto", "netlink", "proc"]
Dump = Callable[[Collection[int], Deadline], list[KernelSocket]]


@dataclass(frozen=True, slots=True)
class SocketReading:
    sockets: tuple[Socket, ...]
    source: str  # "netlink" or "proc": where this reading's table came from
    durations: dict[str, float]  # seconds per phase: "sockets", "owners"
    # Sockets in the table whose owner is not found, by reason (owners.WITHOUT_OWNER_REASONS).
    without_owner: dict[str, int] = field(default_factory=dict)


# Said once per reason, at the first read that finds such a socket: what is lost, and the fix.
_ADVICE = {
    NO_PERMISSION: (
        "cannot read which process holds %d watched socket(s) (socket uid %s): this exporter "
        "(uid %d, gid %d) may not read that process's /proc/PID/fd. Run it with the "
        "application's uid AND gid, or with CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH (in "
        "Kubernetes only a uid-0 container gets added capabilities). Until then these "
        "sockets have process=unknown, no pid, and their RST-form drops are not seen"
    ),
    NOT_VISIBLE: (
        "cannot find the process that holds %d watched socket(s) (socket uid %s): it is not "
        "in this exporter's PID namespace (uid %d, gid %d). In Kubernetes set "
        "shareProcessNamespace: true on the pod (and give the exporter the application's uid "
        "AND gid). Until then these sockets have process=unknown, no pid, and their "
        "RST-form drops are not seen"
    ),
}


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
        clock: Clock = time.monotonic,
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
        # The last read: its sockets with owners, those owners, and when it was made. A
        # socket is remembered (for the "gone" check) only once it leaves the table, so
        # that a read does not store anything per socket that is still there.
        self._last: list[Socket] = []
        self._last_owners: Mapping[int, Owner] = {}
        self._last_at = 0.0
        self._last_present: set[int] = set()
        self._gone: dict[int, _Remembered] = {}
        self._advised: set[str] = set()  # reasons already logged (see _ADVICE)

    def memory(self) -> SocketMemory:
        """What this reader remembers between reads (for exporter.persistence). Call it
        between reads."""
        last_owners = self._last_owners
        return SocketMemory(
            held=tuple((sock, last_owners[sock.inode]) for sock in self._last),
            seen_at=self._last_at,
            gone=tuple(self._gone.values()),
        )

    def restore(self, memory: SocketMemory) -> None:
        """Take up what an earlier run remembered, as if its last read had been this
        reader's: a held socket missing from the next read's table is then reported gone
        while its owner still holds it (checked then, descriptor and inode)."""
        self._last = [sock for sock, _ in memory.held]
        self._last_owners = {sock.inode: owner for sock, owner in memory.held}
        self._last_present = {sock.inode for sock, _ in memory.held}
        self._last_at = memory.seen_at
        self._gone = {sock.inode: (sock, owner, at) for sock, owner, at in memory.gone}

    def close(self) -> None:
        """Closes what the dump keeps open (exporter.sockets.lookup's channel)."""
        close_dump = getattr(self._dump, "close", None)
        if close_dump is not None:
            close_dump()

    def _list(self, deadline: Deadline) -> tuple[list[KernelSocket], str]:
        if self._use_netlink:
            try:
                return self._dump(self._ports, deadline), "netlink"
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

    def read(self, deadline: Deadline) -> SocketReading:
        """The sockets to the watched ports; owners the scan could not find by
        ``deadline`` are left unknown this time."""
        started = time.perf_counter()
        rows, source = self._list(deadline)
        listed = time.perf_counter()
        present = {row.inode for row in rows if row.inode}
        owners = self._owners.resolve(present, deadline)
        now = self._clock()
        sockets: list[Socket] = []
        append = sockets.append
        owner_of = owners.get
        new_socket = tuple.__new__  # Socket(...) without its Python-level __new__
        unknown = (None, UNKNOWN_PROCESS, False, UNKNOWN_PROCESS, None)
        owned: list[Socket] = []
        keep = owned.append
        unowned: list[KernelSocket] = []
        # Runs once per socket: a Socket is the kernel row plus (pid, process, gone, comm,
        # place); node mode (exporter.node.reader) gives each its place afterwards.
        for row in rows:
            owner = owner_of(row.inode)
            if owner is None:
                append(new_socket(Socket, row + unknown))
                unowned.append(row)
            else:
                current = new_socket(
                    Socket, (*row, owner.pid, owner.process, False, owner.comm, None)
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
        without_owner = self._without_owner(unowned)
        finished = time.perf_counter()
        return SocketReading(
            sockets=tuple(sockets),
            source=source,
            durations={"sockets": listed - started, "owners": finished - listed},
            without_owner=without_owner,
        )

    def _without_owner(self, unowned: list[KernelSocket]) -> dict[str, int]:
        """How many sockets have no owner, and why: a process of the socket's uid refused
        the last scan its fds, or no such process is in our /proc. An orphan (inode 0) has
        no owner to find and is not counted. Logs the fix once per reason."""
        counts = dict.fromkeys(WITHOUT_OWNER_REASONS, 0)
        uids: dict[str, set[int]] = {reason: set() for reason in WITHOUT_OWNER_REASONS}
        denied = self._owners.denied_uids
        for row in unowned:
            if row.inode:
                reason = NO_PERMISSION if row.uid in denied else NOT_VISIBLE
                counts[reason] += 1
                uids[reason].add(row.uid)
        for reason, count in counts.items():
            if count and reason not in self._advised:
                self._advised.add(reason)
                logger.warning(
                    _ADVICE[reason],
                    count,
                    ",".join(map(str, sorted(uids[reason]))),
                    os.geteuid(),
                    os.getegid(),
                )
        return counts

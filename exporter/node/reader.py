"""The socket side in node mode: every network namespace's sockets to the watched ports,
their owners from the host's /proc, and where each lives (namespace, pod, container).

The dump runs through each namespace's own sock_diag socket (exporter.node.namespaces);
owners, and the memory of sockets reset while still held (the RST form of `dropped`),
are the local reader's (exporter.sockets.reader), over the host's /proc: socket inodes are
unique across namespaces, so one owner scan serves them all.

Between dumps each namespace's known sockets are looked up as a sidecar's are
(exporter.sockets.lookup): a namespace's dump walks the kernel's whole TCP table, which
every namespace shares unless net.ipv4.tcp_child_ehash_entries is set, so 30 pods cost 30
walks a scrape. A namespace is dumped again when a TCP connection was opened from it
(``ActiveOpens`` in /proc/PID/net/snmp of a process in it), one of its known sockets
changed, or its last dump is --sockets.dump-interval old.
"""

from __future__ import annotations

import errno as errno_codes
import logging
import os
import socket
import time
from collections.abc import Collection
from functools import partial

from exporter.deadline import Clock, Deadline
from exporter.model import Place, Socket
from exporter.node.namespaces import Namespaces, parse_ns_link
from exporter.node.placement import Container, container_of
from exporter.sockets import netlink
from exporter.sockets.kernel import KernelSocket
from exporter.sockets.lookup import KnownSockets, active_opens
from exporter.sockets.memory import SocketMemory
from exporter.sockets.owners import OwnerMap
from exporter.sockets.reader import SocketReader, SocketReading

log = logging.getLogger(__name__)

# Where a socket of the dump was: by inode, or for an orphan (inode 0) by its endpoints.
_Where = dict[object, int]


class NodeSocketReader:
    """A SocketSource (exporter.engine) over every network namespace of the machine."""

    def __init__(
        self,
        remote_ports: Collection[int],
        *,
        proc_root: str = "/proc",
        clock: Clock = time.monotonic,
        namespaces: Namespaces | None = None,
        owners: OwnerMap | None = None,
        dump_interval: float = 60.0,
    ) -> None:
        """``dump_interval``: --sockets.dump-interval (0: every namespace dumped at every
        read)."""
        self._proc_root = proc_root
        self._clock = clock
        self._dump_interval = dump_interval
        self.namespaces = namespaces if namespaces is not None else Namespaces(proc_root)
        self._known: dict[int, KnownSockets] = {}  # by namespace
        self._inner = SocketReader(
            remote_ports, source="netlink", proc_root=proc_root, clock=clock, owners=owners,
            netlink_dump=self._dump,
        )
        self._where: _Where = {}  # this dump's
        self._netns_of: dict[int, int] = {}  # inode -> netns, of the last read's sockets
        self._containers: dict[int, Container | None] = {}  # by owner pid

    def _dump(self, ports: Collection[int], deadline: Deadline) -> list[KernelSocket]:
        self.namespaces.refresh()
        rows: list[KernelSocket] = []
        where: _Where = {}
        namespaces = dict(self.namespaces.items())
        for inode in list(self._known):
            if inode not in namespaces:
                del self._known[inode]  # gone: Namespaces closed its socket
        for inode in namespaces:
            known = self._known.get(inode)
            if known is None:
                known = self._known[inode] = KnownSockets(
                    self._dump_interval, clock=self._clock,
                    opens=partial(self._opens, inode), dump=_dump_tcp,
                    channel=_NamespaceChannel(self.namespaces, inode),
                )
            try:
                found = known(ports, deadline)
            except netlink.NetlinkError as error:
                # KnownSockets has closed the namespace's socket (a half-read dump would
                # leave its remains in it): the next refresh enters it again. A namespace
                # missing from one read would make its held sockets look reset, so the
                # whole read fails instead (as a local one does).
                if error.errno == errno_codes.ETIMEDOUT:
                    raise
                raise netlink.NetlinkError(
                    error.errno or errno_codes.EIO,
                    f"sock_diag dump of network namespace {inode} failed: {error.strerror}",
                ) from error
            for row in found:
                where[row.inode or (row.local, row.remote)] = inode
            rows.extend(found)
        self._where = where
        return rows

    def _opens(self, inode: int) -> int | None:
        """The namespace's ActiveOpens, read through the process refresh() found in it;
        None (the namespace is dumped) when that process has left it or ended."""
        pid = self.namespaces.pid(inode)
        if pid is None:
            return None
        opens = active_opens(f"{self._proc_root}/{pid}/net/snmp")
        # Read after the counter: a pid reused by a process of another namespace since
        # refresh() would otherwise give that namespace's count.
        if opens is None or self._netns_of_pid(pid) != inode:
            return None
        return opens

    def lookups(self) -> tuple[int, int]:
        """Dumps and lookup rounds so far, over every namespace still present."""
        return (sum(k.dumps for k in self._known.values()),
                sum(k.lookups for k in self._known.values()))

    def memory(self) -> SocketMemory:
        """What the reader remembers between reads (exporter.persistence, --state.dir)."""
        return self._inner.memory()

    def restore(self, memory: SocketMemory) -> None:
        """Take up an earlier run's memory (see SocketReader.restore). Where a remembered
        socket lived is found again from its owner: the process still holds it."""
        self._inner.restore(memory)

    def _netns_of_pid(self, pid: int | None) -> int:
        """The network namespace of a process (0 if it cannot be read): where a socket that
        left its table while this process holds it was, when no earlier dump of this run
        listed it (it was reset while the exporter was down)."""
        if pid is None:
            return 0
        try:
            return parse_ns_link(os.readlink(f"{self._proc_root}/{pid}/ns/net")) or 0
        except OSError:
            return 0

    def _container(self, pid: int | None) -> Container | None:
        if pid is None:
            return None
        if pid in self._containers:
            return self._containers[pid]
        try:
            with open(f"{self._proc_root}/{pid}/cgroup", encoding="utf-8",
                      errors="replace") as handle:
                found = container_of(handle.read())
        except OSError:
            found = None
        self._containers[pid] = found
        return found

    def read(self, deadline: Deadline) -> SocketReading:
        reading = self._inner.read(deadline)
        started = time.perf_counter()
        hostnames = self.namespaces.hostnames
        where, last = self._where, self._netns_of
        netns_of: dict[int, int] = {}
        places: dict[tuple[int, int | None], Place] = {}
        sockets: list[Socket] = []
        new = tuple.__new__  # Socket(...) without its Python-level __new__
        for sock in reading.sockets:
            netns = where.get(sock.inode or (sock.local, sock.remote))
            if netns is None:  # a reset socket: from the read it was in, else its owner's
                netns = last.get(sock.inode) or self._netns_of_pid(sock.pid)
            if sock.inode:
                netns_of[sock.inode] = netns
            key = (netns, sock.pid)
            place = places.get(key)
            if place is None:
                container = self._container(sock.pid)
                place = places[key] = Place(
                    netns=netns,
                    pod=hostnames.get(netns, ""),
                    container=container.short_id if container is not None else "",
                    pod_uid=container.pod_uid if container is not None else "",
                    runtime=container.runtime if container is not None else "",
                )
            sockets.append(new(Socket, (*sock[:-1], place)))  # place is the last field
        self._netns_of = netns_of
        owners = {sock.pid for sock in reading.sockets if sock.pid is not None}
        for pid in list(self._containers):
            if pid not in owners:
                del self._containers[pid]  # an ended process's pid may be reused
        durations = dict(reading.durations)
        durations["owners"] = durations.get("owners", 0.0) + time.perf_counter() - started
        return SocketReading(
            sockets=tuple(sockets), source=reading.source, durations=durations,
            without_owner=reading.without_owner,
        )

    def close(self) -> None:
        self.namespaces.close()


def _dump_tcp(
    ports: Collection[int], deadline: Deadline, *, channel: socket.socket
) -> list[KernelSocket]:
    # netlink.dump_tcp looked up at each call, so that tests can stand in for it.
    return netlink.dump_tcp(ports, deadline, channel=channel)


class _NamespaceChannel:
    """A namespace's sock_diag socket for its KnownSockets: held by Namespaces, which
    closes it when the namespace goes and enters the namespace again when it was
    discarded."""

    def __init__(self, namespaces: Namespaces, inode: int) -> None:
        self._namespaces = namespaces
        self._inode = inode

    def get(self) -> socket.socket:
        return self._namespaces.channel(self._inode)

    def discard(self) -> None:
        self._namespaces.forget(self._inode)

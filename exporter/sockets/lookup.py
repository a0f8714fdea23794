"""Between dumps of the kernel's whole TCP table, the sockets already known are looked up
one by one.

A sock_diag dump makes the kernel walk every bucket of its table of established
connections, whatever the filter keeps: 262,144 buckets on a machine with 24 GiB of memory,
1-3 ms of system time per dump on these machines (benchmarks/README.md), which is as much as
mysqld_exporter's whole scrape. A sidecar watches a handful of sockets that live for hours.
An exact sock_diag request (no NLM_F_DUMP) finds one socket in that table by its addresses
and ports, a hash lookup: about 2 microseconds.

So a read dumps the whole table (``must_dump`` says why) when:
- there was no dump yet, or the last one is older than ``max_age`` (0: dump every time);
- a TCP connection was opened from this network namespace since the last dump: the
  namespace's count of active opens (``ActiveOpens`` in /proc/self/net/snmp, one counter
  for IPv4 and IPv6 that only grows; a connect() adds one as it sends its SYN) moved;
- more sockets are known than MAX_LOOKUPS (a dump is cheaper than that many lookups);
- a lookup fails, or finds a known socket no longer as the last dump saw it (gone, another
  inode on its ports, a state a dump would not list).

Otherwise it sends one exact request per known socket and returns what the kernel answers,
the same rows with fresh tcp_info: what a dump would have returned. A client's connection
to the database is always an active open of the namespace it lives in, so between two reads
either the counter moved or no socket was added to the table a dump would list; ``max_age``
bounds what anything else (a counter that cannot be read: every read dumps) could hide.
"""

from __future__ import annotations

import errno as errno_codes
import socket
import struct
import time
from collections.abc import Callable, Collection, Sequence
from typing import Protocol

from exporter.deadline import Clock, Deadline
from exporter.sockets import netlink
from exporter.sockets.kernel import KernelSocket

# Above this many known sockets a dump costs less than the lookups (about 10 microseconds
# of Python each, against 1-3 ms for a dump) and is done instead.
MAX_LOOKUPS = 128
# Requests sent in one datagram: their answers (about 1 KiB of receive buffer each) must
# fit the socket's default receive buffer (net.core.rmem_default, 208 KiB) while they wait.
_BATCH = 32
SNMP_PATH = "/proc/self/net/snmp"

_NOCOOKIE = 0xFFFFFFFF
# nlmsghdr, then inet_diag_req_v2: family, protocol, ext, pad, states, then
# inet_diag_sockid: sport and dport (big-endian: given through htons), src and dst (16
# bytes each), if, cookie (two u32).
_LOOKUP = struct.Struct("=IHHIIBBBxIHH16s16sIII")
_EVERY_STATE = 0xFFFFFFFF


def active_opens(path: str = SNMP_PATH) -> int | None:
    """How many TCP connections this network namespace has opened (``ActiveOpens`` of the
    Tcp lines of /proc/self/net/snmp); None when it cannot be read or parsed."""
    try:
        with open(path, "rb") as snmp:
            lines = [line.split() for line in snmp.read().splitlines()
                     if line.startswith(b"Tcp:")]
    except OSError:
        return None
    if len(lines) != 2 or len(lines[0]) != len(lines[1]) or b"ActiveOpens" not in lines[0]:
        return None
    try:
        return int(lines[1][lines[0].index(b"ActiveOpens")])
    except ValueError:
        return None


def must_dump(
    *,
    known: int | None,
    opens: int | None,
    opens_at_dump: int | None,
    age: float,
    max_age: float,
) -> str | None:
    """Why this read dumps the whole table, or None: the known sockets are looked up.

    ``known``: sockets the last read returned (None: no dump yet); ``opens``: the
    namespace's active opens now, ``opens_at_dump`` before the last dump (None:
    unreadable); ``age``: seconds since the last dump."""
    if known is None:
        return "first"
    if max_age <= 0:
        return "every read"
    if opens is None or opens_at_dump is None:
        return "no connection count"
    if opens != opens_at_dump:
        return "a connection was opened"
    if age >= max_age:
        return "age"
    if known > MAX_LOOKUPS:
        return "too many sockets"
    return None


def lookup_request(row: KernelSocket, seq: int) -> bytes:
    """An exact sock_diag request for the socket of ``row``, with tcp_info.

    An IPv4-mapped IPv6 socket (normalised to IPv4 by the parser) is asked for as IPv4: the
    kernel's lookup compares addresses and ports, not the family, and answers with the
    socket as it is (AF_INET6, which the parser normalises again)."""
    local, remote = row.local, row.remote
    if ":" in local.ip:
        family = socket.AF_INET6
        src, dst = socket.inet_pton(family, local.ip), socket.inet_pton(family, remote.ip)
    else:
        family = socket.AF_INET
        src, dst = socket.inet_aton(local.ip), socket.inet_aton(remote.ip)
    return _LOOKUP.pack(
        _LOOKUP.size, netlink.SOCK_DIAG_BY_FAMILY, netlink.NLM_F_REQUEST, seq, 0,
        family, socket.IPPROTO_TCP, 1 << (netlink.INET_DIAG_INFO - 1), _EVERY_STATE,
        socket.htons(local.port), socket.htons(remote.port), src, dst, 0, _NOCOOKIE,
        _NOCOOKIE,
    )


def look_up(
    channel: socket.socket, rows: Sequence[KernelSocket], deadline: Deadline
) -> list[KernelSocket] | None:
    """The sockets of ``rows`` as the kernel has them now, in the same order, or None when
    one is no longer as it was: not found, another inode on its ports, or a state a dump
    would not list. Raises NetlinkError when the exchange fails."""
    parser = netlink.DiagParser()
    fresh: list[KernelSocket] = []
    buffer = bytearray(netlink.RECV_BUFFER)
    for first in range(0, len(rows), _BATCH):
        batch = rows[first:first + _BATCH]
        channel.send(b"".join(lookup_request(row, first + i + 1)
                              for i, row in enumerate(batch)))
        for i, row in enumerate(batch):
            size = netlink.receive(channel, buffer, deadline, "lookup")
            if size < netlink.NLMSGHDR.size:
                raise netlink.MalformedMessage(f"answer of {size} bytes")
            length, kind, _flags, seq, _pid = netlink.NLMSGHDR.unpack_from(buffer)
            if seq != first + i + 1 or length > size or length < netlink.NLMSGHDR.size:
                raise netlink.MalformedMessage(f"answer {seq} of length {length}, expected "
                                               f"answer {first + i + 1}")
            if kind == netlink.NLMSG_ERROR:
                if length < netlink.NLMSGHDR.size + netlink.ERRNO.size:
                    raise netlink.MalformedMessage("NLMSG_ERROR without an error code")
                code = -netlink.ERRNO.unpack_from(buffer, netlink.NLMSGHDR.size)[0]
                if code != errno_codes.ENOENT:
                    raise netlink.NetlinkError(code, f"sock_diag lookup: error {code}")
                return None  # gone (the caller closes the channel: answers may follow)
            if kind != netlink.SOCK_DIAG_BY_FAMILY:
                raise netlink.MalformedMessage(f"answer of type {kind}")
            found = parser.diag_message(memoryview(buffer)[:size], netlink.NLMSGHDR.size,
                                        length)
            if (found is None or found.inode != row.inode
                    or not netlink.STATES_MASK & (1 << found.state)):
                return None
            fresh.append(found)
    return fresh


Dump = Callable[..., list[KernelSocket]]


class Channel(Protocol):
    """Where a KnownSockets sends its requests: a sock_diag socket of the namespace whose
    sockets it knows."""

    def get(self) -> socket.socket:
        """The socket, opened if need be."""

    def discard(self) -> None:
        """Close it (it may hold part of an answer); ``get`` opens another."""


class OwnChannel:
    """A sock_diag socket of this process's own namespace, opened when first needed."""

    def __init__(self) -> None:
        self._socket: socket.socket | None = None

    def get(self) -> socket.socket:
        if self._socket is None:
            self._socket = netlink.open_channel()
        return self._socket

    def discard(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None


class KnownSockets:
    """A socket reader's dump (exporter.sockets.reader's ``netlink_dump``) that looks the
    known sockets up instead of dumping while no connection was opened and none of them
    changed (the module's docstring says when it dumps).

    One read at a time (as the reader). Raises what netlink.dump_tcp raises."""

    def __init__(
        self,
        max_age: float,
        *,
        clock: Clock = time.monotonic,
        opens: Callable[[], int | None] = active_opens,
        dump: Dump = netlink.dump_tcp,
        channel: Channel | None = None,
    ) -> None:
        """``opens``: the namespace's ActiveOpens; ``dump``: netlink.dump_tcp's signature;
        ``channel``: the namespace's sock_diag socket (this process's by default)."""
        self._max_age = max_age
        self._clock = clock
        self._opens = opens
        self._dump_tcp = dump
        self._channel = channel if channel is not None else OwnChannel()
        self._known: list[KernelSocket] | None = None
        self._ports: frozenset[int] = frozenset()
        self._opens_at_dump: int | None = None
        self._dumped_at = 0.0
        self._lookups_work = True
        self.dumps = 0
        self.lookups = 0
        self.last_reason: str | None = None

    def __call__(self, remote_ports: Collection[int], deadline: Deadline) -> list[KernelSocket]:
        ports = frozenset(remote_ports)
        opens = self._opens() if self._max_age > 0 else None
        known = self._known if ports == self._ports and self._lookups_work else None
        reason = must_dump(
            known=None if known is None else len(known),
            opens=opens,
            opens_at_dump=self._opens_at_dump,
            age=self._clock() - self._dumped_at,
            max_age=self._max_age,
        )
        if reason is None and known is not None:
            fresh = self._look_up(known, deadline)
            if fresh is not None:
                self.lookups += 1
                self.last_reason = None
                self._known = fresh
                return fresh
            reason = "a known socket changed"
        self.last_reason = reason
        return self._dump(ports, opens, deadline)

    def _look_up(self, known: list[KernelSocket], deadline: Deadline) -> list[KernelSocket] | None:
        try:
            fresh = look_up(self._open(), known, deadline)
        except netlink.NetlinkError as error:
            if error.errno in netlink.UNAVAILABLE_ERRNOS - {errno_codes.ENOENT}:
                self._lookups_work = False  # this kernel refuses exact requests: dump
            self.close()
            return None
        except OSError:
            self.close()
            return None
        if fresh is None:
            self.close()  # answers to the rest of the batch may be waiting in it
        return fresh

    def _dump(self, ports: frozenset[int], opens: int | None,
              deadline: Deadline) -> list[KernelSocket]:
        self._known = None
        dumped_at = self._clock()
        try:
            rows = self._dump_tcp(ports, deadline, channel=self._open())
        except Exception:
            self.close()  # it may hold part of a dump
            raise
        self.dumps += 1
        self._known, self._ports = rows, ports
        self._opens_at_dump, self._dumped_at = opens, dumped_at
        return rows

    def _open(self) -> socket.socket:
        return self._channel.get()

    def close(self) -> None:
        self._channel.discard()

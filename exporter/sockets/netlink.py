"""TCP sockets from the kernel's sock_diag netlink interface (what `ss` uses), stdlib only.

The remote port is filtered inside the kernel with inet_diag bytecode, so a host with
many unrelated connections costs little, and tcp_info comes along to give each socket's
silence to the millisecond. Layouts follow include/uapi/linux/{netlink,sock_diag,
inet_diag,tcp}.h; netlink speaks host byte order except where a field is `__be`.
"""

from __future__ import annotations

import contextlib
import errno as errno_codes
import os
import socket
import struct
from collections.abc import Callable, Collection
from typing import Any, NamedTuple

from exporter.addresses import normalise_ip
from exporter.deadline import Deadline
from exporter.model import Endpoint, TcpState
from exporter.sockets.kernel import KernelSocket

NETLINK_SOCK_DIAG = 4
SOCK_DIAG_BY_FAMILY = 20
# The older inet_diag request (struct inet_diag_req): the kernel answers it for every
# address family at once (AF_UNSPEC), so it walks its TCP hash table once where the
# per-family requests walk it twice. That walk is most of a small dump's cost (about 1 ms
# per walk on these machines whatever the filter keeps); the answers carry this type.
TCPDIAG_GETSOCK = 18

NLMSG_NOOP = 1
NLMSG_ERROR = 2
NLMSG_DONE = 3
NLMSG_OVERRUN = 4
NLM_F_REQUEST = 0x1
NLM_F_DUMP = 0x300  # NLM_F_ROOT | NLM_F_MATCH

INET_DIAG_REQ_BYTECODE = 1
INET_DIAG_INFO = 2
INET_DIAG_BC_JMP = 1
INET_DIAG_BC_D_EQ = 12

# Timer codes of inet_diag_msg.idiag_timer: 1 retransmit, 2 keepalive, 4 zero window.
TIMER_KEEPALIVE = 2

# TIME_WAIT rows carry no owner and no tcp_info; LISTEN rows have no remote end.
STATES_MASK = sum(1 << state for state in TcpState) & ~(
    (1 << TcpState.LISTEN) | (1 << TcpState.TIME_WAIT)
)

NLMSGHDR = struct.Struct("=IHHII")  # len, type, flags, seq, pid
_RTATTR = struct.Struct("=HH")  # len, type
_BC_OP = struct.Struct("=BBH")  # code, yes, no
# inet_diag_req_v2: family, protocol, ext, pad, states, then an all-zero sockid (48 bytes):
# a dump ignores the sockid and matches on the bytecode instead.
_REQ_V2 = struct.Struct("=BBBxI48x")
# inet_diag_req: family (unused: every family), src_len, dst_len, ext, the sockid (48 bytes,
# ignored by a dump), states, dbs (unused).
_REQ_COMPAT = struct.Struct("=3xB48xII")
# inet_diag_msg without its big-endian ports: family, state, timer, retrans, (ports),
# src, dst, (ifindex, cookie, expires, rqueue, wqueue), uid, inode.
_DIAG_MSG = struct.Struct("=BBBB4x16s16s24xII")
# idiag_expires: milliseconds until the socket's pending timer fires.
DIAG_EXPIRES = 52
_U32 = struct.Struct("=I")
_DIAG_MSG_SIZE = _DIAG_MSG.size
_FAMILIES = (socket.AF_INET, socket.AF_INET6)
_PORTS = struct.Struct(">HH")
# What identifies a socket's unchanging fields: family, state, timer, retransmits, ports and
# addresses (bytes 0-40), uid and inode (64-72); not the timer's expiry or the queues.
_STATIC_KEY = "40s24x8s"
_STATIC = struct.Struct("=BBBB4s16s16s")  # the first part of the key, split
_OWNER = struct.Struct("=II")  # the second: uid, inode
ERRNO = struct.Struct("=i")

# struct tcp_info: 8 leading u8, then u32 tcpi_rto, ato, snd_mss, rcv_mss, unacked, sacked,
# lost, retrans, fackets (9 u32, offsets 8..40), then the times in milliseconds.
TCPI_LAST_DATA_SENT = 44
TCPI_LAST_DATA_RECV = 52
TCPI_LAST_ACK_RECV = 56  # reset by every segment received, keepalive answers included
_TCPI_NEEDED = TCPI_LAST_ACK_RECV + 4
# last_data_sent, (last_ack_sent), last_data_recv, last_ack_recv
_TCPI_TIMES = struct.Struct("=I4xII")
_STATES = {int(state): state for state in TcpState}

_ANSWERS = (SOCK_DIAG_BY_FAMILY, TCPDIAG_GETSOCK)  # a socket's message, per request type

RECV_BUFFER = 64 * 1024  # the kernel fills at most 32 KiB per dump datagram

# Errors that will not go away by asking again: the interface is missing or forbidden
# here (no inet_diag for the family gives ENOENT), or this kernel rejects the request
# format (EINVAL: an old kernel without INET_DIAG_BC_D_EQ rejects every later dump too).
UNAVAILABLE_ERRNOS = frozenset(
    {
        errno_codes.EPERM,
        errno_codes.EACCES,
        errno_codes.EPROTONOSUPPORT,
        errno_codes.EAFNOSUPPORT,
        errno_codes.ENOENT,
        errno_codes.EOPNOTSUPP,
        errno_codes.EINVAL,
    }
)


class NetlinkError(OSError):
    """The sock_diag exchange failed: the kernel reported an error, it timed out, or
    its answer did not parse (see MalformedMessage)."""


class NetlinkUnavailable(NetlinkError):
    """sock_diag cannot be used on this host or with these privileges; use /proc."""


class MalformedMessage(NetlinkError):
    """Bytes that are not a well-formed sock_diag answer."""

    def __init__(self, detail: str) -> None:
        super().__init__(errno_codes.EBADMSG, detail)


def _kernel_error(code: int) -> NetlinkError:
    # os.strerror rejects numbers beyond a C int, which damaged data can carry.
    text = os.strerror(code) if code < 2**31 else f"error {code}"
    return NetlinkError(code, text)


def _align4(length: int) -> int:
    return (length + 3) & ~3


def build_bytecode(remote_ports: Collection[int]) -> bytes:
    """inet_diag bytecode that accepts a socket whose remote port is any of the ports.

    The kernel runs the program until it jumps exactly to its end (accept) or past it
    (reject); its audit only allows jumps to instruction boundaries reachable through
    "yes" edges. So each port but the last is `D_EQ port` whose "yes" falls into a
    `JMP` to the end and whose "no" skips that JMP to the next test; the last test falls
    off the end on "yes" and jumps 4 bytes beyond the end on "no".
    """
    ports = sorted(set(remote_ports))
    if not ports:
        raise ValueError("at least one remote port is needed")
    for port in ports:
        if not 0 < port < 65536:
            raise ValueError(f"not a TCP port: {port}")
    test, jump = 8, 4  # D_EQ plus its operand op; JMP
    total = (len(ports) - 1) * (test + jump) + test
    program = bytearray()
    for index, port in enumerate(ports):
        remaining = total - len(program)
        if index == len(ports) - 1:
            program += _BC_OP.pack(INET_DIAG_BC_D_EQ, test, remaining + 4)
            program += _BC_OP.pack(0, 0, port)
        else:
            program += _BC_OP.pack(INET_DIAG_BC_D_EQ, test, test + jump)
            program += _BC_OP.pack(0, 0, port)
            program += _BC_OP.pack(INET_DIAG_BC_JMP, jump, remaining - test)
    return bytes(program)


def build_request(family: int, states_mask: int, bytecode: bytes, seq: int) -> bytes:
    """One SOCK_DIAG_BY_FAMILY dump request for TCP sockets of `family`, with tcp_info."""
    body = _REQ_V2.pack(family, socket.IPPROTO_TCP, 1 << (INET_DIAG_INFO - 1), states_mask)
    return _request(SOCK_DIAG_BY_FAMILY, body, bytecode, seq)


def build_all_families_request(states_mask: int, bytecode: bytes, seq: int) -> bytes:
    """One TCPDIAG_GETSOCK dump request for TCP sockets of every family, with tcp_info."""
    body = _REQ_COMPAT.pack(1 << (INET_DIAG_INFO - 1), states_mask, 0)
    return _request(TCPDIAG_GETSOCK, body, bytecode, seq)


def _request(kind: int, body: bytes, bytecode: bytes, seq: int) -> bytes:
    attribute_length = _RTATTR.size + len(bytecode)
    attribute = _RTATTR.pack(attribute_length, INET_DIAG_REQ_BYTECODE) + bytecode
    attribute += bytes(_align4(attribute_length) - attribute_length)
    payload = body + attribute
    header = NLMSGHDR.pack(
        NLMSGHDR.size + len(payload), kind, NLM_F_REQUEST | NLM_F_DUMP, seq, 0
    )
    return header + payload


def _idle_seconds(data: memoryview, start: int, length: int) -> float | None:
    """Silence from the tcp_info at data[start:start+length]; None if too short to say."""
    if length < _TCPI_NEEDED:
        return None
    sent, received, _ack = _TCPI_TIMES.unpack_from(data, start + TCPI_LAST_DATA_SENT)
    return float(min(sent, received)) / 1000.0


def probe_at(sent_ms: int, ack_ms: int, expires_ms: int) -> float:
    """The path's silence, in seconds, when an armed keepalive timer sends its next probe:
    the time since the last segment either way (data sent, anything received: answered
    probes count, as they do for a NAT), plus the time until the timer fires. A timer that
    fires early (data flowed since it was armed) re-arms itself: then this is a lower
    bound, never a false alarm."""
    return (min(sent_ms, ack_ms) + expires_ms) / 1000.0


class _Layout(NamedTuple):
    """The attributes of one message size: an unpack of every (length, type) header, what
    it gave, where the tcp_info times are (offset from the message body; -1: none), and
    where each header is (offset from the message body)."""

    headers: Callable[[memoryview, int], tuple[Any, ...]]
    expected: tuple[int, ...]
    info: int
    at: tuple[int, ...]


class _Bulk(NamedTuple):
    """A datagram of messages that all have one size and one attribute layout, unpacked
    by one struct per message in C (struct.iter_unpack): nlmsg_len and nlmsg_type, the
    static key's two parts, every attribute header, then the two tcp_info times (if any).
    """

    records: Callable[[memoryview], Any]
    length: int
    expected: tuple[int, ...]
    times: bool


def _bulk_shape(length: int, layout: _Layout) -> _Bulk:
    body = NLMSGHDR.size
    fields = [(body + at, "HH") for at in layout.at]
    if layout.info >= 0:
        fields.append((body + layout.info, "I4xII"))
    fields.sort()
    fmt, position = "=IH10x" + _STATIC_KEY, body + _DIAG_MSG_SIZE
    for offset, code in fields:
        fmt += f"{offset - position}x{code}"
        position = offset + struct.calcsize("=" + code)
    fmt += f"{length - position}x"
    return _Bulk(struct.Struct(fmt).iter_unpack, length, layout.expected, layout.info >= 0)


# A socket's fields but its idle time, as the bulk path builds them: local, remote, state,
# inode, uid, keepalive; None for a socket that is skipped (another family or state).
_Static = tuple[Endpoint, Endpoint, TcpState, int, int, bool] | None
# A bulk record up to its last attribute header: length, type, the two static parts, the
# attribute headers.
_StaticKey = tuple[Any, ...]


class DiagParser:
    """Parses one dump, or the answers to exact lookups (exporter.sockets.lookup, one
    ``diag_message`` each). Remembers address texts and remote endpoints, because a dump
    repeats a few of them (this host's addresses, the database's) many times, and, for
    the bulk path, each socket's unchanging fields from the last dump (``known``)."""

    def __init__(self, known: dict[_StaticKey, _Static] | None = None) -> None:
        # Shared by the dumps of one reader; dump_tcp bounds its size.
        self.known: dict[_StaticKey, _Static] = known if known is not None else {}
        self._bulks: dict[int, _Bulk] = {}
        self._ips: dict[tuple[int, bytes], str] = {}
        self._remotes: dict[tuple[int, bytes, int], Endpoint] = {}
        # Attribute layouts seen, by message size: every socket of a dump carries the same
        # attributes, so after one walk the rest are checked with one unpack each.
        self._layouts: dict[int, _Layout] = {}

    def _ip(self, family: int, raw: bytes) -> str:
        key = (family, raw)
        text = self._ips.get(key)
        if text is None:
            packed = raw[:4] if family == socket.AF_INET else raw
            text = normalise_ip(socket.inet_ntop(family, packed))
            self._ips[key] = text
        return text

    def _remote(self, family: int, raw: bytes, port: int) -> Endpoint:
        key = (family, raw, port)
        remote = self._remotes.get(key)
        if remote is None:
            remote = self._remotes[key] = Endpoint(self._ip(family, raw), port)
        return remote

    def _walk(self, data: memoryview, start: int, end: int) -> float | None:
        """The attributes after the inet_diag_msg at data[start:end], one by one: the
        idle seconds from INET_DIAG_INFO (the last one wins), and the layout remembered
        (whose ``info`` then says where the tcp_info times are)."""
        idle: float | None = None
        offset = start + _DIAG_MSG_SIZE
        headers: list[tuple[int, int, int]] = []  # offset from start, length, type
        info = -1  # offset from start of the tcp_info times, or -1: no usable tcp_info
        while offset + _RTATTR.size <= end:
            length, kind = _RTATTR.unpack_from(data, offset)
            if length < _RTATTR.size or offset + length > end:
                raise MalformedMessage(f"attribute of length {length} at {offset}")
            headers.append((offset - start, length, kind))
            if kind == INET_DIAG_INFO:
                idle = _idle_seconds(data, offset + _RTATTR.size, length - _RTATTR.size)
                info = -1 if idle is None else offset - start + _RTATTR.size + TCPI_LAST_DATA_SENT
            offset += _align4(length)
        layout = "="
        position = _DIAG_MSG_SIZE
        for at, _length, _kind in headers:
            layout += f"{at - position}xHH"
            position = at + _RTATTR.size
        self._layouts[end - start] = _Layout(
            struct.Struct(layout).unpack_from,
            tuple(value for _at, length, kind in headers for value in (length, kind)),
            info,
            tuple(at for at, _length, _kind in headers),
        )
        return idle

    def bulk(self, view: memoryview) -> list[KernelSocket] | None:
        """A datagram of same-size, same-layout socket messages (every datagram of a dump
        but its end, normally) in one C unpack per message; None when this datagram is
        not one, for the message-by-message parse to handle."""
        size = len(view)
        if size < NLMSGHDR.size:
            return None
        length, kind, _flags, _seq, _pid = NLMSGHDR.unpack_from(view, 0)
        if kind not in _ANSWERS or length % 4 or length < NLMSGHDR.size + (
            _DIAG_MSG_SIZE
        ) or size % length:
            return None
        shape = self._bulks.get(length)
        if shape is None:
            layout = self._layouts.get(length - NLMSGHDR.size)
            if layout is None:
                return None  # learnt from this datagram, used from the next one
            shape = self._bulks[length] = _bulk_shape(length, layout)
        headers_end = 4 + len(shape.expected)
        times = shape.times
        known, unknown = self.known, _UNKNOWN
        lookup = known.get
        new = _new_tuple
        sockets: list[KernelSocket] = []
        append = sockets.append
        # Where the current message starts, for idiag_expires (outside the unpacked record:
        # it changes at every dump, and the record's leading part is the cache key).
        offset, expires_at, unpack_u32 = 0, NLMSGHDR.size + DIAG_EXPIRES, _U32.unpack_from
        for record in shape.records(view):
            start, offset = offset, offset + length
            # The key holds every byte the socket's fields come from, and the message's
            # length, type and attribute headers too: a socket found under it was checked.
            key = record[:headers_end]
            static = lookup(key, unknown)
            if static is unknown:
                if (record[0] != length or record[1] != kind
                        or record[4:headers_end] != shape.expected):
                    return None
                static = known[key] = self._static(record[2], record[3])
            if static is None:
                continue
            local, remote, tcp_state, inode, uid, keepalive = static
            probe: float | None = None
            if times:
                sent, received, ack = record[-3], record[-2], record[-1]
                idle: float | None = (sent if sent < received else received) / 1000.0
                if keepalive:
                    expires = unpack_u32(view, start + expires_at)[0]
                    probe = (min(sent, ack) + expires) / 1000.0
            else:
                idle = None
            append(new(KernelSocket, (local, remote, tcp_state, inode, uid, idle, keepalive,
                                      probe)))
        return sockets

    def _static(self, head: bytes, owner: bytes) -> _Static:
        family, state, timer, _retrans, ports, src, dst = _STATIC.unpack(head)
        uid, inode = _OWNER.unpack(owner)
        sport, dport = _PORTS.unpack(ports)
        tcp_state = _STATES.get(state)
        # Another family or a state this code does not know (a future kernel's) is skipped.
        if tcp_state is None or family not in _FAMILIES:
            return None
        local_ip = self._ips.get((family, src))
        if local_ip is None:
            local_ip = self._ip(family, src)
        remote = self._remotes.get((family, dst, dport))
        if remote is None:
            remote = self._remote(family, dst, dport)
        return (Endpoint(local_ip, sport), remote, tcp_state, inode, uid, timer == TIMER_KEEPALIVE)

    def diag_message(self, data: memoryview, start: int, end: int) -> KernelSocket | None:
        """The inet_diag_msg and its attributes at data[start:end].

        Runs once per socket (10,000 times a collection at 10,000 sessions), so constants
        are bound to locals and the row is built positionally."""
        if end - start < _DIAG_MSG_SIZE:
            raise MalformedMessage(f"inet_diag_msg of {end - start} bytes")
        family, state, timer, _retrans, src, dst, uid, inode = _DIAG_MSG.unpack_from(data, start)
        sport, dport = _PORTS.unpack_from(data, start + 4)
        idle: float | None
        layout = self._layouts.get(end - start)
        if layout is None or layout.headers(data, start + _DIAG_MSG_SIZE) != layout.expected:
            self._walk(data, start, end)
            layout = self._layouts[end - start]
        # The same attribute headers at the same places as a message already walked: the
        # walk would find what it found there.
        probe: float | None = None
        if layout.info < 0:
            idle = None
        else:
            sent, received, ack = _TCPI_TIMES.unpack_from(data, start + layout.info)
            idle = float(min(sent, received)) / 1000.0
            if timer == TIMER_KEEPALIVE:
                probe = probe_at(sent, ack, _U32.unpack_from(data, start + DIAG_EXPIRES)[0])
        tcp_state = _STATES.get(state)
        # Another family or a state this code does not know (a future kernel's) is skipped.
        if tcp_state is None or family not in _FAMILIES:
            return None
        ips = self._ips
        local_ip = ips.get((family, src))
        if local_ip is None:
            local_ip = self._ip(family, src)
        remote = self._remotes.get((family, dst, dport))
        if remote is None:
            remote = self._remote(family, dst, dport)
        # local, remote, state, inode, uid, idle_seconds, keepalive, keepalive_probe_at
        return KernelSocket(
            Endpoint(local_ip, sport), remote, tcp_state, inode, uid, idle,
            timer == TIMER_KEEPALIVE, probe,
        )


def parse_messages(
    data: bytes | bytearray | memoryview, parser: DiagParser | None = None
) -> tuple[list[KernelSocket], bool]:
    """Parse one datagram of a sock_diag dump: the sockets in it, and whether NLMSG_DONE
    ended the dump. Raises NetlinkError for an error the kernel reported and
    MalformedMessage (a NetlinkError) for bytes that do not parse; nothing else.
    ``parser`` carries what one dump's datagrams share."""
    view = memoryview(data).cast("B")
    parser = parser if parser is not None else DiagParser()
    bulk = parser.bulk(view)
    if bulk is not None:
        return bulk, False
    return _parse_one_by_one(view, parser)


def _parse_one_by_one(view: memoryview, parser: DiagParser) -> tuple[list[KernelSocket], bool]:
    sockets: list[KernelSocket] = []
    offset = 0
    while offset < len(view):
        if len(view) - offset < NLMSGHDR.size:
            raise MalformedMessage(f"{len(view) - offset} trailing bytes")
        length, kind, _flags, _seq, _pid = NLMSGHDR.unpack_from(view, offset)
        if length < NLMSGHDR.size or offset + length > len(view):
            raise MalformedMessage(f"message of length {length} at {offset}")
        start, end = offset + NLMSGHDR.size, offset + length
        if kind in _ANSWERS:
            row = parser.diag_message(view, start, end)
            if row is not None:
                sockets.append(row)
        elif kind == NLMSG_DONE:
            # A dump that failed part-way reports its error in NLMSG_DONE's payload.
            if end - start >= ERRNO.size:
                code = ERRNO.unpack_from(view, start)[0]
                if code < 0:
                    raise _kernel_error(-code)
            return sockets, True
        elif kind == NLMSG_ERROR:
            if end - start < ERRNO.size:
                raise MalformedMessage("NLMSG_ERROR without an error code")
            code = ERRNO.unpack_from(view, start)[0]
            if code != 0:  # 0 is an acknowledgement
                raise _kernel_error(abs(code))
        elif kind == NLMSG_OVERRUN:
            raise NetlinkError(errno_codes.ENOBUFS, "netlink overrun: data was lost")
        offset += _align4(length)
    return sockets, False


_UNKNOWN: _Static = (Endpoint("", 0), Endpoint("", 0), TcpState.CLOSE, -1, -1, False)
_new_tuple = tuple.__new__  # a named tuple without its Python-level __new__


def _classify(error: OSError, what: str) -> NetlinkError:
    code = error.errno or errno_codes.EIO
    kind = NetlinkUnavailable if code in UNAVAILABLE_ERRNOS else NetlinkError
    return kind(code, f"{what}: {os.strerror(code)}")


def receive(channel: socket.socket, buffer: bytearray, deadline: Deadline, what: str) -> int:
    """One datagram of the kernel's answer into ``buffer``, by ``deadline``: its size.
    Raises NetlinkError (ETIMEDOUT: "sock_diag ``what`` timed out"; EMSGSIZE when the
    datagram did not fit)."""
    remaining = deadline.remaining()
    if remaining <= 0:
        raise NetlinkError(errno_codes.ETIMEDOUT, f"sock_diag {what} timed out")
    channel.settimeout(remaining)
    try:
        size, _ancillary, flags, _address = channel.recvmsg_into([buffer])
    except TimeoutError as error:
        raise NetlinkError(errno_codes.ETIMEDOUT, f"sock_diag {what} timed out") from error
    if flags & socket.MSG_TRUNC:
        raise NetlinkError(errno_codes.EMSGSIZE, "sock_diag datagram truncated")
    return size


def _dump(
    channel: socket.socket, request: bytes, deadline: Deadline, parser: DiagParser
) -> list[KernelSocket]:
    channel.send(request)
    buffer = bytearray(RECV_BUFFER)
    sockets: list[KernelSocket] = []
    while True:
        size = receive(channel, buffer, deadline, "dump")
        rows, done = parse_messages(memoryview(buffer)[:size], parser)
        sockets.extend(rows)
        if done:
            return sockets


def open_channel() -> socket.socket:
    """A NETLINK_SOCK_DIAG socket: it dumps the network namespace of the thread that opens
    it, wherever that thread goes afterwards (exporter.node opens one per namespace)."""
    try:
        return socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_SOCK_DIAG)
    except OSError as error:
        raise NetlinkUnavailable(
            error.errno or errno_codes.EPROTONOSUPPORT,
            f"cannot open a NETLINK_SOCK_DIAG socket: {error.strerror}",
        ) from error


def dump_tcp(
    remote_ports: Collection[int], deadline: Deadline, *, channel: socket.socket | None = None
) -> list[KernelSocket]:
    """Every IPv4 and IPv6 TCP socket (but LISTEN and TIME_WAIT) whose remote port is one
    of `remote_ports`. IPv4-mapped IPv6 sockets (family AF_INET6) come normalised.

    One dump of both families (TCPDIAG_GETSOCK), or, on a kernel that refuses it, one dump
    per family (SOCK_DIAG_BY_FAMILY).

    ``channel``: an open socket from open_channel() to dump through, left open (after an
    error it may hold a dump's remains: close it); else one is opened and closed here.

    Raises NetlinkUnavailable when sock_diag cannot be used here, NetlinkError when one
    dump fails (including the deadline passing: the call never takes much beyond it)."""
    bytecode = build_bytecode(remote_ports)
    given = channel
    if channel is None:
        channel = open_channel()
    global _known, _one_walk
    parser = DiagParser(_known)
    with channel if given is None else contextlib.nullcontext(channel):
        sockets: list[KernelSocket] = []
        if _one_walk:
            try:
                sockets = _dump(channel, build_all_families_request(STATES_MASK, bytecode, 1),
                                deadline, parser)
            except NetlinkError as error:
                if type(error) is not NetlinkError or error.errno not in UNAVAILABLE_ERRNOS:
                    raise
                # This kernel (or sandbox) does not answer the older request: ask per
                # family from now on. A refusal of the request itself shows there too.
                _one_walk = False
            except OSError as error:  # from send/recv themselves
                raise _classify(error, "sock_diag") from error
        if not _one_walk:
            for seq, family in enumerate((socket.AF_INET, socket.AF_INET6), start=2):
                request = build_request(family, STATES_MASK, bytecode, seq)
                try:
                    sockets.extend(_dump(channel, request, deadline, parser))
                except NetlinkError as error:
                    if type(error) is NetlinkError and error.errno in UNAVAILABLE_ERRNOS:
                        raise NetlinkUnavailable(error.errno, str(error.strerror)) from error
                    raise
                except OSError as error:  # from send/recv themselves
                    raise _classify(error, "sock_diag") from error
        # Remembered sockets are forgotten all at once when they outnumber those of this
        # dump twice over: memory follows the sockets without a store per socket per dump.
        # The values are immutable and keyed by every byte they come from, so a dump
        # running beside another (not the engine's way) can never get a wrong row.
        _known = parser.known if len(parser.known) <= 2 * len(sockets) + 1024 else {}
        return sockets


_known: dict[_StaticKey, _Static] = {}
# Whether the kernel answers the all-families request (it did until it refused once).
_one_walk = True

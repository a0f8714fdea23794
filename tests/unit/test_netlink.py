"""sock_diag: the bytecode, the request, the parser, and dumps from the real kernel."""

from __future__ import annotations

import ctypes
import errno
import ipaddress
import os
import socket
import struct
import subprocess
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from exporter.addresses import endpoint
from exporter.model import Endpoint, TcpState
from exporter.sockets import netlink
from exporter.sockets.kernel import KernelSocket
from exporter.sockets.procnet import read_proc_net_tcp
from tests.support.builders import soon
from tests.support.loopback import inode_of, loopback

# --- an independent message builder, from the C declarations via ctypes -------------


class NlMsgHdr(ctypes.Structure):
    _fields_ = [
        ("nlmsg_len", ctypes.c_uint32),
        ("nlmsg_type", ctypes.c_uint16),
        ("nlmsg_flags", ctypes.c_uint16),
        ("nlmsg_seq", ctypes.c_uint32),
        ("nlmsg_pid", ctypes.c_uint32),
    ]


class SockId(ctypes.Structure):
    _fields_ = [
        ("idiag_sport", ctypes.c_uint8 * 2),  # __be16
        ("idiag_dport", ctypes.c_uint8 * 2),  # __be16
        ("idiag_src", ctypes.c_uint8 * 16),
        ("idiag_dst", ctypes.c_uint8 * 16),
        ("idiag_if", ctypes.c_uint32),
        ("idiag_cookie", ctypes.c_uint32 * 2),
    ]


class DiagMsg(ctypes.Structure):
    _fields_ = [
        ("idiag_family", ctypes.c_uint8),
        ("idiag_state", ctypes.c_uint8),
        ("idiag_timer", ctypes.c_uint8),
        ("idiag_retrans", ctypes.c_uint8),
        ("id", SockId),
        ("idiag_expires", ctypes.c_uint32),
        ("idiag_rqueue", ctypes.c_uint32),
        ("idiag_wqueue", ctypes.c_uint32),
        ("idiag_uid", ctypes.c_uint32),
        ("idiag_inode", ctypes.c_uint32),
    ]


class RtAttr(ctypes.Structure):
    _fields_ = [("rta_len", ctypes.c_uint16), ("rta_type", ctypes.c_uint16)]


_U32_NAMES = [
    "rto",
    "ato",
    "snd_mss",
    "rcv_mss",
    "unacked",
    "sacked",
    "lost",
    "retrans",
    "fackets",
    "last_data_sent",
    "last_ack_sent",
    "last_data_recv",
    "last_ack_recv",
    "pmtu",
    "rcv_ssthresh",
    "rtt",
    "rttvar",
    "snd_ssthresh",
    "snd_cwnd",
    "advmss",
    "reordering",
]


class TcpInfoHead(ctypes.Structure):
    """The leading part of struct tcp_info as linux/tcp.h declares it."""

    _fields_ = [(f"u8_{index}", ctypes.c_uint8) for index in range(8)] + [
        (f"tcpi_{name}", ctypes.c_uint32) for name in _U32_NAMES
    ]


def test_builder_layouts_match_the_kernel_headers() -> None:
    assert ctypes.sizeof(NlMsgHdr) == 16
    assert ctypes.sizeof(SockId) == 48
    assert ctypes.sizeof(DiagMsg) == 72
    assert TcpInfoHead.tcpi_last_data_sent.offset == netlink.TCPI_LAST_DATA_SENT == 44
    assert TcpInfoHead.tcpi_last_data_recv.offset == netlink.TCPI_LAST_DATA_RECV == 52


def pad(data: bytes) -> bytes:
    return data + bytes(-len(data) % 4)


def nl_message(kind: int, payload: bytes, seq: int = 1) -> bytes:
    header = NlMsgHdr(16 + len(payload), kind, 0x2, seq, 4242)  # NLM_F_MULTI
    return pad(bytes(header) + payload)


def rt_attribute(kind: int, payload: bytes) -> bytes:
    return pad(bytes(RtAttr(4 + len(payload), kind)) + payload)


def done_message(code: int = 0) -> bytes:
    return nl_message(netlink.NLMSG_DONE, code.to_bytes(4, "little", signed=True))


def error_message(code: int) -> bytes:
    return nl_message(netlink.NLMSG_ERROR, code.to_bytes(4, "little", signed=True) + bytes(16))


IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def diag_payload(
    family: int,
    state: int,
    timer: int,
    src: bytes,
    dst: bytes,
    sport: int,
    dport: int,
    uid: int,
    inode: int,
    attributes: bytes,
    expires: int = 1000,
) -> bytes:
    message = DiagMsg()
    message.idiag_family, message.idiag_state, message.idiag_timer = family, state, timer
    message.idiag_retrans = 3
    message.id.idiag_sport[:] = list(sport.to_bytes(2, "big"))
    message.id.idiag_dport[:] = list(dport.to_bytes(2, "big"))
    message.id.idiag_src[:] = list(src)
    message.id.idiag_dst[:] = list(dst)
    message.id.idiag_if = 7
    message.id.idiag_cookie[:] = [0xDEADBEEF, 0xFEEDFACE]
    message.idiag_expires, message.idiag_rqueue, message.idiag_wqueue = expires, 5, 6
    message.idiag_uid, message.idiag_inode = uid, inode
    return bytes(message) + attributes


def tcp_info(last_data_sent: int, last_data_recv: int, tail: bytes,
             last_ack_recv: int = 1) -> bytes:
    head = TcpInfoHead()
    head.tcpi_last_data_sent = last_data_sent
    head.tcpi_last_data_recv = last_data_recv
    # Keepalive probes reset it: it must not count as data silence (only as the path's).
    head.tcpi_last_ack_recv = last_ack_recv
    head.tcpi_last_ack_sent = 2
    return bytes(head) + tail


# --- strategies ------------------------------------------------------------------------

u32 = st.integers(0, 2**32 - 1)
ports = st.integers(0, 65535)
v4 = st.ip_addresses(v=4)
v6 = st.one_of(
    st.ip_addresses(v=6),
    v4.map(lambda address: ipaddress.IPv6Address(f"::ffff:{address}")),
)
other_attribute = st.tuples(st.sampled_from([1, 3, 4, 5, 8, 14]), st.binary(max_size=24))


@st.composite
def diag_rows(draw: st.DrawFn) -> tuple[bytes, KernelSocket]:
    family = draw(st.sampled_from([socket.AF_INET, socket.AF_INET6]))
    addresses = v4 if family == socket.AF_INET else v6
    src, dst = draw(addresses), draw(addresses)

    def raw(address: IpAddress) -> bytes:
        # An IPv4 row only uses the first 4 of 16 bytes: the rest must not matter.
        spare = 16 - len(address.packed)
        return address.packed + draw(st.binary(min_size=spare, max_size=spare))

    sport, dport = draw(ports), draw(ports)
    state = draw(st.sampled_from(list(TcpState)))
    timer = draw(st.integers(0, 4))
    uid, inode = draw(u32), draw(u32)
    info_kind = draw(st.sampled_from(["none", "full", "short"]))
    attributes = b"".join(rt_attribute(*item) for item in draw(st.lists(other_attribute)))
    idle: float | None = None
    probe: float | None = None
    expires = draw(u32)
    if info_kind == "full":
        sent, received, ack = draw(u32), draw(u32), draw(u32)
        tail = draw(st.binary(max_size=200))
        attributes += rt_attribute(netlink.INET_DIAG_INFO,
                                   tcp_info(sent, received, tail, last_ack_recv=ack))
        idle = min(sent, received) / 1000
        if timer == 2:  # keepalive armed: the path's silence when its probe goes out
            probe = (min(sent, ack) + expires) / 1000
    elif info_kind == "short":
        length = draw(st.integers(0, netlink.TCPI_LAST_ACK_RECV + 3))
        info = tcp_info(1, 1, b"")[:length]
        attributes += rt_attribute(netlink.INET_DIAG_INFO, info)
    attributes += b"".join(rt_attribute(*item) for item in draw(st.lists(other_attribute)))
    payload = diag_payload(
        family, state, timer, raw(src), raw(dst), sport, dport, uid, inode, attributes,
        expires,
    )
    expected = KernelSocket(
        local=endpoint(str(src), sport),
        remote=endpoint(str(dst), dport),
        state=TcpState(state),
        inode=inode,
        uid=uid,
        idle_seconds=idle,
        keepalive=timer == 2,
        keepalive_probe_at=probe,
    )
    return nl_message(netlink.SOCK_DIAG_BY_FAMILY, payload), expected


@given(
    rows=st.lists(diag_rows(), max_size=8),
    done=st.booleans(),
    noops=st.booleans(),
    after_done=st.binary(max_size=40),
)
def test_parse_round_trips_built_messages(
    rows: list[tuple[bytes, KernelSocket]], done: bool, noops: bool, after_done: bytes
) -> None:
    filler = nl_message(netlink.NLMSG_NOOP, b"") if noops else b""
    data = filler.join(message for message, _ in rows)
    if done:
        data += done_message() + after_done  # nothing after NLMSG_DONE is read
    parsed, finished = netlink.parse_messages(data)
    assert parsed == [expected for _, expected in rows]
    assert finished is done


def test_unknown_families_and_states_are_skipped() -> None:
    good = diag_payload(2, 1, 0, bytes(16), bytes(16), 1, 3306, 0, 9, b"")
    unix = diag_payload(1, 1, 0, bytes(16), bytes(16), 1, 3306, 0, 10, b"")
    future = diag_payload(2, 99, 0, bytes(16), bytes(16), 1, 3306, 0, 11, b"")
    data = b"".join(nl_message(20, payload) for payload in (unix, good, future))
    parsed, done = netlink.parse_messages(data)
    assert [row.inode for row in parsed] == [9]
    assert parsed[0].remote == Endpoint("0.0.0.0", 3306)
    assert not done


def test_kernel_errors_raise_with_their_errno() -> None:
    with pytest.raises(netlink.NetlinkError) as raised:
        netlink.parse_messages(error_message(-errno.EPERM))
    assert raised.value.errno == errno.EPERM
    # A dump that fails part-way says so in NLMSG_DONE.
    with pytest.raises(netlink.NetlinkError) as raised:
        netlink.parse_messages(done_message(-errno.EINTR))
    assert raised.value.errno == errno.EINTR
    # Damaged data can carry any int, even one os.strerror cannot take.
    for code in (-(2**31), 2**31 - 1):
        with pytest.raises(netlink.NetlinkError) as raised:
            netlink.parse_messages(error_message(code))
        assert raised.value.errno == abs(code)
    with pytest.raises(netlink.NetlinkError):
        netlink.parse_messages(done_message(-(2**31)))
    # An acknowledgement is not an error.
    assert netlink.parse_messages(error_message(0) + done_message()) == ([], True)


def parse_or_fail_cleanly(data: bytes) -> None:
    """Any outcome but a NetlinkError carrying an errno, or well-typed rows, fails."""
    try:
        rows, done = netlink.parse_messages(data)
    except netlink.NetlinkError as error:
        assert isinstance(error.errno, int) and error.errno > 0
        return
    assert isinstance(done, bool)
    assert all(isinstance(row, KernelSocket) for row in rows)


@given(st.binary(max_size=600))
def test_garbage_raises_only_netlink_errors(data: bytes) -> None:
    parse_or_fail_cleanly(data)


@given(
    rows=st.lists(diag_rows(), min_size=1, max_size=3),
    cut=st.integers(0, 2000),
    flips=st.lists(st.tuples(st.integers(0, 2000), st.integers(0, 255)), max_size=6),
)
def test_damaged_messages_raise_only_netlink_errors(
    rows: list[tuple[bytes, KernelSocket]], cut: int, flips: list[tuple[int, int]]
) -> None:
    data = bytearray(b"".join(message for message, _ in rows) + done_message())
    for position, value in flips:
        data[position % len(data)] = value
    parse_or_fail_cleanly(bytes(data[: cut % (len(data) + 1)]))


def test_truncated_message_is_malformed() -> None:
    message = nl_message(20, diag_payload(2, 1, 0, bytes(16), bytes(16), 1, 2, 0, 3, b""))
    with pytest.raises(netlink.MalformedMessage):
        netlink.parse_messages(message[:-4])
    with pytest.raises(netlink.MalformedMessage):
        netlink.parse_messages(message + b"\x01\x02")


# --- bytecode: checked by a model of the kernel's audit and interpreter ----------------
# (net/ipv4/inet_diag.c: inet_diag_bc_audit, valid_cc, inet_diag_bc_run)

_PORT_OPS = {2, 3, 4, 5, 11, 12}  # S_GE S_LE D_GE D_LE S_EQ D_EQ


def _op(program: bytes, position: int) -> tuple[int, int, int]:
    code, yes, no = struct.unpack_from("=BBH", program, position)
    return code, yes, no


def kernel_accepts_program(program: bytes) -> bool:
    def reachable(target: int) -> bool:
        remaining, position = len(program), 0
        while remaining >= 0:
            if target > remaining:
                return False
            if target == remaining:
                return True
            yes = program[position + 1]
            if yes < 4 or yes % 4:
                return False
            remaining, position = remaining - yes, position + yes
        return False

    remaining, position = len(program), 0
    while remaining > 0:
        code, yes, no = _op(program, position)
        minimum = 4
        if code in _PORT_OPS:
            minimum += 4
            if remaining < minimum:
                return False
        elif code not in (0, 1, 6):
            return False
        if code != 0:
            if no < minimum or no > remaining + 4 or no % 4:
                return False
            if no < remaining and not reachable(remaining - no):
                return False
        if yes < minimum or yes > remaining + 4 or yes % 4:
            return False
        remaining, position = remaining - yes, position + yes
    return remaining == 0


def kernel_matches(program: bytes, dport: int) -> bool:
    remaining, position = len(program), 0
    while remaining > 0:
        code, yes, no = _op(program, position)
        if code == 1:
            taken = False
        elif code == 12:
            taken = dport == _op(program, position + 4)[2]
        else:
            raise AssertionError(f"unexpected op {code}")
        step = yes if taken else no
        remaining, position = remaining - step, position + step
    return remaining == 0


@given(
    port_set=st.lists(st.integers(1, 65535), min_size=1, max_size=12),
    probes=st.lists(st.integers(0, 65535), max_size=20),
)
def test_bytecode_passes_audit_and_matches_exactly_the_ports(
    port_set: list[int], probes: list[int]
) -> None:
    program = netlink.build_bytecode(port_set)
    distinct = len(set(port_set))
    assert len(program) == 12 * (distinct - 1) + 8
    assert kernel_accepts_program(program)
    for dport in [*probes, *port_set, 0]:
        assert kernel_matches(program, dport) == (dport in port_set)


@pytest.mark.parametrize("bad", [[], [0], [65536], [-1]])
def test_bytecode_rejects_non_ports(bad: list[int]) -> None:
    with pytest.raises(ValueError):
        netlink.build_bytecode(bad)


def test_request_layout() -> None:
    bytecode = netlink.build_bytecode([3306, 3307])
    request = netlink.build_request(socket.AF_INET6, netlink.STATES_MASK, bytecode, 77)
    header = NlMsgHdr.from_buffer_copy(request)
    assert header.nlmsg_len == len(request)
    assert header.nlmsg_type == 20
    assert header.nlmsg_flags == 0x301  # NLM_F_REQUEST | NLM_F_DUMP
    assert header.nlmsg_seq == 77
    family, protocol, ext, _pad, states = struct.unpack_from("=BBBBI", request, 16)
    assert (family, protocol, ext) == (socket.AF_INET6, socket.IPPROTO_TCP, 0b10)
    assert request[24:72] == bytes(48)
    wanted = {s for s in TcpState if states & (1 << s)}
    assert wanted == set(TcpState) - {TcpState.LISTEN, TcpState.TIME_WAIT}
    attribute = RtAttr.from_buffer_copy(request, 72)
    assert (attribute.rta_len, attribute.rta_type) == (4 + len(bytecode), 1)
    assert request[76:] == bytecode


def test_all_families_request_layout() -> None:
    bytecode = netlink.build_bytecode([3306])
    request = netlink.build_all_families_request(netlink.STATES_MASK, bytecode, 5)
    header = NlMsgHdr.from_buffer_copy(request)
    assert (header.nlmsg_len, header.nlmsg_type) == (len(request), 18)  # TCPDIAG_GETSOCK
    assert (header.nlmsg_flags, header.nlmsg_seq) == (0x301, 5)
    # struct inet_diag_req: family 0 (every family), src_len, dst_len, ext, sockid, states, dbs
    assert request[16:20] == bytes([0, 0, 0, 0b10])
    assert request[20:68] == bytes(48)
    assert struct.unpack_from("=II", request, 68) == (netlink.STATES_MASK, 0)
    attribute = RtAttr.from_buffer_copy(request, 76)
    assert (attribute.rta_len, attribute.rta_type) == (4 + len(bytecode), 1)
    assert request[80:] == bytecode


# --- the real kernel, on loopback only ---------------------------------------------------
# Other processes on this host may hold sockets whose remote port happens to equal one
# of our listeners' ports (a client of theirs bound the same number on another address),
# so the checks below look at this test's own sockets, and at the filter on all rows.


def own_tcp_info(sock: socket.socket) -> TcpInfoHead:
    raw = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, ctypes.sizeof(TcpInfoHead))
    return TcpInfoHead.from_buffer_copy(raw)


def ss_rows(ports: list[int]) -> dict[int, dict[str, str]]:
    """`ss -tnieHO` for these remote ports: inode -> fields we compare."""
    expression = " or ".join(f"dport = :{port}" for port in ports)
    out = subprocess.run(
        ["ss", "-tnieHO", expression], capture_output=True, text=True, check=True
    ).stdout
    rows = {}
    for line in out.splitlines():
        fields = line.split()
        extras = dict(field.split(":", 1) for field in fields[5:] if ":" in field)
        rows[int(extras["ino"])] = {
            "state": fields[0],
            "local": fields[3],
            "peer": fields[4],
            "timer": extras.get("timer", ""),
            "lastsnd": extras.get("lastsnd", "0"),
            "lastrcv": extras.get("lastrcv", "0"),
        }
    return rows


def test_dump_agrees_with_ss_proc_and_tcp_info_including_idle() -> None:
    with loopback() as net:
        port4 = net.listen()
        port6 = net.listen(socket.AF_INET6, "::1")
        pairs = [
            net.connect(port4),
            net.connect(port4, keepalive=True),
            net.connect(port6, "::1", socket.AF_INET6),
            net.connect(port6, "::1", socket.AF_INET6, keepalive=True),
        ]
        quiet: dict[int, tuple[float, float]] = {}  # inode -> silent since (earliest, latest)
        for client, server in pairs:
            client.sendall(b"ping")
            assert server.recv(4) == b"ping"
            before = time.monotonic()
            server.sendall(b"pong")
            assert client.recv(4) == b"pong"
            quiet[inode_of(client)] = (before, time.monotonic())
        time.sleep(1.5)

        # tcp_info counts in jiffies: allow one tick (HZ is 100 or more).
        tick = 0.011
        dumped = time.monotonic()
        rows = netlink.dump_tcp([port4, port6], soon())
        finished = time.monotonic()
        assert {row.remote.port for row in rows} <= {port4, port6}
        ours = set(quiet)
        by_inode = {row.inode: row for row in rows if row.inode in ours}
        assert set(by_inode) == ours
        for index, (client, _) in enumerate(pairs):
            row = by_inode[inode_of(client)]
            assert row.local == endpoint(*client.getsockname()[:2])
            assert row.remote == endpoint(*client.getpeername()[:2])
            assert row.state is TcpState.ESTABLISHED
            assert row.uid == os.getuid()
            assert row.keepalive is (index % 2 == 1)
            earliest, latest = quiet[row.inode]
            assert row.idle_seconds is not None
            assert dumped - latest - tick <= row.idle_seconds <= finished - earliest + tick
            assert row.idle_seconds >= 1.49
            info = own_tcp_info(client)
            own_idle = min(info.tcpi_last_data_sent, info.tcpi_last_data_recv) / 1000
            assert -tick <= own_idle - row.idle_seconds <= time.monotonic() - dumped + tick

        seen_by_ss = {
            inode: fields for inode, fields in ss_rows([port4, port6]).items() if inode in ours
        }
        ss_done = time.monotonic()
        assert set(seen_by_ss) == ours
        for inode, fields in seen_by_ss.items():
            row = by_inode[inode]
            assert fields["state"] == "ESTAB"
            assert fields["local"].replace("[", "").replace("]", "") == (
                f"{row.local.ip}:{row.local.port}"
            )
            assert fields["timer"].startswith("(keepalive") is row.keepalive
            ss_idle = min(int(fields["lastsnd"]), int(fields["lastrcv"])) / 1000
            assert row.idle_seconds is not None
            assert -tick <= ss_idle - row.idle_seconds <= ss_done - dumped + tick

        from_proc = [row for row in read_proc_net_tcp([port4, port6]) if row.inode in ours]
        without_idle = {
            KernelSocket(r.local, r.remote, r.state, r.inode, r.uid, None, r.keepalive)
            for r in by_inode.values()
        }
        assert len(from_proc) == len(ours)
        assert set(from_proc) == without_idle


def test_keepalive_probe_is_placed_on_the_path_silence_it_will_end() -> None:
    # The next probe goes out when the path has been silent for TCP_KEEPIDLE (nothing was
    # received since): that is what a NAT's idle limit is compared with.
    with loopback() as net:
        port = net.listen()
        plain, _ = net.connect(port)
        early, early_server = net.connect(port, keepalive=True)
        late, _ = net.connect(port, keepalive=True)
        early.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 30)
        late.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 7200)
        early_server.sendall(b"x")  # something received: the path's silence restarts
        assert early.recv(1) == b"x"
        rows = {row.inode: row for row in netlink.dump_tcp([port], soon())}
        assert rows[inode_of(plain)].keepalive is False
        assert rows[inode_of(plain)].keepalive_probe_at is None
        for sock, idle in ((early, 30), (late, 7200)):
            row = rows[inode_of(sock)]
            assert row.keepalive is True
            assert row.keepalive_probe_at is not None
            assert idle - 0.5 <= row.keepalive_probe_at <= idle + 0.05, row


def test_close_wait_is_reported_when_the_server_closes() -> None:
    with loopback() as net:
        port = net.listen()
        client, server = net.connect(port)
        server.close()
        inode = inode_of(client)
        deadline = time.monotonic() + 2
        states: dict[int, TcpState] = {}
        while time.monotonic() < deadline:
            rows = netlink.dump_tcp([port], soon())
            states = {row.inode: row.state for row in rows if row.inode == inode}
            if states.get(inode) is TcpState.CLOSE_WAIT:
                break
            time.sleep(0.01)
        assert states == {inode: TcpState.CLOSE_WAIT}
        from_proc = [row.state for row in read_proc_net_tcp([port]) if row.inode == inode]
        assert from_proc == [TcpState.CLOSE_WAIT]


def test_kernel_filters_on_remote_port() -> None:
    with loopback() as net:
        servers = [net.listen() for _ in range(3)]
        clients = {port: inode_of(net.connect(port)[0]) for port in servers}

        @settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
        @given(
            chosen=st.sets(st.sampled_from(servers), min_size=1),
            others=st.lists(st.integers(1, 65535), max_size=6),
        )
        def check(chosen: set[int], others: list[int]) -> None:
            asked = [*chosen, *others]
            rows = netlink.dump_tcp(asked, soon())
            assert all(row.remote.port in asked for row in rows)
            inodes = {row.inode for row in rows}
            for port, inode in clients.items():
                assert (inode in inodes) is (port in asked)

        check()


def single_family_dump(family: int, ports: list[int]) -> list[KernelSocket]:
    with socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, netlink.NETLINK_SOCK_DIAG) as nl:
        nl.settimeout(2)
        nl.send(
            netlink.build_request(family, netlink.STATES_MASK, netlink.build_bytecode(ports), seq=9)
        )
        rows: list[KernelSocket] = []
        while True:
            batch, done = netlink.parse_messages(nl.recv(65536))
            rows += batch
            if done:
                return rows


def test_ipv4_mapped_client_comes_from_the_ipv6_dump_as_ipv4() -> None:
    with loopback() as net:
        port = net.listen()
        mapped, _ = net.connect(port, "::ffff:127.0.0.1", socket.AF_INET6)
        plain, _ = net.connect(port)
        assert mapped.getsockname()[0] == "::ffff:127.0.0.1"
        ours = {inode_of(mapped), inode_of(plain)}
        rows = {row.inode: row for row in netlink.dump_tcp([port], soon()) if row.inode in ours}
        row = rows[inode_of(mapped)]
        assert row.local == Endpoint("127.0.0.1", mapped.getsockname()[1])
        assert row.remote == Endpoint("127.0.0.1", port)
        assert set(rows) == ours
        v6 = [r.inode for r in single_family_dump(socket.AF_INET6, [port]) if r.inode in ours]
        v4 = [r.inode for r in single_family_dump(socket.AF_INET, [port]) if r.inode in ours]
        assert (v6, v4) == ([inode_of(mapped)], [inode_of(plain)])


def dumps_counted(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The type of every dump request dump_tcp sends from now on."""
    sent: list[int] = []
    real = netlink._dump

    def counting(channel: socket.socket, request: bytes, *rest: object) -> list[KernelSocket]:
        sent.append(NlMsgHdr.from_buffer_copy(request).nlmsg_type)
        return real(channel, request, *rest)  # type: ignore[arg-type]

    monkeypatch.setattr(netlink, "_dump", counting)
    return sent


def test_one_walk_of_the_kernel_table_gives_every_family(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The kernel walks its whole TCP hash table per dump request: one request for both
    # families halves a small dump's cost, and must still find IPv4, IPv6 and IPv4-mapped.
    monkeypatch.setattr(netlink, "_one_walk", True)
    sent = dumps_counted(monkeypatch)
    with loopback() as net:
        port = net.listen(socket.AF_INET6, "::")  # dual stack
        plain, _ = net.connect(port)
        six, _ = net.connect(port, "::1", socket.AF_INET6)
        mapped, _ = net.connect(port, "::ffff:127.0.0.1", socket.AF_INET6)
        ours = {inode_of(s): s for s in (plain, six, mapped)}
        rows = {r.inode: r for r in netlink.dump_tcp([port], soon()) if r.inode in ours}
        assert sent == [18]
        assert set(rows) == set(ours)
        assert rows[inode_of(six)].local == Endpoint("::1", six.getsockname()[1])
        assert rows[inode_of(mapped)].local == Endpoint("127.0.0.1", mapped.getsockname()[1])
        assert rows[inode_of(plain)].remote == Endpoint("127.0.0.1", port)


def test_a_kernel_refusing_the_one_walk_request_is_asked_per_family(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(netlink, "_one_walk", True)
    monkeypatch.setattr(netlink, "TCPDIAG_GETSOCK", 0x7FF0)  # a type the kernel refuses
    sent = dumps_counted(monkeypatch)
    with loopback() as net:
        port = net.listen(socket.AF_INET6, "::")
        plain, _ = net.connect(port)
        mapped, _ = net.connect(port, "::ffff:127.0.0.1", socket.AF_INET6)
        ours = {inode_of(plain), inode_of(mapped)}
        first = {r.inode for r in netlink.dump_tcp([port], soon())} & ours
        again = {r.inode for r in netlink.dump_tcp([port], soon())} & ours
    assert first == again == ours
    # Refused once, then never asked again.
    assert sent == [0x7FF0, 20, 20, 20, 20] and netlink._one_walk is False


def test_kernel_refusal_becomes_a_netlink_error() -> None:
    bogus = bytes([99, 4, 8, 0])  # an op code the kernel does not know
    with socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, netlink.NETLINK_SOCK_DIAG) as nl:
        nl.settimeout(2)
        nl.send(netlink.build_request(socket.AF_INET, netlink.STATES_MASK, bogus, 1))
        with pytest.raises(netlink.NetlinkError) as raised:
            netlink.parse_messages(nl.recv(65536))
    assert raised.value.errno == errno.EINVAL


def test_a_datagram_larger_than_the_buffer_is_an_error_not_a_silent_loss(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with loopback() as net:
        port = net.listen()
        for _ in range(3):
            net.connect(port)
        assert len(netlink.dump_tcp([port], soon())) >= 3
        monkeypatch.setattr(netlink, "RECV_BUFFER", 256)
        with pytest.raises(netlink.NetlinkError) as raised:
            netlink.dump_tcp([port], soon())
        assert raised.value.errno == errno.EMSGSIZE


def test_dump_never_waits_past_its_deadline() -> None:
    with pytest.raises(netlink.NetlinkError) as raised:
        netlink.dump_tcp([3306], soon(0))
    assert raised.value.errno == errno.ETIMEDOUT
    assert not isinstance(raised.value, netlink.NetlinkUnavailable)


def test_messages_of_one_size_with_other_attribute_layouts() -> None:
    # The parser remembers the attribute layout of a message size; a message of that size
    # laid out otherwise must still be walked attribute by attribute.
    info = rt_attribute(netlink.INET_DIAG_INFO, tcp_info(4000, 9000, b""))
    other = rt_attribute(8, bytes(8))
    short = rt_attribute(netlink.INET_DIAG_INFO, tcp_info(1, 1, b"")[:40])  # no times
    filler = rt_attribute(8, bytes(len(info) + len(other) - len(short) - 4))
    layouts = [other + info, other + info, info + other, other + info,
               short + filler, short + filler, filler + short]
    assert len({len(attributes) for attributes in layouts}) == 1
    data = b"".join(
        nl_message(netlink.SOCK_DIAG_BY_FAMILY,
                   diag_payload(2, 1, 0, bytes(16), bytes(16), 40000 + n, 3306, 0, n, attributes))
        for n, attributes in enumerate(layouts)
    )
    parsed, _ = netlink.parse_messages(data)
    assert [row.idle_seconds for row in parsed] == [4.0] * 4 + [None] * 3

"""The /proc/net/tcp fallback parser."""

from __future__ import annotations

import ipaddress
import random
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from exporter.addresses import endpoint
from exporter.model import Endpoint, TcpState
from exporter.sockets.kernel import KernelSocket
from exporter.sockets.procnet import parse_proc_net_tcp, read_proc_net_tcp

HEADER4 = (
    "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid"
    "  timeout inode"
)
HEADER6 = (
    "  sl  local_address                         remote_address                        st"
    " tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode"
)

# Rows as Linux prints them on a little-endian host (the hosts this project runs on).
SAMPLE4 = "\n".join(
    [
        HEADER4,
        # LISTEN on 127.0.0.1:3306: skipped
        "   0: 0100007F:0CEA 00000000:0000 0A 00000000:00000000 00:00000000 00000000   101"
        "        0 5416 1 00000000f979d473 100 0 0 10 0",
        # ESTABLISHED 127.0.0.1:51234 -> 127.0.0.1:3306, keepalive timer, uid 1000
        "   1: 0100007F:C822 0100007F:0CEA 01 00000000:00000000 02:0000A8C0 00000000  1000"
        "        0 20123 1 0000000000000000 20 4 30 10 -1",
        # CLOSE_WAIT 10.1.2.3:40000 -> 10.9.8.7:3306
        "   2: 0302010A:9C40 0708090A:0CEA 08 00000000:00000001 00:00000000 00000000     0"
        "        0 20124 1 0000000000000000 20 4 30 10 -1",
        # TIME_WAIT to 3306: skipped
        "   3: 0100007F:C823 0100007F:0CEA 06 00000000:00000000 03:00000F9C 00000000     0"
        "        0 0 3 0000000000000000",
        # ESTABLISHED to another port: skipped
        "   4: 0100007F:C824 0100007F:1538 01 00000000:00000000 00:00000000 00000000     0"
        "        0 20125 1 0000000000000000 20 4 30 10 -1",
    ]
)

SAMPLE6 = "\n".join(
    [
        HEADER6,
        # [::1]:41000 -> [::1]:3306
        "   0: 00000000000000000000000001000000:A028 00000000000000000000000001000000:0CEA 01"
        " 00000000:00000000 00:00000000 00000000     0        0 30001 1 0000000000000000 20 4"
        " 30 10 -1",
        # IPv4-mapped: [::ffff:127.0.0.1]:41001 -> [::ffff:127.0.0.1]:3306
        "   1: 0000000000000000FFFF00000100007F:A029 0000000000000000FFFF00000100007F:0CEA 01"
        " 00000000:00000000 00:00000000 00000000     0        0 30002 1 0000000000000000 20 4"
        " 30 10 -1",
        # [2001:db8::1]:41002 -> [2001:db8::2]:3306
        "   2: B80D0120000000000000000001000000:A02A B80D0120000000000000000002000000:0CEA 01"
        " 00000000:00000000 00:00000000 00000000     0        0 30003 1 0000000000000000 20 4"
        " 30 10 -1",
    ]
)


def row(
    local: Endpoint, remote: Endpoint, state: TcpState, inode: int, **more: object
) -> KernelSocket:
    uid = more.get("uid", 0)
    keepalive = more.get("keepalive", False)
    assert isinstance(uid, int) and isinstance(keepalive, bool)
    return KernelSocket(local, remote, state, inode, uid, None, keepalive)


def test_ipv4_sample() -> None:
    assert parse_proc_net_tcp(SAMPLE4, False, [3306]) == [
        row(
            Endpoint("127.0.0.1", 51234),
            Endpoint("127.0.0.1", 3306),
            TcpState.ESTABLISHED,
            20123,
            uid=1000,
            keepalive=True,
        ),
        row(Endpoint("10.1.2.3", 40000), Endpoint("10.9.8.7", 3306), TcpState.CLOSE_WAIT, 20124),
    ]
    assert [r.inode for r in parse_proc_net_tcp(SAMPLE4, False, [5432])] == [20125]
    assert parse_proc_net_tcp(SAMPLE4, False, []) == []


def test_ipv6_sample_normalises_mapped_addresses() -> None:
    assert parse_proc_net_tcp(SAMPLE6, True, [3306]) == [
        row(Endpoint("::1", 41000), Endpoint("::1", 3306), TcpState.ESTABLISHED, 30001),
        row(Endpoint("127.0.0.1", 41001), Endpoint("127.0.0.1", 3306), TcpState.ESTABLISHED, 30002),
        row(
            Endpoint("2001:db8::1", 41002),
            Endpoint("2001:db8::2", 3306),
            TcpState.ESTABLISHED,
            30003,
        ),
    ]


def test_wrong_family_lines_are_skipped() -> None:
    assert parse_proc_net_tcp(SAMPLE6, False, [3306]) == []
    assert parse_proc_net_tcp(SAMPLE4, True, [3306]) == []


# --- generated lines, written the way the kernel's seq_printf writes them --------------

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def kernel_hex(address: IpAddress) -> str:
    """Each 32-bit word of the network-order address, printed as a host integer."""
    packed = address.packed
    return "".join(
        f"{int.from_bytes(packed[start : start + 4], sys.byteorder):08X}"
        for start in range(0, len(packed), 4)
    )


@st.composite
def table_lines(draw: st.DrawFn, ipv6: bool) -> tuple[str, KernelSocket]:
    if ipv6:
        addresses = st.one_of(
            st.ip_addresses(v=6),
            st.ip_addresses(v=4).map(lambda a: ipaddress.IPv6Address(f"::ffff:{a}")),
        )
    else:
        addresses = st.ip_addresses(v=4)
    local, remote = draw(addresses), draw(addresses)
    local_port, remote_port = draw(st.integers(0, 65535)), draw(st.sampled_from([3306, 3307, 80]))
    state = draw(st.sampled_from(list(TcpState)))
    timer = draw(st.sampled_from([0, 1, 2, 3, 4]))
    uid, inode = draw(st.integers(0, 2**32 - 1)), draw(st.integers(0, 2**32 - 1))
    queues = draw(st.integers(0, 2**32 - 1))
    line = (
        f"{draw(st.integers(0, 9999)):4d}: {kernel_hex(local)}:{local_port:04X}"
        f" {kernel_hex(remote)}:{remote_port:04X} {state:02X} {queues:08X}:{queues:08X}"
        f" {timer:02X}:{draw(st.integers(0, 2**32 - 1)):08X} 00000000 {uid:5d} {0:8d} {inode}"
        " 1 0000000000000000 20 4 30 10 -1"
    )
    expected = KernelSocket(
        endpoint(str(local), local_port),
        endpoint(str(remote), remote_port),
        state,
        inode,
        uid,
        None,
        timer == 2,
    )
    return line, expected


def tables() -> st.SearchStrategy[tuple[bool, list[tuple[str, KernelSocket]]]]:
    """A family, and up to a dozen lines of its table."""
    return st.booleans().flatmap(
        lambda v6: st.tuples(st.just(v6), st.lists(table_lines(v6), max_size=12))
    )


def _keep(expected: KernelSocket, ports: set[int]) -> bool:
    return expected.remote.port in ports and expected.state not in (
        TcpState.LISTEN,
        TcpState.TIME_WAIT,
    )


@given(
    tables(),
    st.sets(st.sampled_from([3306, 3307, 80, 443])),
)
def test_generated_lines_round_trip(
    generated: tuple[bool, list[tuple[str, KernelSocket]]], ports: set[int]
) -> None:
    ipv6, lines = generated
    text = "\n".join([HEADER6 if ipv6 else HEADER4, *(line for line, _ in lines)]) + "\n"
    expected = [kernel for _, kernel in lines if _keep(kernel, ports)]
    assert parse_proc_net_tcp(text, ipv6, ports) == expected


@given(
    tables(),
    st.lists(st.text(max_size=160), max_size=12),
    st.randoms(use_true_random=False),
)
def test_garbage_lines_are_skipped(
    generated: tuple[bool, list[tuple[str, KernelSocket]]],
    garbage: list[str],
    rng: random.Random,
) -> None:
    ipv6, lines = generated
    mixed = [line for line, _ in lines] + garbage
    rng.shuffle(mixed)
    expected = {kernel for _, kernel in lines if _keep(kernel, {3306, 3307})}
    assert set(parse_proc_net_tcp("\n".join(mixed), ipv6, {3306, 3307})) == expected


@given(st.text(max_size=400), st.booleans())
def test_arbitrary_text_never_raises(text: str, ipv6: bool) -> None:
    parse_proc_net_tcp(text, ipv6, range(65536))


@pytest.mark.parametrize(
    "line",
    [
        # a sign, a 0x prefix and underscores all parse with int(..., 16): still malformed
        "   1: -100007F:C822 0100007F:0CEA 01 00000000:00000000 02:0000A8C0 00000000 0 0 1 1",
        "   1: 0x00007F:C822 0100007F:0CEA 01 00000000:00000000 02:0000A8C0 00000000 0 0 1 1",
        "   1: 0100007F:C822 0100007F:0CEA 0_1 00000000:00000000 02:0000A8C0 00000000 0 0 1 1",
        "   1: 0100007F:C822 0100007F:-CEA 01 00000000:00000000 02:0000A8C0 00000000 0 0 1 1",
        "   1: 0100007F:C822 0100007F:0CEA 01 00000000:00000000 02:0000A8C0 00000000 ² 0 1 1",
        "   1: 0100007F:C822 0100007F:0CEA 01 00000000:00000000 02:0000A8C0 00000000 0 0 -1 1",
        "   1: 0100007F:C822 0100007F:0CEA 0D 00000000:00000000 02:0000A8C0 00000000 0 0 1 1",
        "   1: 0100007F:C822 0100007F:0CEA 01 00000000:00000000 02:0000A8C0 00000000 0 0",
        "   1: 0100007F:C822 0100007F:0CEA 01 00000000:00000000 0200000A8C0 00000000 0 0 1 1",
    ],
)
def test_malformed_lines_are_skipped(line: str) -> None:
    valid = "   1: 0100007F:C822 0100007F:0CEA 01 00000000:00000000 02:0000A8C0 00000000 0 0 1 1"
    assert len(parse_proc_net_tcp(valid, False, [3306])) == 1
    assert parse_proc_net_tcp(line, False, [3306]) == []


def test_read_tolerates_a_missing_tcp6(tmp_path: Path) -> None:
    (tmp_path / "net").mkdir()
    (tmp_path / "net" / "tcp").write_text(SAMPLE4 + "\n")
    rows = read_proc_net_tcp([3306], proc_root=str(tmp_path))
    assert [r.inode for r in rows] == [20123, 20124]
    (tmp_path / "net" / "tcp6").write_text(SAMPLE6 + "\n")
    rows = read_proc_net_tcp([3306], proc_root=str(tmp_path))
    assert [r.inode for r in rows] == [20123, 20124, 30001, 30002, 30003]


def test_read_without_tcp_table_fails_loudly(tmp_path: Path) -> None:
    (tmp_path / "net").mkdir()
    with pytest.raises(FileNotFoundError):
        read_proc_net_tcp([3306], proc_root=str(tmp_path))

"""Fallback: TCP sockets from /proc/net/tcp and /proc/net/tcp6, for hosts where
sock_diag is unavailable. It has no tcp_info, so idle time is unknown here."""

from __future__ import annotations

import os
import socket
import struct
from collections.abc import Collection

from exporter.addresses import normalise_ip
from exporter.model import Endpoint, TcpState
from exporter.sockets.kernel import KernelSocket

_KNOWN_STATES = frozenset(int(state) for state in TcpState)
_SKIPPED_STATES = frozenset({TcpState.LISTEN, TcpState.TIME_WAIT})
_TIMER_KEEPALIVE = 2
_WORD = struct.Struct("=I")
_HEX_DIGITS = frozenset("0123456789abcdefABCDEF")


def _hex(text: str, width: int) -> int | None:
    # int(text, 16) alone would also take "-1", "0x1" and "1_0".
    if len(text) != width or not _HEX_DIGITS.issuperset(text):
        return None
    return int(text, 16)


def _decimal(text: str) -> int | None:
    return int(text) if text.isascii() and text.isdigit() else None


def _address(text: str, ipv6: bool) -> Endpoint | None:
    """Decode "0100007F:0CEA". The kernel prints each 32-bit word of the network-order
    address as a host-order integer, so each word is re-packed in host order."""
    address, _, port_text = text.partition(":")
    port = _hex(port_text, 4)
    words = [_hex(address[start : start + 8], 8) for start in range(0, 32 if ipv6 else 8, 8)]
    if port is None or len(address) != 8 * len(words):
        return None
    raw = b""
    for word in words:
        if word is None:
            return None
        raw += _WORD.pack(word)
    family = socket.AF_INET6 if ipv6 else socket.AF_INET
    return Endpoint(normalise_ip(socket.inet_ntop(family, raw)), port)


def _parse_line(line: str, ipv6: bool, ports: Collection[int]) -> KernelSocket | None:
    # sl local rem st tx:rx tr:when retrnsmt uid timeout inode ...
    fields = line.split()
    if len(fields) < 10 or not fields[0].endswith(":"):
        return None
    remote = _address(fields[2], ipv6)
    if remote is None or remote.port not in ports:
        return None
    local = _address(fields[1], ipv6)
    state_code, timer = _hex(fields[3], 2), _hex(fields[5].partition(":")[0], 2)
    uid, inode = _decimal(fields[7]), _decimal(fields[9])
    if local is None or state_code is None or timer is None:
        return None
    if uid is None or inode is None or state_code not in _KNOWN_STATES:
        return None
    state = TcpState(state_code)
    if state in _SKIPPED_STATES:
        return None
    return KernelSocket(
        local=local,
        remote=remote,
        state=state,
        inode=inode,
        uid=uid,
        idle_seconds=None,
        keepalive=timer == _TIMER_KEEPALIVE,
    )


def parse_proc_net_tcp(text: str, ipv6: bool, remote_ports: Collection[int]) -> list[KernelSocket]:
    """Rows of one /proc/net/tcp{,6} text whose remote port is watched; LISTEN and
    TIME_WAIT rows, the header and malformed lines are skipped."""
    ports = frozenset(remote_ports)
    # Most lines are other connections (a busy host has tens of thousands in TIME_WAIT):
    # a cheap look at the remote port's hex text drops them before the full parse.
    rows: list[KernelSocket] = []
    for line in text.splitlines():
        head = line.split(None, 3)
        if len(head) < 4 or _hex(head[2][-4:], 4) not in ports:
            continue
        row = _parse_line(line, ipv6, ports)
        if row is not None:
            rows.append(row)
    return rows


def read_proc_net_tcp(
    remote_ports: Collection[int], proc_root: str = "/proc"
) -> list[KernelSocket]:
    """Both tables of this network namespace; a missing tcp6 (IPv6 disabled) is fine."""
    rows: list[KernelSocket] = []
    for name, ipv6 in (("tcp", False), ("tcp6", True)):
        try:
            with open(os.path.join(proc_root, "net", name), encoding="ascii") as table:
                text = table.read()
        except FileNotFoundError:
            if ipv6:
                continue
            raise
        rows.extend(parse_proc_net_tcp(text, ipv6, remote_ports))
    return rows

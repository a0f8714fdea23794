"""Fuzzing every parser of outside input with a large example budget.

Each parser may only raise its own documented error: sock_diag answers (NetlinkError),
/proc/net/tcp lines (nothing), processlist HOST values (nothing), processlist rows
(nothing), my.cnf files (ConfigError), web config files (WebConfigError), fleet
documents (FleetFormatError). What they return must be sane. Then hostile user, database
and process names go through the metrics collector in both exposition formats, which must
stay parseable, and promtool checks a few of those outputs and a live /metrics."""

from __future__ import annotations

import contextlib
import ipaddress
import json
import math
import os
import re
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import bcrypt
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as parse_openmetrics,
)
from prometheus_client.parser import text_string_to_metric_families as parse_text

from exporter.addresses import normalise_ip, parse_processlist_host
from exporter.collector import SnapshotCollector
from exporter.correlate import Memory
from exporter.exposition import write
from exporter.fleet.wire import FleetFormatError, decode_view
from exporter.model import (
    Endpoint,
    Flavor,
    ServerView,
    Session,
    Settings,
    Snapshot,
    Socket,
    TcpState,
)
from exporter.sessions.credentials import ConfigError, load_credentials, read_my_cnf
from exporter.sessions.sources import row_to_session, rows_to_sessions
from exporter.sockets import netlink
from exporter.sockets.appname import MAX_LENGTH, application_name, split_cmdline
from exporter.sockets.kernel import KernelSocket
from exporter.sockets.procnet import parse_proc_net_tcp
from exporter.web.config import WebConfig, WebConfigError, load_web_config
from tests.support.builders import correlate_sockets as correlate
from tests.support.builders import report, snapshot_of

# 800 examples per parser in the suite (about 1 minute in all); FUZZ_EXAMPLES=5000 for a
# longer run.
FUZZ = settings(max_examples=int(os.environ.get("FUZZ_EXAMPLES", "800")), deadline=None,
                database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
CANARY = "Canary-Pw-7f3e!\"'\\"

# --- hostile text ----------------------------------------------------------------------

BIG = (
    "x" * 100_000,
    "'\"\\\n\0" * 20_000,
    "é😀\u202e" * 30_000,
    ("a" * 99_999) + "\udcff",
)
# Every character, lone surrogates included (psutil turns undecodable bytes into them).
any_char = st.one_of(st.characters(), st.integers(0xD800, 0xDFFF).map(chr))
short_hostile_text = st.one_of(
    st.text(max_size=30),
    st.text(alphabet=st.sampled_from("'\"\\\n\r\t\0 #;:[]=%_!{}\x85\u2028é٣\udcff"),
            max_size=20),
)
hostile_text = st.one_of(
    st.text(max_size=60),
    st.text(alphabet=any_char, max_size=40),
    st.text(alphabet="'\"\\\n\r\t\0 #;:[]=%_!{}\x85\u2028", max_size=20),
    st.sampled_from(BIG),
    st.sampled_from(["", " ", "\0", "\n", "\\", '"', "NaN", "-1", "1e999", "localhost",
                     "\udcff\udcfe", "\ud800"]),
)


def replace_surrogates(text: str) -> str:
    return "".join("\ufffd" if 0xD800 <= ord(c) <= 0xDFFF else c for c in text)


# --- sock_diag -------------------------------------------------------------------------

_NLMSGHDR = struct.Struct("=IHHII")
_RTATTR = struct.Struct("=HH")


def pad4(data: bytes) -> bytes:
    return data + bytes(-len(data) % 4)


def nl_message(kind: int, payload: bytes) -> bytes:
    return pad4(_NLMSGHDR.pack(_NLMSGHDR.size + len(payload), kind, 2, 1, 0) + payload)


_DRAW = object()  # diag_rows: draw this part of the message's shape


@st.composite
def diag_rows(
    draw: st.DrawFn, info_length: object = _DRAW, other: object = _DRAW
) -> tuple[bytes, KernelSocket | None]:
    """One SOCK_DIAG_BY_FAMILY message and the KernelSocket it stands for (None when the
    parser must skip it: a family or state it does not know). ``info_length`` (None: no
    tcp_info) and ``other`` (None: no other attribute) fix the message's shape."""
    family = draw(st.sampled_from([socket.AF_INET, socket.AF_INET6, 0, 99]))
    state = draw(st.integers(0, 15))
    timer = draw(st.integers(0, 4))
    sport, dport = draw(st.integers(0, 65535)), draw(st.integers(0, 65535))
    if family == socket.AF_INET6:
        src, dst = draw(st.binary(min_size=16, max_size=16)), draw(st.binary(min_size=16,
                                                                               max_size=16))
    else:
        src = draw(st.binary(min_size=4, max_size=4)) + bytes(12)
        dst = draw(st.binary(min_size=4, max_size=4)) + bytes(12)
    uid, inode = draw(st.integers(0, 2**32 - 1)), draw(st.integers(0, 2**32 - 1))
    expires = draw(st.integers(0, 2**32 - 1))  # ms until the socket's timer fires
    body = (struct.pack("=BBBB", family, state, timer, 0) + struct.pack(">HH", sport, dport)
            + src + dst + bytes(12) + struct.pack("=I", expires) + bytes(8)
            + struct.pack("=II", uid, inode))
    idle: float | None = None
    probe: float | None = None
    attributes = b""
    if info_length is _DRAW:
        info_length = draw(st.one_of(st.none(), st.integers(0, 240)))
    assert info_length is None or isinstance(info_length, int)
    if info_length is not None:
        info = bytearray(info_length)  # the parser reads three fields of it
        if info_length >= netlink.TCPI_LAST_ACK_RECV + 4:
            sent, received, acked = (draw(st.integers(0, 2**32 - 1)) for _ in range(3))
            struct.pack_into("=I", info, netlink.TCPI_LAST_DATA_SENT, sent)
            struct.pack_into("=I", info, netlink.TCPI_LAST_DATA_RECV, received)
            struct.pack_into("=I", info, netlink.TCPI_LAST_ACK_RECV, acked)
            idle = min(sent, received) / 1000.0
            if timer == netlink.TIMER_KEEPALIVE:
                probe = netlink.probe_at(sent, acked, expires)
        attributes += pad4(_RTATTR.pack(_RTATTR.size + info_length, netlink.INET_DIAG_INFO)
                           + bytes(info))
    if other is _DRAW:
        other = draw(st.one_of(st.none(), st.binary(max_size=12)))
    if other is not None:  # an attribute of another kind, skipped
        assert isinstance(other, bytes)
        attributes += pad4(_RTATTR.pack(_RTATTR.size + len(other), 99) + other)
    message = nl_message(netlink.SOCK_DIAG_BY_FAMILY, body + attributes)
    known = {int(s) for s in TcpState}
    if family not in (socket.AF_INET, socket.AF_INET6) or state not in known:
        return message, None

    def address(raw: bytes) -> str:
        packed = raw[:4] if family == socket.AF_INET else raw
        return normalise_ip(socket.inet_ntop(family, packed))

    expected = KernelSocket(
        local=Endpoint(address(src), sport), remote=Endpoint(address(dst), dport),
        state=TcpState(state), inode=inode, uid=uid, idle_seconds=idle,
        keepalive=timer == netlink.TIMER_KEEPALIVE, keepalive_probe_at=probe,
    )
    return message, expected


@st.composite
def datagrams(draw: st.DrawFn) -> tuple[bytes, list[KernelSocket], bool]:
    rows = draw(st.lists(diag_rows(), max_size=4))
    noop = nl_message(netlink.NLMSG_NOOP, b"") if draw(st.booleans()) else b""
    data = noop.join(message for message, _ in rows)
    done = draw(st.booleans())
    if done:
        data += nl_message(netlink.NLMSG_DONE, struct.pack("=i", 0))
    return data, [row for _, row in rows if row is not None], done


def check_sockets(rows: list[KernelSocket]) -> None:
    for row in rows:
        assert isinstance(row, KernelSocket)
        assert isinstance(row.state, TcpState)
        for end in (row.local, row.remote):
            assert 0 <= end.port <= 65535
            ipaddress.ip_address(end.ip)
        assert 0 <= row.inode < 2**32 and 0 <= row.uid < 2**32
        assert row.idle_seconds is None or (math.isfinite(row.idle_seconds)
                                            and row.idle_seconds >= 0)


def parse_or_netlink_error(data: bytes) -> None:
    try:
        rows, done = netlink.parse_messages(data)
    except netlink.NetlinkError:
        return
    assert isinstance(done, bool)
    check_sockets(rows)


@FUZZ
@given(datagrams())
def test_netlink_parses_what_the_kernel_sends(case: tuple[bytes, list[KernelSocket], bool]
                                              ) -> None:
    data, expected, done = case
    assert netlink.parse_messages(data) == (expected, done)


@st.composite
def dumps(draw: st.DrawFn) -> list[tuple[bytes, list[KernelSocket]]]:
    """Datagrams of one dump: messages of one shape, as the kernel sends them, so that a
    parser that has seen the first parses the others in bulk."""
    info_length = draw(st.one_of(st.none(), st.integers(0, 240)))
    other = draw(st.one_of(st.none(), st.binary(max_size=12)))
    shaped = diag_rows(info_length=info_length, other=other)
    datagrams = []
    for rows in draw(st.lists(st.lists(shaped, min_size=1, max_size=5), min_size=2,
                              max_size=4)):
        datagrams.append((b"".join(m for m, _ in rows), [r for _, r in rows if r is not None]))
    return datagrams


@FUZZ
@given(dumps(), st.integers(0, 3))
def test_netlink_bulk_parse_of_a_dump_equals_the_message_by_message_parse(
    dump: list[tuple[bytes, list[KernelSocket]]], repeat: int
) -> None:
    parser = netlink.DiagParser()
    for _ in range(1 + repeat):  # again: the sockets are remembered from the last time
        parser = netlink.DiagParser(parser.known)
        for data, expected in dump:
            assert netlink.parse_messages(data, parser) == (expected, False)
    assert parser._bulks  # the second datagram on was parsed in bulk


@FUZZ
@given(dumps(), st.data())
def test_netlink_bulk_parse_of_mutated_datagrams_only_raises_netlink_errors(
    dump: list[tuple[bytes, list[KernelSocket]]], data: st.DataObject
) -> None:
    parser = netlink.DiagParser()
    netlink.parse_messages(dump[0][0], parser)  # learns the shape
    mutated = bytearray(dump[-1][0])
    for _ in range(data.draw(st.integers(1, 6))):
        mutated[data.draw(st.integers(0, len(mutated) - 1))] = data.draw(st.integers(0, 255))
    try:
        rows, done = netlink.parse_messages(bytes(mutated), parser)
    except netlink.NetlinkError:
        return
    assert isinstance(done, bool)
    check_sockets(rows)


@st.composite
def mutated_datagrams(draw: st.DrawFn) -> bytes:
    if draw(st.integers(0, 3)) == 0:
        return draw(st.binary(max_size=600))
    data = bytearray(draw(datagrams())[0] or b"\0")
    for _ in range(draw(st.integers(1, 8))):
        data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    if draw(st.booleans()):
        at = draw(st.integers(0, len(data)))
        data[at:at] = draw(st.binary(min_size=1, max_size=16))
    if draw(st.booleans()):
        del data[draw(st.integers(0, len(data))):]
    return bytes(data)


@FUZZ
@given(mutated_datagrams())
def test_netlink_mutated_and_random_bytes_only_raise_netlink_errors(data: bytes) -> None:
    parse_or_netlink_error(data)


# --- /proc/net/tcp ---------------------------------------------------------------------


def proc_address(ip: str, port: int) -> str:
    packed = socket.inet_pton(socket.AF_INET6 if ":" in ip else socket.AF_INET, ip)
    words = struct.unpack(f"={len(packed) // 4}I", packed)
    return "".join(f"{word:08X}" for word in words) + f":{port:04X}"


@st.composite
def proc_lines(draw: st.DrawFn, ipv6: bool) -> tuple[str, KernelSocket | None, int]:
    addresses = (st.integers(0, 2**128 - 1).map(lambda i: str(ipaddress.IPv6Address(i))) if ipv6
                 else st.integers(0, 2**32 - 1).map(lambda i: str(ipaddress.IPv4Address(i))))
    local_ip, remote_ip = draw(addresses), draw(addresses)
    local_port, remote_port = draw(st.integers(0, 65535)), draw(st.integers(1, 65535))
    state = draw(st.integers(0, 15))
    timer, uid, inode = draw(st.integers(0, 4)), draw(st.integers(0, 2**32 - 1)), \
        draw(st.integers(0, 2**32 - 1))
    line = (f"{draw(st.integers(0, 9999)):4d}: {proc_address(local_ip, local_port)} "
            f"{proc_address(remote_ip, remote_port)} {state:02X} 00000000:00000000 "
            f"{timer:02X}:00000000 00000000 {uid:5d}        0 {inode} 1 0000000000000000 "
            "100 0 0 10 0")
    watched = draw(st.sampled_from([remote_port, remote_port % 65535 + 1]))
    known = {int(s) for s in TcpState} - {TcpState.LISTEN, TcpState.TIME_WAIT}
    expected = None
    if state in known and watched == remote_port:
        expected = KernelSocket(
            local=Endpoint(normalise_ip(local_ip), local_port),
            remote=Endpoint(normalise_ip(remote_ip), remote_port), state=TcpState(state),
            inode=inode, uid=uid, idle_seconds=None, keepalive=timer == 2)
    return line, expected, watched


def real_proc_lines() -> list[str]:
    lines = []
    for name in ("tcp", "tcp6"):
        with contextlib.suppress(OSError):
            lines += [line for line in Path(f"/proc/net/{name}").read_text().splitlines()[:40]
                      if line.split()[0].endswith(":")]
    return lines or ["   0: 0100007F:0CEA 0100007F:A2B4 01 00000000:00000000 02:00000A3B "
                     "00000000   108        0 23437 1 0000000000000000 20 4 30 10 -1"]


REAL_LINES = real_proc_lines()


def check_proc_rows(rows: list[KernelSocket], ports: set[int]) -> None:
    check_sockets(rows)
    for row in rows:
        assert row.remote.port in ports
        assert row.state not in (TcpState.LISTEN, TcpState.TIME_WAIT)
        assert row.idle_seconds is None


@FUZZ
@given(st.booleans().flatmap(lambda v6: st.tuples(st.just(v6), st.lists(proc_lines(v6),
                                                                          max_size=5))))
def test_proc_net_tcp_parses_kernel_lines(case: tuple[bool, list[tuple[str, Any, int]]]
                                          ) -> None:
    ipv6, lines = case
    header = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt"
    for line, expected, port in lines:
        rows = parse_proc_net_tcp(f"{header}\n{line}\n", ipv6, [port])
        assert rows == ([expected] if expected is not None else [])


@st.composite
def mutated_proc_texts(draw: st.DrawFn) -> tuple[str, set[int]]:
    ports = set(draw(st.sets(st.integers(0, 65535), max_size=3)))
    if draw(st.integers(0, 3)) == 0:
        lines = draw(st.lists(short_hostile_text, max_size=6))
        return "\n".join(lines), ports
    line = draw(st.one_of(st.sampled_from(REAL_LINES), proc_lines(False).map(lambda c: c[0]),
                          proc_lines(True).map(lambda c: c[0])))
    ports.add(int(line.split()[2][-4:], 16))  # the unmutated line's remote port is watched
    for _ in range(draw(st.integers(1, 5))):
        at = draw(st.integers(0, len(line)))
        line = line[:at] + draw(short_hostile_text) + line[at + 1:]
    return line, ports


@FUZZ
@given(mutated_proc_texts(), st.booleans())
def test_proc_net_tcp_mutated_and_random_lines_never_raise(case: tuple[str, set[int]],
                                                          ipv6: bool) -> None:
    text, ports = case
    check_proc_rows(parse_proc_net_tcp(text, ipv6, ports), ports)


# --- processlist HOST and rows ---------------------------------------------------------


@FUZZ
@given(st.one_of(
    short_hostile_text.map(lambda text: (text, None)),
    st.tuples(short_hostile_text, st.integers(-10, 70000)).map(
        lambda c: (f"{c[0]}:{c[1]}", None)),
    st.tuples(short_hostile_text, st.text(max_size=8)).map(lambda c: (f"[{c[0]}]:{c[1]}", None)),
    st.tuples(st.ip_addresses(), st.integers(1, 65535), st.booleans()).map(
        lambda c: (f"[{c[0]}]:{c[1]}" if c[2] and c[0].version == 6 else f"{c[0]}:{c[1]}",
                   Endpoint(normalise_ip(str(c[0])), c[1]))),
))
def test_processlist_host_never_raises_and_round_trips(case: tuple[str, Endpoint | None]
                                                       ) -> None:
    host, expected = case
    result = parse_processlist_host(host)
    if expected is not None:
        assert result == expected
    if result is not None:
        assert isinstance(result, Endpoint)
        assert 0 < result.port < 65536 and result.ip


column = st.one_of(
    st.none(), st.booleans(), st.integers(), st.integers(-(10**400), 10**400),
    st.floats(allow_nan=True, allow_infinity=True),
    st.decimals(allow_nan=True, allow_infinity=True), st.just(Decimal("sNaN")),
    hostile_text, st.binary(max_size=64), st.sampled_from([b"\xff\xfe", b"127.0.0.1:3306"]),
    st.builds(lambda ip, port: f"{ip}:{port}", st.ip_addresses(), st.integers(-5, 70000)),
)


def check_session(row: list[object], session: Session | None) -> None:
    if session is None:
        return
    assert isinstance(session.id, int) and session.id >= 0
    assert isinstance(session.user, str) and isinstance(session.command, str)
    assert session.db is None or isinstance(session.db, str)
    assert math.isfinite(session.idle_seconds) and session.idle_seconds >= 0
    assert session.wait_timeout is None or (math.isfinite(session.wait_timeout)
                                            and session.wait_timeout > 0)
    if session.client is not None:
        assert 0 < session.client.port < 65536
    padded = (row + [None] * 10)[:10]
    if isinstance(padded[1], str):
        assert session.user == padded[1]  # hostile user names survive unchanged
    if isinstance(padded[3], str):
        assert session.db == padded[3]


@FUZZ
@given(st.lists(st.lists(column, min_size=0, max_size=12), max_size=3),
       st.one_of(st.none(), st.frozensets(st.one_of(st.ip_addresses().map(str),
                                                    short_hostile_text), max_size=3)),
       st.booleans())
def test_processlist_rows_never_raise(rows: list[list[object]],
                                      client_ips: frozenset[str] | None,
                                      names_resolved: bool) -> None:
    for row in rows:
        check_session(row, row_to_session(row))
    sessions = rows_to_sessions(rows, own_ids=frozenset({1}), client_ips=client_ips,
                                names_resolved=names_resolved)
    assert all(s.id != 1 for s in sessions)


# --- my.cnf ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def scratch() -> Iterator[Path]:
    directory = Path(tempfile.mkdtemp(prefix="fuzz-"))
    (directory / "readable.pem").write_text("not a certificate\n")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-keyout", "key.pem", "-out", "cert.pem", "-subj", "/CN=fuzz"],
                   cwd=directory, capture_output=True, check=True, timeout=60)
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


OPTION_NAMES = ("user", "password", "host", "port", "socket", "ssl-ca", "ssl_capath",
                "ssl-cert", "ssl-key", "ssl-mode", "ssl", "skip-ssl", "disable-ssl",
                "enable-ssl", "ssl-verify-server-cert", "skip-ssl-verify-server-cert",
                "loose-ssl-ca", "LOOSE_SSL_MODE", "Port", "ssl-skip-verification")
option_values = st.one_of(
    hostile_text.filter(lambda t: "\n" not in t and "\r" not in t and len(t) < 200),
    st.sampled_from(["VERIFY_IDENTITY", "verify_ca", "required", "DISABLED", "preferred",
                     "on", "OFF", "0", "1", "yes", "3306", "0", "65536", "1" * 5000,
                     "\u0663\u0663", "'quoted # not a comment'", '"a\\"b"', "x # comment",
                     "{readable}", "{readable}\0", "{missing}"]),
)


@st.composite
def my_cnf_texts(draw: st.DrawFn) -> bytes:
    lines = []
    for _ in range(draw(st.integers(0, 8))):
        kind = draw(st.integers(0, 9))
        if kind == 0:
            lines.append(draw(st.sampled_from(["[client]", "[mysqld]", "[client", "[]",
                                               "[ client ]", "[CLIENT]"])))
        elif kind == 1:
            lines.append(draw(st.sampled_from(["# comment", "; comment", "", "   ",
                                               "!include /etc/x.cnf", "!includedir /etc"])))
        elif kind == 2:
            lines.append(draw(st.text(max_size=60)))
        elif kind == 3:
            lines.append(f"password={json.dumps(CANARY)}")
        else:
            name = draw(st.sampled_from(OPTION_NAMES))
            value = draw(st.one_of(st.none(), option_values))
            space = draw(st.sampled_from(["", " ", "\t"]))
            lines.append(name if value is None else f"{space}{name}{space}={space}{value}")
    if draw(st.booleans()):
        lines.insert(0, "[client]")
    text = "\n".join(lines).encode("utf-8", "surrogatepass")
    return text + draw(st.sampled_from([b"", b"\n", b"\xff\xfe\n", b"\0"]))


def check_config_error(error: ConfigError) -> None:
    message = str(error)
    assert message and "\n" not in message, repr(message)
    assert CANARY[:14] not in message, message


@FUZZ
@given(st.one_of(my_cnf_texts(), st.binary(max_size=3000)), st.one_of(st.none(), st.text()))
def test_my_cnf_only_raises_config_error(scratch: Path, content: bytes, user: str | None
                                         ) -> None:
    content = (content.replace(b"{readable}", str(scratch / "readable.pem").encode())
               .replace(b"{missing}", str(scratch / "missing.pem").encode()))
    path = scratch / "my.cnf"
    path.write_bytes(content)
    try:
        options = read_my_cnf(path)
    except ConfigError as error:
        check_config_error(error)
    else:
        assert all(isinstance(k, str) and (v is None or isinstance(v, str))
                   for k, v in options.items())
    try:
        creds = load_credentials(user=user, my_cnf=path, environ={})
    except ConfigError as error:
        check_config_error(error)
    else:
        assert creds.user
        assert CANARY[:14] not in repr(creds)


# --- web config ------------------------------------------------------------------------

_HASH = bcrypt.hashpw(b"secret", bcrypt.gensalt(rounds=4)).decode()
WEB_KEYS = ("tls_server_config", "basic_auth_users", "http_server_config", "cert_file",
            "key_file", "client_auth_type", "client_ca_file", "min_version", "max_version",
            "headers", "http2", "cipher_suites", "{other}")
yaml_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True),
    hostile_text.filter(lambda t: len(t) < 200),
    st.sampled_from([_HASH, "$2b$04$garbage", "$2y$10$" + "a" * 53, "TLS12", "TLS13", "TLS99",
                     "RequireAndVerifyClientCert", "NoClientCert", "{cert}", "{key}",
                     "{cert}\0", "relative.pem", "X-Frame-Options", "a\r\nInjected: 1"]),
)
yaml_values = st.recursive(
    yaml_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.one_of(st.sampled_from(WEB_KEYS), st.text(max_size=10),
                                  st.integers()), inner, max_size=5),
    ),
    max_leaves=10,
)


@st.composite
def web_config_files(draw: st.DrawFn) -> bytes:
    choice = draw(st.integers(0, 5))
    if choice == 0:
        return draw(st.binary(max_size=500))
    if choice == 1:
        return draw(st.text(max_size=300)).encode("utf-8", "surrogatepass")
    if choice == 2:
        depth = draw(st.sampled_from([1, 10, 200, 1200]))
        return (draw(st.sampled_from(["[", "{a: ", "- "])) * depth).encode()
    document: Any
    if choice == 3:
        document = {
            "basic_auth_users": draw(st.dictionaries(hostile_text.filter(lambda t: len(t) < 30),
                                                     yaml_scalars, max_size=3)),
            "http_server_config": {"headers": draw(st.dictionaries(
                st.one_of(st.sampled_from(["X-Frame-Options", "Bad Name", "X-A\r\n"]),
                          st.text(max_size=10)), yaml_scalars, max_size=3))},
        }
    elif choice == 4:
        document = {"tls_server_config": draw(st.dictionaries(st.sampled_from(WEB_KEYS),
                                                              yaml_scalars, max_size=6))}
    else:
        document = draw(yaml_values)
    try:
        text = yaml.safe_dump(document, allow_unicode=True)
    except (yaml.YAMLError, UnicodeEncodeError):
        text = yaml.safe_dump(document, allow_unicode=False)
    return text.encode("utf-8", "surrogatepass")


@FUZZ
@given(web_config_files())
def test_web_config_only_raises_web_config_error(scratch: Path, content: bytes) -> None:
    content = (content.replace(b"{cert}", str(scratch / "cert.pem").encode())
               .replace(b"{key}", str(scratch / "key.pem").encode()))
    path = scratch / "web.yml"
    path.write_bytes(content)
    try:
        config = load_web_config(path)
    except WebConfigError as error:
        assert str(error)
        return
    assert isinstance(config, WebConfig)
    # A configuration that loads never breaks a request later.
    if config.basic_auth is not None:
        for user in config.basic_auth.users:
            assert config.basic_auth.verify(user, "secret") in (True, False)
            assert config.basic_auth.verify(user, "wrong") is False
    for name, value in config.headers.items():
        assert name and all(33 <= ord(c) < 127 and c not in '()<>@,;:\\"/[]?={}'
                            for c in name), repr(name)
        assert not set(value) & {"\r", "\n", "\0"}, repr(value)


# --- fleet -----------------------------------------------------------------------------

json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.integers(-(10**400), 10**400),
    st.floats(allow_nan=True, allow_infinity=True), short_hostile_text,
)
json_values = st.recursive(json_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=8)
SESSION_KEYS = ("id", "ip", "port", "user", "db", "command", "idle_seconds", "wait_timeout")


@st.composite
def fleet_documents(draw: st.DrawFn) -> Any:
    if draw(st.integers(0, 3)) == 0:
        return draw(json_values)
    session = {"id": 7, "ip": "10.0.0.9", "port": 5000, "user": "app", "db": "shop",
               "command": "Sleep", "idle_seconds": 12.5, "wait_timeout": None}
    document: dict[str, Any] = {
        "version": 1, "target": "db:3306", "ok": True, "error": None, "flavor": "mariadb",
        "server_version": "10.11", "source": "information_schema", "wait_timeout": 600,
        "interactive_timeout": 28800, "full_view": True, "per_session_timeouts": False,
        "age_seconds": 1.5, "sessions": [dict(session) for _ in range(draw(st.integers(0, 3)))],
    }
    for _ in range(draw(st.integers(0, 4))):
        value = draw(json_values)
        rows = document["sessions"]
        if isinstance(rows, list) and rows and isinstance(rows[0], dict) and draw(st.booleans()):
            rows[0][draw(st.sampled_from(SESSION_KEYS))] = value
        else:
            document[draw(st.sampled_from(sorted(document)))] = value
    return document


@FUZZ
@given(fleet_documents(), st.booleans())
def test_fleet_documents_only_raise_fleet_format_error(document: Any, via_json: bool
                                                       ) -> None:
    if via_json:  # what FleetSessionSource really hands over: parsed JSON text
        try:
            document = json.loads(json.dumps(document))
        except (ValueError, RecursionError):
            return
    try:
        view = decode_view(document, 1000.0)
    except FleetFormatError as error:
        assert str(error)
        return
    assert isinstance(view, ServerView)
    numbers = [view.read_at, view.wait_timeout, view.interactive_timeout]
    for session in view.sessions:
        numbers += [session.idle_seconds, session.wait_timeout]
    assert all(n is None or math.isfinite(n) for n in numbers), numbers


# --- process command lines -------------------------------------------------------------

SAFE_LABEL = re.compile(rf"[A-Za-z0-9_.:/@+-]{{1,{MAX_LENGTH}}}")
interpreter_names = st.sampled_from(["python3", "python3.11", "pypy3", "node", "java", "ruby",
                                     "perl", "php8.2", "mariadb", "demo-worker"])
# Words a command line may hold: every option the parser knows of, and hostile text.
cmdline_words = st.one_of(
    hostile_text,
    st.sampled_from(["-m", "-c", "-W", "-X", "-", "--", "-jar", "-cp", "--module", "-m", "@a",
                     "-r", "-e", "-I", "-f", "-d", "-S", "-um", "-wle", "-mx", "..", "/", ".",
                     "a/manage.py", "x.jar", "--module=a/", "-Wx", "-dx=1", "--require=x"]),
)


def assert_safe_label(name: str, label: str) -> None:
    # The process's own name (rendered as it always was), or a short label in safe
    # characters that is not just punctuation.
    assert label == name or (SAFE_LABEL.fullmatch(label) and label.strip("._/-:")), label


@FUZZ
@given(interpreter_names, st.lists(cmdline_words, max_size=12))
def test_application_names_are_short_and_safe(name: str, words: list[str]) -> None:
    assert_safe_label(name, application_name(name, [name, *words]))


@FUZZ
@given(interpreter_names, st.binary(max_size=400))
def test_application_names_from_raw_command_lines(name: str, raw: bytes) -> None:
    assert_safe_label(name, application_name(name, split_cmdline(raw)))


# --- rendering hostile names ------------------------------------------------------------

name_text = st.one_of(
    st.text(alphabet=any_char, max_size=30),
    st.sampled_from(['a"b\\c\nd', "\0", "é😀", "\udcff\udcfe", "{x=\"1\"}", "# HELP x",
                     "x} 1\nfake_metric 1", "", "\\", '\\"', "\\n"]),
)


@st.composite
def hostile_snapshots(draw: st.DrawFn) -> tuple[Snapshot, list[tuple[str, str, str]]]:
    sockets, sessions, names = [], [], []
    for index in range(draw(st.integers(1, 4))):
        process, user = draw(name_text), draw(name_text)
        db = draw(st.one_of(st.none(), name_text))
        command = draw(st.sampled_from(["Sleep", "Sleep", "Query"]))
        idle = draw(st.floats(0, 1000))
        port = 5000 + index
        sockets.append(Socket(Endpoint("10.0.0.9", port), Endpoint("10.0.0.5", 3306),
                              draw(st.sampled_from([TcpState.ESTABLISHED, TcpState.CLOSE_WAIT])),
                              inode=port, uid=0, idle_seconds=idle, pid=100 + index,
                              process=process, comm=draw(name_text)))
        if draw(st.booleans()):
            sessions.append(Session(index + 1, Endpoint("10.0.0.9", port), user, db, command,
                                    idle))
            names.append((process, user, db or ""))
    target = draw(st.sampled_from(["db:3306", "[::1]:3306"]))
    server = ServerView(target, True, flavor=Flavor.MARIADB, version=draw(name_text),
                        source="information_schema", wait_timeout=600.0,
                        interactive_timeout=28800.0, sessions=tuple(sessions), read_at=1000.0)
    snap, _ = correlate(target, sockets, server, Settings(risk_headroom=300), Memory(), 1000.0)
    return Snapshot((report(snap, durations={"total": 0.01}),), collections=1), names


def render_both(snapshot: Snapshot) -> tuple[str, str]:
    """Both formats as /metrics writes them (exporter.exposition), checked byte for byte
    against prometheus_client's own encoders."""
    collector = SnapshotCollector(snapshot)
    text, openmetrics = write(collector.families(), openmetrics=False), write(
        collector.families(), openmetrics=True) + b"# EOF\n"
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    assert text == generate_latest(registry)
    assert openmetrics == generate_openmetrics(registry)
    return text.decode(), openmetrics.decode()


# Rendering is a hundred times slower than parsing: a smaller budget.
@settings(FUZZ, max_examples=int(os.environ.get("FUZZ_EXAMPLES", "250")))
@given(hostile_snapshots())
def test_hostile_names_render_in_both_formats(case: tuple[Snapshot, list[Any]]) -> None:
    snapshot, names = case
    text, openmetrics = render_both(snapshot)
    assert openmetrics.endswith("# EOF\n")
    for families in (list(parse_text(text)), list(parse_openmetrics(openmetrics))):
        labels = [s.labels for f in families for s in f.samples
                  if s.name == "mysql_idle_session_headroom_seconds"]
        found = {(lab["process"], lab["user"], lab["db"]) for lab in labels}
        expected = {tuple(replace_surrogates(n) for n in triple) for triple in names}
        assert found <= expected, (found, expected)
        # No label value can smuggle in a metric of its own.
        assert not [f for f in families if "fake" in f.name]


def test_100_kb_names_render_in_both_formats() -> None:
    """Two processes with 100 kB names (one not valid UTF-8), a 100 kB user and database."""
    processes = (BIG[0], BIG[3])
    sockets = [Socket(Endpoint("10.0.0.9", 6000 + i), Endpoint("10.0.0.5", 3306),
                      TcpState.ESTABLISHED, inode=6000 + i, uid=0, idle_seconds=5.0,
                      pid=200 + i, process=name) for i, name in enumerate(processes)]
    sessions = (Session(1, Endpoint("10.0.0.9", 6000), BIG[1], BIG[2], "Sleep", 5.0),
                Session(2, Endpoint("10.0.0.9", 6001), "app", None, "Sleep", 5.0))
    server = ServerView("db:3306", True, flavor=Flavor.MARIADB, version="10.11",
                        source="information_schema", wait_timeout=600.0, sessions=sessions,
                        read_at=1000.0)
    snap, _ = correlate("db:3306", sockets, server, Settings(), Memory(), 1000.0)
    text, openmetrics = render_both(snapshot_of(snap))
    for families in (parse_text(text), parse_openmetrics(openmetrics)):
        found = {(s.labels["process"], s.labels["user"], s.labels["db"])
                 for f in families for s in f.samples
                 if s.name == "mysql_idle_session_headroom_seconds"}
        assert found == {(BIG[0], BIG[1], BIG[2]), (replace_surrogates(BIG[3]), "app", "")}
    assert promtool_check(text).strip() == ""


PROMTOOL = shutil.which("promtool")


def promtool_check(text: str) -> str:
    assert PROMTOOL, "promtool is needed (apt-get install prometheus)"
    result = subprocess.run([PROMTOOL, "check", "metrics"], input=text.encode(),
                            capture_output=True, timeout=60, check=False)
    output = (result.stdout + result.stderr).decode(errors="replace")
    assert result.returncode == 0, f"promtool check metrics failed:\n{output}"
    return output


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(hostile_snapshots())
def test_promtool_accepts_hostile_names(case: tuple[Snapshot, list[Any]]) -> None:
    text, _ = render_both(case[0])
    # Lint findings would be printed (and fail the exit code): there must be none.
    assert promtool_check(text).strip() == ""


# --- the live exporter -----------------------------------------------------------------

HOSTILE_NAME = b'ev"l\\\n\xff\xfe}{'  # 10 bytes: comm keeps all of it
HOSTILE_WORKER = """
import ctypes, os, sys, pymysql
ctypes.CDLL(None).prctl(15, {name!r}, 0, 0, 0)
conn = pymysql.connect(host="127.0.0.1", port={port}, user={user!r}, password={password!r},
                       ssl_disabled=True)
conn.cursor().execute("SELECT 1")
print("ready", flush=True)
sys.stdin.read()
"""


@pytest.mark.mariadb
def test_promtool_accepts_the_live_metrics(mariadb_factory: Any) -> None:
    """The real exporter, a throwaway server, a worker and an application whose process
    name is not even valid UTF-8: /metrics answers, and promtool finds nothing to say."""
    from tests.support.exporter_process import ExporterProcess, Worker, parse

    server = mariadb_factory()
    app = server.create_user("live_app", grants=())
    worker = Worker("live-app", "127.0.0.1", server.port, app.user, app.password, 2)
    hostile = subprocess.Popen(
        [sys.executable, "-c", HOSTILE_WORKER.format(name=HOSTILE_NAME, port=server.port,
                                                     user=app.user, password=app.password)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    target = f"127.0.0.1:{server.port}"
    exporter = ExporterProcess([f"--mysql.address={target}",
                                f"--mysql.user={server.exporter_user}"],
                               env={"MYSQL_IDLE_EXPORTER_PASSWORD": server.exporter_password})
    try:
        assert hostile.stdout is not None and hostile.stdout.readline().strip() == "ready"
        hostile_name = os.fsdecode(HOSTILE_NAME)
        assert Path(f"/proc/{hostile.pid}/comm").read_bytes().rstrip(b"\n") == HOSTILE_NAME
        exporter.start()
        for _ in range(2):
            status, text = exporter.get("/metrics")
            assert status == 200, text[:2000]
        status, openmetrics = exporter.get(
            "/metrics", {"Accept": "application/openmetrics-text; version=1.0.0"})
        assert status == 200, openmetrics[:2000]
    finally:
        exporter.stop()
        worker.close()
        hostile.kill()
        hostile.wait(10)
    metrics = parse(text)
    assert metrics.get("mysql_idle_up", target=target) == 1
    assert metrics.get("mysql_idle_sessions", target=target, state="idle",
                       process="live-app") == 2
    assert metrics.get("mysql_idle_sessions", target=target, state="idle",
                       process=replace_surrogates(hostile_name)) == 1, text
    list(parse_openmetrics(openmetrics))
    assert promtool_check(text).strip() == ""

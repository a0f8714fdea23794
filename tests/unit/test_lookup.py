"""exporter.sockets.lookup: the known sockets looked up one by one between dumps of the
kernel's whole table; on the real kernel, on loopback only."""

from __future__ import annotations

import errno
import socket
import time
from pathlib import Path

import pytest

from exporter.config import parse_config
from exporter.model import Endpoint, TcpState
from exporter.sockets import lookup, netlink
from exporter.sockets.kernel import KernelSocket
from exporter.sockets.lookup import KnownSockets, active_opens, must_dump
from tests.support.builders import soon
from tests.support.loopback import Loopback, inode_of, loopback
from tests.support.scrapes import PASSWORD_ENV

# --- when to dump: a pure decision ------------------------------------------------------

NOW = dict(opens=52, opens_at_dump=52, age=10.0, max_age=60.0)


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({}, None),
        ({"known": None}, "first"),
        ({"max_age": 0.0}, "every read"),
        ({"opens": None}, "no connection count"),
        ({"opens_at_dump": None}, "no connection count"),
        ({"opens": 53}, "a connection was opened"),
        ({"opens": 51}, "a connection was opened"),  # another namespace's /proc: dump
        ({"age": 60.0}, "age"),
        ({"age": 59.9}, None),
        ({"known": lookup.MAX_LOOKUPS}, None),
        ({"known": lookup.MAX_LOOKUPS + 1}, "too many sockets"),
        ({"known": 0}, None),
    ],
)
def test_when_the_whole_table_is_dumped(changes: dict[str, object], reason: str | None) -> None:
    arguments: dict[str, object] = {"known": 10, **NOW, **changes}
    assert must_dump(**arguments) == reason  # type: ignore[arg-type]


SNMP_HEAD = "Ip: Forwarding DefaultTTL\nIp: 1 64\n"
TCP_NAMES = "Tcp: RtoAlgorithm RtoMin ActiveOpens PassiveOpens CurrEstab"


@pytest.mark.parametrize(
    ("text", "opens"),
    [
        (f"{SNMP_HEAD}{TCP_NAMES}\nTcp: 1 200 53492 52844 12\nUdp: InDatagrams\nUdp: 3\n",
         53492),
        (f"{TCP_NAMES}\nTcp: 1 200 0 0 0\n", 0),
        (f"{TCP_NAMES}\nTcp: 1 200 x 0 0\n", None),
        (f"{TCP_NAMES}\nTcp: 1 200 7 0\n", None),  # a value short
        (f"{TCP_NAMES}\n", None),
        ("Tcp: RtoAlgorithm PassiveOpens\nTcp: 1 2\n", None),
        ("", None),
    ],
)
def test_active_opens_from_snmp(tmp_path: Path, text: str, opens: int | None) -> None:
    (tmp_path / "snmp").write_text(text)
    assert active_opens(str(tmp_path / "snmp")) == opens
    assert active_opens(str(tmp_path / "missing")) is None


def test_this_namespace_counts_a_connection_it_opens() -> None:
    before = active_opens()
    assert before is not None
    with loopback() as net:
        port = net.listen()
        net.connect(port)
        after = active_opens()
    assert after is not None and after >= before + 1


def test_the_flag_is_a_duration_and_zero_means_every_scrape() -> None:
    assert parse_config(["--sockets.dump-interval=5m"]).sockets_dump_interval == 300.0
    assert parse_config([]).sockets_dump_interval == 60.0
    assert parse_config(["--sockets.dump-interval=0"]).sockets_dump_interval == 0.0


# --- on the real kernel -----------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def no_new_connections(clock: Clock | None = None) -> KnownSockets:
    """KnownSockets (60 s between dumps) whose count of opened connections never moves:
    only the lookups can tell what changed."""
    return KnownSockets(60.0, clock=clock if clock is not None else Clock(), opens=lambda: 7)


def rows_of(rows: list[KernelSocket], ours: set[int]) -> dict[int, KernelSocket]:
    return {row.inode: row for row in rows if row.inode in ours}


def open_pairs(net: Loopback, count: int) -> tuple[int, list[tuple[socket.socket, socket.socket]]]:
    port = net.listen()
    return port, [net.connect(port) for _ in range(count)]


def test_a_quiet_namespace_is_looked_up_not_dumped_with_fresh_idle_times() -> None:
    with loopback() as net:
        port, pairs = open_pairs(net, 3)
        port6 = net.listen(socket.AF_INET6, "::1")
        pairs.append(net.connect(port6, "::1", socket.AF_INET6))
        pairs.append(net.connect(port, "::ffff:127.0.0.1", socket.AF_INET6))
        ours = {inode_of(client) for client, _ in pairs}
        clock = Clock()
        known = no_new_connections(clock)
        dumped = known([port, port6], soon())
        assert (known.dumps, known.lookups, known.last_reason) == (1, 0, "first")
        assert set(rows_of(dumped, ours)) == ours

        time.sleep(0.3)
        pairs[0][0].sendall(b"x")  # one of them speaks: its idle time starts again
        assert pairs[0][1].recv(1) == b"x"
        clock.now += 30
        looked = known([port, port6], soon())
        assert (known.dumps, known.lookups, known.last_reason) == (1, 1, None)
        # The same sockets, as the kernel has them now.
        assert [(r.local, r.remote, r.state, r.inode) for r in looked] == [
            (r.local, r.remote, r.state, r.inode) for r in dumped]
        fresh, old = rows_of(looked, ours), rows_of(dumped, ours)
        spoke = inode_of(pairs[0][0])
        assert fresh[spoke].idle_seconds is not None and fresh[spoke].idle_seconds < 0.3
        for inode in ours - {spoke}:
            assert fresh[inode].idle_seconds >= old[inode].idle_seconds + 0.29  # type: ignore[operator]
        mapped = pairs[-1][0]
        assert fresh[inode_of(mapped)].local == Endpoint("127.0.0.1", mapped.getsockname()[1])
        known.close()


def test_a_server_that_closes_is_seen_at_once_by_the_lookup() -> None:
    with loopback() as net:
        port, pairs = open_pairs(net, 2)
        known = no_new_connections()
        known([port], soon())
        pairs[0][1].close()  # the server's end: the client's socket goes to CLOSE_WAIT
        deadline = time.monotonic() + 2
        state = TcpState.ESTABLISHED
        while state is TcpState.ESTABLISHED and time.monotonic() < deadline:
            state = rows_of(known([port], soon()), {inode_of(pairs[0][0])})[
                inode_of(pairs[0][0])].state
        assert state is TcpState.CLOSE_WAIT
        assert known.dumps == 1 and known.lookups >= 1
        known.close()


def test_a_new_connection_is_dumped_at_the_next_read() -> None:
    with loopback() as net:
        port, _ = open_pairs(net, 1)
        known = KnownSockets(60.0, clock=Clock())
        known([port], soon())
        client, _ = net.connect(port)
        rows = known([port], soon())
        assert known.last_reason == "a connection was opened"
        assert inode_of(client) in {row.inode for row in rows}
        known.close()


@pytest.mark.parametrize("how", ["orphaned", "reset"])
def test_a_known_socket_that_changed_identity_makes_a_dump(how: str) -> None:
    with loopback() as net:
        port, pairs = open_pairs(net, 2)
        # No connection is opened: only the lookup can tell.
        known = no_new_connections()
        known([port], soon())
        client = pairs[0][0]
        inode = inode_of(client)
        if how == "reset":
            # SO_LINGER 0: close sends RST and the socket leaves the table.
            client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00" * 2)
        client.close()  # orphaned: FIN_WAIT with inode 0, no longer the same socket
        rows = known([port], soon())
        assert known.last_reason == "a known socket changed"
        assert known.dumps == 2
        assert inode not in {row.inode for row in rows}
        assert inode_of(pairs[1][0]) in {row.inode for row in rows}
        known.close()


def test_a_connection_no_count_shows_is_found_by_the_dump_after_max_age() -> None:
    # What max_age is for: a socket the counter did not announce (here: a counter that
    # never moves) is found at the latest max_age after the last dump.
    with loopback() as net:
        port, _ = open_pairs(net, 1)
        clock = Clock()
        known = no_new_connections(clock)
        known([port], soon())
        client, _ = net.connect(port)
        assert inode_of(client) not in {row.inode for row in known([port], soon())}
        clock.now += 60
        assert inode_of(client) in {row.inode for row in known([port], soon())}
        assert known.last_reason == "age"
        known.close()


def test_lookups_span_batches() -> None:
    with loopback() as net:
        port, pairs = open_pairs(net, lookup._BATCH * 2 + 3)
        ours = {inode_of(client) for client, _ in pairs}
        known = no_new_connections()
        dumped = known([port], soon())
        looked = known([port], soon())
        assert known.lookups == 1
        assert set(rows_of(looked, ours)) == ours
        assert [r.inode for r in looked] == [r.inode for r in dumped]
        known.close()


def test_no_counter_or_other_ports_or_interval_zero_dump_every_time() -> None:
    with loopback() as net:
        port, _ = open_pairs(net, 1)
        other = net.listen()
        for known, ports in [
            (KnownSockets(60.0, clock=Clock(), opens=lambda: None), [[port], [port]]),
            (KnownSockets(0.0, clock=Clock()), [[port], [port]]),
            (no_new_connections(), [[port], [port, other]]),
        ]:
            for asked in ports:
                known(asked, soon())
            assert (known.dumps, known.lookups) == (2, 0)
            known.close()


def test_a_kernel_refusing_lookups_is_dumped_from_then_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def refuse(*_: object) -> None:
        raise netlink.NetlinkError(errno.EINVAL, "Invalid argument")

    with loopback() as net:
        port, pairs = open_pairs(net, 1)
        known = no_new_connections()
        known([port], soon())
        monkeypatch.setattr(lookup, "look_up", refuse)
        for _ in range(3):
            assert inode_of(pairs[0][0]) in {row.inode for row in known([port], soon())}
        assert (known.dumps, known.lookups) == (4, 0)
        known.close()


def test_a_lookup_past_its_deadline_fails_like_a_dump() -> None:
    with loopback() as net:
        port, _ = open_pairs(net, 1)
        known = no_new_connections()
        known([port], soon())
        with pytest.raises(netlink.NetlinkError) as raised:
            known([port], soon(0))
        assert raised.value.errno == errno.ETIMEDOUT
        # The next read, in time, works (from a fresh channel).
        assert len(known([port], soon())) >= 1
        known.close()


def test_the_exporter_looks_sockets_up_between_dumps() -> None:
    from exporter.cli import build_exporter

    exporter = build_exporter(
        parse_config(["--sockets.dump-interval=90s", "--mysql.user=u"]), {PASSWORD_ENV: "pw"})
    try:
        dump = exporter.engine._sockets._dump  # type: ignore[union-attr]
        assert isinstance(dump, KnownSockets) and dump._max_age == 90.0
    finally:
        exporter.close()


def test_a_node_exporter_looks_each_namespaces_sockets_up_between_dumps() -> None:
    from exporter.cli import build_exporter
    from exporter.node.reader import NodeSocketReader

    exporter = build_exporter(
        parse_config(["--mode=node", "--sockets.dump-interval=90s", "--mysql.user=u"]),
        {PASSWORD_ENV: "pw"})
    try:
        sockets = exporter.engine._sockets
        assert isinstance(sockets, NodeSocketReader) and sockets._dump_interval == 90.0
    finally:
        exporter.close()

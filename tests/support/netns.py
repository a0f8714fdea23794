"""Two network namespaces joined by a veth pair, with nftables to play a middlebox.

    with NetnsPair() as pair:
        db = server_in_namespace(ThrowawayMySQL, pair).start()  # mysqld in pair.server_ns
        worker = NsWorker(pair, "app", db.host, db.port, "app", password)  # client ns
        exporter = NsExporterProcess(pair, [...]).start()                  # client ns
        pair.block_server_teardown(db.port)   # the server's FIN and RST never arrive
        pair.drop_all()                        # the path swallows everything
        pair.unblock()

Everything that talks TCP to the server runs in the client namespace (`ip netns exec`);
the test process itself stays in the root namespace and reaches the server through its
unix socket (path sockets work across network namespaces) and the exporter through a TCP
socket opened inside the client namespace by a helper thread (`setns` changes only the
calling thread). Names carry a random tag (`mie-srv-<tag>`, `mie-cli-<tag>`) and the
addresses are a random 10.231.x.y/30 that exists only inside the two namespaces, so
parallel runs do not collide and no traffic leaves them. `close()` (also on a failed
setup) kills what still runs in the namespaces, deletes the nft tables and the namespaces;
the veth pair goes with them.

`NetnsStar` builds many client namespaces around one server namespace, for fleet tests
(many watchers of one database, each seen by the server from its own address):

    with NetnsStar(clients=3) as star:
        db = server_in_namespace(ThrowawayMariaDB, star).start()  # on every server address
        for leg in star.legs:                            # one client namespace each
            NsWorker(leg, "app", star.db_addr, db.port, "app", password)
            NsExporterProcess(leg, [f"--mysql.address={star.db_addr}:{db.port}", ...])
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import http.client
import ipaddress
import os
import random
import re
import secrets
import signal
import socket
import subprocess
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import pytest

from exporter.throwaway import ThrowawayServer
from tests.support.exporter_process import ExporterProcess, Worker
from tests.support.servers import TestServer

CLONE_NEWNET = 0x40000000
NETNS_DIR = "/run/netns"
T = TypeVar("T")


class NetnsError(RuntimeError):
    """A namespace, veth or nftables command failed."""


def _run(argv: Sequence[str], check: bool = True) -> subprocess.CompletedProcess[str]:
    try:
        result = subprocess.run(list(argv), capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as error:
        raise NetnsError(f"{' '.join(argv)}: {error}") from error
    if check and result.returncode != 0:
        raise NetnsError(f"{' '.join(argv)}: {(result.stderr or result.stdout).strip()}")
    return result


def _kill_in_namespace(ns: str) -> None:
    """SIGKILL whatever still runs inside namespace `ns` (ours: started by a test)."""
    listing = _run(["ip", "netns", "pids", ns], check=False).stdout.split()
    for pid in (int(p) for p in listing if p.isdigit()):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)
            os.kill(pid, signal.SIGKILL)


def _stop_processes(processes: list[subprocess.Popen[Any]]) -> None:
    for process in processes:
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=5)


class _Namespaces:
    """Running things inside network namespaces: commands, and sockets from a helper thread."""

    def __init__(self) -> None:
        self._processes: list[subprocess.Popen[Any]] = []

    @staticmethod
    def prefix(ns: str) -> list[str]:
        return ["ip", "netns", "exec", ns]

    def run_in(self, ns: str, argv: Sequence[str], **popen_kwargs: Any) -> subprocess.Popen[Any]:
        """Start argv inside namespace `ns`; killed by close() if still running."""
        process: subprocess.Popen[Any] = subprocess.Popen(
            [*self.prefix(ns), *argv], **popen_kwargs)
        self._processes.append(process)
        return process

    def exec_in(self, ns: str, argv: Sequence[str]) -> str:
        """Run argv inside `ns` to completion and return its output."""
        return _run([*self.prefix(ns), *argv]).stdout

    def in_namespace(self, ns: str, function: Callable[[], T]) -> T:
        """Call `function` on a helper thread that has joined namespace `ns` (sockets it
        creates stay in that namespace; the test process's other threads are untouched)."""
        outcome: dict[str, Any] = {}

        def run() -> None:
            try:
                join_namespace(ns)
                outcome["value"] = function()
            except BaseException as error:
                outcome["error"] = error

        thread = threading.Thread(target=run, name=f"netns-{ns}", daemon=True)
        thread.start()
        thread.join()
        if "error" in outcome:
            raise outcome["error"]
        return outcome["value"]  # type: ignore[no-any-return]

    def connect(self, ns: str, address: tuple[str, int], timeout: float) -> socket.socket:
        return self.in_namespace(ns, lambda: socket.create_connection(address, timeout))

    def tcp_states(self, ns: str, port: int) -> dict[int, str]:
        """Local port -> TCP state of the sockets in `ns` whose remote port is `port`."""
        states = {}
        for line in self.exec_in(ns, ["ss", "-tanH", f"dport = :{port}"]).splitlines():
            fields = line.split()
            if len(fields) >= 4:
                states[int(fields[3].rsplit(":", 1)[1])] = fields[0]
        return states


def join_namespace(ns: str) -> None:
    """Move the calling thread (only it) into network namespace `ns`."""
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(os.path.join(NETNS_DIR, ns), os.O_RDONLY)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            error = ctypes.get_errno()
            raise OSError(error, f"setns {ns}: {os.strerror(error)}")
    finally:
        os.close(fd)


class NetnsPair(_Namespaces):
    """A server namespace and a client namespace joined by a veth pair (a /30)."""

    def __init__(self) -> None:
        super().__init__()
        tag = secrets.token_hex(3)
        self.tag = tag
        self.server_ns = f"mie-srv-{tag}"
        self.client_ns = f"mie-cli-{tag}"
        self.server_veth = f"mies{tag}"  # interface names: at most 15 characters
        self.client_veth = f"miec{tag}"
        third, fourth = random.randrange(256), random.randrange(0, 256, 4)
        self.server_addr = f"10.231.{third}.{fourth + 1}"
        self.client_addr = f"10.231.{third}.{fourth + 2}"
        self.table = f"mie_fault_{tag}"
        self._namespaces: list[str] = []

    # --- setup and cleanup ---------------------------------------------------------------

    def __enter__(self) -> NetnsPair:
        try:
            self.setup()
        except NetnsError as error:
            self.close()
            pytest.fail(
                f"cannot build the test network namespaces ({error}). The netns fault tests "
                "need root (CAP_SYS_ADMIN and CAP_NET_ADMIN), iproute2's `ip netns` and "
                "nftables (`nft`).",
                pytrace=False,
            )
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def setup(self) -> None:
        for ns in (self.server_ns, self.client_ns):
            _run(["ip", "netns", "add", ns])
            self._namespaces.append(ns)
        # Created directly inside the namespaces: nothing is ever added to the root one.
        _run(["ip", "link", "add", self.server_veth, "netns", self.server_ns, "type", "veth",
              "peer", "name", self.client_veth, "netns", self.client_ns])
        for ns, veth, addr in ((self.server_ns, self.server_veth, self.server_addr),
                               (self.client_ns, self.client_veth, self.client_addr)):
            _run([*self.prefix(ns), "ip", "link", "set", "lo", "up"])
            _run([*self.prefix(ns), "ip", "addr", "add", f"{addr}/30", "dev", veth])
            _run([*self.prefix(ns), "ip", "link", "set", veth, "up"])
            # An empty filter chain now, so a missing nft fails the setup, not a test.
            _run([*self.prefix(ns), "nft", "add", "table", "inet", self.table])
            _run([*self.prefix(ns), "nft", "add", "chain", "inet", self.table, "input",
                  "{ type filter hook input priority -150 ; policy accept ; }"])

    def close(self) -> None:
        _stop_processes(self._processes)
        for ns in self._namespaces:
            # Whatever still runs inside our own namespaces was started by this test.
            _kill_in_namespace(ns)
            _run([*self.prefix(ns), "nft", "delete", "table", "inet", self.table], check=False)
        for ns in reversed(self._namespaces):
            _run(["ip", "netns", "del", ns], check=False)
        self._namespaces.clear()

    # --- the middlebox --------------------------------------------------------------------

    def _rule(self, ns: str, rule: str) -> None:
        _run([*self.prefix(ns), "nft", "add", "rule", "inet", self.table, "input",
              *rule.split()])

    def block_server_teardown(self, port: int) -> None:
        """Drop, on arrival in the client namespace, every TCP packet from the server's
        `port` that carries FIN or RST: the client never learns the server ended a session."""
        self._rule(self.client_ns, f"ip saddr {self.server_addr} tcp sport {port} "
                                   "tcp flags & (fin | rst) != 0 counter drop")

    def drop_all(self) -> None:
        """A hung path: every packet between the two namespaces vanishes (dropped on
        arrival, so no sender gets a local error)."""
        self._rule(self.client_ns, f"ip saddr {self.server_addr} counter drop")
        self._rule(self.server_ns, f"ip saddr {self.client_addr} counter drop")

    def unblock(self) -> None:
        for ns in (self.server_ns, self.client_ns):
            _run([*self.prefix(ns), "nft", "flush", "chain", "inet", self.table, "input"])

    def dropped_packets(self) -> int:
        """Packets the rules above have dropped since they were added."""
        total = 0
        for ns in (self.server_ns, self.client_ns):
            listing = _run([*self.prefix(ns), "nft", "list", "chain", "inet", self.table,
                            "input"]).stdout
            total += sum(int(n) for n in re.findall(r"counter packets (\d+)", listing))
        return total


class NetnsStar(_Namespaces):
    """One server namespace and `clients` client namespaces around it, each joined to the
    server namespace by its own veth pair and /30, so the server sees every client
    namespace from its own address.

    The database address `db_addr` is a /32 on the server namespace's loopback, and every
    client namespace routes it through its own veth: one `--mysql.address` serves every
    watcher, as one Service address does in Kubernetes. Addresses are 10.232-239.x.y, random
    per star and present only inside its own namespaces. `close()` (also at interpreter exit,
    and on a failed setup) kills what runs inside and deletes every namespace; the veth pairs
    go with them.
    """

    def __init__(self, clients: int, *, child_ehash: int | None = None) -> None:
        """``child_ehash``: give each client namespace a TCP hash table of its own with this
        many buckets (net.ipv4.tcp_child_ehash_entries, Linux 6.1+), instead of the
        machine's shared one, whose every socket a sock_diag dump walks."""
        if not 1 <= clients <= 4000:
            raise ValueError("clients must be between 1 and 4000")
        super().__init__()
        self._child_ehash = child_ehash
        tag = secrets.token_hex(3)
        self.tag = tag
        self.server_ns = f"mie-srv-{tag}"
        blocks = (4 * (clients + 1) + 255) // 256  # /24s needed: one /30 per client, + db
        second, third = random.randrange(232, 240), random.randrange(0, 257 - blocks)
        base = ipaddress.IPv4Address(f"10.{second}.{third}.0")
        self.db_addr = str(base + 1)
        self.legs = [
            StarLeg(self, i, str(base + 4 * (i + 1) + 1), str(base + 4 * (i + 1) + 2))
            for i in range(clients)
        ]
        self._namespaces: list[str] = []
        self._closed = False
        atexit.register(self.close)

    def __enter__(self) -> NetnsStar:
        try:
            self.setup()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _add_namespace(self, ns: str, parent: str | None = None) -> None:
        if parent is None:
            _run(["ip", "netns", "add", ns])
        else:
            # Made by a process in `parent` (its tcp_child_ehash_entries applies), then named
            # from here: `ip netns add` inside `ip netns exec` would mount the name in a
            # mount namespace of its own.
            holder = subprocess.Popen(["ip", "netns", "exec", parent, "unshare", "--net",
                                       "sleep", "60"])
            try:
                for _ in range(500):  # until ip has exec'd unshare, and unshare sleep
                    with contextlib.suppress(OSError), open(f"/proc/{holder.pid}/comm") as comm:
                        if comm.read().strip() == "sleep":
                            break
                    threading.Event().wait(0.01)
                _run(["ip", "netns", "attach", ns, str(holder.pid)])
            finally:
                holder.kill()
                holder.wait()
        self._namespaces.append(ns)
        _run(["ip", "-n", ns, "link", "set", "lo", "up"])

    def setup(self) -> None:
        self._add_namespace(self.server_ns)
        parent = None
        if self._child_ehash is not None:
            parent = f"mie-p-{self.tag}"
            self._add_namespace(parent)
            _run(["ip", "netns", "exec", parent, "sysctl", "-qw",
                  f"net.ipv4.tcp_child_ehash_entries={self._child_ehash}"])
        _run(["ip", "-n", self.server_ns, "addr", "add", f"{self.db_addr}/32", "dev", "lo"])
        for leg in self.legs:
            self._add_namespace(leg.client_ns, parent)
            # Created directly inside the namespaces: nothing is ever added to the root one.
            _run(["ip", "link", "add", leg.server_veth, "netns", self.server_ns, "type",
                  "veth", "peer", "name", leg.client_veth, "netns", leg.client_ns])
            for ns, veth, addr in ((self.server_ns, leg.server_veth, leg.server_addr),
                                   (leg.client_ns, leg.client_veth, leg.client_addr)):
                _run(["ip", "-n", ns, "addr", "add", f"{addr}/30", "dev", veth])
                _run(["ip", "-n", ns, "link", "set", veth, "up"])
            _run(["ip", "-n", leg.client_ns, "route", "add", f"{self.db_addr}/32", "via",
                  leg.server_addr])

    def close(self) -> None:
        _stop_processes(self._processes)
        self._processes.clear()
        for ns in self._namespaces:
            _kill_in_namespace(ns)  # whatever still runs inside was started by us
        for ns in reversed(self._namespaces):
            _run(["ip", "netns", "del", ns], check=False)
        self._namespaces.clear()
        if not self._closed:
            self._closed = True
            atexit.unregister(self.close)


class StarLeg:
    """One client namespace of a NetnsStar, usable wherever a NetnsPair's client side is
    (NsWorker, NsExporterProcess): `client_ns`, `client_addr`, and the server's end of its
    veth, `server_addr` (the server also answers there; `star.db_addr` is the shared one)."""

    def __init__(self, star: NetnsStar, index: int, server_addr: str, client_addr: str
                 ) -> None:
        self.star = star
        self.index = index
        self.server_ns = star.server_ns
        self.client_ns = f"mie-c{index}-{star.tag}"
        self.server_veth = f"mis{index}{star.tag}"  # at most 15 characters
        self.client_veth = f"mic{index}{star.tag}"
        self.server_addr = server_addr
        self.client_addr = client_addr

    def __repr__(self) -> str:
        return f"StarLeg({self.index}, {self.client_ns}, {self.client_addr})"

    @staticmethod
    def prefix(ns: str) -> list[str]:
        return _Namespaces.prefix(ns)

    def run_in(self, ns: str, argv: Sequence[str], **popen_kwargs: Any) -> subprocess.Popen[Any]:
        return self.star.run_in(ns, argv, **popen_kwargs)

    def exec_in(self, ns: str, argv: Sequence[str]) -> str:
        return self.star.exec_in(ns, argv)

    def in_namespace(self, ns: str, function: Callable[[], T]) -> T:
        return self.star.in_namespace(ns, function)

    def connect(self, ns: str, address: tuple[str, int], timeout: float) -> socket.socket:
        return self.star.connect(ns, address, timeout)

    def tcp_states(self, ns: str, port: int) -> dict[int, str]:
        return self.star.tcp_states(ns, port)


ClientSide = NetnsPair | StarLeg


S = TypeVar("S", bound=ThrowawayServer)


def server_in_namespace(server_class: type[S], where: NetnsPair | NetnsStar,
                        extra_args: Sequence[str] = (), port: int = 3306) -> S:
    """A throwaway server of `server_class` (not started) in the server namespace: on a
    NetnsPair it listens on the server's veth address; on a NetnsStar on every address there
    (0.0.0.0: the shared `db_addr` and each leg's veth end), and `host` is `db_addr`. The
    test process reaches it through its unix socket (the veth addresses are not reachable
    from the test's namespace; the socket file is)."""
    if isinstance(where, NetnsStar):
        host, extra_args = where.db_addr, [*extra_args, "--bind-address=0.0.0.0"]
    else:
        host = where.server_addr
    return server_class(extra_args, host=host, port=port,
                        command_prefix=where.prefix(where.server_ns), via_socket=True)


class NsWorker(Worker):
    """tests/support/worker.py inside the client namespace. With ``pod``, it runs in a UTS
    namespace of its own whose host name is ``pod``, as a Kubernetes pod's processes do
    (`ip netns exec` alone makes no UTS namespace: its processes see the host's name);
    with ``uid``, as that user and group."""

    def __init__(self, pair: ClientSide, name: str, host: str, port: int, user: str,
                 password: str, connections: int = 1, *, pod: str | None = None,
                 uid: int | None = None) -> None:
        self._pair = pair
        self._pod = pod
        self._uid = uid
        super().__init__(name, host, port, user, password, connections)

    def _spawn(self, argv: list[str], **popen_kwargs: Any) -> subprocess.Popen[str]:
        if self._uid is not None:  # as another user, uid and gid ``uid``
            argv = ["setpriv", f"--reuid={self._uid}", f"--regid={self._uid}",
                    "--clear-groups", *argv]
        if self._pod is not None:
            # Each program execs the next: the worker keeps the pid Popen returns.
            argv = ["unshare", "--uts", "--", "sh", "-c", 'hostname "$0" && exec "$@"',
                    self._pod, *argv]
        return self._pair.run_in(self._pair.client_ns, argv, **popen_kwargs)


class _NsHTTPConnection(http.client.HTTPConnection):
    def __init__(self, pair: ClientSide, ns: str, host: str, port: int, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout)
        self._pair, self._ns = pair, ns

    def connect(self) -> None:
        self.sock = self._pair.connect(self._ns, (self.host, self.port), self.timeout)


class NsExporterProcess(ExporterProcess):
    """The real exporter command inside the client namespace (or `ns`), scraped from the
    test process through a socket opened in that namespace. `listen_host` (e.g. 0.0.0.0)
    makes it reachable from other namespaces, as a fleet exporter must be."""

    def __init__(self, pair: ClientSide, args: Sequence[str],
                 env: Mapping[str, str] | None = None, *, ns: str | None = None,
                 listen_host: str | None = None) -> None:
        super().__init__(args, env)
        self._ns = ns or pair.client_ns
        if listen_host is not None:  # the last --web.listen-address wins
            self.args.append(f"--web.listen-address={listen_host}:{self.port}")
        self._host = "127.0.0.1" if listen_host in (None, "0.0.0.0") else listen_host
        self.args = [*pair.prefix(self._ns), *self.args]
        self._pair = pair

    def get(self, path: str, headers: Mapping[str, str] | None = None,
            timeout: float = 15.0) -> tuple[int, str]:
        connection = _NsHTTPConnection(self._pair, self._ns, self._host, self.port, timeout)
        try:
            connection.request("GET", path, headers=dict(headers or {}))
            response = connection.getresponse()
            return response.status, response.read().decode()
        finally:
            connection.close()


@dataclass
class NetnsServer:
    """A server in its own namespace (``pair.server_ns``) with the users of
    tests.support.scrapes.create_users, whose password is ``password``."""

    pair: NetnsPair
    db: TestServer
    password: str

    @property
    def target(self) -> str:
        return f"{self.db.host}:{self.db.port}"

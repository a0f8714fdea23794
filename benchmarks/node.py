"""Node mode against sidecars: one exporter per machine watching N pods, or N sidecars.

    .venv/bin/python -m benchmarks.node --namespaces 1,10,30 --rounds 15

One server namespace with a throwaway MariaDB (plus `--other-sessions` idle sessions that no
watcher owns, over its unix socket), and up to N "pods" around it (tests/support/netns.py
NetnsStar: one network namespace each, its own address, and a worker with
`--sessions` idle connections in a UTS namespace of its own, host name `pod-I`). Per level
(N = 1, 10, 30, grown in place), fresh processes, each measured alone:

- node: one `--mode=node` exporter in the server namespace (root limited to SYS_ADMIN,
  SYS_PTRACE and DAC_READ_SEARCH, as the chart runs it), scraped `--rounds` times;
- sidecars: N local-mode exporters, one in each pod's namespace, each scraped once a round
  (what N sidecars do in one scrape interval);
- floor: `ss -tnH state all '( dport = :PORT )'` once in each pod's namespace (`ip netns
  exec`), the kernel's own listing, per round.

Every exporter reads the server at every scrape (`--server.interval=0s`), so a round's server
cost is one read per exporter. Measured: scrape wall time (median), exporter CPU per round
(utime+stime from /proc, summed over the sidecars), resident memory after the rounds (VmRSS,
summed), mariadbd's CPU per round, and server reads per round. Results go to
benchmarks/results/node-<date>.json and a table on stdout.

Runs as root. Only the namespaces it creates (private 10.x addresses inside them) and a unix
socket are used; everything it starts is stopped on exit (the namespaces' processes are
killed and the namespaces deleted by NetnsStar.close()).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import secrets
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.scale import cpu_seconds
from exporter.node.namespaces import discover
from exporter.throwaway import ThrowawayMariaDB
from tests.support.exporter_process import Metrics
from tests.support.netns import NetnsStar, NsExporterProcess, NsWorker, server_in_namespace

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results"
PASSWORD_ENV = "MYSQL_IDLE_EXPORTER_PASSWORD"
NODE_CAPS = "-all,+sys_admin,+sys_ptrace,+dac_read_search"


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def reads(metrics: Metrics) -> float:
    return sum(v for _, v in metrics.find("mysql_idle_server_reads_total"))


def phase(metrics: Metrics, name: str) -> float:
    return sum(v for _, v in metrics.find("mysql_idle_scrape_duration_seconds", phase=name))


class Bench:
    def __init__(self, star: NetnsStar, db: ThrowawayMariaDB, password: str,
                 sessions: int) -> None:
        self.star, self.db, self.password, self.sessions = star, db, password, sessions
        self.target = f"{star.db_addr}:{db.port}"
        self.workers: list[NsWorker] = []

    def grow(self, pods: int) -> None:
        while len(self.workers) < pods:
            index = len(self.workers)
            self.workers.append(NsWorker(
                self.star.legs[index], f"app-{index}", self.star.db_addr, self.db.port, "app",
                self.password, self.sessions, pod=f"pod-{index}"))

    def exporter(self, leg: int, args: Sequence[str], ns: str | None = None
                 ) -> NsExporterProcess:
        process = NsExporterProcess(
            self.star.legs[leg], [f"--mysql.address={self.target}", "--mysql.user=exporter",
                                  "--server.interval=0s", "--log.level=warn", *args],
            env={PASSWORD_ENV: self.password}, ns=ns)
        return process

    def measure(self, exporters: list[NsExporterProcess], rounds: int) -> dict[str, Any]:
        for exporter in exporters:  # warm: imports done, namespaces entered, owners known
            exporter.scrape()
            exporter.scrape()
        pids = [e.process.pid for e in exporters if e.process is not None]
        server = self.db.pid
        cpu0 = sum(cpu_seconds(p) for p in pids)
        server0 = cpu_seconds(server)
        reads0 = sum(reads(e.scrape()) for e in exporters)
        walls: list[float] = []
        last: list[Metrics] = []
        started = time.perf_counter()
        for _ in range(rounds):
            last = []
            for exporter in exporters:
                t0 = time.perf_counter()
                last.append(exporter.scrape())
                walls.append(time.perf_counter() - t0)
        elapsed = time.perf_counter() - started
        cpu = sum(cpu_seconds(p) for p in pids) - cpu0
        server_cpu = cpu_seconds(server) - server0
        # minus the one scrape that read reads0
        done = sum(reads(m) for m in last) - reads0
        return {
            "exporters": len(exporters),
            "scrape_wall_ms_median": 1000 * statistics.median(walls),
            "round_wall_ms": 1000 * elapsed / rounds,
            "exporter_cpu_ms_per_round": 1000 * cpu / rounds,
            "rss_mib_total": sum(rss_mib(p) for p in pids),
            "server_cpu_ms_per_round": 1000 * server_cpu / rounds,
            "server_reads_per_round": done / rounds,
            "phases_ms": {name: 1000 * statistics.fmean(phase(m, name) for m in last)
                          for name in ("sockets", "owners", "server", "correlate", "total")},
            "sessions_seen": sum(v for m in last for labels, v in m.find("mysql_idle_sessions")
                                 if labels["state"] in ("idle", "at_risk", "active")),
            # Every network namespace of the machine: what a node-mode exporter dumps (the
            # host's, the server's, the pods', and any other process's here).
            "machine_namespaces": len(discover()),
        }

    def node(self, pods: int, rounds: int) -> dict[str, Any]:
        exporter = self.exporter(0, ["--mode=node"], ns=self.star.server_ns)
        exporter.args[4:4] = ["setpriv", f"--bounding-set={NODE_CAPS}", "--inh-caps=-all"]
        exporter.start()
        try:
            return self.measure([exporter], rounds)
        finally:
            exporter.stop()

    def sidecars(self, pods: int, rounds: int) -> dict[str, Any]:
        exporters = [self.exporter(i, []) for i in range(pods)]
        try:
            for exporter in exporters:
                exporter.start(timeout=60)
            return self.measure(exporters, rounds)
        finally:
            for exporter in exporters:
                exporter.stop()

    def floor(self, pods: int, rounds: int) -> dict[str, Any]:
        walls = []
        for _ in range(rounds):
            t0 = time.perf_counter()
            for leg in self.star.legs[:pods]:
                subprocess.run(["ip", "netns", "exec", leg.client_ns, "ss", "-tnH", "state",
                                "all", f"( dport = :{self.db.port} )"],
                               capture_output=True, check=True)
            walls.append(time.perf_counter() - t0)
        return {"round_wall_ms_median": 1000 * statistics.median(walls)}


def _tcp_inuse() -> int:
    """TCP sockets allocated on the machine, every namespace's (`alloc` in
    /proc/net/sockstat is the kernel's global count; `inuse` is this namespace's only)."""
    with open("/proc/net/sockstat") as sockstat:
        for line in sockstat:
            if line.startswith("TCP:"):
                fields = line.split()
                return int(fields[fields.index("alloc") + 1])
    return 0


def _channel_in(netns_path: str) -> Any:
    """A sock_diag socket opened inside the namespace at ``netns_path`` (it stays there)."""
    from exporter.sockets import netlink

    return _in(netns_path, netlink.open_channel)


def dump_cost(extra_connections: int, buckets: int, dumps: int) -> dict[str, Any]:
    """The kernel's cost of one namespace's sock_diag dump (both families, as the exporter
    makes it), in a namespace made the usual way (it shares the machine's TCP hash table,
    and a dump walks every socket of every namespace in it) and in one made with a table of
    its own (`net.ipv4.tcp_child_ehash_entries` set in the namespace that creates it, Linux
    6.1+), with the machine's sockets as they are and with ``extra_connections`` more (held
    in a scratch namespace)."""
    import resource
    import socket as sockets

    from exporter.deadline import Deadline
    from exporter.sockets import netlink

    tag = secrets.token_hex(3)
    parent, plain, child, scratch = (f"mie-{n}-{tag}" for n in ("ehp", "plain", "child", "x"))
    made: list[str] = []
    held: list[sockets.socket] = []
    results: dict[str, Any] = {"buckets": buckets}
    try:
        for name in (parent, plain, scratch):
            subprocess.run(["ip", "netns", "add", name], check=True)
            made.append(name)
        subprocess.run(["ip", "netns", "exec", parent, "sysctl", "-qw",
                        f"net.ipv4.tcp_child_ehash_entries={buckets}"], check=True)
        holder = subprocess.Popen(["ip", "netns", "exec", parent, "unshare", "--net", "sleep",
                                   "600"])
        try:
            deadline = time.monotonic() + 5
            # Until `ip netns exec` has exec'd unshare and unshare sleep (same pid).
            while Path(f"/proc/{holder.pid}/comm").read_text().strip() != "sleep":
                if time.monotonic() > deadline:
                    raise RuntimeError("unshare did not start")
                time.sleep(0.02)
            subprocess.run(["ip", "netns", "attach", child, str(holder.pid)], check=True)
            made.append(child)
        finally:
            holder.kill()
            holder.wait()

        def cost(path: str) -> float:
            channel = _channel_in(path)
            try:
                before = resource.getrusage(resource.RUSAGE_SELF)
                for _ in range(dumps):
                    netlink.dump_tcp([3306], Deadline.after(30), channel=channel)
                after = resource.getrusage(resource.RUSAGE_SELF)
            finally:
                channel.close()
            return 1000 * ((after.ru_stime - before.ru_stime)
                           + (after.ru_utime - before.ru_utime)) / dumps

        for label in ("as_is", f"plus_{extra_connections}_connections"):
            if label != "as_is":
                listener = _channel_free_listener(scratch)
                held.append(listener)
                port = listener.getsockname()[1]

                def connect_all(port: int = port, listener: Any = listener
                                ) -> list[sockets.socket]:
                    both = []
                    for _ in range(extra_connections):
                        both.append(sockets.create_connection(("127.0.0.1", port)))
                        both.append(listener.accept()[0])
                    return both

                held.extend(_in(f"/run/netns/{scratch}", connect_all))
            results[label] = {
                "machine_tcp_sockets": _tcp_inuse(),
                "shared_table_ms_per_dump": cost(f"/run/netns/{plain}"),
                "own_table_ms_per_dump": cost(f"/run/netns/{child}"),
            }
    finally:
        for held_socket in held:
            held_socket.close()
        for name in reversed(made):
            subprocess.run(["ip", "netns", "del", name], check=False)
    return results


def _in(netns_path: str, function: Any) -> Any:
    import ctypes
    import threading

    out: dict[str, Any] = {}

    def run() -> None:
        fd = os.open(netns_path, os.O_RDONLY)
        try:
            ctypes.CDLL(None, use_errno=True).setns(fd, 0x40000000)
        finally:
            os.close(fd)
        out["value"] = function()

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    return out["value"]


def _channel_free_listener(ns: str) -> Any:
    import socket as sockets

    def listen() -> sockets.socket:
        subprocess.run(["ip", "-n", ns, "link", "set", "lo", "up"], check=True)
        listener = sockets.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen(4096)
        return listener

    return _in(f"/run/netns/{ns}", listen)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dump-cost", action="store_true",
                        help="only measure one namespace's dump against the machine's "
                        "sockets, with a shared and an own TCP hash table")
    parser.add_argument("--extra-connections", type=int, default=5000)
    parser.add_argument("--namespaces", default="1,10,30")
    parser.add_argument("--child-ehash", type=int, default=None, metavar="BUCKETS",
                        help="give each pod's namespace a TCP hash table of its own "
                        "(net.ipv4.tcp_child_ehash_entries)")
    parser.add_argument("--sessions", type=int, default=10, help="idle sessions per pod")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--other-sessions", type=int, default=1000,
                        help="idle sessions no watcher owns (over the unix socket)")
    args = parser.parse_args(argv)
    if args.dump_cost:
        # The scratch namespace's client and server ends: 2 sockets per connection, held by
        # this process (its open-file limit raised to the hard one).
        import resource

        _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        found = {"date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                 "command": " ".join(["python", "-m", "benchmarks.node",
                                      *(argv if argv is not None else sys.argv[1:])]),
                 **dump_cost(args.extra_connections, 1024, 20)}
        print(json.dumps(found, indent=1))
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / f"node-dumpcost-{dt.datetime.now():%Y%m%d-%H%M%S}.json").write_text(
            json.dumps(found, indent=1) + "\n")
        return 0
    levels = [int(n) for n in args.namespaces.split(",")]
    password = secrets.token_hex(8)
    results: dict[str, Any] = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.node()} {platform.machine()} {os.cpu_count()} CPUs, "
                   f"Linux {platform.release()}",
        "command": " ".join([sys.executable.rsplit("/", 1)[-1], "-m", "benchmarks.node",
                             *(argv if argv is not None else sys.argv[1:])]),
        "sessions_per_pod": args.sessions, "other_sessions": args.other_sessions,
        "rounds": args.rounds, "levels": {},
    }
    results["child_ehash"] = args.child_ehash
    with NetnsStar(clients=max(levels), child_ehash=args.child_ehash) as star:
        db = server_in_namespace(ThrowawayMariaDB, star, [
            f"--max-connections={args.other_sessions + max(levels) * (args.sessions + 2) + 50}",
            "--skip-name-resolve"])
        db.start()
        try:
            db.execute(f"CREATE USER 'exporter'@'%' IDENTIFIED BY '{password}'",
                       "GRANT PROCESS ON *.* TO 'exporter'@'%'",
                       f"CREATE USER 'app'@'%' IDENTIFIED BY '{password}'")
            others = [db.connect() for _ in range(args.other_sessions)]
            bench = Bench(star, db, password, args.sessions)
            for pods in levels:
                bench.grow(pods)
                level = {"node": bench.node(pods, args.rounds),
                         "sidecars": bench.sidecars(pods, args.rounds),
                         "floor_ss": bench.floor(pods, args.rounds)}
                results["levels"][str(pods)] = level
                print(json.dumps({pods: level}, indent=1), flush=True)
            for connection in others:
                connection.close()
            for worker in bench.workers:
                worker.close()
        finally:
            db.destroy()
    RESULTS.mkdir(exist_ok=True)
    suffix = "" if args.child_ehash is None else f"-ehash{args.child_ehash}"
    out = RESULTS / f"node-{dt.datetime.now():%Y%m%d-%H%M%S}{suffix}.json"
    out.write_text(json.dumps(results, indent=1) + "\n")
    print(f"written {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""A middlebox between the application and the server, built from two network namespaces.

- The server ends a session but its FIN/RST never arrives: the client's socket stays
  ESTABLISHED for a session the server no longer has, and the exporter calls it `phantom`.
  The same KILL without the middlebox gives `dropped` (CLOSE_WAIT).
- A TCP proxy on the path: the server sees the proxy's address, nothing can be matched, so
  the sockets are `unmatched` (never `phantom`) and correlation reports itself not working,
  even after the server has killed the sessions behind the proxy.
"""

from __future__ import annotations

import contextlib
import subprocess
import time

import psutil
import pytest

from tests.support.exporter_process import Metrics
from tests.support.netns import NetnsServer, NsExporterProcess, NsWorker
from tests.support.scrapes import (
    PASSWORD_ENV,
    kill_sessions,
    observe,
    session_ids,
    states,
    summary,
    wait_for,
)

pytestmark = pytest.mark.netns

HEADROOM = 5
PROXY_PORT = 6033


def start_exporter(netns: NetnsServer, target: str) -> NsExporterProcess:
    return NsExporterProcess(
        netns.pair,
        [f"--mysql.address={target}", "--mysql.user=exporter", "--server.interval=1",
         f"--risk.headroom={HEADROOM}"],
        env={PASSWORD_ENV: netns.password},
    ).start()


def test_server_teardown_lost_on_the_path_leaves_a_phantom(netns: NetnsServer) -> None:
    pair, db = netns.pair, netns.db
    worker = NsWorker(pair, "phantom-app", db.host, db.port, "app", netns.password)
    exporter = start_exporter(netns, netns.target)
    try:
        port = worker.ports[0]
        wait_for(exporter, lambda m: states(m, "phantom-app") == {"idle": 1},
                 "the worker's connection matched and idle")

        pair.block_server_teardown(db.port)
        assert kill_sessions(db, "app", f"{pair.client_addr}:{port}") == 1
        metrics = wait_for(exporter, lambda m: states(m, "phantom-app").get("phantom") == 1,
                           "the killed session's socket reported phantom", timeout=8)
        # The client still believes in the connection; the server has forgotten it.
        assert pair.tcp_states(pair.client_ns, db.port).get(port) == "ESTAB"
        assert pair.dropped_packets() >= 1, "the server's FIN never reached the nft rule"
        working = [metrics.get("mysql_idle_correlation_working", target=netns.target)]

        def still_phantom(metrics: Metrics) -> None:
            assert states(metrics, "phantom-app") == {"phantom": 1}, summary(metrics)
            assert metrics.get("mysql_idle_up", target=netns.target) == 1
            working.append(metrics.get("mysql_idle_correlation_working", target=netns.target))

        # Across three more server reads (--server.interval=1), it stays a phantom.
        observe(exporter, still_phantom, target=netns.target, reads=3)

        # Counted once, as the path's doing.
        metrics = exporter.scrape()
        assert metrics.get("mysql_idle_sessions_dropped_by_cause_total", target=netns.target,
                           process="phantom-app", cause="network") == 1, metrics.text
        # Once the path lets the teardown through again, the application learns the truth.
        pair.unblock()
        reply = worker.send("query 0")
        assert reply in ("error 0 2006", "error 0 2013"), reply
        # Its socket then reset: dropped, but not counted a second time by cause.
        metrics = wait_for(exporter, lambda m: states(m, "phantom-app") != {"phantom": 1},
                           "the reset socket no longer a phantom", timeout=8)
        assert metrics.total("mysql_idle_sessions_dropped_by_cause_total",
                             process="phantom-app") == 1, metrics.text
        # docs/metrics.md: phantom is only reported while correlation_working is 1.
        assert set(working) == {1}, (
            f"mysql_idle_correlation_working was {working} while the socket was phantom")
    finally:
        pair.unblock()
        worker.close()
        exporter.stop()


def test_the_same_kill_without_the_middlebox_is_dropped(netns: NetnsServer) -> None:
    pair, db = netns.pair, netns.db
    worker = NsWorker(pair, "control-app", db.host, db.port, "app", netns.password)
    exporter = start_exporter(netns, netns.target)
    try:
        wait_for(exporter, lambda m: states(m, "control-app") == {"idle": 1},
                 "the worker's connection matched and idle")
        assert kill_sessions(db, "app", f"{pair.client_addr}:{worker.ports[0]}") == 1
        history: list[Metrics] = []
        wait_for(exporter, lambda m: states(m, "control-app") == {"dropped": 1},
                 "the killed session's socket reported dropped", timeout=8, history=history)
        # CLOSE_WAIT (the server's FIN arrived) or gone from the TCP tables (an RST did).
        tcp_state = pair.tcp_states(pair.client_ns, db.port).get(worker.ports[0])
        assert tcp_state in ("CLOSE-WAIT", None), tcp_state
        # Two more server reads: the dropped socket is never taken for a phantom.
        history += observe(exporter, lambda m: None, target=netns.target, reads=2)
        seen = [states(m, "control-app") for m in history]
        assert all("phantom" not in s for s in seen), seen
        assert seen[-1] == {"dropped": 1}, seen
        # The same KILL is a KILL: dead before its limit, the server not restarted.
        assert history[-1].get("mysql_idle_sessions_dropped_by_cause_total",
                               target=netns.target, process="control-app",
                               cause="killed") == 1, history[-1].text
    finally:
        worker.close()
        exporter.stop()


def test_behind_a_proxy_sockets_are_unmatched_never_phantom(netns: NetnsServer) -> None:
    pair, db = netns.pair, netns.db
    # The proxy sits on the server's side of the path: the server sees the proxy's address.
    proxy = pair.run_in(
        pair.server_ns,
        ["socat", f"TCP-LISTEN:{PROXY_PORT},bind={db.host},fork,reuseaddr",
         f"TCP:{db.host}:{db.port}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    worker: NsWorker | None = None
    exporter: NsExporterProcess | None = None
    target = f"{db.host}:{PROXY_PORT}"
    try:
        deadline = time.monotonic() + 5
        while not pair.exec_in(pair.server_ns, ["ss", "-ltnH", f"sport = :{PROXY_PORT}"]):
            assert proxy.poll() is None, "socat exited"
            assert time.monotonic() < deadline, "socat did not listen in time"
            time.sleep(0.05)
        worker = NsWorker(pair, "proxied-app", db.host, PROXY_PORT, "app", netns.password,
                          connections=2)
        exporter = start_exporter(netns, target)
        # The server sees the application's two sessions coming from the proxy's address.
        assert len(session_ids(db, "app", f"{db.host}:%")) == 2
        assert not session_ids(db, "app", f"{pair.client_addr}:%")

        def unmatched_only(metrics: Metrics) -> None:
            assert metrics.get("mysql_idle_up", target=target) == 1, summary(metrics)
            assert states(metrics, "proxied-app") == {"unmatched": 2}, summary(metrics)
            assert metrics.total("mysql_idle_sessions", target=target, state="phantom") == 0
            assert metrics.get("mysql_idle_correlation_working", target=target) == 0

        wait_for(exporter, lambda m: m.get("mysql_idle_up", target=target) == 1,
                 "the exporter's first read through the proxy")
        observe(exporter, unmatched_only, target=target, reads=3)

        # The server kills the sessions behind the proxy; the proxy's FINs are lost, so the
        # application's sockets stay ESTABLISHED for sessions that no longer exist. Without
        # correlation the exporter cannot know: still unmatched, never phantom.
        pair.block_server_teardown(PROXY_PORT)
        assert kill_sessions(db, "app", f"{db.host}:%") == 2
        observe(exporter, unmatched_only, target=target, reads=3)
        client_states = pair.tcp_states(pair.client_ns, PROXY_PORT)
        assert [client_states.get(p) for p in worker.ports] == ["ESTAB", "ESTAB"], client_states
    finally:
        pair.unblock()
        if worker is not None:
            worker.close()
        if exporter is not None:
            exporter.stop()
        # socat forks one child per connection: end them with their parent, by pid.
        with contextlib.suppress(psutil.Error):
            for child in psutil.Process(proxy.pid).children(recursive=True):
                child.kill()
        proxy.kill()
        proxy.wait(timeout=5)

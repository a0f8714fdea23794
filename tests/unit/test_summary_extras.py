"""Per-process totals beside the states: sessions asleep inside a transaction, the limit each
idle session counts down to, and sockets whose keepalive comes too late for the path."""

from __future__ import annotations

import pytest

from exporter.correlate import Memory
from exporter.model import Settings, Socket, TcpState
from exporter.summary import summarise
from tests.support.builders import NOW, sess, sock, view
from tests.support.builders import correlate_sockets as correlate

PATH = Settings(risk_headroom=60.0, network_idle_timeout=350.0)  # an AWS NLB


@pytest.mark.parametrize(("socket", "late"), [
    (sock(5000, keepalive=False), 1),  # no keepalive: never probes
    (sock(5000, keepalive=True, keepalive_probe_at=300.0), 0),  # TCP_KEEPIDLE 300 < 350
    (sock(5000, keepalive=True, keepalive_probe_at=350.0), 0),  # just in time
    (sock(5000, keepalive=True, keepalive_probe_at=7200.0), 1),  # Linux's default: too late
    (sock(5000, keepalive=True, keepalive_probe_at=None), 1),  # armed, no tcp_info: unknown
    (sock(5000, state=TcpState.CLOSE_WAIT), 0),  # already dead: nothing to keep alive
    (sock(5000, state=TcpState.CLOSE, gone=True), 0),
], ids=["off", "in time", "at the limit", "7200 s", "unknown", "close_wait", "gone"])
def test_keepalive_late(socket: Socket, late: int) -> None:
    target, _ = correlate("db:3306", [socket], view(sess(1, 5000)), PATH, Memory(), NOW)
    assert summarise(target, 5).processes["worker"].keepalive_late == late


def test_no_network_limit_means_nothing_is_late() -> None:
    target, _ = correlate("db:3306", [sock(5000)], view(sess(1, 5000)), Settings(), Memory(),
                          NOW)
    assert summarise(target, 5).processes["worker"].keepalive_late == 0


def test_transactions_per_process_and_the_oldest_first() -> None:
    sockets = [sock(5000, idle=30), sock(5001, idle=5), sock(5002, idle=50),
               sock(5003, process="api", pid=7)]
    server = view(sess(1, 5000, transaction=40, rows_locked=2, rows_modified=1),
                  sess(2, 5001, transaction=900, rows_locked=5),
                  sess(3, 5002),  # idle, no transaction
                  # running a statement inside its transaction: busy, not asleep in it
                  sess(4, 5003, command="Query", transaction=70, rows_locked=1),
                  idle_write_transaction_timeout=120.0)
    target, _ = correlate("db:3306", sockets, server, Settings(risk_headroom=60.0), Memory(),
                          NOW)
    summary = summarise(target, 1)
    worker = summary.processes["worker"]
    assert (worker.in_transaction, worker.transaction_oldest, worker.transaction_idle,
            worker.rows_locked, worker.rows_modified) == (2, 900.0, 30.0, 7, 1)
    assert dict(worker.limits) == {"idle_write_transaction_timeout": 1, "wait_timeout": 2}
    assert summary.processes["api"].in_transaction == 0
    # --sessions.top 1: only the oldest transaction's session.
    assert [item.session.id for item in summary.transactions if item.session] == [2]

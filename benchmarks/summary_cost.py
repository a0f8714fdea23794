"""What correlation and the per-process summary cost at N idle sessions, in-process.

    .venv/bin/python -m benchmarks.summary_cost [--sessions 10000] [--network-idle-timeout S]

Builds N matched idle sockets and sessions of 20 processes (tests/support/builders), then
times correlate() and summarise() (medians of 15 runs). No server, no kernel: the pure core
only, to see what a change to it costs.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable

from exporter.correlate import Memory
from exporter.model import Settings
from exporter.summary import summarise
from tests.support.builders import NOW, sess, sock, view
from tests.support.builders import correlate_sockets as correlate


def median_ms(step: Callable[[], object], runs: int = 15) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        step()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sessions", type=int, default=10000)
    parser.add_argument("--network-idle-timeout", type=float, default=None)
    args = parser.parse_args(argv)
    n = args.sessions
    sockets = [sock(10000 + i, idle=100, process=f"p{i % 20}") for i in range(n)]
    server = view(*(sess(i, 10000 + i, idle=100) for i in range(n)))
    settings = Settings(risk_headroom=60.0, network_idle_timeout=args.network_idle_timeout)
    target, memory = correlate("db:3306", sockets, server, settings, Memory(), NOW)
    print(f"summarise: {median_ms(lambda: summarise(target, 20)):.1f} ms")
    again = median_ms(lambda: correlate("db:3306", sockets, server, settings, memory, NOW + 1))
    print(f"correlate: {again:.1f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

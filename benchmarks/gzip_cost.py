"""CPU cost of gzipping an exposition, at the level the exporter uses and at others.

    .venv/bin/python -m benchmarks.gzip_cost [--processes 2000] [--targets 5] [--url URL]

The body is synthetic but shaped like the exporter's own (per-process state gauges and
idle-time histograms, per target); with --url it is also measured on a live exporter's
/metrics. Reports CPU time (process_time, best of --rounds), size and ratio per level.
"""

from __future__ import annotations

import argparse
import gzip
import random
import time
import urllib.request

from exporter.web.compression import GZIP_LEVEL

STATES = ("active", "idle", "at_risk", "dropped", "phantom", "unmatched")
BUCKETS = ("1.0", "5.0", "15.0", "60.0", "300.0", "900.0", "3600.0", "+Inf")


def synthetic(processes: int, targets: int, seed: int = 1) -> bytes:
    rng = random.Random(seed)
    lines = []
    for t in range(targets):
        target = f"10.0.0.{t}:3306"
        for p in range(processes // targets):
            process = f"worker-{p}"
            for state in STATES:
                lines.append(f'mysql_idle_sessions{{process="{process}",state="{state}",'
                             f'target="{target}"}} {rng.randint(0, 50)}.0')
            for le in BUCKETS:
                lines.append(f'mysql_idle_session_idle_seconds_bucket{{le="{le}",'
                             f'process="{process}",target="{target}"}} {rng.randint(0, 50)}.0')
    return ("\n".join(lines) + "\n").encode()


def measure(body: bytes, level: int, rounds: int) -> tuple[float, int]:
    best = float("inf")
    size = 0
    for _ in range(rounds):
        started = time.process_time()
        size = len(gzip.compress(body, compresslevel=level, mtime=0))
        best = min(best, time.process_time() - started)
    return best, size


def report(name: str, body: bytes, rounds: int) -> None:
    print(f"{name}: {len(body):,} bytes")
    for level in sorted({1, 6, 9, GZIP_LEVEL}):
        seconds, size = measure(body, level, rounds)
        used = " (the exporter's)" if level == GZIP_LEVEL else ""
        print(f"  level {level}{used}: {seconds * 1000:.2f} ms CPU, {size:,} bytes, "
              f"{len(body) / size:.1f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, default=2000)
    parser.add_argument("--targets", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--url", help="a live exporter's metrics URL")
    args = parser.parse_args()
    report(f"synthetic, {args.processes} processes x {args.targets} targets",
           synthetic(args.processes, args.targets), args.rounds)
    if args.url:
        with urllib.request.urlopen(args.url, timeout=30) as response:
            report(args.url, response.read(), args.rounds)


if __name__ == "__main__":
    main()

"""Hostile HTTP clients for the web side's tests, on loopback, bounded in count and time.

`python -m tests.support.hostile slowloris PORT CONNECTIONS SECONDS` holds CONNECTIONS
connections to 127.0.0.1:PORT that never finish their request line (a byte every second,
slowloris style), opening a new one whenever the server closes one, for SECONDS. It prints
`ready` once every connection has been tried, then one JSON line of counts at the end.
Run in its own process so its work does not slow the test's own client.
"""

from __future__ import annotations

import asyncio
import json
import socket
import sys
import time
from dataclasses import asdict, dataclass

TRICKLE_SECONDS = 1.0
CONNECT_TIMEOUT = 2.0


@dataclass
class Counts:
    opened: int = 0
    connect_failures: int = 0
    closed_by_server: int = 0


async def _hold_one(port: int, deadline: float, counts: Counts, tried: asyncio.Event,
                    tried_all: list[int], total: int) -> None:
    first = True
    while time.monotonic() < deadline:
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection("127.0.0.1", port), CONNECT_TIMEOUT)
        except (TimeoutError, OSError):
            counts.connect_failures += 1
            reader = writer = None
        else:
            counts.opened += 1
        if first:
            first = False
            tried_all[0] += 1
            if tried_all[0] == total:
                tried.set()
        if writer is None or reader is None:
            await asyncio.sleep(0.1)
            continue
        try:
            writer.write(b"GET /metri")
            while time.monotonic() < deadline:
                try:
                    data = await asyncio.wait_for(reader.read(1024), TRICKLE_SECONDS)
                except TimeoutError:
                    writer.write(b"c")  # never a CRLF: the request line never ends
                    await writer.drain()
                    continue
                if not data:
                    counts.closed_by_server += 1
                    break
        except (OSError, ConnectionError):
            counts.closed_by_server += 1
        finally:
            writer.close()


async def slowloris(port: int, connections: int, seconds: float) -> Counts:
    counts = Counts()
    deadline = time.monotonic() + seconds
    tried = asyncio.Event()
    tried_all = [0]
    tasks = [asyncio.create_task(_hold_one(port, deadline, counts, tried, tried_all,
                                           connections))
             for _ in range(connections)]
    await tried.wait()
    print("ready", flush=True)
    await asyncio.gather(*tasks)
    return counts


def main(argv: list[str]) -> int:
    mode, port, connections, seconds = argv[0], int(argv[1]), int(argv[2]), float(argv[3])
    if mode != "slowloris":
        print(f"unknown mode {mode}", file=sys.stderr)
        return 2
    counts = asyncio.run(slowloris(port, connections, seconds))
    print(json.dumps(asdict(counts)), flush=True)
    return 0


def recv_until_closed(sock: socket.socket, timeout: float) -> float | None:
    """Seconds until the server closed `sock` (EOF or reset), None if still open after
    `timeout`. Whatever the server sends meanwhile is read and dropped."""
    started = time.monotonic()
    sock.settimeout(0.05)
    while time.monotonic() - started < timeout:
        try:
            if not sock.recv(65536):
                return time.monotonic() - started
        except TimeoutError:
            continue
        except ConnectionError:
            return time.monotonic() - started
    return None


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

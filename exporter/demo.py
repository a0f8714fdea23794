"""`mysql-idle-exporter demo`: the whole story on one machine, no existing database needed.

A private MariaDB with a short wait_timeout, a worker process that holds three connections
(one busy, one kept alive, one left idle until the server drops it), and the exporter
watching them, with a status line so the story can be followed in the terminal.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Sequence

from exporter.config import UsageError, fail
from exporter.deadline import Deadline
from exporter.engine import Engine
from exporter.logs import setup_logging
from exporter.model import Settings, State
from exporter.planner import ReadPolicy
from exporter.sessions.credentials import Credentials
from exporter.sessions.reader import SessionReader
from exporter.sockets.reader import SocketReader
from exporter.target import Target
from exporter.throwaway import MariaDBUnavailable, ThrowawayMariaDB, free_port
from exporter.web.app import WebOptions

WORKER_NAME = "demo-worker"


def _parser() -> argparse.ArgumentParser:
    class Parser(argparse.ArgumentParser):
        def error(self, message: str) -> None:  # type: ignore[override]
            raise UsageError(message)

    parser = Parser(
        prog="mysql-idle-exporter demo",
        description="Start a private MariaDB, a worker whose idle connection runs into a short "
        "wait_timeout, and the exporter watching it. Stop with Ctrl-C.",
    )
    parser.add_argument("--web.listen-address", dest="listen", default="127.0.0.1:9864",
                        metavar="[HOST]:PORT", help="where to serve metrics (default "
                        "127.0.0.1:9864; use :0 for any free port)")
    parser.add_argument("--wait-timeout", dest="wait_timeout", type=int, default=40,
                        metavar="SECONDS", help="the private server's wait_timeout (default 40)")
    parser.add_argument("--duration", type=float, default=0, metavar="SECONDS",
                        help="stop after this many seconds (default: run until Ctrl-C)")
    return parser


def _start_worker(server: ThrowawayMariaDB, password: str, wait_timeout: int
                  ) -> subprocess.Popen[bytes]:
    env = {**os.environ, "DEMO_PASSWORD": password}
    return subprocess.Popen(
        [sys.executable, "-m", "exporter.demo_worker", server.host, str(server.port),
         str(wait_timeout)],
        env=env,
    )


def _status_line(engine: Engine) -> str:
    snapshot = engine.last_snapshot
    if snapshot is None or not snapshot.targets:
        return "waiting for the first collection"
    target = snapshot.targets[0]
    counts = {state: len(target.by_state(state)) for state in State}
    headrooms = [i.headroom_seconds for i in target.items if i.headroom_seconds is not None]
    smallest = f"{min(headrooms):.0f}s" if headrooms else "-"
    shown = ", ".join(f"{state.value} {n}" for state, n in counts.items() if n)
    up = "up" if target.server is not None and target.server.ok else "down"
    dropped = sum(target.dropped_totals.values())
    return f"[{up}] {shown or 'no sockets'}; smallest headroom {smallest}; drops counted {dropped}"


async def _run(engine: Engine, options: WebOptions, host: str, port: int, url_host: str,
               duration: float) -> None:
    from exporter.cli import Exporter, serve

    ready, stop = asyncio.Event(), asyncio.Event()
    server_task = asyncio.create_task(serve(Exporter(engine), options, host, port, ready, stop))
    waiter = asyncio.create_task(ready.wait())
    await asyncio.wait({server_task, waiter}, return_when=asyncio.FIRST_COMPLETED)
    if server_task.done():
        waiter.cancel()
        await server_task  # raises the listen error
        return
    print(f"\nmetrics:  http://{url_host}:{port}{options.telemetry_path}", flush=True)
    print("Watch mysql_idle_sessions{state=...} and mysql_idle_min_headroom_seconds: the idle "
          "connection goes idle -> at_risk -> dropped, and mysql_idle_sessions_dropped_total "
          "counts it.\n", flush=True)
    started = time.monotonic()
    try:
        while not stop.is_set():
            await engine.collect(Deadline.after(5.0, engine.clock))
            print(f"{time.monotonic() - started:5.0f}s  {_status_line(engine)}", flush=True)
            if duration and time.monotonic() - started >= duration:
                stop.set()
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 2.0)
    finally:
        stop.set()
        await server_task


def run_demo(argv: Sequence[str]) -> int:
    try:
        args = _parser().parse_args(list(argv))
        from exporter.addresses import AddressError, parse_host_port

        try:
            host, port = parse_host_port(args.listen, allow_zero=True)
        except AddressError as error:
            raise UsageError(f"--web.listen-address: {error}") from None
        if port == 0:
            port = free_port(host or "127.0.0.1")
        if args.wait_timeout < 10:
            raise UsageError("--wait-timeout must be at least 10 seconds")
    except UsageError as error:
        fail(str(error))
    setup_logging("warn", "logfmt")
    print("Starting a private MariaDB on a free loopback port ...", flush=True)
    server = ThrowawayMariaDB([f"--wait-timeout={args.wait_timeout}"])
    try:
        server.start()
    except MariaDBUnavailable as error:
        server.destroy()
        fail(str(error))
    password = secrets.token_urlsafe(16)
    worker: subprocess.Popen[bytes] | None = None
    try:
        server.execute(
            f"CREATE USER 'exporter'@'127.0.0.1' IDENTIFIED BY '{password}'",
            "GRANT PROCESS ON *.* TO 'exporter'@'127.0.0.1'",
            f"CREATE USER 'worker'@'127.0.0.1' IDENTIFIED BY '{password}'",
            "CREATE DATABASE shop",
            "GRANT ALL ON shop.* TO 'worker'@'127.0.0.1'",
        )
        print(f"MariaDB {server.host}:{server.port}, wait_timeout={args.wait_timeout}s", flush=True)
        worker = _start_worker(server, password, args.wait_timeout)
        target = f"{server.host}:{server.port}"
        credentials = Credentials(user="exporter", password=password)
        engine = Engine(
            [Target(target, server.host, server.port,
                    SessionReader(target, server.host, server.port, credentials))],
            SocketReader({server.port}),
            ReadPolicy(
                interval=2.0,
                settings=Settings(risk_headroom=max(args.wait_timeout / 2, 5.0)),
            ),
        )
        options = WebOptions()
        url_host = host or "127.0.0.1"
        asyncio.run(_run(engine, options, host, port, url_host, args.duration))
    except UsageError as error:
        fail(str(error))
    except KeyboardInterrupt:
        pass
    finally:
        if worker is not None:
            worker.terminate()
            worker.wait(timeout=10)
        server.destroy()
    print("demo stopped; the private server and its data are gone", flush=True)
    return 0

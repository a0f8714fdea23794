"""`mysql-idle-exporter demo`: the whole story on one machine, no existing database needed.

A private MariaDB with a short wait_timeout, a worker process that holds three connections
(one busy, one kept alive, one left idle until the server drops it), and the exporter
watching them. The demo says what each connection is for and which threshold it uses,
narrates the idle one's end (at_risk, dropped, found dead by the worker), prints how much
warning the exporter gave, and points at the status page.

Stopping it any usual way (Ctrl-C, SIGTERM from `kill`, `timeout` or a container stop,
SIGHUP from a closed terminal) removes the private server and its data directory, without
a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import queue
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from types import FrameType

from exporter.config import UsageError, fail
from exporter.deadline import Deadline
from exporter.demo_story import Roles, Story
from exporter.drops import DropRecorder
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
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
# Seconds between the demo's own collections (and status lines).
TICK_SECONDS = 2.0


class Stopped(BaseException):
    """A stop signal arrived outside the event loop (while the server starts, say)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _raise_stopped(signum: int, frame: FrameType | None) -> None:
    raise Stopped(signum)


def _parser() -> argparse.ArgumentParser:
    class Parser(argparse.ArgumentParser):
        def error(self, message: str) -> None:  # type: ignore[override]
            raise UsageError(message)

    parser = Parser(
        prog="mysql-idle-exporter demo",
        description="Start a private MariaDB, a worker whose idle connection runs into a short "
        "wait_timeout, and the exporter watching it, with its status page. Stop with Ctrl-C "
        "(or SIGTERM, SIGHUP): the private server and its data are removed.",
    )
    parser.add_argument("--web.listen-address", dest="listen", default="127.0.0.1:9864",
                        metavar="[HOST]:PORT", help="where to serve the status page and "
                        "metrics (default 127.0.0.1:9864; use :0 for any free port)")
    parser.add_argument("--wait-timeout", dest="wait_timeout", type=int, default=40,
                        metavar="SECONDS", help="the private server's wait_timeout (default 40)")
    parser.add_argument("--duration", type=float, default=0, metavar="SECONDS",
                        help="stop after this many seconds (default: run until Ctrl-C)")
    return parser


class WorkerProcess:
    """exporter.demo_worker in a subprocess, its stdout lines read as they come, each with
    the time it arrived."""

    def __init__(self, server: ThrowawayMariaDB, password: str, wait_timeout: int) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "exporter.demo_worker", server.host, str(server.port),
             str(wait_timeout)],
            env={**os.environ, "DEMO_PASSWORD": password},
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True,
        )
        self.lines: queue.Queue[tuple[float, str]] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put((time.monotonic(), line.strip()))

    def roles(self) -> Roles | None:
        """The connections' ports, if the worker has said them by now."""
        while not self.lines.empty():
            roles = Roles.parse(self.lines.get_nowait()[1])
            if roles is not None:
                return roles
        return None

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)


async def _roles(worker: WorkerProcess, stop: asyncio.Event, timeout: float) -> Roles | None:
    """The worker's connections once it has made them (a second or so); None if the demo
    is stopped first, the worker dies, or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while not stop.is_set() and time.monotonic() < deadline:
        roles = worker.roles()
        if roles is not None:
            return roles
        if worker.process.poll() is not None:
            return None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.05)
    return None


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


def _introduction(roles: Roles, worker_pid: int, wait_timeout: int, risk: float,
                  base: str) -> str:
    return f"""
The application: a worker process "{WORKER_NAME}" (pid {worker_pid}) holds three connections:
  port {roles.daily:<6} daily job  used once, then left idle: it runs into wait_timeout \
({wait_timeout}s) and is dropped
  port {roles.report:<6} report     runs a long query: active, never idle
  port {roles.pool:<6} pool       pinged every {wait_timeout / 4:g}s, well inside the timeout: \
idle, never at risk
The threshold: a session is at_risk once its headroom (wait_timeout minus idle time) is \
{risk:g}s or less
(--risk.headroom; half of this demo's {wait_timeout}s timeout, so the warning comes early \
enough to watch;
the exporter's default is 300s).

status page: {base}/   (riskiest first; counts each idle session's headroom down)
metrics:     {base}/metrics
Watch the daily job's connection go idle -> at_risk -> dropped, then the worker fail on it.
"""


async def _run(engine: Engine, drops: DropRecorder, options: WebOptions, host: str, port: int,
               base: str, worker: WorkerProcess, args: argparse.Namespace,
               risk: float) -> None:
    from exporter.cli import Exporter, serve

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in STOP_SIGNALS:  # from here on a signal ends the loop below, cleanly
        loop.add_signal_handler(signum, stop.set)
    ready = asyncio.Event()
    server_task = asyncio.create_task(
        serve(Exporter(engine, drops=drops), options, host, port, ready, stop))
    waiter = asyncio.create_task(ready.wait())
    await asyncio.wait({server_task, waiter}, return_when=asyncio.FIRST_COMPLETED)
    if server_task.done():
        waiter.cancel()
        await server_task  # raises the listen error
        return
    for signum in STOP_SIGNALS:  # serve() took SIGINT and SIGTERM; all three stop it
        loop.add_signal_handler(signum, stop.set)
    roles = await _roles(worker, stop, timeout=30.0)
    if roles is None:
        stop.set()
        await server_task
        if worker.process.poll() is not None:
            raise UsageError("the demo's worker did not start (see its error above)")
        return  # stopped while waiting
    print(_introduction(roles, worker.process.pid, args.wait_timeout, risk, base), flush=True)
    story = Story(roles, risk_headroom=risk, wait_timeout=args.wait_timeout)
    started = time.monotonic()
    try:
        while not stop.is_set():
            snapshot = await engine.collect(Deadline.after(5.0, engine.clock))
            drops.observe(snapshot)
            now = time.monotonic() - started
            print(f"{now:5.0f}s  {_status_line(engine)}", flush=True)
            for line in story.observe(snapshot.targets[0], now):
                print(line, flush=True)
            while not worker.lines.empty():
                at, line = worker.lines.get_nowait()
                if line.startswith("noticed "):
                    for told in story.noticed(at - started, line.removeprefix("noticed ")):
                        print(told, flush=True)
            ending = story.ending()
            for line in ending:
                print(line, flush=True)
            if ending:
                print(f"The exporter keeps watching: see {base}/ . Press Ctrl-C to stop; the "
                      "private MariaDB and its data are then removed.\n", flush=True)
            if args.duration and time.monotonic() - started >= args.duration:
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), TICK_SECONDS)
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
    previous = {signum: signal.signal(signum, _raise_stopped) for signum in STOP_SIGNALS}
    server: ThrowawayMariaDB | None = None
    worker: WorkerProcess | None = None
    failure: str | None = None
    try:
        server = ThrowawayMariaDB([f"--wait-timeout={args.wait_timeout}"])
        print(f"Starting a private MariaDB in {server.workdir} on a free loopback port ...",
              flush=True)
        server.start()
        password = secrets.token_urlsafe(16)
        server.execute(
            f"CREATE USER 'exporter'@'127.0.0.1' IDENTIFIED BY '{password}'",
            "GRANT PROCESS ON *.* TO 'exporter'@'127.0.0.1'",
            f"CREATE USER 'worker'@'127.0.0.1' IDENTIFIED BY '{password}'",
            "CREATE DATABASE shop",
            "GRANT ALL ON shop.* TO 'worker'@'127.0.0.1'",
        )
        print(f"MariaDB on {server.host}:{server.port} (pid {server.pid}), wait_timeout="
              f"{args.wait_timeout}s; removed with its data when the demo stops", flush=True)
        worker = WorkerProcess(server, password, args.wait_timeout)
        target = f"{server.host}:{server.port}"
        credentials = Credentials(user="exporter", password=password)
        risk = max(args.wait_timeout / 2, 5.0)
        engine = Engine(
            [Target(target, server.host, server.port,
                    SessionReader(target, server.host, server.port, credentials))],
            SocketReader({server.port}),
            ReadPolicy(interval=TICK_SECONDS, settings=Settings(risk_headroom=risk)),
        )
        base = f"http://{host or '127.0.0.1'}:{port}"
        asyncio.run(_run(engine, DropRecorder(engine.clock), WebOptions(), host, port, base,
                         worker, args, risk))
    except (Stopped, KeyboardInterrupt):
        print("\nstopping ...", flush=True)
    except MariaDBUnavailable as error:
        failure = str(error)
    except UsageError as error:
        failure = str(error)
    finally:
        # Nothing may interrupt the cleanup: a second Ctrl-C would leave the server behind.
        for signum in STOP_SIGNALS:
            signal.signal(signum, signal.SIG_IGN)
        if worker is not None:
            worker.stop()
        if server is not None:
            server.destroy(kill=True)  # the data is thrown away: no clean shutdown needed
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    if failure is not None:
        fail(failure)
    print("demo stopped; the private server and its data are gone", flush=True)
    return 0

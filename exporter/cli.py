"""Entry point: `mysql-idle-exporter [flags]`, `mysql-idle-exporter demo` and
`mysql-idle-exporter inspect`."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from aiohttp import web

from exporter import __version__
from exporter.config import Config, UsageError, fail, parse_config
from exporter.deadline import Clock
from exporter.drops import DropRecorder
from exporter.engine import Engine
from exporter.fleet import FLEET_PASSWORD_ENV, FLEET_PATH
from exporter.logs import setup_logging
from exporter.model import ConnectionKey, Settings
from exporter.planner import ReadPolicy
from exporter.resolver import AddressBook
from exporter.sessions.credentials import PASSWORD_ENV, ConfigError, load_credentials
from exporter.sessions.reader import SessionReader
from exporter.sessions.source import SessionSource
from exporter.sockets.lookup import KnownSockets
from exporter.sockets.reader import SocketReader
from exporter.target import Target
from exporter.timeouts import EXPORTER_COMM
from exporter.web.app import WebOptions, build_app
from exporter.web.config import WebConfig, WebConfigError
from exporter.web.listener import Listener, ListenLimits, raise_fd_limit

if TYPE_CHECKING:
    # Imported where the flags ask for them: an exporter with default flags never loads
    # fleet mode, node mode, the web config watcher or --state.dir's persistence (resident
    # memory, see benchmarks/README.md).
    from exporter.fleet.server import FleetServer
    from exporter.node.reader import NodeSocketReader
    from exporter.persistence import StateKeeper

log = logging.getLogger("exporter")

# Cyclic garbage collection thresholds for a running exporter (CPython defaults: 700, 10,
# 10). A collection at 10,000 sessions allocates some 100,000 small container objects
# (rows, sockets, sessions, snapshot items, keys) while the previous snapshot's are still
# alive, so with the defaults the collector runs about 150 times per collection and its
# older-generation passes walk every live object: about 90 ms of a 500 ms collection. The
# objects are acyclic and die by reference counting when the next snapshot replaces them,
# so the count of net allocations barely grows from one collection to the next; a pass
# every 100,000 of them (at 50,000, one 15-20 ms pass still hit most 10,000-session
# collections) rarely runs at all.
GC_THRESHOLDS = (100_000, 20, 100)
# The cycles that do occur come mostly from serving HTTP (asyncio keeps each closed
# connection's transport in a reference cycle: about 1 KiB a connection). With passes that
# rare they would pile up for thousands of scrapes, so a full pass runs after every this
# many collections instead: garbage stays under about 100 KiB, for a pass of about 0.2 ms
# at 100 sessions and 30 ms at 10,000 (0.3 ms a collection).
GC_FULL_EVERY = 100


def tune_gc() -> None:
    """Once start-up is over: move everything allocated so far (modules, classes, the
    engine) into the permanent generation, so no collection walks it again, and collect
    less often. Memory that start-up left as garbage is freed first."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def full_gc_every(collections: int) -> Callable[[], None]:
    """An Engine ``on_collected`` hook: a full garbage collection every N collections."""
    done = 0

    def after_collection() -> None:
        nonlocal done
        done += 1
        if done % collections == 0:
            gc.collect()

    return after_collection


@dataclass(frozen=True)
class Exporter:
    """What a running exporter is made of."""

    engine: Engine
    # --fleet.serve: the server-side facts served to sidecars.
    fleet: FleetServer | None = None
    # The drops of the last hour, fed by every collection (the status page shows them).
    drops: DropRecorder | None = None
    # --state.dir: what is kept across restarts.
    keeper: StateKeeper | None = None

    def close(self) -> None:
        self.engine.close()
        if self.fleet is not None:
            self.fleet.close()
        if self.keeper is not None:
            self.keeper.close()


def build_exporter(
    config: Config,
    environ: Mapping[str, str],
    *,
    on_collected: Callable[[], None] | None = None,
    clock: Clock = time.monotonic,
) -> Exporter:
    """Everything a running exporter needs, from validated flags. Raises UsageError."""
    sockets: SocketReader | NodeSocketReader
    if config.mode == "node":
        # Loaded only here: a sidecar does without them (ctypes among them, 0.7 MiB).
        from exporter.node import privileges
        from exporter.node.reader import NodeSocketReader

        refused = privileges.check(config.proc_path)
        if refused is not None:
            raise UsageError(refused)
        sockets = NodeSocketReader(
            {t.port for t in config.targets}, proc_root=config.proc_path, clock=clock,
            dump_interval=config.sockets_dump_interval,
        )
    else:
        sockets = SocketReader(
            {t.port for t in config.targets},
            source=config.sockets_source,
            proc_root=config.proc_path,
            clock=clock,
            netlink_dump=KnownSockets(config.sockets_dump_interval, clock=clock),
        )
    sources = _session_sources(config, environ)
    targets = [
        Target(name=t.name, host=t.host, port=t.port, sessions=source,
               node=config.mode == "node")
        for t, source in zip(config.targets, sources, strict=True)
    ]
    settings = Settings(
        risk_headroom=config.risk_headroom, network_idle_timeout=config.network_idle_timeout
    )
    drops = DropRecorder(clock=clock)
    keeper: StateKeeper | None = None
    counted: dict[str, frozenset[ConnectionKey]] = {}
    if config.state_dir is not None:
        # Loaded only here: without --state.dir nothing is kept (resident memory).
        from exporter import persistence
        from exporter.persistence import SavedState, StateKeeper

        directory, boot = Path(config.state_dir), persistence.boot_id()
        if not (directory.is_dir() and os.access(directory, os.W_OK | os.X_OK)):
            raise UsageError(f"--state.dir {config.state_dir!r} is not an existing directory "
                             "the exporter may write to")
        remembered = persistence.read(directory, boot)
        if remembered is not None:
            sockets.restore(remembered.sockets)
            log.info("remembered %d sockets from the last run (%s)",
                     len(remembered.sockets.held) + len(remembered.sockets.gone), directory)
        keeper = StateKeeper(
            directory,
            lambda: SavedState(boot, sockets.memory(), engine.counted_drops()),
            clock=clock,
        )
        counted = persistence.counted_at_start(remembered, [t.name for t in targets])

    def collected() -> None:
        if on_collected is not None:
            on_collected()
        drops.observe(engine.last_snapshot)
        if keeper is not None:
            keeper.after_collection()

    engine = Engine(
        targets,
        sockets,
        ReadPolicy(interval=config.server_interval, settings=settings),
        addresses=AddressBook(clock=clock),
        top_sessions=config.sessions_top,
        clock=clock,
        on_collected=collected,
        counted=counted,
    )
    fleet = None
    if config.fleet_serve:
        from exporter.fleet.server import FleetServer

        fleet = FleetServer(
            {t.name: t.sessions for t in targets},
            clock=clock,
            interval=config.server_interval,
            fresh_interval=config.fleet_fresh_interval,
        )
    return Exporter(engine, fleet, drops, keeper)


def password_warning(config: Config, environ: Mapping[str, str]) -> str | None:
    """The line to log at start when no password source is set: a login without a password
    fails only at the first scrape, long after whoever started the exporter looked away."""
    if config.fleet_url is not None or config.my_cnf is not None or environ.get(PASSWORD_ENV):
        return None
    return (f"no password set: {PASSWORD_ENV} is unset or empty and --config.my-cnf is not "
            f"given, so the exporter logs in as {config.user or 'its user'} without a password")


def _session_sources(config: Config, environ: Mapping[str, str]) -> list[SessionSource]:
    if config.fleet_url is not None:
        from exporter.sessions.fleet_client import FleetSessionSource

        return [
            FleetSessionSource(config.fleet_url, t.name, user=config.fleet_user,
                               password=environ.get(FLEET_PASSWORD_ENV))
            for t in config.targets
        ]
    try:
        credentials = load_credentials(user=config.user, my_cnf=config.my_cnf, environ=environ)
    except ConfigError as error:
        raise UsageError(str(error)) from None
    return [
        SessionReader(t.name, t.host, t.port, credentials, prefer=config.server_source)
        for t in config.targets
    ]


def web_options(config: Config) -> WebOptions:
    web_config = WebConfig()
    watcher = None
    if config.web_config_file:
        from exporter.web.reload import WebConfigWatcher

        try:
            watcher = WebConfigWatcher(
                config.web_config_file,
                require_authentication=config.fleet_serve
                and not config.fleet_allow_unauthenticated,
            )
        except WebConfigError as error:
            raise UsageError(f"--web.config.file {error}") from None
        web_config = watcher.config
    if config.fleet_serve and not web_config.authenticates:
        if not config.fleet_allow_unauthenticated:
            raise UsageError(
                f"--fleet.serve would show every session on the server to anyone who reaches "
                f"{FLEET_PATH}: configure basic_auth_users or RequireAndVerifyClientCert in "
                "--web.config.file, or pass --fleet.allow-unauthenticated"
            )
        log.warning("serving %s without authentication (--fleet.allow-unauthenticated)",
                    FLEET_PATH)
    return WebOptions(
        telemetry_path=config.telemetry_path,
        default_timeout=config.scrape_timeout,
        timeout_offset=config.timeout_offset,
        config=web_config,
        watcher=watcher,
        limits=ListenLimits(max_connections=config.max_connections,
                            read_header_timeout=config.read_header_timeout),
    )


async def serve(exporter: Exporter, options: WebOptions, host: str, port: int,
                ready: asyncio.Event | None = None, stop: asyncio.Event | None = None) -> None:
    """Serve until `stop` is set (or SIGINT/SIGTERM when run from the command line)."""
    app = build_app(exporter.engine, options, exporter.fleet, exporter.drops)
    runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=2.0)
    await runner.setup()
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signum, stop.set)
    with contextlib.suppress(NotImplementedError, RuntimeError):
        loop.add_signal_handler(signal.SIGHUP, reload_on_sighup, options)
    listener = Listener(runner, options.limits, options.ssl_context)
    try:
        await listener.start(host or None, port)
    except OSError as error:
        await runner.cleanup()
        raise UsageError(f"--web.listen-address {host}:{port}: {error.strerror or error}") from None
    scheme = "https" if options.ssl_context else "http"
    log.info("listening on %s://%s:%d%s", scheme, host or "0.0.0.0", port, options.telemetry_path)  # noqa: S104
    if ready is not None:
        ready.set()
    try:
        await stop.wait()
    finally:
        log.info("shutting down")
        await listener.stop()
        await runner.cleanup()
        exporter.close()


def reload_on_sighup(options: WebOptions) -> None:
    """SIGHUP re-reads what can change without a restart: the web config file."""
    if options.watcher is None:
        log.info("SIGHUP: nothing to reload without --web.config.file (flags need a restart)")
    else:
        options.watcher.reload("SIGHUP")


def name_process(name: str = EXPORTER_COMM) -> None:
    """Name this process (its comm) so that another exporter on the host knows its sessions
    for what they are: under the year-long wait_timeout the exporter sets for itself, never
    at risk (exporter.timeouts). Best effort: Linux only."""
    # What prctl(PR_SET_NAME) does, without loading ctypes for it (0.3 MiB resident).
    with contextlib.suppress(OSError), open("/proc/self/comm", "w") as comm:
        comm.write(name.encode()[:15].decode(errors="ignore"))


def run(argv: Sequence[str]) -> int:
    raise_fd_limit()
    name_process()
    try:
        config = parse_config(argv)
        setup_logging(config.log_level, config.log_format)
        options = web_options(config)
        exporter = build_exporter(config, os.environ, on_collected=full_gc_every(GC_FULL_EVERY))
    except UsageError as error:
        fail(str(error))
    log.info(
        "mysql-idle-exporter %s watching %s%s", __version__,
        ", ".join(exporter.engine.target_names),
        " from every network namespace of this machine (--mode=node)"
        if config.mode == "node" else "",
    )
    warning = password_warning(config, os.environ)
    if warning is not None:
        log.warning(warning)
    tune_gc()
    try:
        asyncio.run(serve(exporter, options, config.listen_host, config.listen_port))
    except UsageError as error:
        fail(str(error))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["demo"]:
        from exporter.demo import run_demo

        return run_demo(args[1:])
    if args[:1] == ["inspect"]:
        from exporter.inspect import run_inspect

        return run_inspect(args[1:])
    return run(args)

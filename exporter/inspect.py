"""`mysql-idle-exporter inspect`: the join of sockets and sessions, printed once, for a
shell on the host or `kubectl exec` into the sidecar.

It takes the exporter's own flags and credentials, makes one collection (to the deadline
of --web.scrape-timeout) and prints what the status page shows, as a table or, with
--json, as the /status.json document. --watch repeats it in place until Ctrl-C; between
refreshes it remembers sockets, so it also sees a session the server reset (RST, what
MariaDB does on wait_timeout), which a single look cannot tell from a socket that was
never there.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Sequence
from typing import TextIO

from exporter.cli import Exporter, build_exporter, password_warning
from exporter.config import (
    Config,
    UsageError,
    build_parser,
    fail,
    parse_config_args,
    parse_duration,
)
from exporter.deadline import Deadline
from exporter.drops import DropRecorder
from exporter.logs import setup_logging
from exporter.status import StatusView, Verdict, build_view, render_json
from exporter.status_text import render_text

log = logging.getLogger("exporter")

EXIT_OK = 0
EXIT_RISK = 1
EXIT_USAGE = 2
EXIT_UNKNOWN = 3
# Interrupted before anything was shown (the shell's convention for SIGINT).
EXIT_INTERRUPTED = 130

EXIT_CODES = {Verdict.OK: EXIT_OK, Verdict.RISK: EXIT_RISK, Verdict.UNKNOWN: EXIT_UNKNOWN}

EPILOG = """\
exit codes:
  0  all well: every socket matched to a session with headroom above --risk.headroom,
     or running a command
  1  something at risk, dead but still held (dropped), or a phantom
  2  bad usage or configuration (one line on stderr says what)
  3  nothing known to be at risk, but the view is incomplete: a server could not be read
     (unreachable, wrong password, name not resolving) or sockets could not be matched to
     sessions; the client side is still printed
With --watch the code is that of the last refresh shown.

A single look cannot see a session the server reset (RST, MariaDB on wait_timeout) while
the process still holds it: that socket has left the kernel's table. --watch, or the
running exporter's status page, remembers sockets and shows it as dropped."""

# Exporter flags that mean nothing to a one-shot look: accepted (so the exporter's command
# line can be reused as it is) but not shown in --help.
_HIDDEN = ("listen_address", "telemetry_path", "web_config_file", "timeout_offset",
           "read_header_timeout", "max_connections", "fleet_serve", "fleet_fresh_interval",
           "fleet_allow_unauthenticated", "sessions_top")


def inspect_parser() -> argparse.ArgumentParser:
    parser = build_parser()
    parser.prog = "mysql-idle-exporter inspect"
    parser.description = (
        "Print which process holds which sessions to the database, in which state, and how\n"
        "long each idle one has before the server drops it, with what to change. Same flags\n"
        "and credentials as the exporter; one collection, as the exporter makes for a scrape."
    )
    parser.epilog = EPILOG
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    for action in parser._actions:
        if action.dest in _HIDDEN:
            action.help = argparse.SUPPRESS
    group = parser.add_argument_group("inspect")
    group.add_argument("--json", action="store_true",
                       help="print the /status.json document instead of a table (with "
                       "--watch, one document per line)")
    group.add_argument("--watch", action="store_true",
                       help="refresh in place until Ctrl-C")
    group.add_argument("--interval", type=parse_duration, default=2.0, metavar="DURATION",
                       help="with --watch: time between refreshes (default 2s)")
    # Only what goes wrong: the table is the output.
    parser.set_defaults(log_level="warn")
    return parser


def exit_code(view: StatusView) -> int:
    return EXIT_CODES[view.verdict]


def run_inspect(argv: Sequence[str]) -> int:
    try:
        config, options = parse_config_args(argv, inspect_parser())
        if options.interval <= 0:
            raise UsageError("--interval must be more than 0")
        setup_logging(config.log_level, config.log_format)
        exporter = build_exporter(config, os.environ)
    except UsageError as error:
        fail(str(error))
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    warning = password_warning(config, os.environ)
    if warning is not None:
        log.warning(warning)
    with contextlib.suppress(AttributeError, ValueError):
        # A hostile name must not stop the output on a terminal that is not UTF-8.
        sys.stdout.reconfigure(errors="backslashreplace")  # type: ignore[union-attr]
    try:
        return asyncio.run(inspect_loop(exporter, config, options, sys.stdout))
    except KeyboardInterrupt:  # before the loop took the signals over
        return EXIT_INTERRUPTED
    finally:
        exporter.close()


async def inspect_loop(exporter: Exporter, config: Config, options: argparse.Namespace,
                       out: TextIO) -> int:
    """Collect and print, once or (--watch) until SIGINT, SIGTERM or SIGHUP; the exit code
    of the last view shown."""
    engine = exporter.engine
    drops = exporter.drops or DropRecorder(engine.clock)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        loop.add_signal_handler(signum, stop.set)
    code = EXIT_INTERRUPTED
    while True:
        collecting = asyncio.ensure_future(
            engine.collect(Deadline.after(config.scrape_timeout, engine.clock)))
        stopping = asyncio.ensure_future(stop.wait())
        await asyncio.wait({collecting, stopping}, return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        if stop.is_set():
            collecting.cancel()
            return code
        snapshot = collecting.result()
        drops.observe(snapshot)
        view = build_view(snapshot, drops.history, drops.wall(), collection_age=0.0)
        code = exit_code(view)
        if not _show(view, options, out):
            return code  # the reader went away (`inspect --watch | head`)
        if not options.watch:
            return code
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), options.interval)
        if stop.is_set():
            return code


def _show(view: StatusView, options: argparse.Namespace, out: TextIO) -> bool:
    if options.json:
        text = render_json(view, indent=None if options.watch else 1)
    else:
        text = render_text(view)
        if options.watch:
            footer = (f"refreshing every {options.interval:g}s; Ctrl-C to stop "
                      f"(exit code now {exit_code(view)})\n")
            # In place on a terminal; one after the other into a file or a pipe.
            text = ("\x1b[H\x1b[2J" if out.isatty() else "\n") + text + footer
    try:
        out.write(text)
        out.flush()
    except BrokenPipeError:
        # Nobody reads any more; keep Python from complaining when it flushes at exit.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, out.fileno())
        return False
    return True

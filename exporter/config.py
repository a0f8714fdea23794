"""Command line: flags in the exporter style, validated into one immutable Config."""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, NoReturn, get_args

from exporter import __version__
from exporter.addresses import AddressError, parse_host_port, target_address
from exporter.fleet import DEFAULT_FRESH_INTERVAL_SECONDS, FLEET_PASSWORD_ENV, FLEET_PATH
from exporter.sessions.credentials import PASSWORD_ENV
from exporter.sessions.sources import Prefer
from exporter.sockets.reader import Source as SocketSourceName

LogLevel = Literal["debug", "info", "warn", "error"]
LogFormat = Literal["logfmt", "json"]
Mode = Literal["local", "node"]

DEFAULT_LISTEN = ":9864"
# The longest scrape anyone may ask for (a header or --web.scrape-timeout): deadlines far
# beyond it overflow the timeouts of the reads below.
MAX_SCRAPE_TIMEOUT_SECONDS = 300.0
DEFAULT_TARGET = "127.0.0.1:3306"


class UsageError(Exception):
    """Bad flags or configuration: the CLI prints the message on one line and exits 2."""


@dataclass(frozen=True, slots=True)
class TargetAddress:
    name: str  # the normalised spelling (addresses.target_address): the `target` label
    host: str
    port: int


@dataclass(frozen=True, slots=True)
class Config:
    targets: tuple[TargetAddress, ...]
    user: str | None
    my_cnf: str | None
    listen_host: str
    listen_port: int
    telemetry_path: str
    web_config_file: str | None
    scrape_timeout: float
    timeout_offset: float
    risk_headroom: float
    network_idle_timeout: float | None
    sessions_top: int
    server_interval: float
    server_source: Prefer
    sockets_source: SocketSourceName
    proc_path: str
    log_level: LogLevel
    log_format: LogFormat
    fleet_serve: bool = False
    fleet_allow_unauthenticated: bool = False
    state_dir: str | None = None
    read_header_timeout: float = 10.0
    max_connections: int = 512
    fleet_url: str | None = None
    fleet_user: str | None = None
    fleet_fresh_interval: float = DEFAULT_FRESH_INTERVAL_SECONDS
    # "local": this network namespace's sockets; "node": every namespace's (exporter.node).
    mode: Mode = "local"
    # Longest time between two dumps of the whole TCP table (exporter.sockets.lookup).
    sockets_dump_interval: float = 60.0


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def _seconds(text: str) -> float:
    """Seconds as a number, optionally with a unit: 30, 1.5, 30s, 5m, 1h."""
    units = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
    value = text.strip()
    factor = 1.0
    for suffix in ("ms", "s", "m", "h"):
        if value.endswith(suffix):
            value, factor = value[: -len(suffix)], units[suffix]
            break
    try:
        seconds = float(value) * factor
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a duration (examples: 30, 30s, 5m)"
        ) from None
    if not math.isfinite(seconds) or seconds < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be a finite, non-negative duration")
    return seconds


# For subcommands' own flags (`inspect --interval`).
parse_duration = _seconds


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must not be negative")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="mysql-idle-exporter",
        description=(
            "Prometheus exporter that warns before MySQL/MariaDB drops an idle client session "
            "(wait_timeout, or a middlebox forgetting the flow) and finds dead sessions that are "
            "still held. Run it beside the application. The password comes from the "
            f"environment variable {PASSWORD_ENV} or from --config.my-cnf, never from flags. "
            "Subcommands: 'mysql-idle-exporter demo' runs a self-contained demonstration; "
            "'mysql-idle-exporter inspect' prints the sockets and sessions once (see its --help)."
        ),
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    db = parser.add_argument_group("database")
    db.add_argument(
        "--mysql.address",
        dest="addresses",
        action="append",
        metavar="HOST:PORT",
        help=f"a server to watch; repeat for several (default {DEFAULT_TARGET}). "
        "The target label is the address in one spelling: no surrounding spaces, host names "
        "lower-case, IPs in canonical form ([::1]:3306), an empty host as 127.0.0.1; two "
        "spellings of one address are an error. Names are not resolved.",
    )
    db.add_argument("--mysql.user", dest="user", metavar="USER", help="user to log in as "
                    "(default: the user in --config.my-cnf)")
    db.add_argument(
        "--config.my-cnf",
        dest="my_cnf",
        metavar="PATH",
        help="my.cnf file whose [client] section gives user, password and ssl-* options "
        "(without them TLS is PREFERRED: used when the server offers it)",
    )
    db.add_argument(
        "--server.interval",
        dest="server_interval",
        type=_seconds,
        default=30.0,
        metavar="DURATION",
        help="read the server at most this often; between reads idle time comes from the "
        "kernel, and a new connection forces a read (default 30s)",
    )
    db.add_argument(
        "--server.source",
        dest="server_source",
        choices=get_args(Prefer),
        default="auto",
        help="where to read sessions (default auto: performance_schema when enabled)",
    )
    risk = parser.add_argument_group("risk")
    risk.add_argument(
        "--risk.headroom",
        dest="risk_headroom",
        type=_seconds,
        default=300.0,
        metavar="DURATION",
        help="a session with this much headroom or less is at_risk (default 300s)",
    )
    risk.add_argument(
        "--network.idle-timeout",
        dest="network_idle_timeout",
        type=_seconds,
        default=None,
        metavar="DURATION",
        help="idle limit of a NAT, load balancer or firewall on the path, if any "
        "(AWS NLB 350s, Azure LB 4m, GCP Cloud NAT 20m)",
    )
    risk.add_argument(
        "--sessions.top",
        dest="sessions_top",
        type=_positive_int,
        default=20,
        metavar="N",
        help="export per-session headroom for at most the N riskiest sessions (default 20)",
    )
    web = parser.add_argument_group("web")
    web.add_argument(
        "--web.listen-address",
        dest="listen_address",
        default=DEFAULT_LISTEN,
        metavar="[HOST]:PORT",
        help=f"address to serve metrics on (default {DEFAULT_LISTEN})",
    )
    web.add_argument(
        "--web.telemetry-path",
        dest="telemetry_path",
        default="/metrics",
        metavar="PATH",
        help="path of the metrics (default /metrics)",
    )
    web.add_argument(
        "--web.config.file",
        dest="web_config_file",
        metavar="PATH",
        help="TLS and basic auth, in the Prometheus exporter-toolkit web config format",
    )
    web.add_argument(
        "--web.scrape-timeout",
        dest="scrape_timeout",
        type=_seconds,
        default=10.0,
        metavar="DURATION",
        help="time a scrape may take when Prometheus sends no timeout header (default 10s). "
        f"X-Prometheus-Scrape-Timeout-Seconds above {MAX_SCRAPE_TIMEOUT_SECONDS:g}s counts as "
        f"{MAX_SCRAPE_TIMEOUT_SECONDS:g}s; NaN, zero or negative values as no header; "
        f"at most {MAX_SCRAPE_TIMEOUT_SECONDS:g}s",
    )
    web.add_argument(
        "--web.timeout-offset",
        dest="timeout_offset",
        type=_seconds,
        default=0.5,
        metavar="DURATION",
        help="kept back from Prometheus's scrape timeout so the answer arrives in time "
        "(default 0.5s)",
    )
    web.add_argument(
        "--web.read-header-timeout",
        dest="read_header_timeout",
        type=_seconds,
        default=10.0,
        metavar="DURATION",
        help="a connection must send a request's headers within this long of connecting, "
        "or of the first byte of a later request; a TLS handshake gets as long again "
        "(default 10s). Kept-alive connections may idle 120s between requests",
    )
    web.add_argument(
        "--web.max-connections",
        dest="max_connections",
        type=_positive_int,
        default=512,
        metavar="N",
        help="HTTP connections at once; beyond it a new one pushes out the one that has "
        "waited longest without a request. Lowered at start to leave 128 open files "
        "under the process's limit (default 512)",
    )
    host = parser.add_argument_group("host")
    host.add_argument(
        "--mode",
        dest="mode",
        choices=get_args(Mode),
        default="local",
        help="local: the sockets of the exporter's own network namespace (a sidecar, a "
        "process beside the application); node: every network namespace on the machine, "
        "each socket labelled with its pod and container (one exporter per node: a "
        "DaemonSet with hostPID, as root with CAP_SYS_ADMIN, CAP_SYS_PTRACE and "
        "CAP_DAC_READ_SEARCH) (default local)",
    )
    host.add_argument(
        "--sockets.source",
        dest="sockets_source",
        choices=get_args(SocketSourceName),
        default="auto",
        help="how to list sockets: netlink sock_diag, /proc/net/tcp, or auto (netlink, "
        "falling back to /proc)",
    )
    host.add_argument(
        "--sockets.dump-interval",
        dest="sockets_dump_interval",
        type=_seconds,
        default=60.0,
        metavar="DURATION",
        help="with netlink, dump the kernel's whole TCP table at least this often; between "
        "dumps, while no TCP connection is opened from the network namespace, the sockets "
        "already known are looked up one by one, which costs the kernel far less (node "
        "mode: per namespace; 0: dump on every scrape) (default 60s)",
    )
    host.add_argument(
        "--path.procfs",
        dest="proc_path",
        default="/proc",
        metavar="PATH",
        help="procfs mount point, for owners of sockets (default /proc)",
    )
    host.add_argument(
        "--state.dir",
        dest="state_dir",
        metavar="DIR",
        help="an existing, writable directory where the exporter keeps what it knows of "
        "sockets and counted drops across its own restarts, so that a session the server "
        "reset while the exporter was down (its socket gone from the kernel's tables, "
        "still held by the process) is reported dropped after the restart (default: none; "
        "a few hundred bytes per socket, written at most every 10 s)",
    )
    fleet = parser.add_argument_group(
        "fleet mode",
        "one exporter per database reads the processlist and serves it to sidecars, so the "
        "database's cost does not grow with the number of pods",
    )
    fleet.add_argument(
        "--fleet.serve",
        dest="fleet_serve",
        action="store_true",
        help=f"serve the server-side facts to sidecars on {FLEET_PATH} (same auth as metrics). "
        "They name every session on the server, so this needs basic_auth_users or verified "
        "client certificates in --web.config.file, or --fleet.allow-unauthenticated",
    )
    fleet.add_argument(
        "--fleet.allow-unauthenticated",
        dest="fleet_allow_unauthenticated",
        action="store_true",
        help="with --fleet.serve: serve without authentication to anyone who can reach "
        "--web.listen-address (a warning is logged)",
    )
    fleet.add_argument(
        "--fleet.url",
        dest="fleet_url",
        metavar="URL",
        help="take the server-side facts from the fleet exporter at URL instead of the "
        f"database (password for its basic auth from {FLEET_PASSWORD_ENV})",
    )
    fleet.add_argument("--fleet.user", dest="fleet_user", metavar="USER",
                       help="basic-auth user for --fleet.url")
    fleet.add_argument(
        "--fleet.fresh-interval",
        dest="fleet_fresh_interval",
        type=_seconds,
        default=DEFAULT_FRESH_INTERVAL_SECONDS,
        metavar="DURATION",
        help="with --fleet.serve: the reads sidecars ask for on seeing a new connection start "
        "at least this far apart, each shared by every sidecar asking; a sidecar may wait this "
        "long for its answer, so it must be shorter than --web.scrape-timeout (default 1s)",
    )
    logs = parser.add_argument_group("logging")
    logs.add_argument(
        "--log.level",
        dest="log_level",
        choices=get_args(LogLevel),
        default="info",
    )
    logs.add_argument("--log.format", dest="log_format", choices=get_args(LogFormat),
                      default="logfmt")
    return parser


def parse_config(argv: Sequence[str]) -> Config:
    """Parse and validate flags; every problem raises UsageError with a one-line message."""
    return parse_config_args(argv, build_parser())[0]


def parse_config_args(
    argv: Sequence[str], parser: argparse.ArgumentParser
) -> tuple[Config, argparse.Namespace]:
    """As parse_config, with a parser that may know more flags (build_parser's plus a
    subcommand's own, e.g. `inspect --json`); also returns every parsed value."""
    for arg in argv:
        if arg.split("=", 1)[0] in ("--mysql.password", "--password", "-p"):
            raise UsageError(
                f"passwords are not accepted on the command line: set {PASSWORD_ENV} "
                "or use --config.my-cnf"
            )
    args = parser.parse_args(list(argv))
    targets = []
    seen: dict[str, str] = {}
    for address in args.addresses or [DEFAULT_TARGET]:
        try:
            name, host, port = target_address(address)
        except AddressError as error:
            raise UsageError(f"--mysql.address: {error}") from None
        if name in seen:
            raise UsageError(
                f"--mysql.address {seen[name]!r} and {address!r} are the same target ({name})"
            )
        seen[name] = address
        targets.append(TargetAddress(name, host, port))
    try:
        listen_host, listen_port = parse_host_port(args.listen_address)
    except AddressError as error:
        raise UsageError(f"--web.listen-address: {error}") from None
    path = args.telemetry_path
    if not path.startswith("/") or path in ("/healthz", "/probe"):
        raise UsageError(
            f"--web.telemetry-path must start with '/' and not be /healthz or /probe: {path!r}"
        )
    if not 0 < args.scrape_timeout <= MAX_SCRAPE_TIMEOUT_SECONDS:
        raise UsageError(
            f"--web.scrape-timeout must be more than 0 and at most {MAX_SCRAPE_TIMEOUT_SECONDS:g}s"
        )
    if args.read_header_timeout <= 0:
        raise UsageError("--web.read-header-timeout must be more than 0")
    if args.max_connections < 1:
        raise UsageError("--web.max-connections must be at least 1")
    if args.network_idle_timeout == 0:
        raise UsageError("--network.idle-timeout must be more than 0 (leave it out for none)")
    if args.fleet_url is not None:
        scheme = args.fleet_url.split("://", 1)[0] if "://" in args.fleet_url else ""
        if scheme not in ("http", "https"):
            raise UsageError(f"--fleet.url must start with http:// or https://: {args.fleet_url!r}")
        if args.fleet_serve:
            raise UsageError("--fleet.serve and --fleet.url exclude each other")
    if args.mode == "node" and args.sockets_source == "proc":
        raise UsageError("--mode=node reads each network namespace with netlink sock_diag: "
                         "--sockets.source=proc cannot serve it")
    if args.fleet_serve and args.fleet_fresh_interval >= args.scrape_timeout:
        # A fresh request waits out the interval before its read starts: it would time out.
        raise UsageError(
            f"--fleet.fresh-interval ({args.fleet_fresh_interval:g}s) must be shorter than "
            f"--web.scrape-timeout ({args.scrape_timeout:g}s): a sidecar's request for a fresh "
            "read waits up to the interval for it"
        )
    config = Config(
        targets=tuple(targets),
        user=args.user,
        my_cnf=args.my_cnf,
        listen_host=listen_host,
        listen_port=listen_port,
        telemetry_path=path,
        web_config_file=args.web_config_file,
        scrape_timeout=args.scrape_timeout,
        timeout_offset=args.timeout_offset,
        risk_headroom=args.risk_headroom,
        network_idle_timeout=args.network_idle_timeout,
        sessions_top=args.sessions_top,
        server_interval=args.server_interval,
        server_source=args.server_source,
        sockets_source=args.sockets_source,
        proc_path=args.proc_path,
        log_level=args.log_level,
        log_format=args.log_format,
        fleet_serve=args.fleet_serve,
        fleet_allow_unauthenticated=args.fleet_allow_unauthenticated,
        state_dir=args.state_dir,
        read_header_timeout=args.read_header_timeout,
        max_connections=args.max_connections,
        fleet_url=args.fleet_url,
        fleet_user=args.fleet_user,
        fleet_fresh_interval=args.fleet_fresh_interval,
        mode=args.mode,
        sockets_dump_interval=args.sockets_dump_interval,
    )
    return config, args


def fail(message: str) -> NoReturn:
    print(f"mysql-idle-exporter: error: {message}", file=sys.stderr)
    raise SystemExit(2)

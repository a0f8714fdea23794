"""The HTTP side: /metrics, /probe, /healthz and the status page (exporter/web/status.py),
served by aiohttp."""

from __future__ import annotations

import base64
import binascii
import logging
import math
import ssl
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING

from aiohttp import web
from aiohttp.typedefs import Middleware
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder, generate_latest
from prometheus_client.gc_collector import GCCollector
from prometheus_client.openmetrics import exposition as openmetrics
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector
from prometheus_client.utils import parse_version

from exporter.addresses import AddressError, normalise_ip, target_address
from exporter.collector import SnapshotCollector
from exporter.config import MAX_SCRAPE_TIMEOUT_SECONDS
from exporter.deadline import Deadline
from exporter.drops import DropRecorder
from exporter.engine import Engine
from exporter.exposition import write, write_metrics
from exporter.fleet import FLEET_PATH
from exporter.model import Snapshot
from exporter.web.compression import gzip_middleware
from exporter.web.config import WebConfig
from exporter.web.listener import ListenLimits, track_requests
from exporter.web.status import StatusContext, add_status_routes

if TYPE_CHECKING:  # imported where used: default flags use none (resident memory)
    from exporter.fleet.server import FleetServer
    from exporter.web.auth import PasswordChecker
    from exporter.web.reload import WebConfigWatcher

log = logging.getLogger(__name__)

SCRAPE_TIMEOUT_HEADER = "X-Prometheus-Scrape-Timeout-Seconds"
ENGINE_KEY = web.AppKey("engine", Engine)


@dataclass(frozen=True)
class WebOptions:
    telemetry_path: str = "/metrics"
    # Used when Prometheus sends no timeout header (curl, other scrapers).
    default_timeout: float = 10.0
    # Kept back from Prometheus's own timeout so the answer arrives before it gives up.
    timeout_offset: float = 0.5
    config: WebConfig = field(default_factory=WebConfig)
    # With --web.config.file: the config in force, re-read when its files change (then
    # `config` is unused).
    watcher: WebConfigWatcher | None = None
    limits: ListenLimits = field(default_factory=ListenLimits)

    @property
    def ssl_context(self) -> ssl.SSLContext | None:
        """The context the listening socket keeps; reloads reach it through the watcher."""
        return self.watcher.listening_context if self.watcher else self.config.ssl_context

    def current_config(self) -> WebConfig:
        return self.watcher.config if self.watcher else self.config


OPTIONS_KEY = web.AppKey("options", WebOptions)
FLEET_KEY: web.AppKey[FleetServer] = web.AppKey("fleet")


@dataclass
class RenderClock:
    """How long the last answer took to render; a body cannot hold its own rendering."""

    last_seconds: float | None = None


RENDER_KEY = web.AppKey("render", RenderClock)


def scrape_deadline(request: web.Request) -> Deadline:
    """The one deadline of this request, on the engine's clock: made here, where the
    request arrives, and handed down to every read."""
    options = request.app[OPTIONS_KEY]
    seconds = scrape_timeout(request.headers.get(SCRAPE_TIMEOUT_HEADER), options)
    return Deadline.after(seconds, request.app[ENGINE_KEY].clock)


def scrape_timeout(header: str | None, options: WebOptions) -> float:
    """Seconds this scrape may take: Prometheus's timeout less the offset, else the default.

    The header is input from the network: a value above MAX_SCRAPE_TIMEOUT_SECONDS (`inf`,
    `1e308`) is clamped to it, since deadlines that far out overflow the timeouts of the
    reads below; NaN, zero, negative or unparsable values mean "no header" (the default)."""
    if header:
        try:
            value = float(header)
        except ValueError:
            value = math.nan
        if value > 0:  # False for NaN
            value = min(value, MAX_SCRAPE_TIMEOUT_SECONDS)
            return max(value - options.timeout_offset, 0.1)
    return options.default_timeout


Encoder = Callable[[CollectorRegistry], bytes]


def own_metrics(extra: Sequence[Collector] = ()) -> CollectorRegistry:
    """The process's own metrics, from prometheus_client: the web side's ``extra``, then
    process, platform and garbage collection. Built once (exporter.web.app.build_app)."""
    registry = CollectorRegistry(auto_describe=False)
    for collector in extra:
        registry.register(collector)
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    return registry


class Exposition:
    """Writes the /metrics body: the snapshot's families straight from their rows
    (exporter.exposition.write), then what ``own`` (own_metrics) collects, straight too
    (exporter.exposition.write_metrics) unless only prometheus_client's encoder can write
    it. Escapings that rename names (dots, values) get prometheus_client's encoder for the
    whole body."""

    def __init__(self, own: CollectorRegistry) -> None:
        self._own = own

    def render(
        self, snapshot: Snapshot, accept: str | None, render_seconds: float | None = None,
    ) -> tuple[bytes, str]:
        """The body and its content type; ``render_seconds``: the previous answer's
        rendering, exposed as mysql_idle_render_duration_seconds."""
        collector = SnapshotCollector(snapshot, render_seconds=render_seconds)
        encoder, content_type = encoder_for(accept)
        kind = direct_format(encoder)
        if kind is None:
            registry = CollectorRegistry(auto_describe=False)
            registry.register(collector)
            registry.register(self._own)
            return encoder(registry), content_type
        openmetrics_body = kind == OPENMETRICS
        body = write(collector.families(), openmetrics=openmetrics_body)
        # After the families, the process's own metrics, as prometheus_client writes them.
        own = write_metrics(self._own.collect(), openmetrics=openmetrics_body)
        if own is None:  # something only prometheus_client writes (OpenMetrics's `# EOF` too)
            return body + encoder(self._own), content_type
        return body + own + (b"# EOF\n" if openmetrics_body else b""), content_type


EXPOSITION_KEY = web.AppKey("exposition", Exposition)
TEXT, OPENMETRICS = "text", "openmetrics"
# The escapings that leave classic names as they are (the only names exposed here).
_KEEPING = (openmetrics.UNDERSCORES, openmetrics.ALLOWUTF8)


def direct_format(encoder: Encoder) -> str | None:
    """TEXT or OPENMETRICS where exporter.exposition writes what ``encoder`` (one of
    prometheus_client's, from encoder_for) would; None where only prometheus_client can."""
    if encoder is generate_latest:
        return TEXT
    if not isinstance(encoder, partial):
        return None
    if encoder.keywords.get("escaping", openmetrics.UNDERSCORES) not in _KEEPING:
        return None
    if encoder.func is generate_latest:
        return TEXT
    # OpenMetrics 1.x only: 2.0 has native histograms and may change more.
    version = str(encoder.keywords.get("version", "1.0.0"))
    if encoder.func is openmetrics.generate_latest and parse_version(version)[:1] == (1,):
        return OPENMETRICS
    return None


def encoder_for(accept: str | None) -> tuple[Encoder, str]:
    """prometheus_client's encoder and content type for this Accept header.

    For OpenMetrics with `escaping=underscores` (what Prometheus gets when it names no
    escaping) prometheus_client checks every sample's name character by character in
    Python: about 40 % of a sidecar's scrape. Every metric and label name exposed here is a
    classic Prometheus name (a test checks it), which that escaping leaves as it is, so
    the `allow-utf-8` escaping, which only quotes names outside that set, writes the same
    bytes without the per-character walk."""
    encoder, content_type = choose_encoder(accept or "")
    if (
        isinstance(encoder, partial)
        and encoder.func is openmetrics.generate_latest
        and encoder.keywords.get("escaping") == openmetrics.UNDERSCORES
    ):
        encoder = partial(encoder.func, **{**encoder.keywords, "escaping": openmetrics.ALLOWUTF8})
    return encoder, content_type


async def _scrape(request: web.Request, target: str | None) -> web.Response:
    snapshot = await request.app[ENGINE_KEY].collect(scrape_deadline(request))
    if target is not None:
        snapshot = snapshot.only(target)
    clock = request.app[RENDER_KEY]
    started = time.perf_counter()
    body, content_type = request.app[EXPOSITION_KEY].render(
        snapshot, request.headers.get("Accept"), clock.last_seconds)
    clock.last_seconds = time.perf_counter() - started
    return web.Response(body=body, headers={"Content-Type": content_type})


async def _metrics(request: web.Request) -> web.Response:
    return await _scrape(request, None)


def known_target(given: str, names: list[str]) -> str | None:
    """The configured target that `given` spells (any spelling --mysql.address accepts for
    it), or None."""
    if given in names:
        return given
    try:
        name = target_address(given)[0]
    except AddressError:
        return None
    return name if name in names else None


async def _probe(request: web.Request) -> web.Response:
    given = request.query.get("target", "")
    if not given:
        return web.Response(status=400, text="the target parameter is missing\n")
    target = known_target(given, request.app[ENGINE_KEY].target_names)
    if target is None:
        # Only configured targets: /probe must never become a way to reach arbitrary hosts.
        return web.Response(
            status=400, text="unknown target: probe only addresses given by --mysql.address\n"
        )
    return await _scrape(request, target)


async def _fleet_sessions(request: web.Request) -> web.Response:
    from exporter.fleet.wire import encode_view

    fleet = request.app[FLEET_KEY]
    target = known_target(request.query.get("target", ""), fleet.target_names)
    if target is None:
        return web.Response(status=400, text="unknown target\n")
    asked = request.query.getall("client_ip", [])
    # No client_ip at all means every session; an empty one means none (a watcher with no
    # sockets still wants the timeouts).
    client_ips = frozenset(normalise_ip(ip) for ip in asked if ip) if asked else None
    deadline = scrape_deadline(request)
    # fresh=1: the sidecar saw a connection that a cached read cannot know.
    read = await fleet.read(target, deadline, fresh=request.query.get("fresh") == "1")
    document = encode_view(read.answer(client_ips), deadline.now())
    return web.json_response(document)


async def _healthz(request: web.Request) -> web.Response:
    return web.Response(text="ok\n")


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _auth_middleware(current: Callable[[], WebConfig], checker: PasswordChecker) -> Middleware:
    from exporter.web.auth import Verdict

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        config = current()  # re-read here when its files changed
        auth = config.basic_auth
        # Probes from the kubelet carry no credentials and /healthz reveals nothing.
        if auth is not None and request.path != "/healthz":
            user, password = _credentials(request.headers.get("Authorization", ""))
            verdict = (
                Verdict.DENIED if user is None else await checker.check(auth, user, password)
            )
            if verdict is Verdict.BUSY:
                return web.Response(
                    status=429,
                    text="Too many password checks at once, try again\n",
                    headers={"Retry-After": "1"},
                )
            if verdict is not Verdict.ALLOWED:
                return web.Response(
                    status=401,
                    text="Unauthorized\n",
                    headers={"WWW-Authenticate": 'Basic realm="mysql-idle-exporter"'},
                )
        response = await handler(request)
        for name, value in config.headers.items():
            response.headers[name] = value
        return response

    return middleware


def _closing(checker: PasswordChecker) -> Callable[[web.Application], Awaitable[None]]:
    async def close_checker(_: web.Application) -> None:
        checker.close()

    return close_checker


def _credentials(header: str) -> tuple[str | None, str]:
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic" or not value:
        return None, ""
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None, ""
    user, sep, password = decoded.partition(":")
    return (user, password) if sep else (None, "")


def build_app(
    engine: Engine, options: WebOptions, fleet: FleetServer | None = None,
    drops: DropRecorder | None = None,
) -> web.Application:
    """The exporter's HTTP side; with ``fleet`` (--fleet.serve) it also serves sidecars.
    ``drops``: the drop history the engine feeds (exporter.cli); else the status page
    keeps its own from the collections it asks for."""
    middlewares: list[Middleware] = [track_requests]
    # Without --web.config.file nothing can ask for a password or a header: no middleware
    # for every request to pass through, and the password checker's module stays unloaded.
    checker = None
    if options.watcher is not None or options.config.basic_auth or options.config.headers:
        from exporter.web.auth import PasswordChecker

        checker = PasswordChecker()
        middlewares.append(_auth_middleware(options.current_config, checker))
    middlewares.append(gzip_middleware)
    app = web.Application(middlewares=middlewares)
    if checker is not None:
        app.on_cleanup.append(_closing(checker))
    app[ENGINE_KEY] = engine
    app[OPTIONS_KEY] = options
    app[RENDER_KEY] = RenderClock()
    extra: list[Collector] = []
    if options.watcher:
        from exporter.web.reload import WebConfigCollector

        extra.append(WebConfigCollector(options.watcher))
    app[EXPOSITION_KEY] = Exposition(own_metrics(extra))
    app.router.add_get(options.telemetry_path, _metrics)
    app.router.add_get("/probe", _probe)
    app.router.add_get("/healthz", _healthz)
    if fleet is not None:
        app[FLEET_KEY] = fleet
        app.router.add_get(FLEET_PATH, _fleet_sessions)
    status = StatusContext(engine, drops or DropRecorder(engine.clock),
                           options.default_timeout, options.telemetry_path)
    add_status_routes(app, status, page=options.telemetry_path != "/")
    return app

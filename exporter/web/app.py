"""The HTTP side: /metrics, /probe, /healthz and the status page (exporter/web/status.py),
served by aiohttp."""

from __future__ import annotations

import base64
import binascii
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from aiohttp import web
from aiohttp.typedefs import Middleware
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

from exporter.addresses import normalise_ip
from exporter.collector import SnapshotCollector
from exporter.deadline import Deadline
from exporter.drops import DropRecorder
from exporter.engine import Engine
from exporter.fleet import FLEET_PATH
from exporter.fleet.server import FleetServer
from exporter.fleet.wire import encode_view
from exporter.model import Snapshot
from exporter.web.config import WebConfig
from exporter.web.status import StatusContext, add_status_routes

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


OPTIONS_KEY = web.AppKey("options", WebOptions)
FLEET_KEY = web.AppKey("fleet", FleetServer)


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
    """Seconds this scrape may take: Prometheus's timeout less the offset, else the default."""
    if header:
        try:
            value = float(header)
        except ValueError:
            value = 0.0
        if value > 0:
            return max(value - options.timeout_offset, 0.1)
    return options.default_timeout


def render(
    snapshot: Snapshot, accept: str | None, render_seconds: float | None = None
) -> tuple[bytes, str]:
    """The body and its content type; ``render_seconds``: the previous answer's rendering,
    exposed as mysql_idle_render_duration_seconds."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector(snapshot, render_seconds=render_seconds))
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    encoder, content_type = choose_encoder(accept or "")
    return encoder(registry), content_type


async def _scrape(request: web.Request, target: str | None) -> web.Response:
    snapshot = await request.app[ENGINE_KEY].collect(scrape_deadline(request))
    if target is not None:
        snapshot = snapshot.only(target)
    clock = request.app[RENDER_KEY]
    started = time.perf_counter()
    body, content_type = render(snapshot, request.headers.get("Accept"), clock.last_seconds)
    clock.last_seconds = time.perf_counter() - started
    return web.Response(body=body, headers={"Content-Type": content_type})


async def _metrics(request: web.Request) -> web.Response:
    return await _scrape(request, None)


async def _probe(request: web.Request) -> web.Response:
    target = request.query.get("target", "")
    if not target:
        return web.Response(status=400, text="the target parameter is missing\n")
    if target not in request.app[ENGINE_KEY].target_names:
        # Only configured targets: /probe must never become a way to reach arbitrary hosts.
        return web.Response(
            status=400, text="unknown target: probe only addresses given by --mysql.address\n"
        )
    return await _scrape(request, target)


async def _fleet_sessions(request: web.Request) -> web.Response:
    fleet = request.app[FLEET_KEY]
    target = request.query.get("target", "")
    if target not in fleet.target_names:
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


def _auth_middleware(config: WebConfig) -> Middleware:
    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        auth = config.basic_auth
        # Probes from the kubelet carry no credentials and /healthz reveals nothing.
        if auth is not None and request.path != "/healthz":
            user, password = _credentials(request.headers.get("Authorization", ""))
            if user is None or not auth.check(user, password):
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
    app = web.Application(middlewares=[_auth_middleware(options.config)])
    app[ENGINE_KEY] = engine
    app[OPTIONS_KEY] = options
    app[RENDER_KEY] = RenderClock()
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

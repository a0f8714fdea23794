"""The status page at ``/`` and its data at ``/status.json``.

The page is a plain HTML table made on the server from the status view
(exporter.status) by exporter/web/status_page.py: it reads whole without JavaScript, and
reloads itself (a meta refresh, every few seconds). Its one script (``static/status.js``)
only counts each idle session's headroom down between reloads. Nothing is loaded from
elsewhere, and a strict Content-Security-Policy says so to the browser: no inline script
or style, no other origin.

Both paths sit behind the same basic auth as the metrics (the middleware in
exporter/web/app.py covers every path but /healthz).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from aiohttp import web

from exporter.deadline import Deadline
from exporter.drops import DropRecorder
from exporter.engine import Engine

if TYPE_CHECKING:
    from exporter.status import StatusView

CONTENT_SECURITY_POLICY = (
    "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self'; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
# Seconds between reloads unless ?refresh=N says otherwise (0: never).
DEFAULT_REFRESH = 5
MAX_REFRESH = 3600
_STATIC = {
    "status.css": "text/css",
    "status.js": "text/javascript",
}


@dataclass(frozen=True)
class StatusContext:
    engine: Engine
    drops: DropRecorder
    # Seconds a collection made for the page may take (--web.scrape-timeout).
    timeout: float
    telemetry_path: str


STATUS_KEY = web.AppKey("status", StatusContext)


def add_status_routes(app: web.Application, context: StatusContext, *, page: bool) -> None:
    """/status.json and the static files; with ``page``, the page itself at /."""
    app[STATUS_KEY] = context
    app.router.add_get("/status.json", _status_json)
    app.router.add_get("/static/{name}", _static)
    if page:
        app.router.add_get("/", _page)


async def current_view(context: StatusContext) -> StatusView:
    """A fresh collection (shared with any scrape running now), as a status view."""
    # Imported at the first request: an exporter that is only scraped never builds a view,
    # and the status modules are about 0.3 MiB resident (issue 17).
    from exporter.status import build_view

    engine = context.engine
    snapshot = await engine.collect(Deadline.after(context.timeout, engine.clock))
    context.drops.observe(snapshot)
    return build_view(snapshot, context.drops.history, context.drops.wall(),
                      collection_age=context.drops.age(snapshot))


async def _page(request: web.Request) -> web.Response:
    from exporter.web.status_page import render_page

    context = request.app[STATUS_KEY]
    view = await current_view(context)
    body = render_page(view, refresh=_refresh(request.query.get("refresh")),
                       metrics_path=context.telemetry_path)
    return web.Response(text=body, content_type="text/html", charset="utf-8",
                        headers=SECURITY_HEADERS)


async def _status_json(request: web.Request) -> web.Response:
    from exporter.status import render_json

    view = await current_view(request.app[STATUS_KEY])
    body = render_json(view)
    return web.Response(text=body, content_type="application/json", charset="utf-8",
                        headers=SECURITY_HEADERS)


async def _static(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    content_type = _STATIC.get(name)
    if content_type is None:
        raise web.HTTPNotFound()
    from importlib import resources  # here: a scrape never needs it (resident memory)

    body = resources.files("exporter.web").joinpath("static", name).read_bytes()
    return web.Response(body=body, content_type=content_type, charset="utf-8",
                        headers={**SECURITY_HEADERS, "Cache-Control": "max-age=300"})


def _refresh(text: str | None) -> int:
    try:
        value = int(text) if text is not None else DEFAULT_REFRESH
    except ValueError:
        return DEFAULT_REFRESH
    return min(max(value, 0), MAX_REFRESH)

"""The status page and /status.json over a real aiohttp server with fake sources: headers,
static files, refresh, the drop history, and the same auth as /metrics."""

from __future__ import annotations

import asyncio
import base64
import json

import bcrypt
import pytest
from aiohttp import ClientSession

from exporter.drops import DropRecorder
from exporter.model import TcpState
from exporter.web.app import WebOptions, build_app
from exporter.web.config import BasicAuth, WebConfig
from exporter.web.status import CONTENT_SECURITY_POLICY
from tests.support.builders import sess, sock
from tests.support.fakes import FakeSessions, fake_engine, reading
from tests.support.web import serve


async def fetch(paths, *, options: WebOptions | None = None, change=None,
                headers=None) -> dict[str, tuple[int, dict[str, str], str]]:
    """GET each path in turn from an exporter watching one idle worker socket; ``change``
    (if given) runs on the socket list before each request."""
    sockets = [sock(5000, idle=10.0)]
    engine = fake_engine({"db:3306": FakeSessions(reading(sess(1, 5000, idle=10.0)))}, sockets)
    runner, port = await serve(build_app(engine, options or WebOptions(),
                                         drops=DropRecorder(engine.clock)))
    answers = {}
    try:
        async with ClientSession() as client:
            for index, path in enumerate(paths):
                if change is not None:
                    change(index, sockets)
                async with client.get(f"http://127.0.0.1:{port}{path}",
                                      headers=headers or {}) as r:
                    answers[path if path not in answers else f"{path}#{index}"] = (
                        r.status, dict(r.headers), await r.text())
    finally:
        await runner.cleanup()
        engine.close()
    return answers


def test_page_json_and_static_files_with_a_strict_policy() -> None:
    answers = asyncio.run(fetch(["/", "/status.json", "/static/status.css",
                                 "/static/status.js", "/static/app.py", "/static/..%2fapp.py"]))
    status, headers, page = answers["/"]
    assert status == 200 and headers["Content-Type"] == "text/html; charset=utf-8"
    assert headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
    assert CONTENT_SECURITY_POLICY.startswith("default-src 'none'; style-src 'self'; "
                                              "script-src 'self'")
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert "db:3306" in page and 'data-state="idle"' in page
    assert '<meta http-equiv="refresh" content="5">' in page
    status, headers, body = answers["/status.json"]
    assert status == 200 and headers["Content-Type"] == "application/json; charset=utf-8"
    document = json.loads(body)
    assert (document["schema"], document["verdict"]) == (1, "ok")
    assert document["targets"][0]["processes"][0]["sessions"][0]["state"] == "idle"
    assert answers["/static/status.css"][1]["Content-Type"] == "text/css; charset=utf-8"
    assert answers["/static/status.js"][1]["Content-Type"] == "text/javascript; charset=utf-8"
    assert "data-headroom" in answers["/static/status.js"][2]
    assert answers["/static/app.py"][0] == 404
    assert answers["/static/..%2fapp.py"][0] == 404


@pytest.mark.parametrize(
    ("query", "meta"),
    [
        ("", '<meta http-equiv="refresh" content="5">'),
        ("?refresh=2", '<meta http-equiv="refresh" content="2">'),
        ("?refresh=0", None),
        ("?refresh=soon", '<meta http-equiv="refresh" content="5">'),
        ("?refresh=999999", '<meta http-equiv="refresh" content="3600">'),
    ],
)
def test_refresh(query: str, meta: str | None) -> None:
    page = asyncio.run(fetch(["/" + query]))["/" + query][2]
    if meta is None:
        assert 'http-equiv="refresh"' not in page
    else:
        assert meta in page


def test_a_drop_appears_once_the_session_is_dead() -> None:
    def change(index: int, sockets: list) -> None:
        if index == 1:  # the server closed the session: the socket sits in CLOSE_WAIT
            sockets[0] = sock(5000, state=TcpState.CLOSE_WAIT, idle=700.0)

    answers = asyncio.run(fetch(["/status.json", "/status.json", "/"], change=change))
    before = json.loads(answers["/status.json"][2])
    after = json.loads(answers["/status.json#1"][2])
    assert before["targets"][0]["drops"] == []
    assert after["verdict"] == "risk"
    assert [(d["process"], d["count"], d["cause"]) for d in after["targets"][0]["drops"]] == [
        ("worker", 1, None)]
    page = answers["/"][2]
    assert 'class="drop"' in page and '<td class="cause">unknown</td>' in page


def test_same_auth_as_metrics_everywhere_but_healthz() -> None:
    hashed = bcrypt.hashpw(b"s3cret", bcrypt.gensalt(rounds=4))
    options = WebOptions(config=WebConfig(basic_auth=BasicAuth({"prometheus": hashed})))
    paths = ["/", "/status.json", "/static/status.js", "/metrics", "/healthz"]
    anonymous = asyncio.run(fetch(paths, options=options))
    assert {p: a[0] for p, a in anonymous.items()} == {
        "/": 401, "/status.json": 401, "/static/status.js": 401, "/metrics": 401,
        "/healthz": 200}
    good = {"Authorization": "Basic " + base64.b64encode(b"prometheus:s3cret").decode()}
    allowed = asyncio.run(fetch(paths, options=options, headers=good))
    assert {a[0] for a in allowed.values()} == {200}


def test_with_metrics_at_the_root_the_status_stays_at_status_json() -> None:
    answers = asyncio.run(fetch(["/", "/status.json"], options=WebOptions(telemetry_path="/")))
    assert "mysql_idle_up" in answers["/"][2]
    assert answers["/status.json"][0] == 200

"""The HTTP side over a real aiohttp server with fake sources."""

from __future__ import annotations

import asyncio
import base64
import ssl
import subprocess
import time
from pathlib import Path

import bcrypt
import pytest
from aiohttp import ClientSession, ClientTimeout

from exporter.engine import Engine
from exporter.web.app import WebOptions, build_app, scrape_timeout
from exporter.web.config import WebConfig, WebConfigError, load_web_config
from tests.support.builders import sess, sock
from tests.support.fakes import FakeSessions, fake_engine, reading
from tests.support.web import serve


def make_engine(*, hold: bool = False, targets: tuple[str, ...] = ("db:3306",),
                overrun: float = 0.0) -> Engine:
    """One target per name, each with one idle session and its socket; with ``hold`` the
    server never answers (its reads fail at their deadline, ``overrun`` seconds late)."""
    return fake_engine(
        {name: FakeSessions(reading(sess(1, 5000)), hold=hold, overrun=overrun)
         for name in targets},
        [sock(5000)],
    )


def run(coro):
    return asyncio.run(coro)


def test_metrics_probe_healthz_and_landing() -> None:
    async def scenario():
        engine = make_engine(targets=("db:3306", "other:3306"))
        runner, port = await serve(build_app(engine, WebOptions()))
        base = f"http://127.0.0.1:{port}"
        try:
            async with ClientSession() as client:
                async with client.get(base + "/metrics") as r:
                    metrics = (r.status, r.headers["Content-Type"], await r.text())
                async with client.get(
                    base + "/metrics",
                    headers={"Accept": "application/openmetrics-text; version=1.0.0"},
                ) as r:
                    openmetrics = (r.headers["Content-Type"], await r.text())
                async with client.get(base + "/probe?target=other:3306") as r:
                    probe = (r.status, await r.text())
                async with client.get(base + "/probe?target=10.1.2.3:3306") as r:
                    relay = (r.status, await r.text())
                async with client.get(base + "/probe") as r:
                    missing = r.status
                async with client.get(base + "/healthz") as r:
                    health = (r.status, await r.text())
                async with client.get(base + "/") as r:
                    landing = await r.text()
        finally:
            await runner.cleanup()
            engine.close()
        return metrics, openmetrics, probe, relay, missing, health, landing

    metrics, openmetrics, probe, relay, missing, health, landing = run(scenario())
    assert metrics[0] == 200 and metrics[1].startswith("text/plain")
    assert 'mysql_idle_up{target="db:3306"} 1.0' in metrics[2]
    assert "process_resident_memory_bytes" in metrics[2]
    assert openmetrics[0].startswith("application/openmetrics-text")
    assert openmetrics[1].rstrip().endswith("# EOF")
    assert probe[0] == 200
    assert 'target="other:3306"' in probe[1] and 'target="db:3306"' not in probe[1]
    assert relay[0] == 400 and "unknown target" in relay[1]
    assert missing == 400
    assert health == (200, "ok\n")
    assert "db:3306" in landing and "other:3306" in landing


def test_render_duration_of_the_previous_answer() -> None:
    async def scenario():
        engine = make_engine()
        runner, port = await serve(build_app(engine, WebOptions()))
        bodies = []
        try:
            async with ClientSession() as client:
                for _ in range(3):
                    async with client.get(f"http://127.0.0.1:{port}/metrics") as r:
                        bodies.append(await r.text())
        finally:
            await runner.cleanup()
            engine.close()
        return bodies

    first, second, third = run(scenario())
    # No answer has been rendered before the first: the gauge is absent, then present.
    assert "mysql_idle_render_duration_seconds" not in first
    for body in (second, third):
        (line,) = [line for line in body.splitlines()
                   if line.startswith("mysql_idle_render_duration_seconds ")]
        assert 0 < float(line.split()[1]) < 5


def test_scrape_timeout_header() -> None:
    options = WebOptions(default_timeout=10, timeout_offset=0.5)
    assert scrape_timeout(None, options) == 10
    assert scrape_timeout("4", options) == 3.5
    assert scrape_timeout("0.3", options) == 0.1
    assert scrape_timeout("garbage", options) == 10
    assert scrape_timeout("-1", options) == 10


@pytest.mark.parametrize("overrun", [0.0, 0.05], ids=["on time", "50 ms late"])
def test_a_hung_server_still_answers_before_prometheus_gives_up(overrun: float) -> None:
    # A read that times out at its deadline, or reports it a little late as a real one
    # may, still leaves its sockets time to be correlated and reported (as unmatched).
    async def scenario():
        engine = make_engine(hold=True, overrun=overrun)
        runner, port = await serve(build_app(engine, WebOptions(timeout_offset=0.3)))
        try:
            async with ClientSession() as client:
                started = time.monotonic()
                async with client.get(
                    f"http://127.0.0.1:{port}/metrics",
                    headers={"X-Prometheus-Scrape-Timeout-Seconds": "1.5"},
                ) as r:
                    body = await r.text()
                took = time.monotonic() - started
        finally:
            await runner.cleanup()
            engine.close()
        return body, took

    body, took = run(scenario())
    assert took < 1.5
    assert 'mysql_idle_up{target="db:3306"} 0.0' in body
    assert 'mysql_idle_sessions{process="worker",state="unmatched",target="db:3306"} 1.0' in body


def make_cert(tmp: Path) -> tuple[Path, Path]:
    cert, key = tmp / "cert.pem", tmp / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


def test_tls_and_basic_auth_with_a_real_tls_client(tmp_path: Path) -> None:
    cert, key = make_cert(tmp_path)
    hashed = bcrypt.hashpw(b"s3cret", bcrypt.gensalt(rounds=4)).decode()
    config_file = tmp_path / "web.yml"
    config_file.write_text(
        f"tls_server_config:\n  cert_file: {cert.name}\n  key_file: {key.name}\n"
        f"  min_version: TLS12\nbasic_auth_users:\n  prometheus: '{hashed}'\n"
        "http_server_config:\n  headers:\n    X-Frame-Options: deny\n"
    )
    config = load_web_config(config_file)

    async def scenario():
        engine = make_engine()
        runner, port = await serve(build_app(engine, WebOptions(config=config)), config.ssl_context)
        client_ssl = ssl.create_default_context(cafile=str(cert))
        base = f"https://127.0.0.1:{port}"
        good = "Basic " + base64.b64encode(b"prometheus:s3cret").decode()
        bad = "Basic " + base64.b64encode(b"prometheus:wrong").decode()
        try:
            async with ClientSession(timeout=ClientTimeout(total=10)) as client:
                results = {}
                for name, headers in (
                    ("none", {}),
                    ("bad", {"Authorization": bad}),
                    ("good", {"Authorization": good}),
                    ("again", {"Authorization": good}),
                ):
                    async with client.get(base + "/metrics", headers=headers, ssl=client_ssl) as r:
                        results[name] = (r.status, r.headers.get("X-Frame-Options"))
                async with client.get(base + "/healthz", ssl=client_ssl) as r:
                    results["healthz"] = (r.status, None)
                async with client.get(base + "/probe?target=db:3306", ssl=client_ssl) as r:
                    results["probe"] = (r.status, None)
        finally:
            await runner.cleanup()
            engine.close()
        return results

    results = run(scenario())
    assert results["none"][0] == 401
    assert results["bad"][0] == 401
    assert results["good"] == (200, "deny")
    assert results["again"][0] == 200
    assert results["healthz"][0] == 200
    assert results["probe"][0] == 401


def test_tls_min_version_is_enforced(tmp_path: Path) -> None:
    cert, key = make_cert(tmp_path)
    config_file = tmp_path / "web.yml"
    config_file.write_text(
        f"tls_server_config:\n  cert_file: {cert}\n  key_file: {key}\n  min_version: TLS13\n"
    )
    config = load_web_config(config_file)

    async def scenario():
        engine = make_engine()
        runner, port = await serve(build_app(engine, WebOptions(config=config)), config.ssl_context)
        client_ssl = ssl.create_default_context(cafile=str(cert))
        client_ssl.maximum_version = ssl.TLSVersion.TLSv1_2
        try:
            async with ClientSession() as client:
                with pytest.raises(Exception):  # noqa: B017 - aiohttp wraps the SSL error
                    async with client.get(f"https://127.0.0.1:{port}/healthz", ssl=client_ssl):
                        pass
        finally:
            await runner.cleanup()
            engine.close()

    run(scenario())


@pytest.mark.parametrize(
    "content,fragment",
    [
        ("tls_server_config: [1]\n", "must be a mapping"),
        ("nonsense: 1\n", "unknown key 'nonsense'"),
        ("basic_auth_users:\n  a: plaintext\n", "bcrypt hash"),
        ("tls_server_config:\n  cert_file: a.pem\n", "needs cert_file and key_file"),
        ("tls_server_config:\n  cert_file: /no/a.pem\n  key_file: /no/b.pem\n", "cannot load"),
        (
            "tls_server_config:\n  cert_file: a\n  key_file: b\n  min_version: SSL3\n",
            "min_version must be one of",
        ),
        ("key: [unclosed\n", "not valid YAML"),
        ("http_server_config:\n  bogus: 1\n", "unknown key 'bogus'"),
        ('basic_auth_users:\n  "\\uDCFF": $2b$04$abcdefghijklmnopqrstuu\n', "not valid UTF-8"),
    ],
)
def test_bad_web_config_files(tmp_path: Path, content: str, fragment: str) -> None:
    path = tmp_path / "web.yml"
    path.write_text(content)
    with pytest.raises(WebConfigError, match=fragment):
        load_web_config(path)


def test_missing_web_config_file(tmp_path: Path) -> None:
    with pytest.raises(WebConfigError, match="No such file"):
        load_web_config(tmp_path / "absent.yml")


def test_empty_web_config_is_plain_http() -> None:
    assert WebConfig().ssl_context is None

"""The web config can change under a running exporter, as cert-manager and secret rotation
change it: a new password or a rotated certificate and key take effect at the next request
or connection, without a restart; SIGHUP reloads and says what changed; a config that has
become invalid leaves the last good one in force, says so once in the log and in
`mysql_idle_web_config_last_reload_successful`, and is picked up once fixed."""

from __future__ import annotations

import os
import signal
import ssl
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.exporter_process import ExporterProcess, Metrics, parse
from tests.support.web import (
    LogFollower,
    basic_auth,
    bcrypt_hash,
    fingerprint,
    make_cert,
    peer_fingerprint,
    poll_until,
    web_config_text,
)

ARGS = ["--mysql.address=127.0.0.1:1", "--mysql.user=u"]
ENV = {"MYSQL_IDLE_EXPORTER_PASSWORD": "pw"}
RELOAD_OK = "mysql_idle_web_config_last_reload_successful"


def replace(path: Path, text: str) -> None:
    """Write a file the way secret mounts and careful tools do: a new file renamed over."""
    fresh = path.with_name(path.name + ".new")
    fresh.write_text(text)
    os.replace(fresh, path)


def lines_with(output: str, *fragments: str) -> list[str]:
    return [line for line in output.splitlines() if all(f in line for f in fragments)]


class Https:
    """GETs to an HTTPS exporter, trusting exactly one certificate file."""

    def __init__(self, exporter: ExporterProcess, cafile: Path) -> None:
        self.base = f"https://127.0.0.1:{exporter.port}"
        self.cafile = cafile

    def get(self, path: str, headers: dict[str, str] | None = None) -> tuple[int, str]:
        context = ssl.create_default_context(cafile=str(self.cafile))
        request = urllib.request.Request(self.base + path, headers=headers or {})
        try:
            with urllib.request.urlopen(request, timeout=15, context=context) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode()


@pytest.fixture
def plain(tmp_path: Path) -> Iterator[tuple[ExporterProcess, Path]]:
    config = tmp_path / "web.yml"
    config.write_text(web_config_text(users={"prometheus": bcrypt_hash("old")}))
    exporter = ExporterProcess([*ARGS, f"--web.config.file={config}"], env=ENV)
    exporter.start()
    try:
        yield exporter, config
    finally:
        exporter.stop()


def scrape_as(exporter: ExporterProcess, password: str) -> Metrics:
    return exporter.scrape(headers=basic_auth("prometheus", password))


def test_a_new_password_takes_effect_at_the_next_request(
    plain: tuple[ExporterProcess, Path],
) -> None:
    exporter, config = plain
    first = scrape_as(exporter, "old")
    assert first.get(RELOAD_OK) == 1
    replace(config, web_config_text(users={"prometheus": bcrypt_hash("new")}))
    assert exporter.get("/metrics", headers=basic_auth("prometheus", "old"))[0] == 401
    assert scrape_as(exporter, "new").get(RELOAD_OK) == 1
    output = exporter.stop()
    changed = lines_with(output, "web config reloaded")
    assert len(changed) == 1 and "password changed: prometheus" in changed[0], output
    assert "$2b$" not in output  # no hash in the log


def test_an_invalid_config_keeps_the_last_good_one_until_fixed(
    plain: tuple[ExporterProcess, Path],
) -> None:
    exporter, config = plain
    replace(config, "basic_auth_users: [unclosed\n")
    for _ in range(3):  # several requests, one log line
        metrics = scrape_as(exporter, "old")
        assert metrics.get(RELOAD_OK) == 0
    failed_at = metrics.get("mysql_idle_web_config_last_reload_success_timestamp_seconds")
    replace(config, web_config_text(users={"prometheus": bcrypt_hash("fixed")}))
    metrics = scrape_as(exporter, "fixed")
    assert metrics.get(RELOAD_OK) == 1
    assert metrics.get("mysql_idle_web_config_last_reload_success_timestamp_seconds") > (
        failed_at or 0)
    output = exporter.stop()
    kept = lines_with(output, "keeping the last good one")
    assert len(kept) == 1 and "not valid YAML" in kept[0], output
    assert "level=error" in kept[0]


def test_sighup_reloads_says_what_changed_and_does_not_stop_the_exporter(
    plain: tuple[ExporterProcess, Path],
) -> None:
    exporter, config = plain
    log = LogFollower(exporter)
    os.kill(exporter.pid, signal.SIGHUP)
    log.wait_for("SIGHUP")
    # Written in place, and no request until SIGHUP was handled: the reload is SIGHUP's.
    config.write_text(web_config_text(users={"prometheus": bcrypt_hash("old"),
                                             "grafana": bcrypt_hash("g")}))
    os.kill(exporter.pid, signal.SIGHUP)
    log.wait_for("SIGHUP", count=2)
    assert exporter.get("/metrics", headers=basic_auth("grafana", "g"))[0] == 200
    assert scrape_as(exporter, "old").get(RELOAD_OK) == 1
    assert exporter.process is not None and exporter.process.poll() is None
    output = log.stop()
    hups = lines_with(output, "SIGHUP")
    assert len(hups) == 2, output
    assert "unchanged" in hups[0]
    assert "users added: grafana" in hups[1]


def test_a_rotated_certificate_serves_new_connections_without_a_restart(
    tmp_path: Path,
) -> None:
    cert, key = make_cert(tmp_path, "first")
    second_cert, second_key = make_cert(tmp_path, "second")
    live_cert, live_key = tmp_path / "tls.crt", tmp_path / "tls.key"
    replace(live_cert, cert.read_text())
    replace(live_key, key.read_text())
    config = tmp_path / "web.yml"
    config.write_text(web_config_text(users={"prometheus": bcrypt_hash("pw")},
                                      cert=live_cert, key=live_key))
    exporter = ExporterProcess([*ARGS, f"--web.config.file={config}"], env=ENV)
    exporter.base = exporter.base.replace("http:", "https:")
    exporter.process = None
    # ExporterProcess polls /healthz over plain HTTP; start it and wait over TLS instead.
    try:
        _start_https(exporter, cert)
        assert peer_fingerprint(exporter.port) == fingerprint(cert)
        # cert-manager writes the new pair (web.yml itself is untouched).
        replace(live_cert, second_cert.read_text())
        replace(live_key, second_key.read_text())
        assert peer_fingerprint(exporter.port) == fingerprint(second_cert)
        client = Https(exporter, second_cert)
        status, body = client.get("/metrics", basic_auth("prometheus", "pw"))
        assert status == 200
        assert parse(body).get(RELOAD_OK) == 1
    finally:
        output = exporter.stop()
    changed = lines_with(output, "web config reloaded")
    assert len(changed) == 1 and "certificate changed" in changed[0], output


def _start_https(exporter: ExporterProcess, cafile: Path) -> None:
    import subprocess

    exporter.process = subprocess.Popen(exporter.args, env=exporter.env,
                                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                        text=True)
    client = Https(exporter, cafile)

    def healthy() -> bool | None:
        assert exporter.process is not None and exporter.process.poll() is None
        try:
            return True if client.get("/healthz")[0] == 200 else None
        except (urllib.error.URLError, ConnectionError):
            return None

    poll_until(healthy, "the exporter answers over TLS", timeout=15)


def test_turning_tls_on_needs_a_restart_and_is_refused(
    plain: tuple[ExporterProcess, Path], tmp_path: Path,
) -> None:
    exporter, config = plain
    cert, key = make_cert(tmp_path)
    replace(config, web_config_text(users={"prometheus": bcrypt_hash("new")}, cert=cert, key=key))
    metrics = scrape_as(exporter, "old")  # still plain HTTP, still the old password
    assert metrics.get(RELOAD_OK) == 0
    output = exporter.stop()
    assert len(lines_with(output, "keeping the last good one", "restart")) == 1, output


def test_fleet_serving_keeps_its_authentication(tmp_path: Path) -> None:
    config = tmp_path / "web.yml"
    config.write_text(web_config_text(users={"sidecar": bcrypt_hash("s")}))
    exporter = ExporterProcess([*ARGS, "--fleet.serve", f"--web.config.file={config}"], env=ENV)
    with exporter:
        replace(config, "")  # no users: /fleet/sessions would be open to anyone
        path = "/fleet/sessions?target=127.0.0.1:1&client_ip=10.0.0.1"
        assert exporter.get(path)[0] == 401
        metrics = exporter.scrape(headers=basic_auth("sidecar", "s"))
        assert metrics.get(RELOAD_OK) == 0


def test_sighup_without_a_web_config_logs_one_line_and_keeps_serving() -> None:
    exporter = ExporterProcess(ARGS, env=ENV)
    exporter.start()
    log = LogFollower(exporter)
    try:
        for count in (1, 2):
            os.kill(exporter.pid, signal.SIGHUP)
            log.wait_for("SIGHUP", "nothing to reload", count=count)
        assert exporter.get("/healthz")[0] == 200
        assert exporter.process is not None and exporter.process.poll() is None
    finally:
        output = log.stop()
    assert len(lines_with(output, "SIGHUP")) == 2, output

"""/fleet/sessions hands out every session on the server (ids, client addresses, users,
databases). Serving it without authentication must be an explicit choice: `--fleet.serve`
without basic auth or verified client certificates refuses to start (exit 2, one line)
unless `--fleet.allow-unauthenticated` is given, and then the exporter listens exactly
where the operator said."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from exporter.throwaway import free_port
from tests.support.exporter_process import ExporterProcess
from tests.support.web import basic_auth, bcrypt_hash, make_cert, web_config_text

ENV = {"MYSQL_IDLE_EXPORTER_PASSWORD": "pw"}
# Port 1 on loopback refuses at once: a target that is down is all these need.
TARGET = "--mysql.address=127.0.0.1:1"


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "exporter", TARGET, "--mysql.user=u",
         f"--web.listen-address=127.0.0.1:{free_port()}", *args],
        capture_output=True, text=True, timeout=30, env=ENV,
    )


def assert_refused(result: subprocess.CompletedProcess[str]) -> None:
    assert result.returncode == 2, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "--fleet.allow-unauthenticated" in lines[0], lines[0]


def test_fleet_serving_without_any_web_config_is_refused() -> None:
    assert_refused(run("--fleet.serve"))


def test_fleet_serving_with_tls_but_no_authentication_is_refused(tmp_path: Path) -> None:
    cert, key = make_cert(tmp_path)
    config = tmp_path / "web.yml"
    config.write_text(web_config_text(cert=cert, key=key))
    assert_refused(run("--fleet.serve", f"--web.config.file={config}"))


def listening(port: int) -> list[str]:
    result = subprocess.run(["ss", "-ltnH", f"( sport = :{port} )"], capture_output=True,
                            text=True, timeout=10, check=True)
    return sorted(line.split()[3] for line in result.stdout.splitlines())


def test_an_explicit_flag_serves_it_where_the_operator_said() -> None:
    exporter = ExporterProcess([TARGET, "--mysql.user=u", "--fleet.serve",
                                "--fleet.allow-unauthenticated"], env=ENV)
    exporter.start()
    try:
        status, _ = exporter.get("/fleet/sessions?target=127.0.0.1:1&client_ip=10.0.0.1")
        assert status != 401
        assert listening(exporter.port) == [f"127.0.0.1:{exporter.port}"]
    finally:
        output = exporter.stop()
    warnings = [line for line in output.splitlines() if "without authentication" in line]
    assert len(warnings) == 1 and "level=warning" in warnings[0], output


def test_with_basic_auth_it_starts_and_asks_for_credentials(tmp_path: Path) -> None:
    config = tmp_path / "web.yml"
    config.write_text(web_config_text(users={"sidecar": bcrypt_hash("s3cret")}))
    exporter = ExporterProcess([TARGET, "--mysql.user=u", "--fleet.serve",
                                f"--web.config.file={config}"], env=ENV)
    path = "/fleet/sessions?target=127.0.0.1:1&client_ip=10.0.0.1"
    with exporter:
        assert exporter.get(path)[0] == 401
        assert exporter.get(path, headers=basic_auth("sidecar", "s3cret"))[0] != 401


@pytest.mark.parametrize("flag", ["--fleet.allow-unauthenticated"])
def test_the_flag_without_fleet_serving_is_harmless(flag: str) -> None:
    exporter = ExporterProcess([TARGET, "--mysql.user=u", flag], env=ENV)
    with exporter:
        assert exporter.get("/healthz")[0] == 200

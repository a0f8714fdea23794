"""The exporter logs in to a fresh MySQL 9.7 with default flags, and again after the server
forgot every cached login (a restart, FLUSH PRIVILEGES).

MySQL's default authentication, caching_sha2_password, makes a full login the first time
after each server start or FLUSH PRIVILEGES; later logins use the server's cache. Without
TLS a full login needs the RSA key exchange, which PyMySQL does only with the `cryptography`
package (the [rsa] extra). The exporter's default is TLS PREFERRED, as the MySQL client's:
MySQL offers TLS out of the box, so a full login works without the extra. These tests run
the real command with `cryptography` hidden from it, as a plain `pip install` has it, and
ask the server which sessions were encrypted. (MariaDB 10.11 logs in with
mysql_native_password, which needs neither; its logins are tested everywhere else.)
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from exporter.sessions.connection import NEEDS_TLS_OR_RSA
from tests.support.canary import write_my_cnf
from tests.support.exporter_process import ExporterProcess, Metrics
from tests.support.mysql import ThrowawayMySQL
from tests.support.scrapes import PASSWORD_ENV, kill_sessions, session_ids, wait_for
from tests.support.servers import start_server

pytestmark = pytest.mark.mysql

USER = "exporter"
PASSWORD = "Fresh-Login-Pw-1"


@pytest.fixture
def without_rsa(tmp_path: Path) -> dict[str, str]:
    """Environment for a subprocess in which `import cryptography` fails, as it does where
    the [rsa] extra is not installed (the test environment has it, for the RSA tests)."""
    stub = tmp_path / "no-rsa" / "cryptography"
    stub.mkdir(parents=True)
    (stub / "__init__.py").write_text(
        'raise ImportError("hidden by the test: installed without the [rsa] extra")\n')
    path = os.pathsep.join(p for p in (str(stub.parent), os.environ.get("PYTHONPATH")) if p)
    env = {"PYTHONPATH": path}
    check = subprocess.run(
        [sys.executable, "-c", "import pymysql._auth as a; print(a._have_cryptography)"],
        env={**os.environ, **env}, capture_output=True, text=True, timeout=30, check=False)
    assert check.stdout.strip() == "False", check
    return env


def fresh_server(*args: str) -> ThrowawayMySQL:
    server = start_server("mysql", args)
    server.execute(f"CREATE USER '{USER}'@'%' IDENTIFIED BY '{PASSWORD}'",
                   f"GRANT PROCESS ON *.* TO '{USER}'@'%'")
    plugin = server.execute("SELECT plugin FROM mysql.user WHERE user = %s", args=(USER,))
    assert plugin == [("caching_sha2_password",)]
    assert isinstance(server, ThrowawayMySQL)
    return server


@pytest.fixture
def cleanups() -> Iterator[list[ThrowawayMySQL | ExporterProcess]]:
    started: list[ThrowawayMySQL | ExporterProcess] = []
    yield started
    for thing in reversed(started):
        if isinstance(thing, ExporterProcess):
            thing.stop()
        else:
            thing.cleanup()


def exporter(server: ThrowawayMySQL, env: dict[str, str], *args: str) -> ExporterProcess:
    return ExporterProcess(
        [f"--mysql.address=127.0.0.1:{server.port}", "--server.interval=0", *args],
        env={PASSWORD_ENV: PASSWORD, **env}).start()


def up_is(server: ThrowawayMySQL, value: int) -> Callable[[Metrics], bool]:
    target = f"127.0.0.1:{server.port}"
    return lambda m: m.get("mysql_idle_up", target=target) == value


def logged_in_over_tls(server: ThrowawayMySQL) -> list[str]:
    versions = server.tls_versions_of(USER)
    assert len(versions) == 1, versions  # the exporter's one connection
    assert versions[0].startswith("TLSv1."), versions
    return versions


def test_default_flags_log_in_to_a_fresh_mysql_after_restart_and_flush_privileges(
    without_rsa: dict[str, str], cleanups: list[ThrowawayMySQL | ExporterProcess],
) -> None:
    server = fresh_server()
    cleanups.append(server)
    watcher = exporter(server, without_rsa, f"--mysql.user={USER}")
    cleanups.append(watcher)

    # The first login since the user exists: a full one, inside TLS.
    wait_for(watcher, up_is(server, 1), "up 1 on a fresh MySQL")
    logged_in_over_tls(server)
    first = session_ids(server, USER)

    # A restart empties the server's login cache: the reconnect is a full login again.
    server.restart()
    wait_for(watcher, up_is(server, 1), "up 1 after the restart")
    logged_in_over_tls(server)

    # FLUSH PRIVILEGES empties it too; the exporter's session is killed so that it must log
    # in again.
    after_restart = session_ids(server, USER)
    server.execute("FLUSH PRIVILEGES")
    assert kill_sessions(server, USER) == 1
    up = up_is(server, 1)
    wait_for(watcher, lambda m: up(m) and session_ids(server, USER) not in ([], after_restart),
             "up 1 on a new session after FLUSH PRIVILEGES")
    logged_in_over_tls(server)
    assert session_ids(server, USER) != first

    log = watcher.stop()
    assert "cryptography" not in log and "Traceback" not in log, log
    assert log.count(" up: ") >= 1 and " down: " not in log.split(" up: ", 1)[0], log


def test_without_tls_a_full_login_needs_the_rsa_extra_and_says_so(
    without_rsa: dict[str, str], cleanups: list[ThrowawayMySQL | ExporterProcess],
    tmp_path: Path,
) -> None:
    # A server without TLS, and a client that turns it off itself (ssl-mode=DISABLED).
    no_tls = fresh_server(*ThrowawayMySQL.no_tls_args)
    cleanups.append(no_tls)
    with_tls = fresh_server()
    cleanups.append(with_tls)
    disabled = write_my_cnf(tmp_path / "disabled.cnf", user=USER, ssl_mode="DISABLED")
    refused = [
        exporter(no_tls, without_rsa, f"--mysql.user={USER}"),
        exporter(with_tls, without_rsa, f"--config.my-cnf={disabled}"),
    ]
    cleanups.extend(refused)
    for server, watcher in zip((no_tls, with_tls), refused, strict=True):
        wait_for(watcher, up_is(server, 0), "up 0")
        for _ in range(2):
            assert watcher.scrape().get("mysql_idle_up",
                                        target=f"127.0.0.1:{server.port}") == 0
        log = watcher.stop()
        assert f"down: cannot connect: {NEEDS_TLS_OR_RSA}" in log, log
        assert "Traceback" not in log, log

    # With the [rsa] extra (the test environment has `cryptography`), the same server
    # without TLS lets it in: the server's public key encrypts the password. Again after a
    # restart, which makes the next login a full one.
    rsa = exporter(no_tls, {}, f"--mysql.user={USER}")
    cleanups.append(rsa)
    wait_for(rsa, up_is(no_tls, 1), "up 1 with the [rsa] extra")
    assert no_tls.tls_versions_of(USER) == [""]
    no_tls.restart()
    wait_for(rsa, up_is(no_tls, 1), "up 1 with the [rsa] extra after a restart")
    assert "Traceback" not in rsa.stop()

"""TLS between the exporter and the database, configured the way mysqld_exporter users
know: a my.cnf `[client]` section with ssl-ca, ssl-cert, ssl-key, and ssl-mode or
ssl-verify-server-cert.

The server (MariaDB 10.11 and MySQL 9.7) runs with its own CA, a server certificate for IP
127.0.0.1 and a user that REQUIRES X509, so a login without TLS and a client certificate is
impossible; the server's performance_schema also shows, per session, the TLS version it
negotiated."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.canary import alive, exporter_for, write_my_cnf
from tests.support.exporter_process import ExporterProcess
from tests.support.scrapes import PASSWORD_ENV, wait_for
from tests.support.servers import ServerFactory, TestServer, server_class

USER = "tls_exporter"
PASSWORD = "Tls-Exporter-Pw-1"


def openssl(*args: str, cwd: Path) -> None:
    result = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True,
                            timeout=60, check=False)
    assert result.returncode == 0, f"openssl {' '.join(args)}:\n{result.stderr}"


def make_ca(directory: Path, name: str) -> None:
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            "-keyout", f"{name}.key", "-out", f"{name}.pem", "-subj", f"/CN={name}",
            cwd=directory)


def make_cert(directory: Path, name: str, ca: str, san: str | None) -> None:
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key",
            "-out", f"{name}.csr", "-subj", f"/CN={name}", cwd=directory)
    extensions = directory / f"{name}.ext"
    extensions.write_text(f"subjectAltName={san}\n" if san else "basicConstraints=CA:FALSE\n")
    openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key",
            "-CAcreateserial", "-days", "2", "-out", f"{name}.pem",
            "-extfile", extensions.name, cwd=directory)


@dataclass(frozen=True)
class Pki:
    directory: Path

    def __getitem__(self, name: str) -> str:
        path = self.directory / name
        assert path.exists(), path
        return str(path)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    directory = tmp_path_factory.mktemp("pki")
    make_ca(directory, "ca")
    make_ca(directory, "other-ca")  # a CA that signed nothing the server uses
    make_cert(directory, "server", "ca", "IP:127.0.0.1")
    make_cert(directory, "wrong-name", "ca", "DNS:db.invalid,IP:127.0.0.2")
    make_cert(directory, "client", "ca", None)
    return Pki(directory)


def tls_server(factory: ServerFactory, pki: Pki, cert: str) -> TestServer:
    server = factory(f"--ssl-ca={pki['ca.pem']}", f"--ssl-cert={pki[cert + '.pem']}",
                     f"--ssl-key={pki[cert + '.key']}", "--performance-schema=ON",
                     monitor_user=False)
    assert server.offers_tls(), server.log_tail()
    server.execute("CREATE USER %s@'%%' IDENTIFIED BY %s REQUIRE X509", args=(USER, PASSWORD))
    server.execute("GRANT PROCESS ON *.* TO %s@'%%'", args=(USER,))
    return server


@dataclass
class Case:
    name: str
    options: dict[str, str | None]
    up: int
    log_mentions: tuple[str, ...] = ()


def start_cases(server: TestServer, tmp_path: Path, cases: list[Case]
                ) -> dict[str, ExporterProcess]:
    target = f"127.0.0.1:{server.port}"
    exporters: dict[str, ExporterProcess] = {}
    for index, case in enumerate(cases):
        my_cnf = write_my_cnf(tmp_path / f"case{index}-{server.port}.cnf", user=USER,
                              password=PASSWORD, **case.options)
        exporters[case.name] = exporter_for(
            target, f"--config.my-cnf={my_cnf}", "--server.interval=0",
            env={PASSWORD_ENV: ""},
        ).start()
    return exporters


def check_cases(server: TestServer, cases: list[Case],
                exporters: dict[str, ExporterProcess]) -> None:
    target = f"127.0.0.1:{server.port}"
    for case in cases:
        exporter = exporters[case.name]
        wait_for(exporter, lambda m, case=case: m.get("mysql_idle_up", target=target) == case.up,
                 f"{case.name}: mysql_idle_up {case.up}")
        for _ in range(2):  # it stays so
            assert exporter.scrape().get("mysql_idle_up", target=target) == case.up, case.name
        assert alive(exporter), case.name


def check_logs(cases: list[Case], exporters: dict[str, ExporterProcess]) -> None:
    for case in cases:
        log = exporters[case.name].stop()
        for words in case.log_mentions:
            assert words.lower() in log.lower(), f"{case.name}: log lacks {words!r}:\n{log}"
        assert "Traceback" not in log, f"{case.name}:\n{log}"


@pytest.fixture
def stop_all() -> Iterator[list[ExporterProcess]]:
    started: list[ExporterProcess] = []
    yield started
    for exporter in started:
        exporter.stop()


def test_tls_with_client_certificates(
    db_server_factory: ServerFactory, pki: Pki, tmp_path: Path,
    stop_all: list[ExporterProcess],
) -> None:
    server = tls_server(db_server_factory, pki, "server")
    client = {"ssl_ca": pki["ca.pem"], "ssl_cert": pki["client.pem"],
              "ssl_key": pki["client.key"]}
    cases = [
        # ssl-ca alone means VERIFY_CA: verification is on without asking for it.
        Case("ssl-ca, ssl-cert, ssl-key", client, up=1),
        Case("ssl-verify-server-cert", {**client, "ssl_verify_server_cert": None}, up=1),
        Case("ssl-mode=VERIFY_IDENTITY", {**client, "ssl_mode": "VERIFY_IDENTITY"}, up=1),
        Case("ssl-mode=VERIFY_CA", {**client, "ssl_mode": "VERIFY_CA"}, up=1),
        # Encrypted without verification (the MySQL client's meaning of REQUIRED).
        Case("ssl-mode=REQUIRED, no CA", {"ssl_mode": "REQUIRED",
                                          "ssl_cert": pki["client.pem"],
                                          "ssl_key": pki["client.key"]}, up=1),
        # The user REQUIRES X509: without TLS, or without a client certificate, no login.
        Case("no ssl options", {}, up=0, log_mentions=("access denied",)),
        Case("ssl-ca only, no client certificate", {"ssl_ca": pki["ca.pem"]}, up=0,
             log_mentions=("access denied",)),
        # The server's certificate is not signed by the CA the exporter trusts.
        Case("another CA", {**client, "ssl_ca": pki["other-ca.pem"]}, up=0,
             log_mentions=("certificate verify failed",)),
        Case("another CA, VERIFY_IDENTITY",
             {**client, "ssl_ca": pki["other-ca.pem"], "ssl_mode": "VERIFY_IDENTITY"}, up=0,
             log_mentions=("certificate verify failed",)),
    ]
    exporters = start_cases(server, tmp_path, cases)
    stop_all.extend(exporters.values())
    check_cases(server, cases, exporters)

    # Every session the exporters hold is encrypted, as the server itself reports.
    connected = sum(1 for case in cases if case.up == 1)
    versions = server.tls_versions_of(USER)
    assert len(versions) == connected, versions
    assert all(version.startswith("TLSv1.") for version in versions), versions
    check_logs(cases, exporters)


def test_a_server_certificate_for_another_name_fails_verify_identity(
    db_server_factory: ServerFactory, pki: Pki, tmp_path: Path,
    stop_all: list[ExporterProcess],
) -> None:
    server = tls_server(db_server_factory, pki, "wrong-name")
    client = {"ssl_ca": pki["ca.pem"], "ssl_cert": pki["client.pem"],
              "ssl_key": pki["client.key"]}
    cases = [
        # The chain is right, so VERIFY_CA (the default with ssl-ca) accepts it...
        Case("VERIFY_CA accepts the chain", client, up=1),
        # ...while both spellings of identity verification refuse the name.
        Case("ssl-mode=VERIFY_IDENTITY", {**client, "ssl_mode": "VERIFY_IDENTITY"}, up=0,
             log_mentions=("certificate verify failed", "mismatch")),
        Case("ssl-verify-server-cert", {**client, "ssl_verify_server_cert": None}, up=0,
             log_mentions=("certificate verify failed", "mismatch")),
    ]
    exporters = start_cases(server, tmp_path, cases)
    stop_all.extend(exporters.values())
    check_cases(server, cases, exporters)
    assert server.tls_versions_of(USER)[0].startswith("TLSv1.")
    check_logs(cases, exporters)


def test_tls_required_but_not_offered_fails_instead_of_falling_back(
    db_server_factory: ServerFactory, db_flavor: str, tmp_path: Path,
    stop_all: list[ExporterProcess],
) -> None:
    """A server (or a man in the middle) that does not offer TLS gets no plaintext login
    when my.cnf asks for TLS: the exporter reports the target down."""
    server = db_server_factory(*server_class(db_flavor).no_tls_args)
    assert not server.offers_tls()
    target = f"127.0.0.1:{server.port}"
    my_cnf = write_my_cnf(tmp_path / "required.cnf", user=server.exporter_user,
                          password=server.exporter_password, ssl_mode="REQUIRED")
    exporter = exporter_for(target, f"--config.my-cnf={my_cnf}", env={PASSWORD_ENV: ""})
    stop_all.append(exporter.start())
    wait_for(exporter, lambda m: m.get("mysql_idle_up", target=target) == 0, "up 0")
    log = exporter.stop()
    assert "ssl is required" in log.lower(), log

"""The database password never leaves the exporter: not in its logs (logfmt or JSON, at
debug level), not in /metrics (text or OpenMetrics), `/`, `/probe`, `/healthz`, not in its
command line; not in the repr of its credentials, nor in any error a failed connection
raises or a failed read reports. A distinctive canary password is searched for plain,
escaped, URL-, base64- and hex-encoded, in every situation a password matters: right,
wrong, server down, server killed mid-run."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import struct
import threading
import time
import traceback
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from exporter.sessions.connection import ServerConnection, ServerError
from exporter.sessions.credentials import (
    Credentials,
    SslMode,
    SslOptions,
    load_credentials,
)
from exporter.sessions.reader import SessionReader
from exporter.throwaway import free_port
from tests.support.builders import soon
from tests.support.canary import (
    CANARY,
    OPENMETRICS,
    alive,
    exporter_for,
    find_leaks,
    my_cnf_quote,
    secret_forms,
    write_my_cnf,
)
from tests.support.exporter_process import ExporterProcess, Metrics, Worker
from tests.support.scrapes import PASSWORD_ENV, wait_for
from tests.support.servers import ServerFactory, TestServer, server_class

USER = "canary_user"
FLEET_PASSWORD_ENV = "MYSQL_IDLE_EXPORTER_FLEET_PASSWORD"
# The password as my.cnf spells it, and the whole line: neither may be echoed.
PASSWORD_LINE = f"password={my_cnf_quote(CANARY)}"
FORMS = secret_forms(CANARY, my_cnf_quote(CANARY), PASSWORD_LINE)


def assert_no_leak(where: str, text: str) -> None:
    found = find_leaks(text, FORMS)
    assert not found, f"the password leaks into {where} as {found}:\n{text[:3000]}"


def surfaces(exporter: ExporterProcess, target: str) -> dict[str, str]:
    """Everything a scraper or a local user can read from a running exporter."""
    probe = f"/probe?target={urllib.parse.quote(target)}"
    seen: dict[str, str] = {}
    for name, path, headers in (
        ("/metrics (text)", "/metrics", {}),
        ("/metrics (OpenMetrics)", "/metrics", {"Accept": OPENMETRICS}),
        ("/", "/", {}),
        ("/probe (text)", probe, {}),
        ("/probe (OpenMetrics)", probe, {"Accept": OPENMETRICS}),
        ("/healthz", "/healthz", {}),
    ):
        status, body = exporter.get(path, headers)
        assert status == 200, f"{path} answered {status}: {body[:500]}"
        seen[name] = body
    cmdline = Path(f"/proc/{exporter.pid}/cmdline").read_bytes()
    seen["/proc/PID/cmdline"] = cmdline.decode("utf-8", "replace").replace("\0", " ")
    return seen


def up_is(target: str, value: int) -> Callable[[Metrics], bool]:
    return lambda m: m.get("mysql_idle_up", target=target) == value


SITUATIONS = ("env-correct", "my.cnf-correct", "wrong-password", "server-down",
              "server-killed")


@pytest.mark.parametrize("situation", SITUATIONS)
def test_the_password_never_leaks_from_the_running_exporter(
    situation: str, db_server_factory: ServerFactory, tmp_path: Path
) -> None:
    db: TestServer | None = None
    worker: Worker | None = None
    if situation == "server-down":
        port = free_port()
    else:
        db = db_server_factory(monitor_user=False)
        port = db.port
        # The server knows the canary, except when the exporter's password must be wrong.
        db.create_user(USER, grants=("PROCESS",),
                       password="Not-The-Canary-1" if situation == "wrong-password" else CANARY)
        app = db.create_user("leak_app", grants=())
        worker = Worker("leak-app", "127.0.0.1", port, app.user, app.password, connections=2)
    target = f"127.0.0.1:{port}"

    # Half the situations take the password from the environment, half from my.cnf.
    via_my_cnf = situation in ("my.cnf-correct", "wrong-password", "server-killed")
    if via_my_cnf:
        my_cnf = write_my_cnf(tmp_path / "exporter.cnf", user=USER,
                              password=my_cnf_quote(CANARY))
        assert load_credentials(my_cnf=my_cnf, environ={}).password == CANARY
        args = [f"--config.my-cnf={my_cnf}"]
        env = {PASSWORD_ENV: ""}  # nothing inherited may override the file
    else:
        args = [f"--mysql.user={USER}"]
        env = {PASSWORD_ENV: CANARY}
    exporters = {
        fmt: exporter_for(target, *args, "--log.level=debug", f"--log.format={fmt}",
                          "--server.interval=0", env=env)
        for fmt in ("logfmt", "json")
    }
    seen: dict[str, str] = {}
    logs: dict[str, str] = {}
    try:
        for exporter in exporters.values():
            exporter.start()
        expect_up = 1 if situation in ("env-correct", "my.cnf-correct", "server-killed") else 0
        for fmt, exporter in exporters.items():
            wait_for(exporter, up_is(target, expect_up), f"{fmt}: up {expect_up}")
            for name, text in surfaces(exporter, target).items():
                seen[f"{fmt} {name}"] = text
        if situation == "server-killed":
            assert db is not None and db.pid is not None
            os.kill(db.pid, signal.SIGKILL)
            for fmt, exporter in exporters.items():
                wait_for(exporter, up_is(target, 0), f"{fmt}: up 0 after the kill")
                for _ in range(3):  # reconnect attempts, each a chance to log something
                    exporter.scrape()
                for name, text in surfaces(exporter, target).items():
                    seen[f"{fmt} {name} after the kill"] = text
        for fmt, exporter in exporters.items():
            assert alive(exporter), f"{fmt} exporter died"
    finally:
        for fmt, exporter in exporters.items():
            logs[fmt] = exporter.stop()
        if worker is not None:
            worker.close()

    expected_in_log = {
        "env-correct": "up:",
        "my.cnf-correct": "up:",
        "wrong-password": "access denied",
        "server-down": "cannot connect",
        "server-killed": "down:",
    }[situation]
    for fmt, log in logs.items():
        assert expected_in_log in log.lower(), f"{fmt} log lacks {expected_in_log!r}:\n{log}"
        if fmt == "json":
            assert log.lstrip().startswith("{"), log[:300]
        assert_no_leak(f"the {fmt} log", log)
    for where, text in seen.items():
        assert_no_leak(where, text)


def test_the_fleet_password_never_leaks(tmp_path: Path) -> None:
    """The sidecar's basic-auth password for --fleet.url follows the same rule."""
    target = f"127.0.0.1:{free_port()}"
    fleet = f"http://127.0.0.1:{free_port()}"  # nobody listens: every read fails
    exporter = exporter_for(target, f"--fleet.url={fleet}", "--fleet.user=sidecar",
                            "--log.level=debug", "--log.format=json",
                            env={FLEET_PASSWORD_ENV: CANARY})
    try:
        exporter.start()
        wait_for(exporter, up_is(target, 0), "up 0 with the fleet exporter away")
        seen = surfaces(exporter, target)
    finally:
        log = exporter.stop()
    assert "fleet" in log, log
    assert_no_leak("the log", log)
    for where, text in seen.items():
        assert_no_leak(where, text)


# --- in process -------------------------------------------------------------------------


def exception_texts(exc: BaseException) -> list[str]:
    """Every way an exception can be shown, its whole chain included (also the context
    that `raise ... from None` hides but a debugger or a careless handler would show)."""
    texts = ["".join(traceback.format_exception(exc))]
    seen: BaseException | None = exc
    while seen is not None:
        texts += [str(seen), repr(seen), repr(seen.args)]
        seen = seen.__cause__ or seen.__context__
    return texts


def credentials_with_everything(tmp_path: Path) -> list[Credentials]:
    pem = tmp_path / "ca.pem"
    pem.write_text("not a certificate\n")
    my_cnf = write_my_cnf(tmp_path / "creds.cnf", user=USER, password=my_cnf_quote(CANARY),
                          ssl_ca=str(pem), ssl_mode="VERIFY_IDENTITY", port="3307")
    from_file = load_credentials(my_cnf=my_cnf, environ={})
    from_env = load_credentials(user=USER, environ={PASSWORD_ENV: CANARY})
    direct = Credentials(USER, CANARY, SslOptions(SslMode.VERIFY_CA, ca=str(pem)))
    for creds in (from_file, from_env, direct):
        assert creds.password == CANARY
    return [from_file, from_env, direct]


def test_credentials_never_show_the_password(tmp_path: Path) -> None:
    for creds in credentials_with_everything(tmp_path):
        shown = [repr(creds), str(creds), f"{creds}", f"{creds!r}", "%s" % creds,  # noqa: UP031
                 repr([creds]), repr({"c": creds})]
        for text in shown:
            assert_no_leak("a Credentials representation", text)
        connection = ServerConnection("127.0.0.1", 1, creds)
        reader = SessionReader("t", "127.0.0.1", 1, creds)
        for text in (repr(connection), str(connection), repr(reader), str(reader)):
            assert_no_leak("a connection/reader representation", text)
        reader.close()


@pytest.fixture
def debug_log(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    caplog.set_level(logging.DEBUG)
    yield caplog


def log_text(caplog: pytest.LogCaptureFixture) -> str:
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
    return "\n".join(handler.format(record) for record in caplog.records)


def connect_error(creds: Credentials, port: int, timeout: float = 3.0) -> ServerError:
    connection = ServerConnection("127.0.0.1", port, creds)
    try:
        with pytest.raises(ServerError) as caught:
            connection.connect(soon(timeout))
    finally:
        connection.close()
    return caught.value


def test_connection_errors_and_read_errors_never_show_the_password(
    db_server_factory: ServerFactory, db_flavor: str, debug_log: pytest.LogCaptureFixture,
    tmp_path: Path,
) -> None:
    # Without TLS, so that asking for it fails (MySQL offers it out of the box).
    db = db_server_factory(*server_class(db_flavor).no_tls_args, monitor_user=False)
    db.create_user(USER, grants=("PROCESS",), password="Not-The-Canary-2")
    creds = Credentials(USER, CANARY)
    errors: dict[str, ServerError] = {}
    views: dict[str, str | None] = {}

    errors["wrong password"] = connect_error(creds, db.port)
    assert errors["wrong password"].code == 1045, errors["wrong password"]
    down = free_port()
    errors["server down"] = connect_error(creds, down)
    for name, port in (("server down", down), ("wrong password", db.port)):
        failing = SessionReader("t", "127.0.0.1", port, creds)
        views[name] = failing.read(None, soon(2.0)).error
        failing.close()

    # TLS asked for, the server has none: PyMySQL refuses before sending anything.
    tls = Credentials(USER, CANARY, SslOptions(SslMode.REQUIRED))
    errors["TLS required, none offered"] = connect_error(tls, db.port)

    # A server that accepts the TCP connection and then says nothing.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        errors["silent server"] = connect_error(creds, silent.getsockname()[1], timeout=0.5)

    # Killed mid-run: a working reader, then the server is gone.
    right = db_server_factory(monitor_user=False)
    right.create_user(USER, grants=("PROCESS",), password=CANARY)
    reader = SessionReader("t", "127.0.0.1", right.port, creds)
    try:
        assert reader.read(None, soon(3.0)).ok
        assert right.pid is not None
        os.kill(right.pid, signal.SIGKILL)
        time.sleep(0.2)
        view = reader.read(None, soon(2.0))
        assert not view.ok
        views["killed mid-run"] = view.error
        with pytest.raises(ServerError) as caught:
            reader.connection.query("SELECT 1", deadline=soon(2.0))
        errors["query after the kill"] = caught.value
    finally:
        reader.close()

    # A read that hangs on a paused server until its deadline.
    paused = db_server_factory(monitor_user=False)
    paused.create_user(USER, grants=("PROCESS",), password=CANARY)
    hung = SessionReader("t", "127.0.0.1", paused.port, creds)
    try:
        assert hung.read(None, soon(3.0)).ok
        paused.pause()
        views["hung server"] = hung.read(None, soon(0.5)).error
    finally:
        paused.resume()
        hung.close()

    for name, error in errors.items():
        assert str(error), name
        for text in exception_texts(error):
            assert_no_leak(f"the {name} exception", text)
    for name, text in views.items():
        assert text, f"{name}: a failed read must say why"
        assert_no_leak(f"ServerView.error ({name})", text)
    log = log_text(debug_log)
    assert "down:" in log, log
    assert_no_leak("the debug log", log)


def test_failed_my_cnf_parsing_never_shows_the_password(tmp_path: Path) -> None:
    """Configuration errors quote the file and the option, never the password line."""
    from exporter.sessions.credentials import ConfigError

    broken = [
        f"password={my_cnf_quote(CANARY)}\n[client]\nuser=u\n",  # outside a section
        f"[client]\nuser=u\npassword={my_cnf_quote(CANARY)}\nport=abc\n",
        f"[client]\nuser=u\npassword={my_cnf_quote(CANARY)}\nssl-ca=/nonexistent\n",
        f"[client]\nuser=u\npassword={my_cnf_quote(CANARY)}\nssl=maybe\n",
        f"[other]\npassword={my_cnf_quote(CANARY)}\n",
        f"[client]\npassword={my_cnf_quote(CANARY)}\n",  # no user
    ]
    for index, text in enumerate(broken):
        path = tmp_path / f"broken{index}.cnf"
        path.write_text(text)
        with pytest.raises(ConfigError) as caught:
            load_credentials(my_cnf=path, environ={})
        for shown in exception_texts(caught.value):
            assert_no_leak(f"the ConfigError for {text!r}", shown)


def test_the_command_line_refuses_a_password(tmp_path: Path) -> None:
    """A password on the command line would be in /proc/PID/cmdline for every local user:
    the exporter refuses it, and its refusal does not repeat it."""
    import subprocess
    import sys

    for flag in (f"--mysql.password={CANARY}", f"--password={CANARY}"):
        result = subprocess.run([sys.executable, "-m", "exporter", flag],
                                capture_output=True, text=True, timeout=30, check=False)
        assert result.returncode == 2, result
        assert_no_leak("the refusal", result.stdout + result.stderr)


# --- on the wire -------------------------------------------------------------------------


def _packet(sequence: int, payload: bytes) -> bytes:
    return len(payload).to_bytes(3, "little") + bytes([sequence]) + payload


def _read_packet(conn: socket.socket) -> bytes:
    def exactly(count: int) -> bytes:
        data = b""
        while len(data) < count:
            chunk = conn.recv(count - len(data))
            if not chunk:
                raise EOFError
            data += chunk
        return data

    return exactly(int.from_bytes(exactly(4)[:3], "little"))


class ImpostorServer:
    """Something answering on the database's address (a spoofed name, a reused IP, a man in
    the middle): it greets like MariaDB without TLS, then asks the client to switch to an
    authentication plugin that sends the password itself, and records every byte."""

    def __init__(self, switch_request: bytes) -> None:
        self.switch_request = switch_request
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(1)
        self.port = self.listener.getsockname()[1]
        self.received: list[bytes] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        conn, _ = self.listener.accept()
        with conn:
            conn.settimeout(5)
            salt = b"12345678abcdefghijkl"
            caps = 0x1 | 0x200 | 0x8000 | 0x80000  # long password, 4.1, secure, plugin auth
            greeting = (b"\x0a5.5.5-10.11.99-MariaDB\0" + (42).to_bytes(4, "little")
                        + salt[:8] + b"\0" + struct.pack("<HBHH", caps & 0xFFFF, 45, 2, caps >> 16)
                        + bytes([21]) + bytes(10) + salt[8:] + b"\0mysql_native_password\0")
            conn.sendall(_packet(0, greeting))
            with contextlib.suppress(OSError, EOFError):
                self.received.append(_read_packet(conn))
                conn.sendall(_packet(2, self.switch_request))
                self.received.append(_read_packet(conn))
            with contextlib.suppress(OSError):
                conn.sendall(_packet(4, b"\xff" + (1045).to_bytes(2, "little") + b"#28000no"))
        self.listener.close()


@pytest.mark.parametrize("switch_request", [
    b"\xfemysql_clear_password\0",
    b"\xfedialog\0\x04Password: ",  # MariaDB's PAM plugin asking for the password
], ids=["mysql_clear_password", "dialog"])
def test_the_password_is_never_sent_in_clear_text_to_whoever_answers(
    switch_request: bytes,
) -> None:
    impostor = ImpostorServer(switch_request)
    error = connect_error(Credentials(USER, CANARY), impostor.port)
    impostor.thread.join(10)
    assert impostor.received, "the client never answered the greeting"
    wire = b"".join(impostor.received).decode("latin-1")
    assert_no_leak("the bytes sent to an impostor server", wire)
    assert "clear text" in str(error), error

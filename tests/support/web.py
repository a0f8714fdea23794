"""Helpers for the web side's tests: an app served on a free port, certificates, web
config files, basic-auth headers, TLS peers, and bounded polling."""

from __future__ import annotations

import base64
import hashlib
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TypeVar

import bcrypt
import pytest
from aiohttp import web

from tests.support.exporter_process import ExporterProcess

T = TypeVar("T")


def make_cert(directory: Path, name: str = "server") -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its key: (cert, key)."""
    cert, key = directory / f"{name}.pem", directory / f"{name}.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-subj", f"/CN={name}", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )
    return cert, key


def fingerprint(cert_pem: Path) -> str:
    """SHA-256 of a PEM certificate's DER form, hex."""
    return hashlib.sha256(ssl.PEM_cert_to_DER_cert(cert_pem.read_text())).hexdigest()


def peer_fingerprint(port: int, timeout: float = 5.0) -> str:
    """SHA-256 of the certificate a TLS server on 127.0.0.1:port presents (unverified)."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as raw, \
            context.wrap_socket(raw) as tls:
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return hashlib.sha256(der).hexdigest()


def bcrypt_hash(password: str, cost: int = 4) -> str:
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=cost)).decode()


def web_config_text(
    users: Mapping[str, str] | None = None,
    cert: Path | None = None,
    key: Path | None = None,
    extra_tls: str = "",
) -> str:
    """An exporter-toolkit web config: `users` maps names to bcrypt hashes."""
    lines: list[str] = []
    if cert is not None and key is not None:
        lines += ["tls_server_config:", f"  cert_file: {cert}", f"  key_file: {key}"]
        lines += [f"  {line}" for line in extra_tls.splitlines() if line]
    if users:
        lines.append("basic_auth_users:")
        lines += [f"  {name}: '{hashed}'" for name, hashed in users.items()]
    return "\n".join(lines) + "\n"


def basic_auth(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def poll_until(check: Callable[[], T | None], what: str, timeout: float = 10.0,
               interval: float = 0.05) -> T:
    """Call `check` until it returns something other than None (returned); fail after
    `timeout` seconds saying `what` did not happen."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value is not None:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"not within {timeout}s: {what}", pytrace=False)
        time.sleep(interval)


class LogFollower:
    """Reads a running exporter's output (its stdout pipe) line by line as it comes, so a
    test can wait for a log line instead of guessing when a signal was handled."""

    def __init__(self, exporter: ExporterProcess) -> None:
        assert exporter.process is not None and exporter.process.stdout is not None
        self._exporter = exporter
        self._stream = exporter.process.stdout
        self._lines: list[str] = []
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        for line in self._stream:
            with self._changed:
                self._lines.append(line.rstrip("\n"))
                self._changed.notify_all()

    def lines(self, *fragments: str) -> list[str]:
        with self._changed:
            return [line for line in self._lines if all(f in line for f in fragments)]

    def wait_for(self, *fragments: str, count: int = 1, timeout: float = 10.0) -> list[str]:
        """The lines holding every fragment, once there are `count` of them."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                found = [line for line in self._lines if all(f in line for f in fragments)]
                if len(found) >= count:
                    return found
                left = deadline - time.monotonic()
                if left <= 0:
                    pytest.fail(f"no {count} log line(s) with {fragments} within {timeout}s; "
                                f"log: {self._lines[-20:]}", pytrace=False)
                self._changed.wait(left)

    def stop(self) -> str:
        """Stop the exporter and return its whole output."""
        process = self._exporter.process
        if process is not None:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)
        self._thread.join(10)
        self._exporter.stop()  # the pipe is at its end: only cleans up
        with self._changed:
            return "\n".join(self._lines)


async def serve(
    app: web.Application, ssl_context: ssl.SSLContext | None = None
) -> tuple[web.AppRunner, int]:
    """Start ``app`` on 127.0.0.1 and a free port; the caller cleans the runner up."""
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ssl_context)
    await site.start()
    server = site._server
    assert server is not None
    port = int(server.sockets[0].getsockname()[1])  # type: ignore[union-attr]
    return runner, port

"""The listener's parts: the connection limit that fits the fd limit, rate-limited log
lines, and accept() meeting EMFILE for real."""

from __future__ import annotations

import logging
import resource
import socket
import subprocess
import sys
import time

import pytest

from exporter.web.listener import FD_RESERVE, RateLimitedLog, fitting_connections
from tests.support.hostile import recv_until_closed


@pytest.mark.parametrize(
    "requested,fd_limit,expected",
    [
        (512, 1024, 512),
        (5000, 1024, 1024 - FD_RESERVE),
        (512, 100, 16),
        (512, resource.RLIM_INFINITY, 512),
    ],
)
def test_the_connection_limit_fits_the_fd_limit(requested: int, fd_limit: int,
                                                expected: int) -> None:
    assert fitting_connections(requested, fd_limit) == expected


def test_a_rate_limited_line_says_how_many_it_left_out(caplog: pytest.LogCaptureFixture
                                                      ) -> None:
    now = [0.0]
    logger = logging.getLogger("test.ratelimit")
    limited = RateLimitedLog(logger, logging.WARNING, every=10, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, logger="test.ratelimit"):
        for _ in range(100):
            limited("accept() failed: %s", "Too many open files")
            now[0] += 0.05
        now[0] = 10.0
        limited("accept() failed: %s", "Too many open files")
    messages = [record.getMessage() for record in caplog.records]
    assert messages == [
        "accept() failed: Too many open files",
        "accept() failed: Too many open files (99 more like it in the last 10s)",
    ]


def test_accept_meeting_emfile_makes_room_and_logs_once() -> None:
    server = subprocess.Popen(
        [sys.executable, "-m", "tests.support.emfile_server", "6", "5"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    held: list[socket.socket] = []
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline())
        # Far more connections than descriptors left: accept() fails with EMFILE.
        held = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(40)]
        answered = 0
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
                sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                sock.settimeout(5)
                if b"200 OK" in sock.recv(65536):
                    answered += 1
        pushed_out = sum(1 for s in held if recv_until_closed(s, 0.01) is not None)
    finally:
        for sock in held:
            sock.close()
        _, errors = server.communicate(timeout=30)
    assert answered >= 10, (answered, errors[-2000:])
    assert pushed_out >= 30, pushed_out
    lines = [line for line in errors.splitlines() if "accept" in line]
    assert 1 <= len(lines) <= 2, lines
    assert "Traceback" not in errors, errors[-2000:]


def test_a_listen_address_in_use_exits_2_with_one_line() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "exporter", "--mysql.address=127.0.0.1:1", "--mysql.user=u",
             f"--web.listen-address=127.0.0.1:{port}"],
            capture_output=True, text=True, timeout=30,
            env={"MYSQL_IDLE_EXPORTER_PASSWORD": "pw"},
        )
    assert result.returncode == 2, result
    errors = [line for line in result.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and "--web.listen-address" in errors[0], result.stderr
    assert "in use" in errors[0], errors

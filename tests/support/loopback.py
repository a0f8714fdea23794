"""Listeners and connections on loopback for tests that read the kernel's socket tables
(sock_diag dumps and lookups): every socket closed when the block ends."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager


class Loopback:
    """Listeners and connections on loopback, all closed by the ExitStack."""

    def __init__(self, stack: ExitStack) -> None:
        self.stack = stack
        self.listener_by_port: dict[int, socket.socket] = {}

    def listen(self, family: int = socket.AF_INET, host: str = "127.0.0.1") -> int:
        listener = self.stack.enter_context(socket.socket(family, socket.SOCK_STREAM))
        listener.bind((host, 0))
        listener.listen(64)
        self.listener_by_port[listener.getsockname()[1]] = listener
        return int(listener.getsockname()[1])

    def connect(
        self,
        port: int,
        host: str = "127.0.0.1",
        family: int = socket.AF_INET,
        keepalive: bool = False,
    ) -> tuple[socket.socket, socket.socket]:
        client = self.stack.enter_context(socket.socket(family, socket.SOCK_STREAM))
        if keepalive:
            client.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        client.settimeout(2)
        client.connect((host, port))
        server, _ = self.listener_by_port[port].accept()
        self.stack.enter_context(server)
        return client, server


@contextmanager
def loopback() -> Iterator[Loopback]:
    with ExitStack() as stack:
        yield Loopback(stack)


def inode_of(sock: socket.socket) -> int:
    return os.fstat(sock.fileno()).st_ino

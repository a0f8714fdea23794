"""Accepting HTTP connections: bounded in number and in the time to send headers, and
quiet under floods.

asyncio's own accept loop (behind aiohttp's TCPSite) accepts until the process runs out
of file descriptors, then logs `socket.accept() out of system resource` with a traceback
and pauses; aiohttp gives a connection that never finishes its request no deadline short
of an hour. Under the common fd limit of 1,024, 1,100 connections that never finished
their request line shut every scrape out and wrote 35,000 log lines in 17 s. This module
accepts instead:

- at most `max_connections` at once, lowered at start to fit the fd limit with
  FD_RESERVE descriptors to spare for everything else (database, netlink, /proc);
- when full, a new connection pushes out the one that has waited longest without a
  request in progress (never one being answered); if every one is being answered, the new
  one is closed;
- a connection must deliver complete request headers within `read_header_timeout` of
  connecting (a TLS handshake gets as long again before that), and of the first byte of
  each later request; a kept-alive connection may idle `idle_timeout` between requests;
- out of descriptors all the same (`accept()` failing with EMFILE), it closes the longest
  waiting connection to make room, or pauses accepting briefly, and logs one line per
  LOG_EVERY_SECONDS with a count; aiohttp's line per malformed request is limited alike.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import resource
import socket
import ssl
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

log = logging.getLogger(__name__)

# Descriptors kept for everything but HTTP connections: the interpreter and its libraries,
# a connection per target, netlink and /proc reads, the listening sockets, log files.
FD_RESERVE = 128
# Whatever the fd limit, this many connections at least (a limit that low is a mistake).
MIN_CONNECTIONS = 16
ACCEPT_BATCH = 32
# When nothing can be closed to free a descriptor, accepting waits this long.
RESOURCE_PAUSE_SECONDS = 0.1
LOG_EVERY_SECONDS = 10.0
_OUT_OF_RESOURCES = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class ListenLimits:
    max_connections: int = 512
    read_header_timeout: float = 10.0
    # Longer than common scrape intervals (15 s to 1 min), so Prometheus keeps its
    # connection; idle connections are the first pushed out when the limit is reached.
    idle_timeout: float = 120.0
    backlog: int = 1024


def raise_fd_limit() -> int:
    """Raise the soft limit on open files to the hard one, as Go programs (node_exporter,
    Prometheus) do at start; returns the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def fitting_connections(requested: int, fd_limit: int) -> int:
    """The connection limit that leaves FD_RESERVE descriptors under `fd_limit`."""
    if fd_limit == resource.RLIM_INFINITY or fd_limit <= 0:
        return requested
    return max(min(requested, fd_limit - FD_RESERVE), MIN_CONNECTIONS)


class RateLimitedLog:
    """Logs a message at most once per `every` seconds, saying how many were left out."""

    def __init__(self, logger: logging.Logger, level: int, every: float = LOG_EVERY_SECONDS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._logger = logger
        self._level = level
        self._every = every
        self._clock = clock
        self._last: float | None = None
        self._suppressed = 0

    def __call__(self, message: str, *args: object) -> None:
        now = self._clock()
        if self._last is not None and now - self._last < self._every:
            self._suppressed += 1
            return
        if self._suppressed:
            message += f" ({self._suppressed} more like it in the last {self._every:g}s)"
        self._logger.log(self._level, message, *args)
        self._last = now
        self._suppressed = 0


class _Connection:
    """One accepted connection, from accept() to close."""

    __slots__ = ("busy", "handler", "task", "timer")

    def __init__(self) -> None:
        self.handler: _Handler | None = None
        self.task: asyncio.Task[None] | None = None  # the TLS handshake, until it is done
        self.busy = False  # a request is being answered
        self.timer: asyncio.TimerHandle | None = None  # the header deadline, when armed


class _Handler(web.RequestHandler):
    """aiohttp's protocol, reporting to the Listener and timing request headers."""

    def __init__(self, listener: Listener, entry: _Connection, manager: web.Server,
                 **kwargs: Any) -> None:
        self._clock_loop = asyncio.get_running_loop()
        super().__init__(manager, loop=self._clock_loop, **kwargs)
        self._listener = listener
        self._entry = entry

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._entry.handler = self
        super().connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        # The first bytes of a request on a kept-alive connection start its clock.
        if data and not self._entry.busy and self._entry.timer is None:
            self._arm()
        super().data_received(data)

    def connection_lost(self, exc: BaseException | None) -> None:
        self._listener.release(self._entry)
        super().connection_lost(exc)

    async def finish_response(self, request: web.BaseRequest, resp: web.StreamResponse,
                              start_time: float | None) -> tuple[web.StreamResponse, bool]:
        try:
            return await super().finish_response(request, resp, start_time)
        finally:
            # Written out (or failed): waiting for the next request from here.
            self._listener.request_done(self._entry)

    def request_started(self) -> None:
        self._entry.busy = True
        self._disarm()

    def log_exception(self, *args: Any, **kwargs: Any) -> None:
        # One line per malformed request, at error level, would let any client fill the log.
        # The exception's text can quote what the client sent: only its type is logged.
        if args:
            error = kwargs.get("exc_info")
            kind = type(error).__name__ if isinstance(error, BaseException) else "error"
            self._listener.request_errors(f"{args[0]} ({kind})", *args[1:])

    def _arm(self) -> None:
        self._disarm()
        self._entry.timer = self._clock_loop.call_later(
            self._listener.limits.read_header_timeout, self._headers_late)

    def _disarm(self) -> None:
        if self._entry.timer is not None:
            self._entry.timer.cancel()
            self._entry.timer = None

    def _headers_late(self) -> None:
        self._entry.timer = None
        if not self._entry.busy:
            self.force_close()


@web.middleware
async def track_requests(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Marks a connection as answering a request (so it is never pushed out, and its
    header deadline is over); must be the outermost middleware."""
    protocol = request.protocol
    if isinstance(protocol, _Handler):
        protocol.request_started()
    return await handler(request)


class Listener:
    """Serves an aiohttp AppRunner's application on its own listening sockets."""

    def __init__(self, runner: web.BaseRunner, limits: ListenLimits,
                 ssl_context: ssl.SSLContext | None = None, fd_limit: int | None = None) -> None:
        self._runner = runner
        self._ssl = ssl_context
        soft = fd_limit if fd_limit is not None else resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        fitting = fitting_connections(limits.max_connections, soft)
        if fitting < limits.max_connections:
            log.warning("--web.max-connections lowered from %d to %d to fit the open files "
                        "limit of %d (%d kept for everything else)",
                        limits.max_connections, fitting, soft, FD_RESERVE)
        self.limits = ListenLimits(fitting, limits.read_header_timeout, limits.idle_timeout,
                                   limits.backlog)
        self._connections: OrderedDict[_Connection, None] = OrderedDict()
        self._sockets: list[socket.socket] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._resources_log = RateLimitedLog(log, logging.WARNING)
        self._full_log = RateLimitedLog(log, logging.WARNING)
        self._request_logs: dict[str, RateLimitedLog] = {}

    @property
    def connections(self) -> int:
        return len(self._connections)

    @property
    def sockets(self) -> list[socket.socket]:
        return list(self._sockets)

    async def start(self, host: str | None, port: int) -> None:
        """Bind and listen (raises OSError, e.g. the address is in use)."""
        self._loop = asyncio.get_running_loop()
        # Directly, not through the loop's executor: its thread would stay for the
        # process's whole life for this one lookup at start.
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM,
                                   flags=socket.AI_PASSIVE)
        try:
            for family, kind, proto, _, address in dict.fromkeys(infos):
                try:
                    sock = socket.socket(family, kind, proto)
                except OSError:
                    continue  # as asyncio does: a family this host lacks (IPv6 off)
                self._sockets.append(sock)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if family == socket.AF_INET6:
                    # As asyncio does: the IPv4 socket serves IPv4.
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                sock.bind(address)
                sock.listen(self.limits.backlog)
                sock.setblocking(False)
        except OSError:
            self._close_sockets()
            raise
        if not self._sockets:
            raise OSError(errno.EAFNOSUPPORT, "no address family of this host can listen there")
        for sock in self._sockets:
            self._loop.add_reader(sock.fileno(), self._accept, sock)

    async def stop(self) -> None:
        """Stop accepting and drop connections still in their TLS handshake; the runner's
        cleanup closes the others."""
        self._close_sockets()
        for entry in list(self._connections):
            if entry.task is not None:
                entry.task.cancel()

    def _close_sockets(self) -> None:
        for sock in self._sockets:
            if self._loop is not None:
                with contextlib.suppress(ValueError, OSError):
                    self._loop.remove_reader(sock.fileno())
            sock.close()
        self._sockets = []

    def _accept(self, sock: socket.socket) -> None:
        for _ in range(ACCEPT_BATCH):
            try:
                conn, _ = sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as error:
                if error.errno in _OUT_OF_RESOURCES:
                    self._out_of_resources(sock, error)
                    return
                continue  # ECONNABORTED and the like: that client is gone already
            self._admit(conn)

    def _out_of_resources(self, sock: socket.socket, error: OSError) -> None:
        self._resources_log("accept() failed: %s; closing the longest waiting connection "
                            "to make room", error.strerror or error)
        if self._push_out():
            return  # its descriptor is free by the next round of the loop
        # Nothing to give back: stop watching the socket for a moment, or the loop spins.
        assert self._loop is not None
        with contextlib.suppress(ValueError, OSError):
            self._loop.remove_reader(sock.fileno())
        self._loop.call_later(RESOURCE_PAUSE_SECONDS, self._resume, sock)

    def _resume(self, sock: socket.socket) -> None:
        if sock in self._sockets and self._loop is not None:
            self._loop.add_reader(sock.fileno(), self._accept, sock)

    def _admit(self, conn: socket.socket) -> None:
        if len(self._connections) >= self.limits.max_connections and not self._push_out():
            self._full_log("%d connections, all answering requests: closing new ones",
                           len(self._connections))
            conn.close()
            return
        conn.setblocking(False)
        entry = _Connection()
        self._connections[entry] = None
        assert self._loop is not None
        entry.task = self._loop.create_task(self._connect(entry, conn))
        entry.task.add_done_callback(lambda _: self._connected(entry, conn))

    async def _connect(self, entry: _Connection, conn: socket.socket) -> None:
        assert self._loop is not None
        server = self._runner.server
        assert server is not None
        # A failed or slow handshake ends here quietly: _connected closes the socket.
        with contextlib.suppress(TimeoutError, OSError, ssl.SSLError):
            await self._loop.connect_accepted_socket(
                lambda: _Handler(self, entry, server, keepalive_timeout=self.limits.idle_timeout,
                                 access_log=None),
                conn,
                ssl=self._ssl,
                ssl_handshake_timeout=self.limits.read_header_timeout if self._ssl else None,
            )

    def _connected(self, entry: _Connection, conn: socket.socket) -> None:
        """The handshake is over: a protocol has the socket, or nothing does (it failed,
        or was pushed out, possibly before the task even ran) and it is closed here."""
        entry.task = None
        if entry.handler is None:
            self.release(entry)
            conn.close()

    def _push_out(self) -> bool:
        """Close the connection that has waited longest without a request in progress."""
        for entry in self._connections:
            if not entry.busy:
                self.release(entry)
                if entry.handler is not None:
                    entry.handler.force_close()
                elif entry.task is not None:
                    entry.task.cancel()
                return True
        return False

    def release(self, entry: _Connection) -> None:
        self._connections.pop(entry, None)
        if entry.timer is not None:
            entry.timer.cancel()
            entry.timer = None

    def request_done(self, entry: _Connection) -> None:
        entry.busy = False
        if entry in self._connections:
            self._connections.move_to_end(entry)  # the longest waiting are first

    def request_errors(self, message: str, *args: object) -> None:
        limited = self._request_logs.get(message)
        if limited is None:
            limited = self._request_logs[message] = RateLimitedLog(
                logging.getLogger("aiohttp.server"), logging.WARNING)
        limited(message, *args)

"""The machine's network namespaces, and one sock_diag socket inside each.

A network namespace has no list of its own: it is found through the processes in it
(/proc/PID/ns/net names it as "net:[INODE]"). A netlink socket dumps the namespace of the
thread that opened it, and stays there: so a short-lived thread enters each namespace
(setns on /proc/PID/ns/net, which changes only the calling thread), opens the socket and
reads the host name the namespace's processes see (their UTS namespace, entered the same
way), and leaves. The sockets are cached per namespace and closed when no process is left
in it: an open socket keeps its namespace alive, so closing it is what lets it go.

Entering another process's namespaces needs CAP_SYS_ADMIN, and opening its ns files needs
ptrace access to it (CAP_SYS_PTRACE for another uid): see exporter.node.privileges.
"""

from __future__ import annotations

import ctypes
import errno as errno_codes
import logging
import os
import re
import socket
import threading
from collections.abc import Callable, Iterator, Mapping
from typing import NamedTuple

from exporter.sockets import netlink

log = logging.getLogger(__name__)

CLONE_NEWUTS = 0x04000000
CLONE_NEWNET = 0x40000000
_NS_LINK = re.compile(r"^net:\[(\d+)\]$")


def parse_ns_link(link: str) -> int | None:
    """The inode in a namespace link's text ("net:[4026531840]"), else None."""
    found = _NS_LINK.match(link)
    return int(found.group(1)) if found is not None else None


def discover(proc_root: str = "/proc") -> dict[int, int]:
    """Every network namespace some process is in: its inode, and the lowest pid in it
    (where to enter it from; in a pod, its first process, whose host name is the pod's).
    Processes that end, or whose links this exporter may not read, are skipped."""
    found: dict[int, int] = {}
    try:
        entries = os.listdir(proc_root)
    except OSError:
        return found
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            link = os.readlink(f"{proc_root}/{entry}/ns/net")
        except OSError:
            continue
        inode = parse_ns_link(link)
        if inode is None:
            continue
        pid = int(entry)
        known = found.get(inode)
        if known is None or pid < known:
            found[inode] = pid
    return found


class Entered(NamedTuple):
    """What a thread inside a namespace brought back."""

    channel: socket.socket
    hostname: str


class NamespaceGone(OSError):
    """The process to enter a namespace through ended, or now sits in another one."""


def _setns(fd: int, kind: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, kind) != 0:
        code = ctypes.get_errno()
        raise OSError(code, f"setns: {os.strerror(code)}")


def enter(proc_root: str, pid: int, inode: int) -> Entered:
    """A sock_diag socket inside network namespace ``inode`` and the host name there,
    entered through process ``pid`` from a thread of its own (the caller's threads stay
    where they are). Raises NamespaceGone or OSError (EPERM: privileges)."""
    outcome: dict[str, object] = {}

    def run() -> None:
        try:
            net = os.open(f"{proc_root}/{pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
            try:
                if os.fstat(net).st_ino != inode:
                    raise NamespaceGone(f"process {pid} left namespace {inode}")
                uts = os.open(f"{proc_root}/{pid}/ns/uts", os.O_RDONLY | os.O_CLOEXEC)
                try:
                    _setns(net, CLONE_NEWNET)
                    _setns(uts, CLONE_NEWUTS)
                finally:
                    os.close(uts)
            finally:
                os.close(net)
            channel = netlink.open_channel()
            outcome["value"] = Entered(channel, socket.gethostname())
        except FileNotFoundError as error:
            outcome["error"] = NamespaceGone(f"process {pid} ended: {error}")
        except OSError as error:
            outcome["error"] = error

    thread = threading.Thread(target=run, name=f"netns-{inode}", daemon=True)
    thread.start()
    thread.join()
    error = outcome.get("error")
    if isinstance(error, BaseException):
        raise error
    value = outcome["value"]
    assert isinstance(value, Entered)
    return value


Enter = Callable[[str, int, int], Entered]


class Namespaces:
    """One sock_diag socket per network namespace on the machine, opened when the
    namespace is first seen and closed when it is gone. Not thread-safe: one refresh or
    use at a time (the engine reads the sockets once per collection)."""

    def __init__(self, proc_root: str = "/proc", *, enter: Enter = enter) -> None:
        self._proc_root = proc_root
        self._enter = enter
        self._open: dict[int, Entered] = {}
        self._pids: dict[int, int] = {}  # a process in each namespace, from the last refresh
        self._refused: set[int] = set()  # errnos already logged

    def refresh(self) -> None:
        """Open a socket in each namespace that appeared, close those of the gone ones."""
        present = discover(self._proc_root)
        self._pids = present
        for inode in list(self._open):
            if inode not in present:
                self.forget(inode)
        for inode, pid in present.items():
            if inode not in self._open:
                try:
                    self._open[inode] = self._enter(self._proc_root, pid, inode)
                except NamespaceGone:
                    continue  # found again at the next refresh, through another process
                except OSError as error:
                    code = error.errno or 0
                    if code not in self._refused:
                        self._refused.add(code)
                        log.warning("cannot enter network namespace %d through pid %d (%s): "
                                    "its sockets are not seen", inode, pid, error)

    def forget(self, inode: int) -> None:
        """Close the namespace's socket (it is reopened at the next refresh if the
        namespace is still there: after a failed dump, the socket may hold its remains)."""
        entered = self._open.pop(inode, None)
        if entered is not None:
            entered.channel.close()

    def items(self) -> Iterator[tuple[int, Entered]]:
        return iter(list(self._open.items()))

    def pid(self, inode: int) -> int | None:
        """The lowest pid in the namespace at the last refresh (it may have ended since)."""
        return self._pids.get(inode)

    def channel(self, inode: int) -> socket.socket:
        """The namespace's socket, the namespace entered again if its socket was closed
        since the last refresh (``forget`` after a failed lookup). Raises NetlinkError."""
        entered = self._open.get(inode)
        if entered is None:
            pid = self._pids.get(inode)
            if pid is None:
                raise netlink.NetlinkError(errno_codes.ENOENT,
                                           f"network namespace {inode} is gone")
            try:
                entered = self._open[inode] = self._enter(self._proc_root, pid, inode)
            except OSError as error:  # NamespaceGone included
                raise netlink.NetlinkError(
                    errno_codes.ENOENT if isinstance(error, NamespaceGone)
                    else error.errno or errno_codes.EIO,
                    f"cannot enter network namespace {inode} again: {error}",
                ) from error
        return entered.channel

    @property
    def hostnames(self) -> Mapping[int, str]:
        return {inode: entered.hostname for inode, entered in self._open.items()}

    def __len__(self) -> int:
        return len(self._open)

    def close(self) -> None:
        for inode in list(self._open):
            self.forget(inode)

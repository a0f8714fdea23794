"""Which process holds a socket: the kernel gives a socket's inode, never its pid, so the
owner is found among the /proc/PID/fd/N links that read `socket:[INODE]`.

Reading another process's fd links needs the same uid AND gid as that process, or both
CAP_SYS_PTRACE (the kernel's ptrace access check on each link) and CAP_DAC_READ_SEARCH
(/proc/PID/fd is mode 0500): CAP_SYS_PTRACE alone never reads a link. A process in another pid
namespace is not in our /proc at all. Such sockets stay without an owner; each full scan
remembers the uids of the processes it was refused, so the reader can say which it was.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import NamedTuple

import psutil

from exporter.deadline import Deadline
from exporter.sockets.appname import CMDLINE_LIMIT, application_name, interpreter, split_cmdline

UNKNOWN_PROCESS = "unknown"
# How long an inode that a full scan could not find is left alone. Such inodes usually
# belong to processes we cannot see (another pid namespace, no permission), and a new
# scan would not find them either; yet a socket may also be handed to a visible process
# later (fork, SCM_RIGHTS), so the verdict expires instead of lasting for ever. Every
# scan refreshes all unresolved inodes at once, so they cost one scan per period
# together, not one each.
DEFAULT_NEGATIVE_TTL = 30.0
# Confirming every known owner with a readlink costs one system call per socket per
# collection (80 ms at 10,000 sockets). Since the caller asks only about inodes still in
# the kernel's table, an owner may be trusted while its process is the same incarnation
# (start time unchanged): that inode is still the same open socket, and its holder changes
# only by fd passing, dup2+close or exit-after-fork. Such owners are then confirmed in
# turns, each at least once per this many calls, which bounds how long such a change goes
# unnoticed.
READER_RECHECK_EVERY = 32

_SOCKET_LINK_PREFIX = "socket:["

# Why a socket in the kernel's table has no owner (the `reason` of
# mysql_idle_sockets_without_owner): a process with the socket's uid is in our /proc but would
# not show us its fds, or no such process is in our /proc at all (another pid namespace).
NO_PERMISSION = "no_permission"
NOT_VISIBLE = "not_visible"
WITHOUT_OWNER_REASONS = (NO_PERMISSION, NOT_VISIBLE)


class ProcessName(NamedTuple):
    """How a process is named: ``process``, the application it runs (the label; see
    exporter.sockets.appname), and ``comm``, its plain name as psutil gives it."""

    process: str
    comm: str


UNKNOWN = ProcessName(UNKNOWN_PROCESS, UNKNOWN_PROCESS)


@dataclass(frozen=True, slots=True)
class Owner:
    pid: int
    fd: int
    process: str  # the application (the `process` label)
    comm: str  # the plain process name, e.g. python3 or java


def _socket_link(inode: int) -> str:
    return f"{_SOCKET_LINK_PREFIX}{inode}]"


def _read_cmdline(path: str) -> list[str]:
    try:
        with open(path, "rb") as handle:
            raw = handle.read(CMDLINE_LIMIT)
    except OSError:
        return []
    words = split_cmdline(raw)
    if len(raw) == CMDLINE_LIMIT and words:
        words.pop()  # cut off at the limit: the last word is not whole
    return words


def _read_text(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return handle.read()
    except OSError:
        return None


def parse_stat(text: str) -> tuple[int, str] | None:
    """(start time in clock ticks after boot, comm) from the text of /proc/PID/stat."""
    # "PID (COMM) STATE ...": COMM may itself hold spaces and parentheses.
    head, _, rest = text.rpartition(")")
    fields = rest.split()
    if "(" not in head or len(fields) <= 19 or not fields[19].isdecimal():
        return None
    return int(fields[19]), head.partition("(")[2]  # start time is field 22 of proc(5)


class ProcessNames:
    """pid -> ProcessName, cached per process incarnation so that a reused pid is not
    given its predecessor's name.

    One read of /proc/PID/stat per pid and call gives the incarnation (the start time
    field, what psutil turns into create_time) and the comm, so a process that renames
    itself (prctl PR_SET_NAME) is renamed here too. Names come from psutil, which
    completes a comm cut at 15 characters from the command line; psutil only knows the
    real /proc, so with another proc_root (and whenever psutil fails) the name is comm.
    An interpreter's process (python3, java, node, ...) is named after what it runs, from
    its /proc/PID/cmdline, read once per incarnation.
    """

    def __init__(self, proc_root: str = "/proc") -> None:
        self._root = proc_root
        self._use_psutil = os.path.realpath(proc_root) == "/proc"
        self._cache: dict[int, tuple[tuple[int, str], ProcessName]] = {}

    def _identity(self, pid: int) -> tuple[int, str] | None:
        stat = _read_text(f"{self._root}/{pid}/stat")
        return None if stat is None else parse_stat(stat)

    def _lookup(self, pid: int, comm: str) -> ProcessName:
        name = comm or UNKNOWN_PROCESS
        if self._use_psutil:
            with contextlib.suppress(psutil.Error):
                name = psutil.Process(pid).name() or name
        if interpreter(name) is None:
            return ProcessName(name, name)  # most processes: no command line to read
        argv = _read_cmdline(f"{self._root}/{pid}/cmdline")
        return ProcessName(application_name(name, argv), name)

    def identity(self, pid: int) -> tuple[int, str] | None:
        """(start time, comm) of the process now; None if it is gone or not ours to see."""
        return self._identity(pid)

    def name(self, pid: int) -> ProcessName:
        return self.name_for(pid, self._identity(pid))

    def name_for(self, pid: int, identity: tuple[int, str] | None) -> ProcessName:
        """The name of the process whose identity ``identity(pid)`` has just given."""
        if identity is None:
            return UNKNOWN  # the process is gone, or we may not look at it
        cached = self._cache.get(pid)
        if cached is not None and cached[0] == identity:
            return cached[1]
        name = self._lookup(pid, identity[1])
        self._cache[pid] = (identity, name)
        return name

    def retain(self, pids: Collection[int]) -> None:
        """Forget every pid but these, so the cache follows the live owners."""
        self._cache = {pid: entry for pid, entry in self._cache.items() if pid in pids}


class OwnerMap:
    """inode -> Owner, cached across calls.

    The caller asks only about inodes that are in the kernel's socket table right now (an
    open socket, so some process holds it). A known owner whose process has kept its start
    time since its last confirmation is then trusted, and only 1/N of them (N is
    ``recheck_every``; in turns, each at least once per N calls) is confirmed by one
    readlink of its remembered fd, as are all owners whose process changed or vanished.
    Only an inode with no remembered (or no longer valid) fd leads to a full scan of
    /proc/*/fd, at most one per call and never past the caller's deadline, and an inode
    that a complete scan could not find is not searched again for `negative_ttl` seconds.
    The caches only keep inodes asked for in the last call.
    """

    def __init__(
        self,
        proc_root: str = "/proc",
        *,
        negative_ttl: float = DEFAULT_NEGATIVE_TTL,
        clock: Callable[[], float] = time.monotonic,
        names: ProcessNames | None = None,
        recheck_every: int = READER_RECHECK_EVERY,
    ) -> None:
        self._root = proc_root
        self._negative_ttl = negative_ttl
        self._clock = clock
        self._names = names if names is not None else ProcessNames(proc_root)
        self._recheck_every = max(1, recheck_every)
        self._unresolved: dict[int, float] = {}
        # The identity of each owning process when its owners were last confirmed.
        self._identities: dict[int, tuple[int, str]] = {}
        # The Owner values of the last call, handed out again while unchanged.
        self._owners: dict[int, Owner] = {}
        self._calls = 0
        self.scans = 0  # full scans so far; for self-monitoring and tests
        self.scans_cut_short = 0  # scans the deadline ended before every process
        self.confirmations = 0  # readlinks of known owners so far; for tests
        # Uids of the processes whose fd links the last full scan was refused.
        self.denied_uids: frozenset[int] = frozenset()

    def still_holds(self, owner: Owner, inode: int) -> bool:
        """Whether owner.pid still has owner.fd open on socket `inode`."""
        try:
            return os.readlink(f"{self._root}/{owner.pid}/fd/{owner.fd}") == _socket_link(inode)
        except OSError:
            return False

    def _fd_directory(self, pid: int | str) -> int | None:
        # Links are read relative to an open /proc/PID/fd: half the cost of full paths,
        # which make the kernel look the process up again for every link.
        try:
            return os.open(f"{self._root}/{pid}/fd", os.O_RDONLY | os.O_DIRECTORY)
        except OSError:  # gone, not ours to read, or not a process directory
            return None

    def _confirm(self, known: dict[int, tuple[int, int]]) -> dict[int, tuple[int, int]]:
        """Those of inode -> (pid, fd) whose fd still points at the inode."""
        self.confirmations += len(known)
        by_pid: dict[int, list[tuple[int, int]]] = {}
        for inode, (pid, fd) in known.items():
            by_pid.setdefault(pid, []).append((inode, fd))
        confirmed: dict[int, tuple[int, int]] = {}
        for pid, entries in by_pid.items():
            directory = self._fd_directory(pid)
            if directory is None:
                continue
            try:
                for inode, fd in entries:
                    try:
                        if os.readlink(str(fd), dir_fd=directory) == _socket_link(inode):
                            confirmed[inode] = (pid, fd)
                    except OSError:  # closed since
                        continue
            finally:
                os.close(directory)
        return confirmed

    def _denied(self, pid: str, denied: set[int]) -> None:
        with contextlib.suppress(OSError):  # gone meanwhile
            denied.add(os.stat(f"{self._root}/{pid}").st_uid)

    def _scan_process(
        self,
        pid: str,
        wanted: Collection[int],
        found: dict[int, tuple[int, int]],
        denied: set[int],
    ) -> None:
        try:
            directory = os.open(f"{self._root}/{pid}/fd", os.O_RDONLY | os.O_DIRECTORY)
        except PermissionError:  # another uid: the directory is mode 0500
            self._denied(pid, denied)
            return
        except OSError:  # gone, or not a process directory
            return
        try:
            # Streamed, not listed: a process holding thousands of descriptors (a connection
            # pool, a proxy) would otherwise leave a list of all their names behind, whose
            # memory the allocator keeps (0.2-0.3 MiB of a sidecar's steady RSS beside a
            # process of 5,000, benchmarks/README.md).
            with os.scandir(directory) as entries:
                for entry in entries:
                    fd = entry.name
                    try:
                        target = os.readlink(fd, dir_fd=directory)
                    except PermissionError:  # same uid, another gid: the links stay shut
                        self._denied(pid, denied)
                        break
                    except OSError:  # closed meanwhile, or not a link
                        continue
                    if not target.startswith(_SOCKET_LINK_PREFIX) or not fd.isdecimal():
                        continue
                    inode_text = target[len(_SOCKET_LINK_PREFIX) : -1]
                    if inode_text.isdecimal() and int(inode_text) in wanted:
                        found.setdefault(int(inode_text), (int(pid), int(fd)))
        except OSError:  # the process went away while we listed it
            pass
        finally:
            os.close(directory)

    def _scan(
        self, wanted: Collection[int], deadline: Deadline
    ) -> tuple[dict[int, tuple[int, int]], bool]:
        """What a scan of every process's fds found, and whether it went through them all
        (it stops at the deadline, checked between processes)."""
        found: dict[int, tuple[int, int]] = {}
        denied: set[int] = set()
        try:
            entries = os.listdir(self._root)
        except OSError:
            return found, True
        # A socket shared after a fork goes to the lowest pid, usually the process that
        # opened it (and the same one on every scan).
        for pid in sorted((entry for entry in entries if entry.isdecimal()), key=int):
            if deadline.expired:
                self.scans_cut_short += 1
                self.denied_uids = frozenset(denied)
                return found, False
            self._scan_process(pid, wanted, found, denied)
            if len(found) == len(wanted):
                break
        self.denied_uids = frozenset(denied)
        return found, True

    def _search(
        self, missing: set[int], now: float, deadline: Deadline
    ) -> dict[int, tuple[int, int]]:
        """(pid, fd) of those inodes a full scan finds. The scan runs only when one of them
        has not been searched for within the negative TTL; when it went through every
        process, each inode it could not find is then left alone for that long (a scan
        that the deadline cut short proves nothing: those are searched again next time)."""
        unresolved = {inode: seen for inode, seen in self._unresolved.items() if inode in missing}
        found: dict[int, tuple[int, int]] = {}
        if any(
            now - unresolved.get(inode, -float("inf")) >= self._negative_ttl for inode in missing
        ):
            self.scans += 1
            found, complete = self._scan(missing, deadline)
            if complete:
                unresolved = {inode: now for inode in missing if inode not in found}
        self._unresolved = unresolved
        return found

    def resolve(self, inodes: Collection[int], deadline: Deadline) -> Mapping[int, Owner]:
        """Owners of those inodes (all in the kernel's table now) that belong to a process
        we can see; 0 (an orphan socket) and unresolvable inodes are left out. One pass
        over them, in which an owner whose process kept its identity is handed out again
        as it was, and only the others and this call's turn are confirmed. Read-only: the
        map is this object's cache until the next call."""
        wanted = {inode for inode in inodes if inode > 0}
        self._calls += 1
        turn, every = self._calls % self._recheck_every, self._recheck_every
        names = self._names
        previous = self._owners
        identities = {pid: names.identity(pid) for pid in self._identities}
        steady = {
            pid
            for pid, identity in identities.items()
            if identity is not None and identity == self._identities[pid]
        }
        owners: dict[int, Owner] = {}
        confirm: dict[int, tuple[int, int]] = {}
        missing: set[int] = set()
        for inode in wanted:
            owner = previous.get(inode)
            if owner is None:
                missing.add(inode)
            elif owner.pid in steady and inode % every != turn:
                owners[inode] = owner
            else:
                confirm[inode] = (owner.pid, owner.fd)
        located = self._confirm(confirm)
        missing.update(inode for inode in confirm if inode not in located)
        located.update(self._search(missing, self._clock(), deadline))
        # Confirmed and newly found owners: their process may have been renamed or be new.
        self._name_owners(located, identities, owners)
        return owners

    def _name_owners(
        self,
        located: dict[int, tuple[int, int]],
        identities: dict[int, tuple[int, str] | None],
        owners: dict[int, Owner],
    ) -> None:
        """Adds the located inodes to ``owners`` (an Owner of the last call is handed out
        again while its pid, fd and name are unchanged), and keeps ``owners`` and the
        identity of every owning process for the next call. ``identities``: what
        /proc/PID/stat has said this call, by pid; completed here."""
        names, previous = self._names, self._owners
        for inode, (pid, fd) in located.items():
            if pid not in identities:
                identities[pid] = names.identity(pid)
            name = names.name_for(pid, identities[pid])
            owner = previous.get(inode)
            if (
                owner is None
                or owner.pid != pid
                or owner.fd != fd
                or owner.process != name.process
                or owner.comm != name.comm
            ):
                owner = Owner(pid, fd, *name)
            owners[inode] = owner
        pids = {owner.pid for owner in owners.values()}
        self._identities = {
            pid: identity
            for pid in pids
            if (identity := identities.get(pid)) is not None
        }
        names.retain(pids)
        self._owners = owners

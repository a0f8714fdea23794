"""What the exporter remembers across its own restarts (--state.dir).

MariaDB ends an idle session with a reset: the client's socket leaves the kernel's TCP
tables at once, while the process may hold its file descriptor for hours. The socket
reader sees such a dead session only by remembering the socket (its endpoints, inode and
owner) from an earlier collection. An exporter that restarts has no earlier collection,
so a session the server dropped before the restart, or while the exporter was down, was
invisible: no `dropped`, no count.

With a state directory, the exporter writes there, at most every few seconds and when it
stops, the sockets it knows with their owners and file descriptors, and per target the
connections whose drop it has already counted. At start it reads them back: a remembered
socket that has left the kernel's table while its owner still holds the same descriptor
on the same inode is reported `dropped` at the first collection, and counted unless the
previous run had counted it already (the counter restarts at zero with the process; a drop
counted twice across a restart would show in `increase()` twice).

What remains invisible: a connection both opened and reset while the exporter was not
running (it was never seen), and anything after a reboot (the file names the boot it was
written in; descriptors and monotonic times do not survive one).
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from exporter.deadline import Clock
from exporter.model import ConnectionKey, Endpoint, Socket, TcpState
from exporter.sockets.memory import SocketMemory
from exporter.sockets.owners import Owner

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
STATE_FILE = "state.json"
# At most this often during a run (and once more when the exporter stops).
SAVE_EVERY_SECONDS = 10.0
BOOT_ID_PATH = "/proc/sys/kernel/random/boot_id"


@dataclass(frozen=True, slots=True)
class SavedState:
    boot_id: str
    sockets: SocketMemory
    # Per target: the connections whose drop has been counted.
    counted: Mapping[str, frozenset[ConnectionKey]]


def boot_id(path: str = BOOT_ID_PATH) -> str:
    try:
        with open(path, encoding="ascii") as handle:
            return handle.read().strip()
    except OSError:
        return ""


# --- the file ------------------------------------------------------------------------


def _endpoint(e: Endpoint) -> list[object]:
    return [e.ip, e.port]


def _socket_row(sock: Socket, owner: Owner, seen_at: float | None) -> list[object]:
    return [
        *_endpoint(sock.local), *_endpoint(sock.remote), int(sock.state), sock.inode, sock.uid,
        sock.idle_seconds, sock.keepalive, owner.pid, owner.fd, owner.process, owner.comm,
        seen_at,
    ]


def encode(state: SavedState) -> dict[str, Any]:
    memory = state.sockets
    return {
        "version": FORMAT_VERSION,
        "boot_id": state.boot_id,
        "seen_at": memory.seen_at,
        "held": [_socket_row(sock, owner, None) for sock, owner in memory.held],
        "gone": [_socket_row(sock, owner, at) for sock, owner, at in memory.gone],
        "counted": {
            target: [[*_endpoint(local), *_endpoint(remote)] for local, remote in sorted(keys)]
            for target, keys in state.counted.items()
        },
    }


class StateFormatError(ValueError):
    pass


def _decode_row(row: Any) -> tuple[Socket, Owner, float | None]:
    if not isinstance(row, list) or len(row) != 14:
        raise StateFormatError("a socket is not a list of 14 values")
    (lip, lport, rip, rport, state, inode, uid, idle, keepalive, pid, fd, process, comm,
     seen_at) = row
    try:
        sock = Socket(
            local=Endpoint(str(lip), int(lport)),
            remote=Endpoint(str(rip), int(rport)),
            state=TcpState(int(state)),
            inode=int(inode),
            uid=int(uid),
            idle_seconds=None if idle is None else float(idle),
            keepalive=bool(keepalive),
            pid=int(pid),
            process=str(process),
            comm=str(comm),
        )
        owner = Owner(int(pid), int(fd), str(process), str(comm))
        return sock, owner, None if seen_at is None else float(seen_at)
    except (TypeError, ValueError) as error:
        raise StateFormatError(f"a socket does not parse: {error}") from None


def decode(document: Any) -> SavedState:
    if not isinstance(document, dict) or document.get("version") != FORMAT_VERSION:
        raise StateFormatError(f"not a state file of version {FORMAT_VERSION}")
    try:
        held = tuple((s, o) for s, o, _ in map(_decode_row, document["held"]))
        gone = tuple((s, o, float(at)) for s, o, at in map(_decode_row, document["gone"])
                     if at is not None)
        counted = {
            str(target): frozenset(
                (Endpoint(str(k[0]), int(k[1])), Endpoint(str(k[2]), int(k[3])))
                for k in keys
            )
            for target, keys in document["counted"].items()
        }
        return SavedState(
            boot_id=str(document["boot_id"]),
            sockets=SocketMemory(held=held, seen_at=float(document["seen_at"]), gone=gone),
            counted=counted,
        )
    except (KeyError, TypeError, ValueError, IndexError, AttributeError) as error:
        raise StateFormatError(f"the state file does not parse: {error}") from None


def write(directory: Path, state: SavedState) -> None:
    """Replace the state file atomically: a crash mid-write leaves the last one whole."""
    text = json.dumps(encode(state), separators=(",", ":"))
    fd, temporary = tempfile.mkstemp(prefix=".state-", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(temporary, directory / STATE_FILE)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def read(directory: Path, current_boot: str) -> SavedState | None:
    """The state an earlier run of this boot left, or None (none, another boot, or a file
    that does not parse: each said in one log line)."""
    path = directory / STATE_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as error:
        log.warning("cannot read %s (%s): starting without remembered sockets", path,
                    error.strerror or error)
        return None
    try:
        state = decode(json.loads(text))
    except (ValueError, StateFormatError) as error:
        log.warning("ignoring %s: %s", path, error)
        return None
    if not current_boot or state.boot_id != current_boot:
        log.info("%s is from another boot: its sockets are gone", path)
        return None
    return state


# --- saving while running ----------------------------------------------------------------


class StateKeeper:
    """Saves the state at most every ``every`` seconds after a collection, off the event
    loop, and once more at the end. ``capture`` takes what to save; it runs on the event
    loop between collections."""

    def __init__(self, directory: Path, capture: Callable[[], SavedState], *, clock: Clock,
                 every: float = SAVE_EVERY_SECONDS) -> None:
        self._directory = directory
        self._capture = capture
        self._clock = clock
        self._every = every
        self._saved_at: float | None = None
        self._writing: Future[None] | None = None
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="state")
        self._failed = False

    def after_collection(self) -> None:
        now = self._clock()
        if self._saved_at is not None and now - self._saved_at < self._every:
            return
        if self._writing is not None and not self._writing.done():
            return  # a slow disk: skip rather than queue
        self._saved_at = now
        self._writing = self._writer.submit(self._write, self._capture())

    def flush(self) -> None:
        """Wait for a save under way."""
        writing = self._writing
        if writing is not None:
            writing.result()

    def close(self) -> None:
        """The last save, synchronous, when the exporter stops."""
        self._writer.shutdown(wait=True)
        self._write(self._capture())

    def _write(self, state: SavedState) -> None:
        try:
            write(self._directory, state)
        except OSError as error:
            if not self._failed:
                log.warning("cannot save the state in %s: %s", self._directory,
                            error.strerror or error)
            self._failed = True
        else:
            if self._failed:
                log.info("saving the state in %s again", self._directory)
            self._failed = False


def counted_at_start(
    state: SavedState | None, targets: Sequence[str]
) -> dict[str, frozenset[ConnectionKey]]:
    """Per target, the drops the previous run had already counted."""
    if state is None:
        return {}
    return {name: state.counted.get(name, frozenset()) for name in targets}

"""Socket owners from /proc/*/fd: the real /proc for this process, a fake tree for the rest."""

from __future__ import annotations

import json
import os
import socket
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from exporter.deadline import Deadline
from exporter.model import Endpoint, TcpState
from exporter.sockets import owners as owners_module
from exporter.sockets.appname import application_name
from exporter.sockets.kernel import KernelSocket
from exporter.sockets.owners import (
    DEFAULT_NEGATIVE_TTL,
    Owner,
    OwnerMap,
    ProcessName,
    ProcessNames,
    parse_stat,
)
from exporter.sockets.reader import SocketReader
from tests.support.builders import soon


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    left, right = socket.socketpair()
    with left, right:
        yield left, right


def inode_of(sock: socket.socket | int) -> int:
    return os.fstat(sock if isinstance(sock, int) else sock.fileno()).st_ino


# This process's label and comm: pytest, or python3 running `-m pytest` (labelled pytest).
MY_NAME = ProcessName(
    application_name(psutil.Process().name(), psutil.Process().cmdline()), psutil.Process().name()
)


def test_resolves_this_process_sockets(pair: tuple[socket.socket, socket.socket]) -> None:
    left, right = pair
    owners = OwnerMap()
    found = owners.resolve({inode_of(left), inode_of(right), 0}, soon())
    assert found == {
        inode_of(left): Owner(os.getpid(), left.fileno(), *MY_NAME),
        inode_of(right): Owner(os.getpid(), right.fileno(), *MY_NAME),
    }
    assert owners.scans == 1


def test_known_inodes_are_confirmed_without_a_scan_and_unknown_ones_scan_once() -> None:
    clock = FakeClock()
    owners = OwnerMap(clock=clock)
    first, second = socket.socketpair()
    with first, second:
        a, b = inode_of(first), inode_of(second)
        assert set(owners.resolve({a}, soon())) == {a}
        assert owners.scans == 1
        for _ in range(3):
            assert set(owners.resolve({a}, soon())) == {a}
        assert owners.scans == 1
        assert set(owners.resolve({a, b}, soon())) == {a, b}
        assert owners.scans == 2
        # Sockets no process of ours holds (another pid namespace, say): one scan for
        # both, then they are left alone for a while.
        theirs = {4_000_000_001, 4_000_000_002}
        assert set(owners.resolve({a, *theirs}, soon())) == {a}
        assert owners.scans == 3
        clock.now += DEFAULT_NEGATIVE_TTL - 1
        assert set(owners.resolve({a, *theirs}, soon())) == {a}
        assert owners.scans == 3
        clock.now += 1
        assert set(owners.resolve({a, *theirs}, soon())) == {a}
        assert owners.scans == 4


def test_a_scan_stops_at_the_deadline_and_proves_nothing(tree: Path) -> None:
    owners = OwnerMap(str(tree))
    assert owners.resolve({555}, Deadline(0.0)) == {}  # a deadline already past
    assert owners.scans == 1 and owners.scans_cut_short == 1
    # Not taken for "no such owner": the next call scans again, and finds it.
    assert owners.resolve({555}, soon()) == {555: Owner(100, 3, "worker", "worker")}
    assert owners.scans == 2


def test_a_moved_descriptor_is_found_again(pair: tuple[socket.socket, socket.socket]) -> None:
    left, _ = pair
    owners = OwnerMap(recheck_every=1)  # every owner confirmed at every call
    inode = inode_of(left)
    before = owners.resolve({inode}, soon())[inode]
    moved = os.dup(left.fileno())
    try:
        left.close()
        after = owners.resolve({inode}, soon())[inode]
        assert after.fd == moved != before.fd
        assert owners.scans == 2
        assert owners.still_holds(after, inode)
        assert not owners.still_holds(before, inode)
    finally:
        os.close(moved)
    assert not owners.still_holds(after, inode)


def test_still_holds(pair: tuple[socket.socket, socket.socket]) -> None:
    left, right = pair
    owners = OwnerMap()
    inode = inode_of(left)
    owner = owners.resolve({inode}, soon())[inode]
    assert owners.still_holds(owner, inode)
    assert not owners.still_holds(owner, inode_of(right))
    assert not owners.still_holds(Owner(2**22 + 12345, owner.fd, "x", "x"), inode)
    left.close()
    assert not owners.still_holds(owner, inode)


def test_psutil_names_are_cached_per_process(
    pair: tuple[socket.socket, socket.socket], monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []
    real = psutil.Process

    def counting(pid: int) -> psutil.Process:
        calls.append(pid)
        return real(pid)

    monkeypatch.setattr(owners_module.psutil, "Process", counting)
    names = ProcessNames()
    assert names.name(os.getpid()) == MY_NAME
    assert names.name(os.getpid()) == MY_NAME
    assert calls == [os.getpid()]
    assert names.name(2**22 + 12345) == ("unknown", "unknown")


# --- a fake /proc tree -------------------------------------------------------------------


def fake_process(
    root: Path, pid: int, comm: str, start: int, fds: dict[str, str], cmdline: bytes = b""
) -> None:
    directory = root / str(pid)
    (directory / "fd").mkdir(parents=True, exist_ok=True)
    # Fields 3..24 of proc(5); the start time is field 22.
    fields = ["S", *["0"] * 18, str(start), "0", "0"]
    (directory / "stat").write_text(f"{pid} ({comm}) {' '.join(fields)}\n")
    (directory / "comm").write_text(comm + "\n")
    (directory / "cmdline").write_bytes(cmdline)
    for fd, target in fds.items():
        (directory / "fd" / fd).symlink_to(target)


def test_a_scan_streams_a_process_descriptors_instead_of_listing_them(tmp_path: Path) -> None:
    """Beside a process holding 5,000 descriptors, a scan holds one name at a time, not a
    list of all 5,000 (about 0.3 MiB, which the allocator then keeps: benchmarks/README.md,
    change 16). tracemalloc's peak is a count of bytes, not a timing."""
    fake_process(tmp_path, 100, "pool", 1, {str(fd): f"socket:[{10_000 + fd}]"
                                             for fd in range(5000)})
    fake_process(tmp_path, 200, "app", 1, {"3": "socket:[555]"})
    owners = OwnerMap(str(tmp_path))
    tracemalloc.start()
    try:
        found = owners.resolve({555}, soon())
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert found == {555: Owner(200, 3, "app", "app")}
    # A list of the 5,000 names alone would be about 300,000 bytes.
    assert peak < 100_000, peak


def test_stat_parsing_matches_psutil_and_the_fake_tree(tmp_path: Path) -> None:
    parsed = parse_stat((Path("/proc") / str(os.getpid()) / "stat").read_text())
    assert parsed is not None
    start_ticks, comm = parsed
    created = psutil.boot_time() + start_ticks / os.sysconf("SC_CLK_TCK")
    assert abs(created - psutil.Process().create_time()) < 0.05
    assert comm == Path("/proc/self/comm").read_text().strip()
    fake_process(tmp_path, 7, "a) b (c", 4242, {})
    assert parse_stat((tmp_path / "7" / "stat").read_text()) == (4242, "a) b (c")
    assert parse_stat("7 (x) S 1 2") is None
    assert parse_stat("") is None


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    fake_process(
        tmp_path,
        100,
        "worker",
        10,
        {"3": "socket:[555]", "4": "pipe:[9]", "5": "socket:[bad]", "x": "socket:[556]"},
    )
    fake_process(tmp_path, 101, "odd) (name", 11, {"0": "/dev/null", "9": "socket:[558]"})
    (tmp_path / "200").mkdir()  # a process that vanished: no fd directory
    (tmp_path / "300").mkdir()
    (tmp_path / "300" / "fd").write_text("not a directory")
    (tmp_path / "self").mkdir()
    (tmp_path / "self" / "fd").mkdir()
    (tmp_path / "self" / "fd" / "1").symlink_to("socket:[557]")  # not a pid: ignored
    return tmp_path


def test_fake_tree_resolution_skips_everything_odd(tree: Path) -> None:
    owners = OwnerMap(str(tree))
    assert owners.resolve({555, 556, 557, 558, 777, 0}, soon()) == {
        555: Owner(100, 3, "worker", "worker"),
        558: Owner(101, 9, "odd) (name", "odd) (name"),
    }
    assert owners.scans == 1


def test_shared_socket_goes_to_the_lowest_pid_and_the_scan_stops_early(
    tree: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_process(tree, 50000, "child", 20, {"8": "socket:[555]"})
    fake_process(tree, 9, "parent", 5, {"8": "socket:[555]"})
    opened: list[str] = []
    real_open = os.open

    def counting(path: str, *args: Any, **kwargs: Any) -> int:
        opened.append(str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(owners_module.os, "open", counting)
    assert OwnerMap(str(tree)).resolve({555}, soon()) == {555: Owner(9, 8, "parent", "parent")}
    assert opened == [f"{tree}/9/fd"]


def test_unreadable_processes_are_skipped(tree: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_open = os.open

    def guarded(path: str, *args: Any, **kwargs: Any) -> int:
        if str(path).startswith(f"{tree}/101/"):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(owners_module.os, "open", guarded)
    found = OwnerMap(str(tree)).resolve({555, 558}, soon())
    assert found == {555: Owner(100, 3, "worker", "worker")}


def test_a_reused_pid_gets_its_new_name(tree: Path) -> None:
    owners = OwnerMap(str(tree))
    assert owners.resolve({555}, soon())[555].process == "worker"
    fake_process(tree, 100, "impostor", 99, {})
    assert owners.resolve({555}, soon())[555].process == "impostor"
    fake_process(tree, 100, "renamed", 99, {})  # same process, prctl(PR_SET_NAME)
    assert owners.resolve({555}, soon())[555].process == "renamed"
    assert owners.scans == 1


def test_vanished_owner_is_dropped_and_stat_less_owner_is_unknown(tree: Path) -> None:
    owners = OwnerMap(str(tree))
    assert 555 in owners.resolve({555}, soon())
    (tree / "100" / "stat").unlink()
    assert owners.resolve({555}, soon()) == {555: Owner(100, 3, "unknown", "unknown")}
    (tree / "100" / "fd" / "3").unlink()
    assert owners.resolve({555}, soon()) == {}


def test_negative_results_expire_and_are_forgotten_when_not_asked(tree: Path) -> None:
    clock = FakeClock()
    owners = OwnerMap(str(tree), negative_ttl=5, clock=clock)
    assert owners.resolve({777}, soon()) == {}
    fake_process(tree, 400, "late", 40, {"6": "socket:[777]"})
    # Handed to a visible process after the scan: seen once the verdict expires.
    assert owners.resolve({777}, soon()) == {}
    assert owners.scans == 1
    clock.now += 5
    assert owners.resolve({777}, soon()) == {777: Owner(400, 6, "late", "late")}
    assert owners.scans == 2
    # Memory is only for what was last asked: an inode asked again after a pause is
    # looked up afresh, not taken from a stale entry.
    assert owners.resolve({888}, soon()) == {}
    assert owners.scans == 3
    assert owners.resolve(set(), soon()) == {}
    assert owners.resolve({888}, soon()) == {}
    assert owners.scans == 4


def test_other_users_processes_are_skipped_silently(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    """A real permission boundary: a child that became `nobody` cannot read our fds."""
    theirs = inode_of(pair[0])
    held = Owner(os.getpid(), pair[0].fileno(), *MY_NAME)
    reader, writer = os.pipe()
    child = os.fork()
    if child == 0:  # runs in the child, which reports through the pipe
        status = 1
        try:
            os.close(reader)
            for inherited in pair:  # the fork copied them: only the parent may hold them
                inherited.close()
            os.setgid(65534)
            os.setgroups([])
            os.setuid(65534)
            with socket.socket() as own:
                owners = OwnerMap()
                found = owners.resolve({theirs, inode_of(own)}, soon())
                report = {
                    "found": {str(inode): [o.pid, o.fd] for inode, o in found.items()},
                    "own": [inode_of(own), os.getpid(), own.fileno()],
                    "scans": owners.scans,
                    "still_holds": owners.still_holds(held, theirs),
                }
                os.write(writer, json.dumps(report).encode())
                status = 0
        finally:
            os._exit(status)
    os.close(writer)
    with os.fdopen(reader) as pipe:
        text = pipe.read()
    _, status = os.waitpid(child, 0)
    assert os.waitstatus_to_exitcode(status) == 0, text
    report = json.loads(text)
    own_inode, own_pid, own_fd = report["own"]
    assert report["found"] == {str(own_inode): [own_pid, own_fd]}
    assert report["scans"] == 1
    assert report["still_holds"] is False
    # The same question asked with our own rights does see it.
    assert OwnerMap().still_holds(held, theirs)


# --- trusting owners while the kernel still lists the socket (the reader's mode) ----------


def test_trusted_owners_are_confirmed_in_turns(tree: Path) -> None:
    owners = OwnerMap(str(tree), recheck_every=4)
    expected = {
        555: Owner(100, 3, "worker", "worker"),
        558: Owner(101, 9, "odd) (name", "odd) (name"),
    }
    assert owners.resolve({555, 558}, soon()) == expected
    assert (owners.scans, owners.confirmations) == (1, 0)
    for _ in range(4):
        assert owners.resolve({555, 558}, soon()) == expected
    # Each owner once in four calls, instead of each in every call.
    assert (owners.scans, owners.confirmations) == (1, 2)


def test_a_new_process_incarnation_is_confirmed_at_once(tree: Path) -> None:
    owners = OwnerMap(str(tree), recheck_every=1000)
    assert owners.resolve({555}, soon())[555].process == "worker"
    owners.resolve({555}, soon())
    before = owners.confirmations
    # pid 100 reused by another process that holds no such socket: not trusted.
    fake_process(tree, 100, "impostor", 99, {})
    (tree / "100" / "fd" / "3").unlink()
    assert owners.resolve({555}, soon()) == {}
    assert owners.confirmations == before + 1
    assert owners.scans == 2


def test_a_trusted_owner_that_renames_itself_is_renamed_at_once(tree: Path) -> None:
    owners = OwnerMap(str(tree), recheck_every=1000)
    assert owners.resolve({555, 558}, soon())[555].process == "worker"
    unchanged = owners.resolve({555, 558}, soon())[558]
    # prctl(PR_SET_NAME): same process (start time), new comm.
    (tree / "100" / "stat").write_text(
        (tree / "100" / "stat").read_text().replace("(worker)", "(renamed)"))
    found = owners.resolve({555, 558}, soon())
    assert found[555] == Owner(100, 3, "renamed", "renamed")
    assert found[558] is unchanged  # the other process's owner is handed out as it was
    assert owners.resolve({555}, soon())[555].process == "renamed"


def test_a_moved_descriptor_is_found_within_one_round_of_turns(tree: Path) -> None:
    owners = OwnerMap(str(tree), recheck_every=4)
    assert owners.resolve({555}, soon()) == {555: Owner(100, 3, "worker", "worker")}
    (tree / "100" / "fd" / "3").unlink()
    (tree / "100" / "fd" / "7").symlink_to("socket:[555]")  # dup2(3, 7); close(3)
    seen = [owners.resolve({555}, soon())[555].fd for _ in range(4)]
    assert seen[-1] == 7 and seen.count(3) <= 3
    assert owners.scans == 2


def test_the_reader_trusts_owners_but_still_sees_them_go(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    owners = OwnerMap(recheck_every=owners_module.READER_RECHECK_EVERY)
    inode = inode_of(pair[0])
    rows = [
        KernelSocket(Endpoint("10.0.0.1", 40000), Endpoint("10.0.0.2", 3306),
                     TcpState.ESTABLISHED, inode, os.getuid(), 1.0, False)
    ]
    tables = [rows] * 10 + [[], []]
    reader = SocketReader([3306], owners=owners, netlink_dump=lambda _, __: tables.pop(0))
    for _ in range(10):
        [found] = reader.read(soon()).sockets
        assert (found.pid, found.gone) == (os.getpid(), False)
    assert owners.confirmations <= 1
    # Left the kernel's table while we still hold it: reported gone (one readlink).
    [gone] = reader.read(soon()).sockets
    assert gone.gone and gone.inode == inode
    pair[0].close()
    assert reader.read(soon()).sockets == ()


# --- interpreters are named after what they run ------------------------------------------


def test_interpreters_are_named_after_their_program_and_keep_their_comm(tmp_path: Path) -> None:
    fake_process(tmp_path, 10, "python3", 1, {"3": "socket:[501]"},
                 b"python3\0/srv/shop/manage.py\0runserver\0")
    fake_process(tmp_path, 11, "python3", 1, {"3": "socket:[502]"},
                 b"/usr/bin/python3\0-m\0celery\0worker\0")
    fake_process(tmp_path, 12, "java", 1, {"3": "socket:[503]"},
                 b"java\0-Xmx64m\0-cp\0/usr/share/java/*\0com.example.Main\0")
    fake_process(tmp_path, 13, "node", 1, {"3": "socket:[504]"}, b"node\0api.js\0")
    fake_process(tmp_path, 14, "mariadb", 1, {"3": "socket:[505]"}, b"mariadb\0-h\0db\0")
    fake_process(tmp_path, 15, "python3", 1, {"3": "socket:[506]"}, b"")  # no command line
    assert OwnerMap(str(tmp_path)).resolve({501, 502, 503, 504, 505, 506}, soon()) == {
        501: Owner(10, 3, "shop/manage.py", "python3"),
        502: Owner(11, 3, "celery", "python3"),
        503: Owner(12, 3, "com.example.Main", "java"),
        504: Owner(13, 3, "api.js", "node"),
        505: Owner(14, 3, "mariadb", "mariadb"),
        506: Owner(15, 3, "python3", "python3"),
    }


def test_a_command_line_is_read_once_per_incarnation_and_only_for_interpreters(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reads: list[str] = []
    real = owners_module._read_cmdline

    def counting(path: str) -> list[str]:
        reads.append(path)
        return real(path)

    monkeypatch.setattr(owners_module, "_read_cmdline", counting)
    fake_process(tmp_path, 10, "python3", 1, {"3": "socket:[501]"}, b"python3\0a.py\0")
    fake_process(tmp_path, 11, "mariadb", 1, {"3": "socket:[502]"}, b"mariadb\0")
    for recheck_every in (1, 4):
        reads.clear()
        owners = OwnerMap(str(tmp_path), recheck_every=recheck_every)
        for _ in range(5):
            assert owners.resolve({501, 502}, soon())[501].process == "a.py"
        assert reads == [f"{tmp_path}/10/cmdline"]
    # The pid is reused by another interpreter: its command line is read anew.
    fake_process(tmp_path, 10, "python3", 2, {}, b"python3\0b.py\0")
    assert owners.resolve({501}, soon())[501].process == "b.py"
    # The process renames itself: its new name is the label, no command line is read.
    fake_process(tmp_path, 10, "nightly", 2, {}, b"python3\0b.py\0")
    assert owners.resolve({501}, soon())[501] == Owner(10, 3, "nightly", "nightly")
    assert len(reads) == 2


def test_a_command_line_cut_at_the_read_limit_loses_its_last_word(tmp_path: Path) -> None:
    huge = b"python3\0" + b"a" * owners_module.CMDLINE_LIMIT + b".py\0"
    fake_process(tmp_path, 10, "python3", 1, {"3": "socket:[501]"}, huge)
    fake_process(tmp_path, 11, "python3", 1, {"3": "socket:[502]"},
                 b"python3\0-W\0" + b"a" * (owners_module.CMDLINE_LIMIT - 14) + b"\0w.py\0")
    found = OwnerMap(str(tmp_path)).resolve({501, 502}, soon())
    assert found[501].process == "python3"  # not a label made of the cut word
    assert found[502].process == "python3"  # cut in w.py: not named "w."


def test_this_process_is_named_from_the_real_proc(pair: tuple[socket.socket, socket.socket]
                                                  ) -> None:
    owner = OwnerMap().resolve({inode_of(pair[0])}, soon())[inode_of(pair[0])]
    comm = Path("/proc/self/comm").read_text().strip()
    assert owner.comm == psutil.Process().name() and owner.comm.startswith(comm)
    argv = Path("/proc/self/cmdline").read_bytes().split(b"\0")[:-1]
    if comm.startswith("python"):  # run as `python -m pytest`
        assert owner.process == "pytest", argv
    else:  # run as the pytest script: the kernel named the process after it
        assert owner.process == owner.comm == "pytest", argv

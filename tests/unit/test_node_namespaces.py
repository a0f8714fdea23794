"""Finding the machine's network namespaces in a /proc tree (a fake one in tmp_path), and
keeping one channel per namespace: opened when it appears, closed when it is gone."""

from __future__ import annotations

import errno
import os
import socket
from pathlib import Path

import pytest

from exporter.node.namespaces import (
    Entered,
    NamespaceGone,
    Namespaces,
    discover,
    parse_ns_link,
)
from exporter.sockets.netlink import NetlinkError


def _process(root: Path, pid: int, netns: int | None) -> None:
    ns = root / str(pid) / "ns"
    ns.mkdir(parents=True)
    if netns is not None:
        os.symlink(f"net:[{netns}]", ns / "net")


@pytest.mark.parametrize(
    ("link", "inode"),
    [("net:[4026531840]", 4026531840), ("uts:[4026531838]", None), ("net:[]", None),
     ("garbage", None)],
)
def test_parse_ns_link(link: str, inode: int | None) -> None:
    assert parse_ns_link(link) == inode


def test_discovery_groups_processes_by_namespace_lowest_pid_first(tmp_path: Path) -> None:
    _process(tmp_path, 1, 100)
    _process(tmp_path, 42, 100)
    _process(tmp_path, 977, 200)
    _process(tmp_path, 312, 200)
    _process(tmp_path, 5, None)  # ended, or its links are not readable: skipped
    (tmp_path / "self").mkdir()  # not a pid
    (tmp_path / "net").mkdir()
    assert discover(str(tmp_path)) == {100: 1, 200: 312}


def test_discovery_of_a_missing_proc_is_empty(tmp_path: Path) -> None:
    assert discover(str(tmp_path / "absent")) == {}


class _FakeEnter:
    """Opens a real (unconnected) socket per entry, so that closing can be checked."""

    def __init__(self) -> None:
        self.entered: list[tuple[int, int]] = []
        self.sockets: dict[int, socket.socket] = {}
        self.refuse: OSError | None = None  # raised instead, once set

    def __call__(self, proc_root: str, pid: int, inode: int) -> Entered:
        if self.refuse is not None:
            raise self.refuse
        self.entered.append((pid, inode))
        channel = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sockets[inode] = channel
        return Entered(channel, f"pod-{inode}")


def test_a_namespace_is_entered_once_and_its_channel_closed_when_it_is_gone(
    tmp_path: Path,
) -> None:
    fake = _FakeEnter()
    namespaces = Namespaces(str(tmp_path), enter=fake)
    _process(tmp_path, 10, 100)
    _process(tmp_path, 20, 200)
    namespaces.refresh()
    namespaces.refresh()
    assert sorted(fake.entered) == [(10, 100), (20, 200)]
    assert namespaces.hostnames == {100: "pod-100", 200: "pod-200"}
    (tmp_path / "20" / "ns" / "net").unlink()  # its last process ended
    _process(tmp_path, 30, 300)
    namespaces.refresh()
    assert fake.sockets[200].fileno() == -1  # closed
    assert fake.sockets[100].fileno() != -1
    assert namespaces.hostnames == {100: "pod-100", 300: "pod-300"}
    namespaces.close()
    assert all(channel.fileno() == -1 for channel in fake.sockets.values())


def test_a_forgotten_namespace_is_entered_again_when_its_channel_is_asked_for(
    tmp_path: Path,
) -> None:
    # What a failed lookup leads to (exporter.node.reader): its socket is closed, and the
    # dump that follows at once needs one, before the next refresh.
    fake = _FakeEnter()
    namespaces = Namespaces(str(tmp_path), enter=fake)
    _process(tmp_path, 10, 100)
    namespaces.refresh()
    first = namespaces.channel(100)
    assert namespaces.pid(100) == 10 and namespaces.pid(200) is None
    namespaces.forget(100)
    assert first.fileno() == -1
    again = namespaces.channel(100)
    assert again is not first and again.fileno() != -1
    assert fake.entered == [(10, 100), (10, 100)]
    assert namespaces.channel(100) is again  # open: not entered a third time
    namespaces.close()


@pytest.mark.parametrize(
    ("error", "code"),
    [(NamespaceGone("process 10 ended"), errno.ENOENT),
     (PermissionError(errno.EPERM, "setns"), errno.EPERM)],
)
def test_a_namespace_that_cannot_be_entered_again_is_a_netlink_error(
    tmp_path: Path, error: OSError, code: int,
) -> None:
    fake = _FakeEnter()
    namespaces = Namespaces(str(tmp_path), enter=fake)
    _process(tmp_path, 10, 100)
    namespaces.refresh()
    namespaces.forget(100)
    fake.refuse = error
    with pytest.raises(NetlinkError, match="namespace 100") as raised:
        namespaces.channel(100)
    assert raised.value.errno == code
    with pytest.raises(NetlinkError, match="namespace 300 is gone") as gone:
        namespaces.channel(300)  # never seen by a refresh
    assert gone.value.errno == errno.ENOENT
    namespaces.close()

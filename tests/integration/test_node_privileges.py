"""The least privileges node mode needs, found by trying them: a "pod" (a network and UTS
namespace of its own) runs a process as another user (65532:65532, as distroless images
do), and a root process limited to a set of capabilities (its bounding set, so that no
exec can regain the others) tries what a node-mode read does: enter the pod's network
namespace through /proc/PID/ns/net, and read the pod process's /proc/PID/fd links (to find
which process holds a socket).

The table says each of CAP_SYS_ADMIN, CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH is needed,
and the three together are enough; the exporter checks them at start and exits 2 with one
line naming what is missing (exporter/node/privileges.py, docs/kubernetes.md).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator

import pytest

from tests.support.exporter_process import free_port
from tests.support.netns import NetnsError, NetnsPair

pytestmark = [pytest.mark.netns, pytest.mark.timeout(60)]

NEEDED = ("sys_admin", "sys_ptrace", "dac_read_search")
APP_UID = 65532

# What a node-mode read does to a pod's process, from a process with limited capabilities.
PROBE = """
import os, sys
from exporter.node.namespaces import enter
pid, inode = int(sys.argv[1]), int(sys.argv[2])
try:
    enter("/proc", pid, inode).channel.close()
    print("enter ok")
except OSError as error:
    print("enter", error.errno)
try:
    fds = os.listdir(f"/proc/{pid}/fd")
    [os.readlink(f"/proc/{pid}/fd/{fd}") for fd in fds]
    print("fds ok")
except OSError as error:
    print("fds", error.errno)
"""


def limited(caps: tuple[str, ...], argv: list[str]) -> list[str]:
    """argv as root with only ``caps`` (a bounding set of them: root's exec gets no more)."""
    bounding = ",".join(["-all", *(f"+{cap}" for cap in caps)])
    return ["setpriv", f"--bounding-set={bounding}", "--inh-caps=-all", *argv]


@pytest.fixture(scope="module")
def pod_process() -> Iterator[tuple[int, int]]:
    """A process of another user in its own network and UTS namespaces: (pid, netns inode)."""
    try:
        pair = NetnsPair().__enter__()
    except NetnsError as error:
        pytest.fail(f"cannot build a test network namespace ({error})", pytrace=False)
    try:
        process = pair.run_in(pair.client_ns, [
            "unshare", "--uts", "--", "setpriv", f"--reuid={APP_UID}", f"--regid={APP_UID}",
            "--clear-groups", sys.executable, "-c",
            "import socket, sys; s = socket.socket(); print('ready', flush=True); "
            "sys.stdin.read()"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert process.stdout is not None and process.stdout.readline().strip() == "ready"
        yield process.pid, os.stat(f"/proc/{process.pid}/ns/net").st_ino
    finally:
        pair.close()


@pytest.mark.parametrize(
    ("caps", "expected"),
    [
        (NEEDED, ["enter ok", "fds ok"]),
        # setns into another namespace: EPERM
        (("sys_ptrace", "dac_read_search"), ["enter 1", "fds ok"]),
        # opening another user's ns file needs ptrace access: EACCES; so do its fd links
        (("sys_admin", "dac_read_search"), ["enter 13", "fds 13"]),
        # /proc/PID/fd is mode 0500: another user's cannot be listed
        (("sys_admin", "sys_ptrace"), ["enter ok", "fds 13"]),
        ((), ["enter 13", "fds 13"]),
    ],
    ids=["all-three", "no-sys_admin", "no-sys_ptrace", "no-dac_read_search", "none"],
)
def test_each_capability_is_needed_and_the_three_are_enough(
        pod_process: tuple[int, int], caps: tuple[str, ...], expected: list[str]) -> None:
    pid, inode = pod_process
    result = subprocess.run(limited(caps, [sys.executable, "-c", PROBE, str(pid), str(inode)]),
                            capture_output=True, text=True, timeout=30)
    assert result.stdout.split("\n")[:2] == expected, result.stderr


@pytest.mark.parametrize("dropped", NEEDED)
def test_node_mode_without_one_of_them_exits_2_with_one_line_naming_it(dropped: str) -> None:
    caps = tuple(cap for cap in NEEDED if cap != dropped)
    result = subprocess.run(
        limited(caps, [sys.executable, "-m", "exporter", "--mode=node",
                       f"--web.listen-address=127.0.0.1:{free_port()}"]),
        capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert f"lacks CAP_{dropped.upper()}" in lines[0]

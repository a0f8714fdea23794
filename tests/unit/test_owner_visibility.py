"""What the exporter says about sockets whose owner it cannot read: the kernel's rules for
/proc/PID/fd (real processes with real credentials, through setpriv), the reason the reader
gives per socket, the one log line per reason, and the metric.

The host-level cases mirror the pod matrix of tests/containers/test_pod.py in about 2 s.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from exporter.collector import SnapshotCollector
from exporter.deadline import Deadline
from exporter.engine import Engine
from exporter.model import Endpoint, Settings, Snapshot, TcpState
from exporter.planner import ReadPolicy
from exporter.sockets import owners as owners_module
from exporter.sockets.kernel import KernelSocket
from exporter.sockets.owners import OwnerMap
from exporter.sockets.reader import SocketReader, SocketReading
from tests.support.builders import soon

REPO = Path(__file__).resolve().parents[2]
HOLDER = (
    "import os, socket, sys\n"
    "s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen()\n"
    "print(os.fstat(s.fileno()).st_ino, flush=True); sys.stdin.readline()\n"
)
SCANNER = (
    "import json, sys\n"
    "from exporter.sockets.owners import OwnerMap\n"
    "owners = OwnerMap()\n"
    "from exporter.deadline import Deadline\n"
    "found = owners.resolve({int(sys.argv[1])}, Deadline.after(30))\n"
    "print(json.dumps({'found': bool(found), 'denied': sorted(owners.denied_uids)}))\n"
)
AS_65532 = ["--reuid", "65532", "--regid", "65532", "--clear-groups"]
ROOT_WITH = ["--reuid", "0", "--regid", "0", "--clear-groups", "--inh-caps=-all"]


def _setpriv(args: list[str], code: str, *extra: str) -> list[str]:
    return ["setpriv", *args, "--", sys.executable, "-c", code, *extra]


@pytest.fixture
def holder(request: pytest.FixtureRequest) -> Iterator[int]:
    """The inode of a socket held by a process running as the parametrised uid:gid."""
    uid, gid = request.param
    process = subprocess.Popen(
        _setpriv(["--reuid", str(uid), "--regid", str(gid), "--clear-groups"], HOLDER),
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=REPO,
    )
    assert process.stdout is not None and process.stdin is not None
    try:
        yield int(process.stdout.readline())
    finally:
        process.stdin.close()
        process.wait(timeout=10)


# (holder uid:gid, how the scanner runs, whether it finds the owner). As Kubernetes runs a
# sidecar, plus a non-root process with ambient capabilities (systemd's AmbientCapabilities=;
# Kubernetes never sets ambient capabilities, so no Kubernetes sidecar gets this).
CASES = {
    "different-uid": ((1000, 1000), AS_65532, False),
    "same-uid-other-gid": ((65532, 0), AS_65532, False),
    "same-uid-and-gid": ((65532, 65532), AS_65532, True),
    "root-sys-ptrace": ((65532, 65532), [*ROOT_WITH, "--bounding-set=-all,+sys_ptrace"], False),
    "root-sys-ptrace-dac-read-search": (
        (65532, 65532), [*ROOT_WITH, "--bounding-set=-all,+sys_ptrace,+dac_read_search"], True),
    "non-root-ambient-capabilities": (
        (1000, 1000),
        [*AS_65532, "--inh-caps=+sys_ptrace,+dac_read_search",
         "--ambient-caps=+sys_ptrace,+dac_read_search"],
        True,
    ),
}


@pytest.mark.parametrize(
    ("holder", "scanner", "found"),
    [pytest.param(*case, id=name) for name, case in CASES.items()],
    indirect=["holder"],
)
def test_whose_fds_a_scan_may_read(holder: int, scanner: list[str], found: bool,
                                   request: pytest.FixtureRequest) -> None:
    result = subprocess.run(_setpriv(scanner, SCANNER, str(holder)), capture_output=True,
                            text=True, timeout=30, cwd=REPO)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["found"] is found
    holder_uid = request.node.callspec.params["holder"][0]
    # Refused: the scan remembers the uid of the process that refused it.
    assert (holder_uid in report["denied"]) is (not found)


def _row(inode: int, uid: int, port: int = 40000) -> KernelSocket:
    return KernelSocket(Endpoint("10.0.0.1", port), Endpoint("10.0.0.2", 3306),
                        TcpState.ESTABLISHED, inode, uid, 1.0, False)


def _fake_process(root: Path, pid: int, uid: int, links: dict[str, str]) -> None:
    (root / str(pid) / "fd").mkdir(parents=True)
    (root / str(pid) / "stat").write_text(
        f"{pid} (app) S " + " ".join(["0"] * 16) + " 100 0 0\n")
    for fd, target in links.items():
        (root / str(pid) / "fd" / fd).symlink_to(target)
    os.chown(root / str(pid), uid, uid)


def test_the_reader_says_why_sockets_have_no_owner_and_logs_it_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    _fake_process(tmp_path, 100, 1000, {"3": "socket:[555]"})
    _fake_process(tmp_path, 101, 4242, {"3": "socket:[556]"})
    real_open = os.open

    def refusing(path: str, *args: object, **kwargs: object) -> int:
        if str(path).startswith(f"{tmp_path}/101/"):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(owners_module.os, "open", refusing)
    rows = [
        _row(555, 1000, 40000),  # found: process 100
        _row(556, 4242, 40001),  # held by 101, which refuses: no_permission
        _row(557, 4242, 40002),  # uid 4242 too: most likely 101's as well
        _row(777, 3000, 40003),  # no process of uid 3000 here: not_visible
        _row(0, 3000, 40004),  # an orphan: no owner to find, not counted
    ]
    reader = SocketReader([3306], owners=OwnerMap(str(tmp_path)), proc_root=str(tmp_path),
                          netlink_dump=lambda _, __: list(rows))
    with caplog.at_level(logging.WARNING, logger="exporter.sockets.reader"):
        first = reader.read(soon())
        second = reader.read(soon())
    assert first.without_owner == {"no_permission": 2, "not_visible": 1}
    assert second.without_owner == first.without_owner
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2, messages  # one per reason, not one per read
    [denied] = [m for m in messages if m.startswith("cannot read which process holds 2")]
    assert "socket uid 4242" in denied and "uid AND gid" in denied
    assert "CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH" in denied
    [invisible] = [m for m in messages if m.startswith("cannot find the process that holds 1")]
    assert "socket uid 3000" in invisible and "shareProcessNamespace: true" in invisible


def test_every_socket_with_an_owner_says_nothing(caplog: pytest.LogCaptureFixture) -> None:
    reader = SocketReader([3306], netlink_dump=lambda _, __: [])
    with caplog.at_level(logging.WARNING, logger="exporter.sockets.reader"):
        assert reader.read(soon()).without_owner == {"no_permission": 0, "not_visible": 0}
    assert not caplog.records


def _rendered(snapshot: Snapshot) -> str:
    registry = CollectorRegistry()
    registry.register(SnapshotCollector(snapshot))
    return generate_latest(registry).decode()


def test_the_metric_has_both_reasons_always() -> None:
    text = _rendered(Snapshot(reports=(), sockets_without_owner={"not_visible": 3}))
    assert 'mysql_idle_sockets_without_owner{reason="no_permission"} 0.0' in text
    assert 'mysql_idle_sockets_without_owner{reason="not_visible"} 3.0' in text
    quiet = _rendered(Snapshot(reports=()))
    assert 'mysql_idle_sockets_without_owner{reason="no_permission"} 0.0' in quiet
    assert 'mysql_idle_sockets_without_owner{reason="not_visible"} 0.0' in quiet


class _Sockets:
    def read(self, deadline: Deadline) -> SocketReading:
        return SocketReading(sockets=(), source="netlink", durations={},
                             without_owner={"no_permission": 2, "not_visible": 0})


def test_the_engine_hands_the_count_to_the_snapshot() -> None:
    engine = Engine([], _Sockets(), ReadPolicy(settings=Settings(risk_headroom=60)))
    try:
        snapshot = asyncio.run(engine.collect(soon()))
    finally:
        engine.close()
    assert snapshot.sockets_without_owner == {"no_permission": 2, "not_visible": 0}
    assert snapshot.only("db:3306").sockets_without_owner == snapshot.sockets_without_owner

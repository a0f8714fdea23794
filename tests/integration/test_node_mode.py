"""Node mode on real network namespaces: one exporter watches several "pods".

A NetnsStar (tests/support/netns.py): one MariaDB in the server namespace, three client
namespaces around it, each a pod: its own network namespace, a worker in its own UTS
namespace with the pod's host name, holding connections to the server. One exporter with
--mode=node, in the server namespace, sees every pod through /proc (as a DaemonSet with
hostPID does) and:

- runs as root with only CAP_SYS_ADMIN, CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH, and
  attributes each socket to its pod (the host name its processes see) and process, pod-b's
  worker running as another user (65532:65532);
- reports the seed story (a session the server resets on its wait_timeout, still held:
  the RST form of dropped, counted once) in one pod without touching the others' figures;
- picks up a namespace that appears between scrapes and forgets one that empties, closing
  its netlink socket (no file descriptor left behind);
- labels the sockets of real containers (podman, runc, cgroupfs: /libpod_parent/libpod-ID)
  with their container's short ID, beside their pod's host name.
"""

from __future__ import annotations

import functools
import os
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.support.containers import ContainerWorker, Podman, engine, host_rootfs
from tests.support.exporter_process import Metrics
from tests.support.netns import (
    NetnsError,
    NetnsStar,
    NsExporterProcess,
    NsWorker,
    server_in_namespace,
)
from tests.support.scrapes import PASSWORD_ENV, create_users, wait_for
from tests.support.servers import TestServer, server_class
from tests.support.waiting import until

pytestmark = [pytest.mark.netns, pytest.mark.mariadb, pytest.mark.timeout(120),
              pytest.mark.usefixtures("_stops")]

PODS = ("pod-a", "pod-b", "pod-c")
WAIT_TIMEOUT = 60
APP_UID = 65532
NODE_CAPS = "+sys_admin,+sys_ptrace,+dac_read_search"


@dataclass
class Node:
    star: NetnsStar
    db: TestServer
    password: str
    cleanups: list[Callable[[], object]] = field(default_factory=list)

    @property
    def target(self) -> str:
        return f"{self.star.db_addr}:{self.db.port}"

    def pod_worker(self, index: int, name: str, connections: int) -> NsWorker:
        """A worker in pod ``index``; pod-b's runs as another user, as distroless images do."""
        worker = NsWorker(self.star.legs[index], name, self.star.db_addr, self.db.port, "app",
                          self.password, connections, pod=PODS[index],
                          uid=APP_UID if index == 1 else None)
        self.cleanups.append(worker.close)
        return worker

    def node_exporter(self, *extra: str) -> NsExporterProcess:
        """The exporter in the server namespace, with the host's /proc."""
        exporter = NsExporterProcess(
            self.star.legs[0],
            [f"--mysql.address={self.target}", "--mysql.user=exporter", "--mode=node",
             "--server.interval=1s", "--risk.headroom=1s", *extra],
            env={PASSWORD_ENV: self.password}, ns=self.star.server_ns)
        # Root with only the capabilities node mode needs (tests/integration/
        # test_node_privileges.py): after `ip netns exec NS`, setpriv limits what is exec'd.
        exporter.args[4:4] = ["setpriv", f"--bounding-set=-all,{NODE_CAPS}", "--inh-caps=-all"]
        exporter.start()
        self.cleanups.append(exporter.stop)
        return exporter


def _node(flavor: str) -> Iterator[Node]:
    try:
        star = NetnsStar(clients=len(PODS)).__enter__()
    except NetnsError as error:
        pytest.fail(f"cannot build the test network namespaces ({error}); node mode's tests "
                    "need root and iproute2's `ip netns`", pytrace=False)
    db = server_in_namespace(server_class(flavor), star, [f"--wait-timeout={WAIT_TIMEOUT}"])
    node = Node(star, db, secrets.token_hex(8))
    try:
        db.start()
        create_users(db, node.password)
        yield node
    finally:
        while node.cleanups:
            node.cleanups.pop()()
        db.cleanup()
        star.close()


@pytest.fixture(scope="module")
def node() -> Iterator[Node]:
    """Three pods around a MariaDB (which resets a session on wait_timeout)."""
    yield from _node("mariadb")


@pytest.fixture(scope="module")
def mysql_node() -> Iterator[Node]:
    """Three pods around a MySQL 9.7 (which ends a session on wait_timeout with a FIN)."""
    yield from _node("mysql")


@pytest.fixture(scope="module")
def podman(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Podman]:
    with engine(tmp_path_factory.mktemp("podman")) as checked:
        yield checked


@pytest.fixture
def _stops(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    for name in ("node", "mysql_node"):
        if name in request.fixturenames:
            started: Node = request.getfixturevalue(name)
            while started.cleanups:
                started.cleanups.pop()()


def by_pod(metrics: Metrics, target: str, process: str | None = None
           ) -> dict[str, dict[str, float]]:
    """Non-zero session counts by pod, then state."""
    pods: dict[str, dict[str, float]] = {}
    for labels, value in metrics.find("mysql_idle_sessions", target=target):
        if value and (process is None or labels["process"] == process):
            pods.setdefault(labels["pod"], {})[labels["state"]] = value
    return pods


# The shared polling helper, at this module's pace and patience.
scrape_until = functools.partial(wait_for, timeout=20.0, interval=0.2)


def status_field(pid: int, name: str) -> str:
    with open(f"/proc/{pid}/status") as status:
        return next(line.split(":", 1)[1].strip() for line in status
                    if line.startswith(name + ":"))


def socket_inodes(pid: int) -> set[int]:
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
        except FileNotFoundError:
            continue
        if link.startswith("socket:["):
            inodes.add(int(link[len("socket:["):-1]))
    return inodes


def held_in(node: Node, index: int, pid: int) -> int:
    """How many sockets process ``pid`` holds that live in pod ``index``'s namespace
    (every netlink socket of a namespace is listed in its /proc/net/netlink)."""
    listing = node.star.exec_in(node.star.legs[index].client_ns, ["cat", "/proc/self/net/netlink"])
    inodes = {int(line.split()[-1]) for line in listing.splitlines()[1:] if line.strip()}
    return len(inodes & socket_inodes(pid))


def test_one_exporter_attributes_every_socket_to_its_pod_and_process_and_the_seed_story_stays_in_its_pod(  # noqa: E501
        node: Node) -> None:
    target = node.target
    workers = [node.pod_worker(i, f"app-{i}", n) for i, n in enumerate((1, 2, 3))]
    exporter = node.node_exporter()
    assert exporter.process is not None
    assert status_field(workers[1].pid, "Uid").split()[0] == str(APP_UID)
    assert int(status_field(exporter.process.pid, "CapEff"), 16) == (1 << 21) | (1 << 19) | (
        1 << 2)  # CAP_SYS_ADMIN, CAP_SYS_PTRACE, CAP_DAC_READ_SEARCH, nothing else
    metrics = scrape_until(
        exporter,
        lambda m: by_pod(m, target) == {"pod-a": {"idle": 1}, "pod-b": {"idle": 2},
                                        "pod-c": {"idle": 3}},
        "every pod's sessions idle, attributed to it")
    for i, pod in enumerate(PODS):
        assert by_pod(metrics, target, f"app-{i}") == {pod: {"idle": i + 1}}
        info = metrics.find("mysql_idle_place_info", pod=pod)
        assert [labels["container"] for labels, _ in info] == [""], info  # no container
    assert metrics.get("mysql_idle_up", target=target) == 1

    # The seed story in pod-a: its session's own wait_timeout runs out and MariaDB resets
    # it; the worker still holds the socket.
    assert workers[0].send("sql 0 SET SESSION wait_timeout=2") == "ok 0"
    metrics = scrape_until(
        exporter,
        lambda m: by_pod(m, target).get("pod-a") == {"dropped": 1},
        "pod-a's reset session dropped", timeout=30)
    assert by_pod(metrics, target) == {"pod-a": {"dropped": 1}, "pod-b": {"idle": 2},
                                       "pod-c": {"idle": 3}}
    drops = {labels["pod"]: value for labels, value in
             metrics.find("mysql_idle_sessions_dropped_total", target=target)}
    assert drops == {"pod-a": 1, "pod-b": 0, "pod-c": 0}
    assert workers[0].send("query 0").startswith("error 0")  # the application's surprise
    # The status page and its JSON render a node-mode collection too.
    for path in ("/", "/status.json"):
        status, body = exporter.get(path)
        assert status == 200 and "app-0" in body, (path, body[:300])


def test_a_reset_while_the_node_exporter_was_down_is_dropped_in_its_pod_after_a_restart(
        node: Node, tmp_path: Path) -> None:
    target = node.target
    worker = node.pod_worker(0, "app-0", 1)
    node.pod_worker(2, "app-2", 1)
    exporter = node.node_exporter(f"--state.dir={tmp_path}")
    scrape_until(exporter, lambda m: by_pod(m, target) == {"pod-a": {"idle": 1},
                                                           "pod-c": {"idle": 1}},
                 "both pods' sessions idle")
    assert worker.send("sql 0 SET SESSION wait_timeout=2") == "ok 0"
    exporter.stop()  # SIGTERM: what it knows is saved as it stops
    leg = node.star.legs[0]
    until(lambda: not node.star.tcp_states(leg.client_ns, node.db.port),
          "MariaDB to reset pod-a's session (its socket leaves the table)", timeout=15)
    restarted = node.node_exporter(f"--state.dir={tmp_path}")
    metrics = scrape_until(restarted, lambda m: by_pod(m, target).get("pod-a") == {
        "dropped": 1}, "the reset socket dropped in pod-a after the restart")
    assert by_pod(metrics, target) == {"pod-a": {"dropped": 1}, "pod-c": {"idle": 1}}
    drops = {labels["pod"]: value for labels, value in
             metrics.find("mysql_idle_sessions_dropped_total", target=target)}
    assert drops == {"pod-a": 1, "pod-c": 0}


def test_a_namespace_that_appears_or_empties_is_picked_up_or_forgotten_without_leaking_fds(
        node: Node) -> None:
    target = node.target
    first = node.pod_worker(0, "app-0", 1)
    exporter = node.node_exporter()
    assert exporter.process is not None
    pid = exporter.process.pid
    scrape_until(exporter, lambda m: set(by_pod(m, target)) == {"pod-a"}, "pod-a seen")
    assert held_in(node, 1, pid) == 0
    for round_ in range(2):
        late = node.pod_worker(1, "app-1", 2)
        scrape_until(exporter, lambda m: by_pod(m, target).get("pod-b") == {"idle": 2},
                     f"pod-b picked up (round {round_})")
        assert held_in(node, 1, pid) == 1  # the netlink socket opened in its namespace
        late.close()
        scrape_until(exporter, lambda m: "pod-b" not in by_pod(m, target),
                     f"pod-b forgotten (round {round_})")
        assert held_in(node, 1, pid) == 0  # closed: the namespace can go
        assert held_in(node, 0, pid) == 1  # pod-a's is kept
    assert by_pod(exporter.scrape(), target) == {"pod-a": {"idle": 1}}
    first.close()


def test_real_containers_are_labelled_with_their_container_and_pod(
        node: Node, podman: Podman, tmp_path: Path) -> None:
    target, star = node.target, node.star
    rootfs = host_rootfs(tmp_path / "rootfs")
    containers = []
    for index, connections in ((0, 1), (2, 2)):
        worker = ContainerWorker(
            podman, rootfs, f"/run/netns/{star.legs[index].client_ns}", PODS[index],
            f"app-{index}", star.db_addr, node.db.port, "app", node.password, connections)
        node.cleanups.append(worker.close)
        containers.append(worker)
    exporter = node.node_exporter()
    metrics = scrape_until(
        exporter, lambda m: by_pod(m, target) == {"pod-a": {"idle": 1}, "pod-c": {"idle": 2}},
        "both containers' sessions idle in their pods")
    for index, worker in zip((0, 2), containers, strict=True):
        short = worker.container_id[:12]
        assert metrics.get("mysql_idle_sessions", target=target, state="idle",
                           process=f"app-{index}", pod=PODS[index], container=short) == (
            index // 2 + 1)
        assert metrics.get("mysql_idle_place_info", pod=PODS[index], container=short,
                           pod_uid="", runtime="podman") == 1


@pytest.mark.mysql
def test_on_mysql_the_seed_story_is_the_close_wait_form_in_its_pod(mysql_node: Node) -> None:
    node, target = mysql_node, mysql_node.target
    workers = [node.pod_worker(i, f"app-{i}", 1) for i in range(2)]
    exporter = node.node_exporter()
    scrape_until(exporter, lambda m: by_pod(m, target) == {"pod-a": {"idle": 1},
                                                           "pod-b": {"idle": 1}},
                 "both pods' sessions idle")
    assert workers[0].send("sql 0 SET SESSION wait_timeout=2") == "ok 0"
    metrics = scrape_until(
        exporter, lambda m: by_pod(m, target).get("pod-a") == {"dropped": 1},
        "pod-a's session ended by the server, its socket in CLOSE_WAIT", timeout=30)
    assert by_pod(metrics, target) == {"pod-a": {"dropped": 1}, "pod-b": {"idle": 1}}
    assert node.star.tcp_states(node.star.legs[0].client_ns, node.db.port) == {
        workers[0].ports[0]: "CLOSE-WAIT"}
    drops = {labels["pod"]: value for labels, value in
             metrics.find("mysql_idle_sessions_dropped_total", target=target)}
    assert drops == {"pod-a": 1, "pod-b": 0}

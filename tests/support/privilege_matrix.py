"""The privilege matrix: what a sidecar exporter sees of the application's sockets under each
security setting, measured in real pods that the chart renders.

Each case is chart values (the exporter's and the application's securityContext, and
shareProcessNamespace). `run_matrix` plays every case's pod at once (each with its own
MariaDB inside the pod, `wait_timeout` WAIT_TIMEOUT seconds), scrapes each exporter until its
application's idle session has been dropped by the server, and returns what each one showed.
`matrix_table` renders the observations as the Markdown table of docs/kubernetes.md.

Kubernetes semantics, not podman's: before anything is measured, each exporter's uid, gid
and effective capabilities are checked against what a kubelet grants for its rendered
securityContext (`pods.kubernetes_grants`). Where podman grants more (added capabilities of
a non-root container), the case runs the exporter through setpriv to drop them first.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support.containers import BuiltImage, Podman
from tests.support.exporter_process import Metrics
from tests.support.pods import (
    Credentials,
    PlayedPod,
    PodMariaDB,
    for_podman,
    kubernetes_grants,
    render_chart,
    without_ambient_capabilities,
)

WAIT_TIMEOUT = 10  # the server's wait_timeout: the application's session dies after it
HEADROOM = 4  # --risk.headroom
TARGET = "127.0.0.1:3306"
APP = "app"
EXPORTER = "mysql-idle-exporter"
APP_PROCESS = "shop-worker"  # tests/support/pod_app.py names itself so
APP_SCRIPT = Path(__file__).with_name("pod_app.py")
NO_PERMISSION_LOG = "cannot read which process holds"
NOT_VISIBLE_LOG = "cannot find the process that holds"
DOC_START = "<!-- privilege-matrix:start (written by tests/containers/test_pod.py) -->"
DOC_END = "<!-- privilege-matrix:end -->"

NON_ROOT = {"runAsUser": 65532, "runAsGroup": 65532}
ROOT = {"runAsNonRoot": False, "runAsUser": 0, "runAsGroup": 0}


@dataclass(frozen=True)
class Case:
    id: str
    title: str
    exporter_label: str  # how the exporter runs, as the table says it
    app_label: str
    exporter: Mapping[str, Any]  # exporter.securityContext values (over the chart's defaults)
    app: Mapping[str, Any]  # sidecar.app.securityContext values
    share_process_namespace: bool = True
    # What Kubernetes would do; the test expects it: owners readable, else the reason.
    owners_visible: bool = False
    reason: str | None = None


CASES = (
    Case("different-uid", "different uid", "65532:65532", "1000:1000", NON_ROOT,
         {"runAsUser": 1000, "runAsGroup": 1000}, reason="no_permission"),
    Case("same-uid-other-gid", "same uid, different gid", "65532:65532", "65532:0", NON_ROOT,
         {"runAsUser": 65532, "runAsGroup": 0}, reason="no_permission"),
    Case("same-uid-and-gid", "same uid and gid (the chart's default)", "65532:65532",
         "65532:65532", NON_ROOT, NON_ROOT, owners_visible=True),
    Case("root-sys-ptrace", "root, SYS_PTRACE only", "0:0, `add: [SYS_PTRACE]`", "65532:65532",
         {**ROOT, "capabilities": {"add": ["SYS_PTRACE"]}}, NON_ROOT, reason="no_permission"),
    Case("root-sys-ptrace-dac-read-search", "root, SYS_PTRACE and DAC_READ_SEARCH",
         "0:0, `add: [SYS_PTRACE, DAC_READ_SEARCH]`",
         "65532:65532",
         {**ROOT, "capabilities": {"add": ["SYS_PTRACE", "DAC_READ_SEARCH"]}}, NON_ROOT,
         owners_visible=True),
    Case("non-root-with-capabilities", "non-root with added capabilities",
         "65532:65532, `add: [SYS_PTRACE, DAC_READ_SEARCH]`",
         "1000:1000",
         {**NON_ROOT, "capabilities": {"add": ["SYS_PTRACE", "DAC_READ_SEARCH"]}},
         {"runAsUser": 1000, "runAsGroup": 1000}, reason="no_permission"),
    Case("no-shared-pid-namespace", "no `shareProcessNamespace`", "65532:65532",
         "65532:65532", NON_ROOT, NON_ROOT, share_process_namespace=False,
         reason="not_visible"),
)


def chart_values(case: Case, image: BuiltImage, password: str) -> dict[str, Any]:
    """The sidecar example's values for one case: this run's image for both containers, the
    application replaced by tests/support/pod_app.py, the database at 127.0.0.1:3306."""
    repository, _, tag = image.tag.rpartition(":")
    registry, _, name = repository.partition("/")
    return {
        "mode": "sidecar",
        "image": {"registry": registry, "repository": name, "tag": tag, "pullPolicy": "Never"},
        "mysql": {"addresses": [TARGET], "user": "exporter"},
        "auth": {"password": password},
        "exporter": {
            "riskHeadroom": HEADROOM,
            "serverInterval": 2,
            "securityContext": dict(case.exporter),
        },
        "sidecar": {
            "shareProcessNamespace": case.share_process_namespace,
            "app": {
                "image": {"repository": repository, "tag": tag, "pullPolicy": "Never"},
                "command": ["/opt/venv/bin/python", "-c", APP_SCRIPT.read_text()],
                "stdin": False,
                "env": [
                    {"name": "DB_HOST", "value": "127.0.0.1"},
                    {"name": "DB_PORT", "value": "3306"},
                    {"name": "DB_USER", "value": "app"},
                    {"name": "MYSQL_PWD", "valueFrom": {"secretKeyRef": {
                        "name": '{{ include "mysql-idle-exporter.secretName" . }}',
                        "key": "password"}}},
                ],
                "securityContext": dict(case.app),
            },
        },
    }


@dataclass
class Sample:
    seconds: float  # since the pod's database started
    metrics: Metrics

    def target(self, name: str, **labels: str) -> list[tuple[dict[str, str], float]]:
        return self.metrics.find(name, target=TARGET, **labels)

    def states(self) -> dict[str, float]:
        found: dict[str, float] = {}
        for labels, value in self.target("mysql_idle_sessions"):
            found[labels["state"]] = found.get(labels["state"], 0.0) + value
        return found

    def state(self) -> str | None:
        """The one state with a socket in it (the pod has one application connection)."""
        return next((state for state, count in self.states().items() if count), None)

    def dropped_total(self) -> float:
        return sum(v for _, v in self.target("mysql_idle_sessions_dropped_total"))

    def without_owner(self) -> dict[str, float]:
        return {labels["reason"]: value
                for labels, value in self.metrics.find("mysql_idle_sockets_without_owner")}


@dataclass
class Observation:
    """What one case's exporter showed, from its first scrape to the drop."""

    case: Case
    exporter: Credentials
    app: Credentials
    expected_exporter: tuple[int, int, int]  # kubernetes_grants: uid, gid, capabilities
    samples: list[Sample] = field(default_factory=list)
    log: str = ""

    def seen(self, check: Callable[[Sample], bool]) -> bool:
        return any(check(sample) for sample in self.samples)

    # --- the table's columns --------------------------------------------------------------

    @property
    def sockets(self) -> bool:
        return self.seen(lambda s: sum(s.states().values()) >= 1)

    @property
    def states(self) -> bool:
        seen = {s.state() for s in self.samples}
        return {"idle", "at_risk"} <= seen

    @property
    def idle_time(self) -> bool:
        return self.seen(lambda s: any(
            v > 0 for _, v in s.target("mysql_idle_client_idle_seconds_sum")))

    @property
    def process_names(self) -> bool:
        return self.seen(lambda s: bool(s.target("mysql_idle_sessions", process=APP_PROCESS)))

    @property
    def pids(self) -> bool:
        pid = str(self.app.ns_pid)
        return self.seen(lambda s: bool(s.target("mysql_idle_session_headroom_seconds",
                                                 process=APP_PROCESS, pid=pid)))

    @property
    def rst_dropped(self) -> bool:
        return self.seen(lambda s: s.states().get("dropped", 0) >= 1)

    @property
    def drop_counted(self) -> bool:
        return bool(self.samples) and self.samples[-1].dropped_total() == 1

    @property
    def reasons(self) -> set[str]:
        return {reason for s in self.samples for reason, v in s.without_owner().items() if v}

    @property
    def log_lines(self) -> list[str]:
        return [line for line in self.log.splitlines()
                if NO_PERMISSION_LOG in line or NOT_VISIBLE_LOG in line]

    def done(self, elapsed: float) -> bool:
        """The drop has happened and been counted (RST form: seen as dropped too, where
        owners are visible), and a couple of scrapes since show it stays counted once."""
        if elapsed < WAIT_TIMEOUT or not self.drop_counted:
            return False
        after = [s for s in self.samples if s.dropped_total() == 1]
        if self.case.owners_visible and not self.rst_dropped:
            return False
        return len(after) >= 3


def _yes(flag: bool) -> str:
    return "yes" if flag else "**no**"


def _says(observation: Observation) -> str:
    counts = {r: max(s.without_owner().get(r, 0) for s in observation.samples)
              for r in sorted(observation.reasons)}
    said = ", ".join(f"`{r}` {v:g}" for r, v in counts.items()) or "0"
    lines = len(observation.log_lines)
    return said + (", no log line" if not lines else f", {lines} log line" + "s" * (lines > 1))


def matrix_row(observation: Observation) -> str:
    case = observation.case
    counted = "yes" if observation.drop_counted else "**no**"
    if observation.drop_counted and not observation.process_names:
        counted += " (`unknown`)"
    cells = [
        case.title, case.exporter_label, case.app_label,
        _yes(observation.sockets), _yes(observation.states), _yes(observation.idle_time),
        _yes(observation.process_names), _yes(observation.pids),
        _yes(observation.rst_dropped), counted, _says(observation),
    ]
    return "| " + " | ".join(cells) + " |"


MATRIX_HEADER = (
    "| case | exporter uid:gid, capabilities | application uid:gid | sockets | states "
    "| idle time | process names | pids | RST-form `dropped` | drop counted "
    "| the exporter says (`mysql_idle_sockets_without_owner`) |\n"
    "|---|---|---|---|---|---|---|---|---|---|---|"
)


def matrix_table(observations: Sequence[Observation]) -> str:
    return "\n".join([MATRIX_HEADER, *(matrix_row(o) for o in observations)])


def doc_table(text: str) -> str:
    """The table between the markers of docs/kubernetes.md."""
    start, end = text.index(DOC_START) + len(DOC_START), text.index(DOC_END)
    return text[start:end].strip()


def with_doc_table(text: str, table: str) -> str:
    start, end = text.index(DOC_START) + len(DOC_START), text.index(DOC_END)
    return f"{text[:start]}\n{table}\n{text[end:]}"


def _close_all(pods: Sequence[PlayedPod]) -> None:
    # Removing a pod takes podman about 3 s (most of it waiting for the pod's cgroup to go),
    # and one command removes its pods one after the other: so one command per pod, at once.
    with ThreadPoolExecutor(max_workers=max(1, len(pods))) as pool:
        list(pool.map(PlayedPod.close, pods))


def _play_case(pods: list[PlayedPod], podman: Podman, image: BuiltImage, case: Case,
               workdir: Path) -> tuple[PlayedPod, str, tuple[int, int, int]]:
    """The case's pod, running (its containers wait for the database); its password and
    what Kubernetes would grant its exporter."""
    password = secrets.token_hex(12)
    objects = render_chart(chart_values(case, image, password), case.id, workdir)
    deployment, secret = for_podman(objects)
    spec = deployment["spec"]["template"]["spec"]
    [exporter] = [c for c in spec["containers"] if c["name"] == EXPORTER]
    expected = kubernetes_grants(exporter["securityContext"], spec["securityContext"])
    if expected[0] != 0 and exporter["securityContext"]["capabilities"].get("add"):
        without_ambient_capabilities(exporter, "mysql-idle-exporter")
    pod = PlayedPod(podman, deployment, secret, workdir)
    pods.append(pod)  # closed by the caller, even if it does not start
    pod.start()
    return pod, password, expected


def _start_database(stack: ExitStack, pod: PlayedPod, password: str) -> None:
    db = PodMariaDB(pod.netns, [f"--wait-timeout={WAIT_TIMEOUT}"])
    stack.callback(db.cleanup)
    db.start()
    db.create_user("exporter", grants=("PROCESS",), password=password)
    db.create_user("app", grants=(), password=password)


def run_matrix(podman: Podman, image: BuiltImage, cases: Sequence[Case], workdir: Path,
               timeout: float = WAIT_TIMEOUT + 30) -> Iterator[list[Observation]]:
    """Plays every case's pod, then starts their databases, and scrapes them all until each
    has seen its application's session dropped; yields the observations while the pods
    still run. The databases start last and together, so that every exporter is scraped
    from its application's first second on."""
    with ExitStack() as stack:
        pods: list[PlayedPod] = []
        stack.callback(_close_all, pods)
        played = [(case, *_play_case(pods, podman, image, case, workdir)) for case in cases]
        started: list[tuple[PlayedPod, float, Observation]] = []
        for case, pod, password, expected in played:
            _start_database(stack, pod, password)
            observation = Observation(case, pod.credentials(EXPORTER), pod.credentials(APP),
                                      expected)
            started.append((pod, time.monotonic(), observation))
        deadline = time.monotonic() + timeout
        pending = list(started)
        while pending and time.monotonic() < deadline:
            for entry in list(pending):
                pod, since, observation = entry
                try:
                    metrics = pod.scrape()
                except (OSError, AssertionError):
                    continue  # not listening yet
                elapsed = time.monotonic() - since
                observation.samples.append(Sample(elapsed, metrics))
                if observation.done(elapsed):
                    pending.remove(entry)
            time.sleep(0.3)
        for pod, _, observation in started:
            observation.log = pod.logs(EXPORTER)
        yield [observation for _, _, observation in started]

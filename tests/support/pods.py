"""The chart's pods, run for real: `helm template` renders the chart, `podman kube play`
runs its Deployment's pod, a throwaway MariaDB listens inside the pod's network namespace,
and the test scrapes the exporter from inside that namespace.

    manifests = render_chart(values, release, workdir)
    with PlayedPod(podman, manifests, workdir) as pod:      # shareProcessNamespace etc.
        db = PodMariaDB(pod.netns).start()                  # 127.0.0.1:3306 in the pod
        pod.scrape()                                        # the exporter's /metrics
        pod.credentials("mysql-idle-exporter")              # uid, gid, capabilities

What podman 4.3 cannot take from the rendered manifests, and what the test does instead:
- the Secret: a played Secret is stored as YAML, and `secretKeyRef` then reads it as JSON
  and fails; so the Secret's `data` is created as a podman secret of the same name (what
  `secretKeyRef` reads) and the Secret itself is not played;
- `containerPort`s: the pod runs with `--network none` (only loopback, like a pod whose
  traffic stays inside it), where podman refuses port mappings; nothing is published, the
  test reaches the pod's loopback from inside its network namespace;
- probes: podman runs them as systemd timers, and these machines have no systemd;
- the ServiceAccount, Service and monitors: API objects, with no runtime here.
Everything else (the containers, their commands, args, env, securityContext, volumes,
shareProcessNamespace, the pod's securityContext) is played as rendered.

The database runs on the host's binaries but inside the pod's network namespace (named
with `ip netns attach`), so the application and the exporter reach it at 127.0.0.1:3306
exactly as the chart's values say, and no traffic leaves the pod.
"""

from __future__ import annotations

import copy
import http.client
import json
import re
import secrets
import socket
import subprocess
import tempfile
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support import mariadb
from tests.support.containers import REPO, EngineError, Podman
from tests.support.exporter_process import Metrics, parse
from tests.support.netns import join_namespace

CHART = REPO / "helm" / "mysql-idle-exporter"
HELM = REPO / ".tools" / "bin" / "helm"
NAMESPACE = "apps"


def render_chart(values: Mapping[str, Any], release: str, workdir: Path) -> list[dict[str, Any]]:
    """The objects `helm template` renders for these values (the chart's defaults below)."""
    if not HELM.is_file():
        pytest.fail(f"{HELM.relative_to(REPO)} is missing: run scripts/setup", pytrace=False)
    values_file = workdir / f"values-{release}.yaml"
    values_file.write_text(yaml.safe_dump(dict(values)))
    result = subprocess.run(
        [str(HELM), "template", release, str(CHART), "--namespace", NAMESPACE,
         "-f", str(values_file)],
        capture_output=True, text=True, timeout=120,
        env={"PATH": "/usr/bin:/bin", "HELM_CACHE_HOME": str(workdir / "helm-cache"),
             "KUBECONFIG": "/nonexistent-kubeconfig"},
    )
    if result.returncode != 0:
        pytest.fail(f"helm template failed:\n{result.stderr}", pytrace=False)
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def for_podman(objects: Sequence[Mapping[str, Any]]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the Deployment as podman can play it, the Secret) out of rendered objects."""
    [deployment] = [o for o in objects if o["kind"] == "Deployment"]
    [secret] = [o for o in objects if o["kind"] == "Secret"]
    playable = copy.deepcopy(dict(deployment))
    for container in playable["spec"]["template"]["spec"]["containers"]:
        for key in ("ports", "livenessProbe", "readinessProbe"):
            container.pop(key, None)
    return playable, dict(secret)


@dataclass(frozen=True)
class Credentials:
    """What the kernel says a process runs with (/proc/PID/status)."""

    uid: int
    gid: int
    groups: tuple[int, ...]
    effective_caps: int
    bounding_caps: int
    no_new_privs: bool
    ns_pid: int  # its pid inside its own pid namespace

    @classmethod
    def of(cls, host_pid: int) -> Credentials:
        fields: dict[str, list[str]] = {}
        with open(f"/proc/{host_pid}/status", encoding="utf-8") as status:
            for line in status:
                key, _, value = line.partition(":")
                fields[key] = value.split()
        return cls(
            uid=int(fields["Uid"][1]),
            gid=int(fields["Gid"][1]),
            groups=tuple(int(g) for g in fields["Groups"]),
            effective_caps=int(fields["CapEff"][0], 16),
            bounding_caps=int(fields["CapBnd"][0], 16),
            no_new_privs=fields["NoNewPrivs"][0] == "1",
            ns_pid=int(fields["NSpid"][-1]),
        )


# Capability numbers of include/uapi/linux/capability.h, by Kubernetes' names.
CAPABILITIES = {"DAC_READ_SEARCH": 2, "SYS_PTRACE": 19}


def capability_mask(names: Sequence[str]) -> int:
    return sum(1 << CAPABILITIES[name] for name in names)


def kubernetes_grants(container: Mapping[str, Any], pod: Mapping[str, Any]) -> tuple[int, int, int]:
    """(uid, gid, effective capabilities) a kubelet with containerd gives a container with
    these security contexts (the container's own fields win over the pod's). Only
    `drop: [ALL]` is modelled: then uid 0 gets exactly `add`, and any other uid gets no
    effective capability at all (added ones land in the bounding set only: Kubernetes sets
    no ambient capabilities)."""
    uid = int(container.get("runAsUser", pod.get("runAsUser", 0)))
    gid = int(container.get("runAsGroup", pod.get("runAsGroup", 0)))
    capabilities = container.get("capabilities", {})
    assert capabilities.get("drop") == ["ALL"], "only drop: [ALL] is modelled"
    added = capability_mask(capabilities.get("add", []))
    return uid, gid, added if uid == 0 else 0


def without_ambient_capabilities(container: dict[str, Any], entrypoint: str) -> None:
    """Make a non-root container run as Kubernetes would run it: podman hands a non-root
    process its added capabilities as ambient ones (effective after exec), Kubernetes does
    not. setpriv (util-linux, in every Debian image) clears the ambient and inheritable
    sets before exec, so the process keeps the added capabilities in its bounding set only."""
    container["command"] = ["setpriv", "--inh-caps=-all", "--ambient-caps=-all", "--",
                            entrypoint]


class NamespaceClient:
    """HTTP to 127.0.0.1 inside a named network namespace, from the test process."""

    def __init__(self, netns: str) -> None:
        self.netns = netns

    def get(self, path: str, port: int, timeout: float = 10.0) -> tuple[int, str]:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        connection.sock = self._connect(("127.0.0.1", port), timeout)
        try:
            connection.request("GET", path)
            response = connection.getresponse()
            return response.status, response.read().decode()
        finally:
            connection.close()

    def scrape(self, path: str = "/metrics", port: int = 9864) -> Metrics:
        status, body = self.get(path, port)
        assert status == 200, f"{path} answered {status}: {body[:500]}"
        return parse(body)

    def _connect(self, address: tuple[str, int], timeout: float) -> socket.socket:
        # setns moves only the calling thread: a helper thread opens the socket inside.
        outcome: dict[str, Any] = {}

        def run() -> None:
            try:
                join_namespace(self.netns)
                outcome["socket"] = socket.create_connection(address, timeout)
            except BaseException as error:
                outcome["error"] = error

        thread = threading.Thread(target=run, name=f"connect-{self.netns}", daemon=True)
        thread.start()
        thread.join()
        if "error" in outcome:
            raise outcome["error"]
        result = outcome["socket"]
        assert isinstance(result, socket.socket)
        return result


def attach_netns(name: str, host_pid: int) -> None:
    """Name the network namespace of process `host_pid` (/run/netns/NAME) for `ip netns`."""
    subprocess.run(["ip", "netns", "attach", name, str(host_pid)], check=True,
                   capture_output=True, timeout=20)


def detach_netns(name: str) -> None:
    """Remove the name; the namespace lives on while its processes do."""
    subprocess.run(["ip", "netns", "delete", name], capture_output=True, timeout=20)


class PlayedPod:
    """One rendered Deployment's pod, run by `podman kube play --network none`."""

    def __init__(self, podman: Podman, deployment: Mapping[str, Any],
                 secret: Mapping[str, Any], workdir: Path) -> None:
        self.podman = podman
        self.deployment = deployment
        self.secret = secret
        self.workdir = workdir
        self.netns = f"mie-pod-{secrets.token_hex(3)}"
        self.pod_id = ""
        self._containers: dict[str, str] = {}  # Kubernetes name -> podman id
        self._netns_attached = False

    def __enter__(self) -> PlayedPod:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def spec(self) -> dict[str, Any]:
        spec = self.deployment["spec"]["template"]["spec"]
        assert isinstance(spec, dict)
        return spec

    def start(self) -> None:
        name = self.secret["metadata"]["name"]
        data = self.workdir / f"secret-{name}.json"
        data.write_text(json.dumps(self.secret["data"]))
        data.chmod(0o600)
        self.podman.run("secret", "create", name, str(data))
        manifest = self.workdir / f"pod-{name}.yaml"
        manifest.write_text(yaml.safe_dump(self.deployment))
        output = self.podman.run("kube", "play", "--network", "none", str(manifest),
                                 timeout=120).stdout
        match = re.search(r"Pod:\s*\n([0-9a-f]{64})", output)
        if match is None:
            raise EngineError(f"podman kube play printed no pod id:\n{output}")
        self.pod_id = match.group(1)
        inspect = json.loads(self.podman.run("pod", "inspect", self.pod_id).stdout)
        if isinstance(inspect, list):
            inspect = inspect[0]
        pod_name = inspect["Name"]
        for container in inspect["Containers"]:
            if container["Id"] == inspect["InfraContainerID"]:
                infra = container["Id"]
            else:
                self._containers[container["Name"].removeprefix(f"{pod_name}-")] = container["Id"]
        # The pod's network namespace, named, so that the database and the scrapes join it.
        attach_netns(self.netns, self.podman.host_pid(infra))
        self._netns_attached = True

    def close(self) -> None:
        if self.pod_id:
            self.podman.run("pod", "rm", "--force", "--time", "2", self.pod_id, check=False)
        if self._netns_attached:
            detach_netns(self.netns)
            self._netns_attached = False
        self.podman.run("secret", "rm", self.secret["metadata"]["name"], check=False)

    def container(self, name: str) -> dict[str, Any]:
        """The rendered spec of the container with this Kubernetes name."""
        [found] = [c for c in self.spec["containers"] if c["name"] == name]
        assert isinstance(found, dict)
        return found

    def host_pid(self, name: str) -> int:
        return self.podman.host_pid(self._containers[name])

    def credentials(self, name: str) -> Credentials:
        return Credentials.of(self.host_pid(name))

    def logs(self, name: str) -> str:
        return self.podman.logs(self._containers[name])

    def scrape(self, path: str = "/metrics", port: int = 9864) -> Metrics:
        return NamespaceClient(self.netns).scrape(path, port)


class PodMariaDB(mariadb.ThrowawayMariaDB):
    """A throwaway MariaDB on 127.0.0.1:3306 inside a pod's network namespace. The test
    process reaches it through its unix socket."""

    def __init__(self, netns: str, extra_args: Sequence[str] = ()) -> None:
        super().__init__(
            extra_args, host="127.0.0.1", port=3306,
            command_prefix=["ip", "netns", "exec", netns], via_socket=True,
            base_dir=Path(tempfile.mkdtemp(prefix="mariadb-pod-", dir=mariadb.scratch_dir())),
        )

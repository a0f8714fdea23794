"""The chart's node-mode DaemonSet pod, run for real on this machine's podman: rendered by
`helm template`, its pod spec turned into `podman run` flags the way a kubelet applies
them (hostPID, uid 0, drop ALL + SYS_ADMIN, SYS_PTRACE, DAC_READ_SEARCH, read-only root,
the default seccomp profile, emptyDir /tmp, the password from the Secret), with the
project's image. It must pass its own start check and see another pod's sockets.

podman 4.3's `kube play` ignores `hostPID` (measured: the played container saw 3 pids of
its own), which node mode cannot do without; hence `podman run` here. The exporter's pod
network is a named network namespace holding a throwaway MariaDB; the "application pod" is
a second namespace joined to it by a veth pair (tests/support/netns.py NetnsPair), with a
worker in a UTS namespace of its own named `shop-0`.
"""

from __future__ import annotations

import base64
import secrets
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from tests.support.containers import BuiltImage, Podman
from tests.support.netns import NetnsPair, NsWorker, server_in_namespace
from tests.support.pods import NamespaceClient, render_chart
from tests.support.scrapes import create_users, summary
from tests.support.servers import server_class

pytestmark = [pytest.mark.netns, pytest.mark.mariadb, pytest.mark.timeout(240)]

# SYS_ADMIN (21), SYS_PTRACE (19), DAC_READ_SEARCH (2): what the chart adds in node mode.
NODE_CAPS = (1 << 21) | (1 << 19) | (1 << 2)


def podman_run_argv(pod: Mapping[str, Any], secret: Mapping[str, Any], netns: str,
                    name: str) -> list[str]:
    """`podman run` flags for the one container of a rendered pod spec, as a kubelet would
    apply the fields this chart sets (anything else it sets fails the test)."""
    [container] = pod["containers"]
    ctx = container["securityContext"]
    argv = ["run", "--detach", "--name", name, "--network", f"ns:/run/netns/{netns}",
            "--user", f"{ctx['runAsUser']}:{ctx['runAsGroup']}", "--cap-drop", "ALL",
            "--cap-add", ",".join(ctx["capabilities"]["add"])]
    assert pod["hostPID"] is True
    argv.append("--pid=host")
    if ctx.get("readOnlyRootFilesystem"):
        argv.append("--read-only")
    assert ctx["seccompProfile"] == {"type": "RuntimeDefault"}  # podman's default profile
    empty_dirs = {v["name"] for v in pod["volumes"] if "emptyDir" in v}
    for mount in container["volumeMounts"]:
        assert mount["name"] in empty_dirs, mount
        argv += ["--tmpfs", mount["mountPath"]]
    data = secret["data"]
    for env in container.get("env", []):
        if "value" in env:
            argv += ["--env", f"{env['name']}={env['value']}"]
        else:
            ref = env["valueFrom"]["secretKeyRef"]
            assert ref["name"] == secret["metadata"]["name"]
            argv += ["--env", f"{env['name']}={base64.b64decode(data[ref['key']]).decode()}"]
    return [*argv, container["image"], *container["args"]]


def test_the_charts_daemonset_pod_sees_another_pods_sockets(
        podman: Podman, image: BuiltImage, tmp_path: Path) -> None:
    password = secrets.token_hex(8)
    with NetnsPair() as pair:
        db = server_in_namespace(server_class("mariadb"), pair, ["--wait-timeout=60"])
        try:
            db.start()
            create_users(db, password)
            worker = NsWorker(pair, "app-0", pair.server_addr, db.port, "app", password, 2,
                              pod="shop-0")
            repository, _, tag = image.tag.rpartition(":")
            registry, _, name = repository.partition("/")
            objects = render_chart({
                "mode": "node",
                "image": {"registry": registry, "repository": name, "tag": tag,
                          "pullPolicy": "Never"},
                "mysql": {"addresses": [f"{pair.server_addr}:{db.port}"], "user": "exporter"},
                "auth": {"password": password},
                "exporter": {"serverInterval": 1, "riskHeadroom": 5},
            }, "node", tmp_path)
            [daemonset] = [o for o in objects if o["kind"] == "DaemonSet"]
            [secret] = [o for o in objects if o["kind"] == "Secret"]
            container = f"mie-node-{secrets.token_hex(3)}"
            podman.run(*podman_run_argv(daemonset["spec"]["template"]["spec"], secret,
                                        pair.server_ns, container))
            try:
                client = NamespaceClient(pair.server_ns)
                deadline = time.monotonic() + 60
                while True:
                    try:
                        metrics = client.scrape()
                    except OSError:
                        metrics = None
                    if metrics is not None and metrics.get(
                            "mysql_idle_sessions", target=f"{pair.server_addr}:{db.port}",
                            state="idle", process="app-0", pod="shop-0", container="") == 2:
                        break
                    if time.monotonic() > deadline:
                        pytest.fail("the DaemonSet's exporter never saw shop-0's sessions; "
                                    f"last scrape: {summary(metrics) if metrics else None}; "
                                    f"log: {podman.logs(container)}")
                    time.sleep(0.5)
                pid = podman.host_pid(container)
                with open(f"/proc/{pid}/status") as status:
                    fields = dict(line.split(":", 1) for line in status)
                assert fields["Uid"].split()[0] == "0"
                assert int(fields["CapEff"], 16) == NODE_CAPS
                assert "error" not in podman.logs(container).lower()
            finally:
                podman.run("rm", "--force", "--time", "2", container, check=False)
                worker.close()
        finally:
            db.cleanup()

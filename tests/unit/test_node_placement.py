"""Cgroup paths to (runtime, container ID, pod UID), and /proc's namespace links (pure)."""

from __future__ import annotations

import pytest

from exporter.node.placement import Container, cgroup_paths, container_of, parse_cgroup_path
from exporter.node.privileges import effective_capabilities, missing

ID = "4f1c2a9e0b3d4c5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6"
POD = "7d2e5a1b-3c4d-4e5f-8a9b-0c1d2e3f4a5b"
POD_SYSTEMD = POD.replace("-", "_")


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        # docker: cgroupfs driver, systemd driver
        (f"/docker/{ID}", Container("docker", ID)),
        (f"/system.slice/docker-{ID}.scope", Container("docker", ID)),
        # the kubelet with containerd (systemd driver), guaranteed/burstable/besteffort
        (f"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{POD_SYSTEMD}.slice/"
         f"cri-containerd-{ID}.scope", Container("containerd", ID, POD)),
        (f"/kubepods.slice/kubepods-pod{POD_SYSTEMD}.slice/cri-containerd-{ID}.scope",
         Container("containerd", ID, POD)),
        (f"/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{POD_SYSTEMD}"
         f".slice/crio-{ID}.scope", Container("cri-o", ID, POD)),
        # the kubelet's cgroupfs driver: the runtime is not in the path
        (f"/kubepods/burstable/pod{POD}/{ID}", Container("cri", ID, POD)),
        (f"/kubepods/pod{POD}/{ID}", Container("cri", ID, POD)),
        # seen from inside another cgroup namespace (a container on cgroup v2)
        (f"/../../kubepods/besteffort/pod{POD}/{ID}", Container("cri", ID, POD)),
        # podman: systemd (with its inner "container" directory), cgroupfs, in a pod
        (f"/machine.slice/libpod-{ID}.scope/container", Container("podman", ID)),
        (f"/machine.slice/libpod-{ID}.scope", Container("podman", ID)),
        (f"/libpod_parent/libpod-{ID}", Container("podman", ID)),
        (f"/machine.slice/machine-libpod_pod_{ID[::-1]}.slice/libpod-{ID}.scope",
         Container("podman", ID)),
        # no container: host services, sessions, the root, conmon's own scope, a pod's
        # slice without a container in it, a 64-hex name elsewhere
        ("/system.slice/ssh.service", None),
        ("/user.slice/user-1000.slice/session-3.scope", None),
        ("/", None),
        ("", None),
        (f"/machine.slice/libpod-conmon-{ID}.scope", None),
        (f"/kubepods.slice/kubepods-pod{POD_SYSTEMD}.slice", None),
        (f"/srv/{ID}", None),
    ],
)
def test_cgroup_path_names_the_container(path: str, expected: Container | None) -> None:
    assert parse_cgroup_path(path) == expected


def test_the_short_id_is_twelve_hex_digits() -> None:
    assert Container("docker", ID).short_id == ID[:12]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # cgroup v2 only
        (f"0::/system.slice/docker-{ID}.scope\n", Container("docker", ID)),
        # hybrid: v2's path is "/", the v1 hierarchies name the container
        (f"12:pids:/docker/{ID}\n4:memory:/docker/{ID}\n0::/\n", Container("docker", ID)),
        # v1 only
        (f"11:name=systemd:/kubepods/burstable/pod{POD}/{ID}\n3:cpu,cpuacct:/kubepods/"
         f"burstable/pod{POD}/{ID}\n", Container("cri", ID, POD)),
        ("0::/user.slice\n", None),
        ("garbage\n", None),
    ],
)
def test_the_proc_cgroup_text_names_the_container(text: str, expected: Container | None
                                                  ) -> None:
    assert container_of(text) == expected


def test_unified_path_comes_first() -> None:
    assert cgroup_paths("4:memory:/a\n0::/b\n5:pids:/a\n") == ["/b", "/a"]


@pytest.mark.parametrize(
    ("cap_eff", "lacking"),
    [
        ("000001ffffffffff", []),
        # exactly the three: SYS_ADMIN (21), SYS_PTRACE (19), DAC_READ_SEARCH (2)
        (f"{(1 << 21) | (1 << 19) | (1 << 2):016x}", []),
        (f"{(1 << 19) | (1 << 2):016x}", ["CAP_SYS_ADMIN"]),
        (f"{(1 << 21) | (1 << 2):016x}", ["CAP_SYS_PTRACE"]),
        (f"{(1 << 21) | (1 << 19):016x}", ["CAP_DAC_READ_SEARCH"]),
        ("0000000000000000", ["CAP_SYS_ADMIN", "CAP_SYS_PTRACE", "CAP_DAC_READ_SEARCH"]),
    ],
)
def test_node_mode_names_the_capabilities_it_lacks(cap_eff: str, lacking: list[str]) -> None:
    status = f"Name:\tpython3\nCapInh:\t0000000000000000\nCapEff:\t{cap_eff}\n"
    assert missing(effective_capabilities(status)) == lacking

"""Where a process lives, from its cgroup path: the container runtime, the container's ID
and the Kubernetes pod's UID (pure functions over the text of /proc/PID/cgroup).

The runtimes name a container's cgroup after its ID, and the kubelet names a pod's after
the pod's UID, in one of two spellings (the cgroupfs driver and the systemd one):

    docker      /docker/<id>                      /system.slice/docker-<id>.scope
    containerd  /kubepods/burstable/pod<uid>/<id> /kubepods.slice/.../kubepods-burstable-
                                                  pod<uid_>.slice/cri-containerd-<id>.scope
    cri-o       .../crio-<id>.scope (or /crio-<id>)
    podman      /libpod_parent/libpod-<id>        /machine.slice/libpod-<id>.scope[/container]

Seen from a process inside its own cgroup namespace (a Kubernetes container on cgroup v2),
other processes' paths start with "/.." segments: the patterns are searched anywhere in the
path. The container's name is not in the path; its short ID (12 hex digits, as `docker ps`
and `crictl ps` show it) is the `container` label.
"""

from __future__ import annotations

import re
from typing import NamedTuple

SHORT_ID = 12

_ID = r"[0-9a-f]{64}"
# The deepest match wins (a container nested in a pod's cgroup): patterns per segment.
_SEGMENT_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("containerd", re.compile(rf"^cri-containerd-({_ID})\.scope$")),
    ("cri-o", re.compile(rf"^crio-({_ID})(?:\.scope)?$")),
    ("docker", re.compile(rf"^docker-({_ID})\.scope$")),
    ("podman", re.compile(rf"^libpod-({_ID})(?:\.scope)?$")),
)
_POD_UID = re.compile(
    r"^(?:kubepods-(?:besteffort-|burstable-)?)?pod"
    r"([0-9a-f]{8}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{12})(?:\.slice)?$"
)
_BARE_ID = re.compile(rf"^({_ID})$")


class Container(NamedTuple):
    """Where a process lives, as far as its cgroup path says."""

    runtime: str  # "docker", "containerd", "cri-o", "podman", "cri" (kubelet, runtime unsaid)
    id: str  # the full 64-hex ID
    pod_uid: str = ""  # the Kubernetes pod's UID (with dashes), "" outside Kubernetes

    @property
    def short_id(self) -> str:
        return self.id[:SHORT_ID]


def cgroup_paths(text: str) -> list[str]:
    """The paths of a /proc/PID/cgroup text, the unified hierarchy's ("0::", cgroup v2)
    first. A hybrid host has both, and a runtime may place the container in only one of
    them (its v2 path can be "/" while the v1 hierarchies name the container)."""
    unified: list[str] = []
    others: list[str] = []
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        hierarchy, controllers, path = parts
        if hierarchy == "0" and controllers == "":
            unified.append(path)
        elif path not in others:
            others.append(path)
    return unified + [path for path in others if path not in unified]


def parse_cgroup_path(path: str) -> Container | None:
    """The container a cgroup path names, or None for a path outside any container (a
    host service, a user session). conmon's own scope (libpod-conmon-<id>) is not its
    container's."""
    runtime = ""
    container_id = ""
    pod_uid = ""
    in_kubepods = False
    previous = ""
    for segment in path.split("/"):
        parent, previous = previous, segment
        if segment.startswith("kubepods"):
            in_kubepods = True
        pod = _POD_UID.match(segment)
        if pod is not None:
            pod_uid = pod.group(1).replace("_", "-")
            continue
        for name, pattern in _SEGMENT_PATTERNS:
            found = pattern.match(segment)
            if found is not None:
                runtime, container_id = name, found.group(1)
                break
        else:
            bare = _BARE_ID.match(segment)
            # /docker/<id> (docker's cgroupfs driver) or /kubepods/.../pod<uid>/<id> (the
            # kubelet's cgroupfs driver: the runtime is not in the path).
            if bare is not None and (parent == "docker" or in_kubepods):
                container_id = bare.group(1)
                runtime = "docker" if parent == "docker" else "cri"
    if not container_id:
        return None
    return Container(runtime, container_id, pod_uid)


def container_of(cgroup_text: str) -> Container | None:
    """The container of a process, from the text of its /proc/PID/cgroup: the first of
    its paths that names one."""
    for path in cgroup_paths(cgroup_text):
        found = parse_cgroup_path(path)
        if found is not None:
            return found
    return None

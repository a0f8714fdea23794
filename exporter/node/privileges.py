"""What node mode needs of its process, checked once at start (exit 2 with one line).

Found by tests (tests/node/test_node_privileges.py), each needed and together enough, for
an exporter running as root (uid 0) in the host's PID namespace:

- CAP_SYS_ADMIN: setns() into another process's network and UTS namespaces;
- CAP_SYS_PTRACE: open another user's /proc/PID/ns/* (ptrace read access), and read
  their /proc/PID/fd links;
- CAP_DAC_READ_SEARCH: list /proc/PID/fd (mode 0500) of processes of other users.

Kubernetes, like docker, gives a non-root container no effective capabilities from
`capabilities.add`: node mode runs as uid 0, with every other capability dropped.
"""

from __future__ import annotations

import os

from exporter.node.namespaces import NamespaceGone, enter, parse_ns_link

CAP_DAC_READ_SEARCH = 2
CAP_SYS_PTRACE = 19
CAP_SYS_ADMIN = 21

NEEDED: dict[str, int] = {
    "CAP_SYS_ADMIN": CAP_SYS_ADMIN,
    "CAP_SYS_PTRACE": CAP_SYS_PTRACE,
    "CAP_DAC_READ_SEARCH": CAP_DAC_READ_SEARCH,
}


def effective_capabilities(status_text: str) -> int:
    """The CapEff mask of a /proc/PID/status text (0 if absent)."""
    for line in status_text.splitlines():
        if line.startswith("CapEff:"):
            return int(line.split(":", 1)[1].strip(), 16)
    return 0


def missing(mask: int) -> list[str]:
    """The capabilities node mode needs that ``mask`` lacks, by name."""
    return [name for name, bit in NEEDED.items() if not mask >> bit & 1]


def check(proc_root: str = "/proc") -> str | None:
    """None when node mode can run here, else the one line that says what is missing."""
    try:
        with open(f"{proc_root}/self/status", encoding="ascii", errors="replace") as handle:
            lacking = missing(effective_capabilities(handle.read()))
    except OSError as error:
        return f"--mode=node cannot read {proc_root}/self/status: {error.strerror}"
    if lacking:
        return (
            f"--mode=node needs CAP_SYS_ADMIN, CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH (to "
            f"enter every network namespace and find each socket's process); this process "
            f"(uid {os.geteuid()}) lacks {', '.join(lacking)}. Run it as root with those "
            "capabilities (Kubernetes: runAsUser: 0, capabilities.add) and hostPID"
        )
    # Enter this process's own namespaces as a node-mode read enters others' (a seccomp or
    # LSM profile can forbid setns even with the capabilities).
    pid = os.getpid()
    try:
        inode = parse_ns_link(os.readlink(f"{proc_root}/{pid}/ns/net"))
        if inode is None:
            return f"--mode=node cannot read {proc_root}/{pid}/ns/net"
        entered = enter(proc_root, pid, inode)
    except NamespaceGone:  # another /proc (--path.procfs) than this process's
        return None
    except OSError as error:
        reason = error.strerror or str(error)
        return (f"--mode=node cannot enter a network namespace ({reason}): a seccomp or "
                "security profile may forbid setns; run it unconfined")
    entered.channel.close()
    return None

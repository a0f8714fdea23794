"""What to change, per situation: one short line each and where the documentation says more.

The status page, /status.json and `mysql-idle-exporter inspect` show these next to the
process or target they concern. Each points at a section of the runbook (the same entries
the alert rules' ``runbook_url`` point at) or of the other docs; a unit test checks that
every anchor exists, so a renamed heading cannot leave a dead link behind.
"""

from __future__ import annotations

from dataclasses import dataclass

# Where the documentation is published: the alert rules' runbook_url use the same base.
DOCS_BASE = "https://github.com/mysql-idle-exporter/mysql-idle-exporter/blob/main/"


@dataclass(frozen=True, slots=True)
class Advice:
    key: str
    # A few words, for a table cell in a terminal.
    short: str
    # One line: what to change.
    text: str
    # The section that says more: a path in the repository and its anchor.
    doc: str

    @property
    def url(self) -> str:
        return DOCS_BASE + self.doc

    @property
    def source(self) -> str:
        """What the link leads to, in a word."""
        return "runbook" if self.doc.startswith("docs/runbook.md") else "docs"


_RUNBOOK = "docs/runbook.md#"
_KNOBS = _RUNBOOK + "how-idle-sessions-die-and-the-knobs-that-stop-it"

DEAD_HELD = Advice(
    "dead_held",
    "dead: reconnect",
    "The server has ended these sessions and the process still holds them: its next query on "
    "each fails (2006/2013). Restart the process or recycle its pool now; for good, keep the "
    "pool's lifetime below the timeout and check connections on checkout.",
    _RUNBOOK + "mysqlidledeadsessionsheld",
)
PHANTOM = Advice(
    "phantom",
    "no session: keepalive",
    "The server has no session for these sockets: a NAT, load balancer or firewall forgot the "
    "idle flow, or the server restarted. Enable TCP keepalive with a first probe before the "
    "path's idle limit, and tell the exporter the limit (--network.idle-timeout).",
    _RUNBOOK + "mysqlidlephantomsessions",
)
AT_RISK = Advice(
    "at_risk",
    "recycle below timeout",
    "Idle sessions about to reach their timeout: keep idle connections shorter than it "
    "(SQLAlchemy pool_recycle + pool_pre_ping, Django CONN_MAX_AGE + CONN_HEALTH_CHECKS, "
    "HikariCP maxLifetime, Go SetConnMaxIdleTime), or use them before it runs out.",
    _RUNBOOK + "mysqlidlesessionsabouttobedropped",
)
REPEATED_DROPS = Advice(
    "repeated_drops",
    "repeated drops",
    "Three or more sessions died idle in the last hour: the process's connection handling "
    "does not fit the timeout. Apply the client fix (a pool lifetime below the timeout and a "
    "liveness check).",
    _RUNBOOK + "mysqlidlerepeateddrops",
)
RECENT_DROPS = Advice(
    "recent_drops",
    "dropped lately",
    "Sessions of this process died idle in the last hour. A job that idles between runs "
    "should reconnect (or ping) before each run.",
    _KNOBS,
)
UNMATCHED = Advice(
    "unmatched",
    "risk unknown",
    "These sockets match no server session, so their headroom is unknown: see the target's "
    "notes above for why.",
    _RUNBOOK + "mysqlidlecorrelationlost",
)
TARGET_DOWN = Advice(
    "target_down",
    "server unreadable",
    "Check what the exporter's log says: credentials (MYSQL_IDLE_EXPORTER_PASSWORD or "
    "--config.my-cnf), grants, the network path to the server, max_connections.",
    _RUNBOOK + "mysqlidleexportertargetdown",
)
NO_PROCESS_PRIVILEGE = Advice(
    "no_process_privilege",
    "grant PROCESS",
    "GRANT PROCESS ON *.* TO the exporter's user: without it the server shows the exporter "
    "only its own sessions.",
    _RUNBOOK + "mysqlidlecorrelationlost",
)
CORRELATION_LOST = Advice(
    "correlation_lost",
    "cannot match",
    "Something between the application and the server rewrites client addresses (a proxy, "
    "NAT, a Service), or the server resolves client names (set skip_name_resolve=ON). Behind "
    "a proxy, run the exporter next to the proxy and set --network.idle-timeout.",
    _RUNBOOK + "mysqlidlecorrelationlost",
)
OWNERS_UNKNOWN = Advice(
    "owners_unknown",
    "owner not visible",
    "Let the exporter read the application's /proc/PID/fd: run it with the application's "
    "uid and gid (or with CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH); in Kubernetes set "
    "shareProcessNamespace: true.",
    "docs/kubernetes.md#process-attribution-and-shareprocessnamespace",
)
NO_TCP_INFO = Advice(
    "no_tcp_info",
    "no tcp_info",
    "Let the exporter use netlink sock_diag (--sockets.source=netlink): the /proc/net/tcp "
    "fallback has no idle times, so headroom is only as fresh as the last server read.",
    "README.md#how-it-sees-sockets-and-processes",
)

ALL: tuple[Advice, ...] = (
    DEAD_HELD, PHANTOM, AT_RISK, REPEATED_DROPS, RECENT_DROPS, UNMATCHED, TARGET_DOWN,
    NO_PROCESS_PRIVILEGE, CORRELATION_LOST, OWNERS_UNKNOWN, NO_TCP_INFO,
)

# At this many drops in the last hour a process gets REPEATED_DROPS (the
# MySQLIdleRepeatedDrops alert's threshold).
REPEATED_DROPS_AT = 3

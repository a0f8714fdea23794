"""One target's part of a collection, in one trip to the thread pool: plan, read the
server if the plan says so, correlate, and total per process.

Planning (exporter.planner) and correlation (exporter.correlate) are pure; the only I/O
here is the session source's read, which carries the collection's deadline.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from exporter import planner
from exporter.correlate import correlate
from exporter.deadline import Deadline
from exporter.model import (
    PlaceSummary,
    ResolveStatus,
    ServerView,
    Socket,
    TargetSnapshot,
    TargetSummary,
)
from exporter.planner import ReadPolicy, TargetState
from exporter.sessions.source import SessionSource
from exporter.summary import summarise

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Target:
    """One --mysql.address: the `target` label, where it is, and how to read it."""

    name: str
    host: str
    port: int
    sessions: SessionSource
    # Node mode: sockets are correlated per place (pod and container), exporter.node.
    node: bool = False


@dataclass(frozen=True, slots=True)
class EarlyRead:
    """A read started before the socket dump, and the client addresses it asked about."""

    client_ips: frozenset[str]
    view: ServerView
    seconds: float


@dataclass(frozen=True, slots=True)
class TargetOutcome:
    snapshot: TargetSnapshot
    summary: TargetSummary
    state: TargetState
    # Seconds per phase: "server" (0 without a read), "correlate".
    durations: dict[str, float] = field(default_factory=dict)
    # Node mode: each place's summary.
    places: tuple[PlaceSummary, ...] = ()


def timed_read(
    sessions: SessionSource, client_ips: frozenset[str], deadline: Deadline, *, fresh: bool
) -> tuple[ServerView, float]:
    started = time.perf_counter()
    view = sessions.read(client_ips, deadline, fresh=fresh)
    return view, time.perf_counter() - started


def collect_target(
    target: Target,
    state: TargetState,
    resolve: ResolveStatus,
    all_sockets: Sequence[Socket],
    deadline: Deadline,
    policy: ReadPolicy,
    top: int,
    early: EarlyRead | None = None,
) -> TargetOutcome:
    """``resolve``: the target's addresses. While its name has none (not resolved yet, or
    failing), the server is not asked either: its connect would look the name up again,
    in this thread, without a bound."""
    addresses = resolve.addresses
    plan = planner.plan(state, all_sockets, target.port, addresses, deadline.now(), policy)
    view: ServerView | None = None
    server_seconds = 0.0
    if plan.reason is not None:
        if early is not None and planner.accepts_early(plan, early.client_ips):
            view, server_seconds = early.view, early.seconds
        elif not addresses:
            reason = resolve.error or "no answer yet"
            view = ServerView(target=target.name, ok=False,
                              error=f"cannot resolve {target.host}: {reason}")
        else:
            view, server_seconds = timed_read(
                target.sessions, plan.client_ips, deadline, fresh=plan.fresh
            )
    elif addresses:
        # No read due: the last one still describes the sessions, but the server may have
        # gone since. A ping (no statement) keeps mysql_idle_up true at every scrape.
        started = time.perf_counter()
        failed = target.sessions.ping(deadline)
        server_seconds = time.perf_counter() - started
        if failed is not None:
            state = planner.settle_ping(state, plan, failed)
            return _correlated(target, state, plan.sockets, plan, deadline, policy, top,
                               server_seconds)
    state, sockets = planner.settle(state, plan, view)
    return _correlated(target, state, sockets, plan, deadline, policy, top, server_seconds)


def _correlated(
    target: Target,
    state: TargetState,
    sockets: Sequence[Socket],
    plan: planner.Plan,
    deadline: Deadline,
    policy: ReadPolicy,
    top: int,
    server_seconds: float,
) -> TargetOutcome:
    started = time.perf_counter()
    if target.node:
        # Imported here: a sidecar never needs it (resident memory, benchmarks/README.md).
        from exporter.node.places import correlate_places, merge_memories

        now = deadline.now()
        snapshot, summary, places, kept = correlate_places(
            target.name, sockets, state.last_view, policy.settings, state.places,
            state.memory, now, top,
        )
        return TargetOutcome(
            snapshot=snapshot,
            summary=summary,
            state=replace(state, memory=merge_memories(kept.values(), now), places=kept),
            durations={"server": server_seconds, "correlate": time.perf_counter() - started},
            places=places,
        )
    snapshot, memory = correlate(
        target.name, sockets, state.last_view, policy.settings, state.memory, deadline.now(),
        live=plan.live,
    )
    summary = summarise(snapshot, top)
    return TargetOutcome(
        snapshot=snapshot,
        summary=summary,
        state=replace(state, memory=memory),
        durations={"server": server_seconds, "correlate": time.perf_counter() - started},
    )

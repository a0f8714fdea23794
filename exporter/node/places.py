"""Node mode's correlation: one target's sockets, split by where they live, each place
correlated apart with its own memory, then summed (pure functions).

A place is a network namespace and the owner's container in it (exporter.model.Place).
Correlating per place keeps two namespaces' connections apart even where they share a
client ip:port (two pods behind one NAT, loopback clients), and gives each pod and
container its own states, headroom and drop counts. The server is read once for them all.
A place with no socket left is forgotten at once if it never counted a drop, else after
PLACE_MEMORY_SECONDS (its drop counter goes with it, as a gone pod's series do).
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Hashable, Iterable, Mapping, Sequence
from typing import TypeVar

from exporter.causes import CauseBook
from exporter.correlate import Memory, correlate
from exporter.model import (
    ALL_STATES,
    Classified,
    ConnectionKey,
    Place,
    PlaceSummary,
    ProcessTotals,
    ServerView,
    Settings,
    Socket,
    TargetSnapshot,
    TargetSummary,
)
from exporter.planner import live_connections
from exporter.summary import summarise, transaction_age
from exporter.timeouts import Outlived

Key = TypeVar("Key", bound=Hashable)
NOWHERE = Place(netns=0, pod="")  # a socket read without a place (local mode's reader)
# How long a place with no socket left keeps its drop count (and its counter series): a
# failed socket read or a pod between two connections must not reset it; a pod gone for
# good takes its series with it after this long.
PLACE_MEMORY_SECONDS = 600.0
_EMPTY = TargetSummary(processes={}, riskiest=())


def split(sockets: Iterable[Socket]) -> dict[Place, list[Socket]]:
    groups: dict[Place, list[Socket]] = {}
    for sock in sockets:
        place = sock.place if sock.place is not None else NOWHERE
        group = groups.get(place)
        if group is None:
            group = groups[place] = []
        group.append(sock)
    return groups


def _add(into: dict[Key, int], counts: Mapping[Key, int]) -> None:
    for key, count in counts.items():
        into[key] = into.get(key, 0) + count


def _counted(memory: Memory) -> bool:
    """Whether a place's memory holds drops to keep counting: counted by process or by
    cause (phantoms count only by cause), or deaths waiting for a read to name theirs."""
    book = memory.causes
    return (any(memory.dropped_totals.values()) or any(book.totals.values())
            or bool(book.pending))


def merge_memories(memories: Iterable[Memory], now: float) -> Memory:
    """What the planner and the engine see of a target: every place's memory in one (the
    causes are worked out per place; only their totals are summed here)."""
    matched: set[ConnectionKey] = set()
    dropped: set[ConnectionKey] = set()
    items: dict[ConnectionKey, Classified] = {}
    outlived: dict[ConnectionKey, Outlived] = {}
    totals: dict[str, int] = {}
    cause_totals: dict[tuple[str, str], int] = {}
    working = False
    earliest: float | None = None
    for memory in memories:
        matched |= memory.matched
        dropped |= memory.dropped
        items.update(memory.items)
        outlived.update(memory.outlived)
        _add(totals, memory.dropped_totals)
        _add(cause_totals, memory.causes.totals)
        working = working or memory.correlation_working
        if memory.earliest_expiry is not None and (
            earliest is None or memory.earliest_expiry < earliest
        ):
            earliest = memory.earliest_expiry
    return Memory(
        matched=frozenset(matched), dropped=frozenset(dropped), items=items, items_at=now,
        dropped_totals=totals, correlation_working=working, outlived=outlived,
        earliest_expiry=earliest, causes=CauseBook(totals=cause_totals),
    )


def _largest(values: Iterable[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return max(present) if present else None


def _merge_totals(parts: Sequence[ProcessTotals]) -> ProcessTotals:
    if len(parts) == 1:
        return parts[0]
    headrooms = [p.min_headroom for p in parts if p.min_headroom is not None]
    return ProcessTotals(
        states=tuple(sum(p.states[i] for p in parts) for i in range(len(ALL_STATES))),
        keepalive=sum(p.keepalive for p in parts),
        min_headroom=min(headrooms) if headrooms else None,
        server_idle=tuple(v for p in parts for v in p.server_idle),
        client_idle=tuple(v for p in parts for v in p.client_idle),
        comms=tuple(sorted({c for p in parts for c in p.comms})),
        in_transaction=sum(p.in_transaction for p in parts),
        transaction_oldest=_largest(p.transaction_oldest for p in parts),
        transaction_idle=_largest(p.transaction_idle for p in parts),
        rows_locked=sum(p.rows_locked for p in parts),
        rows_modified=sum(p.rows_modified for p in parts),
        limits=tuple(sorted(_summed(p.limits for p in parts).items())),
        keepalive_late=sum(p.keepalive_late for p in parts),
    )


def _summed(pairs: Iterable[Iterable[tuple[str, int]]]) -> dict[str, int]:
    totals: dict[str, int] = {}
    for part in pairs:
        _add(totals, dict(part))
    return totals



def merge_summaries(summaries: Iterable[TargetSummary], top: int) -> TargetSummary:
    """The target's summary across places: per process, and the `top` riskiest sessions
    of the whole node (--sessions.top bounds them across every pod)."""
    by_process: dict[str, list[ProcessTotals]] = {}
    riskiest: list[Classified] = []
    transactions: list[Classified] = []
    for summary in summaries:
        for process, totals in summary.processes.items():
            by_process.setdefault(process, []).append(totals)
        riskiest.extend(summary.riskiest)
        transactions.extend(summary.transactions)
    return TargetSummary(
        processes={p: _merge_totals(by_process[p]) for p in sorted(by_process)},
        riskiest=tuple(heapq.nsmallest(
            top, riskiest,
            key=lambda item: (item.headroom_seconds if item.headroom_seconds is not None
                              else math.inf, item.socket.local),
        )),
        # As exporter.summary orders them: the oldest transactions first.
        transactions=tuple(heapq.nsmallest(
            top, transactions, key=lambda item: (-transaction_age(item), item.socket.local),
        )),
    )


def correlate_places(
    target: str,
    sockets: Sequence[Socket],
    server: ServerView | None,
    settings: Settings,
    places: Mapping[Place, Memory],
    seed: Memory,
    now: float,
    top: int,
) -> tuple[TargetSnapshot, TargetSummary, tuple[PlaceSummary, ...], dict[Place, Memory]]:
    """Correlate each place's sockets with its own memory (a new place starts from
    ``seed``'s counted drops: what an earlier run counted, exporter.persistence).

    Returns the target's snapshot (every place's items), its summary, each place's
    summary (sorted by pod, container, namespace) and the memories to keep."""
    groups = split(sockets)
    kept: dict[Place, Memory] = {}
    snapshots: list[TargetSnapshot] = []
    summaries: list[PlaceSummary] = []
    fresh = Memory(dropped=seed.dropped)
    for place in sorted(groups.keys() | places.keys(),
                        key=lambda p: (p.pod, p.container, p.netns, p.pod_uid, p.runtime)):
        group = groups.get(place, ())
        remembered = places.get(place)
        if not group and remembered is not None and not remembered.items:
            # Nothing of it now nor at the last collection: only its drop count is left to
            # keep, for a while (a failed socket read, a pod between two connections).
            if _counted(remembered) and now - remembered.items_at <= PLACE_MEMORY_SECONDS:
                kept[place] = remembered
                summaries.append(PlaceSummary(place, _EMPTY, remembered.dropped_totals,
                                              remembered.causes.totals))
            continue
        snapshot, memory = correlate(target, group, server, settings,
                                     remembered if remembered is not None else fresh, now,
                                     live=live_connections(group))
        if snapshot.items or memory.items or _counted(memory):
            kept[place] = memory
        if group or _counted(memory):
            snapshots.append(snapshot)
            summaries.append(PlaceSummary(place, summarise(snapshot, top),
                                          memory.dropped_totals, memory.causes.totals))
    totals: dict[str, int] = {}
    cause_totals: dict[tuple[str, str], int] = {}
    for part in summaries:
        _add(totals, part.dropped_totals)
        _add(cause_totals, part.cause_totals)
    labelled = by_labels(summaries, top)
    merged = TargetSnapshot(
        target=target,
        server=server,
        items=tuple(item for s in snapshots for item in s.items),
        correlation_working=any(m.correlation_working for m in kept.values())
        or (seed.correlation_working and not kept),
        dropped_totals=totals,
        server_age_seconds=snapshots[0].server_age_seconds if snapshots else (
            now - server.read_at if server is not None and server.ok else None),
        settings=settings,
        cause_totals=cause_totals,
    )
    summary = merge_summaries((p.summary for p in summaries), top)
    return merged, summary, labelled, kept


def by_labels(summaries: Sequence[PlaceSummary], top: int) -> tuple[PlaceSummary, ...]:
    """One summary per (pod, container) label pair: places that only the namespace tells
    apart (two namespaces with one host name, and sockets in no container, as `ip netns`
    makes them) are summed, so that no two series share their labels."""
    grouped: dict[tuple[str, str], list[PlaceSummary]] = {}
    for part in summaries:
        grouped.setdefault((part.place.pod, part.place.container), []).append(part)
    merged: list[PlaceSummary] = []
    for parts in grouped.values():
        if len(parts) == 1:
            merged.append(parts[0])
            continue
        totals: dict[str, int] = {}
        cause_totals: dict[tuple[str, str], int] = {}
        for part in parts:
            _add(totals, part.dropped_totals)
            _add(cause_totals, part.cause_totals)
        merged.append(PlaceSummary(parts[0].place,
                                   merge_summaries((p.summary for p in parts), top), totals,
                                   cause_totals))
    return tuple(merged)

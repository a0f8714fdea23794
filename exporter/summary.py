"""Per-process totals of one target's collection, in one pass over its items (pure).

Rendering needs, per owning process, the count of each state, the armed keepalives, the
smallest headroom, the idle times, and the riskiest sessions overall. At 10,000 sessions
that is 10,000 items; walking them once here, off the event loop, and not once per metric
family while a scrape waits, is most of what rendering used to cost.
"""

from __future__ import annotations

import heapq
import math
from collections import Counter
from typing import Any

from exporter.model import (
    ALL_STATES,
    Classified,
    ProcessTotals,
    State,
    TargetSnapshot,
    TargetSummary,
    TcpState,
)

_STATE_INDEX = {state: index for index, state in enumerate(ALL_STATES)}


def utf8_label(value: str) -> str:
    """A label value that can be encoded as UTF-8: lone surrogates, which psutil makes of a
    process name that is not valid UTF-8 (a process can give itself such a name) and which
    JSON escapes can carry, become U+FFFD instead of failing the whole scrape."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return "".join("\ufffd" if "\ud800" <= char <= "\udfff" else char for char in value)
    return value


def summarise(target: TargetSnapshot, top: int) -> TargetSummary:
    labels: dict[str, str] = {}
    states: dict[str, list[int]] = {}
    keepalive: dict[str, int] = {}
    smallest: dict[str, float] = {}
    server_idle: dict[str, list[float]] = {}
    client_idle: dict[str, list[float]] = {}
    comms: dict[str, set[str]] = {}
    with_headroom: list[Classified] = []
    # Sessions asleep inside a transaction, and late keepalives, are rare: kept apart, per
    # process, only where they occur. Limits are listed by the kind's value (a str) and
    # counted in C at the end, never keyed by the enum member: an Enum hashes in Python,
    # which at 10,000 idle sessions costs more than the rest of this loop.
    in_transaction: list[Classified] = []
    limits: dict[str, list[str]] = {}
    network = target.settings.network_idle_timeout
    established = TcpState.ESTABLISHED
    idle_states = (State.IDLE, State.AT_RISK)
    width = len(ALL_STATES)
    for item in target.items:
        sock = item.socket
        raw = sock.process
        process = labels.get(raw)
        if process is None:
            process = labels[raw] = utf8_label(raw)
            if process not in states:
                # The states' counts, then (one slot more) the late keepalives.
                states[process] = [0] * (width + 1)
                keepalive[process] = 0
                server_idle[process] = []
                client_idle[process] = []
                comms[process] = set()
        counts = states[process]
        counts[_STATE_INDEX[item.state]] += 1
        comms[process].add(sock.comm)
        if sock.keepalive:
            keepalive[process] += 1
        if sock.idle_seconds is not None:
            client_idle[process].append(sock.idle_seconds)
        if network is not None:
            probe = sock.keepalive_probe_at
            if (probe is None or probe > network) and sock.state is established and (
                    not sock.gone):
                counts[width] += 1
        if item.state in idle_states:
            # Idle and at_risk items always have their session.
            if item.session.transaction_seconds is not None:  # type: ignore[union-attr]
                in_transaction.append(item)
            if item.idle_seconds is not None:
                server_idle[process].append(item.idle_seconds)
            headroom = item.headroom_seconds
            if headroom is not None:  # so timeout_kind is not None either
                kinds = limits.get(process)
                if kinds is None:
                    kinds = limits[process] = []
                kinds.append(item.timeout_kind._value_)  # type: ignore[union-attr]
                with_headroom.append(item)
                if headroom < smallest.get(process, math.inf):
                    smallest[process] = headroom
    # The same as sorted(...)[:top] (ties keep their order), without sorting them all.
    riskiest = heapq.nsmallest(
        top, with_headroom, key=lambda item: (item.headroom_seconds, item.socket.local)
    )
    transactions = _transactions(in_transaction)
    by_limit = {process: tuple(sorted(Counter(kinds).items()))
                for process, kinds in limits.items()}
    return TargetSummary(
        processes={
            process: ProcessTotals(
                states=tuple(states[process][:width]),
                keepalive=keepalive[process],
                min_headroom=smallest.get(process),
                server_idle=tuple(server_idle[process]),
                client_idle=tuple(client_idle[process]),
                comms=tuple(sorted({utf8_label(comm) for comm in comms[process]})),
                **transactions.get(process, {}),
                limits=by_limit.get(process, ()),
                keepalive_late=states[process][width],
            )
            for process in sorted(states)
        },
        riskiest=tuple(riskiest),
        transactions=tuple(heapq.nsmallest(
            top, in_transaction, key=lambda item: (-transaction_age(item), item.socket.local))),
    )


def transaction_age(item: Classified) -> float:
    """The age of the open transaction of an idle session inside one (the order of
    TargetSummary.transactions: oldest first)."""
    session = item.session
    assert session is not None and session.transaction_seconds is not None
    return session.transaction_seconds


def _transactions(items: list[Classified]) -> dict[str, dict[str, Any]]:
    """ProcessTotals' transaction fields, per process label, for these idle sessions
    inside an open transaction."""
    totals: dict[str, dict[str, Any]] = {}
    for item in items:
        session = item.session
        assert session is not None and session.transaction_seconds is not None
        entry = totals.setdefault(utf8_label(item.socket.process), {
            "in_transaction": 0, "transaction_oldest": 0.0, "transaction_idle": 0.0,
            "rows_locked": 0, "rows_modified": 0,
        })
        entry["in_transaction"] += 1
        entry["transaction_oldest"] = max(entry["transaction_oldest"],
                                          session.transaction_seconds)
        idle = item.idle_seconds if item.idle_seconds is not None else session.idle_seconds
        entry["transaction_idle"] = max(entry["transaction_idle"], idle)
        entry["rows_locked"] += session.rows_locked
        entry["rows_modified"] += session.rows_modified
    return totals

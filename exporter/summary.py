"""Per-process totals of one target's collection, in one pass over its items (pure).

Rendering needs, per owning process, the count of each state, the armed keepalives, the
smallest headroom, the idle times, and the riskiest sessions overall. At 10,000 sessions
that is 10,000 items; walking them once here, off the event loop, and not once per metric
family while a scrape waits, is most of what rendering used to cost.
"""

from __future__ import annotations

import heapq
import math

from exporter.model import (
    ALL_STATES,
    Classified,
    ProcessTotals,
    State,
    TargetSnapshot,
    TargetSummary,
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
    idle_states = (State.IDLE, State.AT_RISK)
    width = len(ALL_STATES)
    for item in target.items:
        sock = item.socket
        raw = sock.process
        process = labels.get(raw)
        if process is None:
            process = labels[raw] = utf8_label(raw)
            if process not in states:
                states[process] = [0] * width
                keepalive[process] = 0
                server_idle[process] = []
                client_idle[process] = []
                comms[process] = set()
        states[process][_STATE_INDEX[item.state]] += 1
        comms[process].add(sock.comm)
        if sock.keepalive:
            keepalive[process] += 1
        if sock.idle_seconds is not None:
            client_idle[process].append(sock.idle_seconds)
        if item.state in idle_states:
            if item.idle_seconds is not None:
                server_idle[process].append(item.idle_seconds)
            headroom = item.headroom_seconds
            if headroom is not None:
                with_headroom.append(item)
                if headroom < smallest.get(process, math.inf):
                    smallest[process] = headroom
    # The same as sorted(...)[:top] (ties keep their order), without sorting them all.
    riskiest = heapq.nsmallest(
        top, with_headroom, key=lambda item: (item.headroom_seconds, item.socket.local)
    )
    return TargetSummary(
        processes={
            process: ProcessTotals(
                states=tuple(states[process]),
                keepalive=keepalive[process],
                min_headroom=smallest.get(process),
                server_idle=tuple(server_idle[process]),
                client_idle=tuple(client_idle[process]),
                comms=tuple(sorted({utf8_label(comm) for comm in comms[process]})),
            )
            for process in sorted(states)
        },
        riskiest=tuple(riskiest),
    )

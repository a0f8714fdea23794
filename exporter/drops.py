"""Drops seen lately, per target and process: a small, bounded history for the status page,
/status.json and `inspect --watch`.

The engine counts sessions that died, by process and cause (``TargetSnapshot.cause_totals``,
cumulative since start; exporter.causes). Prometheus turns those counters into rates; a
page has no Prometheus behind it, so this module turns successive snapshots' counts into
events, each stamped with the time of the collection that first counted it. Only the last
hour is kept (and at most a few hundred events per target), in memory: a restart forgets
it, as it resets the counters.

A drop appears once its cause is known: at once for a timeout or a phantom, at the next
server read for a death before its limit (a KILL or a restart). A snapshot without causes
(made by hand, or by an older fleet peer) is read from ``dropped_totals``, cause unknown.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from exporter.deadline import Clock
from exporter.model import Snapshot
from exporter.summary import utf8_label

WINDOW_SECONDS = 3600.0
# Per target: a process that loses hundreds of sessions an hour does not need each one
# listed; the newest are kept, the totals stay exact in the metrics.
MAX_EVENTS_PER_TARGET = 200


@dataclass(frozen=True, slots=True)
class DropEvent:
    target: str
    process: str
    # Wall-clock time (Unix seconds) of the collection that counted it.
    at: float
    # Sessions counted by that collection for this process.
    count: int
    # Why they died, where known; None shows as "unknown".
    cause: str | None = None


@dataclass(frozen=True, slots=True)
class DropHistory:
    """A value: ``observe`` returns a new history and never edits this one."""

    # Oldest first.
    events: tuple[DropEvent, ...] = ()
    # The dropped_totals last seen, per target.
    totals: Mapping[str, Mapping[str, int]] = field(default_factory=dict)
    # Snapshot.collections of the last snapshot observed; -1 before the first.
    collection: int = -1

    def observe(self, snapshot: Snapshot, at: float, *, window: float = WINDOW_SECONDS,
                limit: int = MAX_EVENTS_PER_TARGET) -> DropHistory:
        """The history after ``snapshot``, collected at ``at`` (Unix seconds).

        A snapshot already seen (a scrape that timed out gets the last one again) changes
        nothing. The first snapshot observed counts from zero if it is the engine's first
        collection; a later one (a history started late) only sets the baseline, rather
        than pass everything counted since start for drops of this moment."""
        if snapshot.collections == self.collection:
            return self
        first = self.collection < 0
        counted_from_zero = not first or snapshot.collections <= 1
        events = [e for e in self.events if e.at > at - window]
        totals: dict[str, Mapping[str, int]] = dict(self.totals)
        for target in snapshot.targets:
            now: dict[str, int] = {}
            counts: list[tuple[str, str, int]] = (
                [(process, cause, count)
                 for (process, cause), count in target.cause_totals.items()]
                if target.cause_totals else
                [(process, "", count) for process, count in target.dropped_totals.items()]
            )
            for raw, cause, count in counts:
                # Names differing in undecodable bytes are one; the cause after a tab.
                label = f"{utf8_label(raw)}\t{cause}"
                now[label] = now.get(label, 0) + count
            before = self.totals.get(target.target, {}) if counted_from_zero else now
            for label, count in sorted(now.items()):
                # A total below the last one means the count restarted: all of it is new.
                previous = before.get(label, 0)
                new = count - previous if count >= previous else count
                if new > 0:
                    process, _, cause = label.rpartition("\t")
                    events.append(DropEvent(target.target, process, at, new, cause or None))
            totals[target.target] = now
        return DropHistory(_bounded(events, limit), totals, snapshot.collections)

    def recent(self, now: float, window: float = WINDOW_SECONDS) -> tuple[DropEvent, ...]:
        """Events of the last ``window`` seconds before ``now``, newest first."""
        return tuple(e for e in reversed(self.events) if e.at > now - window)


def _bounded(events: list[DropEvent], limit: int) -> tuple[DropEvent, ...]:
    per_target: dict[str, int] = {}
    kept: list[DropEvent] = []
    for event in reversed(events):
        seen = per_target.get(event.target, 0)
        if seen < limit:
            per_target[event.target] = seen + 1
            kept.append(event)
    kept.reverse()
    return tuple(kept)


class DropRecorder:
    """The one mutable place: holds the current DropHistory and when the last observed
    collection ran. Touched only on the event loop (or a single-threaded command)."""

    def __init__(self, clock: Clock = time.monotonic, wall: Clock = time.time) -> None:
        self._clock = clock
        self._wall = wall
        self.history = DropHistory()
        # (Snapshot.collections, engine clock, wall clock) of the last observation.
        self._last: tuple[int, float, float] | None = None

    def observe(self, snapshot: Snapshot | None) -> None:
        """Note a collection as it finishes (see exporter.cli's on_collected hook)."""
        if snapshot is None or (self._last is not None and self._last[0] == snapshot.collections):
            return
        wall = self._wall()
        self.history = self.history.observe(snapshot, wall)
        self._last = (snapshot.collections, self._clock(), wall)

    def age(self, snapshot: Snapshot) -> float | None:
        """Seconds since ``snapshot`` was collected, if it is the last one observed."""
        if self._last is None or self._last[0] != snapshot.collections:
            return None
        return max(self._clock() - self._last[1], 0.0)

    def wall(self) -> float:
        return self._wall()

"""Metric families as plain values: what exporter.collector makes of a snapshot, what
exporter.exposition writes as text, and what prometheus_client's own families are made from
(SnapshotCollector.collect, for every other use).

Plain lists of tuples: prometheus_client makes a Sample with a label dict for every row, and
its encoders then sort, check and escape each of them again; for a sidecar's 180 lines that
was most of a scrape's rendering (issue 17, benchmarks/README.md)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

# A histogram row's cumulative buckets: (upper bound as written in `le`, count), +Inf last.
Buckets = Sequence[tuple[str, float]]


class _Family:
    """A family's name (a counter's without `_total`, as OpenMetrics names it), help and
    label names."""

    __slots__ = ("documentation", "labels", "name")
    kind: ClassVar[str]

    def __init__(self, name: str, documentation: str, labels: Sequence[str] = ()) -> None:
        self.name = name
        self.documentation = documentation
        self.labels = tuple(labels)

    def _check(self, values: Sequence[str]) -> None:
        if len(values) != len(self.labels):
            raise ValueError(f"{self.name}: {len(values)} label values for {self.labels}")


class Family(_Family):
    """A gauge or a counter, with its rows (label values, value) in the order added."""

    __slots__ = ("rows",)

    def __init__(self, name: str, documentation: str, labels: Sequence[str] = ()) -> None:
        super().__init__(name, documentation, labels)
        self.rows: list[tuple[Sequence[str], float]] = []

    def add_metric(self, values: Sequence[str], value: float) -> None:
        self._check(values)
        self.rows.append((values, value))


class Gauge(Family):
    __slots__ = ()
    kind = "gauge"


class Counter(Family):
    __slots__ = ()
    kind = "counter"


class Histogram(_Family):
    """A histogram, with its rows (label values, cumulative buckets, sum)."""

    __slots__ = ("rows",)
    kind = "histogram"

    def __init__(self, name: str, documentation: str, labels: Sequence[str] = ()) -> None:
        super().__init__(name, documentation, labels)
        self.rows: list[tuple[Sequence[str], Buckets, float]] = []

    def add_metric(self, values: Sequence[str], buckets: Buckets, sum_value: float) -> None:
        self._check(values)
        self.rows.append((values, buckets, sum_value))


AnyFamily = Family | Histogram

"""Plain metric families (exporter.families) as exposition text: the Prometheus text format
0.0.4 or OpenMetrics 1.0, byte for byte what prometheus_client's encoders write for the same
families as its own (tests/unit/test_render_encoding.py and the golden and fuzz tests render
both ways and compare).

Written straight from the rows: prometheus_client's path makes a Sample and a label dict per
row, then per sample sorts the labels, checks every name against a regex and escapes it.
Here what does not change from one scrape to the next (a family's HELP and TYPE lines, its
label names in the order they are written) is made once per family and kept; per row only
the label values are escaped and the value formatted, the way prometheus_client does it.

The process's own metrics (prometheus_client's process, platform and GC collectors) are
written the same way from their samples (write_metrics), where they are counters and gauges.

Only for names that are classic Prometheus names (every name this exporter exposes; a test
checks it), which every escaping this is used for (underscores, allow-utf-8) leaves as they
are; exporter.web.app sends other escapings to prometheus_client."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from functools import cache
from typing import cast

from prometheus_client import utils
from prometheus_client.metrics_core import Metric

from exporter.families import AnyFamily, Histogram
from exporter.summary import utf8_label

# prometheus_client's own number formatting (Go's, as Prometheus writes numbers); untyped.
_go_number = cast(Callable[[float], str], utils.floatToGoString)
# Its answers, by value: a sidecar's body repeats the same few dozen numbers (bucket
# counts, settings, totals) at every scrape, and floatToGoString is a Python function.
# The bound is small because about ten numbers are new at each scrape (ages, the process's
# CPU and memory): 4,096 kept up to 0.3 MiB of them between clears (tracemalloc over 300
# scrapes, issue 17), 256 keep the repeated ones for about 25 scrapes at a time.
_NUMBERS: dict[float, str] = {}
_NUMBERS_KEPT = 256


def _number(value: float) -> str:
    text = _NUMBERS.get(value)
    if text is None:
        text = _go_number(value)
        # Zero is not kept (0.0 and -0.0 are one key but two texts), nor NaN (never equal).
        if value and value == value:
            if len(_NUMBERS) >= _NUMBERS_KEPT:
                _NUMBERS.clear()
            _NUMBERS[value] = text
    return text


def write(families: Iterable[AnyFamily], *, openmetrics: bool) -> bytes:
    """The families' lines, without OpenMetrics's closing `# EOF` (the caller appends what
    follows them)."""
    out: list[str] = []
    for family in families:
        out.append(_header(family.name, family.kind, family.documentation, openmetrics))
        if isinstance(family, Histogram):
            _histogram(family, out)
            continue
        sample = family.name + "_total" if family.kind == "counter" else family.name
        if not family.labels:
            out.extend(f"{sample} {_number(value)}\n" for _, value in family.rows)
            continue
        keys = _sorted_keys(family.labels)
        for values, value in family.rows:
            labels = ",".join([f'{key}"{_escape(values[i])}"' for key, i in keys])
            out.append(f"{sample}{{{labels}}} {_number(value)}\n")
    text = "".join(out)
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        # Only label values can hold lone surrogates (names, help and numbers are ours):
        # U+FFFD for each, as prometheus_client's families get them (collector.to_metric).
        return utf8_label(text).encode("utf-8")


# What write_metrics writes: the kinds prometheus_client's process, platform and GC
# collectors (and the web config's) make, with their sample names.
_SAMPLE_SUFFIX = {"counter": "_total", "gauge": ""}
_CLASSIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_CLASSIC_NAMES: set[str] = set()  # names checked already: the same few dozen each scrape


def write_metrics(metrics: Iterable[Metric], *, openmetrics: bool) -> bytes | None:
    """prometheus_client's own families (the process's self metrics: exporter.web.app's
    own_metrics), written as its encoder writes them, without the `# EOF` that closes
    OpenMetrics. None for anything else than counters and gauges with classic names and
    no unit, plain samples and no timestamp or exemplar: the caller then has prometheus_client's
    encoder write them (its per-sample path costs about 0.07 ms per scrape, issue 17)."""
    out: list[str] = []
    for metric in metrics:
        suffix = _SAMPLE_SUFFIX.get(metric.type)
        # A unit is an OpenMetrics `# UNIT` line, which exporter.exposition never writes.
        if suffix is None or metric.unit or not _classic(metric.name):
            return None
        out.append(_header(metric.name, metric.type, metric.documentation, openmetrics))
        sample_name = metric.name + suffix
        for sample in metric.samples:
            if (sample.name != sample_name or sample.timestamp is not None
                    or sample.exemplar is not None):
                return None
            if not sample.labels:
                out.append(f"{sample_name} {_number(sample.value)}\n")
                continue
            if not all(_classic(name) for name in sample.labels):
                return None
            labels = ",".join([f'{name}="{_escape(value)}"'
                               for name, value in sorted(sample.labels.items())])
            out.append(f"{sample_name}{{{labels}}} {_number(sample.value)}\n")
    text = "".join(out)
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        return None  # a lone surrogate: prometheus_client's encoder says what it does


def _classic(name: str) -> bool:
    if name in _CLASSIC_NAMES:
        return True
    if _CLASSIC_NAME.fullmatch(name) is None:
        return False
    _CLASSIC_NAMES.add(name)
    return True


def _histogram(family: Histogram, out: list[str]) -> None:
    # prometheus_client's HistogramMetricFamily.add_metric: each bucket with `le` among the
    # labels, then _count (the +Inf bucket) and _sum, unless a bucket bound is negative.
    # Labels are written sorted by name, `le` among them: each row's labels before and
    # after `le` are joined once, and each bucket line puts its bound between them.
    name = family.name
    with_le = _sorted_keys((*family.labels, "le"))
    at = [i for _key, i in with_le].index(len(family.labels))
    keys = _sorted_keys(family.labels)
    bucket = name + "_bucket{"
    for values, buckets, total in family.rows:
        escaped = [_escape(v) for v in values]
        before = "".join([f'{key}"{escaped[i]}",' for key, i in with_le[:at]])
        after = "".join([f',{key}"{escaped[i]}"' for key, i in with_le[at + 1:]])
        out.extend([f'{bucket}{before}le="{_escape(bound)}"{after}}} {_number(count)}\n'
                    for bound, count in buckets])
        if float(buckets[0][0]) >= 0:
            labels = ",".join([f'{key}"{escaped[i]}"' for key, i in keys])
            braces = f"{{{labels}}}" if labels else ""
            out.append(f"{name}_count{braces} {_number(buckets[-1][1])}\n")
            out.append(f"{name}_sum{braces} {_number(total)}\n")


def _escape(value: str) -> str:
    """A label value, escaped as prometheus_client's encoders do (both formats)."""
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


@cache
def _sorted_keys(labels: tuple[str, ...]) -> tuple[tuple[str, int], ...]:
    """Each label's `name=` and its position among the values, in the order prometheus_client
    writes them (sorted by name)."""
    return tuple((f"{name}=", i) for i, name in sorted(enumerate(labels), key=lambda p: p[1]))


@cache
def _header(name: str, kind: str, documentation: str, openmetrics: bool) -> str:
    if openmetrics:
        # OpenMetrics escapes the help text like a label value.
        return f"# HELP {name} {_escape(documentation)}\n# TYPE {name} {kind}\n"
    # The text format names a counter with its _total, and escapes no double quote.
    shown = name + "_total" if kind == "counter" else name
    help_text = documentation.replace("\\", r"\\").replace("\n", r"\n")
    return f"# HELP {shown} {help_text}\n# TYPE {shown} {kind}\n"

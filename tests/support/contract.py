"""The metric contract of docs/metrics.md, and checks of PromQL against it.

- `documented_metrics()` reads the metric tables of docs/metrics.md: name, type, labels and
  the documented values of enumerated labels (state, phase, scope, ...).
- `series_names()` is every series name those metrics produce (`_bucket`/`_sum`/`_count`
  for histograms).
- `metric_names(exprs)` parses PromQL with Prometheus's own grammar
  (dashboards/typecheck/promql-names.sh) and returns the metric names of every selector.
- `contract_fixture()` is one promtool input series per documented label combination, so a
  query evaluated on it by `promtool test rules` returns nothing if it names a metric, a
  label or a label value the contract does not have.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
METRICS_DOC = REPO / "docs" / "metrics.md"
RULES = REPO / "dashboards" / "mysql-idle-exporter.rules.yml"
PROMQL_NAMES = REPO / "dashboards" / "typecheck" / "promql-names.sh"

# Series Prometheus itself adds for every scrape target; rules may use them.
PROMETHEUS_SERIES = frozenset({"up", "scrape_duration_seconds", "scrape_samples_scraped"})

# Fixture values for the labels the documentation lists without enumerating their values.
FREE_LABEL_VALUES = {
    "target": "db:3306",
    "process": "worker",
    "comm": "python3",
    "pid": "4242",
    "session_id": "17",
    "user": "app",
    "db": "shop",
    "version": "0.1.0",
    "python_version": "3.11.2",
    "source": "performance_schema",
    "pod": "worker-7d9f",
    "container": "3f2a1b0c9d8e",
    "pod_uid": "7d2e5a1b-3c4d-4e5f-8a9b-0c1d2e3f4a5b",
    "runtime": "containerd",
}
FIXTURE_SCRAPE_LABELS = {"job": "mysql-idle", "instance": "app-1:9104"}


@dataclass(frozen=True)
class Metric:
    name: str
    type: str
    labels: tuple[str, ...]
    # documented values of enumerated labels, e.g. {"phase": ("sockets", ...)}
    values: dict[str, tuple[str, ...]]


def documented_metrics(doc: Path = METRICS_DOC) -> dict[str, Metric]:
    text = doc.read_text(encoding="utf-8")
    prose = " ".join(text.split())
    states = re.search(r"States are the ones defined in the README: (.+?)\.", prose)
    if not states:
        raise ValueError(f"{doc}: the sentence listing the states is missing")
    state_values = tuple(re.findall(r"`(\w+)`", states.group(1)))
    buckets = re.search(r"^Histogram buckets \(seconds\): ([\d, ]+)\.", text, re.M)
    if not buckets:
        raise ValueError(f"{doc}: the histogram bucket list is missing")
    metrics: dict[str, Metric] = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 4 or not re.fullmatch(r"`[a-z_:][a-z0-9_:]*`", cells[0]):
            continue
        name = cells[0].strip("`")
        mtype = cells[1].split()[0]
        labels: list[str] = []
        values: dict[str, tuple[str, ...]] = {}
        # "target, scope (`global`, `interactive`)": split at commas outside parentheses
        for part in re.split(r",\s*(?![^()]*\))", cells[2]):
            m = re.match(r"(\w+)\s*(?:\((.*)\))?", part.strip())
            if not m:
                continue
            labels.append(m.group(1))
            if m.group(2):
                values[m.group(1)] = tuple(re.findall(r"`([^`]+)`", m.group(2)))
        if "state" in labels:
            values["state"] = state_values
        if mtype == "histogram":
            values["le"] = (*(b.strip() for b in buckets.group(1).split(",")), "+Inf")
        metrics[name] = Metric(name, mtype, tuple(labels), values)
    if not metrics:
        raise ValueError(f"{doc}: no metric tables found")
    return metrics


def series_names(metrics: dict[str, Metric]) -> set[str]:
    names: set[str] = set()
    for m in metrics.values():
        if m.type == "histogram":
            names.update(f"{m.name}{suffix}" for suffix in ("_bucket", "_sum", "_count"))
        else:
            names.add(m.name)
    return names


def metric_names(exprs: list[str]) -> list[tuple[str, list[str], list[str]]]:
    """(expr, metric names, syntax errors) for each expression, parsed with the PromQL grammar
    Prometheus's own UI uses (npm @prometheus-io/lezer-promql, installed on first use)."""
    for tool in ("node", "npm"):
        if shutil.which(tool) is None:
            raise RuntimeError(f"{tool} is required to parse PromQL (node >= 18 and npm)")
    proc = subprocess.run(
        [str(PROMQL_NAMES)],
        input=json.dumps(exprs),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{PROMQL_NAMES} failed ({proc.returncode}):\n{proc.stderr}")
    return [(r["expr"], r["metrics"], r["errors"]) for r in json.loads(proc.stdout)]


def _label_sets(metric: Metric) -> list[dict[str, str]]:
    sets: list[dict[str, str]] = [dict(FIXTURE_SCRAPE_LABELS)]
    for label in metric.labels:
        if label in metric.values:
            choices = metric.values[label]
        elif label in FREE_LABEL_VALUES:
            choices = (FREE_LABEL_VALUES[label],)
        else:
            raise ValueError(f"{metric.name}: no fixture value for label {label!r}")
        sets = [{**s, label: v} for s in sets for v in choices]
    if metric.type == "histogram" and "le" not in metric.labels:
        sets = [{**s, "le": le} for s in sets for le in metric.values["le"]]
    return sets


def _selector(name: str, labels: dict[str, str]) -> str:
    inner = ",".join(f"{k}={json.dumps(v)}" for k, v in sorted(labels.items()))
    return f"{name}{{{inner}}}"


def contract_fixture(metrics: dict[str, Metric], samples: int = 120) -> list[dict[str, str]]:
    """promtool `input_series` for every documented metric and label combination, 1m apart.

    Gauges are 1, counters grow by 1 a minute, histogram buckets are cumulative (bucket i
    holds i+1 sessions), so every documented series exists and is non-zero.
    """
    series: list[dict[str, str]] = []
    for m in metrics.values():
        for labels in _label_sets(m):
            if m.type == "histogram":
                le = labels.pop("le")
                index = m.values["le"].index(le)
                series.append(
                    {
                        "series": _selector(f"{m.name}_bucket", {**labels, "le": le}),
                        "values": f"{index + 1}x{samples}",
                    }
                )
                if index == 0:
                    total = len(m.values["le"])
                    series.append(
                        {
                            "series": _selector(f"{m.name}_count", labels),
                            "values": f"{total}x{samples}",
                        }
                    )
                    series.append(
                        {
                            "series": _selector(f"{m.name}_sum", labels),
                            "values": f"{total * 100}x{samples}",
                        }
                    )
            elif m.type == "counter":
                series.append({"series": _selector(m.name, labels), "values": f"0+1x{samples}"})
            else:
                series.append({"series": _selector(m.name, labels), "values": f"1x{samples}"})
    return series

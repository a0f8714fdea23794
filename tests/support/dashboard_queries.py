"""The PromQL a Grafana dashboard runs, with its template variables made concrete.

Used by the dashboard tests here, and by end-to-end tests that evaluate every panel query
against a live Prometheus scraping the exporter:

    from tests.support.dashboard_queries import DASHBOARD, dashboard_queries

    for title, expr in dashboard_queries(DASHBOARD):                    # every target and process
        ...
    dashboard_queries(DASHBOARD, {"target": "127.0.0.1:3306"})          # one target
    dashboard_queries(DASHBOARD, {"process": ["worker", "python3"]})    # two processes

Variables (`$v`, `${v}`, `${v:format}`, `[[v]]`) become regular expressions that match the
given label values (escaped), or `.*` for a variable not given (Grafana's "All"); the
dashboard only uses `$target` and `$process` inside `=~` matchers, which the tests check.
Grafana's built-in variables get fixed values: `$__rate_interval` and `$__interval` 1m,
`$__range` 1h (see BUILTINS). An unknown variable raises ValueError, so nothing with a `$`
reaches Prometheus.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
DASHBOARD = REPO / "dashboards" / "mysql-idle-exporter.json"

# Grafana's built-in variables, with the values an end-to-end test can evaluate: the range
# and interval of a one-hour dashboard on a 15-60 s scrape.
BUILTINS: dict[str, str] = {
    "__rate_interval": "1m",
    "__interval": "1m",
    "__interval_ms": "60000",
    "__range": "1h",
    "__range_s": "3600",
    "__range_ms": "3600000",
}

VariableValues = Mapping[str, str | Sequence[str]]

_VARIABLE = re.compile(
    r"\$\{(?P<braced>\w+)(?::[^}]*)?\}"  # ${name} or ${name:format}
    r"|\[\[(?P<bracketed>\w+)(?::[^\]]*)?\]\]"  # [[name]] or [[name:format]] (deprecated)
    r"|\$(?P<plain>\w+)"  # $name
)
# Characters Grafana's regex formatting escapes; RE2 accepts a backslash before each.
_REGEX_SPECIAL = re.compile(r"([\\^$*+?.()|\[\]{}/])")


def load_dashboard(path: str | Path = DASHBOARD) -> dict[str, Any]:
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a dashboard is a JSON object")
    return data


def iter_panels(dashboard: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, rows included, with the panels of collapsed rows."""
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", []) if panel.get("type") == "row" else []


def variable_names(expr: str) -> list[str]:
    """Names of the variables an expression refers to, in order, built-ins included."""
    return [
        m.group("braced") or m.group("bracketed") or m.group("plain")
        for m in _VARIABLE.finditer(expr)
    ]


def regex_for(values: str | Sequence[str]) -> str:
    """A PromQL-string-safe RE2 regex matching exactly the given label value(s)."""
    items = [values] if isinstance(values, str) else list(values)
    if not items:
        raise ValueError("a variable needs at least one value")
    escaped = [_REGEX_SPECIAL.sub(r"\\\1", v) for v in items]
    regex = escaped[0] if len(escaped) == 1 else "(?:" + "|".join(escaped) + ")"
    # the regex sits inside a double-quoted PromQL string
    return regex.replace("\\", "\\\\").replace('"', '\\"')


def substitute(
    expr: str,
    variables: VariableValues | None = None,
    all_variables: frozenset[str] | set[str] = frozenset(),
    builtins: Mapping[str, str] | None = None,
) -> str:
    """Replace Grafana variables in one expression; see the module docstring.

    `variables` gives label values for some variables; the names in `all_variables` that
    are not given match everything (`.*`); built-ins take their value from `builtins`, else
    from BUILTINS; any other variable raises ValueError.
    """
    given = dict(variables or {})
    fixed = {**BUILTINS, **(builtins or {})}

    def replace(m: re.Match[str]) -> str:
        name = m.group("braced") or m.group("bracketed") or m.group("plain")
        if name in fixed:
            return fixed[name]
        if name in given:
            return regex_for(given[name])
        if name in all_variables:
            return ".*"
        raise ValueError(f"unknown variable ${name} in {expr!r}")

    return _VARIABLE.sub(replace, expr)


def dashboard_queries(
    path: str | Path = DASHBOARD,
    variables: VariableValues | None = None,
    builtins: Mapping[str, str] | None = None,
) -> list[tuple[str, str]]:
    """(panel title, PromQL) for every visible Prometheus target of every panel, in order.

    `variables` maps a template variable to the label value(s) to select; the others match
    everything. Raises ValueError for a variable the dashboard does not define.
    `builtins` overrides BUILTINS, e.g. {"__rate_interval": "2m"} for a 30 s scrape
    (Grafana uses at least four scrape intervals there, so rate() has two samples).
    """
    dashboard = load_dashboard(path)
    defined = {v["name"] for v in dashboard.get("templating", {}).get("list", [])}
    unknown = set(variables or {}) - defined
    if unknown:
        raise ValueError(f"variables not defined by the dashboard: {sorted(unknown)}")
    out: list[tuple[str, str]] = []
    for panel in iter_panels(dashboard):
        for target in panel.get("targets", []):
            if target.get("hide") or "expr" not in target:
                continue
            expr = substitute(target["expr"], variables, defined, builtins)
            out.append((panel.get("title", ""), expr))
    return out


def variable_queries(
    path: str | Path = DASHBOARD, variables: VariableValues | None = None
) -> list[tuple[str, str]]:
    """(variable name, PromQL) for each `label_values(selector, label)` template variable.

    The PromQL is `count by (label) (selector)`: the label's values are the result's
    `label` values, so an end-to-end test can check that each variable lists something.
    """
    dashboard = load_dashboard(path)
    defined = {v["name"] for v in dashboard.get("templating", {}).get("list", [])}
    out: list[tuple[str, str]] = []
    for var in dashboard.get("templating", {}).get("list", []):
        if var.get("type") != "query":
            continue
        query = var.get("query")
        text = query.get("query") if isinstance(query, dict) else query
        if not isinstance(text, str):
            raise ValueError(f"variable {var['name']}: no query text")
        m = re.fullmatch(r"\s*label_values\((?P<selector>.+),\s*(?P<label>\w+)\s*\)\s*", text)
        if not m:
            raise ValueError(f"variable {var['name']}: not a label_values() query: {text!r}")
        selector = substitute(m.group("selector"), variables, defined)
        out.append((var["name"], f"count by ({m.group('label')}) ({selector})"))
    return out

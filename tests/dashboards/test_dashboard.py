"""The Grafana dashboard: typed against Grafana 11, wired to ${datasource}, queries on contract."""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.support.contract import (
    REPO,
    contract_fixture,
    documented_metrics,
    metric_names,
    series_names,
)
from tests.support.dashboard_queries import (
    DASHBOARD,
    dashboard_queries,
    iter_panels,
    load_dashboard,
    regex_for,
    variable_names,
    variable_queries,
)
from tests.support.promtool import (
    TYPECHECK,
    output,
    promtool_check_exprs,
    promtool_expect_data,
    run,
)

DOC = REPO / "docs" / "dashboard.md"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
BUILTIN_PREFIX = "__"


def panels() -> list[dict[str, Any]]:
    return [p for p in iter_panels(load_dashboard()) if p["type"] != "row"]


def targets() -> list[tuple[dict[str, Any], dict[str, Any]]]:
    return [(p, t) for p in panels() for t in p.get("targets", [])]


# --- the type check against Grafana's own types -------------------------------------------


def test_dashboard_type_checks_against_grafana_schema(node: str) -> None:
    proc = run([TYPECHECK, DASHBOARD])
    assert proc.returncode == 0, output(proc)
    assert f"{DASHBOARD}: OK" in proc.stdout, output(proc)


def _panel(d: dict[str, Any], kind: str) -> dict[str, Any]:
    return next(p for p in d["panels"] if p["type"] == kind)


def _set(path: list[str | int], value: Any, kind: str | None = None) -> Callable[[Any], None]:
    def mutate(d: dict[str, Any]) -> None:
        node: Any = _panel(d, kind) if kind else d
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value

    return mutate


BROKEN = {
    "gridPos is a string": _set(["gridPos"], "x", "timeseries"),
    "legend display mode typo": _set(["options", "legend", "displayMode"], "lists", "timeseries"),
    "stat option missing": lambda d: _panel(d, "stat")["options"].pop("reduceOptions"),
    "threshold mode typo": _set(["fieldConfig", "defaults", "thresholds", "mode"], "abs", "stat"),
    "table footer fields as string": _set(["options", "footer", "fields"], "", "table"),
    "query format typo": _set(["targets", 0, "format"], "tabel", "table"),
    "query without expr": lambda d: _panel(d, "timeseries")["targets"][0].pop("expr"),
    "unknown panel type": _set(["type"], "timeseriez", "timeseries"),
    "variable type typo": _set(["templating", "list", 1, "type"], "querry"),
    "schemaVersion as string": _set(["schemaVersion"], "39"),
    "unknown dashboard field": _set(["refreshInterval"], "1m"),
}


@pytest.mark.parametrize("mutate", BROKEN.values(), ids=BROKEN.keys())
def test_type_check_fails_on_a_broken_dashboard(
    node: str, tmp_path: Path, mutate: Callable[[Any], None]
) -> None:
    broken = copy.deepcopy(load_dashboard())
    mutate(broken)
    path = tmp_path / "broken.json"
    path.write_text(json.dumps(broken, indent=2))
    proc = run([TYPECHECK, path])
    assert proc.returncode != 0, f"the type check accepted a broken dashboard\n{output(proc)}"
    assert f"{path}: FAILED" in proc.stderr, output(proc)


def test_type_check_pins_grafana_11_types() -> None:
    typecheck = TYPECHECK.parent
    package = json.loads((typecheck / "package.json").read_text())
    lock = json.loads((typecheck / "package-lock.json").read_text())
    for name, version in package["devDependencies"].items():
        assert re.fullmatch(r"\d+\.\d+\.\d+", version), f"{name}: pin an exact version"
        assert lock["packages"][f"node_modules/{name}"]["version"] == version, name
    assert package["devDependencies"]["@grafana/schema"].startswith("11.")
    assert "typescript" in package["devDependencies"]


def test_type_check_fails_on_invalid_json(node: str, tmp_path: Path) -> None:
    path = tmp_path / "truncated.json"
    path.write_text(DASHBOARD.read_text()[:500])
    proc = run([TYPECHECK, path])
    assert proc.returncode != 0, output(proc)


# --- wiring: data source and template variables -------------------------------------------


def test_datasource_variable_is_a_prometheus_picker() -> None:
    variables = {v["name"]: v for v in load_dashboard()["templating"]["list"]}
    ds = variables["datasource"]
    assert ds["type"] == "datasource" and ds["query"] == "prometheus", ds


def test_every_panel_query_and_variable_uses_the_datasource_variable() -> None:
    dashboard = load_dashboard()
    for panel in iter_panels(dashboard):
        if panel["type"] == "row":
            assert not panel.get("targets"), f"row {panel['title']!r} has queries"
            continue
        assert panel.get("datasource") == DATASOURCE, f"{panel['title']}: {panel.get('datasource')}"
        assert panel.get("targets"), f"{panel['title']}: no queries"
        for target in panel["targets"]:
            assert target.get("datasource") == DATASOURCE, f"{panel['title']}: {target}"
    for var in dashboard["templating"]["list"]:
        if var["type"] == "query":
            assert var.get("datasource") == DATASOURCE, f"variable {var['name']}"
    text = json.dumps(dashboard)
    assert '"uid": "prometheus"' not in text and "${DS_" not in text, "hard-coded data source"


@pytest.mark.parametrize(
    ("name", "metric"),
    [("target", "mysql_idle_up"), ("process", "mysql_idle_sessions"),
     ("pod", "mysql_idle_sessions"), ("container", "mysql_idle_sessions")],
)
def test_target_and_process_variables(name: str, metric: str) -> None:
    var = {v["name"]: v for v in load_dashboard()["templating"]["list"]}[name]
    assert var["type"] == "query"
    assert var["multi"] is True and var["includeAll"] is True and var["allValue"] == ".*"
    assert re.fullmatch(rf"label_values\({metric}(\{{.*\}})?, {name}\)", var["query"]), var
    assert var["refresh"] == 2, "refresh the list when the time range changes"


def test_variables_are_only_used_in_regex_matchers() -> None:
    for panel, target in targets():
        expr = target["expr"]
        for m in re.finditer(r"\$\{?(\w+)", expr):
            if m.group(1).startswith(BUILTIN_PREFIX):
                continue
            before = expr[: m.start()]
            assert re.search(r'=~\s*"$', before), (
                f"{panel['title']}: ${m.group(1)} must sit right inside an =~ matcher "
                f"(multi-value and All need a regex): {expr}"
            )


# --- what an SRE needs on it ------------------------------------------------------------------


def test_dashboard_metadata() -> None:
    d = load_dashboard()
    assert d["uid"] == "mysql-idle-exporter" and len(d["uid"]) <= 40
    assert d["title"] and d.get("id") is None
    assert "mysql-idle-exporter" in d["tags"]
    assert d["refresh"] in {"30s", "1m", "5m"}
    assert 39 <= d["schemaVersion"] <= 41, "Grafana 10.4 .. 11.x"


def test_panels_are_described_laid_out_and_uniquely_identified() -> None:
    all_panels = list(iter_panels(load_dashboard()))
    ids = [p["id"] for p in all_panels]
    assert len(ids) == len(set(ids)), "duplicate panel ids"
    cells: dict[tuple[int, int], str] = {}
    for p in all_panels:
        g = p["gridPos"]
        assert g["x"] >= 0 and g["x"] + g["w"] <= 24, f"{p['title']}: outside the 24 columns"
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, f"{p['title']} overlaps {cells[(x, y)]}"
                cells[(x, y)] = p["title"]
        if p["type"] != "row":
            assert len(p.get("description", "")) > 40, f"{p['title']}: describe the panel"


def _panel_using(metric: str, kind: str | None = None) -> dict[str, Any]:
    found = [
        p
        for p in panels()
        if any(re.search(rf"\b{metric}\b", t["expr"]) for t in p["targets"])
        and (kind is None or p["type"] == kind)
    ]
    assert found, f"no {kind or ''} panel uses {metric}"
    return found[0]


def test_required_panels_exist() -> None:
    by_state = _panel_using("mysql_idle_sessions", "timeseries")
    assert any("by (state)" in t["expr"] for t in by_state["targets"])
    assert by_state["fieldConfig"]["defaults"]["custom"]["stacking"]["mode"] == "normal"
    headroom = _panel_using("mysql_idle_min_headroom_seconds", "timeseries")
    assert any("mysql_idle_headroom_threshold_seconds" in t["expr"] for t in headroom["targets"])
    _panel_using("mysql_idle_session_idle_seconds_bucket", "heatmap")
    _panel_using("mysql_idle_client_idle_seconds_bucket", "heatmap")
    table = _panel_using("mysql_idle_session_headroom_seconds", "table")
    assert all(t.get("instant") and t.get("format") == "table" for t in table["targets"])
    _panel_using("mysql_idle_sessions_dropped_total", "timeseries")
    keepalive = _panel_using("mysql_idle_sockets_keepalive", "timeseries")
    assert any("mysql_idle_sessions" in t["expr"] for t in keepalive["targets"])
    side_by_side = _panel_using("mysql_idle_client_idle_seconds_bucket", "timeseries")
    assert any("mysql_idle_session_idle_seconds" in t["expr"] for t in side_by_side["targets"])
    for metric in (
        "mysql_idle_up",
        "mysql_idle_full_processlist",
        "mysql_idle_correlation_working",
    ):
        _panel_using(metric, "state-timeline")
    phases = _panel_using("mysql_idle_scrape_duration_seconds", "timeseries")
    assert any("phase" in t["expr"] for t in phases["targets"])


def test_current_distributions_are_not_rated() -> None:
    """The histograms describe the sessions of the moment: rate()/increase() is meaningless."""
    for panel, target in targets():
        if "_idle_seconds_bucket" in target["expr"] or "_idle_seconds_count" in target["expr"]:
            assert not re.search(r"\b(i?rate|increase|delta)\s*\(", target["expr"]), (
                f"{panel['title']}: {target['expr']}"
            )


def test_dashboard_doc_describes_every_panel() -> None:
    doc = DOC.read_text(encoding="utf-8")
    headings = {h.strip() for h in re.findall(r"^#{2,4}\s+(.+)$", doc, re.M)}
    for panel in panels():
        assert panel["title"] in headings, f"docs/dashboard.md: no section '{panel['title']}'"


# --- the queries: helper, syntax, metric names, data on the contract ----------------------


def test_dashboard_queries_lists_every_target_without_variables() -> None:
    queries = dashboard_queries(DASHBOARD)
    assert len(queries) == len(targets())
    assert [t for t, _ in queries] == [p["title"] for p, _ in targets()]
    for title, expr in queries:
        assert "$" not in expr and "[[" not in expr, f"{title}: {expr}"
    assert any('target=~".*"' in e for _, e in queries)
    assert any("[1m]" in e for _, e in queries), "$__rate_interval should become 1m"


def test_dashboard_queries_selects_given_values_exactly() -> None:
    queries = dashboard_queries(
        DASHBOARD, {"target": "127.0.0.1:3306", "process": ["worker", "php-fpm"]}
    )
    assert any(r'target=~"127\\.0\\.0\\.1:3306"' in e for _, e in queries)
    assert any('process=~"(?:worker|php-fpm)"' in e for _, e in queries)
    assert regex_for('a"b') == 'a\\"b'
    longer = dashboard_queries(DASHBOARD, builtins={"__rate_interval": "4m"})
    assert any("[4m]" in e for _, e in longer)
    with pytest.raises(ValueError, match="not defined"):
        dashboard_queries(DASHBOARD, {"instance": "x"})


def test_variable_names_understands_every_grafana_syntax() -> None:
    expr = 'a{x=~"$target", y=~"${process}", z=~"${process:regex}", w=~"[[target]]"}[$__range]'
    assert variable_names(expr) == ["target", "process", "process", "target", "__range"]


def _all_exprs() -> list[str]:
    return [e for _, e in dashboard_queries(DASHBOARD)] + [e for _, e in variable_queries()]


def test_dashboard_queries_are_valid_promql(promtool: str, tmp_path: Path) -> None:
    proc = promtool_check_exprs(promtool, _all_exprs(), tmp_path)
    assert proc.returncode == 0, output(proc)


def test_dashboard_metric_names_are_documented(node: str) -> None:
    allowed = series_names(documented_metrics())
    for expr, names, errors in metric_names(_all_exprs()):
        assert not errors, f"{expr!r}: {errors}"
        unknown = set(names) - allowed
        assert not unknown, f"{expr!r} uses metrics not in docs/metrics.md: {sorted(unknown)}"


def test_every_dashboard_query_returns_data_on_the_documented_metrics(
    promtool: str, tmp_path: Path
) -> None:
    """Evaluated by promtool on one series per documented metric and label value, each query
    returns something: a misspelt metric, label or label value would return nothing."""
    fixture = contract_fixture(documented_metrics())
    proc = promtool_expect_data(promtool, _all_exprs(), fixture, tmp_path)
    assert proc.returncode == 0, output(proc)


@pytest.mark.parametrize(
    "expr",
    [
        'sum(mysql_idle_sessions{state="droped"})',
        'max(mysql_idle_scrape_duration_seconds{phase="server_read"})',
        "sum by (le) (mysql_idle_session_idle_second_bucket)",
    ],
)
def test_data_check_notices_names_off_the_contract(
    promtool: str, tmp_path: Path, expr: str
) -> None:
    fixture = contract_fixture(documented_metrics())
    proc = promtool_expect_data(promtool, [expr], fixture, tmp_path)
    assert proc.returncode != 0, output(proc)

"""The Prometheus rules in dashboards/: valid, unit-tested, actionable, and on the contract."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.contract import (
    PROMETHEUS_SERIES,
    REPO,
    RULES,
    documented_metrics,
    metric_names,
    series_names,
)
from tests.support.promtool import output, run

RULE_TESTS = sorted((REPO / "dashboards" / "tests").glob("*.test.yml"))
RUNBOOK = REPO / "docs" / "runbook.md"
RUNBOOK_URL = (
    "https://github.com/mysql-idle-exporter/mysql-idle-exporter/blob/main/docs/runbook.md#"
)
SEVERITIES = {"critical", "warning", "info"}
# With the default --risk.headroom an idle session stays at_risk for 300 s before it is
# dropped; the slowest supported scrape interval is 60 s.
AT_RISK_WINDOW_S = 300
SLOWEST_SCRAPE_S = 60


def load_groups() -> list[dict[str, Any]]:
    groups: list[dict[str, Any]] = yaml.safe_load(RULES.read_text())["groups"]
    return groups


def alert_rules() -> list[dict[str, Any]]:
    return [r for g in load_groups() for r in g["rules"] if "alert" in r]


def recording_rules() -> list[dict[str, Any]]:
    return [r for g in load_groups() for r in g["rules"] if "record" in r]


def load_rule_tests() -> list[dict[str, Any]]:
    return [t for path in RULE_TESTS for t in yaml.safe_load(path.read_text())["tests"]]


def seconds(duration: str) -> float:
    """A Prometheus duration ("1m30s", "5m") in seconds."""
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}
    parts = re.findall(r"(\d+)(ms|s|m|h|d|w|y)", duration)
    if not parts or "".join(n + u for n, u in parts) != duration:
        raise ValueError(f"not a Prometheus duration: {duration!r}")
    return sum(int(n) * units[u] for n, u in parts)


def github_anchors(markdown: str) -> set[str]:
    """The anchors GitHub gives the headings of a Markdown document."""
    anchors = set()
    for m in re.finditer(r"^#{1,6}\s+(.+?)\s*#*\s*$", markdown, re.M):
        text = re.sub(r"[`*_]|<[^>]+>", "", m.group(1)).strip().lower()
        anchors.add(re.sub(r"[^\w\- ]", "", text).replace(" ", "-"))
    return anchors


def annotation_queries(rule: dict[str, Any]) -> list[str]:
    """PromQL run by the `query` template function in a rule's annotations, %q filled in."""
    queries = []
    for text in rule.get("annotations", {}).values():
        for m in re.finditer(r'printf\s+"((?:[^"\\]|\\.)*)"[^}]*\|\s*query', text):
            queries.append(m.group(1).replace('\\"', '"').replace("%q", '"x"'))
    return queries


def test_rule_file_passes_promtool_check(promtool: str) -> None:
    proc = run([promtool, "check", "rules", RULES])
    assert proc.returncode == 0, output(proc)
    assert "SUCCESS" in proc.stdout, output(proc)


def test_rule_unit_tests_pass(promtool: str) -> None:
    assert RULE_TESTS, "no dashboards/tests/*.test.yml"
    proc = run([promtool, "test", "rules", *RULE_TESTS])
    assert proc.returncode == 0, output(proc)
    assert proc.stdout.count("SUCCESS") == len(RULE_TESTS), output(proc)


def test_every_alert_is_unit_tested_firing_with_exact_labels_and_quiet() -> None:
    fired: dict[str, list[dict[str, Any]]] = {}
    quiet: set[str] = set()
    for test in load_rule_tests():
        for case in test.get("alert_rule_test", []):
            if case.get("exp_alerts"):
                fired.setdefault(case["alertname"], []).extend(case["exp_alerts"])
            else:
                quiet.add(case["alertname"])
    for rule in alert_rules():
        name = rule["alert"]
        assert name in fired, f"{name}: no unit test where it fires"
        assert name in quiet, f"{name}: no unit test where it does not fire"
        for expected in fired[name]:
            labels = expected.get("exp_labels", {})
            assert labels.get("alertname") == name and labels.get("severity"), (
                f"{name}: a firing case does not state its exact labels: {labels}"
            )
            annotations = expected.get("exp_annotations", {})
            missing = {"summary", "description", "runbook_url"} - set(annotations)
            assert not missing, f"{name}: a firing case does not check {sorted(missing)}"


def test_every_recording_rule_value_is_unit_tested() -> None:
    tested = {
        case["expr"].strip()
        for test in load_rule_tests()
        for case in test.get("promql_expr_test", [])
        if case.get("exp_samples")
    }
    for rule in recording_rules():
        assert rule["record"] in tested, f"{rule['record']}: no promql_expr_test of its value"


@pytest.mark.parametrize("rule", alert_rules(), ids=lambda r: r["alert"])
def test_alert_is_actionable(rule: dict[str, Any]) -> None:
    name = rule["alert"]
    assert re.fullmatch(r"MySQLIdle[A-Z]\w+", name), name
    assert rule.get("labels", {}).get("severity") in SEVERITIES, f"{name}: severity"
    annotations = rule.get("annotations", {})
    for key in ("summary", "description", "runbook_url"):
        assert annotations.get(key, "").strip(), f"{name}: no {key}"
    for key in ("summary", "description"):
        # every message names what it is about: the target, and the process or the exporter
        assert "$labels.target" in annotations[key] or "$labels.instance" in annotations[key]
    if "process" in rule["expr"] or "mysql_idle_sessions" in rule["expr"]:
        assert "$labels.process" in annotations["description"], f"{name}: names no process"
    assert annotations["runbook_url"] == RUNBOOK_URL + name.lower(), (
        f"{name}: runbook_url should be {RUNBOOK_URL + name.lower()}"
    )


def test_runbook_has_a_section_for_every_alert() -> None:
    anchors = github_anchors(RUNBOOK.read_text(encoding="utf-8"))
    for rule in alert_rules():
        anchor = rule["annotations"]["runbook_url"].rsplit("#", 1)[1]
        assert anchor in anchors, f"docs/runbook.md has no heading with anchor #{anchor}"


def test_runbook_links_resolve() -> None:
    text = RUNBOOK.read_text(encoding="utf-8")
    anchors = github_anchors(text)
    for anchor in re.findall(r"\]\(#([^)]+)\)", text):
        assert anchor in anchors, f"docs/runbook.md links to missing #{anchor}"
    for path in re.findall(r"\]\(([^)#:]+\.md)\)", text):
        assert (RUNBOOK.parent / path).is_file(), f"docs/runbook.md links to missing {path}"


def test_alert_delays_fit_inside_the_at_risk_window() -> None:
    groups = load_groups()
    for group in groups:
        interval = seconds(group.get("interval", "1m"))
        for rule in group["rules"]:
            if "alert" not in rule:
                continue
            wait = seconds(rule.get("for", "0s"))
            assert wait <= AT_RISK_WINDOW_S, f"{rule['alert']}: for {rule['for']} > 300 s"
            if rule["alert"] == "MySQLIdleSessionsAboutToBeDropped":
                # seen within one scrape, pending within one evaluation, then `for`
                worst = SLOWEST_SCRAPE_S + interval + wait
                assert worst < AT_RISK_WINDOW_S, (
                    f"an at_risk session can be dropped {AT_RISK_WINDOW_S} s after crossing "
                    f"the threshold, but the alert may take {worst} s to fire"
                )


# Changes to the rules that the unit tests must notice.
MUTATIONS = [
    ("at_risk alert without for", "        for: 1m\n", "        for: 0m\n"),
    (
        "dead sessions for 5m",
        "        for: 3m\n        labels:\n          severity: warning\n"
        '        annotations:\n          summary: "{{ $labels.process }} holds dead',
        "        for: 5m\n        labels:\n          severity: warning\n"
        '        annotations:\n          summary: "{{ $labels.process }} holds dead',
    ),
    ("phantom alert on the wrong state", 'state="phantom"} > 0', 'state="unmatched"} > 0'),
    ("repeated drops at 4", "increase1h >= 3", "increase1h >= 4"),
    ("drops per replica", "sum without (instance, pod, container) (increase(",
     "sum without () (increase("),
    (
        "target down not suppressing correlation",
        "unless on (job, instance, target)",
        "and on (job, instance, target)",
    ),
    ("absent alert on any job", "and on (job)\n", "or on (job)\n"),
    (
        "absent alert without the job's history",
        "(max_over_time(job:mysql_idle_build_info:count[1d]) > 0)",
        "(job:mysql_idle_build_info:count > 0)",
    ),
    ("slow collection on any phase", 'phase="total"} > 5', "} > 5"),
    (
        "keepalive ratio of all states",
        "(sum without (instance, pod, container, state) (mysql_idle_sessions)",
        '(sum without (instance, pod, container, state) (mysql_idle_sessions{state="idle"})',
    ),
    ("description without the headroom", "the closest one is dropped in", "next drop in"),
    ("idle transaction after 2m", "mysql_idle_transaction_idle_seconds > 60",
     "mysql_idle_transaction_idle_seconds > 120"),
    ("idle transaction description without the pid", "{{ .Labels.pid }}/", "{{ .Labels.user }}/"),
    ("late keepalive on armed sockets", "mysql_idle_sockets_keepalive_late > 0",
     "mysql_idle_sockets_keepalive > 0"),
]


@pytest.mark.parametrize(("old", "new"), [m[1:] for m in MUTATIONS], ids=[m[0] for m in MUTATIONS])
def test_unit_tests_catch_a_changed_rule(promtool: str, tmp_path: Path, old: str, new: str) -> None:
    (tmp_path / "tests").mkdir()
    text = RULES.read_text()
    assert text.count(old) == 1, f"mutation anchor not found exactly once: {old!r}"
    (tmp_path / RULES.name).write_text(text.replace(old, new))
    for path in RULE_TESTS:
        shutil.copy(path, tmp_path / "tests" / path.name)
    check = run([promtool, "check", "rules", tmp_path / RULES.name])
    assert check.returncode == 0, f"the mutated rule file should stay valid\n{output(check)}"
    proc = run([promtool, "test", "rules", *sorted((tmp_path / "tests").glob("*.test.yml"))])
    assert proc.returncode != 0, f"the unit tests did not notice {old!r} -> {new!r}"


def test_rule_metric_names_are_documented(node: str) -> None:
    allowed = (
        series_names(documented_metrics())
        | {r["record"] for r in recording_rules()}
        | PROMETHEUS_SERIES
    )
    exprs = [r["expr"] for r in load_groups()[0]["rules"] + alert_rules()]
    exprs += [q for r in alert_rules() for q in annotation_queries(r)]
    assert len(exprs) > len(alert_rules()), "annotation queries were not found"
    for expr, names, errors in metric_names(exprs):
        assert not errors, f"{expr!r}: {errors}"
        assert names, f"{expr!r}: no metric found"
        unknown = set(names) - allowed
        assert not unknown, f"{expr!r} uses metrics not in docs/metrics.md: {sorted(unknown)}"


def test_metric_name_check_reports_typos_and_syntax_errors(node: str) -> None:
    allowed = series_names(documented_metrics())
    results = metric_names(
        [
            'sum by (state) (mysql_idle_sesions{state="dropped"})',
            '{__name__="mysql_idle_upp"} == 0',
            "rate(mysql_idle_server_reads_total[5m]",
        ]
    )
    assert set(results[0][1]) - allowed == {"mysql_idle_sesions"}
    assert set(results[1][1]) - allowed == {"mysql_idle_upp"}
    assert results[2][2], "a missing parenthesis should be a syntax error"

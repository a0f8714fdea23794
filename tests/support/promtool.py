"""Running promtool and the dashboard type check from the tests."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import yaml

from tests.support.contract import REPO

TYPECHECK = REPO / "dashboards" / "typecheck" / "check.sh"


def run(
    args: list[str | Path], timeout: float = 600, **kwargs: Any
) -> subprocess.CompletedProcess[str]:
    """Run a command and capture its text output; a non-zero exit is the caller's to judge."""
    return subprocess.run(
        [str(a) for a in args],
        capture_output=True,
        text=True,
        check=False,
        timeout=timeout,
        **kwargs,
    )


def output(proc: subprocess.CompletedProcess[str]) -> str:
    return f"exit {proc.returncode}\n--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"


def promtool_check_exprs(
    promtool: str, exprs: list[str], tmp: Path
) -> subprocess.CompletedProcess[str]:
    """`promtool check rules` on a rule file recording each expression: a PromQL syntax check."""
    rules = {
        "groups": [
            {
                "name": "expressions",
                "rules": [{"record": f"expr_{i}", "expr": e} for i, e in enumerate(exprs)],
            }
        ]
    }
    path = tmp / "exprs.rules.yml"
    path.write_text(yaml.safe_dump(rules, sort_keys=False))
    return run([promtool, "check", "rules", path])


def promtool_expect_data(
    promtool: str,
    exprs: list[str],
    input_series: list[dict[str, str]],
    tmp: Path,
    eval_time: str = "90m",
) -> subprocess.CompletedProcess[str]:
    """`promtool test rules`: each expression returns at least one sample on input_series."""
    (tmp / "empty.rules.yml").write_text("groups: []\n")
    test = {
        "rule_files": ["empty.rules.yml"],
        "evaluation_interval": "1m",
        "tests": [
            {
                "name": "every expression returns data on the documented metrics",
                "interval": "1m",
                "input_series": input_series,
                "promql_expr_test": [
                    {
                        "expr": f"clamp_max(count({e}), 1)",
                        "eval_time": eval_time,
                        "exp_samples": [{"labels": "{}", "value": 1}],
                    }
                    for e in exprs
                ],
            }
        ],
    }
    path = tmp / "exprs.test.yml"
    path.write_text(yaml.safe_dump(test, sort_keys=False))
    return run([promtool, "test", "rules", path])

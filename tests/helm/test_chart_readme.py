"""values.yaml documents every value next to its key (`# --`, helm-docs style) and the chart
README's values table lists every value, and nothing that is not one."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator

import yaml

from tests.support.helm import CHART

VALUES = CHART / "values.yaml"
README = CHART / "README.md"
ROW = re.compile(r"^\|\s*`?([A-Za-z][A-Za-z0-9_.-]*)`?\s*\|")


def leaves(node: yaml.Node, prefix: str = "") -> Iterator[tuple[str, yaml.Node]]:
    """(dotted path, key node) of every leaf: scalars, lists and empty maps."""
    assert isinstance(node, yaml.MappingNode)
    for key, value in node.value:
        path = f"{prefix}{key.value}"
        if isinstance(value, yaml.MappingNode) and value.value:
            yield from leaves(value, path + ".")
        else:
            yield path, key


def documented_leaves() -> dict[str, bool]:
    lines = VALUES.read_text().splitlines()
    root = yaml.compose(VALUES.read_text())
    found: dict[str, bool] = {}
    for path, key in leaves(root):
        # The comment block right above the key must start with `# --`.
        row = key.start_mark.line - 1
        block: list[str] = []
        while row >= 0 and lines[row].strip().startswith("#"):
            block.insert(0, lines[row].strip())
            row -= 1
        found[path] = bool(block) and block[0].startswith("# -- ") and len(block[0]) > 6
    return found


def readme_keys() -> list[str]:
    text = README.read_text()
    table = text[text.index("## Values"):]
    return [m.group(1) for line in table.splitlines() if (m := ROW.match(line))
            and m.group(1) not in ("Key",)]


def test_every_value_has_a_description() -> None:
    missing = [path for path, ok in documented_leaves().items() if not ok]
    assert not missing, f"values without a `# --` comment right above them: {missing}"


def test_readme_table_lists_every_value() -> None:
    values = set(documented_leaves())
    rows = readme_keys()
    assert len(rows) == len(set(rows)), "a key is listed twice"
    top_level = {key.split(".")[0] for key in yaml.safe_load(VALUES.read_text())}
    assert top_level <= {row.split(".")[0] for row in rows}
    assert not values - set(rows), f"missing from README's values table: {values - set(rows)}"
    assert not set(rows) - values, f"README lists keys values.yaml lacks: {set(rows) - values}"


def test_readme_defaults_match_values() -> None:
    """The Default column shows each leaf's default as JSON, like helm-docs does."""
    defaults = yaml.safe_load(VALUES.read_text())
    text = README.read_text()
    for line in text[text.index("## Values"):].splitlines():
        m = ROW.match(line)
        if not m or m.group(1) == "Key":
            continue
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line.strip().strip("|"))]
        value = defaults
        for part in m.group(1).split("."):
            value = value[part]
        shown = cells[2].strip("`").replace("\\|", "|")
        assert json.loads(shown) == value, f"{m.group(1)}: README shows {shown}"

"""Every piece of advice the status page and `inspect` give links to a section that exists,
at the address the alert rules' runbook_url use."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from exporter import advice

REPO = Path(__file__).resolve().parents[2]


def github_anchor(heading: str) -> str:
    """The id GitHub gives a Markdown heading."""
    text = heading.strip().lower().replace("`", "")
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    text = path.read_text(encoding="utf-8")
    # Headings outside fenced code blocks.
    text = re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)
    return {github_anchor(m.group(1)) for m in re.finditer(r"^#{1,6} (.+)$", text, re.M)}


@pytest.mark.parametrize("tip", advice.ALL, ids=lambda tip: tip.key)
def test_every_link_leads_to_a_section(tip: advice.Advice) -> None:
    path, _, anchor = tip.doc.partition("#")
    assert (REPO / path).is_file(), tip.doc
    assert anchor in anchors(REPO / path), f"{tip.doc}: no such heading"
    assert tip.url == advice.DOCS_BASE + tip.doc
    assert tip.short and len(tip.short) <= 24 and tip.text.endswith(".")


def test_the_base_is_the_alert_rules_runbook_base() -> None:
    rules = yaml.safe_load((REPO / "dashboards/mysql-idle-exporter.rules.yml").read_text())
    urls = {rule["annotations"]["runbook_url"] for group in rules["groups"]
            for rule in group["rules"] if "alert" in rule}
    assert urls and all(url.startswith(advice.DOCS_BASE + "docs/runbook.md#") for url in urls)
    linked = {tip.url for tip in advice.ALL}
    # The situations the page advises on point where the matching alerts point.
    for alert in ("mysqlidlesessionsabouttobedropped", "mysqlidledeadsessionsheld",
                  "mysqlidlephantomsessions", "mysqlidlerepeateddrops",
                  "mysqlidleexportertargetdown", "mysqlidlecorrelationlost"):
        url = f"{advice.DOCS_BASE}docs/runbook.md#{alert}"
        assert url in urls and url in linked, alert


def test_keys_are_unique() -> None:
    assert len({tip.key for tip in advice.ALL}) == len(advice.ALL)

"""The status view rendered: the page's HTML, the /status.json document and `inspect`'s
table, each compared whole with its golden file, and hostile names kept inert in each."""

from __future__ import annotations

import json
from html.parser import HTMLParser

from exporter.correlate import Memory
from exporter.drops import DropHistory
from exporter.model import Snapshot
from exporter.status import build_view, render_json
from exporter.status_text import clean, render_text
from exporter.web.status_page import render_page
from tests.support.builders import NOW, SETTINGS, correlate_sockets, report, sess, sock, view
from tests.support.golden import assert_golden
from tests.support.status import HOSTILE, WALL, every_state_view


class Elements(HTMLParser):
    """The tags, attributes and text of a page, as a browser's parser would see them."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[str] = []
        self.attributes: list[tuple[str, str | None]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.attributes.extend(attrs)

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def parse(page: str) -> Elements:
    elements = Elements()
    elements.feed(page)
    elements.close()
    return elements


def test_page_golden() -> None:
    assert_golden("status.html", render_page(every_state_view(), refresh=5,
                                             metrics_path="/metrics"))


def test_json_golden() -> None:
    assert_golden("status.json", render_json(every_state_view()))


def test_text_golden() -> None:
    assert_golden("status.txt", render_text(every_state_view()))


def test_page_has_only_its_own_markup_and_no_inline_code() -> None:
    page = render_page(every_state_view(), refresh=5, metrics_path="/metrics")
    elements = parse(page)
    # The hostile names are text: no element or attribute of theirs exists.
    assert set(elements.tags) <= {
        "html", "head", "meta", "title", "link", "script", "body", "header", "h1", "p", "span",
        "a", "main", "section", "h2", "ul", "li", "table", "caption", "thead", "tr", "th",
        "tbody", "td", "b", "br", "footer"}
    assert elements.tags.count("script") == 1
    text = "".join(elements.text)
    assert HOSTILE in text and "<script>alert(2)</script>" in text and 'a&b"c' in text
    names = {name for name, _ in elements.attributes}
    assert not {n for n in names if n.startswith("on")}, names
    assert "style" not in names
    # Nothing from elsewhere: every link to a resource is relative to the exporter.
    for name, value in elements.attributes:
        if name in ("src", "href") and value and value.startswith("http"):
            assert value.startswith("https://github.com/mysql-idle-exporter/"), value
    assert ('<script src="static/status.js" defer></script>' in page
            and '<link rel="stylesheet" href="static/status.css">' in page)


def test_page_without_refresh_and_under_another_metrics_path() -> None:
    page = render_page(every_state_view(), refresh=0, metrics_path="/custom/metrics")
    assert 'http-equiv="refresh"' not in page
    assert '<a href="custom/metrics">/custom/metrics</a>' in page


def test_the_countdown_starts_from_the_collection() -> None:
    page = render_page(every_state_view(), refresh=5, metrics_path="/metrics")
    assert '<body data-collection-age="1.5">' in page
    assert '<td class="headroom" data-headroom="40.0">40s</td>' in page


def test_control_characters_never_reach_the_terminal() -> None:
    evil = "evil\x1b[2J\x07\x9b"
    target, _ = correlate_sockets("db:3306", [sock(1, process=evil)],
                                  view(sess(1, 1, user="u\r\nx", db="d\x00")), SETTINGS,
                                  Memory(), NOW)
    built = build_view(Snapshot(reports=(report(target),), collections=1), DropHistory(), WALL)
    text = render_text(built)
    assert "\x1b" not in text and "\x07" not in text and "\r" not in text and "\x00" not in text
    assert "\x9b" not in text
    assert "evil\\x1b[2J\\x07\\x9b" in text and "u\\x0d\\x0ax" in text
    assert clean("plain name") == "plain name"


def test_json_keeps_names_whole_and_valid() -> None:
    document = json.loads(render_json(every_state_view()))
    processes = [p["process"] for p in document["targets"][0]["processes"]]
    assert HOSTILE in processes
